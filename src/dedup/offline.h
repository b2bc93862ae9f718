// Deduplication of an existing image in place (docs/format.md, section 7):
// one walk over every L2 table (active and snapshots), hashing each data
// cluster once, merging copies onto the first cluster of each content (the
// keeper) and dropping all-zero clusters, by repointing entries in place with
// qcow2::Image::remap_entry. Nothing is allocated and no guest byte changes.
//
// The same walk makes the plan and applies it; with `apply` false (--dry-run)
// the plan is made and counted but nothing is written, so the figures of a dry
// run are what the real run frees.
//
// Compressed clusters are compared by their uncompressed content and take
// part like any other: whichever of a compressed and an uncompressed copy the
// walk meets first is kept. A compressed descriptor's references are counted
// by a pass over the L2 tables first (its host clusters' refcounts sum every
// stream they hold), and the refcount cap holds on every host cluster a
// compressed keeper's stream touches.
//
// Memory: the index (dedup/index.h: at most 24 bytes per distinct content),
// plus per host cluster shared by several tables one set entry, per copy
// whose references are not all repointed yet one map entry, per compressed
// descriptor one map entry and per host cluster of compressed streams one
// more; one read batch.
//
// Reading: where the image file allows reads from several threads, each pool
// thread reads the clusters it hashes. Freed clusters are punched on a
// thread of their own (io::HolePuncher) while the walk goes on.
//
// Thread safety: none (hashing runs on the pool's threads).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "dedup/index.h"
#include "hash/hash_pool.h"
#include "qcow2/image.h"

namespace qdedup::dedup {

// A copy whose references are being repointed: to the keeper at
// `target_offset`, or (0) to a zero cluster, or (kPendingToBacking) to an
// unallocated entry (--against-backing). A compressed copy or keeper is named
// by its L2 descriptor, which has kOflagCompressed (bit 62) set: a cluster
// index or a host offset never has (docs/format.md, 7).
inline constexpr uint64_t kPendingToBacking = 1;
// Not a copy: a keeper the refcount cap replaced, which a resumed run must
// not merge into the new keeper (its references in done tables stay).
inline constexpr uint64_t kPendingKept = 2;
struct PendingRemap {
  uint64_t cluster = 0;  // host cluster index of the copy, or its compressed descriptor
  uint64_t target_offset = 0;
};

struct OfflineOptions {
  bool apply = true;           // false: plan and count only (the image may be read-only)
  bool verify = false;         // compare bytes with the keeper's before merging
  uint64_t refcount_cap = 0;   // the dedup extension's cap; 0: the refcount width's maximum
  // --against-backing: a cluster of refcount 1 whose bytes equal what the
  // image's backing chain (image.backing(), which must be attached) holds at
  // the same guest offset is dropped, so that the read falls through.
  bool against_backing = false;
  uint64_t max_read_rate = 0;  // bytes per second read from the image; 0: no cap
  // Changes are put on disk (and freed clusters punched) every this many bytes read.
  uint64_t checkpoint_bytes = 256ull << 20;
  // Set: stop after the current table, or between read batches of a table
  // (which is then done again by the rerun).
  const std::atomic<bool>* cancel = nullptr;
  // Resuming (docs/format.md, 7): the walk skips the L2 tables below this host
  // offset, done by the interrupted run, whose keepers `index` then holds.
  // Also hash the data in pieces of these sizes (powers of two below the
  // cluster size; others are ignored) and count distinct pieces. 8 bytes of
  // RAM and a set slot per distinct piece.
  std::vector<uint64_t> estimate_granularities;
  // Hashes the estimates' pieces (only fingerprints are counted, so a fast
  // non-cryptographic hash such as XXH3 does); null: the run's pool.
  hash::HashPool* estimate_pool = nullptr;
  uint64_t resume_cursor = 0;
  std::vector<PendingRemap> resume_pending;  // the interrupted run's pending copies
  // Called at each checkpoint, once the changes are on disk, with the cursor
  // to resume from and the copies whose references are not all repointed
  // yet; it records progress (write_resume_record). A checkpoint comes after
  // checkpoint_bytes read, or 16 times the index's bytes if more.
  std::function<Status(uint64_t cursor, const std::vector<PendingRemap>& pending)> checkpoint;
  // Called after each read batch and each table with the host offset of the
  // table (tables are walked in increasing host offset, so this over the file
  // size is the share done).
  std::function<void(uint64_t host_offset)> progress;
};

// What the same data would dedup to at another cluster size (--dry-run):
// every data cluster met is also hashed in pieces of `granularity` bytes.
struct GranularityEstimate {
  uint64_t granularity = 0;
  uint64_t chunks = 0;            // pieces hashed
  uint64_t zero_chunks = 0;       // all-zero pieces
  uint64_t distinct_chunks = 0;   // distinct non-zero pieces
  uint64_t bytes_after() const { return distinct_chunks * granularity; }
};

struct OfflineStats {
  // Distinct data met (hashed): host clusters, and compressed descriptors
  // (each counts once however many entries map it). The copies, zero and
  // backing counts below count both kinds.
  uint64_t data_clusters = 0;
  uint64_t compressed_clusters = 0;    // of data_clusters, compressed descriptors
  uint64_t compressed_copies = 0;      // of the copies, zero and backing drops, compressed ones
  // Host clusters freed because every compressed stream they held lost its
  // last reference (a compressed copy alone frees nothing when another
  // stream shares its host cluster).
  uint64_t compressed_hosts_freed = 0;
  uint64_t undecodable_compressed = 0;  // streams that do not decompress: left as they are
  uint64_t duplicate_clusters = 0;  // copies merged into a keeper
  uint64_t zero_clusters = 0;       // all-zero host clusters dropped
  uint64_t preallocated_zero = 0;   // preallocated zero clusters made plain (host cluster freed)
  uint64_t backing_clusters = 0;    // dropped: the backing chain holds the same bytes
  uint64_t entries_remapped = 0;    // L2 entries rewritten (each counts once, shared or not)
  uint64_t cap_overflows = 0;       // copies kept because the keeper reached the refcount cap
  uint64_t verify_mismatches = 0;   // same hash, different bytes (dedup_verify=on)
  uint64_t bytes_read = 0;
  uint64_t clusters_punched = 0;    // freed clusters given back to the file system (apply)
  bool interrupted = false;         // `cancel` stopped the walk
  uint64_t cursor = 0;              // where a rerun resumes: tables below are done
  std::vector<GranularityEstimate> estimates;  // see OfflineOptions::estimate_granularities

