#include "qcow2/image.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "qcow2/compress.h"
#include "util/endian.h"
#include "util/size.h"
#include "util/text.h"

namespace qdedup::qcow2 {

namespace {

// L2 tables kept in memory (whichever is larger of a count and a byte budget).
constexpr uint64_t kL2CacheBytes = 64ull << 20;
constexpr size_t kL2CacheMinTables = 16;


}  // namespace

Image::Image(std::unique_ptr<io::File> file, Header header, const ImageOptions& options)
    : file_(std::move(file)),
      header_(std::move(header)),
      g_(Geometry::from_header(header_)),
      writable_(options.writable),
      keep_autoclear_(options.keep_autoclear),
      refcounts_(*file_, g_, header_) {
  // An eviction of refcount blocks writes increases: COPIED clears go first.
  refcounts_.set_before_eviction([this] { return write_copied_clears(); });
  if (options.refcount_cache_blocks != 0) refcounts_.set_cache_limit(options.refcount_cache_blocks);
}

Image::~Image() = default;

Result<std::unique_ptr<Image>> Image::open(std::unique_ptr<io::File> file,
                                           const ImageOptions& options) {
  QD_ASSIGN_OR_RETURN(uint64_t file_size, file->size());
  QD_ASSIGN_OR_RETURN(Header header, read_header(*file, file_size));
  QD_TRY(validate_header(header, file_size, options.writable));
  if (options.writable && (header.incompatible_features & kIncompatDirty)) {
    return corruption("image is dirty (not closed cleanly with lazy refcounts); "
                      "repair it with 'qemu-img check -r all' before writing");
  }
  std::unique_ptr<Image> img(new Image(std::move(file), std::move(header), options));
  QD_TRY(img->load(file_size));
  return img;
}

Status Image::load(uint64_t file_size) {
  std::vector<uint8_t> raw(uint64_t{header_.l1_size} * 8);
  QD_TRY(file_->read_exact(header_.l1_table_offset, raw, "L1 table"));
  l1_.resize(header_.l1_size);
  for (uint64_t i = 0; i < l1_.size(); ++i) l1_[i] = load_be64(raw.data() + 8 * i);
  QD_ASSIGN_OR_RETURN(snapshots_, read_snapshot_table(*file_, header_, file_size));
  if (writable_) {
    QD_TRY(refcounts_.load());
    refcounts_loaded_ = true;
  }
  return Status::ok();
}

Status Image::load_snapshot_tmp(size_t index) {
  if (writable_) return invalid_argument("a snapshot is loaded only into a read-only image");
  if (index >= snapshots_.size()) return invalid_argument("no such snapshot");
  const Snapshot& s = snapshots_[index];
  // read_snapshot_table checked its size and place.
  std::vector<uint8_t> raw(uint64_t{s.l1_size} * 8);
  QD_TRY(file_->read_exact(s.l1_table_offset, raw, "snapshot L1 table"));
  l1_.assign(s.l1_size, 0);
  for (uint64_t i = 0; i < l1_.size(); ++i) l1_[i] = load_be64(raw.data() + 8 * i);
  return Status::ok();
}

Result<uint64_t> Image::refcount(uint64_t host_cluster) {
  if (!refcounts_loaded_) {
    QD_TRY(refcounts_.load());
    refcounts_loaded_ = true;
  }
  return refcounts_.get(host_cluster);
}

// ---- Read path ----

Result<Image::L2Table*> Image::load_l2(uint64_t l2_offset) {
  if (auto it = l2_cache_.find(l2_offset); it != l2_cache_.end()) return &it->second;
  if (l2_offset % g_.cluster_size != 0) {
    return corruption("L2 table offset " + hex(l2_offset) + " is not cluster aligned");
  }
  QD_TRY(maybe_evict());
  L2Table t;
  t.mem.resize(g_.cluster_size);
  QD_TRY(file_->read_or_zero(l2_offset, t.mem));
  t.disk = t.mem;
  return &l2_cache_.emplace(l2_offset, std::move(t)).first->second;
}

Status Image::maybe_evict() {
  size_t max_tables = std::max<size_t>(kL2CacheMinTables, kL2CacheBytes / g_.cluster_size);
  if (l2_cache_.size() < max_tables) return Status::ok();
  if (writable_) QD_TRY(flush());
  l2_cache_.clear();
  return Status::ok();
}

L2Entry Image::entry_at(const L2Table& t, uint64_t index) const {
  const uint8_t* p = t.mem.data() + index * g_.l2_entry_bytes;
  L2Entry e;
  e.word = load_be64(p);
  if (g_.extended_l2) e.bitmap = load_be64(p + 8);
  return e;
}

void Image::store_entry(L2Table& t, uint64_t index, const L2Entry& e) const {
  uint8_t* p = t.mem.data() + index * g_.l2_entry_bytes;
  store_be64(p, e.word);
  if (g_.extended_l2) store_be64(p + 8, e.bitmap);
  t.dirty = true;
}

Result<L2Entry> Image::l2_entry(uint64_t guest_cluster) {
  uint64_t l1i = g_.l1_index(guest_cluster);
  if (l1i >= l1_.size()) return L2Entry{};
  uint64_t l2_off = l1_[l1i] & kL1eOffsetMask;
  if (l2_off == 0) return L2Entry{};
  QD_ASSIGN_OR_RETURN(L2Table * t, load_l2(l2_off));
  return entry_at(*t, g_.l2_index(guest_cluster));
}

Status Image::read_from_backing(uint64_t offset, std::span<uint8_t> out) {
  uint64_t bsize = backing_ ? backing_->virtual_size() : 0;
  if (offset >= bsize) {
    std::fill(out.begin(), out.end(), uint8_t{0});
    return Status::ok();
  }
  uint64_t n = std::min<uint64_t>(out.size(), bsize - offset);
  QD_TRY(backing_->read(offset, out.first(n)));
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), uint8_t{0});
  return Status::ok();
}

