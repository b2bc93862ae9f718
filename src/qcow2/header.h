// The qcow2 header and its extensions: decode, validate, encode.
//
// decode_header() checks syntax (magic, lengths, extension framing);
// validate_header() checks meaning against the file size and QEMU's limits;
// encode_header() writes cluster 0 exactly as QEMU's qcow2_update_header()
// orders it. Unknown header fields and unknown extensions survive a round trip
// byte for byte.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/file.h"
#include "util/status.h"

namespace qdedup::qcow2 {

struct HeaderExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;  // up to 46 bytes, as stored (NULs trimmed)
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 0;  // as stored; v2: 72
  uint8_t compression_type = 0;
  // Bytes from 112 up to header_length that this build does not interpret.
  std::vector<uint8_t> unknown_header_fields;

  // Header extensions.
  std::optional<std::string> backing_format;
  std::vector<FeatureName> feature_names;
  std::optional<std::vector<uint8_t>> bitmaps_ext;  // kept verbatim
  std::optional<std::vector<uint8_t>> crypto_ext;
  std::optional<std::string> data_file;
  std::vector<HeaderExtension> unknown_extensions;  // in file order
  std::string backing_file;

  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  // An empty name (backing_file_size 0) is no backing file, as in QEMU.
  bool has_backing() const { return backing_file_offset != 0 && !backing_file.empty(); }
};

// Decodes cluster 0 (`bytes` may be shorter than a cluster when the file is).
Result<Header> decode_header(std::span<const uint8_t> bytes);

// Reads cluster 0 of `file` (at most one cluster and never past
// `file_size`, which is the file's size) and decodes it.
Result<Header> read_header(io::File& file, uint64_t file_size);

// Checks every field against the spec, QEMU's limits and `file_size`.
// `writable`: corrupt images may only be opened read-only.
Status validate_header(const Header& h, uint64_t file_size, bool writable);

// How messages about a table name it and count its entries.
struct TableName {
  const char* name;  // "active L1 table": starts every message
  const char* unit;  // what `entries` counts: "entries", "clusters"
};

// Checks a table located by the header as QEMU's qcow2_validate_table()
// does: `entries` of `entry_bytes` each fit in `max_bytes`, and the table
// starts on a cluster boundary, not in cluster 0 (the header) unless it is
// empty. Corruption "NAME too large (N UNIT)" or "NAME offset 0x... invalid".
// Where the table ends is the caller's (see table_in_file()).
Status validate_table(uint64_t offset, uint64_t entries, uint64_t entry_bytes,
                      uint64_t max_bytes, TableName name, uint64_t cluster_size);

// True if [offset, offset + bytes) lies inside a file of `file_size` bytes
// (always true when `bytes` is 0).
bool table_in_file(uint64_t offset, uint64_t bytes, uint64_t file_size);

// Encodes cluster 0: fixed header, extensions, end marker, backing name.
// Sets header_length, backing_file_offset and backing_file_size in the output
// from the other fields. Fails if it does not fit in one cluster.
Result<std::vector<uint8_t>> encode_header(const Header& h);

// The feature name table QEMU 7.2 writes, plus qdedup's own entries.
std::vector<FeatureName> default_feature_names();

// `bits` of feature `type` as QEMU describes unsupported features ("dirty bit,
// Unknown incompatible feature: 20"): the names the image's own table gives, in
// its order, then the mask of the bits it does not name.
std::string describe_features(const Header& h, uint8_t type, uint64_t bits);

}  // namespace qdedup::qcow2
