// The L1 and L2 part of the check: every table reachable from the active L1
// table and from each snapshot's, every entry judged by its QEMU cluster type.
#include <algorithm>

#include "qcow2/check_analyser.h"
#include "qcow2/format.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2::check_detail {

// The per-entry steps are inlined into walk_l2(), the check's hot loop (one
// pass over every entry of every table; scripts/bench-check.sh times it).
#define QD_HOT_INLINE [[gnu::always_inline]] inline

QD_HOT_INLINE void Analyser::check_l2_entry(uint64_t at, uint64_t index, const L2Entry& e,
                                            bool active, uint64_t& next_contiguous) {
  const ClusterType type = e.cluster_type(a_.g);
  EntryVerdict v;
  v.fixed = e.word;
  if (type != ClusterType::kCompressed && (e.word & kL2eStdReservedMask)) {
    corrupt("ERROR found l2 entry with reserved bits set: " + hex_digits(e.word));
    v.fixed &= ~kL2eStdReservedMask;
    v.fix_what = "Repairing l2 entry with reserved bits set: " + hex_digits(e.word);
  }
  switch (type) {
    case ClusterType::kCompressed:
      check_compressed(index, e, active, v);
      break;
    case ClusterType::kZeroAlloc:
    case ClusterType::kNormal:
      check_allocated(at, e, type, active, next_contiguous, v);
      break;
    case ClusterType::kZeroPlain:
      check_v2_zero(e, v);
      break;
    case ClusterType::kUnallocated:
      if (e.bitmap & kBitmapAllAllocated) {
        corrupt("ERROR: Unallocated cluster has non-zero subcluster allocation map");
        ++a_.unrepairable;
      }
      break;
  }
  if (tally_) tally_entry(e, type, active);
  if (!v.unmap.empty()) {
    plan_unmap(at, e.word, v.unmap);
  } else if (v.fixed != e.word) {
    plan_fix(at, e.word, v.fixed, std::move(v.fix_what));
  }
}

QD_HOT_INLINE void Analyser::check_compressed(uint64_t index, const L2Entry& e, bool active,
                                              EntryVerdict& v) {
  const Geometry& g = a_.g;
  if (e.copied()) {
    corrupt("ERROR: coffset=0x" + hex_digits(e.word & g.cluster_offset_mask) +
            ": copied flag must never be set for compressed clusters");
    v.fixed &= ~kOflagCopied;
    v.fix_what = "Repairing compressed cluster entry with the copied flag set: " + hex_digits(e.word);
  }
  if (e.bitmap) {
    corrupt("ERROR compressed cluster " + dec(index) +
            " with non-zero subcluster allocation bitmap, entry=0x" + hex_digits(e.word));
    ++a_.unrepairable;
    return;
  }
  CompressedRange r = compressed_range(g, L2Entry{e.word & ~kOflagCopied, 0});
  if (!inc(r.offset, r.length, kGuestData)) {
    v.unmap = "compressed cluster at 0x" + hex_digits(r.offset) + " beyond the end of the file";
  }
  if (active) {
    ++a_.counts.allocated_clusters;
    ++a_.counts.compressed_clusters;
    ++a_.counts.fragmented_clusters;
  }
}

QD_HOT_INLINE void Analyser::check_allocated(uint64_t at, const L2Entry& e, ClusterType type,
                                             bool active, uint64_t& next_contiguous,
                                             EntryVerdict& v) {
  const Geometry& g = a_.g;
  const uint64_t offset = e.host_offset();
  if (type == ClusterType::kNormal && ((e.bitmap >> 32) & e.bitmap)) {
    corrupt("ERROR offset=" + hex_digits(offset) +
            ": Allocated cluster has corrupted subcluster allocation bitmap");
    ++a_.unrepairable;
  }
  if (offset % g.cluster_size != 0) {
    bool contains_data = g.extended_l2 ? (e.bitmap & kBitmapAllAllocated) != 0 : !e.zero_flag();
    if (!contains_data) {
      corrupt("ERROR offset=" + hex_digits(offset) +
              ": Preallocated cluster is not properly aligned; L2 entry corrupted.");
      v.fixed = g.extended_l2 ? 0 : kOflagZero;
      v.fix_what = "Repairing offset=" + hex_digits(offset) +
                   ": Preallocated cluster is not properly aligned; L2 entry corrupted.";
    } else {
      corrupt("ERROR offset=" + hex_digits(offset) +
              ": Data cluster is not properly aligned; L2 entry corrupted.");
      v.unmap = "offset=" + hex_digits(offset) + ": data cluster is not properly aligned";
    }
  }
  if (active) {
    ++a_.counts.allocated_clusters;
    if (next_contiguous && offset != next_contiguous) ++a_.counts.fragmented_clusters;
    next_contiguous = offset + g.cluster_size;
  }
  if (!inc_data(at, e.word, offset) && v.unmap.empty()) {
    v.unmap = "offset=" + hex_digits(offset) + ": cluster lies beyond the end of the file";
  }
  if (type == ClusterType::kZeroAlloc) check_v2_zero(e, v);
}

QD_HOT_INLINE void Analyser::check_v2_zero(const L2Entry& e, EntryVerdict& v) {
  if (a_.g.version >= 3) return;
  corrupt("ERROR zero cluster entry " + hex_digits(e.word) + " in a version 2 image");
  if (a_.header.has_backing()) {
    ++a_.unrepairable;
    return;
  }
  v.fixed = 0;
  v.fix_what = "Repairing zero cluster entry " + hex_digits(e.word) +
               " in a version 2 image: now unallocated (reads as zeros)";
}

