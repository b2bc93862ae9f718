#include "qcow2/check_repair.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "qcow2/format.h"
#include "qcow2/refcount.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2 {

namespace {

// Rounds are bounded: each one fixes a class of problems that the previous
// rounds cannot bring back, so a handful suffices; more means a bug.
constexpr int kMaxRounds = 8;

// The image file as the repair writes it: every write into a host cluster
// that is both metadata and guest data (CheckAnalysis::aliased) changes what
// the guest reads there, so it is reported once per cluster.
class AliasWatch : public io::File {
 public:
  using Report = std::function<void(uint64_t cluster)>;
  AliasWatch(io::File& inner, Report report) : inner_(inner), report_(std::move(report)) {}

  // The aliased clusters of the latest analysis.
  void watch(std::vector<uint64_t> clusters, unsigned cluster_bits) {
    aliased_ = std::move(clusters);
    cluster_bits_ = cluster_bits;
  }

  const std::string& name() const override { return inner_.name(); }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override {
    return inner_.pread(offset, buf);
  }
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override {
    if (!buf.empty() && !aliased_.empty()) {
      uint64_t first = offset >> cluster_bits_, last = (offset + buf.size() - 1) >> cluster_bits_;
      for (auto it = std::lower_bound(aliased_.begin(), aliased_.end(), first);
           it != aliased_.end() && *it <= last; ++it) {
        if (reported_.insert(*it).second) report_(*it);
      }
    }
    return inner_.pwrite(offset, buf);
  }
  Status flush() override { return inner_.flush(); }
  Result<uint64_t> size() override { return inner_.size(); }
  Status truncate(uint64_t size) override { return inner_.truncate(size); }
  Status punch_hole(uint64_t offset, uint64_t len) override { return inner_.punch_hole(offset, len); }

 private:
  io::File& inner_;
  Report report_;
  std::vector<uint64_t> aliased_;
  unsigned cluster_bits_ = 9;
  std::set<uint64_t> reported_;
};

class Repairer {
 public:
  Repairer(io::File& file, const RepairOptions& o)
      : watch_(file,
               [this](uint64_t cluster) {
                 log("Repairing host cluster " + std::to_string(cluster) +
                     ", which is metadata that guest data also maps: that guest data changes");
                 summary_.unmapped_data = true;
               }),
        file_(watch_),
        o_(o) {}

  Result<RepairSummary> run();

 private:
  void log(const std::string& line) {
    if (o_.log) o_.log(line);
  }
  Status write_u64(uint64_t offset, uint64_t v) {
    uint8_t b[8];
    store_be64(b, v);
    return file_.pwrite(offset, b);
  }
  // Clears autoclear bits before the first write of the repair.
  Status begin_write(const CheckAnalysis& a);
  Status apply_entry_fixes(const CheckAnalysis& a);
  Status rebuild_refcounts(CheckAnalysis& a);
  // Step 3: COPIED and refcount values. Returns whether anything was written.
  Result<bool> fix_refcounts_and_copied(CheckAnalysis& a);
  Status set_refcounts(CheckAnalysis& a, const std::vector<std::pair<uint64_t, uint64_t>>& to);
  Status write_snapshot_count(CheckAnalysis& a);
  Status delete_snapshots(CheckAnalysis& a);
  Status unshare(CheckAnalysis& a);
  // Rewrites the COPIED flag of active L1/L2 entries to match `target`:
  // `clear` pass only clears, the other only sets.
  Result<bool> fix_copied(CheckAnalysis& a, bool clear_pass,
                          const std::function<uint64_t(uint64_t)>& target);

