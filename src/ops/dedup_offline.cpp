#include "ops/dedup_offline.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "dedup/dedup_writer.h"
#include "dedup/extension.h"
#include "dedup/resume.h"
#include "io/file_ref.h"
#include "qcow2/chain.h"
#include "qcow2/check.h"
#include "qcow2/check_repair.h"
#include "qcow2/header.h"
#include "util/text.h"

namespace qdedup::ops {

bool DedupOfflineReport::any_failed() const {
  return std::any_of(images.begin(), images.end(),
                     [](const DedupOfflineImage& i) { return i.outcome == ImageOutcome::kFailed; });
}

bool DedupOfflineReport::interrupted() const {
  return std::any_of(images.begin(), images.end(), [](const DedupOfflineImage& i) {
    return i.outcome == ImageOutcome::kInterrupted;
  });
}

namespace {

// What the batch's threads share: the file system (not thread safe, so its
// calls are serialized), one hash pool per algorithm, and the progress sums.
class Batch {
 public:
  Batch(io::FileSystem& fs, const DedupOfflineJob& job) : fs_(fs), job_(job) {}

  Result<std::unique_ptr<io::File>> open(const std::string& path, const io::OpenOptions& o) {
    std::lock_guard<std::mutex> l(mu_);
    return fs_.open(path, o);
  }
  Status attach_backing(qcow2::Image& image, const std::string& path) {
    std::lock_guard<std::mutex> l(mu_);
    return qcow2::attach_backing(image, path, &fs_, job_.force_share);
  }
  Result<std::unique_ptr<io::File>> open_scratch(const std::string& dir) {
    std::lock_guard<std::mutex> l(mu_);
    return fs_.open_scratch(dir);
  }
  hash::HashPool& pool(hash::HashAlgorithm algo) {
    std::lock_guard<std::mutex> l(mu_);
    auto& p = pools_[algo];
    if (!p) p = std::make_unique<hash::HashPool>(algo, hash::threads_or_all_cores(job_.threads));
    return *p;
  }
  void set_total(std::vector<uint64_t> sizes) {
    done_.assign(sizes.size(), 0);
    state_.assign(sizes.size(), State::kWaiting);
    sizes_ = sizes;
    for (uint64_t s : sizes) total_ += s;
  }
  void progress(size_t image, uint64_t done) {
    if (!job_.progress) return;
    std::lock_guard<std::mutex> l(mu_);
    done_[image] = done;
    report();
  }
  enum class State { kWaiting, kRunning, kFinished, kFailed };
  void set_state(size_t image, State s) {
    if (!job_.progress) return;
    std::lock_guard<std::mutex> l(mu_);
    state_[image] = s;
    if (s != State::kRunning) done_[image] = sizes_[image];  // nothing left to walk
    report();
  }
  const DedupOfflineJob& job() const { return job_; }

 private:
  io::FileSystem& fs_;
  const DedupOfflineJob& job_;
  std::mutex mu_;
  std::map<hash::HashAlgorithm, std::unique_ptr<hash::HashPool>> pools_;
  // With mu_ held.
  void report() {
    DedupOfflineProgress p;
    p.total = total_;
    for (size_t i = 0; i < done_.size(); ++i) {
      p.done += std::min(done_[i], sizes_[i]);
      switch (state_[i]) {
        case State::kWaiting: ++p.waiting; break;
        case State::kFinished: ++p.finished; break;
        case State::kFailed: ++p.failed; break;
        case State::kRunning: {
          ++p.running;
          const uint64_t pct = sizes_[i] ? std::min(done_[i], sizes_[i]) * 100 / sizes_[i] : 0;
          if (!p.current.empty()) p.current += ", ";
          p.current += io::base_name(job_.images[i]) + " " + std::to_string(pct) + "%";
          break;
        }
      }
    }
    job_.progress(p);
  }

