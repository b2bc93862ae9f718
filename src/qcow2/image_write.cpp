// The write path of Image: allocation, L2/L1 updates, and crash-safe flushing.
#include <algorithm>
#include <cstdio>

#include "qcow2/compress.h"
#include "qcow2/image.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2 {

// Before the first change: clear autoclear bits this build does not maintain
// (the spec requires it; QEMU does it at open). qdedup does not update
// bitmaps, so the bitmaps bit goes too and QEMU will treat them as stale,
// unless the job keeps every guest byte (ImageOptions::keep_autoclear).
Status Image::begin_write() {
  if (!writable_) return invalid_argument("image is open read-only");
  if (write_started_) return Status::ok();
  const uint64_t kept = header_.autoclear_features & keep_autoclear_;
  if (header_.version >= 3 && header_.autoclear_features != kept) {
    header_.autoclear_features = kept;
    uint8_t b[8];
    store_be64(b, kept);
    QD_TRY(file_->pwrite(kOffAutoclearFeatures, b));
    QD_TRY(file_->flush());
  }
  write_started_ = true;
  return Status::ok();
}

Result<uint64_t> Image::effective_refcount(uint64_t host_cluster) {
  QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(host_cluster));
  if (auto it = pending_release_.find(host_cluster); it != pending_release_.end()) {
    rc -= std::min(rc, it->second);
  }
  return rc;
}

Result<Image::L2Table*> Image::writable_l2(uint64_t guest_cluster) {
  // Evict first: an eviction flushes, and must not run between the steps below.
  QD_TRY(maybe_evict());
  uint64_t l1i = g_.l1_index(guest_cluster);
  if (l1i >= l1_.size()) {
    return invalid_argument("guest cluster " + std::to_string(guest_cluster) +
                            " lies beyond the L1 table");
  }
  uint64_t old = l1_[l1i];
  uint64_t old_off = old & kL1eOffsetMask;
  if (old_off != 0) {
    QD_ASSIGN_OR_RETURN(uint64_t rc, effective_refcount(old_off >> g_.cluster_bits));
    if (rc == 1) {
      if (!(old & kOflagCopied)) {
        l1_[l1i] = old | kOflagCopied;
        l1_dirty_.insert(l1i);
      }
      return load_l2(old_off);
    }
  }
  // Allocate a new table: empty, or a copy of the shared one (a snapshot
  // also uses it). The data clusters keep their refcounts: the number of
  // paths to them does not change.
  QD_ASSIGN_OR_RETURN(uint64_t c, refcounts_.allocate(1));
  uint64_t new_off = c << g_.cluster_bits;
  std::vector<uint8_t> contents(g_.cluster_size, 0);
  if (old_off != 0) {
    QD_ASSIGN_OR_RETURN(L2Table * shared, load_l2(old_off));
    contents = shared->mem;
    pending_release_[old_off >> g_.cluster_bits] += 1;
  }
  L2Table t;
  t.mem = std::move(contents);
  t.dirty = true;
  L2Table* table = &l2_cache_.insert_or_assign(new_off, std::move(t)).first->second;
  l1_[l1i] = new_off | kOflagCopied;
  l1_dirty_.insert(l1i);
  return table;
}

Status Image::release_clusters(const L2Entry& old, uint64_t count) {
  QD_ASSIGN_OR_RETURN(HeldClusters held, held_clusters(g_, old));
  for (uint64_t c = held.first; !held.empty() && c <= held.last; ++c) {
    pending_release_[c] += count;
    if (!old.compressed()) maybe_owned_.insert(c);
  }
  return Status::ok();
}

Status Image::reference_clusters(const L2Entry& e, uint64_t count) {
  QD_ASSIGN_OR_RETURN(HeldClusters held, held_clusters(g_, e));
  for (uint64_t c = held.first; !held.empty() && c <= held.last; ++c) {
    QD_TRY(refcounts_.add(c, static_cast<int64_t>(count)));
  }
  return Status::ok();
}

