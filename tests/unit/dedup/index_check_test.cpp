// The dedup part of check: each kind of index damage is found, a stale index
// is reported as stale (not corrupt), verify_hashes finds data changed under
// the index, and rebuilding the index survives a crash at any write.
#include <catch2/catch.hpp>
#include <functional>
#include <set>

#include "dedup/dedup_images.h"
#include "dedup/dedup_writer.h"
#include "dedup/extension.h"
#include "dedup/index_check.h"
#include "io/faulty_file.h"
#include "io/memory_file.h"
#include "qcow2/check.h"
#include "support/image_builder.h"
#include "util/endian.h"

using namespace qdedup;
using namespace qdedup::dedup;
namespace ib = qdedup::image_builder;

namespace {

using Bytes = std::vector<uint8_t>;

// 7 guest clusters: 6 holding 3 distinct contents, and one unique, through
// DedupWriter: a valid index of 4 entries.
Bytes dedup_image() {
  return dedup_images::deduplicated_image(
      7, [](uint64_t c) { return static_cast<uint32_t>(c < 6 ? c % 3 : 100 + c); });
}

DedupExtension ext_of(const Bytes& b) {
  io::MemoryFile f("t", b);
  auto a = qcow2::analyse_image(f, {});
  REQUIRE(a.is_ok());
  auto e = find_dedup_extension(a->header);
  REQUIRE((e.is_ok() && e->has_value()));
  return **e;
}

struct Outcome {
  qcow2::CheckCounts counts;
  DedupCheckResult dedup;
};

Outcome check(const Bytes& b, bool verify = false) {
  io::MemoryFile f("t", b);
  auto a = qcow2::analyse_image(f, {});
  REQUIRE(a.is_ok());
  DedupCheckOptions o;
  o.verify_hashes = verify;
  o.threads = 2;
  return {a->counts, check_dedup(f, *a, o)};
}

// Rewrites the index checksum so that only the damage under test remains.
void reseal(Bytes& b) {
  DedupExtension e = ext_of(b);
  e.index_checksum = index_checksum(std::span<const uint8_t>(b.data() + e.index_offset, e.index_size));
  io::MemoryFile f("t", b);
  auto a = qcow2::analyse_image(f, {});
  REQUIRE(a.is_ok());
  qcow2::Header h = a->header;
  put_dedup_extension(h, e);
  auto cluster0 = qcow2::encode_header(h);
  REQUIRE(cluster0.is_ok());
  std::copy(cluster0->begin(), cluster0->end(), b.begin());
}

}  // namespace

TEST_CASE("a valid dedup index checks clean, with and without verify_hashes", "[dedup][check]") {
  Bytes b = dedup_image();
  Outcome o = check(b, true);
  CHECK(o.counts.corruptions == 0);
  CHECK(o.counts.leaks == 0);
  CHECK(o.dedup.state == dedup::IndexState::kValid);
  CHECK(o.dedup.entries == 4);
  CHECK(o.dedup.errors == 0);
  CHECK(o.dedup.verified == 4);
}

