#include "qcow2/bitmap.h"

#include "util/endian.h"
#include "util/size.h"

namespace qdedup::qcow2 {

namespace {
// "Bitmap table": bits 1-8 and 56-63 are reserved.
constexpr uint64_t kBitmapTableEntryReservedMask = 0xff000000000001feull;
}  // namespace

Result<BitmapsExtension> decode_bitmaps_extension(std::span<const uint8_t> ext) {
  if (ext.size() < kBitmapExtensionBytes) return corruption("bitmaps extension is too short");
  BitmapsExtension e;
  e.nb_bitmaps = load_be32(ext.data());
  e.bitmap_directory_size = load_be64(ext.data() + 8);
  e.bitmap_directory_offset = load_be64(ext.data() + 16);
  return e;
}

std::vector<BitmapDirectoryEntry> decode_bitmap_directory(std::span<const uint8_t> dir,
                                                          uint32_t nb_bitmaps) {
  std::vector<BitmapDirectoryEntry> out;
  uint64_t pos = 0;
  for (uint32_t i = 0; i < nb_bitmaps; ++i) {
    if (pos + kBitmapDirectoryEntryFixedBytes > dir.size()) break;
    const uint8_t* p = dir.data() + pos;
    BitmapDirectoryEntry e;
    e.bitmap_table_offset = load_be64(p);
    e.bitmap_table_size = load_be32(p + 8);
    e.flags = load_be32(p + 12);
    e.type = p[16];
    e.granularity_bits = p[17];
    e.name_size = load_be16(p + 18);
    e.extra_data_size = load_be32(p + 20);
    (void)align_up(kBitmapDirectoryEntryFixedBytes + uint64_t{e.extra_data_size} + e.name_size, 8,
                   &e.entry_bytes);
    e.complete = e.entry_bytes <= dir.size() - pos;
    if (e.complete) {
      const uint8_t* name = p + kBitmapDirectoryEntryFixedBytes + e.extra_data_size;
      e.name.assign(name, name + e.name_size);
    }
    pos += e.entry_bytes;
    out.push_back(std::move(e));
  }
  return out;
}

bool bitmap_table_entry_valid(uint64_t entry, uint64_t cluster_size) {
  if (entry & kBitmapTableEntryReservedMask) return false;
  uint64_t off = bitmap_table_entry_offset(entry);
  return off == 0 || ((entry & 1) == 0 && off % cluster_size == 0);
}

}  // namespace qdedup::qcow2
