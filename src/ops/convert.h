// `convert`: copy one or more source disks (concatenated) into a new or
// existing raw or qcow2 target, deduplicating clusters when asked.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/file_system.h"
#include "ops/convert_source.h"
#include "ops/create_options.h"
#include "util/status.h"

namespace qdedup::ops {

struct ConvertOptions {
  std::vector<std::string> sources;
  std::string source_format;       // "" probes each source
  bool force_share = false;        // -U on the sources
  std::string target;
  std::string target_format = "raw";
  CreateRequest create;            // -o options (qcow2 target)
  // -B: the target's backing file (over -o backing_file); what the top
  // source image does not allocate is left to it. -F: its format (over
  // -o backing_fmt). With -n, -B only says what to leave unwritten.
  std::optional<std::string> backing;
  std::optional<std::string> backing_format;
  std::optional<SnapshotSelect> snapshot;  // -l: read the first source's internal snapshot
  uint64_t sparse_size = 4096;     // -S: 0 writes zeros too
  bool existing_target = false;    // -n
  bool compress = false;           // -c: data clusters compressed (qcow2 target)
  bool progress = false;           // -p
  bool sync = true;                // false: -t unsafe, no final fdatasync
  unsigned threads = 0;            // hashing threads; 0: all cores
};

struct ConvertReport {
  std::string target;
  std::string target_format;
  std::string hash;                // "" without dedup
  uint64_t cluster_size = 0;
  uint64_t guest_bytes = 0;        // virtual bytes read from the sources
  uint64_t zero_clusters = 0;      // skipped as all-zero
  uint64_t clusters_written = 0;   // stored as new host clusters
  uint64_t clusters_deduplicated = 0;
  uint64_t refcount_cap_overflows = 0;
  uint64_t index_entries = 0;
  uint64_t index_memory_bytes = 0;
  double hash_seconds = 0;         // wall time spent hashing
  double wall_seconds = 0;
  uint64_t bytes_saved() const { return clusters_deduplicated * cluster_size; }
  // Clusters the guest data needs, stored or shared, over those stored (1 without dedup).
  double dedup_ratio() const {
    uint64_t needed = clusters_written + clusters_deduplicated;
    return clusters_written ? static_cast<double>(needed) / static_cast<double>(clusters_written)
                            : 1.0;
  }
  // Bytes hashed per second of hashing wall time (0 without dedup).
  double hash_bytes_per_second() const {
    uint64_t hashed = (clusters_written + clusters_deduplicated) * cluster_size;
    return hash_seconds > 0 ? static_cast<double>(hashed) / hash_seconds : 0.0;
  }
};

// Runs the whole job on `fs` (the OS's file system for the command; memory in
// unit tests). A new target is written beside options.target and renamed into
// place at the end; errors name the file at fault.
Result<ConvertReport> convert(io::FileSystem& fs, const ConvertOptions& options);

}  // namespace qdedup::ops
