// Host cluster reference counts: the refcount table, its blocks, and the
// cluster allocator built on them.
//
// Write-back: updates change cached refblocks; write_back() puts them on disk
// (refblocks, flush, then reftable entries, flush) and is called by the image
// before any L2 or L1 write that depends on them, so the on-disk refcount of a
// cluster is never below its number of on-disk references.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "io/file.h"
#include "qcow2/geometry.h"
#include "qcow2/header.h"
#include "util/endian.h"

namespace qdedup::qcow2 {

// Refcount blocks kept in memory (whichever is larger of a count and a byte
// budget), as for L2 tables.
constexpr uint64_t kRefcountCacheBytes = 64ull << 20;
constexpr size_t kRefcountCacheMinBlocks = 16;

class Refcounts {
 public:
  // `header` is the image's live header: growing the table updates its
  // refcount_table_offset/clusters and writes them to disk.
  Refcounts(io::File& file, const Geometry& geometry, Header& header)
      : file_(file),
        g_(geometry),
        header_(header),
        max_cached_blocks_(std::max<size_t>(kRefcountCacheMinBlocks,
                                            kRefcountCacheBytes / geometry.cluster_size)) {}

  // Reads the refcount table (its size is validated by validate_header).
  Status load();

  Result<uint64_t> get(uint64_t cluster);
  // Sets a refcount in the cache; allocates a refcount block if needed.
  Status set(uint64_t cluster, uint64_t value);
  // Adds `delta` (which may be negative); fails on overflow or underflow.
  Status add(uint64_t cluster, int64_t delta);

  // Allocates `n` contiguous free clusters (refcount 0), sets their refcounts
  // to 1 and returns the first one's index.
  Result<uint64_t> allocate(uint64_t n);

  // Called before an eviction writes dirty blocks back, so that the owner
  // (the Image) first puts on disk what must precede refcount increases:
  // entries that only lose COPIED (docs/format.md, section 2).
  void set_before_eviction(std::function<Status()> fn) { before_eviction_ = std::move(fn); }

  // Makes allocate() look for free clusters at `cluster` and above only (for
  // repairs, which must not trust stored zeros below the file's end).
  void allocate_from(uint64_t cluster) { free_hint_ = std::max(free_hint_, cluster); }

  // Refcount blocks kept in memory before they are written back and dropped
  // (at least 1), and how many times that happened.
  void set_cache_limit(size_t blocks) { max_cached_blocks_ = std::max<size_t>(blocks, 1); }
  uint64_t evictions() const { return evictions_; }

  // Writes dirty refcount blocks, flushes, writes changed reftable entries,
  // flushes. A no-op when nothing is dirty.
  Status write_back();
  bool dirty() const;

  // Number of reftable entries and the refblock offset of entry i (0: none).
  uint64_t table_entries() const { return table_.size(); }
  uint64_t block_offset(uint64_t index) const { return table_[index] & kReftOffsetMask; }
  // Highest cluster index + 1 that the table can describe.
  uint64_t covered_clusters() const { return table_.size() * g_.rb_entries; }

 private:
  struct Block {
    std::vector<uint8_t> data;
    bool dirty = false;
  };
  Result<Block*> block(uint64_t index, bool create, uint64_t avoid_cluster);
  Status grow_table(uint64_t needed_index);
  // grow_table() steps: new refcount blocks for [start, end) in memory, in
  // the clusters from `next` on; then blocks, table and header on disk.
  std::vector<uint64_t> create_blocks(std::vector<uint64_t>& table, uint64_t start, uint64_t end,
                                      uint64_t next);
  Status write_new_table(uint64_t start, uint64_t clusters);
  Result<uint64_t> find_free_run(uint64_t n);
  uint64_t read_entry(const Block& b, uint64_t i) const;
  void write_entry(Block& b, uint64_t i, uint64_t value) const;
  Status evict_if_large();

  io::File& file_;
  const Geometry& g_;
  Header& header_;
  std::vector<uint64_t> table_;
  std::vector<bool> table_dirty_;
  std::unordered_map<uint64_t, Block> blocks_;
  uint64_t free_hint_ = 0;  // no free cluster below this index
  std::function<Status()> before_eviction_;
  size_t max_cached_blocks_;
  uint64_t evictions_ = 0;
};

// The size of a new refcount structure: refcount blocks for every cluster
// from block `first_block` on up to the structure's own end, and a table with
// an entry for each of those blocks (and at least `min_table_entries`). The
// structure is placed from cluster `base_end` on, so it describes itself.
struct RefcountLayout {
  uint64_t blocks = 0;          // new refcount blocks
  uint64_t table_clusters = 0;  // clusters of the refcount table
};
// The smallest such layout (a fixpoint: the blocks and the table are among
// the clusters they describe).
RefcountLayout refcount_layout(const Geometry& g, uint64_t first_block, uint64_t base_end,
                               uint64_t min_table_entries);

// Reads refcount entry `i` of a refcount block in `data` (any width 1..64).
// Inline: the check reads one per host cluster and L2 entry.
inline uint64_t refcount_entry(std::span<const uint8_t> data, uint32_t order, uint64_t i) {
  switch (order) {
    case 0: case 1: case 2: {
      // Sub-byte widths: entry i at bit (i % k) * bits of byte i / k, counted
      // from the least significant bit (QEMU's get_refcount_ro0..2).
      uint32_t bits = 1u << order;
      uint64_t per_byte = 8 / bits;
      uint32_t shift = static_cast<uint32_t>((i % per_byte) * bits);
      return (data[i / per_byte] >> shift) & ((1u << bits) - 1);
    }
    case 3: return data[i];
    case 4: return load_be16(data.data() + 2 * i);
    case 5: return load_be32(data.data() + 4 * i);
    default: return load_be64(data.data() + 8 * i);
  }
}
void set_refcount_entry(std::span<uint8_t> data, uint32_t order, uint64_t i, uint64_t v);

}  // namespace qdedup::qcow2
