// The internal snapshot table ("Snapshots" section of the spec).
#pragma once

#include <cstdint>
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

// Reads and validates the snapshot table of `h` (bounded by QEMU's limits
// and by `file_size` before anything is allocated).
Result<std::vector<Snapshot>> read_snapshot_table(io::File& file, const Header& h,
                                                  uint64_t file_size);

}  // namespace qdedup::qcow2
