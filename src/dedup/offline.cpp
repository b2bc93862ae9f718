#include "dedup/offline.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dedup/granularity_estimator.h"
#include "dedup/stream_hosts.h"
#include "io/hole_puncher.h"
#include "qcow2/compress.h"
#include "qcow2/walk.h"
#include "util/first_error.h"
#include "util/rate_limiter.h"
#include "util/text.h"

namespace qdedup::dedup {

namespace {

using qcow2::ClusterType;
using qcow2::L2Entry;
using qcow2::L2EntryVisit;
using qcow2::L2TableVisit;

// Clusters are read and hashed in batches of about this size.
constexpr uint64_t kBatchBytes = 8ull << 20;

// Copies and keepers are keyed by host cluster index, or, when compressed, by
// their L2 descriptor (bit 62 set, which no cluster index or host offset has);
// an index entry's host offset is such a descriptor for a compressed keeper.
static_assert(kKeeperCompressed == qcow2::kOflagCompressed, "a key is the descriptor itself");
bool is_compressed_key(uint64_t key_or_offset) { return (key_or_offset & kKeeperCompressed) != 0; }

class Deduplicator {
 public:
  Deduplicator(qcow2::Image& image, hash::HashPool& pool, DedupIndex& index,
               const OfflineOptions& o)
      : image_(image),
        g_(image.geometry()),
        pool_(pool),
        index_(index),
        o_(o),
        zeros_allowed_(g_.version >= 3 || !image.header().has_backing()),
        cap_(o.refcount_cap ? std::min(o.refcount_cap, g_.refcount_max) : g_.refcount_max),
        reads_(o.max_read_rate),
        streams_(image, cap_),
        estimates_(o.estimate_granularities, g_.cluster_size, stats_.estimates) {}

  // Keepers of an interrupted run: met already.
  Status adopt_resumed_keepers() {
    std::unordered_set<uint64_t> targets;
    for (const PendingRemap& p : o_.resume_pending) {
      if (p.target_offset > kPendingKept) targets.insert(p.target_offset);
    }
    return index_.for_each_sorted([&](const uint8_t* hash, const IndexEntry& e) -> Status {
      const uint64_t c = key_of_offset(e.host_offset);
      seen_.insert(c);
      if (is_compressed_key(c)) return Status::ok();  // no owner to track
      if (targets.count(e.host_offset)) target_owner_[e.host_offset] = e.owner_guest_cluster;
      if (e.owner_guest_cluster & kOwnerNotActive) {
        std::array<uint8_t, hash::kMaxDigestSize> h{};
        std::memcpy(h.data(), hash, pool_.digest_size());
        inactive_keepers_[c] = h;
      }
      return Status::ok();
    });
  }

  // Copies the interrupted run had merged but not fully repointed: their
  // refcount (compressed: their count of references) is now the number of
  // references left, all in tables not done.
  Status adopt_pending() {
    for (const PendingRemap& p : o_.resume_pending) {
      uint64_t rc = 0;
      if (is_compressed_key(p.cluster)) {
        rc = compressed_refs(p.cluster);
      } else {
        QD_ASSIGN_OR_RETURN(rc, image_.refcount(p.cluster));
      }
      if (rc == 0) continue;
      if (p.target_offset == kPendingKept) {
        seen_.insert(p.cluster);  // a keeper the cap replaced: never merged again
        full_keepers_.insert(p.cluster);
        continue;
      }
      if (p.target_offset == 0 || p.target_offset == kPendingToBacking) {
        seen_.insert(p.cluster);
        QD_TRY(note_release(p.cluster, rc, /*carried=*/true));
        remap_[p.cluster] = {p.target_offset == 0 ? zero_entry() : L2Entry{}, rc};
        continue;
      }
      if (is_compressed_key(p.target_offset)) {
        // The interrupted run reserved the room (the cap held then, with no
        // more released than now).
        QD_TRY(reserve_stream(p.target_offset, rc, /*check=*/false).status());
        seen_.insert(p.cluster);
        QD_TRY(note_release(p.cluster, rc, /*carried=*/true));
        remap_[p.cluster] = {keeper_entry(p.target_offset), rc};
        continue;
      }
      const uint64_t keeper = p.target_offset >> g_.cluster_bits;
      uint64_t base = 0;
      if (auto it = planned_.find(keeper); it != planned_.end()) {
        base = it->second;
      } else {
        QD_ASSIGN_OR_RETURN(base, image_.refcount(keeper));
        if (base == 1) {
          // No merge into it reached the disk (the run stopped inside a table):
          // its only entry may carry COPIED again and must lose it first. Where
          // that entry is only the index knows; without it, the copy is simply
          // met and hashed again.
          auto owner = target_owner_.find(p.target_offset);
          if (owner == target_owner_.end()) continue;
          if (o_.apply) QD_TRY(clear_owner_copied(owner->second));
        }
      }
      seen_.insert(p.cluster);
      QD_TRY(note_release(p.cluster, rc, /*carried=*/true));
      planned_[keeper] = base + rc;
      remap_[p.cluster] = {merged_entry(p.target_offset), rc};
    }
    return Status::ok();
  }