Status Image::read_cluster_part(uint64_t guest_cluster, uint64_t in_cluster,
                                std::span<uint8_t> out) {
  QD_ASSIGN_OR_RETURN(L2Entry e, l2_entry(guest_cluster));
  uint64_t guest_offset = (guest_cluster << g_.cluster_bits) + in_cluster;
  switch (e.type(g_)) {
    case ClusterType::kZeroPlain:
    case ClusterType::kZeroAlloc:
      std::fill(out.begin(), out.end(), uint8_t{0});
      return Status::ok();
    case ClusterType::kCompressed: {
      if (decompressed_.empty() || decompressed_entry_ != e.word) {
        CompressedRange r = compressed_range(g_, e);
        if (r.offset + r.length > kMaxFileOffset) {
          return corruption("compressed cluster descriptor " + hex(e.word) + " out of range");
        }
        std::vector<uint8_t> in(static_cast<size_t>(r.length));
        QD_TRY(file_->read_or_zero(r.offset, in));
        decompressed_.resize(g_.cluster_size);
        Status s = decompress_cluster(header_.compression_type, in, decompressed_);
        if (!s) {
          decompressed_.clear();
          return s.with_prefix("guest offset " + std::to_string(guest_offset));
        }
        decompressed_entry_ = e.word;
      }
      std::copy_n(decompressed_.begin() + static_cast<std::ptrdiff_t>(in_cluster), out.size(),
                  out.begin());
      return Status::ok();
    }
    case ClusterType::kUnallocated:
      if (!g_.extended_l2 || (e.bitmap >> 32) == 0) return read_from_backing(guest_offset, out);
      break;  // some subclusters read as zero: per-subcluster below
    case ClusterType::kNormal:
      if (e.host_offset() % g_.cluster_size != 0) {
        return corruption("L2 entry " + hex(e.word) + " for guest offset " +
                          std::to_string(guest_offset) + " is not cluster aligned");
      }
      if (!g_.extended_l2) return file_->read_or_zero(e.host_offset() + in_cluster, out);
      break;
  }
  // Extended L2: each subcluster is allocated, zero, or from the backing file.
  if (e.bitmap & (e.bitmap >> 32)) {
    return corruption("L2 entry for guest offset " + std::to_string(guest_offset) +
                      " has a subcluster both allocated and zero");
  }
  uint64_t sc_size = g_.cluster_size / kSubclustersPerCluster;
  uint64_t pos = 0;
  while (pos < out.size()) {
    uint64_t at = in_cluster + pos;
    uint64_t sc = at / sc_size;
    uint64_t n = std::min<uint64_t>(out.size() - pos, (sc + 1) * sc_size - at);
    std::span<uint8_t> piece = out.subspan(pos, n);
    if (e.bitmap & (uint64_t{1} << sc)) {
      if (e.host_offset() == 0) {
        return corruption("L2 entry for guest offset " + std::to_string(guest_offset) +
                          " allocates subclusters without a host cluster");
      }
      QD_TRY(file_->read_or_zero(e.host_offset() + at, piece));
    } else if (e.bitmap & (uint64_t{1} << (32 + sc))) {
      std::fill(piece.begin(), piece.end(), uint8_t{0});
    } else {
      QD_TRY(read_from_backing((guest_cluster << g_.cluster_bits) + at, piece));
    }
    pos += n;
  }
  return Status::ok();
}

Status Image::read(uint64_t offset, std::span<uint8_t> buf) {
  if (offset > header_.size || buf.size() > header_.size - offset) {
    return invalid_argument("read beyond the end of the virtual disk");
  }
  uint64_t pos = 0;
  while (pos < buf.size()) {
    uint64_t at = offset + pos;
    uint64_t in_cluster = at & (g_.cluster_size - 1);
    uint64_t n = std::min<uint64_t>(buf.size() - pos, g_.cluster_size - in_cluster);
    QD_TRY(read_cluster_part(at >> g_.cluster_bits, in_cluster, buf.subspan(pos, n)));
    pos += n;
  }
  return Status::ok();
}

}  // namespace qdedup::qcow2
