// Counts the bytes a job reads and, with a limit, holds their rate at or
// under it: each caller sleeps until the rate since the start allows what has
// been read so far (`--max-rate`).
//
// Thread safety: take() and total() from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace qdedup {

class RateLimiter {
 public:
  explicit RateLimiter(uint64_t bytes_per_second)  // 0: no limit
      : rate_(bytes_per_second), start_(std::chrono::steady_clock::now()) {}

  // Counts `bytes` read, then sleeps as long as the limit needs.
  void take(uint64_t bytes) {
    const uint64_t total = total_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    if (rate_ == 0) return;
    const auto due = start_ + std::chrono::duration<double>(static_cast<double>(total) /
                                                            static_cast<double>(rate_));
    std::this_thread::sleep_until(due);
  }
  uint64_t total() const { return total_.load(); }

 private:
  const uint64_t rate_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<uint64_t> total_{0};
};

}  // namespace qdedup
