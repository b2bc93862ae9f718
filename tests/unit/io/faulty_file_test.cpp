// FaultyFile: injected write failures, simulated crashes, and the disk image a
// power cut would leave behind.
#include "io/faulty_file.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>
#include <vector>

namespace qdedup::io {
namespace {

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

}  // namespace

TEST_CASE("FaultyFile behaves as a plain file until told otherwise", "[io][faulty]") {
  FaultyFile f(filled(4, 0), "f");
  CHECK(f.name() == "f");
  REQUIRE(f.pwrite(1, filled(2, 7)).is_ok());
  REQUIRE(f.truncate(6).is_ok());
  REQUIRE(f.punch_hole(2, 1).is_ok());
  CHECK(f.live_bytes() == std::vector<uint8_t>{0, 7, 0, 0, 0, 0});
  std::vector<uint8_t> buf(2);
  auto n = f.pread(1, buf);
  REQUIRE(n.is_ok());
  CHECK(*n == 2);
  CHECK(buf == std::vector<uint8_t>{7, 0});
  CHECK(f.writes() == 3);
  CHECK_FALSE(f.crashed());
}

TEST_CASE("crash_after_writes lets n writes through then fails everything with Crashed",
          "[io][faulty]") {
  FaultyFile f(filled(8, 0), "f");
  f.crash_after_writes(2);
  REQUIRE(f.pwrite(0, filled(1, 1)).is_ok());
  REQUIRE(f.pwrite(1, filled(1, 2)).is_ok());
  Status third = f.pwrite(2, filled(1, 3));
  CHECK(third.code() == StatusCode::kCrashed);
  CHECK(f.crashed());
  CHECK(f.writes() == 2);
  // The failed write did not reach the live image.
  CHECK(f.live_bytes()[2] == 0);
  // Everything afterwards fails too: reads, flushes, sizes, other writes.
  std::vector<uint8_t> buf(1);
  CHECK(f.pread(0, buf).status().code() == StatusCode::kCrashed);
  CHECK(f.flush().code() == StatusCode::kCrashed);
  CHECK(f.size().status().code() == StatusCode::kCrashed);
  CHECK(f.truncate(1).code() == StatusCode::kCrashed);
  CHECK(f.punch_hole(0, 1).code() == StatusCode::kCrashed);
  CHECK(f.pwrite(0, filled(1, 9)).code() == StatusCode::kCrashed);
  CHECK(f.writes() == 2);
}

TEST_CASE("crash_after_writes(0) fails the very first write", "[io][faulty]") {
  FaultyFile f(filled(2, 5));
  f.crash_after_writes(0);
  CHECK(f.truncate(0).code() == StatusCode::kCrashed);
  CHECK(f.live_bytes() == filled(2, 5));
}

TEST_CASE("fail_write fails one chosen write once with the chosen code", "[io][faulty]") {
  FaultyFile f(filled(4, 0));
  f.fail_write(2, StatusCode::kNoSpace);
  REQUIRE(f.pwrite(0, filled(1, 1)).is_ok());
  Status second = f.pwrite(1, filled(1, 2));
  CHECK(second.code() == StatusCode::kNoSpace);
  CHECK_FALSE(second.message().empty());
  CHECK(f.live_bytes()[1] == 0);  // not applied
  CHECK(f.pwrite(1, filled(1, 3)).is_ok());
  CHECK(f.pwrite(2, filled(1, 4)).is_ok());
  CHECK(f.live_bytes() == std::vector<uint8_t>{1, 3, 4, 0});
  CHECK_FALSE(f.crashed());
  CHECK(f.flush().is_ok());
}

TEST_CASE("fail_reads fails every read touching the bad range, and only those", "[io][faulty]") {
  FaultyFile f(filled(16, 5));
  f.fail_reads(8, 10);
  std::vector<uint8_t> buf(4);
  CHECK(f.pread(4, buf).is_ok());  // ends at 8
  CHECK(f.pread(10, buf).is_ok());  // starts at 10
  for (uint64_t at : {5u, 7u, 9u}) {
    auto r = f.pread(at, buf);
    CHECK(r.status().code() == StatusCode::kIoError);
  }
  CHECK(f.pwrite(8, filled(2, 1)).is_ok());  // writes are not affected
  CHECK_FALSE(f.crashed());
}

TEST_CASE("image_after_crash(kFlushedOnly) is the state at the last flush", "[io][faulty]") {
  FaultyFile f(filled(4, 0));
  REQUIRE(f.pwrite(0, filled(2, 1)).is_ok());
  REQUIRE(f.flush().is_ok());
  CHECK(f.flushes() == 1);
  std::vector<uint8_t> at_flush = f.live_bytes();
  REQUIRE(f.pwrite(2, filled(4, 2)).is_ok());  // extends the file
  REQUIRE(f.truncate(3).is_ok());
  REQUIRE(f.punch_hole(0, 1).is_ok());
  CHECK(f.image_after_crash(FaultyFile::Survivors::kFlushedOnly) == at_flush);
  CHECK(f.image_after_crash(FaultyFile::Survivors::kFlushedOnly) != f.live_bytes());
}

TEST_CASE("image_after_crash(kFlushedOnly) of a never-flushed file is the initial bytes",
          "[io][faulty]") {
  FaultyFile f(filled(3, 9));
  REQUIRE(f.pwrite(0, filled(3, 1)).is_ok());
  CHECK(f.image_after_crash(FaultyFile::Survivors::kFlushedOnly) == filled(3, 9));
}

TEST_CASE("image_after_crash(kAll) equals the live bytes, also after a crash", "[io][faulty]") {
  FaultyFile f(filled(4, 0));
  REQUIRE(f.pwrite(0, filled(2, 1)).is_ok());
  REQUIRE(f.flush().is_ok());
  REQUIRE(f.pwrite(1, filled(5, 2)).is_ok());
  REQUIRE(f.punch_hole(4, 1).is_ok());
  REQUIRE(f.truncate(5).is_ok());
  CHECK(f.image_after_crash(FaultyFile::Survivors::kAll) == f.live_bytes());
  f.crash_after_writes(f.writes());
  CHECK(f.pwrite(0, filled(1, 7)).code() == StatusCode::kCrashed);
  CHECK(f.image_after_crash(FaultyFile::Survivors::kAll) == f.live_bytes());
  CHECK(f.live_bytes() == std::vector<uint8_t>{1, 2, 2, 2, 0});
}

TEST_CASE("flush makes every pending write durable", "[io][faulty]") {
  FaultyFile f(filled(2, 0));
  REQUIRE(f.pwrite(0, filled(2, 5)).is_ok());
  REQUIRE(f.flush().is_ok());
  for (uint32_t seed = 0; seed < 8; ++seed) {
    CHECK(f.image_after_crash(FaultyFile::Survivors::kRandomSubset, seed) == filled(2, 5));
  }
}

TEST_CASE("image_after_crash(kRandomSubset) applies each pending write or not, in order",
          "[io][faulty]") {
  // Two overlapping pending writes A = [0,4) <- 1 and B = [2,6) <- 2 over
  // flushed zeros. Allowed outcomes: neither, A, B, or A then B. "B then A"
  // (111122) would mean the order was lost.
  FaultyFile f(filled(6, 0));
  REQUIRE(f.flush().is_ok());
  REQUIRE(f.pwrite(0, filled(4, 1)).is_ok());
  REQUIRE(f.pwrite(2, filled(4, 2)).is_ok());
  const std::vector<uint8_t> none{0, 0, 0, 0, 0, 0};
  const std::vector<uint8_t> only_a{1, 1, 1, 1, 0, 0};
  const std::vector<uint8_t> only_b{0, 0, 2, 2, 2, 2};
  const std::vector<uint8_t> both{1, 1, 2, 2, 2, 2};
  std::set<std::vector<uint8_t>> seen;
  for (uint32_t seed = 0; seed < 64; ++seed) {
    auto img = f.image_after_crash(FaultyFile::Survivors::kRandomSubset, seed);
    INFO("seed " << seed);
    CHECK((img == none || img == only_a || img == only_b || img == both));
    seen.insert(img);
  }
  // Different seeds choose different subsets, including a strict one.
  CHECK(seen.size() >= 3);
  CHECK((seen.count(only_a) + seen.count(only_b)) > 0);
  // The same seed always gives the same answer.
  CHECK(f.image_after_crash(FaultyFile::Survivors::kRandomSubset, 5) ==
        f.image_after_crash(FaultyFile::Survivors::kRandomSubset, 5));
}

TEST_CASE("image_after_crash(kRandomSubset) lies between flushed and live state per write",
          "[io][faulty]") {
  // Eight pending writes to disjoint bytes: each byte is either old or new.
  FaultyFile f(filled(8, 0));
  for (uint8_t i = 0; i < 8; ++i) {
    REQUIRE(f.pwrite(i, filled(1, static_cast<uint8_t>(i + 1))).is_ok());
  }
  for (uint32_t seed = 0; seed < 32; ++seed) {
    auto img = f.image_after_crash(FaultyFile::Survivors::kRandomSubset, seed);
    REQUIRE(img.size() == 8);
    for (size_t i = 0; i < 8; ++i) {
      INFO("seed " << seed << " byte " << i);
      CHECK((img[i] == 0 || img[i] == static_cast<uint8_t>(i + 1)));
    }
  }
}

TEST_CASE("image_after_crash replays pending truncates and punched holes", "[io][faulty]") {
  FaultyFile f(filled(6, 3));
  REQUIRE(f.truncate(4).is_ok());
  REQUIRE(f.punch_hole(0, 2).is_ok());
  CHECK(f.image_after_crash(FaultyFile::Survivors::kAll) == std::vector<uint8_t>{0, 0, 3, 3});
  CHECK(f.image_after_crash(FaultyFile::Survivors::kFlushedOnly) == filled(6, 3));
}

TEST_CASE("distinct_crash_states lists the flushed and the all-writes states once each",
          "[io][faulty]") {
  FaultyFile f(std::vector<uint8_t>(4, 0));
  const uint8_t one[] = {1};
  REQUIRE(f.pwrite(0, one).is_ok());
  REQUIRE(f.flush().is_ok());
  auto flushed = f.distinct_crash_states();
  REQUIRE(flushed.size() == 1);  // nothing pending: every mode gives the same bytes
  CHECK(flushed[0] == (std::vector<uint8_t>{1, 0, 0, 0}));
  const uint8_t two[] = {2};
  REQUIRE(f.pwrite(1, two).is_ok());
  REQUIRE(f.pwrite(2, two).is_ok());
  auto states = f.distinct_crash_states();
  CHECK(states.front() == (std::vector<uint8_t>{1, 0, 0, 0}));
  CHECK(std::find(states.begin(), states.end(), std::vector<uint8_t>{1, 2, 2, 0}) != states.end());
  CHECK(std::set<std::vector<uint8_t>>(states.begin(), states.end()).size() == states.size());
}

}  // namespace qdedup::io
