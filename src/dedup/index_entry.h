// One entry of the on-disk hash index (docs/format.md, section 5): the codec
// every reader and writer of index entries uses, and the record store of the
// in-RAM index, which keeps its records in the same layout.
//
//   | Offset        | Size      | Field                                  |
//   | 0             | hash_size | hash of the cluster's contents         |
//   | hash_size     | 8         | host cluster offset (cluster aligned)  |
//   | hash_size + 8 | 8         | owner: guest cluster mapping that host |
//
// Entries are sorted by hash (bytewise) and have no padding; all integers are
// big-endian. Stored on disk: never change the layout.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "qcow2/format.h"
#include "util/endian.h"

namespace qdedup::dedup {

// Field offsets (docs/format.md, section 5). The hash's size depends on the
// algorithm (section 3: `hash_size`), so the later fields' offsets do too.
inline constexpr uint64_t kIndexEntryOffHash = 0;
inline constexpr uint64_t index_entry_off_host_offset(uint64_t hash_size) { return hash_size; }
inline constexpr uint64_t index_entry_off_owner(uint64_t hash_size) { return hash_size + 8; }
// Bytes of one entry: hash, host offset, owning guest cluster.
inline constexpr uint64_t index_entry_size(uint64_t hash_size) { return hash_size + 16; }

// An entry as stored. Decoded, `hash` points into the bytes it came from.
struct StoredIndexEntry {
  std::span<const uint8_t> hash;
  uint64_t host_offset = 0;
  uint64_t owner_guest_cluster = 0;
};

// Appends the index_entry_size(e.hash.size()) bytes of `e` to `out`.
inline void encode_index_entry(const StoredIndexEntry& e, std::vector<uint8_t>& out) {
  const size_t hs = e.hash.size();
  const size_t at = out.size();
  out.resize(at + index_entry_size(hs));
  std::memcpy(out.data() + at + kIndexEntryOffHash, e.hash.data(), hs);
  // Addressed from out.data() again rather than through a pointer taken
  // before the copy: only then does GCC 12 merge store_be64's byte stores
  // into one byte-swapped store (about 70 instructions less per entry).
  store_be64(out.data() + at + index_entry_off_host_offset(hs), e.host_offset);
  store_be64(out.data() + at + index_entry_off_owner(hs), e.owner_guest_cluster);
}

// Decodes the entry at `p`, which holds index_entry_size(hash_size) bytes.
// Every byte string of that length is an entry; whether its fields make
// sense for an image is for the reader to check (index_host_offset_ok).
inline StoredIndexEntry decode_index_entry(const uint8_t* p, size_t hash_size) {
  return StoredIndexEntry{std::span<const uint8_t>(p + kIndexEntryOffHash, hash_size),
                          load_be64(p + index_entry_off_host_offset(hash_size)),
                          load_be64(p + index_entry_off_owner(hash_size))};
}

// The host offset's form (docs/format.md, section 5): not 0, cluster aligned,
// and no bits outside a qcow2 L2 entry's offset field.
inline bool index_host_offset_ok(uint64_t host_offset, uint64_t cluster_size) {
  return host_offset != 0 && host_offset % cluster_size == 0 &&
         (host_offset & ~qcow2::kL2eOffsetMask) == 0;
}

}  // namespace qdedup::dedup
