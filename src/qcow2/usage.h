// What an image's space is used for and how much of it is shared, from its
// metadata alone (`qdedup metrics`): the figures of a check analysis run
// with CheckOptions::tally_mappings, whose one walk over every L2 table
// (active and snapshots) counts the references to every host cluster and
// tallies what each entry maps. No guest data is read except the most shared
// clusters' bytes, to tell a single repeated byte.
//
// Vocabulary (docs/metrics.md):
// - a *mapped* guest cluster has an L2 entry with data: normal or compressed;
// - a *data host cluster* holds guest data: a normal cluster, or a cluster
//   that some compressed stream touches;
// - the *references* of a data host cluster are what check counts for it (one
//   per L2 entry per L1 entry that reaches the table).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "io/file.h"
#include "qcow2/check.h"

namespace qdedup::qcow2 {

// Data host clusters whose references lie in (previous bucket's le, le].
struct RefcountBucket {
  uint64_t le = 0;
  uint64_t clusters = 0;
};

struct SharedCluster {
  uint64_t host_offset = 0;
  uint64_t references = 0;
  bool compressed = false;  // holds compressed streams (its bytes are not looked at)
  // The byte every byte of the cluster is, if it is a single repeated byte.
  std::optional<uint8_t> repeated_byte;
};

struct Usage {
  uint64_t cluster_size = 0;
  uint64_t virtual_size = 0;
  uint64_t file_size = 0;

  // The active L1 table: guest clusters by what their entry holds.
  uint64_t active_data_clusters = 0;        // normal entries
  uint64_t active_compressed_clusters = 0;  // compressed entries
  uint64_t active_zero_clusters = 0;        // zero entries (preallocated ones too)
  // Distinct places the mapped active clusters point at: host clusters of the
  // normal entries plus compressed descriptors.
  uint64_t active_distinct_targets = 0;

  // The snapshots' L1 tables: mapped guest clusters, summed over snapshots.
  uint64_t snapshot_mapped_clusters = 0;
  // Data host clusters that no active entry reaches: what the snapshots add.
  uint64_t snapshot_only_host_clusters = 0;

  uint64_t host_data_clusters = 0;        // data host clusters, any L1
  uint64_t host_compressed_clusters = 0;  // of those, touched by a compressed stream
  uint64_t shared_host_clusters = 0;      // data host clusters with references > 1
  uint64_t total_references = 0;          // sum of references over data host clusters
  uint64_t clusters_at_cap = 0;           // references >= refcount_cap
  std::vector<RefcountBucket> histogram;  // le = 1, 2, 4, ... up to refcount_cap
  std::vector<SharedCluster> most_shared;  // highest references first

  // Metadata, in bytes of whole clusters.
  uint64_t header_bytes = 0;          // cluster 0
  uint64_t l1_bytes = 0;              // active and snapshot L1 tables
  uint64_t l2_bytes = 0;              // distinct L2 tables
  uint64_t refcount_bytes = 0;        // refcount table and blocks
  uint64_t snapshot_table_bytes = 0;
  uint64_t bitmap_bytes = 0;          // directory, tables and data of persistent bitmaps
  // Clusters below the end of the file that nothing references and whose
  // stored refcount is 0.
  uint64_t free_clusters = 0;
};

struct UsageOptions {
  uint64_t refcount_cap = 0;  // 0: the refcount width's maximum
  unsigned most_shared = 10;
};

// Measures the image `a` analysed (analyse_image on `file` with
// tally_mappings). Corruption when its tables cannot be walked (an L1 table
// larger than the file, an L1 entry that is not cluster aligned).
Result<Usage> measure_usage(io::File& file, CheckAnalysis& a, const UsageOptions& o);

}  // namespace qdedup::qcow2
