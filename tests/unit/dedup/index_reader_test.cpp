// The one index reader: every entry visited in order across chunk
// boundaries, misordered hashes and a wrong checksum reported, and a visitor
// that returns an error stops the read there.
#include "dedup/index_reader.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "hash/sha256.h"
#include "io/memory_file.h"
#include "util/endian.h"

using namespace qdedup;
using namespace qdedup::dedup;

namespace {

constexpr uint64_t kIndexAt = 4096;

// An index of `n` entries with increasing hashes (entry i: hash = i, host
// offset = (i + 1) * 4096, owner = i) at kIndexAt in a file, with its
// extension.
struct TestIndex {
  io::MemoryFile file{"index"};
  DedupExtension ext;

  explicit TestIndex(uint64_t n) {
    std::vector<uint8_t> bytes;
    for (uint64_t i = 0; i < n; ++i) {
      uint8_t hash[32] = {};
      store_be64(hash + 24, i);
      encode_index_entry({{hash, 32}, (i + 1) * 4096, i}, bytes);
    }
    ext.index_offset = kIndexAt;
    ext.index_entries = n;
    ext.index_size = bytes.size();
    reseal(bytes);
  }
  uint8_t* entry(uint64_t i) { return file.mutable_bytes().data() + kIndexAt + i * 48; }
  void reseal(const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t>& b = file.mutable_bytes();
    b.assign(kIndexAt, 0);
    b.insert(b.end(), bytes.begin(), bytes.end());
    ext.index_checksum = hash::sha256(bytes);
  }
  void reseal() {
    reseal(std::vector<uint8_t>(entry(0), entry(0) + ext.index_size));
  }
};

struct Recorder : IndexVisitor {
  std::vector<uint64_t> entries;
  std::vector<std::pair<uint64_t, int>> misorders;
  int checksum_mismatches = 0;
  uint64_t stop_at = UINT64_MAX;

  Status misordered(uint64_t n, const StoredIndexEntry&, int order) override {
    misorders.emplace_back(n, order > 0 ? 1 : 0);
    return Status::ok();
  }
  Status entry(uint64_t n, const StoredIndexEntry& e) override {
    entries.push_back(n);
    if (e.owner_guest_cluster != n || e.host_offset != (n + 1) * 4096) {
      return corruption("entry " + std::to_string(n) + " decoded wrongly");
    }
    if (n == stop_at) return corruption("stop");
    return Status::ok();
  }
  Status checksum_mismatch() override {
    ++checksum_mismatches;
    return Status::ok();
  }
};

}  // namespace

TEST_CASE("read_index visits every entry in order, across chunks", "[dedup][index_reader]") {
  for (uint64_t n : {uint64_t{0}, uint64_t{1}, kIndexReadChunkEntries, kIndexReadChunkEntries + 3}) {
    INFO(n << " entries");
    TestIndex t(n);
    Recorder r;
    REQUIRE(read_index(t.file, t.ext, r).is_ok());
    REQUIRE(r.entries.size() == n);
    for (uint64_t i = 0; i < n; ++i) REQUIRE(r.entries[i] == i);
    CHECK(r.misorders.empty());
    CHECK(r.checksum_mismatches == 0);
  }
}

TEST_CASE("read_index reports duplicate and decreasing hashes, also at a chunk boundary",
          "[dedup][index_reader]") {
  const uint64_t n = kIndexReadChunkEntries + 3;
  const uint64_t b = kIndexReadChunkEntries;  // first entry of the second chunk
  TestIndex t(n);
  std::copy_n(t.entry(5), 32, t.entry(4));      // hash(5) == hash(4), hash(4) > hash(3)
  std::copy_n(t.entry(b - 1), 32, t.entry(b));  // across the boundary: hash(b) == hash(b - 1)
  std::copy_n(t.entry(0), 32, t.entry(b + 2));  // hash(b + 2) < hash(b + 1)
  t.reseal();
  Recorder r;
  REQUIRE(read_index(t.file, t.ext, r).is_ok());
  CHECK(r.entries.size() == n);  // every entry is visited all the same
  const std::vector<std::pair<uint64_t, int>> want = {{5, 0}, {b, 0}, {b + 2, 1}};
  CHECK(r.misorders == want);
  CHECK(r.checksum_mismatches == 0);
}

TEST_CASE("read_index reports a checksum mismatch after the last entry", "[dedup][index_reader]") {
  TestIndex t(10);
  t.ext.index_checksum[0] ^= 1;
  Recorder r;
  REQUIRE(read_index(t.file, t.ext, r).is_ok());
  CHECK(r.entries.size() == 10);
  CHECK(r.checksum_mismatches == 1);
}

TEST_CASE("read_index stops at the first error a visitor returns", "[dedup][index_reader]") {
  TestIndex t(kIndexReadChunkEntries + 10);
  t.ext.index_checksum[0] ^= 1;
  Recorder r;
  r.stop_at = 7;
  Status st = read_index(t.file, t.ext, r);
  CHECK(st.message() == "stop");
  CHECK(r.entries.size() == 8);
  CHECK(r.checksum_mismatches == 0);  // not reached
}

TEST_CASE("read_index returns a short read as an error", "[dedup][index_reader]") {
  TestIndex t(kIndexReadChunkEntries + 10);
  t.file.mutable_bytes().resize(kIndexAt + t.ext.index_size - 1);
  Recorder r;
  Status st = read_index(t.file, t.ext, r);
  CHECK_FALSE(st.is_ok());
  CHECK(r.entries.size() == kIndexReadChunkEntries);  // the first chunk was read
  CHECK(r.checksum_mismatches == 0);
}
