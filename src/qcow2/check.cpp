#include "qcow2/check.h"

#include "qcow2/check_analyser.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "qcow2/format.h"
#include "qcow2/refcount.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2 {

void RefcountArray::set(uint64_t i, uint64_t v) {
  if (i >= small_.size()) small_.resize(i + 1, 0);
  if (v >= kBig) {
    small_[i] = kBig;
    big_[i] = v;
  } else {
    if (small_[i] == kBig) big_.erase(i);
    small_[i] = static_cast<uint16_t>(v);
  }
}

std::optional<uint64_t> CheckAnalysis::stored_refcount_uncached(io::File& file, uint64_t cluster) {
  const uint64_t idx = cluster >> g.rb_bits;
  const uint64_t i = cluster & (g.rb_entries - 1);
  if (idx >= reftable.size()) return 0;
  if (by_index_.size() != reftable.size()) by_index_.assign(reftable.size(), nullptr);
  if (const std::vector<uint8_t>* cached = by_index_[idx]) {
    last_block_index_ = idx;
    last_block_ = cached;
    return refcount_entry(*cached, g.refcount_order, i);
  }
  uint64_t block = reftable[idx] & kReftOffsetMask;
  if (block == 0) return 0;
  if (block % g.cluster_size != 0) return std::nullopt;
  auto it = rb_cache_.find(block);
  if (it == rb_cache_.end()) {
    // At most 64 MiB of cached blocks (and at least 16 blocks).
    if (rb_cache_.size() >= std::max<uint64_t>(16, (64ull << 20) / g.cluster_size)) drop_refcount_cache();
    std::vector<uint8_t> data(g.cluster_size);
    if (!file.read_or_zero(block, data)) return std::nullopt;
    it = rb_cache_.emplace(block, std::move(data)).first;
  }
  by_index_[idx] = &it->second;
  last_block_index_ = idx;
  last_block_ = &it->second;
  return refcount_entry(it->second, g.refcount_order, i);
}

