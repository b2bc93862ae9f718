#include "dedup/index.h"

#include <algorithm>
#include <cstring>

#include "dedup/index_entry.h"
#include "util/endian.h"

namespace qdedup::dedup {

namespace {
constexpr size_t kRecordBufferBytes = 1 << 20;
constexpr uint64_t kInitialSlots = 1024;
// Grow at 80% load, by 1.5x: the load then stays within [53%, 80%].
constexpr uint64_t kMaxLoadPercent = 80;
// for_each_sorted reads the record file whole when it is at most this large.
constexpr size_t kLoadAllBytes = 64u << 20;
}  // namespace

RecordStore::RecordStore(std::unique_ptr<io::File> file, size_t hash_size)
    : file_(std::move(file)), hash_size_(hash_size), record_size_(index_entry_size(hash_size)) {
  buffer_.reserve(kRecordBufferBytes);
}

Status RecordStore::write_buffer() {
  if (buffer_.empty()) return Status::ok();
  QD_TRY(file_->pwrite(buffer_first_ * record_size_, buffer_));
  buffer_first_ += buffer_.size() / record_size_;
  buffer_.clear();
  return Status::ok();
}

Result<uint32_t> RecordStore::append(const uint8_t* hash, uint64_t host_offset, uint64_t owner) {
  if (count_ >= UINT32_MAX) return no_space("dedup index: too many records");
  if (buffer_.size() + record_size_ > kRecordBufferBytes) QD_TRY(write_buffer());
  encode_index_entry({{hash, hash_size_}, host_offset, owner}, buffer_);
  return static_cast<uint32_t>(count_++);
}

Status RecordStore::read(uint32_t n, uint8_t* hash_out, uint64_t* host_offset, uint64_t* owner) {
  uint8_t tmp[64];
  const uint8_t* p;
  if (uint64_t{n} * record_size_ < loaded_.size()) {
    p = loaded_.data() + uint64_t{n} * record_size_;
  } else if (n >= buffer_first_) {
    p = buffer_.data() + (n - buffer_first_) * record_size_;
  } else {
    QD_TRY(file_->read_exact(uint64_t{n} * record_size_,
                             std::span<uint8_t>(tmp, record_size_), "dedup record"));
    p = tmp;
  }
  const StoredIndexEntry e = decode_index_entry(p, hash_size_);
  std::memcpy(hash_out, e.hash.data(), hash_size_);
  *host_offset = e.host_offset;
  *owner = e.owner_guest_cluster;
  return Status::ok();
}

Status RecordStore::load_all(size_t max_bytes) {
  const uint64_t bytes = buffer_first_ * record_size_;  // the records on file
  if (bytes > max_bytes || bytes <= loaded_.size()) return Status::ok();
  std::vector<uint8_t> all(static_cast<size_t>(bytes));
  QD_TRY(file_->read_exact(0, all, "dedup records"));
  loaded_ = std::move(all);
  return Status::ok();
}

void RecordStore::drop_loaded() { std::vector<uint8_t>().swap(loaded_); }

DedupIndex::DedupIndex(std::unique_ptr<io::File> record_file, size_t hash_size)
    : records_(std::move(record_file), hash_size), segments_(size_t{1} << kSegmentBits) {
  for (Segment& seg : segments_) {
    seg.keys.assign(kInitialSlots >> kSegmentBits, 0);
    seg.recs.assign(kInitialSlots >> kSegmentBits, 0);
    memory_bytes_ += slot_bytes(seg);
  }
  peak_memory_bytes_ = memory_bytes_;
}

uint64_t DedupIndex::fingerprint(const uint8_t* hash) {
  uint64_t fp = load_be64(hash);
  return fp == 0 ? 1 : fp;
}

uint64_t DedupIndex::home(const Segment& s, uint64_t fp) {
  // Maps the fingerprint bits below the segment's onto [0, slots) without a
  // power-of-two size.
  __extension__ using U128 = unsigned __int128;
  return static_cast<uint64_t>((static_cast<U128>(fp << kSegmentBits) * s.keys.size()) >> 64);
}

Result<uint64_t> DedupIndex::locate(Segment& seg, const uint8_t* hash, bool* found,
                                    IndexEntry* entry) {
  const uint64_t fp = fingerprint(hash);
  const uint64_t n = seg.keys.size();
  uint8_t stored[64];
  for (uint64_t slot = home(seg, fp);; slot = slot + 1 == n ? 0 : slot + 1) {
    if (seg.keys[slot] == 0) {
      *found = false;
      return slot;
    }
    if (seg.keys[slot] != fp) continue;
    uint64_t host = 0, owner = 0;
    QD_TRY(records_.read(seg.recs[slot], stored, &host, &owner));
    if (std::memcmp(stored, hash, records_.hash_size()) == 0) {
      *found = true;
      if (entry != nullptr) *entry = IndexEntry{host, owner, seg.recs[slot]};
      return slot;
    }
  }
}

void DedupIndex::prefetch(const uint8_t* hash) const {
  const uint64_t fp = fingerprint(hash);
  const Segment& seg = segment_of(fp);
  if (seg.keys.empty()) return;
  const uint64_t slot = home(seg, fp);
  __builtin_prefetch(&seg.keys[slot]);
  __builtin_prefetch(&seg.recs[slot]);
}

Result<std::optional<IndexEntry>> DedupIndex::find(const uint8_t* hash) {
  bool found = false;
  IndexEntry e;
  QD_ASSIGN_OR_RETURN(uint64_t slot, locate(segment_of(fingerprint(hash)), hash, &found, &e));
  (void)slot;
  if (!found) return std::optional<IndexEntry>();
  return std::optional<IndexEntry>(e);
}

Status DedupIndex::insert(const uint8_t* hash, uint64_t host_offset, uint64_t owner) {
  Segment& seg = segment_of(fingerprint(hash));
  if ((seg.size + 1) * 100 > seg.keys.size() * kMaxLoadPercent) grow(seg);
  bool found = false;
  QD_ASSIGN_OR_RETURN(uint64_t slot, locate(seg, hash, &found));
  QD_ASSIGN_OR_RETURN(uint32_t rec, records_.append(hash, host_offset, owner));
  if (!found) {
    seg.keys[slot] = fingerprint(hash);
    ++seg.size;
    ++size_;
  }
  seg.recs[slot] = rec;
  return Status::ok();
}

Status DedupIndex::remove(const uint8_t* hash) {
  Segment& seg = segment_of(fingerprint(hash));
  bool found = false;
  QD_ASSIGN_OR_RETURN(uint64_t slot, locate(seg, hash, &found));
  if (found) erase_slot(seg, slot);
  return Status::ok();
}

// Backward-shift deletion keeps linear probing free of tombstones.
void DedupIndex::erase_slot(Segment& seg, uint64_t slot) {
  const uint64_t n = seg.keys.size();
  uint64_t hole = slot;
  for (uint64_t next = hole + 1 == n ? 0 : hole + 1; seg.keys[next] != 0;
       next = next + 1 == n ? 0 : next + 1) {
    uint64_t h = home(seg, seg.keys[next]);
    // Move `next` into the hole unless its home lies cyclically in (hole, next].
    bool stays = hole <= next ? (hole < h && h <= next) : (hole < h || h <= next);
    if (stays) continue;
    seg.keys[hole] = seg.keys[next];
    seg.recs[hole] = seg.recs[next];
    hole = next;
  }
  seg.keys[hole] = 0;
  --seg.size;
  --size_;
}

DedupIndex::Footprint DedupIndex::footprint(std::span<const uint64_t> per_segment) {
  static_assert(kSegments == 1u << kSegmentBits);
  Footprint f;
  for (uint64_t entries : per_segment) {
    // insert() grows before an entry would take the segment past 80%; grow()
    // adds half the slots (at least one); the sizes only increase, so the
    // first that holds every entry is where the inserts end.
    uint64_t slots = kInitialSlots >> kSegmentBits;
    while (entries * 100 > slots * kMaxLoadPercent) slots += std::max<uint64_t>(slots / 2, 1);
    f.slots += slots;
  }
  f.bytes = f.slots * (sizeof(uint64_t) + sizeof(uint32_t));
  return f;
}

void DedupIndex::grow(Segment& seg) {
  Segment old = std::move(seg);
  const uint64_t n = old.keys.size() + std::max<uint64_t>(old.keys.size() / 2, 1);
  seg.keys.assign(n, 0);
  seg.recs.assign(n, 0);
  seg.size = old.size;
  // Both arrays exist until `old` goes out of scope.
  peak_memory_bytes_ = std::max(peak_memory_bytes_, memory_bytes_ + slot_bytes(seg));
  memory_bytes_ += slot_bytes(seg) - slot_bytes(old);
  for (uint64_t i = 0; i < old.keys.size(); ++i) {
    if (old.keys[i] == 0) continue;
    uint64_t slot = home(seg, old.keys[i]);
    while (seg.keys[slot] != 0) slot = slot + 1 == n ? 0 : slot + 1;
    seg.keys[slot] = old.keys[i];
    seg.recs[slot] = old.recs[i];
  }
}

Status DedupIndex::for_each_sorted(
    const std::function<Status(const uint8_t* hash, const IndexEntry& e)>& fn) {
  // Records are visited in hash order, not file order: one sequential read of
  // them all beats a read per record, within a fixed memory budget.
  QD_TRY(records_.load_all(kLoadAllBytes));
  struct Drop {
    RecordStore& r;
    ~Drop() { r.drop_loaded(); }
  } drop{records_};
  // Segment k holds the hashes whose first byte is k: in order, segment by segment.
  std::vector<std::pair<uint64_t, uint32_t>> order;
  for (const Segment& seg : segments_) {
    order.clear();
    order.reserve(seg.size);
    for (uint64_t i = 0; i < seg.keys.size(); ++i) {
      if (seg.keys[i] != 0) order.emplace_back(seg.keys[i], seg.recs[i]);
    }
    QD_TRY(visit_sorted(order, fn));
  }
  return Status::ok();
}

// Sorts one segment's (fingerprint, record) pairs into hash order and visits them.
Status DedupIndex::visit_sorted(std::vector<std::pair<uint64_t, uint32_t>>& order,
                                const std::function<Status(const uint8_t*, const IndexEntry&)>& fn) {
  std::sort(order.begin(), order.end());
  // Equal fingerprints (rare) are ordered by their full hashes.
  const size_t hs = records_.hash_size();
  std::vector<uint8_t> a(hs);
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    size_t j = i;
    while (j + 1 < order.size() && order[j + 1].first == order[i].first) ++j;
    if (j == i) continue;
    // Full hashes of the group side by side, sorted through an index.
    const size_t count = j - i + 1;
    std::vector<uint8_t> hashes(count * hs);
    std::vector<size_t> idx(count);
    for (size_t k = 0; k < count; ++k) {
      uint64_t h, o;
      QD_TRY(records_.read(order[i + k].second, hashes.data() + k * hs, &h, &o));
      idx[k] = k;
    }
    std::sort(idx.begin(), idx.end(), [&](size_t x, size_t y) {
      return std::memcmp(hashes.data() + x * hs, hashes.data() + y * hs, hs) < 0;
    });
    std::vector<uint32_t> recs(count);
    for (size_t k = 0; k < count; ++k) recs[k] = order[i + idx[k]].second;
    for (size_t k = 0; k < count; ++k) order[i + k].second = recs[k];
    i = j;
  }
  // Records are read in hash order, at random places: fetch a few ahead.
  constexpr size_t kPrefetchAhead = 8;
  for (size_t k = 0; k < order.size(); ++k) {
    if (k + kPrefetchAhead < order.size()) records_.prefetch(order[k + kPrefetchAhead].second);
    const uint32_t rec = order[k].second;
    IndexEntry e;
    e.record = rec;
    QD_TRY(records_.read(rec, a.data(), &e.host_offset, &e.owner_guest_cluster));
    QD_TRY(fn(a.data(), e));
  }
  return Status::ok();
}

}  // namespace qdedup::dedup
