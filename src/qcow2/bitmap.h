// Persistent dirty bitmaps: the bitmaps header extension and the bitmap
// directory ("Bitmaps" section of the spec). qdedup reads them for `info`
// and `check`; it never writes them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/status.h"

namespace qdedup::qcow2 {

// QEMU's limits (block/qcow2-bitmap.c).
inline constexpr uint64_t kMaxBitmapDirectoryBytes = 1024ull * 65535;
inline constexpr uint32_t kMaxBitmaps = 65535;
// Bitmap directory entry flags ("Bitmap directory" section).
inline constexpr uint32_t kBitmapFlagInUse = 1u << 0;
inline constexpr uint32_t kBitmapFlagAuto = 1u << 1;
inline constexpr uint64_t kBitmapExtensionBytes = 24;
inline constexpr uint64_t kBitmapDirectoryEntryFixedBytes = 24;

// The bitmaps extension (kept verbatim in Header::bitmaps_ext).
struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t bitmap_directory_size = 0;    // bytes
  uint64_t bitmap_directory_offset = 0;  // bytes
};
// Decodes the extension; Corruption if it is shorter than 24 bytes.
Result<BitmapsExtension> decode_bitmaps_extension(std::span<const uint8_t> ext);

// One bitmap directory entry.
struct BitmapDirectoryEntry {
  uint64_t bitmap_table_offset = 0;
  uint32_t bitmap_table_size = 0;  // entries of 8 bytes
  uint32_t flags = 0;
  uint8_t type = 0;
  uint8_t granularity_bits = 0;
  uint16_t name_size = 0;
  uint32_t extra_data_size = 0;
  uint64_t entry_bytes = 0;  // 24 + extra data + name, padded to 8
  // The whole entry, padding included, lies inside the directory; `name` is
  // only decoded then.
  bool complete = false;
  std::string name;
};

// Decodes the entries of a directory of `nb_bitmaps` entries in order. Stops
// at the first entry whose fixed 24 bytes lie beyond `dir`: fewer entries
// than `nb_bitmaps` means that entry (index = result size) is truncated.
std::vector<BitmapDirectoryEntry> decode_bitmap_directory(std::span<const uint8_t> dir,
                                                          uint32_t nb_bitmaps);

// A bitmap table entry is valid if its reserved bits are clear and, when it
// points at a cluster, that offset is cluster aligned and bit 0 is clear.
bool bitmap_table_entry_valid(uint64_t entry, uint64_t cluster_size);
// The cluster a bitmap table entry points at (0: none).
inline uint64_t bitmap_table_entry_offset(uint64_t entry) { return entry & 0x00fffffffffffe00ull; }

}  // namespace qdedup::qcow2
