// Reading the on-disk hash index (docs/format.md, section 5) chunk by chunk:
// the one loop behind load_index(), which stops at the first bad entry, and
// check's index check, which counts every bad entry and goes on.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "dedup/extension.h"
#include "dedup/index_entry.h"
#include "io/file.h"
#include "util/status.h"

namespace qdedup::dedup {

// Entries read with one pread (about 0.8 MiB with SHA-256).
inline constexpr uint64_t kIndexReadChunkEntries = 16384;

// What a reader of the index does with what it finds. Each method returns ok
// to go on; any other Status stops the read and is what read_index returns.
class IndexVisitor {
 public:
  virtual ~IndexVisitor() = default;
  // Entry `n` (counted from 0, in file order) has a hash equal to
  // (`order` == 0) or below (`order` > 0) the hash of entry n - 1. Called
  // before entry() for the same entry.
  virtual Status misordered(uint64_t n, const StoredIndexEntry& e, int order) = 0;
  // Entry `n`; called for every entry the read reaches. `e.hash` is valid
  // during the call only.
  virtual Status entry(uint64_t n, const StoredIndexEntry& e) = 0;
  // After the last entry: the SHA-256 of the index bytes is not
  // `index_checksum`.
  virtual Status checksum_mismatch() = 0;
};

// Reads the index that `ext` describes from `file`, checking the hash order
// and the checksum, and reports to `visitor`. `ext` must have passed
// validate_dedup_extension() for this file. Returns the first read error or
// the first non-ok Status a visitor method returned.
Status read_index(io::File& file, const DedupExtension& ext, IndexVisitor& visitor);

// Reads the same index in chunks of kIndexReadChunkEntries entries (the last
// one shorter), without checks: fn(first, bytes) gets entries
// [first, first + bytes.size() / index_entry_size(ext.hash_size)). `bytes` is
// valid during the call only. Stops at the first non-ok Status and returns it.
using IndexChunkFn = std::function<Status(uint64_t first, std::span<const uint8_t> bytes)>;
Status for_each_index_chunk(io::File& file, const DedupExtension& ext, const IndexChunkFn& fn);

}  // namespace qdedup::dedup
