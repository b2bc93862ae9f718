// Crash safety of the write path, by fault injection at every write.
//
// Each scenario is a list of Image operations on a base image. It runs once
// without faults to count its writes W; then, for every N in 0..W, it runs on
// a FaultyFile that "crashes" after N writes, and every plausible disk state
// after that crash (only flushed writes; every write; random subsets of the
// unflushed writes) must:
//   - have no refcount below its references and no COPIED flag on a cluster
//     whose refcount is not 1 (leaks and missing COPIED are allowed);
//   - open, and read every guest cluster as either one of the contents it
//     had since the last completed flush or its content at that flush;
//   - keep every internal snapshot's view unchanged;
//   - stay usable: re-opened writable it closes, takes one more write, and
//     is still consistent.
// The scenarios and the checks of each crash state are in
// support/crash_harness.h; ENOSPC is tested in crash_nospace_test.cpp.
#include <catch2/catch.hpp>
#include <memory>
#include <vector>

#include "io/memory_file.h"
#include "qcow2/create.h"
#include "qcow2/image.h"
#include "support/crash_harness.h"
#include "support/refcheck.h"
#include "support/write_checks.h"

namespace qdedup::qcow2 {
namespace {

using testsupport::options;
using testsupport::refcheck;
using testsupport::RefCheckReport;
using testsupport::crash::across_refcount_blocks;
using testsupport::crash::crash_at_every_write;
using testsupport::crash::fresh_writes;
using testsupport::crash::links;
using testsupport::crash::open_on;
using testsupport::crash::over_compressed;
using testsupport::crash::overwrites;
using testsupport::crash::prepare;
using testsupport::crash::refcount_evictions_of;
using testsupport::crash::refcount_growth;
using testsupport::crash::rewrite_both_sharers;
using testsupport::crash::Scenario;
using testsupport::crash::with_snapshot;
using testsupport::crash::zeros;

}  // namespace

TEST_CASE("a crash at any write leaves a consistent image: fresh writes", "[qcow2][crash]") {
  crash_at_every_write(fresh_writes(options(1 << 20), "fresh image"));
  CreateOptions one_bit = options(1 << 20);
  one_bit.refcount_order = 0;
  crash_at_every_write(fresh_writes(one_bit, "fresh image, 1-bit refcounts"));
  CreateOptions v2 = options(1 << 20);
  v2.version = 2;
  crash_at_every_write(fresh_writes(v2, "fresh v2 image"));
}

TEST_CASE("a crash at any write leaves a consistent image: overwrites", "[qcow2][crash]") {
  crash_at_every_write(overwrites(options(1 << 20), "overwrite"));
  CreateOptions ext = options(1 << 20);
  ext.extended_l2 = true;
  crash_at_every_write(overwrites(ext, "overwrite, extended L2"));
}

TEST_CASE("a crash at any write leaves a consistent image: dedup links", "[qcow2][crash]") {
  crash_at_every_write(links(options(1 << 20), "links"));
  CreateOptions wide = options(1 << 20, 12);
  wide.refcount_order = 6;
  crash_at_every_write(links(wide, "links, 4 KiB clusters, 64-bit refcounts"));
  CreateOptions ext = options(1 << 20);
  ext.extended_l2 = true;
  crash_at_every_write(links(ext, "links, extended L2"));
}

TEST_CASE("a crash at any write leaves a consistent image: rewriting both sharers",
          "[qcow2][crash]") {
  crash_at_every_write(rewrite_both_sharers(options(1 << 20), "rewrite both sharers"));
}

TEST_CASE("a crash at any write leaves a consistent image: zero clusters", "[qcow2][crash]") {
  crash_at_every_write(zeros(options(1 << 20), "zero clusters"));
  CreateOptions v2 = options(1 << 20);
  v2.version = 2;
  crash_at_every_write(zeros(v2, "zero clusters, v2"));
  CreateOptions ext = options(1 << 20);
  ext.extended_l2 = true;
  crash_at_every_write(zeros(ext, "zero clusters, extended L2"));
}

TEST_CASE("a crash at any write leaves a consistent image: new refcount block", "[qcow2][crash]") {
  // 16-bit refcounts at 512-byte clusters: a block covers 256 clusters.
  crash_at_every_write(refcount_growth(4, 250, "new refcount block"));
}

TEST_CASE("a crash at any write leaves a consistent image: refcount table growth",
          "[qcow2][crash]") {
  crash_at_every_write(refcount_growth(6, 4080, "refcount table growth"));
}

TEST_CASE("a crash at any write leaves a consistent image: refcount cache evictions",
          "[qcow2][crash]") {
  crash_at_every_write(across_refcount_blocks("one refcount block cached"));
}

TEST_CASE("the refcount eviction scenario evicts", "[qcow2][crash]") {
  Scenario s = across_refcount_blocks("evictions");
  CHECK(refcount_evictions_of(s) >= 5);
  s.refcount_cache_blocks = 0;  // the default budget: everything stays cached
  CHECK(refcount_evictions_of(s) == 0);
}

TEST_CASE("the refcount growth scenarios grow what they claim to", "[qcow2][crash]") {
  auto table_clusters = [](const std::vector<uint8_t>& b) {
    auto f = std::make_unique<io::MemoryFile>("x", b);
    Result<std::unique_ptr<Image>> img = open_on(std::move(f), false);
    REQUIRE(img.is_ok());
    return (*img)->header().refcount_table_clusters;
  };
  Scenario growth = refcount_growth(6, 4080, "growth");
  REQUIRE(table_clusters(growth.base) == 1);
  std::vector<uint8_t> after = prepare(growth.base, growth.ops);
  REQUIRE(table_clusters(after) > 1);
  Scenario block = refcount_growth(4, 250, "block");
  RefCheckReport before = refcheck(block.base);
  RefCheckReport r = refcheck(prepare(block.base, block.ops));
  REQUIRE(before.file_clusters < 256);
  REQUIRE(r.file_clusters > 256);
}

TEST_CASE("a crash at any write leaves a consistent image: internal snapshot",
          "[qcow2][crash][snapshot]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  crash_at_every_write(with_snapshot());
}

TEST_CASE("a crash at any write leaves a consistent image: compressed clusters",
          "[qcow2][crash][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  crash_at_every_write(over_compressed());
}

}  // namespace qdedup::qcow2
