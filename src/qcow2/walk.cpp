#include "qcow2/walk.h"

#include <map>
#include <string>

#include "qcow2/format.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2 {

namespace {

using ReferenceMap = std::map<uint64_t, std::vector<L1Reference>>;

Status add_references(const Geometry& g, std::span<const uint64_t> l1, uint32_t snapshot,
                      ReferenceMap& refs) {
  for (uint64_t i = 0; i < l1.size(); ++i) {
    uint64_t l2 = l1[i] & kL1eOffsetMask;
    if (l2 == 0) continue;
    if (l2 % g.cluster_size != 0) {
      std::string who = snapshot == L1Reference::kActive
                            ? std::string("active L1 table")
                            : "L1 table of snapshot " + std::to_string(snapshot);
      return corruption(who + ": entry " + std::to_string(i) + ": L2 table at " + hex(l2) +
                        " is not cluster aligned");
    }
    refs[l2].push_back({snapshot, i});
  }
  return Status::ok();
}

Result<std::vector<uint64_t>> read_l1(io::File& file, const Snapshot& s) {
  std::vector<uint8_t> raw(uint64_t{s.l1_size} * 8);
  QD_TRY(file.read_or_zero(s.l1_table_offset, raw));
  std::vector<uint64_t> l1(s.l1_size);
  for (uint64_t i = 0; i < l1.size(); ++i) l1[i] = load_be64(raw.data() + 8 * i);
  return l1;
}

}  // namespace

Status walk_l2_tables(io::File& file, const Geometry& g, std::span<const uint64_t> active_l1,
                      const std::vector<Snapshot>& snapshots, const L2TableFn& fn) {
  ReferenceMap refs;
  QD_TRY(add_references(g, active_l1, L1Reference::kActive, refs));
  for (uint32_t i = 0; i < snapshots.size(); ++i) {
    QD_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, read_l1(file, snapshots[i]));
    QD_TRY(add_references(g, l1, i, refs));
  }
  std::vector<uint8_t> table(g.cluster_size);
  std::vector<L2EntryVisit> entries(g.l2_entries);
  L2TableVisit visit;
  for (auto& [offset, references] : refs) {
    QD_TRY(file.read_or_zero(offset, table));
    for (uint64_t i = 0; i < g.l2_entries; ++i) {
      const uint8_t* p = table.data() + i * g.l2_entry_bytes;
      L2EntryVisit& e = entries[i];
      e.index = i;
      e.file_offset = offset + i * g.l2_entry_bytes;
      e.entry = L2Entry{load_be64(p), g.extended_l2 ? load_be64(p + 8) : 0};
      e.type = e.entry.cluster_type(g);
    }
    visit.offset = offset;
    visit.references = std::move(references);
    QD_TRY(fn(visit, entries));
  }
  return Status::ok();
}

Status walk_l2_tables(Image& image, const L2TableFn& fn) {
  return walk_l2_tables(image.file(), image.geometry(), image.l1_table(), image.snapshots(), fn);
}

}  // namespace qdedup::qcow2
