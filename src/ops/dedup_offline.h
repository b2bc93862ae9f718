// `dedup-offline`: deduplicate existing qcow2 images in place, in a batch.
//
// Per image: lock it as a writer (a running QEMU makes that fail), refuse it
// if it is marked corrupt or dirty or the check finds corruption, free its
// leaks, then dedup::dedup_in_place (docs/format.md, section 7), give the
// freed space back to the file system (holes, trailing clusters cut), and on
// version 3 write the dedup index. Images fail one by one: the others are done.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dedup/offline.h"
#include "io/file_system.h"
#include "util/status.h"

namespace qdedup::ops {

struct DedupOfflineJob {
  std::vector<std::string> images;
  std::string dedup;            // -o dedup=HASH; "": the image's own, else sha256
  bool verify = false;          // -o dedup_verify=on
  bool no_index = false;        // --no-index
  bool dry_run = false;         // --dry-run: plan and report, write nothing
  bool against_backing = false; // --against-backing: drop clusters the backing chain holds
  bool force_share = false;     // -U (with --dry-run only)
  unsigned threads = 0;         // hashing threads; 0: all cores
  unsigned jobs = 0;            // -j: images at once; 0: default
  uint64_t max_read_rate = 0;   // --max-rate, bytes per second over the batch; 0: none
  const std::atomic<bool>* cancel = nullptr;  // SIGINT/SIGTERM
  uint64_t checkpoint_bytes = 0;  // progress recorded every this many bytes read; 0: 256 MiB
  size_t refcount_cache_blocks = 0;  // refcount blocks cached (tests: 1); 0: the default
  // Called (from any of the job's threads, serialized) as the batch goes on.
  std::function<void(const struct DedupOfflineProgress&)> progress;
};

struct DedupOfflineProgress {
  uint64_t done = 0, total = 0;  // bytes of the batch's files walked, and their total
  size_t waiting = 0, running = 0, finished = 0, failed = 0;  // images (interrupted: finished)
  // The running images, each with its share walked: "a.qcow2 43%, b.qcow2 12%".
  std::string current;
};

enum class ImageOutcome { kDone, kInterrupted, kFailed };

struct DedupOfflineImage {
  std::string file;
  ImageOutcome outcome = ImageOutcome::kFailed;
  std::string error;            // kFailed: one line, without the file name
  bool dry_run = false;
  std::string hash;
  uint64_t cluster_size = 0;
  dedup::OfflineStats stats;
  uint64_t leaks_freed = 0;     // leaked clusters freed before the run
  uint64_t file_size_before = 0, file_size_after = 0;
  uint64_t allocated_before = 0, allocated_after = 0;  // `du`: bytes the file system holds
  bool index_written = false;
  uint64_t index_entries = 0;
  std::string index_note;       // why no index was written, when one could have been
  bool resumed = false;         // continued an interrupted run from its progress record
  std::string resume_note;      // why a progress record found was not used
  double seconds = 0;
  uint64_t refcount_evictions = 0;  // times the refcount block cache was dropped (memory bound)

  uint64_t bytes_freed() const { return stats.clusters_freed() * cluster_size; }
};

struct DedupOfflineReport {
  std::vector<DedupOfflineImage> images;  // in the order given
  bool any_failed() const;
  bool interrupted() const;
};

// Runs the batch; never fails as a whole (each image carries its outcome).
DedupOfflineReport dedup_offline(io::FileSystem& fs, const DedupOfflineJob& job);

}  // namespace qdedup::ops
