#include "ops/convert.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <thread>

#include "dedup/dedup_writer.h"
#include "dedup/index_io.h"
#include "hash/hash_pool.h"
#include "io/unsynced_file.h"
#include "ops/convert_raw.h"
#include "ops/convert_source.h"
#include "qcow2/chain.h"
#include "util/progress.h"
#include "util/size.h"
#include "util/zero.h"

namespace qdedup::ops {

namespace {

using Clock = std::chrono::steady_clock;
// Bytes read, classified and hashed together; SourceReader::kDepth batches
// are in flight. Small enough to stay in cache between the reader's copy, the
// hashing and the target write.
constexpr uint64_t kBatchBytes = 2ull << 20;
constexpr uint64_t kMaxSparseSize = 16ull << 20;

// The backing file convert -B (or -o backing_file) gives the target.
struct TargetBacking {
  bool given = false;
  std::string name;
  std::string format;  // "" when not given
};

TargetBacking target_backing(const ConvertOptions& o) {
  TargetBacking b;
  const CreateRequest& c = o.create;
  // -n creates nothing: the -o options are not used there.
  if (o.backing) {
    b.given = true;
    b.name = *o.backing;
  } else if (!o.existing_target && c.given.count("backing_file")) {
    b.given = true;
    b.name = c.image.backing_file;
  }
  if (o.backing_format) {
    b.format = *o.backing_format;
  } else if (!o.existing_target) {
    b.format = c.image.backing_format;
  }
  return b;
}

struct Target {
  std::unique_ptr<io::FileBeside> beside;  // a new file (not with -n)
  io::UnsyncedFile* unsynced = nullptr;    // the new file, synced once at the end
  std::unique_ptr<io::File> raw;           // raw target
  std::unique_ptr<qcow2::Image> image;     // qcow2 target
  std::optional<dedup::DedupChoice> dedup;  // asked for a new target
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
  if (o.create.image.preallocation != qcow2::Preallocation::kOff) {
    return unsupported("-o preallocation is not supported by convert (create the target with it, "
                       "then convert -n)");
  }
  if (o.compress) {
    if (o.target_format != "qcow2") return invalid_argument("-c needs -O qcow2");
    if (o.existing_target) return unsupported("-c with -n is not supported yet");
    if (o.create.dedup != "off") return unsupported("-c with dedup is not supported yet");
  }
  for (const std::string& s : o.sources) {
    if (s == o.target) return invalid_argument(o.target + ": the target is also a source");
  }
  // qemu-img's checks, in its order.
  const TargetBacking backing = target_backing(o);
  if (backing.given) {
    if (o.target_format == "raw") {
      return invalid_argument("Backing file not supported for file format 'raw'");
    }
    if (o.sources.size() > 1) {
      return invalid_argument("Having a backing file for the target makes no sense when "
                              "concatenating multiple input images");
    }
    if (!o.existing_target && backing.format.empty()) {
      return invalid_argument("Use of backing file requires explicit backing format");
    }
    if (backing.name.empty()) return invalid_argument("expected backing file name, got empty string");
    if (backing.name == o.target) {
      return invalid_argument("the target cannot be its own backing file");
    }
  }
  return Status::ok();
}

// An existing target (-n), opened for writing. Errors name the file at fault.
Status open_existing_target(io::FileSystem& fs, const ConvertOptions& o, uint64_t size,
                            Target& t) {
  if (o.target_format == "raw") {
    io::OpenOptions oo{.writable = true, .require_regular = false, .lock = io::LockMode::kWrite};
    QD_ASSIGN_OR_RETURN(t.raw, fs.open(o.target, oo).with_prefix(o.target));
    return Status::ok();
  }
  // With its backing chain: a cluster the source only partly covers keeps
  // what the target shows past the source's end, backing file included.
  qcow2::OpenRequest req{.path = o.target, .format = "qcow2", .writable = true, .fs = &fs};
  QD_ASSIGN_OR_RETURN(t.image, qcow2::open_qcow2(req));
  if (t.image->virtual_size() < size) {
    return invalid_argument(o.target + ": target is smaller (" +
                            std::to_string(t.image->virtual_size()) + " bytes) than the source (" +
                            std::to_string(size) + " bytes)");
  }
  return Status::ok();
}

// A new target, written beside o.target and renamed into place at the end.
Status create_target(io::FileSystem& fs, const ConvertOptions& o, uint64_t size, Target& t) {
  qcow2::CreateOptions c = o.create.image;
  c.size = size;
  const TargetBacking backing = target_backing(o);
  c.backing_file = backing.name;
  c.backing_format = backing.format;
  if (o.target_format == "qcow2") {
    QD_ASSIGN_OR_RETURN(t.dedup, dedup::choose_dedup(o.create.dedup, o.create.dedup_verify == "on",
                                                     o.create.cluster_size_set, c));
    QD_TRY(qcow2::validate_create_options(c));
  }
  QD_ASSIGN_OR_RETURN(t.beside, io::FileBeside::begin(fs, o.target));
  // Nobody sees the new file before the rename: the write path's ordering
  // flushes are pointless there. One sync before the rename is enough.
  // A qcow2 target is written front to back without holes: its blocks are
  // reserved ahead (half the cost of the writes on ext4); a raw one stays sparse.
  auto unsynced =
      std::make_unique<io::UnsyncedFile>(t.beside->take_file(), o.target_format != "raw");
  t.unsynced = unsynced.get();
  std::unique_ptr<io::File> f = std::move(unsynced);
  if (o.target_format == "raw") {
    QD_TRY(f->truncate(size));
    // QEMU sizes the block by the target's whole 512-byte sectors.
    QD_TRY(io::allocate_first_block(*f, div_round_up(size, 512) * 512));
    t.raw = std::move(f);
    return Status::ok();
  }
  QD_TRY(qcow2::create_image(*f, c));
  QD_ASSIGN_OR_RETURN(t.image, qcow2::Image::open(std::move(f), qcow2::ImageOptions{true}));
  // Its backing file must open, as qemu-img opens the new target with it: a
  // cluster the sources only partly cover copies the rest from it, and past
  // its end no zeros are written.
  return qcow2::attach_backing(*t.image, o.target, &fs, o.force_share);
}

// -p counts what qemu-img convert counts: the bytes it copies (the sources'
// data; everything with -S 0), advanced by one request at a time as its
// requests start, each a run of data cut into pieces of its 2 MiB buffer. The
// records then fall where qemu-img's fall.
class RequestProgress {
 public:
  static constexpr uint64_t kRequestBytes = 2ull << 20;  // qemu-img's IO_BUF_SIZE

