// The dedup part of `qdedup check`: the extension, the index clusters'
// accounting (docs/format.md, section 5) and every index entry; with
// verify_hashes also the data under each entry. And, for `check -r all`, the
// rebuild of a stale or damaged index.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "io/file.h"
#include "qcow2/check.h"

namespace qdedup::dedup {

// The state of an image's dedup index, in the one vocabulary that info,
// check and metrics use (human and JSON alike).
enum class IndexState {
  kAbsent,   // no dedup extension
  kValid,    // the index describes the image (autoclear bit set, entries check out)
  kStale,    // a program that does not know the index wrote the image (bit clear)
  kDamaged,  // the extension or the index is wrong
};
inline constexpr IndexState kIndexStates[] = {IndexState::kAbsent, IndexState::kValid,
                                              IndexState::kStale, IndexState::kDamaged};
// "absent", "valid", "stale", "damaged".
const char* index_state_name(IndexState state);

struct DedupCheckOptions {
  bool verify_hashes = false;
  bool progress = false;  // -p style progress on stderr while verifying
  unsigned threads = 0;   // 0: all cores
  qcow2::CheckLog log;
};

struct DedupCheckResult {
  bool present = false;   // the image has a dedup extension
  IndexState state = IndexState::kAbsent;
  std::string hash;       // algorithm name
  uint64_t entries = 0;   // entries the extension declares
  uint64_t errors = 0;    // corruptions of the extension or index
  uint64_t check_errors = 0;  // the dedup check could not complete
  uint64_t verified = 0;  // clusters rehashed (verify_hashes)
  uint64_t hash_mismatches = 0;
  // Entries per first hash byte, counted while the entries were read (all
  // zero if they were not): what the in-RAM table needs (DedupIndex::footprint).
  std::array<uint64_t, 256> entries_by_first_byte{};
};

// Checks the dedup state of the image analysed in `a`.
DedupCheckResult check_dedup(io::File& file, qcow2::CheckAnalysis& a,
                             const DedupCheckOptions& options);

// Rebuilds the index of a dedup image (rehashing its allocated clusters),
// writes it past the end of the file and marks it valid. The image's qcow2
// structures must be consistent. `scratch` holds the index records meanwhile.
Status rebuild_dedup_index(io::File& file, std::unique_ptr<io::File> scratch, unsigned threads);

}  // namespace qdedup::dedup
