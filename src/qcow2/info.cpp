#include "qcow2/info.h"

#include "qcow2/chain.h"
#include "qcow2/format.h"
#include "qcow2/image.h"
#include "util/endian.h"
#include "util/size.h"

namespace qdedup::qcow2 {

namespace {

// Bitmap directory limits (QEMU block/qcow2-bitmap.c).
constexpr uint64_t kMaxBitmapDirectoryBytes = 1024ull * 65535;
constexpr uint32_t kMaxBitmaps = 65535;
constexpr uint32_t kBitmapFlagInUse = 1u << 0;
constexpr uint32_t kBitmapFlagAuto = 1u << 1;

Result<std::vector<BitmapInfo>> read_bitmaps(Image& img) {
  const std::vector<uint8_t>& ext = *img.header().bitmaps_ext;
  uint32_t nb = load_be32(ext.data());
  uint64_t dir_size = load_be64(ext.data() + 8);
  uint64_t dir_offset = load_be64(ext.data() + 16);
  QD_ASSIGN_OR_RETURN(uint64_t file_size, img.file().size());
  if (nb == 0 || nb > kMaxBitmaps || dir_size > kMaxBitmapDirectoryBytes ||
      dir_offset % img.geometry().cluster_size != 0 || dir_offset > file_size ||
      dir_size > file_size - dir_offset) {
    return corruption("bitmaps extension: invalid bitmap directory");
  }
  std::vector<uint8_t> dir(dir_size);
  QD_TRY(img.file().read_exact(dir_offset, dir, "bitmap directory"));
  std::vector<BitmapInfo> out;
  uint64_t off = 0;
  for (uint32_t i = 0; i < nb; ++i) {
    if (off + 24 > dir.size()) return corruption("bitmap directory entry " + std::to_string(i) + " truncated");
    const uint8_t* p = dir.data() + off;
    uint32_t flags = load_be32(p + 12);
    uint8_t granularity_bits = p[17];
    uint16_t name_size = load_be16(p + 18);
    uint32_t extra = load_be32(p + 20);
    uint64_t entry = 0;
    (void)align_up(24 + uint64_t{extra} + name_size, 8, &entry);
    if (off + entry > dir.size() || granularity_bits > 63) {
      return corruption("bitmap directory entry " + std::to_string(i) + " invalid");
    }
    BitmapInfo b;
    b.name.assign(p + 24 + extra, p + 24 + extra + name_size);
    b.granularity = uint64_t{1} << granularity_bits;
    if (flags & kBitmapFlagInUse) b.flags.push_back("in-use");
    if (flags & kBitmapFlagAuto) b.flags.push_back("auto");
    out.push_back(std::move(b));
    off += entry;
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
