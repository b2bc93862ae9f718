#include "dedup/convert.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include "dedup/dedup_writer.h"
#include "dedup/hash_pool.h"
#include "dedup/index_io.h"
#include "io/posix_file.h"
#include "io/unsynced_file.h"
#include "qcow2/chain.h"
#include "util/progress.h"
#include "util/size.h"

namespace qdedup::dedup {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kBatchBytes = 2ull << 20;  // fits in cache: copies stay cheap
constexpr uint64_t kMaxSparseSize = 16ull << 20;

bool all_zero(const uint8_t* p, size_t n) {
  // Word-wise scan; qcow2 clusters are at least 512 bytes.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// The sources, concatenated into one read-only disk.
class SourceSet {
 public:
  Status open(const ConvertOptions& o) {
    for (const std::string& path : o.sources) {
      qcow2::OpenRequest req{path, o.source_format, false, o.force_share, true};
      QD_ASSIGN_OR_RETURN(auto dev, qcow2::open_device(req));
      starts_.push_back(total_);
      total_ += dev->virtual_size();
      devs_.push_back(std::move(dev));
    }
    return Status::ok();
  }
  uint64_t size() const { return total_; }
  Status read(uint64_t offset, std::span<uint8_t> buf) {
    uint64_t pos = 0;
    while (pos < buf.size()) {
      uint64_t at = offset + pos;
      size_t i = static_cast<size_t>(
          std::upper_bound(starts_.begin(), starts_.end(), at) - starts_.begin() - 1);
      uint64_t in = at - starts_[i];
      uint64_t n = std::min<uint64_t>(buf.size() - pos, devs_[i]->virtual_size() - in);
      QD_TRY(devs_[i]->read(in, buf.subspan(pos, n)).with_prefix(devs_[i]->name()));
      pos += n;
    }
    return Status::ok();
  }

 private:
  std::vector<std::unique_ptr<qcow2::BlockDevice>> devs_;
  std::vector<uint64_t> starts_;
  uint64_t total_ = 0;
};

struct Target {
  std::string tmp_path;  // empty with -n
  io::UnsyncedFile* unsynced = nullptr;  // the new file, synced once at the end
  std::unique_ptr<io::PosixFile> guard;  // write lock on an existing file we replace
  std::unique_ptr<io::File> raw;         // raw target
  std::unique_ptr<qcow2::Image> image;   // qcow2 target
};

Status check_options(const ConvertOptions& o) {
  if (o.sources.empty()) return invalid_argument("convert needs at least one source");
  if (o.target_format != "raw" && o.target_format != "qcow2") {
    return invalid_argument("unknown output format '" + o.target_format + "' (raw or qcow2)");
  }
  if (o.sparse_size % 512 != 0 || o.sparse_size > kMaxSparseSize) {
    return invalid_argument("invalid -S size: a multiple of 512 up to 16M, or 0");
  }
  if (o.create.dedup != "off" && o.target_format != "qcow2") {
    return invalid_argument("dedup needs -O qcow2");
  }
  for (const std::string& s : o.sources) {
    if (s == o.target) return invalid_argument(o.target + ": the target is also a source");
  }
  return Status::ok();
}

Result<qcow2::CreateOptions> target_create_options(const ConvertOptions& o, uint64_t size) {
  qcow2::CreateOptions c = o.create.image;
  c.size = size;
  // Real guest file systems place data at 4 KiB: dedup at that granularity.
  if (o.create.dedup != "off" && !o.create.cluster_size_set) c.cluster_bits = 12;
  if (o.create.dedup != "off" && c.version < 3) {
    return invalid_argument("dedup needs compat=1.1 (qcow2 version 3)");
  }
  if (!c.backing_file.empty()) return unsupported("convert does not write backing files yet");
  QD_TRY(qcow2::validate_create_options(c));
  return c;
}

Status open_target(const ConvertOptions& o, uint64_t size, Target& t) {
  if (o.existing_target) {
    io::OpenOptions oo{.writable = true, .require_regular = false, .lock = io::LockMode::kWrite};
    QD_ASSIGN_OR_RETURN(auto f, io::PosixFile::open(o.target, oo));
    if (o.target_format == "raw") {
      t.raw = std::move(f);
      return Status::ok();
    }
    QD_ASSIGN_OR_RETURN(t.image, qcow2::Image::open(std::move(f), qcow2::ImageOptions{true}));
    if (t.image->virtual_size() < size) {
      return invalid_argument("target is smaller (" + std::to_string(t.image->virtual_size()) +
                              " bytes) than the source (" + std::to_string(size) + " bytes)");
    }
    return Status::ok();
  }
  if (io::file_exists(o.target)) {
    // Replaced at the end, as qemu-img does; never while someone uses it.
    io::OpenOptions oo{.writable = true, .require_regular = true, .lock = io::LockMode::kWrite};
    QD_ASSIGN_OR_RETURN(t.guard, io::PosixFile::open(o.target, oo));
  }
  t.tmp_path = io::temporary_name_beside(o.target);
  io::OpenOptions oo{.writable = true, .create = true, .exclusive = true};
  QD_ASSIGN_OR_RETURN(auto posix, io::PosixFile::open(t.tmp_path, oo));
  // Nobody sees the new file before the rename: the write path's ordering
  // flushes are pointless there. One sync before the rename is enough.
  auto unsynced = std::make_unique<io::UnsyncedFile>(std::move(posix));
  t.unsynced = unsynced.get();
  std::unique_ptr<io::File> f = std::move(unsynced);
  if (o.target_format == "raw") {
    QD_TRY(f->truncate(size));
    t.raw = std::move(f);
    return Status::ok();
  }
  QD_ASSIGN_OR_RETURN(qcow2::CreateOptions c, target_create_options(o, size));
  QD_TRY(qcow2::create_image(*f, c));
  QD_ASSIGN_OR_RETURN(t.image, qcow2::Image::open(std::move(f), qcow2::ImageOptions{true}));
  return Status::ok();
}

// Raw target: zero runs of at least the sparse size are left as holes (new
// file) or punched (existing file).
Status write_raw(io::File& f, uint64_t offset, std::span<const uint8_t> data, uint64_t sparse) {
  if (sparse == 0) return f.pwrite(offset, data);
  uint64_t pos = 0;
  while (pos < data.size()) {
    uint64_t n = std::min<uint64_t>(sparse - (offset + pos) % sparse, data.size() - pos);
    if (!all_zero(data.data() + pos, n)) {
      QD_TRY(f.pwrite(offset + pos, data.subspan(pos, n)));
    }
    pos += n;
  }
  return Status::ok();
}

class Converter {
 public:
  Converter(const ConvertOptions& o, SourceSet& src, Target& t, ConvertReport& r)
      : o_(o), src_(src), t_(t), r_(r) {}

  Status run() {
    if (t_.image) QD_TRY(start_dedup());
    const uint64_t total = src_.size();
    uint64_t cs = t_.image ? t_.image->geometry().cluster_size : 512;
    uint64_t batch = std::max<uint64_t>(kBatchBytes / cs, 1) * cs;
    // Double buffering: a reader thread fills the next batch while this one
    // is hashed and written, so source reads overlap target writes.
    std::vector<uint8_t> bufs[2] = {std::vector<uint8_t>(batch), std::vector<uint8_t>(batch)};
    auto read_batch = [this, total, batch, &bufs](uint64_t off, int which) {
      uint64_t n = std::min(batch, total - off);
      return src_.read(off, std::span<uint8_t>(bufs[which].data(), n));
    };
    Progress progress(o_.progress, total);
    std::future<Status> next;
    if (total > 0) next = std::async(std::launch::async, read_batch, uint64_t{0}, 0);
    int cur = 0;
    for (uint64_t off = 0; off < total; off += batch, cur ^= 1) {
      uint64_t n = std::min(batch, total - off);
      if (Status rs = next.get(); !rs) {
        source_failed_ = true;
        return rs;
      }
      if (off + batch < total) {
        next = std::async(std::launch::async, read_batch, off + batch, cur ^ 1);
      }
      std::span<const uint8_t> data(bufs[cur].data(), n);
      Status ws = t_.raw ? write_raw(*t_.raw, off, data, o_.sparse_size) : write_qcow2(off, data);
      if (!ws) {
        if (next.valid()) (void)next.get();  // the reader uses bufs: let it finish
        return ws;
      }
      r_.guest_bytes += n;
      progress.update(off + n);
    }
    progress.finish();
    return finish();
  }

 private:
  // Dedup is on when asked with -o dedup=, or with -n into an image that has
  // a dedup extension (whose algorithm then applies).
  Status start_dedup() {
    std::optional<DedupExtension> ext;
    if (o_.existing_target) {
      QD_ASSIGN_OR_RETURN(ext, find_dedup_extension(t_.image->header()));
    }
    if (!ext && o_.create.dedup == "off") return Status::ok();
    HashAlgorithm algo;
    bool verify;
    if (ext) {
      algo = *hash_from_id(ext->hash_algorithm);
      verify = (ext->flags & kDedupFlagVerify) != 0;
    } else {
      QD_ASSIGN_OR_RETURN(algo, parse_hash_name(o_.create.dedup));
      verify = o_.create.dedup_verify == "on";
    }
    if (!is_collision_resistant(algo) && !verify) {
      return invalid_argument(std::string("dedup=") + hash_name(algo) +
                              " is not collision resistant: it needs dedup_verify=on");
    }
    QD_ASSIGN_OR_RETURN(auto scratch, io::PosixFile::open_temporary(io::directory_of(o_.target)));
    writer_ = std::make_unique<DedupWriter>(
        *t_.image, DedupConfig{algo, verify, ext ? ext->refcount_cap : 0}, std::move(scratch));
    pool_ = std::make_unique<HashPool>(
        algo, o_.threads ? o_.threads : std::max(1u, std::thread::hardware_concurrency()));
    r_.hash = hash_name(algo);
    if (o_.existing_target) QD_TRY(open_existing_index(ext));
    return Status::ok();
  }

  // The target's data is deduplicated against too: its index is loaded when
  // valid, else rebuilt by hashing its clusters (never trusted when stale).
  Status open_existing_index(const std::optional<DedupExtension>& ext) {
    indexed_target_ = true;
    bool valid = ext && (t_.image->header().autoclear_features & kAutoclearDedupIndex);
    if (ext) {
      writer_->set_counters(ext->counters);
      start_counters_ = ext->counters;
    }
    if (valid) {
      Status st = load_index(*t_.image, *ext, writer_->mutable_index());
      if (st) return st;
      if (st.code() != StatusCode::kCorruption) return st;
      spdlog::warn("{}: {}; rebuilding the dedup index", o_.target, st.message());
      QD_ASSIGN_OR_RETURN(auto scratch, io::PosixFile::open_temporary(io::directory_of(o_.target)));
      writer_->mutable_index() = DedupIndex(std::move(scratch), pool_->digest_size());
    } else if (ext) {
      spdlog::info("{}: the dedup index is stale; rebuilding it", o_.target);
      // Another program wrote the image: mend the COPIED flags it may have left.
      t_.image->audit_copied_on_close();
    }
    return rebuild_index(*t_.image, *pool_, writer_->refcount_cap(), writer_->mutable_index());
  }
  // One batch of whole clusters (the last may be partial) into a qcow2 target.
  Status write_qcow2(uint64_t offset, std::span<const uint8_t> data) {
    const uint64_t cs = t_.image->geometry().cluster_size;
    const uint64_t first = offset / cs;
    const uint64_t count = div_round_up(data.size(), cs);
    // Classify: zero clusters are skipped; the rest are hashed together.
    std::vector<uint64_t> todo;
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t n = std::min<uint64_t>(cs, data.size() - i * cs);
      if (o_.sparse_size != 0 && all_zero(data.data() + i * cs, n)) {
        ++r_.zero_clusters;
        if (o_.existing_target) {
          if (indexed_target_) QD_TRY(writer_->forget(first + i));
          QD_TRY(t_.image->zero_cluster(first + i));
        }
        continue;
      }
      todo.push_back(i);
    }
    std::vector<uint8_t> cluster(cs, 0);
    if (!writer_) {
      for (uint64_t i : todo) QD_TRY(t_.image->write_cluster(first + i, padded(data, i, cs, cluster)));
      r_.clusters_written += todo.size();
      return Status::ok();
    }
    // Hash the non-zero clusters of the batch on all cores.
    const size_t ds = pool_->digest_size();
    staging_.resize(todo.size() * cs);
    for (size_t k = 0; k < todo.size(); ++k) {
      std::span<const uint8_t> c = padded(data, todo[k], cs, cluster);
      std::memcpy(staging_.data() + k * cs, c.data(), cs);
    }
    digests_.resize(todo.size() * ds);
    auto h0 = Clock::now();
    pool_->hash_chunks(staging_, cs, digests_.data());
    r_.hash_seconds += std::chrono::duration<double>(Clock::now() - h0).count();
    for (size_t k = 0; k < todo.size(); ++k) {
      std::span<const uint8_t> c(staging_.data() + k * cs, cs);
      if (indexed_target_) QD_TRY(writer_->forget(first + todo[k]));
      if ((todo[k] + 1) * cs > data.size()) {
        // The source ends inside this cluster: stored as is, not shared.
        QD_TRY(t_.image->write_cluster(first + todo[k], c));
        writer_->note_partial_cluster();
        ++r_.clusters_written;
        continue;
      }
      QD_TRY(writer_->put(first + todo[k], c, digests_.data() + k * ds));
    }
    return Status::ok();
  }

  static std::span<const uint8_t> padded(std::span<const uint8_t> data, uint64_t i, uint64_t cs,
                                         std::vector<uint8_t>& scratch) {
    if ((i + 1) * cs <= data.size()) return data.subspan(i * cs, cs);
    std::fill(scratch.begin(), scratch.end(), uint8_t{0});
    std::memcpy(scratch.data(), data.data() + i * cs, data.size() - i * cs);
    return scratch;
  }

  Status finish() {
    QD_TRY(finish_target());
    if (t_.unsynced) {
      return o_.sync ? t_.unsynced->sync_now() : t_.unsynced->write_gathered();
    }
    return Status::ok();
  }

  Status finish_target() {
    if (t_.raw) return t_.raw->flush();
    r_.cluster_size = t_.image->geometry().cluster_size;
    if (!writer_) return t_.image->close();
    QD_TRY(writer_->finish());
    // This run's share of the lifetime counters.
    const DedupCounters& c = writer_->counters();
    r_.clusters_written += c.clusters_stored_unique - start_counters_.clusters_stored_unique;
    r_.clusters_deduplicated = c.clusters_deduplicated - start_counters_.clusters_deduplicated;
    r_.refcount_cap_overflows = c.refcount_cap_overflows - start_counters_.refcount_cap_overflows;
    r_.index_entries = writer_->index().size();
    r_.index_memory_bytes = writer_->index().memory_bytes();
    return Status::ok();
  }


 public:
  bool source_failed() const { return source_failed_; }

 private:
  const ConvertOptions& o_;
  bool source_failed_ = false;
  bool indexed_target_ = false;  // -n into an image whose data is indexed
  DedupCounters start_counters_;  // the target's lifetime counters before this run
  SourceSet& src_;
  Target& t_;
  ConvertReport& r_;
  std::unique_ptr<DedupWriter> writer_;
  std::unique_ptr<HashPool> pool_;
  std::vector<uint8_t> staging_, digests_;
};

}  // namespace

Result<ConvertReport> convert(const ConvertOptions& o) {
  auto start = Clock::now();
  QD_TRY(check_options(o));
  SourceSet src;
  QD_TRY(src.open(o));
  ConvertReport r;
  r.target = o.target;
  r.target_format = o.target_format;
  Target t;
  Status st = open_target(o, src.size(), t).with_prefix(o.target);
  if (st) {
    Converter c(o, src, t, r);
    st = c.run();
    if (!st && !c.source_failed()) st = st.with_prefix(o.target);
  }
  // Close the target before renaming it into place.
  t.image.reset();
  t.raw.reset();
  if (!t.tmp_path.empty()) {
    if (st) st = io::rename_file(t.tmp_path, o.target);
    if (!st) io::remove_file(t.tmp_path);
  }
  if (!st) return st;
  r.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::debug("convert: {} bytes in {:.3f}s", r.guest_bytes, r.wall_seconds);
  return r;
}

}  // namespace qdedup::dedup
