// The on-disk hash index (docs/format.md, section 5): loading it into a
// DedupIndex, and rebuilding it from the image's data when it is stale.
#pragma once

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

// Fills `index` (which must be empty) by hashing every data cluster mapped by
// the active L1 table whose refcount is below `refcount_cap`. The first guest
// cluster seen for a hash becomes the entry's owner.
Status rebuild_index(qcow2::Image& image, hash::HashPool& pool, uint64_t refcount_cap,
                     DedupIndex& index);

}  // namespace qdedup::dedup
