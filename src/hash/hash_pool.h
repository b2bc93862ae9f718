// Parallel cluster hashing: one batch of consecutive chunks hashed on all
// cores, digests written in chunk order. Used by convert, dedup-offline and
// check --verify-hashes.
//
// The pool owns persistent worker threads, each with its own Hasher; the
// calling thread hashes a share of every batch too. A batch is cut into
// granules of about 128 KiB of consecutive chunks, which the threads claim one
// at a time from an atomic counter: no lock per chunk, and a thread that the
// OS preempts (convert's writer shares the cores) leaves its share to the
// others instead of holding up the batch. Locks are taken only to start and
// to finish a batch; a worker that wakes after the batch ran out of granules
// does not join it, so the caller never waits for a thread that has no work.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "hash/hash.h"

namespace qdedup::hash {

// The thread count of an option where 0 means one thread per core (at least
// 1 where the core count is unknown).
inline unsigned threads_or_all_cores(unsigned requested) {
  return requested ? requested : std::max(1u, std::thread::hardware_concurrency());
}

class HashPool {
 public:
  // Makes one Hasher per thread; every one must have the same digest_size().
  using HasherFactory = std::function<std::unique_ptr<Hasher>()>;

  // `threads` counts every thread that hashes, the caller included, so 1
  // means no worker threads; 0 is taken as 1. Precondition: `algorithm` is
  // one of HashAlgorithm's enumerators (from parse_hash_name or hash_from_id).
  explicit HashPool(HashAlgorithm algorithm,
                    unsigned threads = std::thread::hardware_concurrency());
  // The same with any Hasher, e.g. a test hasher that maps all data to one
  // digest to inject collisions.
  HashPool(const HasherFactory& make, unsigned threads);
  // Stops and joins the workers.
  ~HashPool();
  HashPool(const HashPool&) = delete;
  HashPool& operator=(const HashPool&) = delete;

  size_t digest_size() const { return digest_size_; }
  unsigned threads() const { return static_cast<unsigned>(hashers_.size()); }

  // Hashes data[0, chunk_size), data[chunk_size, 2 * chunk_size), ...; the
  // last chunk is shorter when data.size() is not a multiple of chunk_size.
  // Writes digest_size() bytes per chunk to digests_out, in chunk order:
  // ceil(data.size() / chunk_size) digests, none for empty data.
  // Precondition: chunk_size > 0. Returns when every digest is written.
  // Calls from several threads are serialized.
  void hash_chunks(std::span<const uint8_t> data, size_t chunk_size, uint8_t* digests_out);

  // The same for a batch in which not every chunk is hashed, with zero
  // detection on all cores too. `skip` has one byte per chunk: a chunk whose
  // byte is non-zero on entry is not looked at (e.g. known to be a hole);
  // with `detect_zero`, a chunk whose bytes are all zero gets its byte set to
  // kZeroChunk and no digest. Every other chunk's digest goes to
  // digests_out + i * digest_size() (the slots of the others are untouched).
  static constexpr uint8_t kZeroChunk = 1;
  //
  // With `fill`, the chunks' bytes are not there yet: the thread that claims
  // a granule first calls fill(first_chunk, chunk_count) to bring in chunks
  // [first_chunk, first_chunk + chunk_count) (reading them from a file, say),
  // so that the copying is spread over the pool's threads as the hashing is.
  // It is called from any of the threads, at once for disjoint ranges, and
  // must not throw; it records its own errors (the batch's digests are then
  // of whatever it left in the buffer). `skip` bytes it sets are honoured.
  using FillFn = std::function<void(size_t first_chunk, size_t chunk_count)>;
  void hash_nonzero_chunks(std::span<const uint8_t> data, size_t chunk_size,
                           uint8_t* digests_out, uint8_t* skip, bool detect_zero,
                           const FillFn* fill = nullptr);

 private:
  struct Batch {
    const uint8_t* data = nullptr;
    size_t size = 0;
    size_t chunk_size = 0;
    uint8_t* out = nullptr;
    size_t chunks = 0;
    size_t granule = 1;    // chunks per granule
    size_t granules = 0;
    uint8_t* skip = nullptr;  // see hash_nonzero_chunks
    bool detect_zero = false;
    const FillFn* fill = nullptr;
  };

  void run(Batch batch);
  void start_workers(unsigned threads);
  void worker_main(Hasher& hasher);
  // Claims and hashes granules of `batch` until none is left.
  void hash_granules(Hasher& hasher, const Batch& batch);

  size_t digest_size_ = 0;
  std::vector<std::unique_ptr<Hasher>> hashers_;  // [0] is the caller's, [i] worker i-1's
  std::vector<std::thread> workers_;

  std::mutex call_mu_;  // one batch at a time

  std::atomic<size_t> next_granule_{0};  // of the current batch

  std::mutex mu_;  // guards the fields below
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  Batch batch_;
  uint64_t generation_ = 0;  // incremented for each batch handed to workers
  bool open_ = false;        // workers may still join the current batch
  unsigned active_ = 0;      // workers hashing the current batch
  bool stop_ = false;
};

}  // namespace qdedup::hash
