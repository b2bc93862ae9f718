// The on-disk hash index (docs/format.md, section 5): loading it into a
// DedupIndex, and rebuilding it from the image's data when it is stale.
#pragma once

#include <array>
#include <functional>

#include "dedup/extension.h"
#include "hash/hash_pool.h"
#include "dedup/index.h"
#include "qcow2/image.h"

namespace qdedup::dedup {

// Reads the index `ext` describes into `index` (which must be empty). Checks
// the checksum, the order and uniqueness of the entries, and that every entry
// points at a cluster whose refcount is at least 1 and below `ext.refcount_cap`.
// Any mismatch is a Corruption: the caller rebuilds instead of trusting it.
Status load_index(qcow2::Image& image, const DedupExtension& ext, DedupIndex& index);

// What write_index_entries() wrote.
struct WrittenIndex {
  uint64_t bytes = 0;
  uint64_t entries = 0;
  std::array<uint8_t, 32> checksum{};  // SHA-256 of the bytes
};
// Whether an entry goes to disk.
using IndexFilter = std::function<Result<bool>(const IndexEntry& e)>;

// Writes the entries of `index` that `keep` accepts, in hash order, in the
// section 5 layout at `offset` of `file`, in pieces of about 1 MiB, and
// flushes. The one writer of the index (close, repair) and of the progress
// record's keepers.
Result<WrittenIndex> write_index_entries(io::File& file, uint64_t offset, DedupIndex& index,
                                         const IndexFilter& keep);

// Fills `index` (which must be empty) by hashing every data cluster mapped by
// the active L1 table whose refcount is below `refcount_cap`. The first guest
// cluster seen for a hash becomes the entry's owner.
Status rebuild_index(qcow2::Image& image, hash::HashPool& pool, uint64_t refcount_cap,
                     DedupIndex& index);

}  // namespace qdedup::dedup