namespace check_detail {

std::string dec(uint64_t v) { return std::to_string(v); }

bool Analyser::beyond_eof(uint64_t offset, uint64_t size) const {
  // A reference may reach into the last, partly written cluster, not further.
  return offset > kMaxFileOffset || size > kMaxFileOffset - offset ||
         offset + size >= a_.file_size + a_.g.cluster_size;
}

bool Analyser::inc(uint64_t offset, uint64_t size, Use use) {
  if (size == 0) return true;
  if (beyond_eof(offset, size)) {
    corrupt("ERROR: counting reference for region exceeding the end of the file by one "
            "cluster or more: offset 0x" + hex_digits(offset) + " size 0x" + hex_digits(size));
    return false;
  }
  uint64_t first = offset >> a_.g.cluster_bits;
  uint64_t last = (offset + size - 1) >> a_.g.cluster_bits;
  for (uint64_t k = first; k <= last; ++k) {
    if (2 * k + 1 < uses_.size()) uses_[2 * k + use] = true;
    uint64_t rc = a_.computed.get(k);
    if (rc >= a_.g.refcount_max) {
      corrupt("ERROR: overflow cluster offset=0x" + hex_digits(k << a_.g.cluster_bits));
      // Stays after a repair unless inc_data() plans an un-sharing for it.
      ++a_.unrepairable;
      log("Use qemu-img amend to increase the refcount entry width or qemu-img convert to "
          "create a clean copy if the image cannot be opened for writing");
      continue;
    }
    a_.computed.set(k, rc + 1);
  }
  return true;
}

bool Analyser::inc_data(uint64_t at, uint64_t word, uint64_t offset) {
  uint64_t k = offset >> a_.g.cluster_bits;
  bool full = offset % a_.g.cluster_size == 0 && a_.computed.get(k) >= a_.g.refcount_max;
  bool inside = inc(offset, a_.g.cluster_size, kGuestData);
  if (full && inside) {
    a_.unshare.push_back({at, word, offset});
    --a_.unrepairable;  // counted by inc(): the un-sharing repairs it
  }
  return inside;
}

void Analyser::plan_unmap(uint64_t at, uint64_t word, const std::string& why) {
  EntryFix f;
  f.file_offset = at;
  f.old_word = word;
  const L2Entry z = zero_entry(a_.g);
  f.new_word = z.word;
  f.set_bitmap = a_.g.extended_l2;
  f.new_bitmap = z.bitmap;
  const bool backing = !a_.g.extended_l2 && a_.g.version < 3 && a_.header.has_backing();
  const char* now = backing ? "reads from the backing file" : "reads as zeros";
  f.what = "Repairing " + why + ": its guest cluster now " + now;
  a_.entry_fixes.push_back(std::move(f));
}

void Analyser::plan_fix(uint64_t at, uint64_t old_word, uint64_t new_word, std::string what) {
  EntryFix f;
  f.file_offset = at;
  f.old_word = old_word;
  f.new_word = new_word;
  f.what = std::move(what);
  a_.entry_fixes.push_back(std::move(f));
}

Status Analyser::run() {
  const Header& h = a_.header;
  const Geometry& g = a_.g;
  a_.counts.total_clusters = (h.size + g.cluster_size - 1) >> g.cluster_bits;
  a_.computed.resize((a_.file_size + g.cluster_size - 1) >> g.cluster_bits);
  uses_.assign(2 * a_.computed.size(), false);
  if (o_.tally_mappings) {
    MappingTally& t = a_.mappings.emplace();
    for (std::vector<bool>* marks : {&t.l2_table, &t.data, &t.compressed, &t.active, &t.active_normal}) {
      marks->assign(a_.computed.size(), false);
    }
    tally_ = &t;
  }

  // The refcount table as stored (bounded by validate_header: at most 8 MiB).
  {
    uint64_t n = uint64_t{h.refcount_table_clusters} * g.cluster_size / 8;
    std::vector<uint8_t> raw(n * 8);
    QD_TRY(file_.read_or_zero(h.refcount_table_offset, raw));
    a_.reftable.resize(n);
    for (uint64_t i = 0; i < n; ++i) a_.reftable[i] = load_be64(raw.data() + 8 * i);
  }

  inc(0, g.cluster_size);  // header
  QD_TRY(walk_l1(h.l1_table_offset, h.l1_size, kActiveL1));
  // Like QEMU 7.2, a damaged snapshot entry is reported and then skipped:
  // its L1 table cannot be trusted, so nothing it points at is counted.
  for (uint32_t i = 0; i < a_.snapshots.size(); ++i) {
    bool bad = std::any_of(a_.bad_snapshots.begin(), a_.bad_snapshots.end(),
                           [&](const SnapshotFault& f) { return f.index == i; });
    if (bad) continue;
    const Snapshot& s = a_.snapshots[i];
    // A reference may reach into the last, partly written cluster (beyond_eof()).
    if (snapshot_l1_faults(s, g.cluster_size, a_.file_size + g.cluster_size - 1).beyond_end) {
      // The snapshot's L1 table is gone: repair deletes the entry. The
      // corruption itself is counted (once, as qemu-img counts it) by walk_l1.
      a_.bad_snapshots.push_back(
          {i, "snapshot " + escape_for_display(s.id) + " (" + escape_for_display(s.name) +
                  ") l1_offset=0x" + hex_digits(s.l1_table_offset) +
                  ": L1 table lies beyond the end of the file; snapshot table entry corrupted"});
    }
    QD_TRY(walk_l1(s.l1_table_offset, s.l1_size, i));
  }
  inc(h.snapshots_offset, a_.snapshot_table_bytes);
  inc(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} * g.cluster_size);
  // Repair does not touch the bitmaps (nor does qemu-img's): what is wrong
  // with them stays after a repair.
  const uint64_t before_bitmaps = a_.counts.corruptions;
  QD_TRY(walk_bitmaps());
  a_.unrepairable += a_.counts.corruptions - before_bitmaps;
  check_refblocks();
  for (uint64_t k = 0; k < a_.computed.size(); ++k) {
    if (uses_[2 * k + kMetadata] && uses_[2 * k + kGuestData]) a_.aliased.push_back(k);
  }
  std::vector<bool>().swap(uses_);
  compare_refcounts();
  QD_TRY(check_copied());
  return Status::ok();
}

