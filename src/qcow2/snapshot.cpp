#include "qcow2/snapshot.h"

#include <algorithm>

#include "qcow2/format.h"
#include "util/endian.h"
#include "util/size.h"

namespace qdedup::qcow2 {

Result<SnapshotTable> read_snapshot_table_entries(io::File& file, const Header& h,
                                                  uint64_t file_size, SnapshotRepairs* repair) {
  SnapshotTable out;
  if (h.nb_snapshots == 0) return out;
  // As QEMU's qcow2_do_read_snapshots, with QEMU's limits on the table's size
  // (64 MiB, counting each entry's extra data as kept) and on its span
  // (INT_MAX). An entry that runs past the end of the file is an error, except
  // in repair, which reads zeros there as QEMU does.
  auto in_file = [&](uint32_t i, uint64_t at, uint64_t n) -> Status {
    if (repair != nullptr || table_in_file(h.snapshots_offset + at, n, file_size)) return Status::ok();
    return corruption("snapshot table entry " + std::to_string(i) + " lies beyond the end of the file");
  };
  uint64_t off = 0;           // from the table's start, as read
  uint64_t table_length = 0;  // as kept
  std::vector<uint8_t> fixed(kSnapshotHeaderBytes);
  out.snapshots.reserve(std::min<uint32_t>(h.nb_snapshots, 1024));
  for (uint32_t i = 0; i < h.nb_snapshots; ++i) {
    const uint64_t entry_start = off;
    table_length = (table_length + 7) / 8 * 8;
    off = (off + 7) / 8 * 8;
    QD_TRY(in_file(i, off, fixed.size()));
    QD_TRY(file.read_or_zero(h.snapshots_offset + off, fixed));
    off += kSnapshotHeaderBytes;
    Snapshot s;
    const uint8_t* p = fixed.data();
    s.l1_table_offset = load_be64(p);
    s.l1_size = load_be32(p + 8);
    uint16_t id_len = load_be16(p + 12);
    uint16_t name_len = load_be16(p + 14);
    s.date_sec = load_be32(p + 16);
    s.date_nsec = load_be32(p + 20);
    s.vm_clock_nsec = load_be64(p + 24);
    s.vm_state_size = load_be32(p + 32);
    const uint32_t extra_len = load_be32(p + 36);
    uint32_t kept_extra = extra_len;
    if (extra_len > kMaxSnapshotExtraData) {
      if (repair == nullptr) {
        return corruption("Too much extra metadata in snapshot table entry " + std::to_string(i) +
                          " (qdedup check -r all removes it)");
      }
      repair->truncated.push_back({i, extra_len});
      kept_extra = kMaxSnapshotExtraData;
    }
    // (The padding of the last entry need not be in the file: QEMU omits it.)
    QD_TRY(in_file(i, off, uint64_t{extra_len} + id_len + name_len));
    s.extra.resize(kept_extra);
    QD_TRY(file.read_or_zero(h.snapshots_offset + off, s.extra));
    off += extra_len;
    if (kept_extra >= 8) s.vm_state_size_large = load_be64(s.extra.data());
    if (kept_extra >= 16) s.disk_size = load_be64(s.extra.data() + 8);
    if (kept_extra >= 24) s.icount = load_be64(s.extra.data() + 16);
    std::vector<uint8_t> names(uint64_t{id_len} + name_len);
    QD_TRY(file.read_or_zero(h.snapshots_offset + off, names));
    off += names.size();
    // C strings to QEMU: each ends at its first NUL byte.
    auto c_string = [](auto from, auto to) { return std::string(from, std::find(from, to, uint8_t{0})); };
    s.id = c_string(names.begin(), names.begin() + id_len);
    s.name = c_string(names.begin() + id_len, names.end());
    uint64_t entry = 0;
    (void)align_up(kSnapshotHeaderBytes + uint64_t{extra_len} + id_len + name_len, 8, &entry);
    s.entry_bytes = entry;
    table_length += kSnapshotHeaderBytes + kept_extra + id_len + name_len;
    if (table_length > kMaxSnapshotsTableBytes || off > uint64_t{INT32_MAX}) {
      const uint32_t overhanging = h.nb_snapshots - i;
      if (repair == nullptr) {
        return corruption("Snapshot table is too big (qdedup check -r all removes its last " +
                          std::to_string(overhanging) + " snapshots)");
      }
      repair->discarded += overhanging;
      off = entry_start;
      break;
    }
    out.snapshots.push_back(std::move(s));
  }
  out.bytes = off;
  return out;
}

SnapshotL1Faults snapshot_l1_faults(const Snapshot& s, uint64_t cluster_size, uint64_t file_end) {
  SnapshotL1Faults f;
  f.too_large = s.l1_size > kMaxL1Entries;
  f.unaligned = s.l1_table_offset % cluster_size != 0;
  f.beyond_end = !table_in_file(s.l1_table_offset, uint64_t{s.l1_size} * 8, file_end);
  return f;
}

Result<std::vector<Snapshot>> read_snapshot_table(io::File& file, const Header& h,
                                                  uint64_t file_size) {
  QD_ASSIGN_OR_RETURN(SnapshotTable table, read_snapshot_table_entries(file, h, file_size));
  for (size_t i = 0; i < table.snapshots.size(); ++i) {
    const Snapshot& s = table.snapshots[i];
    auto where = [&](const std::string& what) {
      return corruption("snapshot table entry " + std::to_string(i) + ": " + what);
    };
    SnapshotL1Faults l1 = snapshot_l1_faults(s, h.cluster_size(), file_size);
    if (l1.too_large) return where("L1 table is too large");
    if (l1.unaligned) return where("L1 table is not cluster aligned");
    if (l1.beyond_end) return where("L1 table lies beyond the end of the file");
  }
  return std::move(table.snapshots);
}

std::optional<size_t> find_snapshot(const std::vector<Snapshot>& snapshots, const std::string* id,
                                    const std::string* name) {
  if (id == nullptr && name == nullptr) return std::nullopt;
  for (size_t i = 0; i < snapshots.size(); ++i) {
    if ((id == nullptr || snapshots[i].id == *id) && (name == nullptr || snapshots[i].name == *name)) {
      return i;
    }
  }
  return std::nullopt;
}

std::vector<uint8_t> encode_snapshot_table(const std::vector<Snapshot>& snapshots) {
  std::vector<uint8_t> out;
  for (const Snapshot& s : snapshots) {
    size_t at = out.size();
    uint64_t var = s.extra.size() + s.id.size() + s.name.size();
    uint64_t entry = 0;
    (void)align_up(kSnapshotHeaderBytes + var, 8, &entry);
    out.resize(at + entry, 0);
    uint8_t* p = out.data() + at;
    store_be64(p, s.l1_table_offset);
    store_be32(p + 8, s.l1_size);
    store_be16(p + 12, static_cast<uint16_t>(s.id.size()));
    store_be16(p + 14, static_cast<uint16_t>(s.name.size()));
    store_be32(p + 16, s.date_sec);
    store_be32(p + 20, s.date_nsec);
    store_be64(p + 24, s.vm_clock_nsec);
    store_be32(p + 32, s.vm_state_size);
    store_be32(p + 36, static_cast<uint32_t>(s.extra.size()));
    uint8_t* v = p + kSnapshotHeaderBytes;
    v = std::copy(s.extra.begin(), s.extra.end(), v);
    v = std::copy(s.id.begin(), s.id.end(), v);
    std::copy(s.name.begin(), s.name.end(), v);
  }
  return out;
}

}  // namespace qdedup::qcow2
