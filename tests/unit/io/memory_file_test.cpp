// MemoryFile and the File helpers read_exact / read_or_zero.
#include "io/memory_file.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

namespace qdedup::io {
namespace {

std::vector<uint8_t> bytes_of(std::initializer_list<int> v) {
  std::vector<uint8_t> out;
  for (int x : v) out.push_back(static_cast<uint8_t>(x));
  return out;
}

}  // namespace

TEST_CASE("MemoryFile reads back what was written", "[io][memory]") {
  MemoryFile f("m");
  CHECK(f.name() == "m");
  REQUIRE(f.pwrite(0, bytes_of({1, 2, 3, 4})).is_ok());
  REQUIRE(f.pwrite(2, bytes_of({9})).is_ok());
  CHECK(f.bytes() == bytes_of({1, 2, 9, 4}));
  std::vector<uint8_t> buf(4);
  auto n = f.pread(0, buf);
  REQUIRE(n.is_ok());
  CHECK(*n == 4);
  CHECK(buf == bytes_of({1, 2, 9, 4}));
  CHECK(f.flush().is_ok());
}

TEST_CASE("MemoryFile write past the end extends the file with zeros", "[io][memory]") {
  MemoryFile f("m", bytes_of({7}));
  REQUIRE(f.pwrite(4, bytes_of({5, 6})).is_ok());
  CHECK(f.bytes() == bytes_of({7, 0, 0, 0, 5, 6}));
  auto size = f.size();
  REQUIRE(size.is_ok());
  CHECK(*size == 6);
}

TEST_CASE("MemoryFile reads are short at end of file and empty past it", "[io][memory]") {
  MemoryFile f("m", bytes_of({1, 2, 3}));
  std::vector<uint8_t> buf(8, 0xee);
  auto n = f.pread(1, buf);
  REQUIRE(n.is_ok());
  CHECK(*n == 2);
  CHECK(buf[0] == 2);
  CHECK(buf[1] == 3);
  CHECK(buf[2] == 0xee);  // untouched past what was read

  auto at_end = f.pread(3, buf);
  REQUIRE(at_end.is_ok());
  CHECK(*at_end == 0);
  auto far = f.pread(UINT64_MAX - 2, buf);
  REQUIRE(far.is_ok());
  CHECK(*far == 0);
}

TEST_CASE("MemoryFile truncate shrinks, and grows with zeros", "[io][memory]") {
  MemoryFile f("m", bytes_of({1, 2, 3, 4}));
  REQUIRE(f.truncate(2).is_ok());
  CHECK(f.bytes() == bytes_of({1, 2}));
  REQUIRE(f.truncate(5).is_ok());
  CHECK(f.bytes() == bytes_of({1, 2, 0, 0, 0}));
  REQUIRE(f.truncate(0).is_ok());
  CHECK(f.bytes().empty());
}

TEST_CASE("MemoryFile punch_hole zeroes the range and keeps the size", "[io][memory]") {
  MemoryFile f("m", bytes_of({1, 2, 3, 4, 5, 6}));
  REQUIRE(f.punch_hole(1, 2).is_ok());
  CHECK(f.bytes() == bytes_of({1, 0, 0, 4, 5, 6}));
  SECTION("a hole running past the end stops at the end") {
    REQUIRE(f.punch_hole(4, 100).is_ok());
    CHECK(f.bytes() == bytes_of({1, 0, 0, 4, 0, 0}));
  }
  SECTION("a hole beyond the end does nothing") {
    REQUIRE(f.punch_hole(10, 4).is_ok());
    CHECK(f.bytes() == bytes_of({1, 0, 0, 4, 5, 6}));
  }
  SECTION("a zero-length hole does nothing") {
    REQUIRE(f.punch_hole(3, 0).is_ok());
    CHECK(f.bytes() == bytes_of({1, 0, 0, 4, 5, 6}));
  }
}

TEST_CASE("MemoryFile refuses absurd sizes with NoSpace instead of allocating", "[io][memory]") {
  MemoryFile f("m", bytes_of({1}));
  Status w = f.pwrite(uint64_t{1} << 40, bytes_of({1}));
  CHECK(w.code() == StatusCode::kNoSpace);
  CHECK_FALSE(w.message().empty());
  CHECK(f.pwrite(UINT64_MAX, bytes_of({1})).code() == StatusCode::kNoSpace);
  CHECK(f.truncate(uint64_t{1} << 40).code() == StatusCode::kNoSpace);
  CHECK(f.bytes() == bytes_of({1}));
}

TEST_CASE("read_exact fails with Corruption naming the structure on a short read", "[io][file]") {
  MemoryFile f("m", bytes_of({1, 2, 3, 4}));
  std::vector<uint8_t> buf(4);
  CHECK(f.read_exact(0, buf, "L1 table").is_ok());
  CHECK(buf == bytes_of({1, 2, 3, 4}));

  Status s = f.read_exact(1, buf, "L1 table");
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains("L1 table"));
  CHECK(f.read_exact(100, buf, "refcount block").code() == StatusCode::kCorruption);

  std::vector<uint8_t> none;
  CHECK(f.read_exact(100, none, "nothing").is_ok());
}

TEST_CASE("read_or_zero fills bytes past the end of the file with zeros", "[io][file]") {
  MemoryFile f("m", bytes_of({1, 2, 3}));
  std::vector<uint8_t> buf(5, 0xee);
  REQUIRE(f.read_or_zero(1, buf).is_ok());
  CHECK(buf == bytes_of({2, 3, 0, 0, 0}));
  std::vector<uint8_t> past(3, 0xee);
  REQUIRE(f.read_or_zero(50, past).is_ok());
  CHECK(past == bytes_of({0, 0, 0}));
}

}  // namespace qdedup::io
