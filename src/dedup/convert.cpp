#include "dedup/convert.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "dedup/convert_source.h"
#include "dedup/dedup_writer.h"
#include "hash/hash_pool.h"
#include "dedup/index_io.h"
#include "io/posix_file.h"
#include "io/unsynced_file.h"
#include "qcow2/chain.h"
#include "util/progress.h"
#include "util/size.h"
#include "util/zero.h"

namespace qdedup::dedup {

namespace {

using Clock = std::chrono::steady_clock;
// Bytes read, classified and hashed together; SourceReader::kDepth batches
// are in flight. Small enough to stay in cache between the reader's copy, the
// hashing and the target write.
constexpr uint64_t kBatchBytes = 2ull << 20;
constexpr uint64_t kMaxSparseSize = 16ull << 20;

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
    if (o.target_format == "raw") {
      io::OpenOptions oo{.writable = true, .require_regular = false, .lock = io::LockMode::kWrite};
      QD_ASSIGN_OR_RETURN(t.raw, io::PosixFile::open(o.target, oo));
      return Status::ok();
    }
    // With its backing chain: a cluster the source only partly covers keeps
    // what the target shows past the source's end, backing file included.
    qcow2::OpenRequest req{.path = o.target, .format = "qcow2", .writable = true};
    QD_ASSIGN_OR_RETURN(t.image, qcow2::open_qcow2(req));
    if (t.image->virtual_size() < size) {
      return invalid_argument(o.target + ": target is smaller (" + std::to_string(t.image->virtual_size()) +
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
  // A qcow2 target is written front to back without holes: its blocks are
  // reserved ahead (half the cost of the writes on ext4); a raw one stays sparse.
  auto unsynced =
      std::make_unique<io::UnsyncedFile>(std::move(posix), o.target_format != "raw");
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

// True if the `n` bytes at `pos` of the batch read as zeros. Hole sectors
// in the range are zero-filled first (their bytes were never read).
bool raw_range_is_zero(SourceBatch& b, uint64_t pos, uint64_t n) {
  constexpr uint64_t kUnit = 512;
  bool all_holes = true;
  for (uint64_t u = pos / kUnit; u * kUnit < pos + n; ++u) {
    if (b.state[u] != SourceBatch::kHole) {
      all_holes = false;
      continue;
    }
    std::fill_n(b.data.data() + u * kUnit, kUnit, uint8_t{0});
    b.state[u] = SourceBatch::kZero;
  }
  return all_holes || is_zero(std::span<const uint8_t>(b.data.data() + pos, n));
}

// Raw target: zero runs of at least the sparse size (on its grid) are left as
// holes in a new file, or punched in an existing one (as qemu-img -n does;
// punch_hole writes zeros where the OS cannot punch). Consecutive runs of the
// same kind are written or punched together.
Status write_raw(io::File& f, SourceBatch& b, uint64_t sparse, bool existing) {
  std::span<const uint8_t> data(b.data.data(), b.bytes);
  if (sparse == 0) return f.pwrite(b.offset, data);
  uint64_t run_start = 0;
  bool run_zero = false;
  auto end_run = [&](uint64_t end) -> Status {
    if (end == run_start) return Status::ok();
    if (!run_zero) return f.pwrite(b.offset + run_start, data.subspan(run_start, end - run_start));
    return existing ? f.punch_hole(b.offset + run_start, end - run_start) : Status::ok();
  };
  for (uint64_t pos = 0; pos < b.bytes;) {
    uint64_t n = std::min<uint64_t>(sparse - (b.offset + pos) % sparse, b.bytes - pos);
    bool zero = raw_range_is_zero(b, pos, n);
    if (zero != run_zero) {
      QD_TRY(end_run(pos));
      run_start = pos;
      run_zero = zero;
    }
    pos += n;
  }
  return end_run(b.bytes);
}

class Converter {
 public:
  Converter(const ConvertOptions& o, SourceSet& src, Target& t, ConvertReport& r)
      : o_(o), src_(src), t_(t), r_(r) {}

  Status run() {
    if (t_.image) QD_TRY(start_dedup());
    const uint64_t total = src_.size();
    ReaderOptions ro;
    ro.unit = t_.image ? t_.image->geometry().cluster_size : 512;
    ro.batch_bytes = std::max<uint64_t>(kBatchBytes / ro.unit, 1) * ro.unit;
    // -S 0 writes everything, holes included, as qemu-img does: read it all.
    ro.block_status = o_.sparse_size != 0;
    ro.detect_zero = o_.sparse_size != 0 && t_.image != nullptr;
    ro.pool = pool_.get();
    // The reader thread reads, classifies and hashes (with the pool) the next
    // batches while this thread updates metadata and writes the target.
    SourceReader reader(src_, ro);
    QD_TRY(reader.start());
    Progress progress(o_.progress, total);
    while (SourceBatch* b = reader.next()) {
      if (!b->status) {
        source_failed_ = true;
        return b->status;
      }
      r_.hash_seconds += b->hash_seconds;
      QD_TRY(t_.raw ? write_raw(*t_.raw, *b, o_.sparse_size, o_.existing_target)
                    : write_qcow2(*b));
      r_.guest_bytes += b->bytes;
      progress.update(b->offset + b->bytes);
      reader.release(b);
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
    // The index's autoclear bit needs a version 3 header (-n into a v2 image).
    if (t_.image->header().version < 3) {
      return invalid_argument("dedup needs compat=1.1 (qcow2 version 3)");
    }
    hash::HashAlgorithm algo;
    bool verify;
    if (ext) {
      algo = *hash::hash_from_id(ext->hash_algorithm);
      verify = (ext->flags & kDedupFlagVerify) != 0;
    } else {
      QD_ASSIGN_OR_RETURN(algo, hash::parse_hash_name(o_.create.dedup));
      verify = o_.create.dedup_verify == "on";
    }
    if (!hash::is_collision_resistant(algo) && !verify) {
      return invalid_argument(std::string("dedup=") + hash::hash_name(algo) +
                              " is not collision resistant: it needs dedup_verify=on");
    }
    QD_ASSIGN_OR_RETURN(auto scratch, io::PosixFile::open_temporary(io::directory_of(o_.target)));
    writer_ = std::make_unique<DedupWriter>(
        *t_.image, DedupConfig{algo, verify, ext ? ext->refcount_cap : 0}, std::move(scratch));
    pool_ = std::make_unique<hash::HashPool>(
        algo, o_.threads ? o_.threads : std::max(1u, std::thread::hardware_concurrency()));
    r_.hash = hash::hash_name(algo);
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
  Status write_qcow2(const SourceBatch& b) {
    const uint64_t cs = t_.image->geometry().cluster_size;
    const uint64_t first = b.offset / cs;
    const size_t ds = pool_ ? pool_->digest_size() : 0;
    // The index lookups are random accesses to a table larger than the
    // caches: start them a few clusters ahead.
    constexpr size_t kPrefetchAhead = 8;
    for (size_t i = 0; i < b.units(); ++i) {
      const uint64_t gc = first + i;
      if (writer_ && i + kPrefetchAhead < b.units() &&
          b.state[i + kPrefetchAhead] == SourceBatch::kData) {
        writer_->index().prefetch(b.digests.data() + (i + kPrefetchAhead) * ds);
      }
      std::span<const uint8_t> c(b.data.data() + i * cs, cs);
      if (o_.existing_target && (i + 1) * cs > b.bytes &&
          t_.image->virtual_size() > b.offset + b.bytes) {
        // The source ends inside a cluster the target goes on past: only the
        // source's part is written, the rest keeps what the target shows.
        if (indexed_target_) QD_TRY(writer_->forget(gc));
        const bool data = b.state[i] == SourceBatch::kData;
        // A hole's bytes were never read.
        std::vector<uint8_t> zeros(data ? 0 : cs, 0);
        QD_TRY(t_.image->write(gc * cs, (data ? c : std::span<const uint8_t>(zeros))
                                            .first(b.bytes - i * cs)));
        if (data) {
          if (writer_) writer_->note_partial_cluster();
          ++r_.clusters_written;
        } else {
          ++r_.zero_clusters;
        }
        continue;
      }
      if (b.state[i] != SourceBatch::kData) {
        ++r_.zero_clusters;
        if (o_.existing_target) {
          if (indexed_target_) QD_TRY(writer_->forget(gc));
          QD_TRY(t_.image->zero_cluster(gc));
        }
        continue;
      }
      if (!writer_) {
        QD_TRY(t_.image->write_cluster(gc, c));
        ++r_.clusters_written;
        continue;
      }
      if (indexed_target_) QD_TRY(writer_->forget(gc));
      if ((i + 1) * cs > b.bytes) {
        // The source ends inside this cluster: stored as is (zero-padded), not shared.
        QD_TRY(t_.image->write_cluster(gc, c));
        writer_->note_partial_cluster();
        ++r_.clusters_written;
        continue;
      }
      QD_TRY(writer_->put(gc, c, b.digests.data() + i * ds));
    }
    return Status::ok();
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
  std::unique_ptr<hash::HashPool> pool_;
};

}  // namespace

Result<ConvertReport> convert(const ConvertOptions& o) {
  auto start = Clock::now();
  QD_TRY(check_options(o));
  SourceSet src;
  QD_TRY(src.open(o.sources, o.source_format, o.force_share));
  ConvertReport r;
  r.target = o.target;
  r.target_format = o.target_format;
  Target t;
  Status st = open_target(o, src.size(), t);
  // The chain opener names the file at fault itself (the target or a backing file).
  if (!(o.existing_target && o.target_format == "qcow2")) st = st.with_prefix(o.target);
  if (st) {
    Converter c(o, src, t, r);
    st = c.run();
    if (!st && !c.source_failed()) st = st.with_prefix(o.target);
  }
  // Close the target before renaming it into place.
  t.image.reset();
  t.raw.reset();
  if (!t.tmp_path.empty()) {
    if (st) st = io::rename_file(t.tmp_path, o.target, o.sync);
    if (!st) io::remove_file(t.tmp_path);
  }
  if (!st) return st;
  r.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::debug("convert: {} bytes in {:.3f}s", r.guest_bytes, r.wall_seconds);
  return r;
}

}  // namespace qdedup::dedup
