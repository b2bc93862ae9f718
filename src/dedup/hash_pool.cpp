#include "dedup/hash_pool.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <system_error>

namespace qdedup::dedup {

namespace {

// Below this many bytes per thread a batch is hashed by the caller alone:
// waking a worker costs tens of microseconds, about what hashing 64 KiB with
// SHA-256 takes.
constexpr size_t kMinBytesPerPart = 128 * 1024;

bool all_zero(const uint8_t* p, size_t n) {
  // memcmp against itself shifted by one byte: libc's vectorized compare.
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

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
  for (unsigned part = 1; part < threads; ++part) {
    try {
      workers_.emplace_back(
          [this, part, hasher = hashers_[part].get()] { worker_main(part, *hasher); });
    } catch (const std::system_error&) {
      // Out of threads: work with the ones already running.
      hashers_.resize(part);
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
                                   uint8_t* digests_out, uint8_t* skip, bool detect_zero) {
  Batch batch;
  batch.data = data.data();
  batch.size = data.size();
  batch.chunk_size = chunk_size;
  batch.out = digests_out;
  batch.skip = skip;
  batch.detect_zero = detect_zero;
  run(batch);
}

void HashPool::run(Batch batch) {
  assert(batch.chunk_size > 0);
  if (batch.size == 0) return;
  std::lock_guard<std::mutex> call_lock(call_mu_);

  batch.chunks = (batch.size - 1) / batch.chunk_size + 1;
  const size_t useful_parts = std::max<size_t>(batch.size / kMinBytesPerPart, 1);
  batch.parts = static_cast<unsigned>(std::min({size_t{threads()}, batch.chunks, useful_parts}));

  if (batch.parts > 1) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch_ = batch;
      pending_ = batch.parts - 1;
      ++generation_;
    }
    work_cv_.notify_all();
  }
  hash_part(*hashers_[0], batch, 0);
  if (batch.parts > 1) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
  }
}

void HashPool::worker_main(unsigned part, Hasher& hasher) {
  uint64_t seen = 0;
  for (;;) {
    Batch batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      batch = batch_;
    }
    // A batch too small for every thread leaves the last workers idle. The
    // caller publishes the next batch only after all parts of this one are
    // done, so a worker never misses a batch it has a part in.
    if (part >= batch.parts) continue;
    hash_part(hasher, batch, part);
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

// Part p of n covers chunks [chunks * p / n, chunks * (p + 1) / n): contiguous,
// disjoint, and together all chunks. Digests go to disjoint slices of `out`.
void HashPool::hash_part(Hasher& hasher, const Batch& batch, unsigned part) const {
  const size_t begin = batch.chunks * part / batch.parts;
  const size_t end = batch.chunks * (part + 1) / batch.parts;
  for (size_t c = begin; c < end; ++c) {
    const size_t offset = c * batch.chunk_size;
    const size_t length = std::min(batch.chunk_size, batch.size - offset);
    if (batch.skip != nullptr) {
      if (batch.skip[c] != 0) continue;
      if (batch.detect_zero && all_zero(batch.data + offset, length)) {
        batch.skip[c] = kZeroChunk;
        continue;
      }
    }
    hasher.hash({batch.data + offset, length}, batch.out + c * digest_size_);
  }
}

}  // namespace qdedup::dedup