  std::vector<uint64_t> done_, sizes_;
  std::vector<State> state_;
  uint64_t total_ = 0;
};

unsigned batch_threads(const DedupOfflineJob& job) {
  // Two images at once keep the cores busy: one hashes while the other reads.
  unsigned n = job.jobs ? job.jobs : 2;
  return std::max(1u, std::min<unsigned>(n, static_cast<unsigned>(job.images.size())));
}

// Refuses what dedup-offline must not touch, before anything is written.
// Leaks and missing COPIED flags on clusters with refcount 1 are not refused:
// the leak repair mends both first.
Status admit(const qcow2::Header& h, const qcow2::CheckCounts& counts, uint64_t copied_missing) {
  if (h.incompatible_features & qcow2::kIncompatCorrupt) {
    return corruption("the image is marked corrupt; repair it with 'qdedup check -r all' first");
  }
  if (h.incompatible_features & qcow2::kIncompatDirty) {
    return corruption("the image is dirty (lazy refcounts, not closed cleanly); repair it with "
                      "'qdedup check -r all' first");
  }
  if (h.refcount_order == 0) {
    return unsupported("refcount_bits=1 leaves no room to share a cluster; "
                       "'qemu-img amend -o refcount_bits=16' makes deduplication possible");
  }
  if (counts.corruptions > copied_missing || counts.check_errors) {
    return corruption("the check finds " + std::to_string(counts.corruptions) +
                      " corruptions and " + std::to_string(counts.check_errors) +
                      " errors; image left unchanged (see 'qdedup check', repair with -r all)");
  }
  return Status::ok();
}

class ImageRun {
 public:
  ImageRun(Batch& batch, size_t slot, DedupOfflineImage& out)
      : batch_(batch), job_(batch.job()), slot_(slot), out_(out) {}

  Status run() {
    const auto t0 = std::chrono::steady_clock::now();
    QD_TRY(open());
    QD_TRY(check_and_free_leaks());
    QD_ASSIGN_OR_RETURN(image_, qcow2::Image::open(std::make_unique<io::FileRef>(*file_),
                                                   {.writable = !job_.dry_run,
                                                    .keep_autoclear = qcow2::kAutoclearBitmaps |
                                                                      dedup::kAutoclearResume,
                                                    .refcount_cache_blocks =
                                                        job_.refcount_cache_blocks}));
    out_.cluster_size = image_->geometry().cluster_size;
    if (job_.against_backing) QD_TRY(batch_.attach_backing(*image_, out_.file));
    QD_TRY(deduplicate());
    if (!job_.dry_run) QD_TRY(finish());
    out_.refcount_evictions = image_->refcount_evictions();
    QD_ASSIGN_OR_RETURN(out_.file_size_after, file_->size());
    QD_ASSIGN_OR_RETURN(out_.allocated_after, file_->allocated_size());
    out_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out_.outcome = out_.stats.interrupted ? ImageOutcome::kInterrupted : ImageOutcome::kDone;
    return Status::ok();
  }

 private:
  Status open() {
    io::OpenOptions oo;
    oo.writable = !job_.dry_run;
    oo.lock = !job_.dry_run      ? io::LockMode::kWrite
              : job_.force_share ? io::LockMode::kForceShare
                                 : io::LockMode::kRead;
    QD_ASSIGN_OR_RETURN(file_, batch_.open(out_.file, oo));
    QD_ASSIGN_OR_RETURN(std::string format, qcow2::probe_format(*file_));
    if (format != "qcow2") return invalid_argument("not a qcow2 image");
    QD_ASSIGN_OR_RETURN(out_.file_size_before, file_->size());
    QD_ASSIGN_OR_RETURN(out_.allocated_before, file_->allocated_size());
    return Status::ok();
  }

  Status check_and_free_leaks() {
    QD_ASSIGN_OR_RETURN(qcow2::CheckAnalysis an, qcow2::analyse_image(*file_, {}));
    QD_TRY(admit(an.header, an.counts, an.copied_missing));
    if (an.counts.leaks == 0 && an.counts.corruptions == 0) return Status::ok();
    if (job_.dry_run) {
      out_.leaks_freed = an.counts.leaks;  // what the run would free first
      return Status::ok();
    }
    qcow2::RepairOptions ro;
    ro.mode = qcow2::RepairMode::kLeaks;
    ro.clear_autoclear = dedup::kAutoclearDedupIndex;
    ro.keep_autoclear = dedup::kAutoclearResume;  // the progress record stays true
    QD_ASSIGN_OR_RETURN(qcow2::RepairSummary s, qcow2::repair_image(*file_, ro));
    out_.leaks_freed = s.leaks_fixed;
    QD_ASSIGN_OR_RETURN(qcow2::CheckAnalysis again, qcow2::analyse_image(*file_, {}));
    if (again.counts.leaks || again.counts.corruptions || again.counts.check_errors) {
      return corruption("freeing the leaked clusters left the image unclean; see 'qdedup check'");
    }
    return Status::ok();
  }