  // Plans the requests (a block-status pass over the sources) when enabled.
  // With `ro.above_base` (convert -B), what is left to the backing file is
  // not copied.
  static Result<RequestProgress> plan(SourceSet& src, bool enabled, bool everything,
                                      const ReaderOptions& ro) {
    RequestProgress p;
    if (!enabled) return p;
    for (uint64_t at = 0; at < src.size();) {
      QD_ASSIGN_OR_RETURN(SourceExtent e, src.extent_at(at, ro.above_base, ro.backing_end));
      const uint64_t end = std::min(std::max(e.end, at + 1), src.size());
      if (!e.backing && (!e.zero || everything)) {
        for (uint64_t r = at; r < end; r += kRequestBytes) p.starts_.push_back(r);
        p.total_ += end - at;
        p.ends_.push_back(end);
      }
      at = end;
    }
    return p;
  }
  uint64_t total() const { return total_; }
  // Tells `progress` of every request that starts before `position` (guest
  // bytes done), one at a time, as qemu-img prints once per request.
  void advance(uint64_t position, Progress& progress) {
    while (next_ < starts_.size() && starts_[next_] < position) {
      const uint64_t start = starts_[next_++];
      while (run_ < ends_.size() && ends_[run_] <= start) ++run_;
      done_ += std::min(kRequestBytes, ends_[run_] - start);
      progress.update(done_);
    }
  }

 private:
  std::vector<uint64_t> starts_;  // of every request, in order
  std::vector<uint64_t> ends_;    // of every run copied, in order
  size_t next_ = 0, run_ = 0;
  uint64_t total_ = 0, done_ = 0;
};

class Converter {
 public:
  Converter(io::FileSystem& fs, const ConvertOptions& o, SourceSet& src, Target& t,
            ConvertReport& r)
      : fs_(fs), o_(o), src_(src), t_(t), r_(r), backing_(target_backing(o).given) {}

