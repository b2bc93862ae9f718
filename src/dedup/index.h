// The in-memory dedup index: hash -> host cluster, at most 24 bytes of RAM
// per entry with O(1) lookups.
//
// RAM holds an open-addressing table of 8-byte fingerprints (the first 8
// bytes of the hash) and 4-byte record numbers: 12 bytes a slot, kept between
// 53% and 80% full, so 15 to 22.5 bytes per entry. The full hash, the host
// cluster and the guest cluster that owns it live in a record store on disk
// (a temporary file), read to confirm a fingerprint match.
//
// The table is 256 segments, one per first byte of the hash, each growing on
// its own: while a segment grows, its old and new slot arrays both exist, so
// growing one table of everything would briefly cost 2.5 times the slots
// (37.5 bytes an entry); a segment is 1/256 of that. Segments in order are
// also hash order, so the sorted walk sorts one segment at a time.
//
// Thread safety: none.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "io/file.h"
#include "util/status.h"

namespace qdedup::dedup {

// An owner that is not an active guest cluster (dedup-offline's keepers that
// only snapshots map): the bit is set, the rest is the L2 entry's file offset.
// Such entries are not written to the on-disk index.
inline constexpr uint64_t kOwnerNotActive = 1ull << 63;
// A host offset with bit 62 set is a compressed cluster descriptor
// (dedup-offline's compressed keepers, kept in its progress record only):
// such entries are not written to the on-disk index either.
inline constexpr uint64_t kKeeperCompressed = 1ull << 62;

struct IndexEntry {
  uint64_t host_offset = 0;          // the shared host cluster
  uint64_t owner_guest_cluster = 0;  // a guest cluster that maps to it
  uint32_t record = 0;
};

// Fixed-size records appended to a file, with a write buffer; a record is
// laid out as an on-disk index entry (dedup/index_entry.h).
class RecordStore {
 public:
  RecordStore(std::unique_ptr<io::File> file, size_t hash_size);
  size_t hash_size() const { return hash_size_; }
  uint64_t count() const { return count_; }
  Result<uint32_t> append(const uint8_t* hash, uint64_t host_offset, uint64_t owner);
  // Reads record `n` into hash_out (hash_size bytes) and the two numbers.
  Status read(uint32_t n, uint8_t* hash_out, uint64_t* host_offset, uint64_t* owner);
  // Reads every record on file into memory in one pass if they take at most
  // `max_bytes` (else does nothing), so that read() needs no I/O until
  // drop_loaded(). For visiting every record in an order of their own.
  Status load_all(size_t max_bytes);
  // Asks the CPU to bring loaded record `n` into the cache (see load_all).
  void prefetch(uint32_t n) const {
    const uint64_t at = uint64_t{n} * record_size_;
    if (at + record_size_ <= loaded_.size()) {
      __builtin_prefetch(loaded_.data() + at);
      __builtin_prefetch(loaded_.data() + at + record_size_ - 1);
    }
  }
  void drop_loaded();

 private:
  Status write_buffer();
  std::unique_ptr<io::File> file_;
  size_t hash_size_;
  size_t record_size_;
  uint64_t count_ = 0;
  uint64_t buffer_first_ = 0;  // record number of buffer_[0]
  std::vector<uint8_t> buffer_;
  std::vector<uint8_t> loaded_;  // records [0, loaded_.size() / record_size_), see load_all
};

class DedupIndex {
 public:
  DedupIndex(std::unique_ptr<io::File> record_file, size_t hash_size);

  Result<std::optional<IndexEntry>> find(const uint8_t* hash);
  // Asks the CPU to bring `hash`'s home slot into the cache, so that a find or
  // insert of it shortly after does not wait for memory. No effect otherwise.
  void prefetch(const uint8_t* hash) const;
  // Adds `hash`, or points an existing entry of the same hash elsewhere.
  Status insert(const uint8_t* hash, uint64_t host_offset, uint64_t owner_guest_cluster);
  Status remove(const uint8_t* hash);

  uint64_t size() const { return size_; }
  // Bytes of RAM the table uses (slots, not the record store).
  uint64_t memory_bytes() const { return memory_bytes_; }
  // The most memory_bytes() has been, growth included.
  uint64_t peak_memory_bytes() const { return peak_memory_bytes_; }
  size_t hash_size() const { return records_.hash_size(); }

  // What the table takes holding `per_segment[k]` entries whose hash starts
  // with byte k (256 counts), grown as inserting them one by one grows it.
  struct Footprint {
    uint64_t slots = 0;
    uint64_t bytes = 0;  // memory_bytes() once they are in
  };
  static Footprint footprint(std::span<const uint64_t> per_segment);
  static constexpr unsigned kSegments = 256;

  // Visits every entry in hash order.
  Status for_each_sorted(
      const std::function<Status(const uint8_t* hash, const IndexEntry& e)>& fn);

 private:
  static constexpr unsigned kSegmentBits = 8;
  struct Segment {
    std::vector<uint64_t> keys;  // fingerprints; 0 = empty slot
    std::vector<uint32_t> recs;
    uint64_t size = 0;
  };

  static uint64_t fingerprint(const uint8_t* hash);
  Segment& segment_of(uint64_t fp) { return segments_[fp >> (64 - kSegmentBits)]; }
  const Segment& segment_of(uint64_t fp) const { return segments_[fp >> (64 - kSegmentBits)]; }
  static uint64_t home(const Segment& s, uint64_t fp);
  // Slot of `seg` holding `hash` (then *found, and the record's numbers in
  // *entry if not null), or the empty slot where it would go.
  Result<uint64_t> locate(Segment& seg, const uint8_t* hash, bool* found,
                          IndexEntry* entry = nullptr);
  void grow(Segment& seg);
  Status visit_sorted(std::vector<std::pair<uint64_t, uint32_t>>& order,
                      const std::function<Status(const uint8_t*, const IndexEntry&)>& fn);
  void erase_slot(Segment& seg, uint64_t slot);
  static uint64_t slot_bytes(const Segment& s) {
    return s.keys.capacity() * sizeof(uint64_t) + s.recs.capacity() * sizeof(uint32_t);
  }

  RecordStore records_;
  std::vector<Segment> segments_;
  uint64_t size_ = 0;
  uint64_t memory_bytes_ = 0;
  uint64_t peak_memory_bytes_ = 0;
};

}  // namespace qdedup::dedup