  Status deduplicate() {
    auto ext = dedup::find_dedup_extension(image_->header());
    std::optional<dedup::DedupExtension> existing;
    if (ext) existing = *ext;  // a damaged extension is replaced
    QD_ASSIGN_OR_RETURN(dedup::DedupChoice choice, dedup::choose_dedup(job_.dedup, job_.verify, existing));
    out_.hash = hash::hash_name(choice.algorithm);
    hash::HashPool& pool = batch_.pool(choice.algorithm);
    QD_ASSIGN_OR_RETURN(auto scratch, batch_.open_scratch(io::directory_of(out_.file)));
    const bool with_index = !job_.dry_run && !job_.no_index && image_->header().version >= 3;
    algorithm_ = choice.algorithm;
    if (!job_.dry_run) QD_TRY(image_->start_writing());  // the old index is stale from here on
    dedup::OfflineOptions oo;
    if (job_.dry_run) {
      oo.estimate_granularities = {4096, 16384, 65536};
      oo.estimate_pool = &batch_.pool(hash::HashAlgorithm::kXxh3);
    }
    oo.refcount_cap = existing ? existing->refcount_cap : 0;
    records_ = !job_.dry_run && image_->header().version >= 3;  // v2 has no autoclear bits
    if (records_) {
      oo.checkpoint = [this](uint64_t cursor, const std::vector<dedup::PendingRemap>& pending) {
        return record_progress(cursor, pending);
      };
      if (job_.checkpoint_bytes) oo.checkpoint_bytes = job_.checkpoint_bytes;
    }
    oo.apply = !job_.dry_run;
    oo.verify = choice.verify;
    oo.against_backing = job_.against_backing;
    oo.max_read_rate = job_.max_read_rate ? std::max<uint64_t>(job_.max_read_rate / batch_threads(job_), 1) : 0;
    oo.cancel = job_.cancel;
    oo.progress = [this](uint64_t at) { batch_.progress(slot_, at); };
    dedup::DedupConfig config{choice.algorithm, choice.verify, existing ? existing->refcount_cap : 0};
    auto make_index = [&](std::unique_ptr<io::File> f) {
      if (with_index) {
        writer_ = std::make_unique<dedup::DedupWriter>(*image_, config, std::move(f));
        if (existing) writer_->set_counters(existing->counters);
        index_ = &writer_->mutable_index();
      } else {
        plain_index_ = std::make_unique<dedup::DedupIndex>(std::move(f), pool.digest_size());
        index_ = plain_index_.get();
      }
    };
    make_index(std::move(scratch));
    if (!job_.dry_run) QD_TRY(resume(make_index, oo));
    QD_ASSIGN_OR_RETURN(out_.stats, dedup::dedup_in_place(*image_, pool, *index_, oo, &pending_));
    batch_.progress(slot_, out_.file_size_before);
    return Status::ok();
  }

  // Picks up the progress record of an interrupted run, if it is usable.
  template <typename MakeIndex>
  Status resume(const MakeIndex& make_index, dedup::OfflineOptions& oo) {
    auto record = dedup::find_resume_record(image_->header());
    if (record && !record->has_value()) return Status::ok();
    Status st = record.status();
    if (st) {
      const dedup::ResumeRecord& r = **record;
      st = r.index.hash_algorithm == static_cast<uint32_t>(algorithm_)
               ? dedup::load_resume_index(*image_, r, *index_, oo.resume_pending)
               : invalid_argument("the interrupted run used another hash");
    }
    if (st) {
      const dedup::ResumeRecord& r = **record;
      oo.resume_cursor = r.cursor;
      out_.resumed = true;
      return Status::ok();
    }
    oo.resume_pending.clear();
    out_.resume_note = "progress record not used (" + st.message() + "): starting over";
    QD_TRY(image_->clear_autoclear(dedup::kAutoclearResume));  // void from now on
    QD_ASSIGN_OR_RETURN(auto scratch, batch_.open_scratch(io::directory_of(out_.file)));
    make_index(std::move(scratch));
    return Status::ok();
  }