  Status run() {
    if (t_.image) QD_TRY(start_dedup());
    ReaderOptions ro;
    ro.unit = t_.image ? t_.image->geometry().cluster_size : 512;
    ro.batch_bytes = std::max<uint64_t>(kBatchBytes / ro.unit, 1) * ro.unit;
    // -S 0 writes everything, holes included, as qemu-img does: read it all
    // (with -B, all but what is left to the backing file).
    ro.block_status = o_.sparse_size != 0 || backing_;
    ro.read_holes = o_.sparse_size == 0;
    ro.detect_zero = o_.sparse_size != 0 && t_.image != nullptr;
    ro.above_base = backing_;
    // Past the end of a new target's backing file its zeros need no writing.
    if (backing_ && !o_.existing_target && t_.image->backing() != nullptr) {
      ro.backing_end = t_.image->backing()->virtual_size();
    }
    ro.pool = pool_.get();
    // The reader thread reads, classifies and hashes (with the pool) the next
    // batches while this thread updates metadata and writes the target.
    // The plan reads the sources' block status: before the reader thread
    // starts, which uses the same images (their caches are not shared safely).
    QD_ASSIGN_OR_RETURN(RequestProgress requests,
                        RequestProgress::plan(src_, o_.progress, o_.sparse_size == 0, ro));
    SourceReader reader(src_, ro);
    QD_TRY(reader.start());
    Progress progress(o_.progress, requests.total());
    while (SourceBatch* b = reader.next()) {
      if (!b->status) {
        source_failed_ = true;
        return b->status;
      }
      r_.hash_seconds += b->hash_seconds;
      QD_TRY(t_.raw ? write_raw_batch(*t_.raw, *b, o_.sparse_size, o_.existing_target)
                    : write_qcow2(*b));
      r_.guest_bytes += b->bytes;
      if (o_.progress) requests.advance(b->offset + b->bytes, progress);
      reader.release(b);
    }
    progress.finish();
    return finish();
  }

  bool source_failed() const { return source_failed_; }

 private:
  // Dedup is on when asked with -o dedup= for a new target, or with -n into
  // an image that has a dedup extension (whose algorithm then applies).
  Status start_dedup() {
    std::optional<dedup::DedupExtension> ext;
    std::optional<dedup::DedupChoice> choice = t_.dedup;
    if (o_.existing_target) {
      QD_ASSIGN_OR_RETURN(ext, dedup::find_dedup_extension(t_.image->header()));
      if (ext) {
        QD_ASSIGN_OR_RETURN(choice, dedup::choose_dedup(*ext, t_.image->header()));
      } else {
        qcow2::CreateOptions c;
        c.version = t_.image->header().version;
        QD_ASSIGN_OR_RETURN(choice, dedup::choose_dedup(o_.create.dedup,
                                                        o_.create.dedup_verify == "on", true, c));
      }
    }
    if (!choice) return Status::ok();
    QD_ASSIGN_OR_RETURN(auto scratch, fs_.open_scratch(io::directory_of(o_.target)));
    writer_ = std::make_unique<dedup::DedupWriter>(
        *t_.image, dedup::DedupConfig{choice->algorithm, choice->verify, ext ? ext->refcount_cap : 0},
        std::move(scratch));
    pool_ = std::make_unique<hash::HashPool>(
        choice->algorithm,
        o_.threads ? o_.threads : std::max(1u, std::thread::hardware_concurrency()));
    r_.hash = hash::hash_name(choice->algorithm);
    if (o_.existing_target) QD_TRY(open_existing_index(ext));
    return Status::ok();
  }

  // The target's data is deduplicated against too: its index is loaded when
  // valid, else rebuilt by hashing its clusters (never trusted when stale).
  Status open_existing_index(const std::optional<dedup::DedupExtension>& ext) {
    indexed_target_ = true;
    bool valid = ext && (t_.image->header().autoclear_features & dedup::kAutoclearDedupIndex);
    if (ext) {
      writer_->set_counters(ext->counters);
      start_counters_ = ext->counters;
    }
    if (valid) {
      Status st = dedup::load_index(*t_.image, *ext, writer_->mutable_index());
      if (st) return st;
      if (st.code() != StatusCode::kCorruption) return st;
      spdlog::warn("{}: {}; rebuilding the dedup index", o_.target, st.message());
      QD_ASSIGN_OR_RETURN(auto scratch, fs_.open_scratch(io::directory_of(o_.target)));
      writer_->mutable_index() = dedup::DedupIndex(std::move(scratch), pool_->digest_size());
    } else if (ext) {
      spdlog::info("{}: the dedup index is stale; rebuilding it", o_.target);
      // Another program wrote the image: mend the COPIED flags it may have left.
      t_.image->audit_copied_on_close();
    }
    return dedup::rebuild_index(*t_.image, *pool_, writer_->refcount_cap(),
                                writer_->mutable_index());
  }

