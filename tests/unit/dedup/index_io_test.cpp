#include <catch2/catch.hpp>

#include "dedup/dedup_images.h"
#include "dedup/dedup_writer.h"
#include "dedup/index_io.h"
#include "io/memory_file.h"
#include "support/image_builder.h"

using namespace qdedup;
using namespace qdedup::dedup;
namespace ib = qdedup::image_builder;

namespace {

// An image with 6 guest clusters holding 3 distinct contents, written through
// DedupWriter (so it carries a valid index of 3 entries).
std::vector<uint8_t> deduplicated_image() {
  return dedup_images::deduplicated_image(6, [](uint64_t c) { return static_cast<uint32_t>(c % 3); });
}

DedupIndex empty_index() { return DedupIndex(std::make_unique<io::MemoryFile>("rec"), 32); }

}  // namespace

TEST_CASE("load_index reads back what DedupWriter wrote", "[dedup][index_io]") {
  auto bytes = deduplicated_image();
  auto img = ib::open_copy(bytes, false);
  REQUIRE(img.is_ok());
  auto ext = find_dedup_extension((*img)->header());
  REQUIRE((ext.is_ok() && ext->has_value()));
  DedupIndex idx = empty_index();
  REQUIRE(load_index(**img, **ext, idx).is_ok());
  CHECK(idx.size() == 3);
  auto hasher = hash::make_hasher(hash::HashAlgorithm::kSha256);
  for (uint32_t k = 0; k < 3; ++k) {
    auto data = ib::pattern_bytes(4096, k);
    uint8_t h[32];
    hasher->hash(data, h);
    auto hit = idx.find(h);
    REQUIRE(hit.is_ok());
    REQUIRE(hit->has_value());
    // The entry's owner maps to the entry's cluster.
    auto e = (*img)->l2_entry((*hit)->owner_guest_cluster);
    REQUIRE(e.is_ok());
    CHECK(e->host_offset() == (*hit)->host_offset);
  }
}

TEST_CASE("load_index detects a changed index byte by its checksum", "[dedup][index_io]") {
  auto bytes = deduplicated_image();
  auto probe = ib::open_copy(bytes, false);
  REQUIRE(probe.is_ok());
  auto ext = find_dedup_extension((*probe)->header());
  REQUIRE((ext.is_ok() && ext->has_value()));
  // Flip a bit in the owner field of the last entry: order and offsets stay
  // plausible, only the checksum can tell.
  bytes[(*ext)->index_offset + (*ext)->index_size - 1] ^= 1;
  auto img = ib::open_copy(bytes, false);
  REQUIRE(img.is_ok());
  DedupIndex idx = empty_index();
  Status st = load_index(**img, **ext, idx);
  REQUIRE_FALSE(st.is_ok());
  CHECK(st.code() == StatusCode::kCorruption);
  CHECK_THAT(st.message(), Catch::Contains("checksum"));
}

TEST_CASE("load_index refuses entries pointing at free clusters", "[dedup][index_io]") {
  auto bytes = deduplicated_image();
  auto probe = ib::open_copy(bytes, false);
  REQUIRE(probe.is_ok());
  auto ext = find_dedup_extension((*probe)->header());
  REQUIRE((ext.is_ok() && ext->has_value()));
  // Point the first entry at a cluster past the data (refcount 0), and fix
  // the checksum so that only the refcount check can catch it.
  uint64_t at = (*ext)->index_offset + 32;
  ib::put_be(bytes, at, 8, 200 * 4096);
  DedupExtension e = **ext;
  e.index_checksum = index_checksum(std::span<const uint8_t>(bytes.data() + e.index_offset, e.index_size));
  auto img = ib::open_copy(bytes, false);
  REQUIRE(img.is_ok());
  DedupIndex idx = empty_index();
  Status st = load_index(**img, e, idx);
  REQUIRE_FALSE(st.is_ok());
  CHECK_THAT(st.message(), Catch::Contains("refcount"));
}

TEST_CASE("rebuild_index of a stale image indexes every distinct data cluster", "[dedup][index_io]") {
  auto bytes = deduplicated_image();
  // What a stock QEMU write does to the bit: clears it.
  ib::put_be(bytes, 88, 8, 0);
  // And a new cluster written by "someone else": write through the qcow2 layer.
  io::MemoryFile mem("img.qcow2", bytes);
  {
    auto img = ib::open_borrowed(mem, true);
    REQUIRE(img.is_ok());
    REQUIRE((*img)->write(10 * 4096, ib::pattern_bytes(4096, 9)).is_ok());
    REQUIRE((*img)->close().is_ok());
  }
  auto img = ib::open_borrowed(mem, false);
  REQUIRE(img.is_ok());
  hash::HashPool pool(hash::HashAlgorithm::kSha256, 2);
  DedupIndex idx = empty_index();
  REQUIRE(rebuild_index(**img, pool, 65535, idx).is_ok());
  CHECK(idx.size() == 4);
  auto hasher = hash::make_hasher(hash::HashAlgorithm::kSha256);
  for (uint32_t k : {0u, 1u, 2u, 9u}) {
    auto data = ib::pattern_bytes(4096, k);
    uint8_t h[32];
    hasher->hash(data, h);
    auto hit = idx.find(h);
    REQUIRE(hit.is_ok());
    CHECK(hit->has_value());
  }
}