Result<L2Entry> Image::table_entry(uint64_t l2_offset, uint64_t index) {
  if (index >= g_.l2_entries) return invalid_argument("L2 index out of range");
  QD_ASSIGN_OR_RETURN(L2Table * t, load_l2(l2_offset));
  return entry_at(*t, index);
}

Status Image::remap_entry(uint64_t l2_offset, uint64_t index, const L2Entry& e,
                          uint64_t table_refs) {
  if (index >= g_.l2_entries) return invalid_argument("L2 index out of range");
  if (e.copied()) return invalid_argument("a remapped entry may not carry COPIED");
  if (table_refs == 0) return invalid_argument("a remapped table has references");
  QD_TRY(begin_write());
  QD_ASSIGN_OR_RETURN(L2Table * t, load_l2(l2_offset));
  const L2Entry old = entry_at(*t, index);
  if (old.word == e.word && old.bitmap == e.bitmap) return Status::ok();
  QD_TRY(reference_clusters(e, table_refs));
  store_entry(*t, index, e);
  return release_clusters(old, table_refs);
}

Status Image::clear_copied(uint64_t l2_offset, uint64_t index) {
  if (index >= g_.l2_entries) return invalid_argument("L2 index out of range");
  QD_TRY(begin_write());
  QD_ASSIGN_OR_RETURN(L2Table * t, load_l2(l2_offset));
  L2Entry e = entry_at(*t, index);
  if (!e.copied()) return Status::ok();
  e.word &= ~kOflagCopied;
  store_entry(*t, index, e);
  return Status::ok();
}

Status Image::replace_entry(uint64_t guest_cluster, const L2Entry& e) {
  QD_ASSIGN_OR_RETURN(L2Table * t, writable_l2(guest_cluster));
  uint64_t index = g_.l2_index(guest_cluster);
  L2Entry old = entry_at(*t, index);
  store_entry(*t, index, e);
  return release_clusters(old);
}

Status Image::write_cluster(uint64_t guest_cluster, std::span<const uint8_t> data) {
  if (data.size() != g_.cluster_size) return invalid_argument("write_cluster needs one cluster");
  if (guest_cluster >= g_.guest_clusters) return invalid_argument("write beyond the virtual disk");
  QD_TRY(begin_write());
  QD_ASSIGN_OR_RETURN(L2Entry e, l2_entry(guest_cluster));
  ClusterType type = e.type(g_);
  if ((type == ClusterType::kNormal || type == ClusterType::kZeroAlloc) && e.host_offset() != 0 &&
      e.host_offset() % g_.cluster_size == 0) {
    QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(e.host_offset() >> g_.cluster_bits));
    if (rc == 1) {
      // Owned: overwrite in place, as QEMU does for a COPIED cluster.
      QD_TRY(file_->pwrite(e.host_offset(), data));
      L2Entry owned;
      owned.word = e.host_offset() | kOflagCopied;
      owned.bitmap = g_.extended_l2 ? kBitmapAllAllocated : 0;
      if (owned.word != e.word || owned.bitmap != e.bitmap) {
        QD_ASSIGN_OR_RETURN(L2Table * tt, writable_l2(guest_cluster));
        store_entry(*tt, g_.l2_index(guest_cluster), owned);
      }
      return Status::ok();
    }
  }
  // The L2 table first, so that it precedes its data in the file as with QEMU.
  QD_ASSIGN_OR_RETURN(L2Table * table, writable_l2(guest_cluster));
  (void)table;
  QD_ASSIGN_OR_RETURN(uint64_t c, refcounts_.allocate(1));
  uint64_t host = c << g_.cluster_bits;
  QD_TRY(file_->pwrite(host, data));
  L2Entry fresh;
  fresh.word = host | kOflagCopied;
  fresh.bitmap = g_.extended_l2 ? kBitmapAllAllocated : 0;
  return replace_entry(guest_cluster, fresh);
}

