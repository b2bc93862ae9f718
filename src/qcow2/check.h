// Consistency check of a qcow2 image, as qemu-img check does it: every host
// cluster's reference count is computed from all structures (header, active
// and snapshot L1/L2 tables, data and compressed clusters, snapshot table,
// refcount table and blocks, bitmaps) and compared with the stored one; then
// QCOW_OFLAG_COPIED is compared with the stored refcounts.
//
// The analysis only reads. Its findings are worded and counted as in QEMU
// 7.2's block/qcow2-refcount.c, so that counts agree with `qemu-img check`;
// it also keeps what repair (check_repair.h) needs to act on them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/file.h"
#include "qcow2/geometry.h"
#include "qcow2/header.h"
#include "qcow2/refcount.h"
#include "qcow2/snapshot.h"

namespace qdedup::qcow2 {

// qemu-img's ImageCheck counters.
struct CheckCounts {
  uint64_t check_errors = 0;
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;
  uint64_t allocated_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
};

// One line of the report (stderr in qemu-img).
using CheckLog = std::function<void(const std::string&)>;

// Reference counts computed by the check, one per host cluster. 16 bits per
// cluster, larger counts in a side table (dedup makes many counts above 1,
// few above 65534).
class RefcountArray {
 public:
  uint64_t size() const { return small_.size(); }
  void resize(uint64_t n) { small_.resize(n, 0); }
  uint64_t get(uint64_t i) const {
    if (i >= small_.size()) return 0;
    uint16_t v = small_[i];
    return v == kBig ? big_.at(i) : v;
  }
  void set(uint64_t i, uint64_t v);

 private:
  static constexpr uint16_t kBig = 0xffff;
  std::vector<uint16_t> small_;
  std::unordered_map<uint64_t, uint64_t> big_;
};

// An L1 or L2 entry (8 bytes at `file_offset`) that repair rewrites.
struct EntryFix {
  uint64_t file_offset = 0;
  uint64_t old_word = 0;
  uint64_t new_word = 0;
  bool set_bitmap = false;  // extended L2: also write the subcluster bitmap
  uint64_t new_bitmap = 0;
  std::string what;  // the "Repairing ..." line
};

// An L2 entry whose reference would take its cluster's refcount beyond the
// refcount width: repair gives it a copy of the cluster of its own.
struct Unshare {
  uint64_t file_offset = 0;  // of the L2 entry
  uint64_t word = 0;         // the entry as found
  uint64_t host_offset = 0;  // the over-referenced data cluster
};

// A snapshot table entry that repair deletes (qemu-img does the same).
struct SnapshotFault {
  uint32_t index = 0;
  std::string message;  // "... snapshot ID (NAME) ...: ..." without the verb
};

// What the check's walk found mapped, counted per L1 path (one per L2 entry
// per L1 entry that reaches its table) when CheckOptions::tally_mappings is
// set: the raw figures behind `metrics` (qcow2/usage.h), gathered in the same
// pass so that the tables are read once. A snapshot whose entry the check
// finds damaged is skipped here as it is in the reference counts.
struct MappingTally {
  uint64_t active_data = 0;        // normal entries under the active L1
  uint64_t active_compressed = 0;  // compressed entries under the active L1
  uint64_t active_zero = 0;        // zero entries under the active L1 (preallocated ones too)
  uint64_t active_normal_targets = 0;  // distinct host clusters of the active normal entries
  uint64_t snapshot_mapped = 0;    // normal and compressed entries under snapshot L1s
  uint64_t l2_tables = 0;          // distinct L2 tables (also those past the end of the file)
  // The compressed descriptors of the active entries (COPIED masked), with repeats.
  std::vector<uint64_t> active_descriptors;
  // Per host cluster below the end of the file.
  std::vector<bool> l2_table;       // an L2 table
  std::vector<bool> data;           // guest data: a normal cluster or one a compressed stream touches
  std::vector<bool> compressed;     // touched by a compressed stream
  std::vector<bool> active;         // data reached from the active L1
  std::vector<bool> active_normal;  // a normal cluster reached from the active L1
  std::set<uint64_t> l2_tables_beyond_end;  // clusters past the end of the file (a finding)
  // Why the tables cannot be measured (empty if they can): the first L1
  // entry, in walk order, whose L2 offset is not cluster aligned.
  std::string unwalkable;
};

struct CheckAnalysis {
  CheckAnalysis() = default;
  CheckAnalysis(CheckAnalysis&&) = default;  // (the cache's nodes move with it)
  CheckAnalysis& operator=(CheckAnalysis&&) = default;

