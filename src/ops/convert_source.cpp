#include "ops/convert_source.h"

#include <algorithm>
#include <chrono>
#include <system_error>

#include "qcow2/chain.h"
#include "qcow2/image.h"
#include "util/size.h"
#include "util/zero.h"

namespace qdedup::ops {

namespace {

// One block status call looks at most this many guest bytes of a qcow2 image.
constexpr uint64_t kMaxExtentBytes = 256ull << 20;

// What a qcow2 cluster reads as, without reading it; mirrors the read path
// (Image::read_cluster_part).
enum class ClusterKind { kData, kZero, kBacking };

ClusterKind kind_of(const qcow2::L2Entry& e, const qcow2::Geometry& g) {
  switch (e.type(g)) {
    case qcow2::ClusterType::kZeroPlain:
    case qcow2::ClusterType::kZeroAlloc:
      return ClusterKind::kZero;
    case qcow2::ClusterType::kUnallocated:
      // Extended L2 entries with some zero subclusters are read piecewise.
      if (!g.extended_l2 || (e.bitmap >> 32) == 0) return ClusterKind::kBacking;
      return ClusterKind::kData;
    default:
      return ClusterKind::kData;
  }
}

Result<SourceExtent> raw_extent(qcow2::RawDevice& raw, uint64_t offset) {
  const uint64_t size = raw.virtual_size();
  // Past the end of the file (the size is rounded up to 512) reads as zeros.
  QD_ASSIGN_OR_RETURN(io::FileExtent e, raw.file().extent_at(offset));
  return SourceExtent{std::min(e.end, size), e.hole};
}

// Above the base (convert -B), as QEMU's qcow2 block status and
// bdrv_co_common_block_status_above answer one query of qemu-img convert: per
// subcluster with extended L2 entries (allocated: data; zero bit: zeros;
// neither: left to the backing file); a run of unallocated (sub)clusters ends
// at the end of its L2 table (or of the query), and is left to the backing
// file when it starts within the backing file's length, past its end too
// (past it, a zero run). The reader asks where the last extent ended, as
// qemu-img asks.
Result<SourceExtent> image_extent_above_base(qcow2::Image& img, uint64_t offset) {
  const qcow2::Geometry& g = img.geometry();
  const uint64_t size = img.virtual_size();
  qcow2::BlockDevice* backing = img.backing();
  const uint64_t backing_size = backing ? backing->virtual_size() : 0;
  const uint64_t sub = g.extended_l2 ? g.cluster_size / 32 : g.cluster_size;
  auto kind_at = [&](uint64_t at) -> Result<ClusterKind> {
    QD_ASSIGN_OR_RETURN(qcow2::L2Entry e, img.l2_entry(at >> g.cluster_bits));
    if (!g.extended_l2 || e.compressed()) return kind_of(e, g);
    const unsigned i = static_cast<unsigned>((at & (g.cluster_size - 1)) / sub);
    if ((e.bitmap >> (32 + i)) & 1) return ClusterKind::kZero;
    if (e.host_offset() != 0 && ((e.bitmap >> i) & 1)) return ClusterKind::kData;
    return ClusterKind::kBacking;
  };
  QD_ASSIGN_OR_RETURN(ClusterKind kind, kind_at(offset));
  uint64_t limit = std::min(size, offset + kMaxExtentBytes);
  if (kind == ClusterKind::kBacking) {
    // qemu-img's query: up to BDRV_REQUEST_MAX_SECTORS, cut to whole clusters.
    constexpr uint64_t kMaxRequestBytes = ((uint64_t{1} << 31) - 1) >> 9 << 9;
    const uint64_t request_end = std::max((offset + kMaxRequestBytes) >> g.cluster_bits << g.cluster_bits,
                                          offset + 1);
    const uint64_t table_end = (offset / g.bytes_per_l2() + 1) * g.bytes_per_l2();
    limit = std::min({size, request_end, table_end});
  }
  uint64_t end = std::min(size, (offset / sub + 1) * sub);
  while (end < limit) {
    QD_ASSIGN_OR_RETURN(ClusterKind next, kind_at(end));
    if (next != kind) break;
    end = std::min(size, end + sub);
  }
  end = std::min(end, limit);
  if (kind == ClusterKind::kBacking) {
    const bool left = offset < backing_size;
    return SourceExtent{end, !left, left};
  }
  return SourceExtent{end, kind == ClusterKind::kZero};
}

Result<SourceExtent> image_extent(qcow2::Image& img, uint64_t offset, bool above_base) {
  if (above_base) return image_extent_above_base(img, offset);
  const qcow2::Geometry& g = img.geometry();
  const uint64_t size = img.virtual_size();
  qcow2::BlockDevice* backing = img.backing();
  const uint64_t backing_size = backing ? backing->virtual_size() : 0;
  // An unallocated cluster reads the backing file, or zeros past its end.
  auto kind_at = [&](uint64_t at) -> Result<ClusterKind> {
    QD_ASSIGN_OR_RETURN(qcow2::L2Entry e, img.l2_entry(at >> g.cluster_bits));
    ClusterKind k = kind_of(e, g);
    if (k == ClusterKind::kBacking && at >= backing_size) k = ClusterKind::kZero;
    return k;
  };
  QD_ASSIGN_OR_RETURN(ClusterKind kind, kind_at(offset));
  uint64_t end = std::min(size, ((offset >> g.cluster_bits) + 1) << g.cluster_bits);
  if (kind == ClusterKind::kBacking) {
    QD_ASSIGN_OR_RETURN(SourceExtent b, device_extent(*backing, offset));
    return SourceExtent{std::min({b.end, end, backing_size}), b.zero};
  }
  const uint64_t limit = std::min(size, offset + kMaxExtentBytes);
  while (end < limit) {
    QD_ASSIGN_OR_RETURN(ClusterKind next, kind_at(end));
    if (next != kind) break;
    end = std::min(size, end + g.cluster_size);
  }
  return SourceExtent{end, kind == ClusterKind::kZero};
}

}  // namespace

Result<SourceExtent> device_extent(qcow2::BlockDevice& dev, uint64_t offset, bool above_base) {
  if (auto* raw = dynamic_cast<qcow2::RawDevice*>(&dev)) return raw_extent(*raw, offset);
  if (auto* img = dynamic_cast<qcow2::Image*>(&dev)) return image_extent(*img, offset, above_base);
  return SourceExtent{dev.virtual_size(), false};
}

// ---- SourceSet ----

Status SourceSet::open(io::FileSystem& fs, const std::vector<std::string>& paths,
                       const std::string& format, bool force_share,
                       const std::optional<SnapshotSelect>& snapshot) {
  for (const std::string& path : paths) {
    qcow2::OpenRequest req{.path = path, .format = format, .force_share = force_share, .fs = &fs};
    QD_ASSIGN_OR_RETURN(auto dev, qcow2::open_device(req));
    starts_.push_back(total_);
    total_ += dev->virtual_size();
    devs_.push_back(std::move(dev));
  }
  if (snapshot) QD_TRY(load_snapshot(*snapshot, paths.size()));
  return Status::ok();
}

// As qemu-img convert -l: the sizes stay those of the sources' active states.
Status SourceSet::load_snapshot(const SnapshotSelect& s, size_t sources) {
  if (s.id_or_name && sources > 1) {
    return invalid_argument("No support for concatenating multiple snapshot");
  }
  qcow2::BlockDevice& dev = *devs_[0];
  auto failed = [&](const std::string& why) {
    return invalid_argument("Failed to load snapshot: " + why).with_prefix(dev.name());
  };
  auto* img = dynamic_cast<qcow2::Image*>(&dev);
  if (img == nullptr) {
    return failed(std::string("Block format '") + dev.format() +
                  "' does not support temporarily loading internal snapshots");
  }
  std::optional<size_t> index;
  if (s.id_or_name) {
    index = qcow2::find_snapshot(img->snapshots(), &*s.id_or_name, nullptr);
    if (!index) index = qcow2::find_snapshot(img->snapshots(), nullptr, &*s.id_or_name);
  } else {
    index = qcow2::find_snapshot(img->snapshots(), s.id ? &*s.id : nullptr,
                                 s.name ? &*s.name : nullptr);
  }
  if (!index) return failed("Can't find snapshot");
  return img->load_snapshot_tmp(*index).with_prefix(dev.name());
}

size_t SourceSet::source_of(uint64_t offset) const {
  // The last source starting at or before `offset` (empty sources are skipped).
  return static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), offset) -
                             starts_.begin() - 1);
}