  // Adds another run's counts (a batch's total; estimates are not added).
  OfflineStats& operator+=(const OfflineStats& o) {
    data_clusters += o.data_clusters;
    compressed_clusters += o.compressed_clusters;
    compressed_copies += o.compressed_copies;
    compressed_hosts_freed += o.compressed_hosts_freed;
    undecodable_compressed += o.undecodable_compressed;
    duplicate_clusters += o.duplicate_clusters;
    zero_clusters += o.zero_clusters;
    preallocated_zero += o.preallocated_zero;
    backing_clusters += o.backing_clusters;
    entries_remapped += o.entries_remapped;
    cap_overflows += o.cap_overflows;
    verify_mismatches += o.verify_mismatches;
    bytes_read += o.bytes_read;
    clusters_punched += o.clusters_punched;
    return *this;
  }
  // Host clusters the plan frees. compressed_copies counts a subset of the
  // copies, zero and backing drops, so the difference does not wrap.
  uint64_t clusters_freed() const {
    return duplicate_clusters + zero_clusters + backing_clusters - compressed_copies +
           preallocated_zero + compressed_hosts_freed;
  }
  uint64_t data_clusters_after() const {
    return data_clusters - duplicate_clusters - zero_clusters - backing_clusters;
  }
};

// Runs over `image` (open writable unless !options.apply; checked clean and
// without leaks by the caller, so that every stored refcount equals the
// cluster's number of references). `index` is empty, or holds the keepers of
// an interrupted run (with options.resume_cursor, which is 0 when that run
// stopped inside its first table); on return it holds
// one entry per keeper (owner: an active guest cluster mapping it, or
// kOwnerNotActive for keepers only snapshots map). With apply, every change is
// flushed and the freed clusters punched before it returns.
// `pending_out` (optional) receives the copies still pending at the end (for
// the progress record of an interrupted run).
Result<OfflineStats> dedup_in_place(qcow2::Image& image, hash::HashPool& pool,
                                    DedupIndex& index, const OfflineOptions& options,
                                    std::vector<PendingRemap>* pending_out = nullptr);

}  // namespace qdedup::dedup