  std::vector<PendingRemap> pending() const {
    std::vector<PendingRemap> out;
    out.reserve(remap_.size());
    for (const auto& [c, r] : remap_) {
      const L2Entry z = zero_entry();
      const bool is_zero = r.target.word == z.word && r.target.bitmap == z.bitmap;
      const bool unallocated = !is_zero && r.target.word == 0 && r.target.bitmap == 0;
      const uint64_t target = r.target.compressed() ? r.target.word : r.target.host_offset();
      out.push_back({c, unallocated ? kPendingToBacking : target});
    }
    for (uint64_t c : full_keepers_) out.push_back({c, kPendingKept});
    std::sort(out.begin(), out.end(),
              [](const PendingRemap& a, const PendingRemap& b) { return a.cluster < b.cluster; });
    return out;
  }

  Result<OfflineStats> run(std::vector<PendingRemap>* pending_out) {
    if (o_.apply) puncher_ = std::make_unique<io::HolePuncher>(image_.file());
    QD_TRY(count_compressed_references());
    if (index_.size() != 0) QD_TRY(adopt_resumed_keepers());
    QD_TRY(adopt_pending());
    stats_.cursor = o_.resume_cursor;
    Status st = qcow2::walk_l2_tables(
        image_, [this](const L2TableVisit& t, std::span<const L2EntryVisit> entries) {
          return visit(t, entries);
        });
    if (st || stats_.interrupted) {
      stats_.compressed_hosts_freed += streams_.freed();
      if (o_.apply) st = put_on_disk();
    }
    // Every hole asked for is punched before the caller goes on (it cuts the
    // tail next), also after an error.
    if (puncher_) {
      Status drained = puncher_->drain();
      if (st) st = std::move(drained);
    }
    QD_TRY(st);
    stats_.bytes_read = reads_.total();
    if (pending_out) *pending_out = pending();
    return stats_;
  }

 private:
  // A data cluster met for the first time, to be read and hashed.
  struct Pending {
    uint64_t cluster = 0;  // host cluster index, or compressed descriptor (a key)
    uint64_t refcount = 0;  // its references
    uint64_t owner = 0;    // see owner_of()
    // --against-backing: the guest offset of its only reference, else kNone.
    uint64_t guest_offset = kNone;
  };
  static constexpr uint64_t kNone = UINT64_MAX;
  // Where the references to a merged copy or a dropped zero cluster go.
  struct Remap {
    L2Entry target;
    uint64_t remaining = 0;  // references not repointed yet
  };

