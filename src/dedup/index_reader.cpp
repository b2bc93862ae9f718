#include "dedup/index_reader.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "hash/sha256.h"

namespace qdedup::dedup {

Status for_each_index_chunk(io::File& file, const DedupExtension& ext, const IndexChunkFn& fn) {
  const uint64_t es = index_entry_size(ext.hash_size);
  std::vector<uint8_t> buf;
  for (uint64_t first = 0; first < ext.index_entries; first += kIndexReadChunkEntries) {
    const uint64_t n = std::min(kIndexReadChunkEntries, ext.index_entries - first);
    buf.resize(n * es);
    QD_TRY(file.read_exact(ext.index_offset + first * es, buf, "dedup index"));
    QD_TRY(fn(first, buf));
  }
  return Status::ok();
}

Status read_index(io::File& file, const DedupExtension& ext, IndexVisitor& visitor) {
  const size_t hs = ext.hash_size;
  const uint64_t es = index_entry_size(hs);
  QD_ASSIGN_OR_RETURN(hash::Sha256 sum, hash::Sha256::create());
  // The last hash of the previous chunk; within a chunk, entries are
  // compared with the one before them in the buffer.
  std::vector<uint8_t> prev_chunk_last;
  auto visit_chunk = [&](uint64_t first, std::span<const uint8_t> bytes) -> Status {
    sum.update(bytes);
    const uint8_t* prev = prev_chunk_last.empty() ? nullptr : prev_chunk_last.data();
    for (uint64_t i = 0; i * es < bytes.size(); ++i) {
      const uint8_t* p = bytes.data() + i * es;
      const StoredIndexEntry e = decode_index_entry(p, hs);
      if (prev != nullptr) {
        if (int order = std::memcmp(prev, e.hash.data(), hs); order >= 0) {
          QD_TRY(visitor.misordered(first + i, e, order));
        }
      }
      QD_TRY(visitor.entry(first + i, e));
      prev = p + kIndexEntryOffHash;
    }
    prev_chunk_last.assign(prev, prev + hs);
    return Status::ok();
  };
  QD_TRY(for_each_index_chunk(file, ext, visit_chunk));
  if (sum.final() != ext.index_checksum) return visitor.checksum_mismatch();
  return Status::ok();
}

}  // namespace qdedup::dedup