Status Image::write_compressed_cluster(uint64_t guest_cluster, std::span<const uint8_t> data) {
  if (data.size() != g_.cluster_size) return invalid_argument("write_cluster needs one cluster");
  if (guest_cluster >= g_.guest_clusters) return invalid_argument("write beyond the virtual disk");
  QD_TRY(begin_write());
  compressed_.resize(g_.cluster_size - 1);
  QD_ASSIGN_OR_RETURN(size_t n, compress_cluster(header_.compression_type, data, compressed_));
  if (n == 0) return write_cluster(guest_cluster, data);
  QD_ASSIGN_OR_RETURN(L2Entry cur, l2_entry(guest_cluster));
  if (cur.host_offset() != 0 || cur.compressed()) {
    return invalid_argument("a compressed write needs an unallocated cluster");
  }
  // The L2 table first, as QEMU's get_cluster_table precedes qcow2_alloc_bytes.
  QD_ASSIGN_OR_RETURN(L2Table * table, writable_l2(guest_cluster));
  (void)table;
  QD_ASSIGN_OR_RETURN(uint64_t offset, allocate_bytes(n));
  QD_TRY(file_->pwrite(offset, std::span<const uint8_t>(compressed_.data(), n)));
  L2Entry e;
  e.word = encode_compressed_entry(g_, offset, n);
  return replace_entry(guest_cluster, e);
}

Status Image::align_end_to_sector() {
  QD_TRY(flush());
  QD_ASSIGN_OR_RETURN(uint64_t size, file_->size());
  if (size % 512 == 0) return Status::ok();
  return file_->truncate((size / 512 + 1) * 512);
}

// qcow2_alloc_bytes: `size` bytes after the last stream when they fit in its
// cluster (or run into the next one, if that is the cluster allocated next),
// else at the start of a new cluster; one reference on each cluster touched.
Result<uint64_t> Image::allocate_bytes(uint64_t size) {
  const uint64_t cs = g_.cluster_size;
  uint64_t offset = free_byte_offset_;
  if (offset != 0) {
    QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(offset >> g_.cluster_bits));
    if (rc >= g_.refcount_max) offset = 0;
  }
  if (offset != 0 && cs - offset % cs >= size) {
    QD_TRY(refcounts_.add(offset >> g_.cluster_bits, 1));
  } else {
    QD_ASSIGN_OR_RETURN(uint64_t c, refcounts_.allocate(1));  // its refcount is 1
    const uint64_t fresh = c << g_.cluster_bits;
    if (offset != 0 && (offset / cs + 1) * cs == fresh) {
      QD_TRY(refcounts_.add(offset >> g_.cluster_bits, 1));  // runs on into `fresh`
    } else {
      offset = fresh;
    }
  }
  free_byte_offset_ = (offset + size) % cs == 0 ? 0 : offset + size;
  return offset;
}

Status Image::link_cluster(uint64_t guest_cluster, uint64_t host_offset,
                           std::optional<uint64_t> owner_guest_cluster) {
  if (guest_cluster >= g_.guest_clusters) return invalid_argument("link beyond the virtual disk");
  if (host_offset == 0 || host_offset % g_.cluster_size != 0) {
    return invalid_argument("link target " + hex(host_offset) + " is not a cluster offset");
  }
  QD_TRY(begin_write());
  QD_ASSIGN_OR_RETURN(L2Entry cur, l2_entry(guest_cluster));
  if (cur.type(g_) == ClusterType::kNormal && cur.host_offset() == host_offset) {
    return Status::ok();  // already points there
  }
  uint64_t target = host_offset >> g_.cluster_bits;
  QD_ASSIGN_OR_RETURN(uint64_t rc, effective_refcount(target));
  if (rc == 0) return invalid_argument("link target " + hex(host_offset) + " is not in use");
  if (rc >= g_.refcount_max) {  // refused before anything changes
    return invalid_argument("refcount of cluster " + std::to_string(target) + " would exceed " +
                            std::to_string(g_.refcount_max));
  }
  if (rc == 1) {
    // The owner's entry must lose COPIED before the cluster is shared.
    if (!owner_guest_cluster) {
      return invalid_argument("sharing owned cluster " + hex(host_offset) + " needs its owner");
    }
    QD_ASSIGN_OR_RETURN(L2Entry owner, l2_entry(*owner_guest_cluster));
    if (owner.type(g_) != ClusterType::kNormal || owner.host_offset() != host_offset) {
      return invalid_argument("guest cluster " + std::to_string(*owner_guest_cluster) +
                              " does not own " + hex(host_offset));
    }
    // The clear is in the cache before the increase: an eviction of refcount
    // blocks (which writable_l2 can cause when it looks up the table's own
    // refcount) then writes the clear first, never the increase alone.
    QD_ASSIGN_OR_RETURN(L2Table * t, writable_l2(*owner_guest_cluster));
    owner.word &= ~kOflagCopied;
    store_entry(*t, g_.l2_index(*owner_guest_cluster), owner);
    QD_TRY(refcounts_.add(target, 1));
  } else {
    QD_TRY(refcounts_.add(target, 1));
  }
  return replace_entry(guest_cluster, shared_entry(g_, host_offset));
}