  Header header;
  Geometry g;
  uint64_t file_size = 0;
  std::vector<Snapshot> snapshots;
  uint64_t snapshot_table_bytes = 0;
  // With CheckOptions::repair_snapshots, what reading the snapshot table had
  // to change (as QEMU's check -r all reads it): `header.nb_snapshots` is then
  // the count kept, `stored_nb_snapshots` the header's.
  SnapshotRepairs snapshot_repairs;
  uint32_t stored_nb_snapshots = 0;
  // Version 3 entries with less than the 16 bytes of extra data the spec
  // asks for: a corruption each; repair rewrites the table.
  std::vector<uint32_t> incomplete_snapshots;
  CheckCounts counts;

  RefcountArray computed;        // references found, per host cluster
  std::vector<uint64_t> reftable;  // as stored
  bool rebuild = false;          // refcount structures must be rebuilt
  // Clusters whose stored refcount differs from `computed` (index < computed.size()).
  std::vector<uint64_t> mismatched;
  // Reference-altering repairs (-r all): entries that cannot stay as they
  // are. Applied before any refcount change.
  std::vector<EntryFix> entry_fixes;
  std::vector<SnapshotFault> bad_snapshots;
  std::vector<Unshare> unshare;
  // Corruptions that repair cannot mend (e.g. corrupted subcluster bitmaps).
  uint64_t unrepairable = 0;
  // Of the corruptions, active L1/L2 entries without COPIED whose cluster's
  // refcount is 1: harmless (QEMU leaves them after its copy-on-write ends a
  // sharing, and a crash of the write path between its steps 2 and 3 can).
  uint64_t copied_missing = 0;
  // Of the corruptions, every OFLAG_COPIED mismatch (copied_missing included).
  uint64_t copied_mismatches = 0;
  // Clusters below the end of the file that nothing references and whose
  // stored refcount is 0.
  uint64_t free_clusters = 0;
  std::optional<MappingTally> mappings;  // with CheckOptions::tally_mappings
  // Host clusters that some L2 entry maps as guest data and that are also
  // metadata (header, tables, refcount blocks), in increasing order: writing
  // that metadata changes what the guest reads there.
  std::vector<uint64_t> aliased;

  // Stored refcount of `cluster` (0 past the table or where no block).
  // nullopt when the refcount block cannot be read (unaligned offset).
  std::optional<uint64_t> stored_refcount(io::File& file, uint64_t cluster) {
    if (last_block_ && cluster >> g.rb_bits == last_block_index_) {
      return refcount_entry(*last_block_, g.refcount_order, cluster & (g.rb_entries - 1));
    }
    return stored_refcount_uncached(file, cluster);
  }
  // Forgets the refcount blocks read so far (after repair rewrote some).
  void drop_refcount_cache() {
    rb_cache_.clear();
    by_index_.assign(by_index_.size(), nullptr);
    last_block_ = nullptr;
  }

 private:
  std::optional<uint64_t> stored_refcount_uncached(io::File& file, uint64_t cluster);

  // Refcount blocks read by stored_refcount(), by host offset, the same by
  // refcount table index, and the one read last (most lookups fall in the
  // block of the previous one).
  std::unordered_map<uint64_t, std::vector<uint8_t>> rb_cache_;
  std::vector<const std::vector<uint8_t>*> by_index_;
  uint64_t last_block_index_ = 0;
  const std::vector<uint8_t>* last_block_ = nullptr;
};

struct CheckOptions {
  CheckLog log;  // may be empty
  bool tally_mappings = false;  // fill CheckAnalysis::mappings
  // Counts OFLAG_COPIED mismatches without logging them: qemu-img check -r all
  // judges COPIED against the repaired refcounts and prints only its
  // "Repairing OFLAG_COPIED" lines, which the repair prints here too.
  bool quiet_copied = false;
  // Reads the snapshot table as qemu-img check -r all does: entries past
  // QEMU's limits dropped, extra data cut (CheckAnalysis::snapshot_repairs),
  // where a check alone fails.
  bool repair_snapshots = false;
};

// Analyses the image in `file` (read-only). Fails (check could not complete)
// only when the header cannot be decoded, a snapshot table cannot be parsed,
// or the file cannot be read; everything else is a counted finding.
Result<CheckAnalysis> analyse_image(io::File& file, const CheckOptions& options);

}  // namespace qdedup::qcow2
