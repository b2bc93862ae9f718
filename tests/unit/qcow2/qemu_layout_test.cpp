// plan_new_image: the model of QEMU's cluster allocator places each structure of a new
// image where qemu-img create (QEMU 7.2) puts it. The expected clusters were read off
// images stock qemu-img made; tests/interop/create_prealloc.sh compares whole files.
#include "qcow2/qemu_layout.h"

#include <catch2/catch.hpp>

#include "qcow2/format.h"
#include "qcow2/header.h"

namespace qdedup::qcow2 {
namespace {

Geometry geometry(uint32_t cluster_bits, uint64_t size, uint32_t refcount_order = 4) {
  Header h;
  h.cluster_bits = cluster_bits;
  h.refcount_order = refcount_order;
  h.size = size;
  return Geometry::from_header(h);
}

Result<NewImageLayout> plan(const Geometry& g, Preallocation mode) {
  return plan_new_image(g, g.l1_entries_for(g.virtual_size), mode);
}

TEST_CASE("qemu layout: 64 MiB, no preallocation", "[qemu_layout]") {
  auto l = plan(geometry(16, 64 << 20), Preallocation::kOff);
  REQUIRE(l.is_ok());
  CHECK(l->reftable == 1);
  CHECK(l->refblocks[0] == 2);
  CHECK(l->l1 == 3);
  CHECK(l->data.empty());
  CHECK(l->file_size == 3 * 65536 + 8);  // the L1 table is not padded
}

TEST_CASE("qemu layout: an empty image has no L1 table", "[qemu_layout]") {
  auto l = plan(geometry(16, 0), Preallocation::kOff);
  REQUIRE(l.is_ok());
  CHECK(l->l1 == 0);
  CHECK(l->file_size == 3 * 65536);
}

TEST_CASE("qemu layout: metadata puts each L2 table before its data", "[qemu_layout]") {
  auto l = plan(geometry(16, 64 << 20), Preallocation::kMetadata);
  REQUIRE(l.is_ok());
  REQUIRE(l->l2.size() == 1);
  CHECK(l->l2[0] == 4);
  REQUIRE(l->data.size() == 1);
  CHECK(l->data[0].host == 5);
  CHECK(l->data[0].count == 1024);
  CHECK(l->file_size == 1029 * 65536);
}

TEST_CASE("qemu layout: falloc moves the refcount table and reuses its cluster",
          "[qemu_layout]") {
  auto l = plan(geometry(16, 64 << 20), Preallocation::kFalloc);
  REQUIRE(l.is_ok());
  CHECK(l->reftable == 4);
  REQUIRE(l->l2.size() == 1);
  CHECK(l->l2[0] == 1);
  REQUIRE(l->data.size() == 1);
  CHECK(l->data[0].host == 5);
  CHECK(l->file_size == 1029 * 65536);
}

TEST_CASE("qemu layout: refcount blocks for a large L1 table", "[qemu_layout]") {
  // 512-byte clusters, 4 GiB: a 1 MiB L1 table at cluster 3. Block 1 goes to 2051,
  // which block 8 describes: block 8 is made first, at 2052, and block 2 follows at
  // 2053, as QEMU's alloc_refcount_block does.
  auto l = plan(geometry(9, 4ull << 30), Preallocation::kOff);
  REQUIRE(l.is_ok());
  CHECK(l->l1 == 3);
  CHECK(l->refblocks[1] == 2051);
  CHECK(l->refblocks[8] == 2052);
  CHECK(l->refblocks[2] == 2053);
  CHECK(l->file_size == 2059 * 512);
}

TEST_CASE("qemu layout: a cluster that needs a new block is tried again", "[qemu_layout]") {
  // 512-byte clusters, 64-bit refcounts: a block describes 64 clusters. The L2 table
  // of guest range 30 first lands on 1984, whose block is missing: the block goes to
  // 1985 and the table back to 1984 (-EAGAIN: "try the same ones first").
  auto l = plan(geometry(9, 1 << 20, 6), Preallocation::kMetadata);
  REQUIRE(l.is_ok());
  REQUIRE(l->l2.size() == 32);
  CHECK(l->refblocks[31] == 1985);
  CHECK(l->l2[30] == 1984);
  CHECK(l->l2[31] == 2051);
  CHECK(l->file_size == 2117 * 512);
}

TEST_CASE("qemu layout: a partial last cluster ends with its zero tail", "[qemu_layout]") {
  // 102912 bytes = one cluster and 37376 bytes: QEMU's copy-on-write writes zeros to the
  // end of the cluster, or of the subcluster (2 KiB) with extended L2 entries.
  auto l = plan(geometry(16, 102912), Preallocation::kMetadata);
  REQUIRE(l.is_ok());
  CHECK(l->zero_tail_offset == 6 * 65536 + 37376);
  CHECK(l->zero_tail_bytes == 65536 - 37376);
  CHECK(l->file_size == 7 * 65536);
  Header h;
  h.cluster_bits = 16;
  h.size = 102912;
  h.incompatible_features = kIncompatExtendedL2;
  auto x = plan(Geometry::from_header(h), Preallocation::kMetadata);
  REQUIRE(x.is_ok());
  CHECK(x->zero_tail_bytes == 38912 - 37376);
  CHECK(x->file_size == 6 * 65536 + 38912);
}

TEST_CASE("qemu layout: an outgrown refcount table is kept with its entries", "[qemu_layout]") {
  // 512-byte clusters: the one-cluster table describes 64 blocks of 256 clusters.
  auto l = plan(geometry(9, 24 << 20), Preallocation::kMetadata);
  REQUIRE(l.is_ok());
  REQUIRE(!l->old_tables.empty());
  CHECK(l->old_tables[0].cluster == 1);
  CHECK(l->old_tables[0].refblocks[0] == 2);
  CHECK(l->reftable != 1);
}

TEST_CASE("qemu layout: host offsets stop at 2^56", "[qemu_layout]") {
  // 2 MiB clusters, 2^57 bytes preallocated: QEMU fails with -EFBIG.
  auto l = plan(geometry(21, 1ull << 57), Preallocation::kFalloc);
  CHECK(!l.is_ok());
}

}  // namespace
}  // namespace qdedup::qcow2
