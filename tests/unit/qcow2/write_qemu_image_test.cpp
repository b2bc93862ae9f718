// Writes through qcow2::Image into images that qemu made: an internal snapshot
// that shares L2 tables and data with the active disk, compressed clusters
// packed into one host cluster, and ZERO_ALLOC clusters. Reads, refcounts and
// COPIED flags must stay exact (support/refcheck.h), snapshot views unchanged,
// and `qemu-img check` clean. Skipped when qemu-img/qemu-io are missing.
#include <catch2/catch.hpp>
#include <vector>

#include "qcow2/format.h"
#include "qcow2/geometry.h"
#include "qcow2/image.h"
#include "support/refcheck.h"
#include "support/write_checks.h"

namespace qdedup::qcow2 {
namespace {

using namespace testsupport;  // write_checks.h

}  // namespace

TEST_CASE("writes into an image with an internal snapshot copy shared L2 tables and data",
          "[qcow2][write][snapshot]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // 4 KiB clusters: an L2 table maps 2 MiB, so the disk has four of them.
  // After the snapshot qemu itself writes into the fourth, copying that L2
  // table; the first stays shared with the snapshot.
  Result<std::vector<uint8_t>> made = testsupport::run_qemu_script(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 8M\n"
      "qemu-io -c 'write -P 0x11 0 8k' -c 'write -P 0x22 16k 4k' "
      "-c 'write -P 0x33 28k 4k' -c 'write -P 0x55 6M 8k' \"$IMG\"\n"
      "qemu-img snapshot -c s1 \"$IMG\"\n"
      "qemu-io -c 'write -P 0x44 6M 4k' \"$IMG\"\n");
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  const std::vector<uint8_t> base = *made;
  {
    RefCheckReport r = refcheck(base);
    INFO("refcheck disagrees with qemu on qemu's own image: " << r.summary());
    REQUIRE(r.clean());
  }
  Result<std::vector<testsupport::SnapshotRef>> snaps = testsupport::list_snapshots(base);
  REQUIRE(snaps.is_ok());
  REQUIRE(snaps->size() == 1);
  REQUIRE((*snaps)[0].name == "s1");
  const uint64_t clusters = 2048;
  const uint64_t far = 1536;  // 6 MiB: under the L2 table qemu already copied
  std::vector<std::vector<uint8_t>> snap_view;
  for (uint64_t gc = 0; gc < clusters; ++gc) {
    Result<std::vector<uint8_t>> c = testsupport::read_guest_cluster(base, gc, 0);
    REQUIRE(c.is_ok());
    snap_view.push_back(*c);
  }
  REQUIRE(snap_view[0] == std::vector<uint8_t>(4096, 0x11));
  REQUIRE(snap_view[7] == std::vector<uint8_t>(4096, 0x33));
  REQUIRE(snap_view[far] == std::vector<uint8_t>(4096, 0x55));

  Opened o = open_image(base);
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 4096);
  for (uint64_t gc = 0; gc < clusters; ++gc) {
    Result<std::vector<uint8_t>> c = testsupport::read_guest_cluster(base, gc);
    REQUIRE(c.is_ok());
    m.write_cluster(gc, *c);
  }
  REQUIRE(m.cluster(far) == std::vector<uint8_t>(4096, 0x44));
  const uint64_t shared_l2 = img.l1_table()[0] & kL1eOffsetMask;
  REQUIRE_FALSE(img.l1_table()[0] & kOflagCopied);
  REQUIRE(img.l1_table()[3] & kOflagCopied);
  REQUIRE(refcount_of(img, shared_l2) == 2);
  const uint64_t data0 = host_of(img, 0);
  const uint64_t data1 = host_of(img, 1);
  const uint64_t data_far = host_of(img, far);
  REQUIRE(refcount_of(img, data0) == 2);
  REQUIRE(refcount_of(img, data_far) == 1);

  require_ok(img.write_cluster(0, pattern_cluster(4096, 5)));
  m.write_cluster(0, pattern_cluster(4096, 5));
  const uint64_t own_l2 = img.l1_table()[0] & kL1eOffsetMask;
  REQUIRE(own_l2 != shared_l2);
  REQUIRE(host_of(img, 0) != data0);
  REQUIRE(host_of(img, 1) == data1);  // the copied table keeps the shared data
  std::vector<uint8_t> part(1000, 0x66);
  require_ok(img.write(4 * 4096 + 100, part));
  m.write(4 * 4096 + 100, part);
  require_ok(img.link_cluster(10, data1, std::nullopt));  // shared with the snapshot
  m.copy_cluster(10, 1);
  require_ok(img.zero_cluster(1));
  m.zero_cluster(1);
  require_ok(img.link_cluster(11, data_far, far));  // owned by the active disk only
  m.copy_cluster(11, far);
  require_ok(img.write_cluster(far, pattern_cluster(4096, 6)));
  m.write_cluster(far, pattern_cluster(4096, 6));
  close_and_verify(o, m);