void Analyser::check_refblocks() {
  const Geometry& g = a_.g;
  for (uint64_t i = 0; i < a_.reftable.size(); ++i) {
    uint64_t entry = a_.reftable[i];
    uint64_t offset = entry & kReftOffsetMask;
    if (entry & kReftReservedMask) {
      corrupt("ERROR refcount table entry " + dec(i) + " has reserved bits set");
      a_.rebuild = true;
      continue;
    }
    if (offset % g.cluster_size != 0) {
      corrupt("ERROR refcount block " + dec(i) +
              " is not cluster aligned; refcount table entry corrupted");
      a_.rebuild = true;
      continue;
    }
    uint64_t cluster = offset >> g.cluster_bits;
    if (cluster >= a_.computed.size()) {
      corrupt("ERROR refcount block " + dec(i) + " is outside image");
      a_.rebuild = true;
      continue;
    }
    if (offset != 0) {
      inc(offset, g.cluster_size);
      if (a_.computed.get(cluster) != 1) {
        corrupt("ERROR refcount block " + dec(i) + " refcount=" + dec(a_.computed.get(cluster)));
        a_.rebuild = true;
      }
    }
  }
}

void Analyser::compare_refcounts() {
  uint64_t highest = 0;
  for (uint64_t i = 0; i < a_.computed.size(); ++i) {
    std::optional<uint64_t> stored = a_.stored_refcount(file_, i);
    if (!stored) {
      ++a_.counts.check_errors;
      log("Can't get refcount for cluster " + dec(i) + ": Input/output error");
      a_.rebuild = true;
      continue;
    }
    uint64_t ref = a_.computed.get(i);
    if (*stored > 0 || ref > 0) highest = i;
    if (*stored == 0 && ref == 0) ++a_.free_clusters;
    if (*stored == ref) continue;
    a_.mismatched.push_back(i);
    if (*stored == 0) a_.rebuild = true;
    if (*stored < ref) {
      ++a_.counts.corruptions;
      log("ERROR cluster " + dec(i) + " refcount=" + dec(*stored) + " reference=" + dec(ref));
    } else {
      ++a_.counts.leaks;
      log("Leaked cluster " + dec(i) + " refcount=" + dec(*stored) + " reference=" + dec(ref));
    }
  }
  a_.counts.image_end_offset = (highest + 1) * a_.g.cluster_size;
}

Status Analyser::check_copied() {
  const Geometry& g = a_.g;
  std::vector<uint8_t> table(g.cluster_size);
  std::vector<uint8_t> l1raw(uint64_t{a_.header.l1_size} * 8);
  QD_TRY(file_.read_or_zero(a_.header.l1_table_offset, l1raw));
  for (uint64_t i = 0; i < a_.header.l1_size; ++i) {
    uint64_t l1e = load_be64(l1raw.data() + 8 * i);
    uint64_t l2 = l1e & kL1eOffsetMask;
    if (l2 == 0) continue;
    std::optional<uint64_t> rc = a_.stored_refcount(file_, l2 >> g.cluster_bits);
    if (!rc) continue;
    if ((*rc == 1) != ((l1e & kOflagCopied) != 0)) {
      if (*rc == 1) ++a_.copied_missing;
      copied_mismatch("ERROR OFLAG_COPIED L2 cluster: l1_index=" + dec(i) + " l1_entry=" +
                      hex_digits(l1e) + " refcount=" + dec(*rc));
    }
    QD_TRY(file_.read_or_zero(l2, table));
    for (uint64_t j = 0; j < g.l2_entries; ++j) {
      L2Entry e{load_be64(table.data() + j * g.l2_entry_bytes), 0};
      ClusterType type = e.cluster_type(g);
      if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
      std::optional<uint64_t> drc = a_.stored_refcount(file_, e.host_offset() >> g.cluster_bits);
      if (!drc) continue;
      if ((*drc == 1) != e.copied()) {
        if (*drc == 1) ++a_.copied_missing;
        copied_mismatch("ERROR OFLAG_COPIED data cluster: l2_entry=" + hex_digits(e.word) +
                        " refcount=" + dec(*drc));
      }
    }
  }
  return Status::ok();
}

}  // namespace check_detail