TEST_CASE("each kind of dedup index damage is found", "[dedup][check]") {
  const Bytes base = dedup_image();
  const DedupExtension e = ext_of(base);
  const uint64_t es = index_entry_size(e.hash_size);
  auto entry = [&](Bytes& b, uint64_t i) { return b.data() + e.index_offset + i * es; };
  struct Case {
    const char* name;
    std::function<void(Bytes&)> damage;
    bool needs_verify;
  };
  const std::vector<Case> cases = {
      {"checksum mismatch", [&](Bytes& b) { entry(b, 3)[es - 1] ^= 1; }, false},
      {"entry pointing at a free cluster",
       [&](Bytes& b) {
         store_be64(entry(b, 1) + e.hash_size, 200 * 4096);
         reseal(b);
       }, false},
      {"entries out of order",
       [&](Bytes& b) {
         std::swap_ranges(entry(b, 0), entry(b, 1), entry(b, 1));
         reseal(b);
       }, false},
      {"two entries for one cluster",
       [&](Bytes& b) {
         std::copy(entry(b, 0) + e.hash_size, entry(b, 1), entry(b, 1) + e.hash_size);
         reseal(b);
       }, false},
      {"wrong hash in the index",
       [&](Bytes& b) {
         entry(b, 2)[e.hash_size - 1] ^= 1;  // keeps the order: only the last byte
         reseal(b);
       }, true},
      {"data changed under the index",
       [&](Bytes& b) {
         uint64_t host = load_be64(entry(b, 0) + e.hash_size);
         b[host + 10] ^= 0xff;
       }, true},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Bytes b = base;
    c.damage(b);
    Outcome plain = check(b, false);
    Outcome full = check(b, true);
    if (c.needs_verify) {
      CHECK(plain.dedup.errors == 0);
      CHECK(full.dedup.errors > 0);
      CHECK(full.dedup.hash_mismatches > 0);
    } else {
      CHECK(plain.dedup.errors > 0);
      CHECK(plain.dedup.state == dedup::IndexState::kDamaged);
    }
    // Rebuilding the index mends it.
    io::MemoryFile f("t", b);
    REQUIRE(rebuild_dedup_index(f, std::make_unique<io::MemoryFile>("s"), 2).is_ok());
    Outcome after = check(f.bytes(), true);
    CHECK(after.dedup.state == dedup::IndexState::kValid);
    CHECK(after.dedup.errors == 0);
    CHECK(after.counts.corruptions == 0);
    CHECK(after.counts.leaks == 0);
  }
}

TEST_CASE("a stale dedup index is reported stale, not corrupt", "[dedup][check]") {
  Bytes b = dedup_image();
  b[qcow2::kOffAutoclearFeatures] &= static_cast<uint8_t>(~(kAutoclearDedupIndex >> 56));
  b[ext_of(b).index_offset] ^= 1;  // stale: not even read
  Outcome o = check(b, true);
  CHECK(o.dedup.state == dedup::IndexState::kStale);
  CHECK(o.dedup.errors == 0);
  CHECK(o.counts.corruptions == 0);
}

TEST_CASE("a crash at any write of an index rebuild leaves a valid or stale index", "[dedup][check][crash]") {
  Bytes b = dedup_image();
  b[qcow2::kOffAutoclearFeatures] &= static_cast<uint8_t>(~(kAutoclearDedupIndex >> 56));
  io::FaultyFile counter(b);
  REQUIRE(rebuild_dedup_index(counter, std::make_unique<io::MemoryFile>("s"), 1).is_ok());
  const uint64_t writes = counter.writes();
  REQUIRE(writes > 0);
  uint64_t states = 0;
  for (uint64_t n = 0; n < writes; ++n) {
    io::FaultyFile f(b);
    f.crash_after_writes(n);
    REQUIRE_FALSE(rebuild_dedup_index(f, std::make_unique<io::MemoryFile>("s"), 1).is_ok());
    std::set<Bytes> seen;
    for (auto which : {io::FaultyFile::Survivors::kFlushedOnly, io::FaultyFile::Survivors::kAll,
                       io::FaultyFile::Survivors::kRandomSubset}) {
      Bytes s = f.image_after_crash(which, 7);
      if (!seen.insert(s).second) continue;
      ++states;
      INFO("crash after write " << n << " of " << writes);
      Outcome o = check(s, true);
      CHECK(o.counts.corruptions == 0);
      CHECK((o.dedup.state == dedup::IndexState::kValid || o.dedup.state == dedup::IndexState::kStale));
      io::MemoryFile again("t", s);
      REQUIRE(rebuild_dedup_index(again, std::make_unique<io::MemoryFile>("s"), 1).is_ok());
      CHECK(check(again.bytes(), true).dedup.state == dedup::IndexState::kValid);
    }
  }
  CHECK(states >= writes);
}
