#include "qcow2/info.h"

#include "qcow2/bitmap.h"
#include "qcow2/chain.h"
#include "qcow2/format.h"
#include "qcow2/image.h"

namespace qdedup::qcow2 {

namespace {

Result<std::vector<BitmapInfo>> read_bitmaps(Image& img) {
  QD_ASSIGN_OR_RETURN(BitmapsExtension ext, decode_bitmaps_extension(*img.header().bitmaps_ext));
  QD_ASSIGN_OR_RETURN(uint64_t file_size, img.file().size());
  const uint64_t dir_offset = ext.bitmap_directory_offset;
  const uint64_t dir_size = ext.bitmap_directory_size;
  if (ext.nb_bitmaps == 0 || ext.nb_bitmaps > kMaxBitmaps ||
      !validate_table(dir_offset, dir_size, 1, kMaxBitmapDirectoryBytes,
                      {"bitmap directory", "bytes"}, img.geometry().cluster_size) ||
      dir_offset > file_size || !table_in_file(dir_offset, dir_size, file_size)) {
    return corruption("bitmaps extension: invalid bitmap directory");
  }
  std::vector<uint8_t> dir(dir_size);
  QD_TRY(img.file().read_exact(dir_offset, dir, "bitmap directory"));
  std::vector<BitmapDirectoryEntry> entries = decode_bitmap_directory(dir, ext.nb_bitmaps);
  std::vector<BitmapInfo> out;
  for (uint32_t i = 0; i < ext.nb_bitmaps; ++i) {
    if (i >= entries.size()) return corruption("bitmap directory entry " + std::to_string(i) + " truncated");
    const BitmapDirectoryEntry& e = entries[i];
    if (!e.complete || e.granularity_bits > 63) {
      return corruption("bitmap directory entry " + std::to_string(i) + " invalid");
    }
    BitmapInfo b;
    b.name = e.name;
    b.granularity = uint64_t{1} << e.granularity_bits;
    if (e.flags & kBitmapFlagInUse) b.flags.push_back("in-use");
    if (e.flags & kBitmapFlagAuto) b.flags.push_back("auto");
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace

Result<ImageInfo> collect_info(BlockDevice& dev, io::File& file) {
  ImageInfo info;
  info.filename = dev.name();
  info.format = dev.format();
  info.virtual_size = dev.virtual_size();
  QD_ASSIGN_OR_RETURN(info.actual_size, file.allocated_size());
  auto* img = dynamic_cast<Image*>(&dev);
  if (img == nullptr) return info;
  const Header& h = img->header();
  info.cluster_size = h.cluster_size();
  info.dirty = (h.incompatible_features & kIncompatDirty) != 0;
  if (h.has_backing()) {
    info.backing_filename = h.backing_file;
    info.full_backing_filename = resolve_backing_path(dev.name(), h.backing_file);
    if (h.backing_format) info.backing_format = *h.backing_format;
  }
  for (const Snapshot& s : img->snapshots()) {
    SnapshotInfo si;
    si.id = s.id;
    si.name = s.name;
    si.vm_state_size = s.extra.size() >= 8 ? s.vm_state_size_large : s.vm_state_size;
    si.date_sec = s.date_sec;
    si.date_nsec = s.date_nsec;
    si.vm_clock_nsec = s.vm_clock_nsec;
    if (s.icount != UINT64_MAX) si.icount = s.icount;
    info.snapshots.push_back(std::move(si));
  }
  Qcow2Info q;
  q.compat = h.version >= 3 ? "1.1" : "0.10";
  q.compression_type = h.compression_type == kCompressionZstd ? "zstd" : "zlib";
  q.refcount_bits = h.refcount_bits();
  q.lazy_refcounts = (h.compatible_features & kCompatLazyRefcounts) != 0;
  q.corrupt = (h.incompatible_features & kIncompatCorrupt) != 0;
  q.extended_l2 = (h.incompatible_features & kIncompatExtendedL2) != 0;
  if (h.version >= 3 && h.bitmaps_ext && (h.autoclear_features & kAutoclearBitmaps)) {
    QD_ASSIGN_OR_RETURN(q.bitmaps, read_bitmaps(*img));
  }
  info.qcow2 = std::move(q);
  return info;
}

}  // namespace qdedup::qcow2