Status Image::zero_cluster(uint64_t guest_cluster) {
  if (guest_cluster >= g_.guest_clusters) return invalid_argument("zero beyond the virtual disk");
  QD_TRY(begin_write());
  const L2Entry z = zero_entry(g_);
  if (!g_.extended_l2 && g_.version < 3 && header_.has_backing()) {
    // v2 has no zero flag, and an unallocated cluster would show the backing
    // file (opened or not): write the zeros.
    std::vector<uint8_t> zeros(g_.cluster_size, 0);
    return write_cluster(guest_cluster, zeros);
  }
  QD_ASSIGN_OR_RETURN(L2Entry cur, l2_entry(guest_cluster));
  if (cur.word == z.word && cur.bitmap == z.bitmap) return Status::ok();
  return replace_entry(guest_cluster, z);
}

Status Image::write(uint64_t offset, std::span<const uint8_t> buf) {
  if (offset > header_.size || buf.size() > header_.size - offset) {
    return invalid_argument("write beyond the end of the virtual disk");
  }
  std::vector<uint8_t> cluster(g_.cluster_size);
  uint64_t pos = 0;
  while (pos < buf.size()) {
    uint64_t at = offset + pos;
    uint64_t gc = at >> g_.cluster_bits;
    uint64_t in_cluster = at & (g_.cluster_size - 1);
    uint64_t n = std::min<uint64_t>(buf.size() - pos, g_.cluster_size - in_cluster);
    if (n != g_.cluster_size) {
      // Partial cluster: read the rest (from this image or its backing file).
      uint64_t start = gc << g_.cluster_bits;
      uint64_t avail = std::min<uint64_t>(g_.cluster_size, header_.size - start);
      std::fill(cluster.begin(), cluster.end(), uint8_t{0});
      QD_TRY(read(start, std::span<uint8_t>(cluster).first(avail)));
    }
    std::copy_n(buf.begin() + static_cast<std::ptrdiff_t>(pos), n,
                cluster.begin() + static_cast<std::ptrdiff_t>(in_cluster));
    QD_TRY(write_cluster(gc, cluster));
    pos += n;
  }
  return Status::ok();
}

// Entries that only lose COPIED (a cluster about to become shared) reach the
// disk before the cluster's refcount goes up and before any other L2 change,
// so that no on-disk state shows COPIED on a cluster with refcount 2, which
// would let QEMU overwrite a shared cluster in place. A crash right after
// leaves a missing COPIED flag at worst: harmless, QEMU then copies on write.
Status Image::write_copied_clears() {
  std::vector<uint64_t> dirty;
  for (const auto& [off, t] : l2_cache_) {
    if (t.dirty) dirty.push_back(off);
  }
  if (dirty.empty()) return Status::ok();
  std::sort(dirty.begin(), dirty.end());
  bool phase1 = false;
  for (uint64_t off : dirty) {
    L2Table& t = l2_cache_[off];
    if (t.disk.empty()) continue;
    std::vector<uint8_t> safe = t.disk;
    bool changed = false;
    for (uint64_t i = 0; i < g_.l2_entries; ++i) {
      size_t p = static_cast<size_t>(i * g_.l2_entry_bytes);
      uint64_t before = load_be64(t.disk.data() + p);
      uint64_t after = load_be64(t.mem.data() + p);
      if ((before & kOflagCopied) && (before & ~kOflagCopied) == (after & ~kOflagCopied) &&
          !(after & kOflagCopied)) {
        store_be64(safe.data() + p, before & ~kOflagCopied);
        changed = true;
      }
    }
    if (changed) {
      QD_TRY(file_->pwrite(off, safe));
      t.disk = std::move(safe);
      phase1 = true;
    }
  }
  if (phase1) QD_TRY(file_->flush());
  return Status::ok();
}

