#include "qcow2/qemu_layout.h"

#include <algorithm>
#include <utility>

#include "qcow2/format.h"
#include "util/size.h"

namespace qdedup::qcow2 {

namespace {

// BDRV_REQUEST_MAX_BYTES and INT_MAX, which cap one allocation request.
constexpr uint64_t kIntMax = 0x7fffffff;
constexpr uint64_t kRequestMaxBytes = (kIntMax >> 9) << 9;

// qcow2_refcount_metadata_size: the refcount blocks that describe `clusters`
// clusters and themselves and their table (with room for half as much again
// when `generous`).
uint64_t refblocks_for(const Geometry& g, uint64_t clusters, bool generous) {
  const uint64_t per_table_cluster = g.cluster_size / 8;
  uint64_t table = 0, blocks = 0, n = 0, last = 0;
  do {
    last = n;
    blocks = div_round_up(clusters + table + blocks, g.rb_entries);
    table = div_round_up(blocks, per_table_cluster);
    n = clusters + blocks + table;
    if (n == last && generous) {
      clusters += div_round_up(table, 2);
      n = 0;
      generous = false;
    }
  } while (n != last);
  return blocks;
}

// The model of QEMU's allocator. Every cluster it counts has refcount 1 (a new
// image shares nothing), so the refcounts are the set of used clusters.
class QemuAllocator {
 public:
  QemuAllocator(const Geometry& g, NewImageLayout& out) : g_(g), out_(out) {
    // What qcow2_co_create writes first: the header, a refcount table of one
    // cluster, and the refcount block that describes the three.
    out_.reftable = 1;
    out_.reftable_clusters = 1;
    out_.refblocks.assign(g.cluster_size / 8, 0);
    out_.refblocks[0] = 2;
    mark(0, 3);
  }

  // qcow2_alloc_clusters: `n` clusters from the first free run at or above
  // the free index; a missing refcount block is allocated on the way, and
  // then the search starts again (alloc_refcount_block returns -EAGAIN).
  Result<uint64_t> alloc(uint64_t n) {
    while (true) {
      QD_ASSIGN_OR_RETURN(uint64_t first, alloc_noref(n));
      QD_ASSIGN_OR_RETURN(bool done, increment(first, n));
      if (done) return first;
    }
  }

  // qcow2_alloc_clusters_at: as many of the `n` clusters from `first` on as
  // are free, up to the first used one; how many.
  Result<uint64_t> alloc_at(uint64_t first, uint64_t n) {
    while (true) {
      const uint64_t i = std::min(n, free_run(first));
      QD_ASSIGN_OR_RETURN(bool done, increment(first, i));
      if (done) return i;
    }
  }

  // qcow2_refcount_area: a new refcount table with new blocks at `start`
  // that describe everything up to their own end and `additional` clusters
  // beyond it; the old table is freed. Returns the cluster after the new
  // structures.
  Result<uint64_t> refcount_area(uint64_t start, uint64_t additional, bool exact,
                                 std::optional<std::pair<uint64_t, uint64_t>> hook) {
    const uint64_t max_entries = kMaxReftableBytes / 8;
    const uint64_t total = refblocks_for(g_, start + additional, !exact);
    if (total > max_entries) return invalid_argument("image too large for its refcount table");
    const uint64_t area_index = start / g_.rb_entries;
    uint64_t size = exact ? total : total + div_round_up(total, 2);
    size = div_round_up(size, g_.cluster_size / 8) * (g_.cluster_size / 8);
    if (size > max_entries) return invalid_argument("image too large for its refcount table");
    std::vector<uint64_t> table = out_.refblocks;
    table.resize(size, 0);
    if (hook) table[hook->first] = hook->second;
    uint64_t new_blocks = 0;
    for (uint64_t i = area_index; i < total; ++i) new_blocks += table[i] == 0;
    const uint64_t table_start = start + new_blocks;
    const uint64_t clusters = size * 8 / g_.cluster_size;
    const uint64_t end = table_start + clusters;
    uint64_t next = start;
    for (uint64_t i = area_index; i < total; ++i) {
      if (table[i] == 0) table[i] = next++;
    }
    if (any_used_in(start, end)) {
      return invalid_argument("internal error: new refcount structures overlap used clusters");
    }
    mark(start, end);
    const uint64_t old = out_.reftable, old_clusters = out_.reftable_clusters;
    out_.old_tables.push_back({old, old_clusters, out_.refblocks});
    out_.refblocks = std::move(table);
    out_.reftable = table_start;
    out_.reftable_clusters = clusters;
    release(old, old_clusters);
    return end;
  }

  // One past the last used cluster (qcow2_get_last_cluster + 1).
  uint64_t end() const { return out_.used.empty() ? 0 : std::prev(out_.used.end())->second; }

