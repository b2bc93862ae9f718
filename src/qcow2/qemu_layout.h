// Where qemu-img create puts each structure of a new qcow2 image, with or
// without preallocation: a model of QEMU's cluster allocator
// (block/qcow2-refcount.c: alloc_clusters_noref, update_refcount,
// alloc_refcount_block, qcow2_refcount_area) run in memory over what
// qcow2_co_create and qcow2_co_truncate allocate, in their order. A new image
// qdedup makes has the layout of qemu-img's, byte for byte, so that scripts
// that look at the file (its size, `qemu-img map` offsets) see the same.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "qcow2/geometry.h"
#include "util/status.h"

namespace qdedup::qcow2 {

// QEMU's preallocation modes for a new image (-o preallocation=).
enum class Preallocation { kOff, kMetadata, kFalloc, kFull };

// The clusters of a new image, by cluster index.
struct NewImageLayout {
  uint64_t reftable = 1;         // first cluster of the refcount table
  uint64_t reftable_clusters = 1;
  std::vector<uint64_t> refblocks;  // cluster of each reftable entry's block, 0 = none
  uint64_t l1 = 0;               // first cluster of the L1 table (0 when it has no entry)
  std::vector<uint64_t> l2;      // cluster of each L1 entry's L2 table (preallocation)
  struct DataRun {
    uint64_t guest = 0;  // first guest cluster
    uint64_t host = 0;   // its host cluster; the next ones follow
    uint64_t count = 0;
  };
  std::vector<DataRun> data;     // guest clusters mapped (preallocation), in guest order
  // Clusters with refcount 1 (all others 0): [first, end) ranges.
  std::map<uint64_t, uint64_t> used;
  // Refcount tables QEMU outgrew and freed, with the entries they held then:
  // their bytes stay in the file where nothing overwrites them.
  struct OldTable {
    uint64_t cluster = 0;
    uint64_t clusters = 0;
    std::vector<uint64_t> refblocks;
  };
  std::vector<OldTable> old_tables;
  // Metadata preallocation of a size that ends inside a cluster: QEMU's
  // copy-on-write writes zeros from the guest end to the end of that cluster
  // (of that subcluster, with extended L2 entries). In bytes; empty if none.
  uint64_t zero_tail_offset = 0;
  uint64_t zero_tail_bytes = 0;
  uint64_t file_size = 0;        // bytes, as QEMU leaves the file
};

// The layout of a new image of `g.virtual_size` bytes whose L1 table has
// `l1_entries` entries. Fails where QEMU would: a refcount table over its
// maximum size.
Result<NewImageLayout> plan_new_image(const Geometry& g, uint64_t l1_entries, Preallocation mode);

}  // namespace qdedup::qcow2
