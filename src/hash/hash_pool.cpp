#include "hash/hash_pool.h"

#include <algorithm>
#include <cassert>
#include <system_error>

#include "util/zero.h"

namespace qdedup::hash {

namespace {

// Below this many bytes per thread a batch is hashed by the caller alone:
// waking a worker costs tens of microseconds, about what hashing 64 KiB with
// SHA-256 takes.
constexpr size_t kMinBytesPerPart = 128 * 1024;
// Bytes of consecutive chunks a thread claims at a time: enough to make the
// atomic claim negligible and to give 64 KiB clusters a partner to be hashed
// with, small enough to even out a preempted thread.
constexpr size_t kGranuleBytes = 128 * 1024;

}  // namespace

HashPool::HashPool(HashAlgorithm algorithm, unsigned threads)
    : HashPool([algorithm] { return make_hasher(algorithm); }, threads) {}

HashPool::HashPool(const HasherFactory& make, unsigned threads) {
  threads = std::max(threads, 1u);
  for (unsigned i = 0; i < threads; ++i) {
    hashers_.push_back(make());
    assert(hashers_.back() != nullptr);
  }
  digest_size_ = hashers_[0]->digest_size();
  assert(std::all_of(hashers_.begin(), hashers_.end(),
                     [this](const auto& h) { return h->digest_size() == digest_size_; }));
  start_workers(threads);
}

void HashPool::start_workers(unsigned threads) {
  workers_.reserve(threads - 1);
  for (unsigned i = 1; i < threads; ++i) {
    try {
      workers_.emplace_back([this, hasher = hashers_[i].get()] { worker_main(*hasher); });
    } catch (const std::system_error&) {
      // Out of threads: work with the ones already running.
      hashers_.resize(i);
      break;
    }
  }
}

HashPool::~HashPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void HashPool::hash_chunks(std::span<const uint8_t> data, size_t chunk_size, uint8_t* digests_out) {
  Batch batch;
  batch.data = data.data();
  batch.size = data.size();
  batch.chunk_size = chunk_size;
  batch.out = digests_out;
  run(batch);
}

void HashPool::hash_nonzero_chunks(std::span<const uint8_t> data, size_t chunk_size,
                                   uint8_t* digests_out, uint8_t* skip, bool detect_zero,
                                   const FillFn* fill) {
  Batch batch;
  batch.data = data.data();
  batch.size = data.size();
  batch.chunk_size = chunk_size;
  batch.out = digests_out;
  batch.skip = skip;
  batch.detect_zero = detect_zero;
  batch.fill = fill;
  run(batch);
}

void HashPool::run(Batch batch) {
  assert(batch.chunk_size > 0);
  if (batch.size == 0) return;
  std::lock_guard<std::mutex> call_lock(call_mu_);

  batch.chunks = (batch.size - 1) / batch.chunk_size + 1;
  batch.granule = std::max<size_t>(kGranuleBytes / batch.chunk_size, 1);
  batch.granules = (batch.chunks - 1) / batch.granule + 1;
  next_granule_.store(0, std::memory_order_relaxed);
  const bool share = !workers_.empty() && batch.granules > 1 && batch.size >= 2 * kMinBytesPerPart;
  if (share) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch_ = batch;
      open_ = true;
      ++generation_;
    }
    work_cv_.notify_all();
  }
  hash_granules(*hashers_[0], batch);
  if (share) {
    // Every granule is claimed: late workers stay out, and the ones that
    // joined finish the granules they hold.
    std::unique_lock<std::mutex> lock(mu_);
    open_ = false;
    done_cv_.wait(lock, [this] { return active_ == 0; });
  }
}

void HashPool::worker_main(Hasher& hasher) {
  uint64_t seen = 0;
  for (;;) {
    Batch batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (!open_) continue;  // woke after the batch was done
      batch = batch_;
      ++active_;
    }
    hash_granules(hasher, batch);
    std::lock_guard<std::mutex> lock(mu_);
    if (--active_ == 0) done_cv_.notify_one();
  }
}

// Granule g covers chunks [g * granule, min((g + 1) * granule, chunks)):
// disjoint, together all chunks, each claimed by exactly one thread. Digests
// and skip bytes go to the claimed chunks' own slots. The chunks to hash are
// handed to the Hasher in pairs, which SHA-256 hashes faster together.
void HashPool::hash_granules(Hasher& hasher, const Batch& batch) {
  const auto chunk = [&](size_t c) {
    const size_t offset = c * batch.chunk_size;
    return std::span<const uint8_t>(batch.data + offset,
                                    std::min(batch.chunk_size, batch.size - offset));
  };
  for (;;) {
    const size_t g = next_granule_.fetch_add(1, std::memory_order_relaxed);
    if (g >= batch.granules) return;
    const size_t end = std::min(batch.chunks, (g + 1) * batch.granule);
    if (batch.fill != nullptr) (*batch.fill)(g * batch.granule, end - g * batch.granule);
    size_t pending = end;  // a chunk waiting for a partner, or end for none
    for (size_t c = g * batch.granule; c < end; ++c) {
      if (batch.skip != nullptr) {
        if (batch.skip[c] != 0) continue;
        if (batch.detect_zero && is_zero(chunk(c))) {
          batch.skip[c] = kZeroChunk;
          continue;
        }
      }
      if (pending == end) {
        pending = c;
        continue;
      }
      hasher.hash2(chunk(pending), chunk(c), batch.out + pending * digest_size_,
                   batch.out + c * digest_size_);
      pending = end;
    }
    if (pending != end) hasher.hash(chunk(pending), batch.out + pending * digest_size_);
  }
}

}  // namespace qdedup::hash
