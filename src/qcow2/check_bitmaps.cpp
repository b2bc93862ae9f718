// The persistent bitmaps part of the check: the bitmap directory and every
// bitmap table and data cluster are references to count.
#include "qcow2/bitmap.h"
#include "qcow2/check_analyser.h"
#include "qcow2/format.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2::check_detail {

Status Analyser::walk_bitmaps() {
  const Header& h = a_.header;
  // QEMU ignores the bitmaps (and they become leaks) once a program that does
  // not know them cleared autoclear bit 0.
  if (!h.bitmaps_ext || !(h.autoclear_features & kAutoclearBitmaps)) return Status::ok();
  auto ext = decode_bitmaps_extension(*h.bitmaps_ext);
  if (!ext) {
    corrupt("ERROR bitmaps extension is too short");
    return Status::ok();
  }
  const uint64_t dir_offset = ext->bitmap_directory_offset;
  const uint64_t dir_size = ext->bitmap_directory_size;
  if (ext->nb_bitmaps == 0) return Status::ok();
  inc(dir_offset, dir_size);
  if (dir_size > (64ull << 20) || dir_offset > a_.file_size ||
      dir_size > a_.file_size - dir_offset) {
    corrupt("ERROR bitmap directory at 0x" + hex_digits(dir_offset) + " is invalid");
    return Status::ok();
  }
  std::vector<uint8_t> dir(dir_size);
  QD_TRY(file_.read_or_zero(dir_offset, dir));
  std::vector<BitmapDirectoryEntry> entries = decode_bitmap_directory(dir, ext->nb_bitmaps);
  for (const BitmapDirectoryEntry& e : entries) {
    const uint64_t table_bytes = uint64_t{e.bitmap_table_size} * 8;
    if (!inc(e.bitmap_table_offset, table_bytes)) continue;
    if (e.bitmap_table_offset % a_.g.cluster_size != 0) {
      corrupt("ERROR bitmap table at 0x" + hex_digits(e.bitmap_table_offset) +
              " is not cluster aligned");
      continue;
    }
    std::vector<uint8_t> table(table_bytes);
    QD_TRY(file_.read_or_zero(e.bitmap_table_offset, table));
    for (uint32_t i = 0; i < e.bitmap_table_size; ++i) {
      uint64_t entry = load_be64(table.data() + 8 * i);
      if (!bitmap_table_entry_valid(entry, a_.g.cluster_size)) {
        corrupt("ERROR bitmap table entry " + hex_digits(entry) + " is invalid");
        continue;
      }
      if (uint64_t off = bitmap_table_entry_offset(entry)) inc(off, a_.g.cluster_size);
    }
  }
  if (entries.size() < ext->nb_bitmaps) {
    corrupt("ERROR bitmap directory entry " + dec(entries.size()) + " lies beyond the directory");
  }
  return Status::ok();
}

}  // namespace qdedup::qcow2::check_detail