Status SourceSet::read(uint64_t offset, std::span<uint8_t> buf) {
  uint64_t pos = 0;
  while (pos < buf.size()) {
    uint64_t at = offset + pos;
    size_t i = source_of(at);
    uint64_t in = at - starts_[i];
    uint64_t n = std::min<uint64_t>(buf.size() - pos, devs_[i]->virtual_size() - in);
    QD_TRY(devs_[i]->read(in, buf.subspan(pos, n)).with_prefix(devs_[i]->name()));
    pos += n;
  }
  return Status::ok();
}

Result<SourceExtent> SourceSet::extent_at(uint64_t offset, bool above_base, uint64_t cut) {
  size_t i = source_of(offset);
  uint64_t in = offset - starts_[i];
  Result<SourceExtent> e = device_extent(*devs_[i], in, above_base);
  if (!e) return e.status().with_prefix(devs_[i]->name());
  // A wrong answer must not stall the reader: at least one byte, data if unsure.
  if (e->end <= in) return SourceExtent{offset + 1, false};
  uint64_t end = std::min(e->end, devs_[i]->virtual_size());
  if (above_base && in < cut && end > cut) {
    // qemu-img convert cuts its query there, then rounds the answer down to
    // whole clusters of the source (unless nothing would be left): the rest
    // is asked again.
    end = cut;
    auto* img = dynamic_cast<qcow2::Image*>(devs_[i].get());
    const uint64_t align = img ? img->geometry().cluster_size : 512;
    if (end / align * align > in) end = end / align * align;
  }
  // Past the end of the target's backing file, zeros are left unwritten.
  if (above_base && e->zero && offset >= cut) return SourceExtent{starts_[i] + end, false, true};
  return SourceExtent{starts_[i] + end, e->zero, e->backing};
}