  // A data entry: a whole allocated cluster (every subcluster allocated).
  bool is_data(const L2EntryVisit& v) const {
    if (v.type != ClusterType::kNormal) return false;
    return !g_.extended_l2 || v.entry.bitmap == qcow2::kBitmapAllAllocated;
  }
  // Data to hash: a whole uncompressed cluster or a compressed one.
  bool is_content(const L2EntryVisit& v) const {
    return is_data(v) || v.type == ClusterType::kCompressed;
  }
  // The key of a content entry.
  uint64_t key_of(const L2EntryVisit& v) const {
    if (v.type == ClusterType::kCompressed) return v.entry.word & ~qcow2::kOflagCopied;
    return v.entry.host_offset() >> g_.cluster_bits;
  }
  // The key of an index entry's or a pending copy's host offset.
  uint64_t key_of_offset(uint64_t host_offset) const {
    return is_compressed_key(host_offset) ? host_offset : host_offset >> g_.cluster_bits;
  }
  uint64_t offset_of_key(uint64_t key) const {
    return is_compressed_key(key) ? key : key << g_.cluster_bits;
  }

  // The host clusters a key's bytes lie in (never empty).
  using HostRange = qcow2::HeldClusters;
  Result<HostRange> host_range(uint64_t key) const {
    if (!is_compressed_key(key)) return HostRange{key, key};
    return qcow2::held_clusters(g_, L2Entry{key, 0});
  }

  // Every compressed descriptor's number of references (one per path
  // through the tables, as QEMU counts them), before anything changes.
  Status count_compressed_references() {
    return qcow2::walk_l2_tables(
        image_, [this](const L2TableVisit& t, std::span<const L2EntryVisit> entries) {
          for (const L2EntryVisit& v : entries) {
            if (v.type == ClusterType::kCompressed) compressed_refs_[key_of(v)] += t.reference_count();
          }
          return Status::ok();
        });
  }
  uint64_t compressed_refs(uint64_t key) const {
    auto it = compressed_refs_.find(key);
    return it == compressed_refs_.end() ? 0 : it->second;
  }

  // Plans `refs` more references to the compressed keeper `key`: with
  // `check`, only if every host cluster it lies in stays within the cap. The
  // disk never holds more than the cap either: where the room comes from
  // references lost but not on disk yet, they are put on disk first.
  Result<bool> reserve_stream(uint64_t key, uint64_t refs, bool check) {
    QD_ASSIGN_OR_RETURN(HostRange r, host_range(key));
    QD_ASSIGN_OR_RETURN(StreamHosts::Room room, streams_.room(r, refs));
    if (check && !room.fits) return false;
    if (room.flush_first && o_.apply) QD_TRY(flush_releases());
    streams_.gain(r, refs);
    return true;
  }
  // Puts every pending change on disk, releases included.
  Status flush_releases() {
    QD_TRY(image_.flush());
    streams_.flushed();
    return Status::ok();
  }
  // A copy that will lose its `refs` references (this run's plan, or, carried,
  // the interrupted run's): a compressed one's host clusters lose as many.
  Status note_release(uint64_t key, uint64_t refs, bool carried) {
    if (!is_compressed_key(key)) return Status::ok();
    QD_ASSIGN_OR_RETURN(HostRange r, host_range(key));
    return streams_.plan_loss(r, refs, carried);
  }

  // The index owner of entry `i` of `t`: its guest cluster when the active L1
  // maps the table, else kOwnerNotActive with the entry's file offset.
  uint64_t owner_of(const L2TableVisit& t, const L2EntryVisit& v) const {
    if (t.referenced_by_active()) return t.references.front().first_guest_cluster(g_) + v.index;
    return kOwnerNotActive | v.file_offset;
  }

