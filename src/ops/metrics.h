// `metrics`: space, sharing, the dedup index and the lifetime counters of
// images, from their metadata (docs/metrics.md). Read-only: the
// image is opened with a read lock (or none with -U), as `check` opens it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "dedup/extension.h"
#include "dedup/index_check.h"
#include "io/file_system.h"
#include "qcow2/usage.h"
#include "util/status.h"

namespace qdedup::ops {

struct MetricsJob {
  std::vector<std::string> files;
  bool force_share = false;  // -U
};

struct IndexMetrics {
  dedup::IndexState state = dedup::IndexState::kAbsent;  // as `check` finds it
  std::string hash;              // empty when the extension cannot be read
  uint64_t entries = 0;          // the extension's count
  uint64_t bytes = 0;            // on disk, whole clusters
  // Valid index only: RAM the in-memory table takes when it is loaded, and
  // its load factor (entries / slots).
  uint64_t ram_bytes = 0;
  double load_factor = 0;
  uint64_t refcount_cap = 0;  // the extension's
};

struct ImageMetrics {
  std::string file;
  std::string error;  // why the image could not be measured (nothing else is set)
  uint64_t allocated_size = 0;  // bytes the file takes on the host (`du`)
  qcow2::Usage usage;
  IndexMetrics index;
  std::optional<dedup::DedupCounters> counters;  // with a readable extension

  uint64_t mapped_clusters() const {
    return usage.active_data_clusters + usage.active_compressed_clusters;
  }
  // Mapped guest clusters per place they point at (1 without sharing).
  double dedup_ratio() const;
  uint64_t bytes_saved() const {
    return (mapped_clusters() - usage.active_distinct_targets) * usage.cluster_size;
  }
  // Header, tables, refcount structures, snapshot table, bitmaps and index.
  uint64_t metadata_bytes() const;
};

// Sums over the images measured (cluster sizes may differ: bytes).
struct MetricsTotals {
  uint64_t images = 0;  // measured
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;
  uint64_t allocated_size = 0;
  uint64_t guest_bytes = 0;   // mapped active clusters
  uint64_t target_bytes = 0;  // distinct places they point at
  uint64_t host_data_bytes = 0;
  uint64_t metadata_bytes = 0;
  uint64_t free_bytes = 0;

  double dedup_ratio() const {
    return target_bytes ? static_cast<double>(guest_bytes) / static_cast<double>(target_bytes) : 1.0;
  }
  uint64_t bytes_saved() const { return guest_bytes - target_bytes; }
};

struct MetricsReport {
  std::vector<ImageMetrics> images;  // in the order given
  uint64_t failed() const;
  MetricsTotals totals() const;
};

// Measures every image; one that cannot be measured gets its error and the
// others go on.
MetricsReport metrics(io::FileSystem& fs, const MetricsJob& job);

}  // namespace qdedup::ops
