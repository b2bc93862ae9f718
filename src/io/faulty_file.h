// A File that fails or "crashes" at a chosen write, for proving crash safety.
//
// It keeps two images: what the process sees (every write so far) and what a
// disk would hold after a power cut (the state at the last flush). Writes made
// since the last flush are "pending"; after a crash a test picks which of them
// survive (none, all, or a random subset) and re-opens the survivor.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "io/memory_file.h"

namespace qdedup::io {

class FaultyFile : public File {
 public:
  explicit FaultyFile(std::vector<uint8_t> initial, std::string name = "faulty")
      : live_(name, initial), durable_(name, std::move(initial)), name_(std::move(name)) {}

  // The first `n` writes (pwrite, truncate, punch_hole) succeed; the next one and
  // every later operation fail with StatusCode::kCrashed.
  void crash_after_writes(uint64_t n) { crash_after_ = n; }
  // Write number `n` (1-based) fails once with `code` (e.g. kNoSpace); later
  // writes succeed again.
  void fail_write(uint64_t n, StatusCode code) { fail_at_ = n; fail_code_ = code; }
  // Every read that touches bytes [begin, end) fails with an I/O error (a bad
  // sector), from any thread. Set before the reads start.
  void fail_reads(uint64_t begin, uint64_t end) { bad_reads_ = {begin, end}; }

  uint64_t writes() const { return writes_; }
  uint64_t flushes() const { return flushes_; }
  bool crashed() const { return crashed_; }

  enum class Survivors { kFlushedOnly, kAll, kRandomSubset };
  // The bytes a disk would hold after a crash now: the flushed state plus the
  // chosen pending writes, applied in their original order.
  std::vector<uint8_t> image_after_crash(Survivors which, uint32_t seed = 0) const;
  // The distinct states a crash now can leave: flushed writes only, every
  // write, and two random subsets of the pending ones (seeds 1 and 2).
  std::vector<std::vector<uint8_t>> distinct_crash_states() const;
  // What the process saw (all writes, as if the crash never happened).
  const std::vector<uint8_t>& live_bytes() const { return live_.bytes(); }

  const std::string& name() const override { return name_; }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override;
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override;
  Status flush() override;
  Result<uint64_t> size() override;
  Status truncate(uint64_t size) override;
  Status punch_hole(uint64_t offset, uint64_t len) override;
  bool concurrent_reads() const override { return true; }  // reads look at nothing they change

 private:
  struct Op {
    enum Kind { kWrite, kTruncate, kPunch } kind;
    uint64_t offset;
    uint64_t length;
    std::vector<uint8_t> data;
  };
  // Counts a write and decides whether it may proceed.
  Status admit_write();
  static void apply(MemoryFile& f, const Op& op);

  MemoryFile live_;
  MemoryFile durable_;
  std::vector<Op> pending_;
  std::string name_;
  uint64_t writes_ = 0;
  uint64_t flushes_ = 0;
  std::optional<uint64_t> crash_after_;
  std::optional<uint64_t> fail_at_;
  std::optional<std::pair<uint64_t, uint64_t>> bad_reads_;
  StatusCode fail_code_ = StatusCode::kIoError;
  bool crashed_ = false;
};

}  // namespace qdedup::io