  // A checkpoint: COPIED settled on clusters owned again, then the record.
  // Without room for it in the header cluster, the run goes on without.
  Status record_progress(uint64_t cursor, const std::vector<dedup::PendingRemap>& pending) {
    QD_TRY(image_->settle_copied());
    if (!records_) return Status::ok();
    Status st = dedup::write_resume_record(*image_, *index_, algorithm_, cursor, pending);
    if (!st && st.code() == StatusCode::kInvalidArgument) {
      records_ = false;
      out_.resume_note = "no progress record (" + st.message() + ")";
      return image_->clear_autoclear(dedup::kAutoclearResume);
    }
    return st;
  }

  // Closes the write path, cuts the free tail, writes the index (or, when
  // interrupted, the progress record).
  Status finish() {
    // An interruption inside a table may leave a keeper's COPIED cleared
    // before it gained a reference: set every active flag right.
    if (out_.stats.interrupted) image_->audit_copied_on_close();
    QD_TRY(image_->close());
    if (out_.stats.interrupted) {
      // The old record's bytes lie in the tail: void it before cutting.
      QD_TRY(image_->clear_autoclear(dedup::kAutoclearResume));
      QD_TRY(image_->truncate_free_tail().status());
      return record_progress(out_.stats.cursor, pending_);
    }
    QD_TRY(dedup::drop_resume_record(*image_));
    QD_TRY(image_->truncate_free_tail().status());
    if (!writer_) return Status::ok();
    dedup::DedupCounters c = writer_->counters();
    c.clusters_deduplicated += out_.stats.duplicate_clusters;
    c.clusters_freed += out_.stats.clusters_freed();
    c.refcount_cap_overflows += out_.stats.cap_overflows;
    c.index_entries_added += writer_->index().size();
    writer_->set_counters(c);
    Status st = writer_->finish();
    if (!st && st.code() == StatusCode::kInvalidArgument) {
      // No room in the header cluster for the extension: no index.
      out_.index_note = st.message();
      return image_->truncate_free_tail().status();
    }
    QD_TRY(st);
    auto ext = dedup::find_dedup_extension(image_->header());
    out_.index_written = ext && ext->has_value();
    if (out_.index_written) out_.index_entries = (*ext)->index_entries;
    return Status::ok();
  }

  Batch& batch_;
  const DedupOfflineJob& job_;
  size_t slot_;
  DedupOfflineImage& out_;
  std::unique_ptr<io::File> file_;
  std::unique_ptr<qcow2::Image> image_;
  std::unique_ptr<dedup::DedupWriter> writer_;
  std::unique_ptr<dedup::DedupIndex> plain_index_;
  dedup::DedupIndex* index_ = nullptr;  // the writer's or the plain one
  hash::HashAlgorithm algorithm_ = hash::HashAlgorithm::kSha256;
  std::vector<dedup::PendingRemap> pending_;  // copies not fully repointed when interrupted
  bool records_ = false;  // progress records are written (v3, room in the header)
};

}  // namespace

DedupOfflineReport dedup_offline(io::FileSystem& fs, const DedupOfflineJob& job) {
  DedupOfflineReport report;
  report.images.resize(job.images.size());
  Batch batch(fs, job);
  std::vector<uint64_t> sizes;
  for (size_t i = 0; i < job.images.size(); ++i) {
    report.images[i].file = job.images[i];
    report.images[i].dry_run = job.dry_run;
    auto f = fs.open(job.images[i], io::OpenOptions{});
    auto size = f ? (*f)->size() : Result<uint64_t>(uint64_t{0});
    sizes.push_back(size ? *size : 0);
  }
  batch.set_total(sizes);
  std::atomic<size_t> next{0};
  auto worker = [&]() {
    for (size_t i; (i = next.fetch_add(1)) < job.images.size();) {
      DedupOfflineImage& out = report.images[i];
      if (job.cancel && job.cancel->load()) {
        out.outcome = ImageOutcome::kInterrupted;
        out.error = "interrupted before it started";
        continue;
      }
      batch.set_state(i, Batch::State::kRunning);
      ImageRun run(batch, i, out);
      Status st = run.run();
      if (!st) {
        out.outcome = ImageOutcome::kFailed;
        out.error = st.message();
      }
      batch.set_state(i, st ? Batch::State::kFinished : Batch::State::kFailed);
    }
  };
  const unsigned n = batch_threads(job);
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < n; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  return report;
}

}  // namespace qdedup::ops