Result<CheckAnalysis> analyse_image(io::File& file, const CheckOptions& options) {
  CheckAnalysis a;
  QD_ASSIGN_OR_RETURN(a.file_size, file.size());
  QD_ASSIGN_OR_RETURN(a.header, read_header(file, a.file_size));
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  // The snapshot table as QEMU's qcow2_check_read_snapshot_table reads it:
  // past QEMU's limits (too many entries, too much extra data in one, a
  // table over 64 MiB) the check fails, and check -r all drops what is over.
  a.stored_nb_snapshots = a.header.nb_snapshots;
  if (a.header.nb_snapshots > kMaxSnapshots) {
    const uint32_t over = a.header.nb_snapshots - kMaxSnapshots;
    if (!options.repair_snapshots) {
      return corruption("snapshot table too large (" + std::to_string(a.header.nb_snapshots) +
                        " snapshots; qdedup check -r all removes the last " +
                        std::to_string(over) + ")");
    }
    log("Discarding " + std::to_string(over) + " overhanging snapshots");
    a.snapshot_repairs.discarded = over;
    a.header.nb_snapshots = kMaxSnapshots;
  }
  QD_TRY(validate_header(a.header, a.file_size, false));
  a.g = Geometry::from_header(a.header);

  // Damage to one entry's L1 fields is a finding (the entry is deleted by
  // repair).
  SnapshotRepairs read_fixes;
  QD_ASSIGN_OR_RETURN(SnapshotTable table,
                      read_snapshot_table_entries(file, a.header, a.file_size,
                                                  options.repair_snapshots ? &read_fixes : nullptr)
                          .with_prefix("failed to read the snapshot table"));
  for (const SnapshotRepairs::Truncated& t : read_fixes.truncated) {
    log("Discarding too much extra metadata in snapshot table entry " + std::to_string(t.index) +
        " (" + std::to_string(t.extra_bytes) + " > " + std::to_string(kMaxSnapshotExtraData) + ")");
  }
  a.snapshot_repairs.truncated = std::move(read_fixes.truncated);
  if (read_fixes.discarded) {
    log("Discarding " + std::to_string(read_fixes.discarded) +
        " overhanging snapshots (snapshot table is too big)");
    a.snapshot_repairs.discarded += read_fixes.discarded;
  }
  a.snapshots = std::move(table.snapshots);
  a.snapshot_table_bytes = table.bytes;
  a.header.nb_snapshots = static_cast<uint32_t>(a.snapshots.size());
  // The counts as qemu-img's: the entries dropped are fixed at once (the
  // header says so before the refcounts are checked), the rest by the new table.
  a.counts.corruptions += a.snapshot_repairs.truncated.size();
  if (a.header.version >= 3) {
    for (uint32_t i = 0; i < a.snapshots.size(); ++i) {
      if (a.snapshots[i].extra.size() < 16) {
        ++a.counts.corruptions;
        a.incomplete_snapshots.push_back(i);
        log(std::string(options.repair_snapshots ? "Repairing" : "ERROR") + " snapshot table entry " +
            std::to_string(i) + " is incomplete");
      }
    }
  }
  for (uint32_t i = 0; i < a.snapshots.size(); ++i) {
    const Snapshot& s = a.snapshots[i];
    std::string who = "snapshot " + escape_for_display(s.id) + " (" + escape_for_display(s.name) + ")";
    char buf[64];
    // (Whether the table lies inside the file is judged by the walk.)
    SnapshotL1Faults faults = snapshot_l1_faults(s, a.g.cluster_size, a.file_size);
    if (faults.unaligned) {
      std::snprintf(buf, sizeof buf, "%#" PRIx64, s.l1_table_offset);
      a.bad_snapshots.push_back({i, who + " l1_offset=" + buf +
                                        ": L1 table is not cluster aligned; snapshot table entry corrupted"});
    } else if (faults.too_large) {
      std::snprintf(buf, sizeof buf, "%#" PRIx32, s.l1_size);
      a.bad_snapshots.push_back({i, who + " l1_size=" + buf +
                                        ": L1 table is too large; snapshot table entry corrupted"});
    }
  }
  for (const SnapshotFault& f : a.bad_snapshots) {
    ++a.counts.corruptions;
    if (options.log) options.log("ERROR " + f.message);
  }

  check_detail::Analyser analyser(file, a, options);
  QD_TRY(analyser.run());
  return a;
}

}  // namespace qdedup::qcow2