Status Image::write_l2_tables() {
  std::vector<uint64_t> dirty;
  for (const auto& [off, t] : l2_cache_) {
    if (t.dirty) dirty.push_back(off);
  }
  if (dirty.empty()) return Status::ok();
  std::sort(dirty.begin(), dirty.end());
  for (uint64_t off : dirty) {
    L2Table& t = l2_cache_[off];
    QD_TRY(file_->pwrite(off, t.mem));
    t.disk = t.mem;
    t.dirty = false;
  }
  return file_->flush();
}

Status Image::flush() {
  if (!writable_ || !write_started_) return Status::ok();
  QD_TRY(file_->flush());          // guest data before anything points at it
  QD_TRY(write_copied_clears());   // COPIED off before a refcount reaches 2
  QD_TRY(refcounts_.write_back()); // refcounts up before references appear
  QD_TRY(write_l2_tables());
  if (!l1_dirty_.empty()) {
    for (uint64_t i : l1_dirty_) {
      uint8_t b[8];
      store_be64(b, l1_[i]);
      QD_TRY(file_->pwrite(header_.l1_table_offset + 8 * i, b));
    }
    QD_TRY(file_->flush());
    l1_dirty_.clear();
  }
  // References are gone from the disk: now the refcounts may go down.
  if (!pending_release_.empty()) {
    for (const auto& [cluster, count] : pending_release_) {
      QD_TRY(refcounts_.add(cluster, -static_cast<int64_t>(count)));
    }
    pending_release_.clear();
    QD_TRY(refcounts_.write_back());
  }
  return Status::ok();
}

// A cluster whose sharing ended (refcount back to 1) gets COPIED again on its
// remaining active entry, so qemu-img check stays clean (QEMU itself leaves
// such entries without the flag).
Status Image::fix_copied_flags() {
  QD_TRY(flush());
  std::set<uint64_t> owned;
  for (uint64_t c : maybe_owned_) {
    QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(c));
    if (rc == 1) owned.insert(c);
  }
  maybe_owned_.clear();
  if (owned.empty() && !audit_copied_) return Status::ok();
  for (uint64_t l1i = 0; l1i < l1_.size(); ++l1i) {
    uint64_t l2_off = l1_[l1i] & kL1eOffsetMask;
    if (l2_off == 0) continue;
    if (!(l1_[l1i] & kOflagCopied)) {
      if (!audit_copied_) continue;
      QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(l2_off >> g_.cluster_bits));
      if (rc != 1) continue;  // shared with a snapshot: its entries are not ours to mark
      l1_[l1i] |= kOflagCopied;
      l1_dirty_.insert(l1i);
    }
    QD_ASSIGN_OR_RETURN(L2Table * t, load_l2(l2_off));
    for (uint64_t i = 0; i < g_.l2_entries; ++i) {
      L2Entry e = entry_at(*t, i);
      if (e.type(g_) != ClusterType::kNormal || e.copied()) continue;
      uint64_t c = e.host_offset() >> g_.cluster_bits;
      bool set = owned.count(c) != 0;
      if (!set && audit_copied_) {
        QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(c));
        set = rc == 1;
      }
      if (set) {
        e.word |= kOflagCopied;
        store_entry(*t, i, e);
      }
    }
  }
  audit_copied_ = false;
  return flush();
}

