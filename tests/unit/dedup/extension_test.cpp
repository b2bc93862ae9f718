#include <catch2/catch.hpp>

#include "dedup/extension.h"
#include "qcow2/format.h"

using namespace qdedup;
using namespace qdedup::dedup;

TEST_CASE("dedup extension encodes to 176 bytes and decodes back", "[dedup][extension]") {
  DedupExtension e = empty_dedup_extension(hash::HashAlgorithm::kSha256, true, 65535);
  e.index_offset = 1 << 20;
  e.index_entries = 3;
  e.index_size = 3 * 48;
  e.counters.clusters_deduplicated = 11;
  e.counters.partial_cluster_reads = 7;
  e.counters.refcount_cap_overflows = 2;
  e.counters.runs = 5;
  e.counters.last_run_time = 1796000000;
  e.counters.last_run_version = "0.1.0";
  auto bytes = encode_dedup_extension(e);
  REQUIRE(bytes.size() == kExtDedupLength);
  auto d = decode_dedup_extension(bytes);
  REQUIRE(d.is_ok());
  CHECK(d->flags == kDedupFlagVerify);
  CHECK(d->index_offset == e.index_offset);
  CHECK(d->index_entries == 3);
  CHECK(d->counters.clusters_deduplicated == 11);
  CHECK(d->counters.partial_cluster_reads == 7);
  CHECK(d->counters.refcount_cap_overflows == 2);
  CHECK(d->counters.runs == 5);
  CHECK(d->counters.last_run_time == 1796000000);
  CHECK(d->counters.last_run_version == "0.1.0");
  CHECK(d->index_checksum == e.index_checksum);
  CHECK(encode_dedup_extension(*d) == bytes);
}

TEST_CASE("a 144-byte dedup extension (older writers) decodes without the run fields",
          "[dedup][extension]") {
  DedupExtension e = empty_dedup_extension(hash::HashAlgorithm::kSha256, false, 65535);
  e.counters.clusters_deduplicated = 3;
  e.counters.last_run_time = 1796000000;
  e.counters.last_run_version = "0.1.0";
  auto bytes = encode_dedup_extension(e);
  bytes.resize(kExtDedupBaseLength);  // what a writer of the first layout wrote: runs 0 (reserved)
  auto d = decode_dedup_extension(bytes);
  REQUIRE(d.is_ok());
  CHECK(d->counters.clusters_deduplicated == 3);
  CHECK(d->counters.runs == 0);
  CHECK(d->counters.last_run_time == 0);
  CHECK(d->counters.last_run_version.empty());
  // A version that fills its 24 bytes has no NUL: it is read whole.
  e.counters.last_run_version = std::string(kRunVersionBytes, 'v');
  auto full = decode_dedup_extension(encode_dedup_extension(e));
  REQUIRE(full.is_ok());
  CHECK(full->counters.last_run_version == std::string(kRunVersionBytes, 'v'));
}

TEST_CASE("dedup extension with an unknown hash id is refused by name", "[dedup][extension]") {
  auto bytes = encode_dedup_extension(empty_dedup_extension(hash::HashAlgorithm::kSha256, false, 15));
  bytes[7] = 99;  // hash_algorithm = 99
  auto d = decode_dedup_extension(bytes);
  REQUIRE_FALSE(d.is_ok());
  CHECK(d.status().code() == StatusCode::kUnsupported);
  CHECK_THAT(d.status().message(), Catch::Contains("99"));
}

TEST_CASE("dedup extension rejects bad versions, lengths, flags and sizes", "[dedup][extension]") {
  auto good = encode_dedup_extension(empty_dedup_extension(hash::HashAlgorithm::kSha256, false, 15));
  SECTION("short") { CHECK_FALSE(decode_dedup_extension(std::span(good).first(100)).is_ok()); }
  SECTION("version") {
    good[3] = 2;
    CHECK_FALSE(decode_dedup_extension(good).is_ok());
  }
  SECTION("reserved flags") {
    good[11] = 0x80;
    CHECK_FALSE(decode_dedup_extension(good).is_ok());
  }
  SECTION("hash size") {
    good[15] = 16;
    CHECK_FALSE(decode_dedup_extension(good).is_ok());
  }
}

TEST_CASE("validate_dedup_extension checks the index against the file", "[dedup][extension]") {
  DedupExtension e = empty_dedup_extension(hash::HashAlgorithm::kSha256, false, 65535);
  CHECK(validate_dedup_extension(e, 1 << 20, 4096, 65535).is_ok());
  e.index_entries = 10;
  e.index_size = 480;
  e.index_offset = 8192;
  CHECK(validate_dedup_extension(e, 1 << 20, 4096, 65535).is_ok());
  CHECK_FALSE(validate_dedup_extension(e, 8192 + 479, 4096, 65535).is_ok());  // beyond EOF
  e.index_offset = 8193;
  CHECK_FALSE(validate_dedup_extension(e, 1 << 20, 4096, 65535).is_ok());  // unaligned
  e.index_offset = 8192;
  e.index_size = 481;
  CHECK_FALSE(validate_dedup_extension(e, 1 << 20, 4096, 65535).is_ok());  // size/count mismatch
  e.index_size = 480;
  e.refcount_cap = 70000;
  CHECK_FALSE(validate_dedup_extension(e, 1 << 20, 4096, 65535).is_ok());  // cap above width
}

TEST_CASE("index_checksum detects a changed index byte", "[dedup][extension]") {
  std::vector<uint8_t> index(400, 0x5a);
  auto sum = index_checksum(index);
  index[123] ^= 1;
  CHECK(index_checksum(index) != sum);
}

TEST_CASE("put_dedup_extension adds the extension and names the autoclear bit once",
          "[dedup][extension]") {
  qcow2::Header h;
  DedupExtension e = empty_dedup_extension(hash::HashAlgorithm::kSha256, false, 65535);
  put_dedup_extension(h, e);
  e.counters.clusters_deduplicated = 5;
  put_dedup_extension(h, e);
  REQUIRE(h.unknown_extensions.size() == 1);
  auto found = find_dedup_extension(h);
  REQUIRE(found.is_ok());
  REQUIRE(found->has_value());
  CHECK((*found)->counters.clusters_deduplicated == 5);
  int named = 0;
  for (const auto& f : h.feature_names) named += (f.type == 2 && f.bit == kAutoclearDedupBit);
  CHECK(named == 1);
}
