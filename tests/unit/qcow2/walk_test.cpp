// walk_l2_tables: every L2 table reachable from the active L1 table and the
// snapshots' L1 tables is visited once, with the L1 entries that reference it
// and each entry's cluster type.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <vector>

#include "qcow2/check.h"
#include "qcow2/format.h"
#include "qcow2/walk.h"
#include "support/image_builder.h"
#include "support/write_checks.h"

namespace qdedup::qcow2 {
namespace {

using Bytes = std::vector<uint8_t>;
using image_builder::get_be;
using image_builder::put_be;
using testsupport::open_image;
using testsupport::require_ok;

constexpr uint32_t kClusterBits = 9;  // 64 entries an L2 table: 32 KiB of guest data
constexpr uint64_t kCs = uint64_t{1} << kClusterBits;

// Appends `data` at the next cluster boundary; returns its offset.
uint64_t append_cluster_aligned(Bytes& image, const Bytes& data) {
  uint64_t offset = (image.size() + kCs - 1) / kCs * kCs;
  image.resize(offset, 0);
  image.insert(image.end(), data.begin(), data.end());
  image.resize((image.size() + kCs - 1) / kCs * kCs, 0);
  return offset;
}

struct SharedImage {
  Bytes bytes;
  uint64_t l2[8] = {};       // active L2 table offsets by L1 index (0: none)
  uint64_t l2_copy = 0;      // snapshot 1's own copy of the table of L1 entry 1
};

// 256 KiB, data in guest clusters 0, 1, 70 and 200 (L1 entries 0, 1, 3), a
// zero cluster at 3. Snapshot 0 shares every L2 table with the active L1;
// snapshot 1 shares the table of L1 entry 0, has its own copy of entry 1's
// and no entry 3. (Refcounts are not raised: the walk does not read them.)
SharedImage shared_image() {
  SharedImage s;
  testsupport::Opened o = open_image(testsupport::new_image(testsupport::options(256 * 1024, kClusterBits)));
  for (uint64_t gc : {0, 1, 70, 200}) {
    require_ok(o.img->write_cluster(gc, image_builder::pattern_bytes(kCs, static_cast<uint32_t>(gc))));
  }
  require_ok(o.img->zero_cluster(3));
  require_ok(o.img->close());
  s.bytes = o.bytes();
  const uint64_t l1_offset = get_be(s.bytes, kOffL1TableOffset, 8);
  const uint64_t l1_size = get_be(s.bytes, kOffL1Size, 4);
  REQUIRE(l1_size == 8);
  Bytes l1(s.bytes.begin() + static_cast<std::ptrdiff_t>(l1_offset),
           s.bytes.begin() + static_cast<std::ptrdiff_t>(l1_offset + l1_size * 8));
  for (uint64_t i = 0; i < l1_size; ++i) s.l2[i] = get_be(l1, 8 * i, 8) & kL1eOffsetMask;
  REQUIRE(s.l2[0] != 0);
  REQUIRE(s.l2[1] != 0);
  REQUIRE(s.l2[2] == 0);
  REQUIRE(s.l2[3] != 0);
  uint64_t snap0_l1 = append_cluster_aligned(s.bytes, l1);
  Bytes table1(s.bytes.begin() + static_cast<std::ptrdiff_t>(s.l2[1]),
               s.bytes.begin() + static_cast<std::ptrdiff_t>(s.l2[1] + kCs));
  s.l2_copy = append_cluster_aligned(s.bytes, table1);
  Bytes l1b = l1;
  put_be(l1b, 8 * 1, 8, s.l2_copy);
  put_be(l1b, 8 * 3, 8, 0);
  uint64_t snap1_l1 = append_cluster_aligned(s.bytes, l1b);
  Bytes table = image_builder::snapshot_entry(snap0_l1, 8, "1", "shared");
  Bytes second = image_builder::snapshot_entry(snap1_l1, 8, "2", "own copy");
  table.insert(table.end(), second.begin(), second.end());
  image_builder::append_snapshot_table(s.bytes, kClusterBits, table, 2);
  s.bytes.resize((s.bytes.size() + kCs - 1) / kCs * kCs, 0);
  return s;
}

struct Seen {
  L2TableVisit table;
  std::vector<L2EntryVisit> entries;
};

std::vector<Seen> walk_all(Image& img) {
  std::vector<Seen> seen;
  require_ok(walk_l2_tables(img, [&](const L2TableVisit& t, std::span<const L2EntryVisit> e) {
    seen.push_back({t, std::vector<L2EntryVisit>(e.begin(), e.end())});
    return Status::ok();
  }));
  return seen;
}

bool same(const L1Reference& a, uint32_t snapshot, uint64_t l1_index) {
  return a.snapshot == snapshot && a.l1_index == l1_index;
}

TEST_CASE("walk_l2_tables visits an L2 table shared with snapshots once, with all its references",
          "[qcow2][walk]") {
  SharedImage s = shared_image();
  testsupport::Opened o = open_image(s.bytes, false);
  REQUIRE(o.img->snapshots().size() == 2);
  std::vector<Seen> seen = walk_all(*o.img);

  REQUIRE(seen.size() == 4);
  for (size_t i = 1; i < seen.size(); ++i) REQUIRE(seen[i - 1].table.offset < seen[i].table.offset);
  std::map<uint64_t, const Seen*> by_offset;
  for (const Seen& v : seen) by_offset[v.table.offset] = &v;
  REQUIRE(by_offset.size() == 4);

  const L2TableVisit& t0 = by_offset.at(s.l2[0])->table;
  REQUIRE(t0.reference_count() == 3);
  CHECK(same(t0.references[0], L1Reference::kActive, 0));
  CHECK(same(t0.references[1], 0, 0));
  CHECK(same(t0.references[2], 1, 0));
  CHECK(t0.referenced_by_active());

  const L2TableVisit& t1 = by_offset.at(s.l2[1])->table;
  REQUIRE(t1.reference_count() == 2);
  CHECK(same(t1.references[0], L1Reference::kActive, 1));
  CHECK(same(t1.references[1], 0, 1));

  const L2TableVisit& t3 = by_offset.at(s.l2[3])->table;
  REQUIRE(t3.reference_count() == 2);
  CHECK(same(t3.references[0], L1Reference::kActive, 3));
  CHECK(same(t3.references[1], 0, 3));
  CHECK(t3.references[0].first_guest_cluster(o.img->geometry()) == 192);

  const L2TableVisit& copy = by_offset.at(s.l2_copy)->table;
  REQUIRE(copy.reference_count() == 1);
  CHECK(same(copy.references[0], 1, 1));
  CHECK_FALSE(copy.referenced_by_active());
}

TEST_CASE("walk_l2_tables gives every entry with its offset and cluster type", "[qcow2][walk]") {
  SharedImage s = shared_image();
  testsupport::Opened o = open_image(s.bytes, false);
  const Geometry& g = o.img->geometry();
  std::vector<Seen> seen = walk_all(*o.img);
  for (const Seen& v : seen) {
    REQUIRE(v.entries.size() == g.l2_entries);
    const L1Reference& ref = v.table.references.front();
    for (const L2EntryVisit& e : v.entries) {
      INFO("table " << v.table.offset << " entry " << e.index);
      REQUIRE(e.index == static_cast<uint64_t>(&e - v.entries.data()));
      REQUIRE(e.file_offset == v.table.offset + 8 * e.index);
      REQUIRE(e.entry.word == get_be(s.bytes, e.file_offset, 8));
      REQUIRE(e.type == e.entry.cluster_type(g));
      if (ref.active()) {
        Result<L2Entry> mapped = o.img->l2_entry(ref.first_guest_cluster(g) + e.index);
        REQUIRE(mapped.is_ok());
        REQUIRE(mapped->word == e.entry.word);
      }
    }
  }
  const Seen& t0 = *std::find_if(seen.begin(), seen.end(),
                                 [&](const Seen& v) { return v.table.offset == s.l2[0]; });
  CHECK(t0.entries[0].type == ClusterType::kNormal);
  CHECK(t0.entries[1].type == ClusterType::kNormal);
  CHECK(t0.entries[2].type == ClusterType::kUnallocated);
  CHECK(t0.entries[3].type == ClusterType::kZeroPlain);
  const Seen& copy = *std::find_if(seen.begin(), seen.end(),
                                   [&](const Seen& v) { return v.table.offset == s.l2_copy; });
  CHECK(copy.entries[70 - 64].type == ClusterType::kNormal);
  CHECK(copy.entries[70 - 64].entry.host_offset() == testsupport::host_of(*o.img, 70));
}

TEST_CASE("walk_l2_tables: references times tables give the references check counts",
          "[qcow2][walk]") {
  SharedImage s = shared_image();
  testsupport::Opened o = open_image(s.bytes, false);
  const Geometry& g = o.img->geometry();
  std::map<uint64_t, uint64_t> references;  // data cluster -> references
  require_ok(walk_l2_tables(*o.img, [&](const L2TableVisit& t, std::span<const L2EntryVisit> es) {
    for (const L2EntryVisit& e : es) {
      if (e.type == ClusterType::kNormal || e.type == ClusterType::kZeroAlloc) {
        references[e.entry.host_offset() >> g.cluster_bits] += t.reference_count();
      }
    }
    return Status::ok();
  }));
  REQUIRE(references.size() == 4);
  image_builder::SpanFile file(s.bytes);
  Result<CheckAnalysis> a = analyse_image(file, CheckOptions{});
  REQUIRE(a.is_ok());
  for (const auto& [cluster, n] : references) {
    INFO("cluster " << cluster);
    CHECK(a->computed.get(cluster) == n);
  }
  CHECK(references.at(testsupport::host_of(*o.img, 0) >> g.cluster_bits) == 3);
  CHECK(references.at(testsupport::host_of(*o.img, 200) >> g.cluster_bits) == 2);
}

TEST_CASE("walk_l2_tables refuses an L1 entry whose L2 table is not cluster aligned",
          "[qcow2][walk]") {
  testsupport::Opened o = open_image(testsupport::new_image(testsupport::options(1 << 20, 12)), false);
  std::vector<uint64_t> l1 = o.img->l1_table();
  REQUIRE(!l1.empty());
  l1[0] = 0x3200;  // 512-byte aligned, inside a 4 KiB cluster
  bool called = false;
  Status st = walk_l2_tables(o.img->file(), o.img->geometry(), l1, {},
                             [&](const L2TableVisit&, std::span<const L2EntryVisit>) {
                               called = true;
                               return Status::ok();
                             });
  CHECK(st.code() == StatusCode::kCorruption);
  CHECK_FALSE(called);
}

TEST_CASE("walk_l2_tables stops at the first failing visit and returns its status",
          "[qcow2][walk]") {
  SharedImage s = shared_image();
  testsupport::Opened o = open_image(s.bytes, false);
  int calls = 0;
  Status st = walk_l2_tables(*o.img, [&](const L2TableVisit&, std::span<const L2EntryVisit>) {
    ++calls;
    return io_error("stop");
  });
  CHECK(st.code() == StatusCode::kIoError);
  CHECK(calls == 1);
}

}  // namespace
}  // namespace qdedup::qcow2