  // One batch of whole clusters (the last may be partial) into a qcow2 target.
  Status write_qcow2(const SourceBatch& b) {
    const uint64_t cs = t_.image->geometry().cluster_size;
    const uint64_t first = b.offset / cs;
    const size_t ds = pool_ ? pool_->digest_size() : 0;
    // The index lookups are random accesses to a table larger than the
    // caches: start them a few clusters ahead.
    constexpr size_t kPrefetchAhead = 8;
    const std::vector<bool> zeros_written = zeros_qemu_writes(b, cs);
    size_t run = 0;  // the first backing run that may meet unit i
    for (size_t i = 0; i < b.units(); ++i) {
      if (!b.backing_runs.empty() && !o_.compress) {
        // A cluster partly left to the backing file: the rest is written,
        // and the target fills it in from its own backing file (qemu-img's
        // compressed writes take the whole cluster from the source).
        const uint64_t from = b.offset + i * cs, to = std::min(from + cs, b.offset + b.bytes);
        while (run < b.backing_runs.size() && b.backing_runs[run].second <= from) ++run;
        if (run < b.backing_runs.size() && b.backing_runs[run].first < to) {
          QD_TRY(write_around_backing(first + i, b, from, to, run));
          continue;
        }
      }
      if (!zeros_written.empty() && zeros_written[i]) {
        QD_TRY(write_zero_data(first + i, b, i, cs));
        continue;
      }
      if (writer_ && i + kPrefetchAhead < b.units() &&
          b.state[i + kPrefetchAhead] == SourceBatch::kData) {
        writer_->index().prefetch(b.digests.data() + (i + kPrefetchAhead) * ds);
      }
      std::span<const uint8_t> c(b.data.data() + i * cs, cs);
      const uint8_t* digest = writer_ ? b.digests.data() + i * ds : nullptr;
      QD_TRY(write_cluster(first + i, c, b.state[i], (i + 1) * cs > b.bytes,
                           b.bytes - i * cs, digest));
    }
    return Status::ok();
  }

  // With -S N above the cluster size, the all-zero clusters qemu-img writes as
  // data: it skips only zero runs of N bytes, N-aligned (for N a power of two,
  // a block of N bytes that reads as zeros), and writes the zero clusters of a
  // block that also holds data, up to a hole (a block status hole is a request
  // of its own, never written). Blocks are judged within the batch, whose
  // offset is a multiple of 2 MiB. Empty when no zero cluster is written
  // (also with -c: qemu-img's compressed writes are one cluster each, and it
  // skips every cluster that is all zeros).
  std::vector<bool> zeros_qemu_writes(const SourceBatch& b, uint64_t cs) const {
    const uint64_t n = o_.sparse_size;
    if (n <= cs || o_.compress) return {};
    std::vector<bool> out;
    const uint64_t per_block = std::bit_floor(n) / cs;
    for (size_t i = 0; i < b.units();) {
      // A block, cut at holes into segments.
      const size_t block_end =
          std::min<size_t>(b.units(), (((b.offset / cs) + i) / per_block + 1) * per_block -
                                          b.offset / cs);
      for (size_t seg = i; seg < block_end;) {
        size_t end = seg;
        bool has_data = false, has_zero = false;
        while (end < block_end && b.state[end] != SourceBatch::kHole &&
               b.state[end] != SourceBatch::kBacking) {
          has_data |= b.state[end] == SourceBatch::kData;
          has_zero |= b.state[end] == SourceBatch::kZero;
          ++end;
        }
        if (has_data && has_zero) {
          out.resize(b.units(), false);
          for (size_t k = seg; k < end; ++k) out[k] = b.state[k] == SourceBatch::kZero;
        }
        seg = end + (end < block_end ? 1 : 0);
      }
      i = block_end;
    }
    return out;
  }