  Status visit(const L2TableVisit& t, std::span<const L2EntryVisit> entries) {
    if (o_.cancel && o_.cancel->load()) {
      stats_.interrupted = true;
      return io_error("interrupted");
    }
    if (t.offset < o_.resume_cursor) return Status::ok();  // done before the interruption
    std::vector<Pending> fresh;
    for (const L2EntryVisit& v : entries) {
      if (!is_content(v)) continue;
      const uint64_t c = key_of(v);
      if (remap_.count(c)) continue;
      if (seen_.count(c)) {
        if (t.referenced_by_active()) QD_TRY(adopt_owner(c, owner_of(t, v)));
        continue;
      }
      uint64_t rc = 0;
      if (is_compressed_key(c)) {
        rc = compressed_refs(c);
        if (rc == 0) return corruption("compressed cluster descriptor " + hex(c) + " not met by the reference count");
      } else {
        QD_ASSIGN_OR_RETURN(rc, image_.refcount(c));
      }
      if (rc > 1) seen_.insert(c);
      Pending p{c, rc, owner_of(t, v)};
      if (o_.against_backing && rc == 1 && t.reference_count() == 1) {
        p.guest_offset = t.references.front().first_guest_cluster(g_) + v.index;
        p.guest_offset <<= g_.cluster_bits;
      }
      fresh.push_back(p);
    }
    const uint64_t per_batch = std::max<uint64_t>(kBatchBytes / g_.cluster_size, 1);
    for (size_t at = 0; at < fresh.size(); at += per_batch) {
      if (at != 0 && o_.cancel && o_.cancel->load()) {
        stats_.interrupted = true;  // nothing of this table repointed yet: it is redone
        return io_error("interrupted");
      }
      QD_TRY(hash_and_plan(std::span<const Pending>(fresh).subspan(
          at, std::min<size_t>(per_batch, fresh.size() - at))));
      if (o_.progress) o_.progress(t.offset);  // a table can map much: report within it
    }
    QD_TRY(repoint(t, entries));
    stats_.cursor = t.offset + 1;
    if (o_.progress) o_.progress(t.offset);
    const uint64_t index_bytes = index_.size() * (index_.hash_size() + 16);
    const uint64_t since_checkpoint = reads_.total() - read_at_checkpoint_;
    if (o_.apply && since_checkpoint >= std::max(o_.checkpoint_bytes, 16 * index_bytes)) {
      QD_TRY(put_on_disk());
      if (o_.checkpoint) QD_TRY(o_.checkpoint(stats_.cursor, pending()));
      read_at_checkpoint_ = reads_.total();
    }
    return Status::ok();
  }

  // Reads `batch` and hashes it on the pool (each thread reading the
  // clusters it hashes, where the file allows reads from several threads),
  // then plans each cluster in order.
  Status hash_and_plan(std::span<const Pending> batch) {
    const uint64_t cs = g_.cluster_size;
    data_.resize(batch.size() * cs);
    digests_.resize(batch.size() * pool_.digest_size());
    skip_.assign(batch.size(), 0);
    FirstError error;
    const hash::HashPool::FillFn fill = [&](size_t first, size_t n) {
      read_clusters(batch, first, n, error);
    };
    const bool parallel = image_.file().concurrent_reads();
    if (!parallel) read_clusters(batch, 0, batch.size(), error);
    pool_.hash_nonzero_chunks(std::span<const uint8_t>(data_.data(), batch.size() * cs), cs,
                              digests_.data(), skip_.data(), /*detect_zero=*/zeros_allowed_,
                              parallel ? &fill : nullptr);
    QD_TRY(error.take());
    estimates_.add(o_.estimate_pool ? *o_.estimate_pool : pool_,
                   std::span<const uint8_t>(data_.data(), batch.size() * cs));
    for (size_t i = 0; i < batch.size(); ++i) {
      if (skip_[i] == kUndecodable) {
        ++stats_.undecodable_compressed;
        continue;
      }
      QD_TRY(plan(batch[i], digests_.data() + i * pool_.digest_size(),
                  skip_[i] == hash::HashPool::kZeroChunk,
                  std::span<const uint8_t>(data_.data() + i * cs, cs)));
    }
    return Status::ok();
  }

  // A skip byte: a compressed stream that does not decompress, left as it is
  // (QEMU cannot read it either).
  static constexpr uint8_t kUndecodable = 2;

