#include "qcow2/check.h"

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

std::optional<uint64_t> CheckAnalysis::stored_refcount(io::File& file, uint64_t cluster) {
  uint64_t idx = cluster >> g.rb_bits;
  if (idx >= reftable.size()) return 0;
  uint64_t block = reftable[idx] & kReftOffsetMask;
  if (block == 0) return 0;
  if (block % g.cluster_size != 0) return std::nullopt;
  auto it = rb_cache.find(block);
  if (it == rb_cache.end()) {
    // At most 64 MiB of cached blocks (and at least 16 blocks).
    if (rb_cache.size() >= std::max<uint64_t>(16, (64ull << 20) / g.cluster_size)) rb_cache.clear();
    std::vector<uint8_t> data(g.cluster_size);
    if (!file.read_or_zero(block, data)) return std::nullopt;
    it = rb_cache.emplace(block, std::move(data)).first;
  }
  return refcount_entry(it->second, g.refcount_order, cluster & (g.rb_entries - 1));
}

namespace {


std::string dec(uint64_t v) { return std::to_string(v); }

// QEMU's cluster types (qcow2_get_cluster_type): with extended L2 entries
// the zero flag is not used and offset 0 is always unallocated.
enum class QType { kUnallocated, kZeroPlain, kZeroAlloc, kNormal, kCompressed };

QType qemu_type(const Geometry& g, uint64_t word) {
  if (word & kOflagCompressed) return QType::kCompressed;
  if ((word & kOflagZero) && !g.extended_l2) {
    return (word & kL2eOffsetMask) ? QType::kZeroAlloc : QType::kZeroPlain;
  }
  return (word & kL2eOffsetMask) ? QType::kNormal : QType::kUnallocated;
}

class Analyser {
 public:
  Analyser(io::File& file, CheckAnalysis& a, const CheckOptions& o) : file_(file), a_(a), o_(o) {}

  Status run();

 private:
  void log(const std::string& line) {
    if (o_.log) o_.log(line);
  }
  void corrupt(const std::string& line) {
    ++a_.counts.corruptions;
    log(line);
  }
  // qcow2_inc_refcounts_imrt: counts a reference to every cluster of a byte
  // range. False if the range reaches a cluster or more past the end of the file.
  // What a counted reference is, for finding guest data that aliases metadata.
  enum Use : uint8_t { kMetadata = 0, kGuestData = 1 };
  bool inc(uint64_t offset, uint64_t size, Use use = kMetadata);
  // True if [offset, offset + size) reaches a cluster or more past the end of the file.
  bool beyond_eof(uint64_t offset, uint64_t size) const;
  // The data cluster of the L2 entry at `at`: counted like inc(); a reference
  // beyond the refcount width is planned for un-sharing (a copy of its own).
  bool inc_data(uint64_t at, uint64_t word, uint64_t offset);
  // Plans to make the L2 entry at `at` read as zeros (or fall through to the
  // backing file on v2), for a cluster that cannot be read.
  void plan_unmap(uint64_t at, uint64_t word, const std::string& why);
  Status walk_l1(uint64_t l1_offset, uint64_t l1_size, bool active);
  Status walk_l2(uint64_t l2_offset, bool active);
  Status walk_bitmaps();
  void check_refblocks();
  void compare_refcounts();
  Status check_copied();

  io::File& file_;
  CheckAnalysis& a_;
  const CheckOptions& o_;
  // Two bits a host cluster (2k + Use): referenced as metadata, as guest data.
  std::vector<bool> uses_;
};

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
  const char* now = "reads as zeros";
  if (a_.g.extended_l2) {
    f.new_word = 0;
    f.set_bitmap = true;
    f.new_bitmap = kBitmapAllZero;
  } else if (a_.g.version >= 3) {
    f.new_word = kOflagZero;
  } else {
    f.new_word = 0;
    if (a_.header.has_backing()) now = "reads from the backing file";
  }
  f.what = "Repairing " + why + ": its guest cluster now " + now;
  a_.entry_fixes.push_back(std::move(f));
}

