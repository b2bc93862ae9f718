// HashPool: parallel hashing gives exactly the digests of hashing each chunk
// in turn on one thread, for every algorithm, thread count and chunk size.
#include "hash/hash_pool.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace qdedup::hash {
namespace {

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t r = rng();
    std::memcpy(v.data() + i, &r, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<uint8_t>(rng());
  return v;
}

size_t chunk_count(size_t size, size_t chunk_size) {
  return size == 0 ? 0 : (size - 1) / chunk_size + 1;
}

// The reference: one Hasher, one chunk after another.
std::vector<uint8_t> sequential_digests(HashAlgorithm algorithm, std::span<const uint8_t> data,
                                        size_t chunk_size) {
  auto hasher = make_hasher(algorithm);
  const size_t d = hasher->digest_size();
  std::vector<uint8_t> out(chunk_count(data.size(), chunk_size) * d);
  for (size_t c = 0; c * chunk_size < data.size(); ++c) {
    hasher->hash(data.subspan(c * chunk_size, std::min(chunk_size, data.size() - c * chunk_size)),
                 out.data() + c * d);
  }
  return out;
}

std::vector<uint8_t> pool_digests(HashPool& pool, std::span<const uint8_t> data,
                                  size_t chunk_size) {
  std::vector<uint8_t> out(chunk_count(data.size(), chunk_size) * pool.digest_size());
  pool.hash_chunks(data, chunk_size, out.data());
  return out;
}

// "" when the two digest lists are equal, else where they first differ. Keeps
// a failing CHECK from printing megabytes of digests.
std::string first_difference(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                             size_t digest_size) {
  if (got.size() != want.size()) {
    return "sizes " + std::to_string(got.size()) + " and " + std::to_string(want.size());
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) return "digest " + std::to_string(i / digest_size) + " differs";
  }
  return "";
}

// Records which threads called it; returns the chunk's length as its digest.
class RecordingHasher : public Hasher {
 public:
  size_t digest_size() const override { return 8; }
  void hash(std::span<const uint8_t> data, uint8_t* out) override {
    callers.insert(std::this_thread::get_id());
    const uint64_t n = data.size();
    std::memcpy(out, &n, 8);
  }
  std::set<std::thread::id> callers;
};

}  // namespace

TEST_CASE("HashPool agrees with sequential hashing of a 64 MiB buffer with an uneven tail",
          "[dedup][hash_pool]") {
  // The "buffer hashed in one piece and in pieces agrees", at a size
  // that keeps the test fast: the pool's pieces against one thread's.
  const std::vector<uint8_t> data = random_bytes((size_t{64} << 20) + 4097, 1);
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    for (size_t chunk_size : {size_t{4096}, size_t{65536}, size_t{2} << 20}) {
      const auto expected = sequential_digests(algorithm, data, chunk_size);
      for (unsigned threads : {std::max(2u, std::thread::hardware_concurrency()), 3u}) {
        INFO(hash_name(algorithm) << ", chunk " << chunk_size << ", " << threads << " threads");
        HashPool pool(algorithm, threads);
        CHECK(first_difference(pool_digests(pool, data, chunk_size), expected,
                               pool.digest_size()) == "");
      }
    }
  }
}

TEST_CASE("HashPool agrees with sequential hashing for odd sizes, chunks and thread counts",
          "[dedup][hash_pool]") {
  const std::vector<uint8_t> big = random_bytes((size_t{3} << 20) + 1234, 2);
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    for (unsigned threads : {1u, 2u, 3u, 5u}) {
      HashPool pool(algorithm, threads);
      REQUIRE(pool.threads() == threads);
      REQUIRE(pool.digest_size() == digest_size(algorithm));
      for (size_t size : {size_t{1}, size_t{4095}, size_t{4096}, size_t{300000}, big.size()}) {
        const std::span<const uint8_t> data(big.data(), size);
        for (size_t chunk_size :
             {size_t{1}, size_t{7}, size_t{4096}, size_t{65539}, size_t{2} << 20, size, size + 1}) {
          if (chunk_size < 64 && size > 300000) continue;  // millions of digests: slow
          INFO(hash_name(algorithm)
               << ", " << threads << " threads, " << size << " bytes in chunks of " << chunk_size);
          CHECK(first_difference(pool_digests(pool, data, chunk_size),
                                 sequential_digests(algorithm, data, chunk_size),
                                 pool.digest_size()) == "");
        }
      }
    }
  }
}

TEST_CASE("HashPool reuses its threads across many batches", "[dedup][hash_pool]") {
  HashPool pool(HashAlgorithm::kXxh3, 4);
  for (size_t batch = 0; batch < 300; ++batch) {
    // Sizes from 1 byte to 2 MiB, so some batches use every thread and some
    // only the caller.
    const size_t size = 1 + (batch * 7919 * 97) % (size_t{2} << 20);
    const std::vector<uint8_t> data = random_bytes(size, 100 + batch);
    INFO("batch " << batch << " of " << size << " bytes");
    REQUIRE(first_difference(pool_digests(pool, data, 4096),
                             sequential_digests(HashAlgorithm::kXxh3, data, 4096), 16) == "");
  }
}