  // Reads batch[first, first + n) into their slots of data_, adjacent
  // clusters in one read. Called from any of the pool's threads at once, for
  // disjoint ranges: touches only those slots, skip_ bytes and the file.
  void read_clusters(std::span<const Pending> batch, size_t first, size_t n, FirstError& error) {
    const uint64_t cs = g_.cluster_size;
    std::vector<uint8_t> stream;
    for (size_t i = first; i < first + n;) {
      if (is_compressed_key(batch[i].cluster)) {
        std::span<uint8_t> out(data_.data() + i * cs, cs);
        Status st = read_compressed(batch[i].cluster, out, stream);
        if (!st && st.code() != StatusCode::kCorruption) error.set(std::move(st));
        if (!st) {
          skip_[i] = kUndecodable;
          std::fill(out.begin(), out.end(), uint8_t{0});
        }
        ++i;
        continue;
      }
      size_t j = i + 1;
      while (j < first + n && !is_compressed_key(batch[j].cluster) &&
             batch[j].cluster == batch[j - 1].cluster + 1) {
        ++j;
      }
      Status st = image_.file().read_or_zero(
          batch[i].cluster * cs, std::span<uint8_t>(data_.data() + i * cs, (j - i) * cs));
      if (!st) error.set(std::move(st));
      reads_.take((j - i) * cs);
      i = j;
    }
  }

  // Reads and decompresses the compressed cluster `key` into `out` (one
  // cluster), through `stream`. Corruption if the stream does not decompress.
  Status read_compressed(uint64_t key, std::span<uint8_t> out, std::vector<uint8_t>& stream) {
    QD_TRY(host_range(key).status());  // the descriptor's bytes lie in a file
    const qcow2::CompressedRange r = qcow2::compressed_range(g_, L2Entry{key, 0});
    stream.resize(r.length);
    QD_TRY(image_.file().read_or_zero(r.offset, stream));
    reads_.take(r.length);
    return qcow2::decompress_cluster(image_.header().compression_type, stream, out);
  }

  // Whether the backing chain holds `data` at `guest_offset` (zeros past its end).
  Result<bool> backing_holds(uint64_t guest_offset, std::span<const uint8_t> data) {
    qcow2::BlockDevice* b = image_.backing();
    if (b == nullptr || guest_offset >= image_.virtual_size()) return false;
    backing_buf_.assign(data.size(), 0);
    if (guest_offset < b->virtual_size()) {
      const uint64_t n = std::min<uint64_t>(data.size(), b->virtual_size() - guest_offset);
      QD_TRY(b->read(guest_offset, std::span<uint8_t>(backing_buf_.data(), n)));
      reads_.take(n);
    }
    // The guest sees the image's size: bytes past it do not count.
    const uint64_t visible = std::min<uint64_t>(data.size(), image_.virtual_size() - guest_offset);
    return std::memcmp(backing_buf_.data(), data.data(), visible) == 0;
  }

  Status plan(const Pending& p, const uint8_t* digest, bool zero, std::span<const uint8_t> data) {
    ++stats_.data_clusters;
    if (is_compressed_key(p.cluster)) ++stats_.compressed_clusters;
    if (zero && zeros_allowed_) {
      QD_TRY(drop(p, zero_entry()));
      ++stats_.zero_clusters;
      return Status::ok();
    }
    if (p.guest_offset != kNone) {
      QD_ASSIGN_OR_RETURN(bool same, backing_holds(p.guest_offset, data));
      if (same) {
        QD_TRY(drop(p, L2Entry{}));  // unallocated: read from the backing chain
        ++stats_.backing_clusters;
        return Status::ok();
      }
    }
    QD_ASSIGN_OR_RETURN(std::optional<IndexEntry> hit, index_.find(digest));
    if (!hit) return add_keeper(digest, p);
    const uint64_t keeper = key_of_offset(hit->host_offset);
    if (keeper == p.cluster) return Status::ok();  // a keeper of the interrupted run
    if (o_.verify) {
      verify_.resize(g_.cluster_size);
      if (is_compressed_key(keeper)) {
        QD_TRY(read_compressed(keeper, verify_, compressed_buf_));
      } else {
        QD_TRY(image_.file().read_exact(hit->host_offset, verify_, "deduplicated cluster"));
        reads_.take(g_.cluster_size);
      }
      if (std::memcmp(verify_.data(), data.data(), data.size()) != 0) {
        ++stats_.verify_mismatches;  // kept as it is, outside the index
        return Status::ok();
      }
    }
    QD_ASSIGN_OR_RETURN(bool room, reserve(keeper, p.refcount, hit->owner_guest_cluster));
    if (!room) {
      ++stats_.cap_overflows;  // the copy keeps this content from now on
      inactive_keepers_.erase(keeper);  // the full keeper is not an index entry again
      full_keepers_.insert(keeper);     // a resumed run must not merge it either
      return add_keeper(digest, p);
    }
    QD_TRY(drop(p, keeper_entry(hit->host_offset)));
    ++stats_.duplicate_clusters;
    return Status::ok();
  }

