#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <random>

#include "dedup/index.h"
#include "io/memory_file.h"

using namespace qdedup;
using namespace qdedup::dedup;

namespace {

std::array<uint8_t, 32> hash_of(uint64_t n, uint64_t fingerprint_override = 0) {
  std::array<uint8_t, 32> h{};
  std::mt19937_64 rng(n * 7919 + 1);
  for (size_t i = 0; i < 32; i += 8) {
    uint64_t v = rng();
    std::memcpy(h.data() + i, &v, 8);
  }
  if (fingerprint_override) {
    // Same first 8 bytes (the in-RAM fingerprint), different rest.
    for (int i = 0; i < 8; ++i) h[i] = static_cast<uint8_t>(fingerprint_override >> (56 - 8 * i));
  }
  return h;
}

DedupIndex make_index() { return DedupIndex(std::make_unique<io::MemoryFile>("records"), 32); }

}  // namespace

TEST_CASE("DedupIndex finds what was inserted and nothing else", "[dedup][index]") {
  DedupIndex idx = make_index();
  for (uint64_t i = 0; i < 5000; ++i) {
    REQUIRE(idx.insert(hash_of(i).data(), (i + 10) << 12, i).is_ok());
  }
  REQUIRE(idx.size() == 5000);
  for (uint64_t i = 0; i < 5000; ++i) {
    auto r = idx.find(hash_of(i).data());
    REQUIRE(r.is_ok());
    REQUIRE(r->has_value());
    CHECK((*r)->host_offset == (i + 10) << 12);
    CHECK((*r)->owner_guest_cluster == i);
  }
  for (uint64_t i = 5000; i < 6000; ++i) {
    auto r = idx.find(hash_of(i).data());
    REQUIRE(r.is_ok());
    CHECK_FALSE(r->has_value());
  }
}

TEST_CASE("DedupIndex confirms fingerprint matches against the full hash", "[dedup][index]") {
  DedupIndex idx = make_index();
  auto a = hash_of(1, 0x1122334455667788);
  auto b = hash_of(2, 0x1122334455667788);
  REQUIRE(std::memcmp(a.data(), b.data(), 8) == 0);
  REQUIRE(idx.insert(a.data(), 4096, 1).is_ok());
  auto r = idx.find(b.data());
  REQUIRE(r.is_ok());
  CHECK_FALSE(r->has_value());
  REQUIRE(idx.insert(b.data(), 8192, 2).is_ok());
  CHECK(idx.size() == 2);
  CHECK(idx.find(a.data())->value().host_offset == 4096);
  CHECK(idx.find(b.data())->value().host_offset == 8192);
}

TEST_CASE("DedupIndex insert of an existing hash repoints it", "[dedup][index]") {
  DedupIndex idx = make_index();
  auto h = hash_of(5);
  REQUIRE(idx.insert(h.data(), 4096, 1).is_ok());
  REQUIRE(idx.insert(h.data(), 65536, 9).is_ok());
  CHECK(idx.size() == 1);
  CHECK(idx.find(h.data())->value().host_offset == 65536);
  CHECK(idx.find(h.data())->value().owner_guest_cluster == 9);
}

TEST_CASE("DedupIndex remove keeps every other entry reachable", "[dedup][index]") {
  DedupIndex idx = make_index();
  // Colliding fingerprints force probe chains that removal must repair.
  std::vector<std::array<uint8_t, 32>> hashes;
  for (uint64_t i = 0; i < 3000; ++i) hashes.push_back(hash_of(i, i % 7 == 0 ? 0x42 : 0));
  for (uint64_t i = 0; i < hashes.size(); ++i) REQUIRE(idx.insert(hashes[i].data(), i << 9, i).is_ok());
  for (uint64_t i = 0; i < hashes.size(); i += 3) REQUIRE(idx.remove(hashes[i].data()).is_ok());
  for (uint64_t i = 0; i < hashes.size(); ++i) {
    auto r = idx.find(hashes[i].data());
    REQUIRE(r.is_ok());
    if (i % 3 == 0) {
      CHECK_FALSE(r->has_value());
    } else {
      REQUIRE(r->has_value());
      CHECK((*r)->host_offset == i << 9);
    }
  }
  CHECK(idx.size() == 2000);
}

TEST_CASE("DedupIndex stays within 24 bytes of RAM per entry", "[dedup][index]") {
  DedupIndex idx = make_index();
  for (uint64_t i = 1; i <= 200000; ++i) {
    REQUIRE(idx.insert(hash_of(i).data(), i << 12, i).is_ok());
    if (i % 997 == 0 || i == 200000) {
      // Beyond the initial 1024 slots (12 KiB), at most 24 bytes an entry,
      // also while a segment grows (its old and new slots side by side).
      CHECK(idx.memory_bytes() <= 24 * i + 12288);
      CHECK(idx.peak_memory_bytes() <= 24 * i + 12288);
    }
  }
}

TEST_CASE("DedupIndex visits entries in hash order", "[dedup][index]") {
  DedupIndex idx = make_index();
  std::map<std::array<uint8_t, 32>, uint64_t> model;
  for (uint64_t i = 0; i < 2000; ++i) {
    auto h = hash_of(i, i % 5 == 0 ? 0x77 : 0);
    model[h] = i << 12;
    REQUIRE(idx.insert(h.data(), i << 12, i).is_ok());
  }
  auto it = model.begin();
  Status st = idx.for_each_sorted([&](const uint8_t* hash, const IndexEntry& e) -> Status {
    REQUIRE(it != model.end());
    CHECK(std::memcmp(hash, it->first.data(), 32) == 0);
    CHECK(e.host_offset == it->second);
    ++it;
    return Status::ok();
  });
  REQUIRE(st.is_ok());
  CHECK(it == model.end());
}