Status Image::close() {
  if (!writable_ || !write_started_) return Status::ok();
  QD_TRY(fix_copied_flags());
  return file_->flush();
}

}  // namespace qdedup::qcow2

namespace qdedup::qcow2 {

Status Image::rewrite_header(const Header& h) {
  if (!writable_) return invalid_argument("image is open read-only");
  QD_TRY(flush());
  QD_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, encode_header(h));
  // The whole cluster, as QEMU's qcow2_update_header() writes it: stale bytes
  // of a longer old extension area must not survive past the end marker.
  QD_TRY(file_->pwrite(0, bytes));
  QD_TRY(file_->flush());
  QD_ASSIGN_OR_RETURN(header_, decode_header(bytes));
  return Status::ok();
}

Status Image::clear_autoclear(uint64_t bits) {
  if (!writable_) return invalid_argument("image is open read-only");
  if (header_.version < 3 || !(header_.autoclear_features & bits)) return Status::ok();
  header_.autoclear_features &= ~bits;
  uint8_t b[8];
  store_be64(b, header_.autoclear_features);
  QD_TRY(file_->pwrite(kOffAutoclearFeatures, b));
  return file_->flush();
}

Status Image::set_autoclear(uint64_t bits) {
  if (!writable_) return invalid_argument("image is open read-only");
  // A version 2 header ends before the autoclear field.
  if (header_.version < 3) return invalid_argument("autoclear bits need a version 3 image");
  header_.autoclear_features |= bits;
  uint8_t b[8];
  store_be64(b, header_.autoclear_features);
  QD_TRY(file_->pwrite(kOffAutoclearFeatures, b));
  return file_->flush();
}

Result<std::vector<Image::ClusterRun>> Image::free_cluster_runs(std::vector<uint64_t> clusters) {
  if (!writable_) return invalid_argument("image is open read-only");
  QD_TRY(flush());
  std::sort(clusters.begin(), clusters.end());
  clusters.erase(std::unique(clusters.begin(), clusters.end()), clusters.end());
  std::vector<ClusterRun> runs;
  for (uint64_t c : clusters) {
    if (c == 0) continue;  // the header is never free
    QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(c));
    if (rc != 0) continue;
    if (!runs.empty() && runs.back().first + runs.back().count == c) {
      ++runs.back().count;
      continue;
    }
    runs.push_back({c, 1});
  }
  return runs;
}

Result<uint64_t> Image::punch_free_clusters(std::vector<uint64_t> clusters) {
  QD_ASSIGN_OR_RETURN(std::vector<ClusterRun> runs, free_cluster_runs(std::move(clusters)));
  uint64_t punched = 0;
  for (const ClusterRun& r : runs) {
    QD_TRY(file_->punch_hole(r.first << g_.cluster_bits, r.count << g_.cluster_bits));
    punched += r.count;
  }
  return punched;
}

Result<uint64_t> Image::truncate_free_tail() {
  if (!writable_) return invalid_argument("image is open read-only");
  QD_TRY(flush());
  QD_ASSIGN_OR_RETURN(uint64_t size, file_->size());
  uint64_t end = (size + g_.cluster_size - 1) >> g_.cluster_bits;  // clusters
  uint64_t keep = end;
  while (keep > 1) {
    QD_ASSIGN_OR_RETURN(uint64_t rc, refcounts_.get(keep - 1));
    if (rc != 0) break;
    --keep;
  }
  const uint64_t new_size = keep << g_.cluster_bits;
  if (new_size >= size) return uint64_t{0};
  QD_TRY(file_->truncate(new_size));
  QD_TRY(file_->flush());
  return size - new_size;
}

Result<uint64_t> Image::end_of_file_cluster() {
  QD_ASSIGN_OR_RETURN(uint64_t size, file_->size());
  return (size + g_.cluster_size - 1) & ~(g_.cluster_size - 1);
}

}  // namespace qdedup::qcow2