  // Plans `refs` more references to `keeper` if every host cluster it lies
  // in stays within the cap; an uncompressed keeper about to leave refcount 1
  // first loses COPIED on its only entry (found through `owner`).
  Result<bool> reserve(uint64_t keeper, uint64_t refs, uint64_t owner) {
    if (is_compressed_key(keeper)) return reserve_stream(keeper, refs, /*check=*/true);
    auto planned = planned_.find(keeper);
    uint64_t base = 0;
    if (planned != planned_.end()) {
      base = planned->second;
    } else {
      QD_ASSIGN_OR_RETURN(base, image_.refcount(keeper));
    }
    if (base + refs > cap_) return false;
    if (base == 1 && o_.apply) QD_TRY(clear_owner_copied(owner));
    planned_[keeper] = base + refs;
    return true;
  }

  // The copy `p`'s references are to be repointed to `target`.
  Status drop(const Pending& p, const L2Entry& target) {
    remap_[p.cluster] = {target, p.refcount};
    if (!is_compressed_key(p.cluster)) return Status::ok();
    ++stats_.compressed_copies;
    return note_release(p.cluster, p.refcount, /*carried=*/false);
  }

  Status add_keeper(const uint8_t* digest, const Pending& p) {
    QD_TRY(index_.insert(digest, offset_of_key(p.cluster), p.owner));
    if (is_compressed_key(p.cluster)) return Status::ok();  // no COPIED, no on-disk entry
    if (p.owner & kOwnerNotActive) {
      std::array<uint8_t, hash::kMaxDigestSize> h{};
      std::memcpy(h.data(), digest, pool_.digest_size());
      inactive_keepers_[p.cluster] = h;
    }
    return Status::ok();
  }

  // A keeper first met in a table only snapshots map gets an active owner
  // when an active entry maps it.
  Status adopt_owner(uint64_t keeper, uint64_t owner) {
    auto it = inactive_keepers_.find(keeper);
    if (it == inactive_keepers_.end()) return Status::ok();
    QD_TRY(index_.insert(it->second.data(), keeper << g_.cluster_bits, owner));
    inactive_keepers_.erase(it);
    return Status::ok();
  }

  // The keeper's only entry loses COPIED before the keeper gains references.
  Status clear_owner_copied(uint64_t owner) {
    if (owner & kOwnerNotActive) {
      const uint64_t off = owner & ~kOwnerNotActive;
      const uint64_t table = off & ~(g_.cluster_size - 1);
      return image_.clear_copied(table, (off - table) / g_.l2_entry_bytes);
    }
    const uint64_t l1i = g_.l1_index(owner);
    if (l1i >= image_.l1_table().size()) return corruption("index owner beyond the L1 table");
    const uint64_t table = image_.l1_table()[l1i] & qcow2::kL1eOffsetMask;
    return image_.clear_copied(table, g_.l2_index(owner));
  }