TEST_CASE("HashPool writes nothing for empty data", "[dedup][hash_pool]") {
  HashPool pool(HashAlgorithm::kSha256, 2);
  uint8_t out[32];
  std::memset(out, 0xAB, sizeof out);
  pool.hash_chunks({}, 4096, out);
  for (uint8_t b : out) CHECK(b == 0xAB);
}

// Workers claim granules as they come: how many join a batch depends on the
// scheduler (on a busy machine the caller may hash everything), so only the
// ownership of the Hashers and the order of the digests are fixed.
TEST_CASE("HashPool hashes on the caller and on workers, one Hasher per thread",
          "[dedup][hash_pool]") {
  std::vector<RecordingHasher*> hashers;
  HashPool pool(
      [&hashers] {
        auto h = std::make_unique<RecordingHasher>();
        hashers.push_back(h.get());
        return h;
      },
      4);
  REQUIRE(hashers.size() == 4);
  REQUIRE(pool.digest_size() == 8);

  const std::vector<uint8_t> data((size_t{8} << 20) + 100);
  std::vector<uint8_t> out(chunk_count(data.size(), 4096) * 8);
  pool.hash_chunks(data, 4096, out.data());

  // Each Hasher is used by at most one thread, the first (if at all: the
  // workers may claim every granule first) by the caller, and no two by the
  // same thread.
  std::set<std::thread::id> all;
  size_t used = 0;
  for (RecordingHasher* h : hashers) {
    REQUIRE(h->callers.size() <= 1);
    if (h->callers.empty()) continue;
    ++used;
    all.insert(*h->callers.begin());
  }
  CHECK(all.size() == used);
  CHECK(used >= 1);
  for (size_t i = 0; i < hashers.size(); ++i) {
    if (hashers[i]->callers.empty()) continue;
    INFO("hasher " << i);
    CHECK((*hashers[i]->callers.begin() == std::this_thread::get_id()) == (i == 0));
  }

  // Digests are in chunk order: every chunk is 4096 bytes but the last.
  for (size_t c = 0; c < out.size() / 8; ++c) {
    uint64_t n;
    std::memcpy(&n, out.data() + 8 * c, 8);
    CHECK(n == (c + 1 < out.size() / 8 ? 4096 : 100));
  }
}

TEST_CASE("HashPool serializes batches from concurrent callers", "[dedup][hash_pool]") {
  HashPool pool(HashAlgorithm::kBlake2b, 3);
  const std::vector<uint8_t> a = random_bytes(size_t{3} << 20, 5);
  const std::vector<uint8_t> b = random_bytes((size_t{2} << 20) + 11, 6);
  const auto expected_a = sequential_digests(HashAlgorithm::kBlake2b, a, 65536);
  const auto expected_b = sequential_digests(HashAlgorithm::kBlake2b, b, 4096);
  bool other_ok = true;
  std::thread other([&] {
    for (int i = 0; i < 20; ++i) other_ok = other_ok && pool_digests(pool, b, 4096) == expected_b;
  });
  for (int i = 0; i < 20; ++i)
    CHECK(first_difference(pool_digests(pool, a, 65536), expected_a, 32) == "");
  other.join();
  CHECK(other_ok);
}

TEST_CASE("HashPool skips, detects zeros and pairs the remaining chunks correctly",
          "[dedup][hash_pool]") {
  // Chunks hashed two at a time must get their own digests whatever lies
  // between them: skipped chunks, zero chunks, a short last chunk.
  const size_t chunk_size = 4096;
  std::vector<uint8_t> data = random_bytes(300 * chunk_size + 100, 10);
  std::mt19937_64 rng(11);
  const size_t chunks = chunk_count(data.size(), chunk_size);
  std::vector<uint8_t> skip_in(chunks, 0);
  for (size_t c = 0; c < chunks; ++c) {
    switch (rng() % 4) {
      case 0: skip_in[c] = 2; break;  // known hole: not looked at
      case 1: std::memset(data.data() + c * chunk_size, 0,
                          std::min(chunk_size, data.size() - c * chunk_size)); break;
      default: break;
    }
  }
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    for (unsigned threads : {1u, 2u, 3u}) {
      INFO(hash_name(algorithm) << ", " << threads << " threads");
      HashPool pool(algorithm, threads);
      const size_t d = pool.digest_size();
      const auto expected = sequential_digests(algorithm, data, chunk_size);
      std::vector<uint8_t> skip = skip_in;
      std::vector<uint8_t> out(chunks * d, 0xee);
      pool.hash_nonzero_chunks(data, chunk_size, out.data(), skip.data(), true);
      size_t hashed = 0;
      for (size_t c = 0; c < chunks; ++c) {
        const std::span<const uint8_t> chunk(data.data() + c * chunk_size,
                                             std::min(chunk_size, data.size() - c * chunk_size));
        const bool zero = std::all_of(chunk.begin(), chunk.end(), [](uint8_t b) { return b == 0; });
        const std::vector<uint8_t> got(out.begin() + c * d, out.begin() + (c + 1) * d);
        if (skip_in[c] != 0) {
          CHECK(skip[c] == skip_in[c]);
          CHECK(got == std::vector<uint8_t>(d, 0xee));
        } else if (zero) {
          CHECK(skip[c] == HashPool::kZeroChunk);
          CHECK(got == std::vector<uint8_t>(d, 0xee));
        } else {
          CHECK(skip[c] == 0);
          CHECK(got == std::vector<uint8_t>(expected.begin() + c * d, expected.begin() + (c + 1) * d));
          ++hashed;
        }
      }
      CHECK(hashed > chunks / 3);
    }
  }
}

