#include <catch2/catch.hpp>

#include "dedup/dedup_writer.h"
#include "dedup/extension.h"
#include "io/memory_file.h"
#include "support/image_builder.h"
#include "support/refcheck.h"

using namespace qdedup;
using namespace qdedup::dedup;
namespace ib = qdedup::image_builder;

namespace {

struct Fixture {
  io::MemoryFile mem{"dedup.qcow2"};
  std::unique_ptr<qcow2::Image> image;
  std::unique_ptr<DedupWriter> writer;
  std::unique_ptr<hash::Hasher> hasher = hash::make_hasher(hash::HashAlgorithm::kSha256);

  explicit Fixture(uint32_t refcount_order, uint64_t size = 1 << 20) {
    qcow2::CreateOptions o = ib::small_options(size, 12);
    o.refcount_order = refcount_order;
    REQUIRE(qcow2::create_image(mem, o).is_ok());
    auto img = ib::open_borrowed(mem, true);
    REQUIRE(img.is_ok());
    image = std::move(img).value();
    writer = std::make_unique<DedupWriter>(*image, DedupConfig{},
                                           std::make_unique<io::MemoryFile>("records"));
  }

  void put(uint64_t guest_cluster, const std::vector<uint8_t>& data) {
    uint8_t h[32];
    hasher->hash(data, h);
    REQUIRE(writer->put(guest_cluster, data, h).is_ok());
  }
};

}  // namespace

TEST_CASE("DedupWriter shares identical clusters and writes the index", "[dedup][writer]") {
  Fixture f(4);
  auto a = ib::pattern_bytes(4096, 1), b = ib::pattern_bytes(4096, 2);
  f.put(0, a);
  f.put(1, b);
  f.put(2, a);
  f.put(3, a);
  f.put(4, b);
  CHECK(f.writer->counters().clusters_stored_unique == 2);
  CHECK(f.writer->counters().clusters_deduplicated == 3);
  REQUIRE(f.writer->finish().is_ok());
  auto report = testsupport::refcheck(f.mem.bytes());
  INFO(report.summary());
  CHECK(report.clean());
  // Data reads back through a fresh open.
  auto img = ib::open_copy(f.mem.bytes(), false);
  REQUIRE(img.is_ok());
  std::vector<uint8_t> got(4096);
  const std::vector<uint8_t>* expect[] = {&a, &b, &a, &a, &b};
  for (uint64_t c = 0; c < 5; ++c) {
    REQUIRE((*img)->read(c * 4096, got).is_ok());
    CHECK(got == *expect[c]);
  }
  // The extension is present, valid and counts what happened.
  CHECK(((*img)->header().autoclear_features & kAutoclearDedupIndex) != 0);
  auto ext = find_dedup_extension((*img)->header());
  REQUIRE(ext.is_ok());
  REQUIRE(ext->has_value());
  CHECK((*ext)->index_entries == 2);
  CHECK((*ext)->counters.clusters_deduplicated == 3);
  CHECK(validate_dedup_extension(**ext, f.mem.bytes().size(), 4096, 65535).is_ok());
  std::span<const uint8_t> index(f.mem.bytes().data() + (*ext)->index_offset, (*ext)->index_size);
  CHECK(index_checksum(index) == (*ext)->index_checksum);
}

TEST_CASE("DedupWriter stores a new copy when the refcount cap is reached", "[dedup][writer]") {
  // refcount_bits=2: a cluster holds at most 3 references.
  Fixture f(1);
  REQUIRE(f.writer->refcount_cap() == 3);
  auto a = ib::pattern_bytes(4096, 7);
  for (uint64_t c = 0; c < 10; ++c) f.put(c, a);
  const DedupCounters& k = f.writer->counters();
  CHECK(k.clusters_stored_unique == 4);   // guest clusters 0, 3, 6, 9
  CHECK(k.clusters_deduplicated == 6);
  CHECK(k.refcount_cap_overflows == 3);
  REQUIRE(f.writer->finish().is_ok());
  auto report = testsupport::refcheck(f.mem.bytes());
  INFO(report.summary());
  CHECK(report.clean());
  for (uint64_t cl = 0; cl < report.stored.size(); ++cl) CHECK(report.stored[cl] <= 3);
  // Only the last copy (refcount 1, below the cap) stays in the index.
  auto img = ib::open_copy(f.mem.bytes(), false);
  REQUIRE(img.is_ok());
  auto ext = find_dedup_extension((*img)->header());
  REQUIRE(ext.is_ok());
  CHECK((*ext)->index_entries == 1);
}

TEST_CASE("DedupWriter keeps COPIED exactly on unshared clusters", "[dedup][writer]") {
  Fixture f(4);
  auto a = ib::pattern_bytes(4096, 3), b = ib::pattern_bytes(4096, 4);
  f.put(0, a);  // owner of a, COPIED until shared
  f.put(1, b);  // never shared: keeps COPIED
  f.put(2, a);
  REQUIRE(f.writer->finish().is_ok());
  auto e0 = f.image->l2_entry(0), e1 = f.image->l2_entry(1), e2 = f.image->l2_entry(2);
  REQUIRE((e0.is_ok() && e1.is_ok() && e2.is_ok()));
  CHECK_FALSE(e0->copied());
  CHECK_FALSE(e2->copied());
  CHECK(e1->copied());
  CHECK(e0->host_offset() == e2->host_offset());
}

TEST_CASE("DedupWriter with verify refuses to share equal hashes of different bytes",
          "[dedup][writer]") {
  // A collision injected by hand: both clusters are given the same "hash".
  io::MemoryFile mem("verify.qcow2");
  REQUIRE(qcow2::create_image(mem, ib::small_options(1 << 20, 12)).is_ok());
  auto img = ib::open_borrowed(mem, true);
  REQUIRE(img.is_ok());
  DedupConfig config;
  config.verify = true;
  DedupWriter w(**img, config, std::make_unique<io::MemoryFile>("records"));
  const uint8_t same_hash[32] = {0x42};
  auto a = ib::pattern_bytes(4096, 1), b = ib::pattern_bytes(4096, 2), a2 = a;
  REQUIRE(w.put(0, a, same_hash).is_ok());
  REQUIRE(w.put(1, b, same_hash).is_ok());   // same hash, other bytes: stored apart
  REQUIRE(w.put(2, a2, same_hash).is_ok());  // same hash, same bytes: shared
  CHECK(w.counters().clusters_stored_unique == 2);
  CHECK(w.counters().clusters_deduplicated == 1);
  REQUIRE(w.finish().is_ok());
  auto back = ib::open_copy(mem.bytes(), false);
  REQUIRE(back.is_ok());
  std::vector<uint8_t> got(4096);
  REQUIRE((*back)->read(4096, got).is_ok());
  CHECK(got == b);
  REQUIRE((*back)->read(8192, got).is_ok());
  CHECK(got == a);
  auto report = testsupport::refcheck(mem.bytes());
  INFO(report.summary());
  CHECK(report.clean());
}

TEST_CASE("DedupWriter without verify trusts the hash", "[dedup][writer]") {
  // The counterpart of the test above: without verify the same injected
  // collision is shared, which is why xxh3 requires dedup_verify=on.
  Fixture f(4);
  const uint8_t same_hash[32] = {0x42};
  auto a = ib::pattern_bytes(4096, 1), b = ib::pattern_bytes(4096, 2);
  REQUIRE(f.writer->put(0, a, same_hash).is_ok());
  REQUIRE(f.writer->put(1, b, same_hash).is_ok());
  CHECK(f.writer->counters().clusters_deduplicated == 1);
}