  // Rewrites the entries of `t` that map a merged copy or a dropped cluster.
  Status repoint(const L2TableVisit& t, std::span<const L2EntryVisit> entries) {
    const uint64_t refs = t.reference_count();
    for (const L2EntryVisit& v : entries) {
      L2Entry target;
      if (is_content(v)) {
        const uint64_t c = key_of(v);
        auto it = remap_.find(c);
        if (it == remap_.end()) continue;
        target = it->second.target;
        it->second.remaining -= std::min(it->second.remaining, refs);
        QD_ASSIGN_OR_RETURN(HostRange held, host_range(c));
        if (is_compressed_key(c)) streams_.lose(held, refs, /*unflushed=*/o_.apply);
        if (it->second.remaining == 0) {
          for (uint64_t hc = held.first; hc <= held.last; ++hc) released_.push_back(hc);
          remap_.erase(it);
        }
        if (!target.compressed() && target.host_offset() != 0 && t.referenced_by_active()) {
          QD_TRY(adopt_owner(target.host_offset() >> g_.cluster_bits, owner_of(t, v)));
        }
      } else if (v.type == ClusterType::kZeroAlloc) {
        const uint64_t c = v.entry.host_offset() >> g_.cluster_bits;
        QD_ASSIGN_OR_RETURN(uint64_t rc, image_.refcount(c));
        if (rc != 1 || !zeros_allowed_) continue;  // shared: left as it is
        target = zero_entry();
        ++stats_.preallocated_zero;
        released_.push_back(c);
      } else {
        continue;
      }
      ++stats_.entries_remapped;
      if (o_.apply) QD_TRY(image_.remap_entry(t.offset, v.index, target, refs));
    }
    return Status::ok();
  }

  // The entry of a merged copy: the keeper's descriptor if it is compressed.
  L2Entry keeper_entry(uint64_t keeper_offset) const {
    if (is_compressed_key(keeper_offset)) return L2Entry{keeper_offset, 0};
    return merged_entry(keeper_offset);
  }

  L2Entry merged_entry(uint64_t keeper_offset) const { return qcow2::shared_entry(g_, keeper_offset); }
  L2Entry zero_entry() const { return qcow2::zero_entry(g_); }

  // Flushes in the write path's order and has the clusters freed punched
  // (on the puncher's thread: nothing writes them again, and the caller
  // drains it before the file's tail is cut).
  Status put_on_disk() {
    QD_ASSIGN_OR_RETURN(std::vector<qcow2::Image::ClusterRun> runs,
                        image_.free_cluster_runs(std::move(released_)));
    released_.clear();
    streams_.flushed();  // the flush wrote them
    for (const qcow2::Image::ClusterRun& r : runs) {
      puncher_->punch(r.first << g_.cluster_bits, r.count << g_.cluster_bits);
      stats_.clusters_punched += r.count;
    }
    return Status::ok();
  }

  qcow2::Image& image_;
  const qcow2::Geometry& g_;
  hash::HashPool& pool_;
  DedupIndex& index_;
  const OfflineOptions& o_;
  const bool zeros_allowed_;
  const uint64_t cap_;  // no refcount goes above it
  OfflineStats stats_;
  RateLimiter reads_;  // bytes read (--max-rate)
  uint64_t read_at_checkpoint_ = 0;  // reads_.total() at the last checkpoint
  std::unique_ptr<io::HolePuncher> puncher_;  // with apply
  std::unordered_map<uint64_t, Remap> remap_;        // by host cluster
  std::unordered_set<uint64_t> seen_;                // met keepers with refcount > 1
  // Uncompressed keeper (host cluster index) -> its refcount once every merge
  // planned into it is done. Compressed keepers' host clusters: streams_.
  std::unordered_map<uint64_t, uint64_t> planned_;
  StreamHosts streams_;  // host clusters of compressed streams met
  std::set<uint64_t> full_keepers_;  // keepers (keys) the cap replaced
  std::unordered_map<uint64_t, std::array<uint8_t, hash::kMaxDigestSize>> inactive_keepers_;
  std::vector<uint64_t> released_;  // clusters whose last reference went since the last flush
  std::unordered_map<uint64_t, uint64_t> target_owner_;  // resumed: keeper offset -> index owner
  std::unordered_map<uint64_t, uint64_t> compressed_refs_;      // descriptor -> references
  std::vector<uint8_t> data_, digests_, skip_, verify_, backing_buf_, compressed_buf_;
  GranularityEstimator estimates_;  // into stats_.estimates
};

}  // namespace

Result<OfflineStats> dedup_in_place(qcow2::Image& image, hash::HashPool& pool, DedupIndex& index,
                                    const OfflineOptions& options,
                                    std::vector<PendingRemap>* pending_out) {
  Deduplicator d(image, pool, index, options);
  return d.run(pending_out);
}

}  // namespace qdedup::dedup
