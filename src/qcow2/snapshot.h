// The internal snapshot table ("Snapshots" section of the spec).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/file.h"
#include "qcow2/header.h"
#include "util/status.h"

namespace qdedup::qcow2 {

struct Snapshot {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint32_t vm_state_size = 0;
  std::vector<uint8_t> extra;  // extra data, kept verbatim
  // Decoded from `extra` when present.
  uint64_t vm_state_size_large = 0;
  uint64_t disk_size = 0;
  uint64_t icount = UINT64_MAX;  // -1 in QEMU when absent
  uint64_t entry_bytes = 0;      // size of the entry on disk, padded to 8
};

struct SnapshotTable {
  std::vector<Snapshot> snapshots;
  uint64_t bytes = 0;  // from the table's start to the end of its last entry
};

// What reading a snapshot table QEMU's limits reject changes, as QEMU's
// qcow2_do_read_snapshots does in check -r all: the entries past the 64 MiB
// table limit dropped, extra data over 1024 bytes cut there.
struct SnapshotRepairs {
  uint32_t discarded = 0;  // entries dropped off the end
  struct Truncated {
    uint32_t index = 0;
    uint32_t extra_bytes = 0;  // as stored
  };
  std::vector<Truncated> truncated;
};

// Reads the entries of the snapshot table of `h` as QEMU reads them (bytes
// past the end of the file read as zeros; the work is bounded by QEMU's
// limits on the table). Fails where QEMU fails (too much extra data in an
// entry, a table over 64 MiB), unless `repair` is given: it then says what
// was dropped. The entries' L1 fields are not checked. `bytes` is what QEMU
// takes as the table's size (from its start to the end of the last entry as
// stored).
Result<SnapshotTable> read_snapshot_table_entries(io::File& file, const Header& h,
                                                  uint64_t file_size,
                                                  SnapshotRepairs* repair = nullptr);

// Encodes a snapshot table (entries padded to 8 bytes, as QEMU writes it).
std::vector<uint8_t> encode_snapshot_table(const std::vector<Snapshot>& snapshots);

// What is wrong with the L1 table fields of a snapshot table entry (QEMU's
// rules: at most kMaxL1Entries, cluster aligned, inside the file). Callers
// report the faults in their own order and words.
struct SnapshotL1Faults {
  bool too_large = false;
  bool unaligned = false;
  bool beyond_end = false;  // some of its l1_size * 8 bytes lie at or past `file_end`
};
// `file_end`: the file's size; qemu-img check passes a cluster more, less
// one byte, as it tolerates a partly written last cluster.
SnapshotL1Faults snapshot_l1_faults(const Snapshot& s, uint64_t cluster_size, uint64_t file_end);

// Reads and validates the snapshot table of `h`: the entries, and each L1
// table's size, alignment and place in the file. (A version 3 entry with
// less than the 16 bytes of extra data the spec asks for is read, as QEMU
// reads it; check reports it.)
Result<std::vector<Snapshot>> read_snapshot_table(io::File& file, const Header& h,
                                                  uint64_t file_size);

// The index of the first snapshot with this id and name (either may be null:
// not compared; both null finds none), as QEMU's find_snapshot_by_id_and_name.
std::optional<size_t> find_snapshot(const std::vector<Snapshot>& snapshots, const std::string* id,
                                    const std::string* name);

}  // namespace qdedup::qcow2