  Opened ro = open_image(o.bytes(), false);
  REQUIRE(ro.img->l1_table()[0] & kOflagCopied);
  REQUIRE(stored_refcount(ro, own_l2) == 1);
  REQUIRE(stored_refcount(ro, shared_l2) == 1);
  REQUIRE(stored_refcount(ro, data0) == 1);
  REQUIRE(stored_refcount(ro, data1) == 2);  // snapshot + guest cluster 10
  REQUIRE(stored_refcount(ro, data_far) == 1);
  REQUIRE(entry_of(*ro.img, 11).copied());
  for (uint64_t gc = 0; gc < clusters; ++gc) {
    Result<std::vector<uint8_t>> c = testsupport::read_guest_cluster(o.bytes(), gc, 0);
    REQUIRE(c.is_ok());
    INFO("snapshot view of guest cluster " << gc);
    REQUIRE(*c == snap_view[gc]);
  }
  require_qemu_check_clean(o.bytes());
}

TEST_CASE("overwriting compressed clusters releases the host clusters they share",
          "[qcow2][write][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // Four compressed clusters of a repeated byte pack into one host cluster
  // (refcount 4); the fifth is incompressible-ish data, stored compressed.
  Result<std::vector<uint8_t>> made = testsupport::run_qemu_script(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 64k\n"
      "qemu-io -c 'write -c -P 0x11 0 4k' -c 'write -c -P 0x22 4k 4k' "
      "-c 'write -c -P 0x33 8k 4k' -c 'write -c -P 0x44 12k 4k' \"$IMG\"\n");
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  {
    RefCheckReport r = refcheck(*made);
    INFO(r.summary());
    REQUIRE(r.clean());
  }
  Opened o = open_image(*made);
  Image& img = *o.img;
  REQUIRE(entry_of(img, 0).compressed());
  const uint64_t packed =
      compressed_range(img.geometry(), entry_of(img, 0)).offset & ~uint64_t{4095};
  REQUIRE(refcount_of(img, packed) >= 2);
  DiskModel m(img.virtual_size(), 4096);
  for (uint64_t gc = 0; gc < 16; ++gc) {
    Result<std::vector<uint8_t>> c = testsupport::read_guest_cluster(*made, gc);
    INFO(c.status().message());
    REQUIRE(c.is_ok());
    m.write_cluster(gc, *c);
  }
  REQUIRE(m.cluster(3) == std::vector<uint8_t>(4096, 0x44));
  require_reads(img, m);
  require_ok(img.write_cluster(0, pattern_cluster(4096, 1)));
  m.write_cluster(0, pattern_cluster(4096, 1));
  std::vector<uint8_t> part(10, 0x99);
  require_ok(img.write(4096 + 4000, part));  // merges with the decompressed data
  m.write(4096 + 4000, part);
  require_ok(img.zero_cluster(2));
  m.zero_cluster(2);
  close_and_verify(o, m);
  Opened ro = open_image(o.bytes(), false);
  REQUIRE(entry_of(*ro.img, 3).compressed());
  require_qemu_check_clean(o.bytes());
}

TEST_CASE("ZERO_ALLOC clusters made by qemu are overwritten in place or released",
          "[qcow2][write][zero]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // write -z on allocated clusters keeps their host clusters: ZERO_ALLOC.
  Result<std::vector<uint8_t>> made = testsupport::run_qemu_script(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 64k\n"
      "qemu-io -c 'write -P 0x11 0 16k' -c 'write -z 0 12k' \"$IMG\"\n");
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  Opened o = open_image(*made);
  Image& img = *o.img;
  for (uint64_t gc = 0; gc < 3; ++gc) {
    REQUIRE(entry_of(img, gc).type(img.geometry()) == ClusterType::kZeroAlloc);
  }
  require_clean(*made);
  const uint64_t host0 = host_of(img, 0);
  const uint64_t host1 = host_of(img, 1);
  DiskModel m(img.virtual_size(), 4096);
  m.write_cluster(3, std::vector<uint8_t>(4096, 0x11));
  require_reads(img, m);
  require_ok(img.write_cluster(0, pattern_cluster(4096, 1)));  // owned: in place
  m.write_cluster(0, pattern_cluster(4096, 1));
  REQUIRE(host_of(img, 0) == host0);
  REQUIRE(entry_of(img, 0).copied());
  require_ok(img.zero_cluster(1));  // a plain zero cluster; host cluster freed
  require_ok(img.link_cluster(5, host_of(img, 3), 3));
  m.copy_cluster(5, 3);
  close_and_verify(o, m);
  REQUIRE(stored_refcount(o, host1) == 0);
  require_qemu_check_clean(o.bytes());
}

}  // namespace qdedup::qcow2