 private:
  bool has_block(uint64_t c) const {
    const uint64_t i = c >> g_.rb_bits;
    return i < out_.refblocks.size() && out_.refblocks[i] != 0;
  }

  // alloc_clusters_noref: the first run of `n` clusters with refcount 0 from
  // the free index on, which moves past it; refcounts are left alone.
  Result<uint64_t> alloc_noref(uint64_t n) {
    // QEMU steps one cluster at a time, starting the count again after a used
    // one; this jumps over whole used and free runs to the same place.
    uint64_t run = 0;
    while (run < n) {
      auto it = containing(free_index_);
      if (it != out_.used.end()) {
        free_index_ = it->second;
        run = 0;
      } else {
        const uint64_t step = std::min(n - run, free_run(free_index_));
        free_index_ += step;
        run += step;
      }
      // QEMU's limit on host offsets (QCOW_MAX_CLUSTER_OFFSET): -EFBIG.
      if (free_index_ - 1 > (kMaxClusterOffset >> g_.cluster_bits)) {
        return invalid_argument("image too large: host offsets would exceed 2^56");
      }
    }
    return free_index_ - n;
  }

  // update_refcount(+1) of [first, first + n), block by block; false when a
  // block had to be allocated, with the clusters counted so far uncounted and
  // the free index back at `first`.
  Result<bool> increment(uint64_t first, uint64_t n) {
    uint64_t c = first;
    const uint64_t end = first + n;
    while (c < end) {
      if (!has_block(c)) {
        QD_TRY(alloc_refcount_block(c));
        // -EAGAIN: "try the same ones first to see if they're still free".
        free_index_ = std::min(free_index_, first);
        release(first, c - first);
        return false;
      }
      const uint64_t block_end = ((c >> g_.rb_bits) + 1) << g_.rb_bits;
      const uint64_t to = std::min(end, block_end);
      mark(c, to);
      c = to;
    }
    return true;
  }

  // alloc_refcount_block for cluster `c`, whose block is missing.
  Status alloc_refcount_block(uint64_t c) {
    const uint64_t index = c >> g_.rb_bits;
    QD_ASSIGN_OR_RETURN(uint64_t block, alloc_noref(1));
    if ((block >> g_.rb_bits) == index) {
      mark(block, block + 1);  // the block describes itself
    } else {
      QD_ASSIGN_OR_RETURN(bool done, increment(block, 1));
      if (!done) return Status::ok();  // QEMU starts over; `block` stays free
    }
    if (index < out_.refblocks.size()) {
      out_.refblocks[index] = block;
      return Status::ok();
    }
    // The table is full: new structures after the blocks in use.
    const uint64_t blocks_used = div_round_up(std::max(c, block) + 1, g_.rb_entries);
    return refcount_area(blocks_used * g_.rb_entries, 0, false, std::make_pair(index, block))
        .status();
  }

  std::map<uint64_t, uint64_t>::iterator containing(uint64_t c) {
    auto it = out_.used.upper_bound(c);
    if (it == out_.used.begin()) return out_.used.end();
    --it;
    return c < it->second ? it : out_.used.end();
  }
  // Free clusters from `c` on up to the next used one (0 when `c` is used).
  uint64_t free_run(uint64_t c) {
    if (containing(c) != out_.used.end()) return 0;
    auto it = out_.used.upper_bound(c);
    return it == out_.used.end() ? UINT64_MAX - c : it->first - c;
  }
  bool any_used_in(uint64_t from, uint64_t to) {
    if (containing(from) != out_.used.end()) return true;
    auto it = out_.used.upper_bound(from);
    return it != out_.used.end() && it->first < to;
  }

  void mark(uint64_t from, uint64_t to) {
    if (from >= to) return;
    auto it = out_.used.upper_bound(from);
    if (it != out_.used.begin() && std::prev(it)->second >= from) {
      --it;
      from = it->first;
      to = std::max(to, it->second);
      it = out_.used.erase(it);
    }
    while (it != out_.used.end() && it->first <= to) {
      to = std::max(to, it->second);
      it = out_.used.erase(it);
    }
    out_.used.emplace(from, to);
  }

  // Refcounts of [first, first + n) back to 0 (qcow2_free_clusters): the
  // free index moves down to the first of them.
  void release(uint64_t first, uint64_t n) {
    if (n == 0) return;
    const uint64_t to = first + n;
    auto it = containing(first);
    if (it != out_.used.end()) {
      const uint64_t lo = it->first, hi = it->second;
      out_.used.erase(it);
      if (lo < first) out_.used.emplace(lo, first);
      if (hi > to) out_.used.emplace(to, hi);
    }
    free_index_ = std::min(free_index_, first);
  }

