#include "qcow2/refcount.h"

#include <algorithm>

#include "util/endian.h"
#include "util/size.h"
#include "util/text.h"

namespace qdedup::qcow2 {

void set_refcount_entry(std::span<uint8_t> data, uint32_t order, uint64_t i, uint64_t v) {
  switch (order) {
    case 0: case 1: case 2: {
      uint32_t bits = 1u << order;
      uint64_t per_byte = 8 / bits;
      uint32_t shift = static_cast<uint32_t>((i % per_byte) * bits);
      uint8_t mask = static_cast<uint8_t>(((1u << bits) - 1) << shift);
      uint8_t& byte = data[i / per_byte];
      byte = static_cast<uint8_t>((byte & ~mask) | ((v << shift) & mask));
      return;
    }
    case 3: data[i] = static_cast<uint8_t>(v); return;
    case 4: store_be16(data.data() + 2 * i, static_cast<uint16_t>(v)); return;
    case 5: store_be32(data.data() + 4 * i, static_cast<uint32_t>(v)); return;
    default: store_be64(data.data() + 8 * i, v); return;
  }
}

uint64_t Refcounts::read_entry(const Block& b, uint64_t i) const {
  return refcount_entry(b.data, g_.refcount_order, i);
}

void Refcounts::write_entry(Block& b, uint64_t i, uint64_t value) const {
  set_refcount_entry(b.data, g_.refcount_order, i, value);
}

Status Refcounts::load() {
  uint64_t entries = uint64_t{header_.refcount_table_clusters} * g_.cluster_size / 8;
  std::vector<uint8_t> raw(entries * 8);
  QD_TRY(file_.read_exact(header_.refcount_table_offset, raw, "reference count table"));
  table_.resize(entries);
  table_dirty_.assign(entries, false);
  for (uint64_t i = 0; i < entries; ++i) {
    uint64_t e = load_be64(raw.data() + 8 * i);
    if (e & kReftReservedMask) {
      return corruption("reference count table entry " + std::to_string(i) +
                        " has reserved bits set");
    }
    table_[i] = e;
  }
  return Status::ok();
}

Result<Refcounts::Block*> Refcounts::block(uint64_t index, bool create,
                                           uint64_t avoid_cluster) {
  if (auto it = blocks_.find(index); it != blocks_.end()) return &it->second;
  if (index >= table_.size()) {
    if (!create) return static_cast<Block*>(nullptr);
    QD_TRY(grow_table(index));
  }
  uint64_t off = table_[index] & kReftOffsetMask;
  if (off != 0) {
    if (off % g_.cluster_size != 0) {
      return corruption("refcount block " + std::to_string(index) + " at " + hex(off) +
                        " is not cluster aligned");
    }
    QD_TRY(evict_if_large());
    Block b;
    b.data.resize(g_.cluster_size);
    QD_TRY(file_.read_exact(off, b.data, "refcount block"));
    return &blocks_.emplace(index, std::move(b)).first->second;
  }
  if (!create) return static_cast<Block*>(nullptr);
  // A new block describes itself: it lives in the first cluster of the range
  // it covers (all free, since the block did not exist), unless that cluster
  // is the one whose refcount is being set.
  uint64_t first = index * g_.rb_entries;
  uint64_t self = first == avoid_cluster ? first + 1 : first;
  QD_TRY(evict_if_large());
  Block b;
  b.data.assign(g_.cluster_size, 0);
  b.dirty = true;
  write_entry(b, self - first, 1);
  table_[index] = self << g_.cluster_bits;
  table_dirty_[index] = true;
  // write_back() writes the block and flushes before it writes the table
  // entry, so the table never points at a block that is not on disk.
  return &blocks_.emplace(index, std::move(b)).first->second;
}

Status Refcounts::evict_if_large() {
  if (blocks_.size() < max_cached_blocks_) return Status::ok();
  if (before_eviction_ && dirty()) QD_TRY(before_eviction_());
  QD_TRY(write_back());
  blocks_.clear();
  ++evictions_;
  return Status::ok();
}

Result<uint64_t> Refcounts::get(uint64_t cluster) {
  QD_ASSIGN_OR_RETURN(Block * b, block(cluster >> g_.rb_bits, false, 0));
  if (b == nullptr) return uint64_t{0};
  return read_entry(*b, cluster & (g_.rb_entries - 1));
}

Status Refcounts::set(uint64_t cluster, uint64_t value) {
  if (value > g_.refcount_max) {
    return invalid_argument("refcount of cluster " + std::to_string(cluster) +
                            " would exceed " + std::to_string(g_.refcount_max));
  }
  QD_ASSIGN_OR_RETURN(Block * b, block(cluster >> g_.rb_bits, true, cluster));
  write_entry(*b, cluster & (g_.rb_entries - 1), value);
  b->dirty = true;
  if (value == 0 && cluster < free_hint_) free_hint_ = cluster;
  return Status::ok();
}

Status Refcounts::add(uint64_t cluster, int64_t delta) {
  QD_ASSIGN_OR_RETURN(uint64_t cur, get(cluster));
  if (delta < 0 && cur < static_cast<uint64_t>(-delta)) {
    return corruption("refcount of cluster " + std::to_string(cluster) +
                      " would drop below zero");
  }
  if (delta > 0 && g_.refcount_max - cur < static_cast<uint64_t>(delta)) {
    return invalid_argument("refcount of cluster " + std::to_string(cluster) +
                            " would exceed " + std::to_string(g_.refcount_max));
  }
  return set(cluster, cur + static_cast<uint64_t>(delta));
}

Result<uint64_t> Refcounts::find_free_run(uint64_t n) {
  uint64_t start = free_hint_;
  uint64_t run = 0;
  for (uint64_t c = free_hint_;; ++c) {
    uint64_t bi = c >> g_.rb_bits;
    QD_ASSIGN_OR_RETURN(Block * b, block(bi, false, 0));
    if (b == nullptr) {
      // Whole block free: the run can extend over it at once.
      uint64_t block_end = (bi + 1) << g_.rb_bits;
      if (run == 0) start = c;
      run += block_end - c;
      if (run >= n) return start;
      c = block_end - 1;
      continue;
    }
    if (read_entry(*b, c & (g_.rb_entries - 1)) == 0) {
      if (run == 0) start = c;
      if (++run >= n) return start;
    } else {
      run = 0;
      if (c == free_hint_) free_hint_ = c + 1;
    }
  }
}

Result<uint64_t> Refcounts::allocate(uint64_t n) {
  for (;;) {
    QD_ASSIGN_OR_RETURN(uint64_t start, find_free_run(n));
    if (start + n > (kMaxClusterOffset >> g_.cluster_bits)) {
      return no_space("image has no room for " + std::to_string(n) + " more clusters");
    }
    // Every block describing the run must exist before the run is taken: a
    // new block occupies a cluster of its own range, possibly inside the run.
    bool created = false;
    for (uint64_t bi = start >> g_.rb_bits; bi <= (start + n - 1) >> g_.rb_bits; ++bi) {
      bool missing = bi >= table_.size() || (table_[bi] & kReftOffsetMask) == 0;
      if (!missing) continue;
      QD_ASSIGN_OR_RETURN(Block * b, block(bi, true, UINT64_MAX));
      (void)b;
      created = true;
    }
    if (created) continue;  // search again with the new blocks in place
    for (uint64_t c = start; c < start + n; ++c) QD_TRY(set(c, 1));
    if (start == free_hint_) free_hint_ = start + n;
    return start;
  }
}

bool Refcounts::dirty() const {
  for (const auto& [i, b] : blocks_) {
    if (b.dirty) return true;
  }
  return std::find(table_dirty_.begin(), table_dirty_.end(), true) != table_dirty_.end();
}

Status Refcounts::write_back() {
  bool wrote = false;
  std::vector<uint64_t> order;
  for (const auto& [i, b] : blocks_) {
    if (b.dirty) order.push_back(i);
  }
  std::sort(order.begin(), order.end());
  for (uint64_t i : order) {
    Block& b = blocks_[i];
    QD_TRY(file_.pwrite(table_[i] & kReftOffsetMask, b.data));
    b.dirty = false;
    wrote = true;
  }
  if (wrote) QD_TRY(file_.flush());
  bool table_changed = false;
  for (uint64_t i = 0; i < table_.size(); ++i) {
    if (!table_dirty_[i]) continue;
    uint8_t e[8];
    store_be64(e, table_[i]);
    QD_TRY(file_.pwrite(header_.refcount_table_offset + 8 * i, e));
    table_dirty_[i] = false;
    table_changed = true;
  }
  if (table_changed) QD_TRY(file_.flush());
  return Status::ok();
}

RefcountLayout refcount_layout(const Geometry& g, uint64_t first_block, uint64_t base_end,
                               uint64_t min_table_entries) {
  const uint64_t per_cluster = g.cluster_size / 8;
  RefcountLayout l;
  l.table_clusters = div_round_up(min_table_entries, per_cluster);
  // Each step only grows both counts, so the first repeat is the smallest.
  for (;;) {
    uint64_t end = base_end + l.blocks + l.table_clusters;
    uint64_t blocks_end = end == 0 ? 0 : ((end - 1) >> g.rb_bits) + 1;
    uint64_t blocks = blocks_end > first_block ? blocks_end - first_block : 0;
    uint64_t table = div_round_up(std::max(min_table_entries, blocks_end), per_cluster);
    if (blocks == l.blocks && table == l.table_clusters) return l;
    l.blocks = blocks;
    l.table_clusters = table;
  }
}

// Replaces the refcount table with a larger one, as QEMU does: the new table
// and the refcount blocks describing it go past everything in use, then the
// header switches to it, then the old table is freed.
Status Refcounts::grow_table(uint64_t needed_index) {
  const uint64_t per_cluster = g_.cluster_size / 8;
  uint64_t old_entries = table_.size();
  uint64_t want = std::max(needed_index + 1, old_entries + old_entries / 2);
  // Place the table after every cluster any block could describe today (so
  // every block the new clusters need is new), and after the file's end.
  uint64_t start = old_entries * g_.rb_entries;
  QD_ASSIGN_OR_RETURN(uint64_t file_size, file_.size());
  start = std::max(start, div_round_up(file_size, g_.cluster_size));
  // The table, then the blocks describing [start, end), which follow it.
  RefcountLayout layout = refcount_layout(g_, start >> g_.rb_bits, start, want);
  if (layout.table_clusters * g_.cluster_size > kMaxReftableBytes) {
    return no_space("the refcount table would exceed its maximum size");
  }
  const uint64_t new_clusters = layout.table_clusters;
  const uint64_t end = start + new_clusters + layout.blocks;
  std::vector<uint64_t> table = table_;
  table.resize(new_clusters * per_cluster, 0);
  // Until the header points at the new table, a failure must leave the
  // in-memory state describing the old one.
  std::vector<uint64_t> saved_table = table_;
  std::vector<bool> saved_dirty = table_dirty_;
  std::vector<uint64_t> created = create_blocks(table, start, end, start + new_clusters);
  table_ = std::move(table);
  table_dirty_.assign(table_.size(), false);
  for (size_t i = 0; i < saved_dirty.size(); ++i) table_dirty_[i] = saved_dirty[i];
  for (uint64_t c = start; c < end; ++c) {
    QD_ASSIGN_OR_RETURN(Block * b, block(c >> g_.rb_bits, false, 0));
    write_entry(*b, c & (g_.rb_entries - 1), 1);
    b->dirty = true;
  }
  if (Status st = write_new_table(start, new_clusters); !st) {
    for (uint64_t bi : created) blocks_.erase(bi);
    table_ = std::move(saved_table);
    table_dirty_ = std::move(saved_dirty);
    return st;
  }
  uint64_t old_offset = header_.refcount_table_offset;
  uint64_t old_clusters = header_.refcount_table_clusters;
  header_.refcount_table_offset = start << g_.cluster_bits;
  header_.refcount_table_clusters = static_cast<uint32_t>(new_clusters);
  // The old table is now unreferenced.
  for (uint64_t c = 0; c < old_clusters; ++c) {
    QD_TRY(add((old_offset >> g_.cluster_bits) + c, -1));
  }
  return Status::ok();
}

std::vector<uint64_t> Refcounts::create_blocks(std::vector<uint64_t>& table, uint64_t start,
                                               uint64_t end, uint64_t next) {
  std::vector<uint64_t> created;
  for (uint64_t c = start; c < end; ++c) {
    uint64_t bi = c >> g_.rb_bits;
    if ((table[bi] & kReftOffsetMask) != 0) continue;
    table[bi] = next << g_.cluster_bits;
    Block b;
    b.data.assign(g_.cluster_size, 0);
    b.dirty = true;
    blocks_[bi] = std::move(b);
    created.push_back(bi);
    ++next;
  }
  return created;
}

// Blocks first, then the table at cluster `start`, then the header.
Status Refcounts::write_new_table(uint64_t start, uint64_t clusters) {
  std::vector<uint8_t> raw(clusters * g_.cluster_size, 0);
  for (uint64_t i = 0; i < table_.size(); ++i) store_be64(raw.data() + 8 * i, table_[i]);
  std::vector<uint64_t> dirty_blocks;
  for (auto& [i, b] : blocks_) {
    if (b.dirty) dirty_blocks.push_back(i);
  }
  std::sort(dirty_blocks.begin(), dirty_blocks.end());
  for (uint64_t i : dirty_blocks) {
    QD_TRY(file_.pwrite(table_[i] & kReftOffsetMask, blocks_[i].data));
    blocks_[i].dirty = false;
  }
  QD_TRY(file_.pwrite(start << g_.cluster_bits, raw));
  QD_TRY(file_.flush());
  uint8_t h[12];
  store_be64(h, start << g_.cluster_bits);
  store_be32(h + 8, static_cast<uint32_t>(clusters));
  QD_TRY(file_.pwrite(kOffRefcountTableOffset, h));
  return file_.flush();
}

}  // namespace qdedup::qcow2