Status Analyser::run() {
  const Header& h = a_.header;
  const Geometry& g = a_.g;
  a_.counts.total_clusters = (h.size + g.cluster_size - 1) >> g.cluster_bits;
  a_.computed.resize((a_.file_size + g.cluster_size - 1) >> g.cluster_bits);
  uses_.assign(2 * a_.computed.size(), false);

  // The refcount table as stored (bounded by validate_header: at most 8 MiB).
  {
    uint64_t n = uint64_t{h.refcount_table_clusters} * g.cluster_size / 8;
    std::vector<uint8_t> raw(n * 8);
    QD_TRY(file_.read_or_zero(h.refcount_table_offset, raw));
    a_.reftable.resize(n);
    for (uint64_t i = 0; i < n; ++i) a_.reftable[i] = load_be64(raw.data() + 8 * i);
  }

  inc(0, g.cluster_size);  // header
  QD_TRY(walk_l1(h.l1_table_offset, h.l1_size, true));
  // Like QEMU 7.2, a damaged snapshot entry is reported and then skipped:
  // its L1 table cannot be trusted, so nothing it points at is counted.
  for (uint32_t i = 0; i < a_.snapshots.size(); ++i) {
    bool bad = std::any_of(a_.bad_snapshots.begin(), a_.bad_snapshots.end(),
                           [&](const SnapshotFault& f) { return f.index == i; });
    if (bad) continue;
    const Snapshot& s = a_.snapshots[i];
    if (s.l1_size != 0 && beyond_eof(s.l1_table_offset, uint64_t{s.l1_size} * 8)) {
      // The snapshot's L1 table is gone: repair deletes the entry. The
      // corruption itself is counted (once, as qemu-img counts it) by walk_l1.
      a_.bad_snapshots.push_back(
          {i, "snapshot " + escape_for_display(s.id) + " (" + escape_for_display(s.name) +
                  ") l1_offset=0x" + hex_digits(s.l1_table_offset) +
                  ": L1 table lies beyond the end of the file; snapshot table entry corrupted"});
    }
    QD_TRY(walk_l1(s.l1_table_offset, s.l1_size, false));
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

Status Analyser::walk_l1(uint64_t l1_offset, uint64_t l1_size, bool active) {
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
      EntryFix f;
      f.file_offset = at;
      f.old_word = entry;
      f.new_word = entry & ~kL1eReservedMask;
      f.what = "Repairing L1 entry with reserved bits set: " + hex_digits(entry);
      a_.entry_fixes.push_back(std::move(f));
    }
    uint64_t l2 = entry & kL1eOffsetMask;
    if (l2 == 0) continue;
    bool beyond_eof = !inc(l2, a_.g.cluster_size);
    if (l2 % a_.g.cluster_size != 0) {
      corrupt("ERROR l2_offset=" + hex_digits(l2) + ": Table is not cluster aligned; L1 entry corrupted");
    }
    if (beyond_eof || l2 % a_.g.cluster_size != 0) {
      // Nothing can be read from this table: drop it (the guest range then
      // reads from the backing file, or zeros).
      EntryFix f;
      f.file_offset = at;
      f.old_word = entry;
      f.new_word = 0;
      f.what = "Repairing L1 entry " + dec(i) + ": its L2 table at 0x" + hex_digits(l2) +
               " cannot be read; guest bytes " + dec(i * a_.g.bytes_per_l2()) + ".." +
               dec((i + 1) * a_.g.bytes_per_l2() - 1) + " now read " +
               (a_.header.has_backing() ? "from the backing file" : "as zeros");
      a_.entry_fixes.push_back(std::move(f));
    }
    QD_TRY(walk_l2(l2, active));
  }
  return Status::ok();
}