  const Geometry& g_;
  NewImageLayout& out_;
  uint64_t free_index_ = 0;
};

// preallocate_co: L2 tables and data clusters for every guest cluster, in
// qcow2_alloc_host_offset's order (each call maps one contiguous host run).
Status preallocate_metadata(const Geometry& g, QemuAllocator& a, NewImageLayout& out) {
  // Clusters in ALIGN_DOWN(INT_MAX, cluster size) and BDRV_REQUEST_MAX_BYTES.
  const uint64_t per_call = kIntMax >> g.cluster_bits;
  const uint64_t per_request = kRequestMaxBytes >> g.cluster_bits;
  uint64_t guest = 0;
  while (guest < g.guest_clusters) {
    const uint64_t want = std::min(g.guest_clusters - guest, per_call);
    uint64_t mapped = 0;
    std::optional<uint64_t> next_host;
    while (mapped < want) {
      const uint64_t at = guest + mapped;
      uint64_t& l2 = out.l2[g.l1_index(at)];
      if (l2 == 0) {
        QD_ASSIGN_OR_RETURN(l2, a.alloc(1));
      }
      const uint64_t n = std::min({want - mapped, g.l2_entries - g.l2_index(at), per_request});
      uint64_t host = 0, got = n;
      if (!next_host) {
        QD_ASSIGN_OR_RETURN(host, a.alloc(n));
      } else {
        host = *next_host;
        QD_ASSIGN_OR_RETURN(got, a.alloc_at(host, n));
        if (got == 0) break;
      }
      if (!out.data.empty() && out.data.back().guest + out.data.back().count == at &&
          out.data.back().host + out.data.back().count == host) {
        out.data.back().count += got;
      } else {
        out.data.push_back({at, host, got});
      }
      mapped += got;
      next_host = host + got;
    }
    guest += mapped;
  }
  return Status::ok();
}

// qcow2_co_truncate's falloc/full branch: new refcount structures after the
// image, then one run of data clusters, then the L2 tables.
Status preallocate_data(const Geometry& g, QemuAllocator& a, NewImageLayout& out) {
  const uint64_t n = g.guest_clusters;
  const uint64_t l2_tables = div_round_up(n, g.l2_entries) + 1;
  QD_ASSIGN_OR_RETURN(uint64_t start, a.refcount_area(a.end(), n + l2_tables, true, {}));
  QD_ASSIGN_OR_RETURN(uint64_t got, a.alloc_at(start, n));
  if (got != n) return invalid_argument("internal error: preallocated data area not free");
  if (n > 0) out.data.push_back({0, start, n});
  for (uint64_t& l2 : out.l2) {
    QD_ASSIGN_OR_RETURN(l2, a.alloc(1));
  }
  return Status::ok();
}

}  // namespace

Result<NewImageLayout> plan_new_image(const Geometry& g, uint64_t l1_entries, Preallocation mode) {
  NewImageLayout out;
  QemuAllocator a(g, out);
  const uint64_t l1_bytes = l1_entries * 8;
  // qcow2_grow_l1_table, called by the truncate to the image's size.
  if (l1_entries > 0) {
    QD_ASSIGN_OR_RETURN(out.l1, a.alloc(div_round_up(l1_bytes, g.cluster_size)));
  }
  const uint64_t l1_end = a.end();
  if (mode != Preallocation::kOff) out.l2.assign(l1_entries, 0);
  if (mode == Preallocation::kMetadata) QD_TRY(preallocate_metadata(g, a, out));
  if (mode == Preallocation::kFalloc || mode == Preallocation::kFull) {
    QD_TRY(preallocate_data(g, a, out));
  }
  // The L1 table is written without padding; every other structure (and the
  // truncate to the data's end) fills whole clusters, but for a partial last
  // data cluster of metadata preallocation, which ends with its zero tail.
  const uint64_t cs = g.cluster_size;
  const uint64_t end = a.end();
  out.file_size = end * cs;
  if (l1_entries > 0 && end == l1_end && out.l1 + div_round_up(l1_bytes, cs) == end) {
    out.file_size = out.l1 * cs + l1_bytes;
  }
  const uint64_t in_last = g.virtual_size % cs;
  if (mode == Preallocation::kMetadata && in_last != 0 && !out.data.empty()) {
    const NewImageLayout::DataRun& last = out.data.back();
    const uint64_t host = last.host + last.count - 1;
    const uint64_t unit = g.extended_l2 ? cs / 32 : cs;  // a subcluster
    out.zero_tail_offset = host * cs + in_last;
    out.zero_tail_bytes = div_round_up(in_last, unit) * unit - in_last;
    if (host + 1 == end) out.file_size = out.zero_tail_offset + out.zero_tail_bytes;
  }
  return out;
}

}  // namespace qdedup::qcow2
