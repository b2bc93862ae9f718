#include "qcow2/snapshot.h"

#include "qcow2/format.h"
#include "util/endian.h"
#include "util/size.h"

namespace qdedup::qcow2 {

Result<SnapshotTable> read_snapshot_table_entries(io::File& file, const Header& h,
                                                  uint64_t file_size) {
  SnapshotTable out;
  if (h.nb_snapshots == 0) return out;
  // The table's size is only known by walking it; read at most what QEMU
  // allows, and no more than the file holds.
  uint64_t limit = std::min<uint64_t>(kMaxSnapshotsTableBytes, file_size - h.snapshots_offset);
  uint64_t off = 0;
  std::vector<uint8_t> fixed(kSnapshotHeaderBytes);
  out.snapshots.reserve(std::min<uint32_t>(h.nb_snapshots, 1024));
  for (uint32_t i = 0; i < h.nb_snapshots; ++i) {
    auto where = [&](const std::string& what) {
      return corruption("snapshot table entry " + std::to_string(i) + ": " + what);
    };
    if (off + kSnapshotHeaderBytes > limit) return where("lies beyond the end of the table");
    QD_TRY(file.read_exact(h.snapshots_offset + off, fixed, "snapshot table"));
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
    uint32_t extra_len = load_be32(p + 36);
    if (extra_len > kMaxSnapshotExtraData) return where("too much extra data");
    uint64_t var = uint64_t{extra_len} + id_len + name_len;
    uint64_t entry = 0;
    (void)align_up(kSnapshotHeaderBytes + var, 8, &entry);
    // The padding of the last entry need not be in the file (QEMU omits it).
    if (off + kSnapshotHeaderBytes + var > limit) return where("lies beyond the end of the table");
    std::vector<uint8_t> rest(var);
    QD_TRY(file.read_exact(h.snapshots_offset + off + kSnapshotHeaderBytes, rest,
                           "snapshot table"));
    s.extra.assign(rest.begin(), rest.begin() + extra_len);
    if (extra_len >= 8) s.vm_state_size_large = load_be64(s.extra.data());
    if (extra_len >= 16) s.disk_size = load_be64(s.extra.data() + 8);
    if (extra_len >= 24) s.icount = load_be64(s.extra.data() + 16);
    s.id.assign(rest.begin() + extra_len, rest.begin() + extra_len + id_len);
    s.name.assign(rest.begin() + extra_len + id_len, rest.end());
    s.entry_bytes = entry;
    out.bytes = off + kSnapshotHeaderBytes + var;
    off += entry;
    out.snapshots.push_back(std::move(s));
  }
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
    if (h.version >= 3 && s.extra.size() < 16) return where("version 3 needs 16 bytes of extra data");
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