  AliasWatch watch_;
  io::File& file_;  // watch_
  const RepairOptions& o_;
  RepairSummary summary_;
  bool began_ = false;
  // Clusters leaked when the repair began: the only leaks counted as fixed
  // after a rebuild (whose old structures become leaks of its own making).
  std::set<uint64_t> first_leaks_;
  // Cluster ranges [first, end) of snapshot tables the repair replaced: their
  // leaks are freed without a line, as QEMU frees the old table when it
  // writes a new one.
  std::vector<std::pair<uint64_t, uint64_t>> quiet_leaks_;
  bool quiet_leak(uint64_t c) const {
    return std::any_of(quiet_leaks_.begin(), quiet_leaks_.end(),
                       [&](const auto& r) { return c >= r.first && c < r.second; });
  }
  bool rebuilt_ = false;
  bool pending_rebuild_fixed_ = false;
  uint64_t corruptions_before_rebuild_ = 0;
};

Status Repairer::begin_write(const CheckAnalysis& a) {
  if (began_) return Status::ok();
  began_ = true;
  summary_.changed = true;
  uint64_t keep = kAutoclearBitmaps | kAutoclearDataFileRaw | o_.keep_autoclear;
  uint64_t bits = a.header.autoclear_features & keep & ~o_.clear_autoclear;
  if (bits != a.header.autoclear_features) {
    QD_TRY(write_u64(kOffAutoclearFeatures, bits));
    QD_TRY(file_.flush());
  }
  return Status::ok();
}

Status Repairer::apply_entry_fixes(const CheckAnalysis& a) {
  QD_TRY(begin_write(a));
  bool unmapped = false;
  for (const EntryFix& f : a.entry_fixes) {
    log(f.what);
    ++summary_.corruptions_fixed;
    QD_TRY(write_u64(f.file_offset, f.new_word));
    if (f.set_bitmap) QD_TRY(write_u64(f.file_offset + 8, f.new_bitmap));
    if ((f.old_word & kL2eOffsetMask) != (f.new_word & kL2eOffsetMask) ||
        ((f.old_word ^ f.new_word) & kOflagZero)) {
      unmapped = true;
    }
  }
  if (unmapped) {
    summary_.unmapped_data = true;
    // Bitmaps no longer describe the guest's data: let QEMU drop them.
    if (a.header.autoclear_features & kAutoclearBitmaps) {
      QD_TRY(file_.flush());
      QD_TRY(write_u64(kOffAutoclearFeatures, 0));
    }
  }
  return file_.flush();
}

Status Repairer::rebuild_refcounts(CheckAnalysis& a) {
  QD_TRY(begin_write(a));
  log("Rebuilding refcount structure");
  const Geometry& g = a.g;
  const uint64_t cs = g.cluster_size;
  // New structures go past everything in use and past the end of the file.
  uint64_t start = std::max<uint64_t>(a.computed.size(), (a.file_size + cs - 1) / cs);
  const RefcountLayout layout = refcount_layout(g, 0, start, 0);
  const uint64_t blocks = layout.blocks, table_clusters = layout.table_clusters;
  if (table_clusters * cs > kMaxReftableBytes) {
    return no_space("rebuilt refcount table would exceed " + std::to_string(kMaxReftableBytes) + " bytes");
  }
  uint64_t table_start = start + blocks;
  uint64_t end = table_start + table_clusters;
  std::vector<uint8_t> table(table_clusters * cs, 0);
  std::vector<uint8_t> block(cs);
  for (uint64_t b = 0; b < blocks; ++b) {
    std::fill(block.begin(), block.end(), uint8_t{0});
    uint64_t first = b * g.rb_entries;
    for (uint64_t i = 0; i < g.rb_entries; ++i) {
      uint64_t c = first + i;
      uint64_t v = c < a.computed.size() ? a.computed.get(c) : 0;
      if (c >= start && c < end) v = 1;
      if (v) set_refcount_entry(block, g.refcount_order, i, v);
    }
    uint64_t at = (start + b) * cs;
    QD_TRY(file_.pwrite(at, block));
    store_be64(table.data() + 8 * b, at);
  }
  QD_TRY(file_.pwrite(table_start * cs, table));
  QD_TRY(file_.flush());
  // Offset (48..55) and size (56..59) in one write.
  uint8_t hdr[12];
  store_be64(hdr, table_start * cs);
  store_be32(hdr + 8, static_cast<uint32_t>(table_clusters));
  QD_TRY(file_.pwrite(kOffRefcountTableOffset, hdr));
  return file_.flush();
}

Status Repairer::set_refcounts(CheckAnalysis& a,
                               const std::vector<std::pair<uint64_t, uint64_t>>& to) {
  const Geometry& g = a.g;
  std::map<uint64_t, std::vector<std::pair<uint64_t, uint64_t>>> by_block;
  for (const auto& [cluster, value] : to) by_block[cluster >> g.rb_bits].push_back({cluster, value});
  std::vector<uint8_t> block(g.cluster_size);
  for (const auto& [bi, items] : by_block) {
    uint64_t at = a.reftable[bi] & kReftOffsetMask;  // exists: stored refcounts are > 0
    QD_TRY(file_.read_or_zero(at, block));
    for (const auto& [cluster, value] : items) {
      set_refcount_entry(block, g.refcount_order, cluster & (g.rb_entries - 1), value);
    }
    QD_TRY(file_.pwrite(at, block));
  }
  a.drop_refcount_cache();
  return file_.flush();
}

Result<bool> Repairer::fix_copied(CheckAnalysis& a, bool clear_pass,
                                  const std::function<uint64_t(uint64_t)>& target) {
  const Geometry& g = a.g;
  bool wrote = false;
  std::vector<uint8_t> l1(uint64_t{a.header.l1_size} * 8);
  QD_TRY(file_.read_or_zero(a.header.l1_table_offset, l1));
  std::vector<uint8_t> table(g.cluster_size);
  for (uint64_t i = 0; i < a.header.l1_size; ++i) {
    uint64_t l1e = load_be64(l1.data() + 8 * i);
    uint64_t l2 = l1e & kL1eOffsetMask;
    if (l2 == 0) continue;
    bool want = target(l2 >> g.cluster_bits) == 1;
    bool has = (l1e & kOflagCopied) != 0;
    if (want != has && want != clear_pass) {
      QD_TRY(begin_write(a));
      uint64_t v = want ? (l1e | kOflagCopied) : (l1e & ~kOflagCopied);
      ++summary_.corruptions_fixed;
      log("Repairing OFLAG_COPIED L2 cluster: l1_index=" + std::to_string(i) +
          " l1_entry=" + hex_digits(l1e) + " refcount=" + std::to_string(target(l2 >> g.cluster_bits)));
      QD_TRY(write_u64(a.header.l1_table_offset + 8 * i, v));
      wrote = true;
    }
    QD_TRY(file_.read_or_zero(l2, table));
    bool dirty = false;
    for (uint64_t j = 0; j < g.l2_entries; ++j) {
      uint8_t* p = table.data() + j * g.l2_entry_bytes;
      const L2Entry e{load_be64(p), 0};
      const uint64_t word = e.word;
      ClusterType type = e.cluster_type(g);
      if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
      // Unlike the analysis, extended entries with bit 0 set are left alone.
      if (g.extended_l2 && e.zero_flag()) continue;
      uint64_t rc = target(e.host_offset() >> g.cluster_bits);
      bool w = rc == 1;
      bool h = (word & kOflagCopied) != 0;
      if (w == h || w == clear_pass) continue;
      ++summary_.corruptions_fixed;
      log("Repairing OFLAG_COPIED data cluster: l2_entry=" + hex_digits(word) +
          " refcount=" + std::to_string(rc));
      store_be64(p, w ? (word | kOflagCopied) : (word & ~kOflagCopied));
      dirty = true;
    }
    if (dirty) {
      QD_TRY(begin_write(a));
      QD_TRY(file_.pwrite(l2, table));
      wrote = true;
    }
  }
  if (wrote) QD_TRY(file_.flush());
  return wrote;
}

Result<bool> Repairer::fix_refcounts_and_copied(CheckAnalysis& a) {
  const bool all = o_.mode == RepairMode::kAll;
  std::vector<std::pair<uint64_t, uint64_t>> raises, lowers;
  for (uint64_t c : a.mismatched) {
    std::optional<uint64_t> stored = a.stored_refcount(file_, c);
    if (!stored) continue;
    uint64_t ref = a.computed.get(c);
    if (*stored < ref && all) raises.push_back({c, ref});
    if (*stored > ref) lowers.push_back({c, ref});
  }
  // The refcount each cluster will have once this round's changes are done.
  auto target = [&](uint64_t c) -> uint64_t {
    std::optional<uint64_t> stored = a.stored_refcount(file_, c);
    uint64_t s = stored ? *stored : 0;
    uint64_t ref = a.computed.get(c);
    if (c >= a.computed.size()) return s;
    if (s > ref || all) return ref;
    return s;
  };
  // -r leaks mends COPIED only when nothing else is wrong (as qemu-img).
  bool copied_ok = all || raises.empty();
  bool wrote = false;
  if (copied_ok) {
    QD_ASSIGN_OR_RETURN(bool w, fix_copied(a, true, target));
    wrote |= w;
  }
  if (!raises.empty() || !lowers.empty()) QD_TRY(begin_write(a));
  for (const auto& [c, v] : raises) {
    log("Repairing cluster " + std::to_string(c) + " refcount=" +
        std::to_string(*a.stored_refcount(file_, c)) + " reference=" + std::to_string(v));
  }
  if (!raises.empty()) QD_TRY(set_refcounts(a, raises));
  summary_.corruptions_fixed += raises.size();
  for (const auto& [c, v] : lowers) {
    if (quiet_leak(c)) continue;
    if (!rebuilt_ || first_leaks_.count(c)) ++summary_.leaks_fixed;
  }
  for (const auto& [c, v] : lowers) {
    if (quiet_leak(c)) continue;
    log("Repairing cluster " + std::to_string(c) + " refcount=" +
        std::to_string(*a.stored_refcount(file_, c)) + " reference=" + std::to_string(v));
  }
  if (!lowers.empty()) QD_TRY(set_refcounts(a, lowers));
  wrote |= !raises.empty() || !lowers.empty();
  if (copied_ok) {
    QD_ASSIGN_OR_RETURN(bool w, fix_copied(a, false, target));
    wrote |= w;
  }
  return wrote;
}

// Writes the snapshot count the analysis kept (entries past QEMU's limits
// dropped off the end, as qemu-img check -r all does before anything else):
// their clusters become leaks for the next round.
Status Repairer::write_snapshot_count(CheckAnalysis& a) {
  QD_TRY(begin_write(a));
  uint8_t count[4];
  store_be32(count, a.header.nb_snapshots);
  QD_TRY(file_.pwrite(kOffNbSnapshots, count));
  summary_.corruptions_fixed += a.snapshot_repairs.discarded;
  return file_.flush();
}

// A snapshot table entry as QEMU's qcow2_write_snapshots writes every entry:
// at least the 24 bytes of known extra data (the VM state size, the disk size,
// the icount; defaults where the entry had none), then the unknown rest.
Snapshot qemu_written_entry(const Snapshot& s, uint64_t image_size) {
  Snapshot out = s;
  const size_t had = s.extra.size();
  const uint64_t vm_state = had >= 8 ? s.vm_state_size_large : s.vm_state_size;
  const uint64_t disk = had >= 16 ? s.disk_size : image_size;
  const uint64_t icount = had >= 24 ? s.icount : UINT64_MAX;
  out.extra.assign(std::max<size_t>(had, 24), 0);
  store_be64(out.extra.data(), vm_state);
  store_be64(out.extra.data() + 8, disk);
  store_be64(out.extra.data() + 16, icount);
  if (had > 24) std::copy(s.extra.begin() + 24, s.extra.end(), out.extra.begin() + 24);
  out.vm_state_size = vm_state <= 0xffffffffu ? static_cast<uint32_t>(vm_state) : 0;
  out.vm_state_size_large = vm_state;
  out.disk_size = disk;
  out.icount = icount;
  return out;
}

// A new snapshot table: without the damaged entries (deleted), every entry as
// QEMU writes it (which mends the incomplete ones and keeps extra data cut to
// QEMU's limit).
Status Repairer::delete_snapshots(CheckAnalysis& a) {
  QD_TRY(begin_write(a));
  std::vector<Snapshot> keep;
  for (uint32_t i = 0; i < a.snapshots.size(); ++i) {
    auto bad = std::find_if(a.bad_snapshots.begin(), a.bad_snapshots.end(),
                            [&](const SnapshotFault& f) { return f.index == i; });
    if (bad == a.bad_snapshots.end()) {
      keep.push_back(qemu_written_entry(a.snapshots[i], a.header.size));
    } else {
      log("Deleting " + bad->message);
      ++summary_.corruptions_fixed;
    }
  }
  // As qcow2_write_snapshots: a table over QEMU's limit is not written (the
  // entries grow to 24 bytes of extra data at least).
  uint64_t size = 0;
  for (const Snapshot& s : keep) {
    size = (size + 7) / 8 * 8 + kSnapshotHeaderBytes + s.extra.size() + s.id.size() + s.name.size();
  }
  if (size > kMaxSnapshotsTableBytes) {
    log("ERROR failed to update snapshot table: File too large");
    return corruption("the repaired snapshot table would be " + std::to_string(size) +
                      " bytes, over the limit of " + std::to_string(kMaxSnapshotsTableBytes));
  }
  summary_.corruptions_fixed += a.snapshot_repairs.truncated.size() + a.incomplete_snapshots.size();
  // The old table's clusters become leaks, freed without a line.
  if (a.header.snapshots_offset != 0) {
    const uint64_t cs = a.g.cluster_size;
    quiet_leaks_.emplace_back(a.header.snapshots_offset / cs,
                              (a.header.snapshots_offset + a.snapshot_table_bytes + cs - 1) / cs);
  }
  uint8_t hdr[12];
  if (keep.empty()) {
    store_be32(hdr, 0);
    store_be64(hdr + 4, 0);
  } else {
    // A new table in new clusters (refcounted first), then the header switch.
    std::vector<uint8_t> table = encode_snapshot_table(keep);
    uint64_t n = (table.size() + a.g.cluster_size - 1) / a.g.cluster_size;
    Header h = a.header;
    Refcounts rc(file_, a.g, h);
    QD_TRY(rc.load());
    rc.allocate_from(std::max<uint64_t>(a.computed.size(), (a.file_size + a.g.cluster_size - 1) /
                                                                a.g.cluster_size));
    QD_ASSIGN_OR_RETURN(uint64_t first, rc.allocate(n));
    QD_TRY(rc.write_back());
    table.resize(n * a.g.cluster_size, 0);
    QD_TRY(file_.pwrite(first * a.g.cluster_size, table));
    QD_TRY(file_.flush());
    store_be32(hdr, static_cast<uint32_t>(keep.size()));
    store_be64(hdr + 4, first * a.g.cluster_size);
  }
  QD_TRY(file_.pwrite(kOffNbSnapshots, hdr));
  return file_.flush();
}

// Gives each over-referenced entry a copy of its cluster: new clusters past
// the end of the file (refcounts written first), data copied and flushed,
// then the entries switched (without COPIED; the COPIED pass sets it).
Status Repairer::unshare(CheckAnalysis& a) {
  QD_TRY(begin_write(a));
  const uint64_t cs = a.g.cluster_size;
  Header h = a.header;
  Refcounts rc(file_, a.g, h);
  QD_TRY(rc.load());
  rc.allocate_from(std::max<uint64_t>(a.computed.size(), (a.file_size + cs - 1) / cs));
  std::vector<uint64_t> targets;
  for (size_t i = 0; i < a.unshare.size(); ++i) {
    QD_ASSIGN_OR_RETURN(uint64_t c, rc.allocate(1));
    targets.push_back(c * cs);
  }
  QD_TRY(rc.write_back());
  std::vector<uint8_t> data(cs);
  for (size_t i = 0; i < a.unshare.size(); ++i) {
    QD_TRY(file_.read_or_zero(a.unshare[i].host_offset, data));
    QD_TRY(file_.pwrite(targets[i], data));
  }
  QD_TRY(file_.flush());
  for (size_t i = 0; i < a.unshare.size(); ++i) {
    const Unshare& u = a.unshare[i];
    log("Repairing offset=" + hex_digits(u.host_offset) + ": more references than " +
        std::to_string(a.g.refcount_bits) + "-bit refcounts hold; this one now has its own copy at " +
        hex_digits(targets[i]));
    uint64_t word = (u.word & ~kOflagCopied & ~kL2eOffsetMask) | targets[i];
    QD_TRY(write_u64(u.file_offset, word));
    ++summary_.corruptions_fixed;
  }
  return file_.flush();
}

Result<RepairSummary> Repairer::run() {
  CheckOptions quiet;
  quiet.repair_snapshots = o_.mode == RepairMode::kAll;
  bool rebuilt_last_round = false;
  for (int round = 0; round < kMaxRounds; ++round) {
    QD_ASSIGN_OR_RETURN(CheckAnalysis a, analyse_image(file_, quiet));
    watch_.watch(a.aliased, a.g.cluster_bits);
    const bool all = o_.mode == RepairMode::kAll;
    if (round == 0) {
      for (uint64_t c : a.mismatched) {
        std::optional<uint64_t> stored = a.stored_refcount(file_, c);
        if (stored && *stored > a.computed.get(c)) first_leaks_.insert(c);
      }
    }
    if (pending_rebuild_fixed_) {
      uint64_t now = a.counts.corruptions - a.copied_mismatches;
      if (now < corruptions_before_rebuild_) summary_.corruptions_fixed += corruptions_before_rebuild_ - now;
      pending_rebuild_fixed_ = false;
    }
    if (a.rebuild && !all) {
      log("ERROR need to rebuild refcount structures");
      return corruption("the refcount structures need to be rebuilt: use -r all");
    }
    if (a.rebuild && rebuilt_last_round) {
      log("ERROR rebuilt refcount structure is still broken");
      return corruption("the rebuilt refcount structures are still broken");
    }
    rebuilt_last_round = false;
    if (all && a.snapshot_repairs.discarded != 0) {
      QD_TRY(write_snapshot_count(a));
      continue;
    }
    // (Damaged snapshot entries are not walked: no fix comes from them.)
    if (all && !a.entry_fixes.empty()) {
      QD_TRY(apply_entry_fixes(a));
      continue;
    }
    if (a.rebuild) {
      QD_TRY(rebuild_refcounts(a));
      rebuilt_ = true;
      pending_rebuild_fixed_ = true;
      // COPIED mismatches are counted when the COPIED pass mends them (those
      // the rebuild made right were never wrong against the true refcounts).
      corruptions_before_rebuild_ = a.counts.corruptions - a.copied_mismatches;
      rebuilt_last_round = true;
      continue;
    }
    if (all && !a.unshare.empty()) {
      QD_TRY(unshare(a));
      continue;
    }
    // Damaged snapshot entries go before their clusters' refcounts are
    // lowered, unless refcounts must first be raised (allocation trusts them).
    bool raises_needed = std::any_of(a.mismatched.begin(), a.mismatched.end(), [&](uint64_t c) {
      std::optional<uint64_t> stored = a.stored_refcount(file_, c);
      return stored && *stored < a.computed.get(c);
    });
    const bool new_table = all && (!a.bad_snapshots.empty() || !a.snapshot_repairs.truncated.empty() ||
                                   !a.incomplete_snapshots.empty());
    if (new_table && !raises_needed) {
      QD_TRY(delete_snapshots(a));
      continue;
    }
    QD_ASSIGN_OR_RETURN(bool wrote, fix_refcounts_and_copied(a));
    if (wrote) continue;
    if (new_table) {
      QD_TRY(delete_snapshots(a));
      continue;
    }
    // Nothing left that this mode repairs: clear the autoclear bits nobody
    // here knows (as QEMU does on every writable open), and the dirty and
    // corrupt bits if the image is now consistent (as qemu-img does).
    const uint64_t known = kAutoclearBitmaps | kAutoclearDataFileRaw | o_.known_autoclear |
                           o_.keep_autoclear | o_.clear_autoclear;
    // (Once begin_write ran they are gone: this is the case with no other write,
    // which keeps qdedup's own bits, such as a still valid dedup index.)
    if (a.header.version >= 3 && (a.header.autoclear_features & ~known)) {
      QD_TRY(write_u64(kOffAutoclearFeatures, a.header.autoclear_features & known));
      QD_TRY(file_.flush());
    }
    uint64_t bits = kIncompatDirty | kIncompatCorrupt;
    if ((a.header.incompatible_features & bits) && a.counts.corruptions == 0 &&
        a.counts.check_errors == 0 && (all || a.counts.leaks == 0)) {
      QD_TRY(begin_write(a));
      QD_TRY(write_u64(kOffIncompatibleFeatures, a.header.incompatible_features & ~bits));
      QD_TRY(file_.flush());
    }
    return summary_;
  }
  return corruption("repair did not converge after " + std::to_string(kMaxRounds) + " rounds");
}

}  // namespace

Result<RepairSummary> repair_image(io::File& file, const RepairOptions& options) {
  Repairer r(file, options);
  return r.run();
}

}  // namespace qdedup::qcow2