TEST_CASE("HashPool fill brings in every chunk once, on the thread that hashes it",
          "[dedup][hash_pool]") {
  const size_t chunk_size = 4096;
  const std::vector<uint8_t> source = random_bytes(500 * chunk_size, 12);
  const size_t chunks = source.size() / chunk_size;
  for (unsigned threads : {1u, 2u, 3u}) {
    INFO(threads << " threads");
    HashPool pool(HashAlgorithm::kSha256, threads);
    const size_t d = pool.digest_size();
    const auto expected = sequential_digests(HashAlgorithm::kSha256, source, chunk_size);
    std::vector<uint8_t> buffer(source.size(), 0);  // filled by `fill` only
    std::vector<std::atomic<int>> filled(chunks);
    std::vector<uint8_t> skip(chunks, 0);
    const HashPool::FillFn fill = [&](size_t first, size_t n) {
      for (size_t c = first; c < first + n; ++c) {
        filled[c].fetch_add(1);
        if (c % 7 == 3) {
          skip[c] = 2;  // e.g. a read that failed: not hashed
          continue;
        }
        std::memcpy(buffer.data() + c * chunk_size, source.data() + c * chunk_size, chunk_size);
      }
    };
    std::vector<uint8_t> out(chunks * d, 0xee);
    pool.hash_nonzero_chunks(buffer, chunk_size, out.data(), skip.data(), true, &fill);
    for (size_t c = 0; c < chunks; ++c) {
      INFO("chunk " << c);
      CHECK(filled[c].load() == 1);
      const std::vector<uint8_t> got(out.begin() + c * d, out.begin() + (c + 1) * d);
      if (c % 7 == 3) {
        CHECK(got == std::vector<uint8_t>(d, 0xee));
      } else {
        CHECK(got == std::vector<uint8_t>(expected.begin() + c * d, expected.begin() + (c + 1) * d));
      }
    }
  }
}

TEST_CASE("HashPool with 0 threads works on the calling thread alone", "[dedup][hash_pool]") {
  HashPool pool(HashAlgorithm::kSkein, 0);
  CHECK(pool.threads() == 1);
  const std::vector<uint8_t> data = random_bytes(1 << 20, 9);
  CHECK(first_difference(pool_digests(pool, data, 4096),
                         sequential_digests(HashAlgorithm::kSkein, data, 4096), 32) == "");
}

}  // namespace qdedup::hash

namespace qdedup::hash {
namespace {

// A Hasher that counts its chunks; the caller's stalls on its first chunk
// until the workers have hashed `wait_for` chunks (or 10 s passed), as if the
// OS had preempted the caller.
class StallingHasher : public Hasher {
 public:
  StallingHasher(bool is_caller, std::atomic<size_t>& worker_chunks, size_t wait_for)
      : is_caller_(is_caller), worker_chunks_(worker_chunks), wait_for_(wait_for) {}
  size_t digest_size() const override { return 8; }
  void hash(std::span<const uint8_t> data, uint8_t* out) override {
    if (is_caller_ && chunks_ == 0) {
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (worker_chunks_.load() < wait_for_ && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    ++chunks_;
    if (!is_caller_) worker_chunks_.fetch_add(1);
    const uint64_t n = data.size();
    std::memcpy(out, &n, 8);
  }
  size_t chunks_ = 0;

 private:
  bool is_caller_;
  std::atomic<size_t>& worker_chunks_;
  size_t wait_for_;
};

TEST_CASE("HashPool: the workers take over the share of a stalled caller", "[dedup][hash_pool]") {
  std::atomic<size_t> worker_chunks{0};
  std::vector<StallingHasher*> hashers;
  const std::vector<uint8_t> data(size_t{4} << 20);  // 1024 chunks, 32 granules
  HashPool pool(
      [&] {
        auto h = std::make_unique<StallingHasher>(hashers.empty(), worker_chunks, 1024 - 32);
        hashers.push_back(h.get());
        return h;
      },
      2);
  std::vector<uint8_t> out(1024 * 8);
  pool.hash_chunks(data, 4096, out.data());
  // The caller claimed at most one granule (32 chunks) before it stalled (none
  // if the worker got them all first); the worker claimed every other one.
  CHECK(hashers[0]->chunks_ <= 32);
  CHECK(hashers[0]->chunks_ + hashers[1]->chunks_ == 1024);
  for (size_t c = 0; c < 1024; ++c) {
    uint64_t n;
    std::memcpy(&n, out.data() + 8 * c, 8);
    REQUIRE(n == 4096);
  }
}

}  // namespace
}  // namespace qdedup::hash