// ---- SourceReader ----

SourceReader::SourceReader(SourceSet& src, const ReaderOptions& options)
    : src_(src), o_(options) {
  batches_ = o_.batch_bytes ? div_round_up(src_.size(), o_.batch_bytes) : 0;
}

SourceReader::~SourceReader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status SourceReader::start() {
  try {
    thread_ = std::thread([this] { main(); });
  } catch (const std::system_error& e) {
    return io_error(std::string("cannot start the reader thread: ") + e.what());
  }
  return Status::ok();
}

void SourceReader::main() {
  for (uint64_t k = 0; k < batches_; ++k) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || k - released_ < kDepth; });
      if (stop_) return;
    }
    SourceBatch& b = slots_[k % kDepth];
    fill(b, k * o_.batch_bytes);
    const bool failed = !b.status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      produced_ = k + 1;
      if (failed) batches_ = k + 1;  // the failed batch is the last one
    }
    cv_.notify_all();
    if (failed) return;
  }
}

SourceBatch* SourceReader::next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return produced_ > consumed_ || consumed_ >= batches_; });
  if (consumed_ >= batches_) return nullptr;
  return &slots_[consumed_++ % kDepth];
}

void SourceReader::release(SourceBatch* batch) {
  (void)batch;  // batches are released in the order next() gave them
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++released_;
  }
  cv_.notify_all();
}

