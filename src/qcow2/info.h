// What `info` reports about an image, collected into one struct; rendering
// (human text, JSON) lives in commands/info.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qcow2/device.h"
#include "util/status.h"

namespace qdedup::qcow2 {

struct BitmapInfo {
  std::string name;
  uint64_t granularity = 0;
  std::vector<std::string> flags;  // "in-use", "auto"
};

struct SnapshotInfo {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  std::optional<uint64_t> icount;
};

struct Qcow2Info {
  std::string compat;  // "0.10" or "1.1"
  std::string compression_type;
  uint32_t refcount_bits = 16;
  bool lazy_refcounts = false;
  bool corrupt = false;
  bool extended_l2 = false;
  std::optional<std::vector<BitmapInfo>> bitmaps;
};

struct ImageInfo {
  std::string filename;
  std::string format;
  uint64_t virtual_size = 0;
  uint64_t actual_size = 0;
  std::optional<uint64_t> cluster_size;
  bool dirty = false;
  std::optional<std::string> backing_filename;
  std::optional<std::string> full_backing_filename;
  std::optional<std::string> backing_format;
  std::vector<SnapshotInfo> snapshots;
  std::optional<Qcow2Info> qcow2;
};

// Collects the facts about one opened device (not its backing files).
Result<ImageInfo> collect_info(BlockDevice& dev, io::File& file);

}  // namespace qdedup::qcow2