  // Guest cluster `gc`, [from, to) of batch `b`, partly covered by the
  // backing runs from `run` on: the parts outside them are written, and the
  // target fills in the rest from its backing file. As qemu-img's zero
  // writes do on a new v3 target, a cluster whose written parts are zeros
  // and whose backing file reads as zeros in the rest becomes a zero cluster.
  Status write_around_backing(uint64_t gc, const SourceBatch& b, uint64_t from, uint64_t to,
                              size_t run) {
    std::vector<std::pair<uint64_t, uint64_t>> pieces, left;
    for (uint64_t at = from; at < to;) {
      const bool in_run = run < b.backing_runs.size() && b.backing_runs[run].first <= at;
      uint64_t stop = to;
      if (in_run) {
        stop = std::min(to, b.backing_runs[run].second);
        if (stop == b.backing_runs[run].second) ++run;
      } else if (run < b.backing_runs.size()) {
        stop = std::min(to, b.backing_runs[run].first);
      }
      (in_run ? left : pieces).emplace_back(at, stop);
      at = stop;
    }
    auto bytes_of = [&](const std::pair<uint64_t, uint64_t>& p) {
      return std::span<const uint8_t>(b.data.data() + (p.first - b.offset), p.second - p.first);
    };
    if (indexed_target_) QD_TRY(writer_->forget(gc));
    const qcow2::Geometry& g = t_.image->geometry();
    if (!o_.existing_target && o_.sparse_size != 0 && t_.image->header().version >= 3 &&
        !g.extended_l2 &&
        std::all_of(pieces.begin(), pieces.end(), [&](const auto& p) { return is_zero(bytes_of(p)); })) {
      bool zero = true;
      for (const auto& [lo, hi] : left) {
        QD_ASSIGN_OR_RETURN(zero, backing_reads_zero(lo, hi));
        if (!zero) break;
      }
      if (zero) {
        ++r_.zero_clusters;
        return t_.image->zero_cluster(gc);
      }
    }
    for (const auto& p : pieces) QD_TRY(t_.image->write(p.first, bytes_of(p)));
    if (writer_) writer_->note_partial_cluster();
    ++r_.clusters_written;
    return Status::ok();
  }

  // Whether the target's backing chain is known to read as zeros in
  // [from, to) without reading it (QEMU's block status through the chain).
  Result<bool> backing_reads_zero(uint64_t from, uint64_t to) {
    qcow2::BlockDevice* dev = t_.image->backing();
    if (dev == nullptr) return true;
    for (uint64_t at = from; at < std::min(to, dev->virtual_size());) {
      QD_ASSIGN_OR_RETURN(SourceExtent e, device_extent(*dev, at));
      if (!e.zero) return false;
      at = std::max(e.end, at + 1);
    }
    return true;
  }

  // Guest cluster `first + i` of batch `b`, all zero, written as data (-S).
  Status write_zero_data(uint64_t gc, const SourceBatch& b, size_t i, uint64_t cs) {
    std::span<const uint8_t> c(b.data.data() + i * cs, cs);
    const bool partial = (i + 1) * cs > b.bytes;
    if (indexed_target_) QD_TRY(writer_->forget(gc));
    if (o_.existing_target && partial && t_.image->virtual_size() > gc * cs + (b.bytes - i * cs)) {
      ++r_.clusters_written;
      return t_.image->write(gc * cs, c.first(b.bytes - i * cs));
    }
    if (!writer_ || partial) {
      if (writer_) writer_->note_partial_cluster();
      ++r_.clusters_written;
      return store(gc, c);
    }
    if (zero_digest_.empty()) {
      zero_digest_.resize(pool_->digest_size());
      pool_->hash_chunks(c, cs, zero_digest_.data());
    }
    return writer_->put(gc, c, zero_digest_.data());
  }

