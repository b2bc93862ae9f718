// The dedup header extension and the "dedup index valid" autoclear bit
// (docs/format.md, sections 3 and 4).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <span>
#include <vector>

#include "dedup/index_entry.h"
#include "hash/hash.h"
#include "qcow2/create.h"
#include "qcow2/header.h"
#include "util/status.h"

namespace qdedup::dedup {

// Stored on disk: never renumber.
inline constexpr uint32_t kExtDedup = 0x51444450;  // "QDDP"
inline constexpr uint32_t kExtDedupVersion = 1;
// What qdedup writes; the first kExtDedupBaseLength bytes are all older
// writers wrote (docs/format.md, section 3), and all a reader needs.
inline constexpr uint32_t kExtDedupLength = 176;
inline constexpr uint32_t kExtDedupBaseLength = 144;
inline constexpr size_t kRunVersionBytes = 24;
inline constexpr unsigned kAutoclearDedupBit = 62;
inline constexpr uint64_t kAutoclearDedupIndex = 1ull << kAutoclearDedupBit;
inline constexpr const char* kDedupFeatureName = "qdedup index valid";
inline constexpr uint32_t kDedupFlagVerify = 1u << 0;

struct DedupCounters {
  uint64_t clusters_deduplicated = 0;
  uint64_t clusters_stored_unique = 0;
  uint64_t index_entries_added = 0;
  uint64_t index_entries_removed = 0;
  uint64_t clusters_freed = 0;
  uint64_t refcount_cap_overflows = 0;
  uint64_t partial_cluster_reads = 0;
  uint64_t runs = 0;  // qdedup runs that wrote the extension
  // The last of those runs (absent from extensions older writers wrote):
  // seconds since the epoch (0 unknown) and the qdedup version ("" unknown).
  uint64_t last_run_time = 0;
  std::string last_run_version;
};

// The counters by their stable names (JSON keys, Prometheus metric names),
// in the extension's order (the run time and version are not counters).
std::vector<std::pair<const char*, uint64_t>> counter_fields(const DedupCounters& c);

struct DedupExtension {
  uint32_t ext_version = kExtDedupVersion;
  uint32_t hash_algorithm = static_cast<uint32_t>(hash::HashAlgorithm::kSha256);
  uint32_t flags = 0;
  uint32_t hash_size = 32;
  uint64_t index_offset = 0;
  uint64_t index_size = 0;
  uint64_t index_entries = 0;
  uint64_t refcount_cap = 0;
  std::array<uint8_t, 32> index_checksum{};
  DedupCounters counters;
};

std::vector<uint8_t> encode_dedup_extension(const DedupExtension& e);
// Checks syntax and known values (version, algorithm, hash size, reserved
// bits); the index location is checked against the file by validate.
Result<DedupExtension> decode_dedup_extension(std::span<const uint8_t> bytes);
Status validate_dedup_extension(const DedupExtension& e, uint64_t file_size,
                                uint64_t cluster_size, uint64_t refcount_max);

// The extension of an image with an empty (and valid) index.
DedupExtension empty_dedup_extension(hash::HashAlgorithm algorithm, bool verify, uint64_t refcount_cap);
// SHA-256 of the index bytes, as stored in index_checksum.
std::array<uint8_t, 32> index_checksum(std::span<const uint8_t> index_bytes);

// What a job deduplicates with.
struct DedupChoice {
  hash::HashAlgorithm algorithm = hash::HashAlgorithm::kSha256;
  bool verify = false;  // compare bytes before sharing (dedup_verify=on)
};

// The cluster size of a new dedup image unless one is given: 4 KiB.
inline constexpr uint32_t kDedupDefaultClusterBits = 12;

// The dedup policy of a new image (`create`, `convert`): the hash named by
// `dedup=` ("off": nullopt), collision resistant unless `verify`; compat 1.1
// (the index's autoclear bit needs a version 3 header); 4 KiB clusters unless
// `cluster_size_set` (guest file systems place data at 4 KiB). Adjusts `o`.
Result<std::optional<DedupChoice>> choose_dedup(const std::string& dedup, bool verify,
                                               bool cluster_size_set, qcow2::CreateOptions& o);
// The hash of a job on an existing image (dedup-offline): the one `dedup=`
// names, else the one of the image's extension `existing`, else SHA-256;
// collision resistant unless `verify` (or the extension's verify flag).
Result<DedupChoice> choose_dedup(const std::string& dedup, bool verify,
                                 const std::optional<DedupExtension>& existing);
// The same policy for an image that has the extension `e` (a `-n` target).
Result<DedupChoice> choose_dedup(const DedupExtension& e, const qcow2::Header& h);

// Applies `dedup=`/`dedup_verify=` create options to `o`: the extension, its
// feature name and its autoclear bit; 4 KiB clusters unless set explicitly.
Status apply_dedup_create_options(const std::string& dedup, bool verify, bool cluster_size_set,
                                  qcow2::CreateOptions& o);

// The extension of a decoded header, if present (it is kept among the
// header's unknown extensions by the qcow2 layer).
Result<std::optional<DedupExtension>> find_dedup_extension(const qcow2::Header& h);
// Replaces (or adds) the extension in `h` and makes sure the feature name
// table names the autoclear bit.
void put_dedup_extension(qcow2::Header& h, const DedupExtension& e);

}  // namespace qdedup::dedup