Status Analyser::walk_l2(uint64_t l2_offset, bool active) {
  const Geometry& g = a_.g;
  std::vector<uint8_t> table(g.cluster_size);
  QD_TRY(file_.read_or_zero(l2_offset, table));
  uint64_t next_contiguous = 0;
  for (uint64_t i = 0; i < g.l2_entries; ++i) {
    const uint8_t* p = table.data() + i * g.l2_entry_bytes;
    uint64_t word = load_be64(p);
    uint64_t bitmap = g.extended_l2 ? load_be64(p + 8) : 0;
    uint64_t at = l2_offset + i * g.l2_entry_bytes;
    QType type = qemu_type(g, word);
    uint64_t fixed = word;  // what -r all writes back, if different
    std::string fix_what;
    std::string unmap;  // why the entry must be unmapped instead

    if (type != QType::kCompressed && (word & kL2eStdReservedMask)) {
      corrupt("ERROR found l2 entry with reserved bits set: " + hex_digits(word));
      fixed &= ~kL2eStdReservedMask;
      fix_what = "Repairing l2 entry with reserved bits set: " + hex_digits(word);
    }
    switch (type) {
      case QType::kCompressed: {
        if (word & kOflagCopied) {
          corrupt("ERROR: coffset=0x" + hex_digits(word & g.cluster_offset_mask) +
                  ": copied flag must never be set for compressed clusters");
          fixed &= ~kOflagCopied;
          fix_what = "Repairing compressed cluster entry with the copied flag set: " + hex_digits(word);
        }
        if (bitmap) {
          corrupt("ERROR compressed cluster " + dec(i) +
                  " with non-zero subcluster allocation bitmap, entry=0x" + hex_digits(word));
          ++a_.unrepairable;
          break;
        }
        CompressedRange r = compressed_range(g, L2Entry{word & ~kOflagCopied, 0});
        if (!inc(r.offset, r.length, kGuestData)) {
          unmap = "compressed cluster at 0x" + hex_digits(r.offset) + " beyond the end of the file";
        }
        if (active) {
          ++a_.counts.allocated_clusters;
          ++a_.counts.compressed_clusters;
          ++a_.counts.fragmented_clusters;
        }
        break;
      }
      case QType::kZeroAlloc:
      case QType::kNormal: {
        uint64_t offset = word & kL2eOffsetMask;
        if (type == QType::kNormal && ((bitmap >> 32) & bitmap)) {
          corrupt("ERROR offset=" + hex_digits(offset) +
                  ": Allocated cluster has corrupted subcluster allocation bitmap");
          ++a_.unrepairable;
        }
        bool unaligned = offset % g.cluster_size != 0;
        if (unaligned) {
          bool contains_data = g.extended_l2 ? (bitmap & kBitmapAllAllocated) != 0
                                             : (word & kOflagZero) == 0;
          if (!contains_data) {
            corrupt("ERROR offset=" + hex_digits(offset) +
                    ": Preallocated cluster is not properly aligned; L2 entry corrupted.");
            fixed = g.extended_l2 ? 0 : kOflagZero;
            fix_what = "Repairing offset=" + hex_digits(offset) +
                       ": Preallocated cluster is not properly aligned; L2 entry corrupted.";
          } else {
            corrupt("ERROR offset=" + hex_digits(offset) +
                    ": Data cluster is not properly aligned; L2 entry corrupted.");
            unmap = "offset=" + hex_digits(offset) + ": data cluster is not properly aligned";
          }
        }
        if (active) {
          ++a_.counts.allocated_clusters;
          if (next_contiguous && offset != next_contiguous) ++a_.counts.fragmented_clusters;
          next_contiguous = offset + g.cluster_size;
        }
        if (!inc_data(at, word, offset) && unmap.empty()) {
          unmap = "offset=" + hex_digits(offset) + ": cluster lies beyond the end of the file";
        }
        if (a_.g.version < 3 && !g.extended_l2 && (word & kOflagZero)) {
          corrupt("ERROR zero cluster entry " + hex_digits(word) + " in a version 2 image");
          if (!a_.header.has_backing()) {
            fixed = 0;
            fix_what = "Repairing zero cluster entry " + hex_digits(word) +
                       " in a version 2 image: now unallocated (reads as zeros)";
          } else {
            ++a_.unrepairable;
          }
        }
        break;
      }
      case QType::kZeroPlain:
        if (a_.g.version < 3) {
          corrupt("ERROR zero cluster entry " + hex_digits(word) + " in a version 2 image");
          if (!a_.header.has_backing()) {
            fixed = 0;
            fix_what = "Repairing zero cluster entry " + hex_digits(word) +
                       " in a version 2 image: now unallocated (reads as zeros)";
          } else {
            ++a_.unrepairable;
          }
        }
        break;
      case QType::kUnallocated:
        if (bitmap & kBitmapAllAllocated) {
          corrupt("ERROR: Unallocated cluster has non-zero subcluster allocation map");
          ++a_.unrepairable;
        }
        break;
    }
    if (!unmap.empty()) {
      plan_unmap(at, word, unmap);
    } else if (fixed != word) {
      EntryFix f;
      f.file_offset = at;
      f.old_word = word;
      f.new_word = fixed;
      f.what = fix_what;
      a_.entry_fixes.push_back(std::move(f));
    }
  }
  return Status::ok();
}