  // Guest cluster `gc`: its source bytes `c` (`state` as the reader marked
  // them); `partial` when the sources end inside it after `bytes` bytes.
  Status write_cluster(uint64_t gc, std::span<const uint8_t> c, uint8_t state, bool partial,
                       uint64_t bytes, const uint8_t* digest) {
    const uint64_t cs = c.size();
    // Left to the backing file (-B): not written (the target, new or not,
    // keeps what it shows there).
    if (state == SourceBatch::kBacking) return Status::ok();
    const bool data = state == SourceBatch::kData;
    // An entry whose cluster is about to change leaves the target's index.
    if (indexed_target_) QD_TRY(writer_->forget(gc));
    if (o_.existing_target && partial && t_.image->virtual_size() > gc * cs + bytes) {
      // The target goes on past the sources' end: only their part is
      // written, the rest keeps what the target shows. A hole was never read.
      std::vector<uint8_t> zeros(data ? 0 : cs, 0);
      QD_TRY(t_.image->write(gc * cs, (data ? c : std::span<const uint8_t>(zeros)).first(bytes)));
      if (!data) {
        ++r_.zero_clusters;
        return Status::ok();
      }
      if (writer_) writer_->note_partial_cluster();
      ++r_.clusters_written;
      return Status::ok();
    }
    if (!data) {
      ++r_.zero_clusters;
      // Zeros of a target that may show something else there: written.
      return o_.existing_target || backing_ ? t_.image->zero_cluster(gc) : Status::ok();
    }
    if (!writer_ || partial) {
      // Without dedup; or the sources end inside this cluster: stored as is
      // (zero-padded), not shared.
      QD_TRY(store(gc, c));
      if (writer_) writer_->note_partial_cluster();
      ++r_.clusters_written;
      return Status::ok();
    }
    return writer_->put(gc, c, digest);
  }

  // A cluster stored without dedup: compressed with -c.
  Status store(uint64_t gc, std::span<const uint8_t> c) {
    return o_.compress ? t_.image->write_compressed_cluster(gc, c) : t_.image->write_cluster(gc, c);
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
    if (o_.compress) QD_TRY(t_.image->align_end_to_sector());
    if (!writer_) return t_.image->close();
    QD_TRY(writer_->finish());
    // This run's share of the lifetime counters.
    const dedup::DedupCounters& c = writer_->counters();
    r_.clusters_written += c.clusters_stored_unique - start_counters_.clusters_stored_unique;
    r_.clusters_deduplicated = c.clusters_deduplicated - start_counters_.clusters_deduplicated;
    r_.refcount_cap_overflows = c.refcount_cap_overflows - start_counters_.refcount_cap_overflows;
    r_.index_entries = writer_->index().size();
    r_.index_memory_bytes = writer_->index().memory_bytes();
    return Status::ok();
  }

  io::FileSystem& fs_;
  const ConvertOptions& o_;
  SourceSet& src_;
  Target& t_;
  ConvertReport& r_;
  bool source_failed_ = false;
  const bool backing_;                   // -B: what the source's top leaves is left
  bool indexed_target_ = false;          // -n into an image whose data is indexed
  dedup::DedupCounters start_counters_;  // the target's lifetime counters before this run
  std::unique_ptr<dedup::DedupWriter> writer_;
  std::unique_ptr<hash::HashPool> pool_;
  std::vector<uint8_t> zero_digest_;  // of an all-zero cluster, once one is written as data
};

}  // namespace

Result<ConvertReport> convert(io::FileSystem& fs, const ConvertOptions& o) {
  auto start = Clock::now();
  QD_TRY(check_options(o));
  SourceSet src;
  QD_TRY(src.open(fs, o.sources, o.source_format, o.force_share, o.snapshot));
  ConvertReport r;
  r.target = o.target;
  r.target_format = o.target_format;
  Target t;
  Status st = o.existing_target ? open_existing_target(fs, o, src.size(), t)
                                : create_target(fs, o, src.size(), t).with_prefix(o.target);
  if (st) {
    Converter c(fs, o, src, t, r);
    st = c.run();
    if (!st && !c.source_failed()) st = st.with_prefix(o.target);
  }
  // Close the target before renaming it into place; without the rename, the
  // new file goes with `t.beside`.
  t.image.reset();
  t.raw.reset();
  if (st && t.beside) st = t.beside->commit(o.sync).with_prefix(o.target);
  if (!st) return st;
  r.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::debug("convert: {} bytes in {:.3f}s", r.guest_bytes, r.wall_seconds);
  return r;
}

}  // namespace qdedup::ops