void Analyser::tally_entry(const L2Entry& e, ClusterType type, bool active) {
  MappingTally& t = *tally_;
  const Geometry& g = a_.g;
  switch (type) {
    case ClusterType::kNormal: {
      (active ? t.active_data : t.snapshot_mapped) += 1;
      const uint64_t c = g.cluster_of(e.host_offset());
      if (c >= t.data.size()) return;  // past the end: a finding of its own
      t.data[c] = true;
      if (!active) return;
      t.active[c] = true;
      if (!t.active_normal[c]) {
        t.active_normal[c] = true;
        ++t.active_normal_targets;
      }
      return;
    }
    case ClusterType::kCompressed: {
      if (active) {
        ++t.active_compressed;
        t.active_descriptors.push_back(e.word & ~kOflagCopied);
      } else {
        ++t.snapshot_mapped;
      }
      auto held = held_clusters(g, e);
      if (!held) return;  // a finding of its own
      for (uint64_t c = held->first; c <= held->last && c < t.data.size(); ++c) {
        t.data[c] = true;
        t.compressed[c] = true;
        if (active) t.active[c] = true;
      }
      return;
    }
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      if (active) ++t.active_zero;
      return;
    case ClusterType::kUnallocated:
      // An extended entry whose every subcluster reads as zeros.
      if (active && e.type(g) == ClusterType::kZeroPlain) ++t.active_zero;
      return;
  }
}

void Analyser::tally_table(uint64_t l2_offset) {
  MappingTally& t = *tally_;
  const uint64_t c = a_.g.cluster_of(l2_offset);
  if (l2_offset % a_.g.cluster_size != 0) return;
  if (c >= t.l2_table.size()) {
    if (t.l2_tables_beyond_end.insert(c).second) ++t.l2_tables;
    return;
  }
  if (t.l2_table[c]) return;
  t.l2_table[c] = true;
  ++t.l2_tables;
}

Status Analyser::walk_l1(uint64_t l1_offset, uint64_t l1_size, uint32_t snapshot) {
  const bool active = snapshot == kActiveL1;
  inc(l1_offset, l1_size * 8);
  // Entries past the end of the file read as zeros: read only what is there.
  uint64_t readable = l1_offset < a_.file_size ? (a_.file_size - l1_offset) / 8 : 0;
  uint64_t n = std::min<uint64_t>(l1_size, readable);
  if (n == 0) return Status::ok();
  std::vector<uint8_t> raw(n * 8);
  QD_TRY(file_.read_or_zero(l1_offset, raw));
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t entry = load_be64(raw.data() + 8 * i);
    if (entry == 0) continue;
    uint64_t at = l1_offset + 8 * i;
    if (entry & kL1eReservedMask) {
      corrupt("ERROR found L1 entry with reserved bits set: " + hex_digits(entry));
      plan_fix(at, entry, entry & ~kL1eReservedMask,
               "Repairing L1 entry with reserved bits set: " + hex_digits(entry));
    }
    uint64_t l2 = entry & kL1eOffsetMask;
    if (l2 == 0) continue;
    bool beyond_eof = !inc(l2, a_.g.cluster_size);
    if (l2 % a_.g.cluster_size != 0) {
      corrupt("ERROR l2_offset=" + hex_digits(l2) + ": Table is not cluster aligned; L1 entry corrupted");
      if (tally_ && tally_->unwalkable.empty()) {
        tally_->unwalkable = (active ? std::string("active L1 table")
                                     : "L1 table of snapshot " + dec(snapshot)) +
                             ": entry " + dec(i) + ": L2 table at " + hex(l2) +
                             " is not cluster aligned";
      }
    }
    if (beyond_eof || l2 % a_.g.cluster_size != 0) {
      // Nothing can be read from this table: drop it (the guest range then
      // reads from the backing file, or zeros).
      plan_fix(at, entry, 0,
               "Repairing L1 entry " + dec(i) + ": its L2 table at 0x" + hex_digits(l2) +
                   " cannot be read; guest bytes " + dec(i * a_.g.bytes_per_l2()) + ".." +
                   dec((i + 1) * a_.g.bytes_per_l2() - 1) + " now read " +
                   (a_.header.has_backing() ? "from the backing file" : "as zeros"));
    }
    QD_TRY(walk_l2(l2, active));
  }
  return Status::ok();
}

Status Analyser::walk_l2(uint64_t l2_offset, bool active) {
  const Geometry& g = a_.g;
  std::vector<uint8_t> table(g.cluster_size);
  QD_TRY(file_.read_or_zero(l2_offset, table));
  if (tally_) tally_table(l2_offset);
  uint64_t next_contiguous = 0;
  for (uint64_t i = 0; i < g.l2_entries; ++i) {
    const uint8_t* p = table.data() + i * g.l2_entry_bytes;
    L2Entry e{load_be64(p), g.extended_l2 ? load_be64(p + 8) : 0};
    check_l2_entry(l2_offset + i * g.l2_entry_bytes, i, e, active, next_contiguous);
  }
  return Status::ok();
}

#undef QD_HOT_INLINE

}  // namespace qdedup::qcow2::check_detail