Status Analyser::walk_bitmaps() {
  const Header& h = a_.header;
  // QEMU ignores the bitmaps (and they become leaks) once a program that does
  // not know them cleared autoclear bit 0.
  if (!h.bitmaps_ext || !(h.autoclear_features & kAutoclearBitmaps)) return Status::ok();
  const std::vector<uint8_t>& ext = *h.bitmaps_ext;
  if (ext.size() < 24) {
    corrupt("ERROR bitmaps extension is too short");
    return Status::ok();
  }
  uint32_t nb = load_be32(ext.data());
  uint64_t dir_size = load_be64(ext.data() + 8);
  uint64_t dir_offset = load_be64(ext.data() + 16);
  if (nb == 0) return Status::ok();
  inc(dir_offset, dir_size);
  if (dir_size > (64ull << 20) || dir_offset > a_.file_size || dir_size > a_.file_size - dir_offset) {
    corrupt("ERROR bitmap directory at 0x" + hex_digits(dir_offset) + " is invalid");
    return Status::ok();
  }
  std::vector<uint8_t> dir(dir_size);
  QD_TRY(file_.read_or_zero(dir_offset, dir));
  uint64_t pos = 0;
  for (uint32_t b = 0; b < nb; ++b) {
    if (pos + 24 > dir.size()) {
      corrupt("ERROR bitmap directory entry " + dec(b) + " lies beyond the directory");
      return Status::ok();
    }
    const uint8_t* e = dir.data() + pos;
    uint64_t table_offset = load_be64(e);
    uint32_t table_size = load_be32(e + 8);
    uint16_t name_size = load_be16(e + 18);
    uint32_t extra = load_be32(e + 20);
    uint64_t entry_len = (24 + uint64_t{extra} + name_size + 7) & ~uint64_t{7};
    pos += entry_len;
    if (!inc(table_offset, uint64_t{table_size} * 8)) continue;
    if (table_offset % a_.g.cluster_size != 0) {
      corrupt("ERROR bitmap table at 0x" + hex_digits(table_offset) + " is not cluster aligned");
      continue;
    }
    std::vector<uint8_t> table(uint64_t{table_size} * 8);
    QD_TRY(file_.read_or_zero(table_offset, table));
    for (uint32_t i = 0; i < table_size; ++i) {
      uint64_t entry = load_be64(table.data() + 8 * i);
      uint64_t off = entry & 0x00fffffffffffe00ull;
      if ((entry & 0xff000000000001feull) || (off != 0 && ((entry & 1) || off % a_.g.cluster_size != 0))) {
        corrupt("ERROR bitmap table entry " + hex_digits(entry) + " is invalid");
        continue;
      }
      if (off != 0) inc(off, a_.g.cluster_size);
    }
  }
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
      corrupt("ERROR OFLAG_COPIED L2 cluster: l1_index=" + dec(i) + " l1_entry=" + hex_digits(l1e) +
              " refcount=" + dec(*rc));
    }
    QD_TRY(file_.read_or_zero(l2, table));
    for (uint64_t j = 0; j < g.l2_entries; ++j) {
      uint64_t word = load_be64(table.data() + j * g.l2_entry_bytes);
      QType type = qemu_type(g, word);
      if (type != QType::kNormal && type != QType::kZeroAlloc) continue;
      std::optional<uint64_t> drc = a_.stored_refcount(file_, (word & kL2eOffsetMask) >> g.cluster_bits);
      if (!drc) continue;
      if ((*drc == 1) != ((word & kOflagCopied) != 0)) {
        corrupt("ERROR OFLAG_COPIED data cluster: l2_entry=" + hex_digits(word) +
                " refcount=" + dec(*drc));
      }
    }
  }
  return Status::ok();
}

}  // namespace

