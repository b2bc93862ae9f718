// One walk over the mapping tables of an image: every L2 table reachable from
// the active L1 table and from each snapshot's L1 table, visited once however
// many L1 entries point at it, with every entry and its cluster type.
//
// A host cluster's refcount counts one reference per (L1 entry, L2 entry)
// path, so a consumer that counts references multiplies what it finds in a
// table by the table's reference count.
//
// Thread safety: none (it reads `file` through the caller's File).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "io/file.h"
#include "qcow2/geometry.h"
#include "qcow2/image.h"
#include "qcow2/snapshot.h"

namespace qdedup::qcow2 {

// One L1 entry that points at an L2 table.
struct L1Reference {
  static constexpr uint32_t kActive = UINT32_MAX;
  uint32_t snapshot = kActive;  // index in the snapshot table, or kActive
  uint64_t l1_index = 0;        // the entry's index in its L1 table

  bool active() const { return snapshot == kActive; }
  // The guest cluster that entry 0 of the L2 table maps through this reference.
  uint64_t first_guest_cluster(const Geometry& g) const { return l1_index << g.l2_bits; }
};

struct L2TableVisit {
  uint64_t offset = 0;  // host byte offset of the table (cluster aligned)
  // Every L1 entry that points at the table: the active L1's first, then
  // each snapshot's in snapshot table order, each by increasing l1_index.
  std::vector<L1Reference> references;

  uint64_t reference_count() const { return references.size(); }
  bool referenced_by_active() const { return !references.empty() && references.front().active(); }
};

struct L2EntryVisit {
  uint64_t index = 0;        // in the table
  uint64_t file_offset = 0;  // of the entry
  L2Entry entry;
  ClusterType type = ClusterType::kUnallocated;  // entry.cluster_type(g)
};

// Called once per distinct L2 table, with all of its entries (valid for the
// duration of the call). A failed Status ends the walk and is returned.
using L2TableFn = std::function<Status(const L2TableVisit&, std::span<const L2EntryVisit>)>;

// Visits the L2 tables referenced by `active_l1` (the active L1 entries, as
// held in memory) and by the L1 tables of `snapshots` (read from `file`),
// in increasing host offset. L1 entries or L2 tables past the end of the file
// read as zeros. Corruption if an L1 entry's L2 offset is not cluster aligned
// (nothing is visited then). Memory: one L1Reference per non-zero L1 entry
// and one L2 table.
Status walk_l2_tables(io::File& file, const Geometry& g, std::span<const uint64_t> active_l1,
                      const std::vector<Snapshot>& snapshots, const L2TableFn& fn);

// The same over an open image: its active L1 table and its snapshots.
Status walk_l2_tables(Image& image, const L2TableFn& fn);

}  // namespace qdedup::qcow2