void SourceReader::fill(SourceBatch& b, uint64_t offset) {
  b.offset = offset;
  b.bytes = std::min(o_.batch_bytes, src_.size() - offset);
  const size_t units = static_cast<size_t>(div_round_up(b.bytes, o_.unit));
  b.data.resize(units * o_.unit);
  b.state.assign(units, SourceBatch::kData);
  b.hash_seconds = 0;
  b.status = Status::ok();
  b.backing_runs.clear();
  if (o_.block_status) b.status = mark_holes(b);
  if (b.status) b.status = read_data(b);
  if (!b.status) return;
  if (o_.pool != nullptr) {
    b.digests.resize(units * o_.pool->digest_size());
    auto t0 = std::chrono::steady_clock::now();
    o_.pool->hash_nonzero_chunks(std::span<const uint8_t>(b.data.data(), b.data.size()), o_.unit,
                                 b.digests.data(), b.state.data(), o_.detect_zero);
    b.hash_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else if (o_.detect_zero) {
    for (size_t u = 0; u < units; ++u) {
      if (b.state[u] == SourceBatch::kData && is_zero({b.data.data() + u * o_.unit, o_.unit})) {
        b.state[u] = SourceBatch::kZero;
      }
    }
  }
}

// A unit is a hole only if all of it lies in zero extents, and left to the
// backing file only if all of it lies in backing extents; a unit that is
// partly data is read whole (its hole part reads as zeros anyway), and so is
// one partly zero, partly backing (its backing runs are kept for the writer).
Status SourceReader::mark_holes(SourceBatch& b) {
  constexpr uint8_t kTouchData = 1, kTouchZero = 2, kTouchBacking = 4;
  touched_.assign(b.units(), 0);
  b.backing_runs.clear();
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // every backing extent of the batch
  const uint64_t end = b.offset + b.bytes;
  for (uint64_t pos = b.offset; pos < end;) {
    if (!have_extent_ || pos < extent_start_ || pos >= extent_.end) {
      QD_ASSIGN_OR_RETURN(extent_, src_.extent_at(pos, o_.above_base, o_.backing_end));
      extent_start_ = pos;
      have_extent_ = true;
    }
    const uint64_t stop = std::min(extent_.end, end);
    const bool backing = extent_.backing;
    const uint8_t touch = backing ? kTouchBacking : extent_.zero ? kTouchZero : kTouchData;
    const size_t first = static_cast<size_t>((pos - b.offset) / o_.unit);
    const size_t last = static_cast<size_t>((stop - 1 - b.offset) / o_.unit);
    for (size_t u = first; u <= last; ++u) touched_[u] |= touch;
    if (backing) {
      if (!runs.empty() && runs.back().second == pos) {
        runs.back().second = stop;
      } else {
        runs.emplace_back(pos, stop);
      }
    }
    pos = stop;
  }
  for (size_t u = 0; u < b.units(); ++u) {
    const uint8_t t = touched_[u];
    if (t & kTouchData) {
      b.state[u] = SourceBatch::kData;
    } else if (t == kTouchBacking) {
      b.state[u] = SourceBatch::kBacking;
    } else if (t == kTouchZero) {
      b.state[u] = o_.read_holes ? SourceBatch::kData : SourceBatch::kHole;
    } else {
      b.state[u] = SourceBatch::kData;  // partly zero, partly backing
    }
  }
  // The backing runs inside data units, for the writer.
  for (const auto& [from, to] : runs) {
    for (uint64_t u = (from - b.offset) / o_.unit; u * o_.unit + b.offset < to; ++u) {
      if (b.state[u] != SourceBatch::kData) continue;
      const uint64_t lo = std::max(from, b.offset + u * o_.unit);
      const uint64_t hi = std::min(to, b.offset + (u + 1) * o_.unit);
      if (!b.backing_runs.empty() && b.backing_runs.back().second == lo) {
        b.backing_runs.back().second = hi;
      } else {
        b.backing_runs.emplace_back(lo, hi);
      }
    }
  }
  return Status::ok();
}

// Each run of data units is one read; a partial last unit is zero-padded.
Status SourceReader::read_data(SourceBatch& b) {
  const size_t units = b.units();
  for (size_t u = 0; u < units;) {
    if (b.state[u] != SourceBatch::kData) {
      ++u;
      continue;
    }
    size_t v = u;
    while (v < units && b.state[v] == SourceBatch::kData) ++v;
    const uint64_t from = u * o_.unit;
    const uint64_t to = std::min<uint64_t>(v * o_.unit, b.bytes);
    QD_TRY(src_.read(b.offset + from, std::span<uint8_t>(b.data.data() + from, to - from)));
    u = v;
  }
  std::fill(b.data.data() + b.bytes, b.data.data() + b.data.size(), uint8_t{0});
  return Status::ok();
}

}  // namespace qdedup::ops