Result<CheckAnalysis> analyse_image(io::File& file, const CheckOptions& options) {
  CheckAnalysis a;
  QD_ASSIGN_OR_RETURN(a.file_size, file.size());
  std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(a.file_size, kHeaderV3Length)));
  QD_TRY(file.read_exact(0, head, "header"));
  if (head.size() >= kOffClusterBits + 4) {
    uint32_t cluster_bits = load_be32(head.data() + kOffClusterBits);
    if (cluster_bits >= kMinClusterBits && cluster_bits <= kMaxClusterBits) {
      head.resize(static_cast<size_t>(std::min<uint64_t>(a.file_size, uint64_t{1} << cluster_bits)));
      QD_TRY(file.read_exact(0, head, "header"));
    }
  }
  QD_ASSIGN_OR_RETURN(a.header, decode_header(head));
  QD_TRY(validate_header(a.header, a.file_size, false));
  a.g = Geometry::from_header(a.header);

  // The snapshot table: damage to one entry's L1 fields is a finding (the
  // entry is deleted by repair), damage to the table's framing fails the check.
  QD_ASSIGN_OR_RETURN(SnapshotTable table, read_snapshot_table_entries(file, a.header, a.file_size));
  a.snapshots = std::move(table.snapshots);
  a.snapshot_table_bytes = table.bytes;
  for (uint32_t i = 0; i < a.snapshots.size(); ++i) {
    const Snapshot& s = a.snapshots[i];
    std::string who = "snapshot " + escape_for_display(s.id) + " (" + escape_for_display(s.name) + ")";
    char buf[64];
    if (s.l1_table_offset % a.g.cluster_size != 0) {
      std::snprintf(buf, sizeof buf, "%#" PRIx64, s.l1_table_offset);
      a.bad_snapshots.push_back({i, who + " l1_offset=" + buf +
                                        ": L1 table is not cluster aligned; snapshot table entry corrupted"});
    } else if (s.l1_size > kMaxL1Entries) {
      std::snprintf(buf, sizeof buf, "%#" PRIx32, s.l1_size);
      a.bad_snapshots.push_back({i, who + " l1_size=" + buf +
                                        ": L1 table is too large; snapshot table entry corrupted"});
    }
  }
  for (const SnapshotFault& f : a.bad_snapshots) {
    ++a.counts.corruptions;
    if (options.log) options.log("ERROR " + f.message);
  }

  Analyser analyser(file, a, options);
  QD_TRY(analyser.run());
  return a;
}

}  // namespace qdedup::qcow2
