// The write path of qcow2::Image on images held in memory: data reads back,
// and the refcounts and COPIED flags that an independent checker
// (support/refcheck.h) recomputes from scratch are exactly right after close().
// Sharing clusters is in write_link_test.cpp, images made by qemu in
// write_qemu_image_test.cpp.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <vector>

#include "qcow2/create.h"
#include "qcow2/format.h"
#include "qcow2/image.h"
#include "support/refcheck.h"
#include "support/write_checks.h"
#include "util/endian.h"

namespace qdedup::qcow2 {
namespace {

using namespace testsupport;  // write_checks.h

// A workload using every write primitive; `can_link` is false for 1-bit
// refcounts.
void run_mixed_workload(Opened& o, DiskModel& m, bool can_link) {
  Image& img = *o.img;
  const uint64_t cs = img.geometry().cluster_size;
  const uint64_t last = img.geometry().guest_clusters - 1;
  auto wc = [&](uint64_t gc, uint32_t p) {
    std::vector<uint8_t> d = pattern_cluster(cs, p);
    require_ok(img.write_cluster(gc, d));
    m.write_cluster(gc, d);
  };
  auto w = [&](uint64_t off, uint64_t len, uint32_t p) {
    std::vector<uint8_t> d = pattern_cluster(len, p);
    require_ok(img.write(off, d));
    m.write(off, d);
  };
  wc(0, 1);
  wc(3, 2);
  wc(last, 3);
  w(cs - 100, 300, 4);            // owned cluster 0 in place, new cluster 1
  w(2 * cs + 7, 2 * cs + 13, 5);  // partial 2 (new), whole 3 (owned), partial 4
  require_ok(img.flush());
  require_ok(img.zero_cluster(3));
  m.zero_cluster(3);
  require_ok(img.zero_cluster(6));  // never allocated
  m.zero_cluster(6);
  if (can_link) {
    require_ok(img.link_cluster(5, host_of(img, 0), 0));
    m.copy_cluster(5, 0);
    REQUIRE(refcount_of(img, host_of(img, 0)) == 2);
    wc(0, 6);  // shared: copy on write, 5 keeps the old data
    require_ok(img.link_cluster(7, host_of(img, 1), 1));
    m.copy_cluster(7, 1);
    w(7 * cs + 1, 10, 7);  // partial write to a sharer
  }
  wc(1, 8);
}

}  // namespace

TEST_CASE("write primitives read back and leave exact refcounts and COPIED flags",
          "[qcow2][write]") {
  struct Config {
    const char* name;
    CreateOptions o;
  };
  CreateOptions v2 = options(1 << 20);
  v2.version = 2;
  CreateOptions ext = options(1 << 20);
  ext.extended_l2 = true;
  CreateOptions lazy = options(1 << 20);
  lazy.lazy_refcounts = true;
  Config configs[] = {
      {"v3, 64 KiB clusters", options(1 << 20)},
      {"v2 (compat 0.10)", v2},
      {"extended L2", ext},
      {"lazy_refcounts option", lazy},
      {"512-byte clusters", options(64 << 10, 9)},
      {"4 KiB clusters", options(256 << 10, 12)},
      {"2 MiB clusters", options(20 << 20, 21)},
  };
  for (const Config& c : configs) {
    SECTION(c.name) {
      Opened o = open_image(new_image(c.o));
      DiskModel m(o.img->virtual_size(), o.img->geometry().cluster_size);
      run_mixed_workload(o, m, true);
      close_and_verify(o, m);
      require_qemu_check_clean(o.bytes());

      // A second session on the closed image stays exact too.
      Opened again = open_image(o.bytes());
      std::vector<uint8_t> d = pattern_cluster(again.img->geometry().cluster_size, 99);
      require_ok(again.img->write_cluster(5, d));  // was shared with nothing now
      m.write_cluster(5, d);
      require_ok(again.img->link_cluster(2, host_of(*again.img, 5), 5));
      m.copy_cluster(2, 5);
      close_and_verify(again, m);
    }
  }
}

TEST_CASE("write merges partial, unaligned and spanning writes", "[qcow2][write]") {
  Opened o = open_image(new_image(options(1 << 20, 12)));
  DiskModel m(o.img->virtual_size(), 4096);
  struct Piece {
    uint64_t offset, length;
  };
  Piece pieces[] = {{0, 1},        {4095, 2},      {100, 10000},       {8192, 4096},
                    {12287, 8194}, {65536 - 3, 3}, {(1 << 20) - 5, 5}, {3 * 4096 + 17, 1}};
  uint32_t p = 1;
  for (const Piece& piece : pieces) {
    std::vector<uint8_t> d = pattern_cluster(piece.length, p++);
    require_ok(o.img->write(piece.offset, d));
    m.write(piece.offset, d);
  }
  std::vector<uint8_t> one(1);
  REQUIRE(o.img->write(1 << 20, one).code() == StatusCode::kInvalidArgument);
  require_reads(*o.img, m);
  close_and_verify(o, m);
}

TEST_CASE("every refcount width from 1 to 64 bits stays exact", "[qcow2][write][refcount]") {
  uint32_t order = GENERATE(0u, 1u, 2u, 3u, 4u, 5u, 6u);
  CAPTURE(order);
  CreateOptions c = options(1 << 20, 9);
  c.refcount_order = order;
  Opened o = open_image(new_image(c));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 512);
  run_mixed_workload(o, m, order > 0);
  const uint64_t max = img.geometry().refcount_max;
  if (order > 0) {
    // Share one cluster as widely as the width allows (at most 8 times).
    uint64_t host = host_of(img, 4);
    for (uint64_t i = 0; i < 8 && refcount_of(img, host) < max; ++i) {
      require_ok(img.link_cluster(100 + i, host, 4));
      m.copy_cluster(100 + i, 4);
    }
    if (refcount_of(img, host) == max) {
      // Full: one more reference is refused, without damage.
      REQUIRE_FALSE(img.link_cluster(200, host, 4).is_ok());
    }
  }
  // Enough writes to need several refcount blocks at the wider widths.
  for (uint64_t gc = 400; gc < 1000; ++gc) {
    std::vector<uint8_t> d = pattern_cluster(512, static_cast<uint32_t>(gc + 1000));
    require_ok(img.write_cluster(gc, d));
    m.write_cluster(gc, d);
  }
  close_and_verify(o, m);
  require_qemu_check_clean(o.bytes());
}

TEST_CASE("20000 writes at 512-byte clusters add refcount blocks and grow the reftable",
          "[qcow2][write][refcount]") {
  const uint64_t n = 20000;
  Opened o = open_image(new_image(options(16 << 20, 9)));
  Image& img = *o.img;
  const uint64_t table_before = img.header().refcount_table_offset;
  REQUIRE(img.header().refcount_table_clusters == 1);
  bool flush_often = GENERATE(false, true);
  CAPTURE(flush_often);
  DiskModel m(img.virtual_size(), 512);
  for (uint64_t i = 0; i < n; ++i) {
    // Spread over the disk so that many L2 tables are allocated too.
    uint64_t gc = (i * 7) % img.geometry().guest_clusters;
    std::vector<uint8_t> d = pattern_cluster(512, static_cast<uint32_t>(i + 1));
    Status s = img.write_cluster(gc, d);
    if (!s.is_ok()) FAIL("write " << i << ": " << s.message());
    m.write_cluster(gc, d);
    if (flush_often && i % 997 == 0) require_ok(img.flush());
  }
  require_ok(img.close());
  REQUIRE(img.header().refcount_table_offset != table_before);
  REQUIRE(img.header().refcount_table_clusters > 1);
  RefCheckReport r = refcheck(o.bytes());
  INFO(r.summary());
  REQUIRE(r.clean());
  REQUIRE(r.file_clusters > n);
  require_reads(img, m);
  Opened ro = open_image(o.bytes(), false);
  REQUIRE(ro.img->header().refcount_table_clusters > 1);
  require_reads(*ro.img, m);
  require_qemu_check_clean(o.bytes());
}

TEST_CASE("compat 0.10 zero_cluster without a backing file unallocates", "[qcow2][write][v2]") {
  CreateOptions c = options(1 << 20);
  c.version = 2;
  Opened o = open_image(new_image(c));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 65536);
  require_ok(img.write_cluster(1, pattern_cluster(65536, 1)));
  require_ok(img.write_cluster(2, pattern_cluster(65536, 2)));
  m.write_cluster(2, pattern_cluster(65536, 2));
  require_ok(img.flush());
  const uint64_t host1 = host_of(img, 1);
  require_ok(img.zero_cluster(1));  // allocated: becomes unallocated
  require_ok(img.zero_cluster(3));  // never allocated: stays so
  REQUIRE(entry_of(img, 1).word == 0);
  REQUIRE(entry_of(img, 3).word == 0);
  close_and_verify(o, m);
  Opened ro = open_image(o.bytes(), false);
  REQUIRE(ro.img->header().version == 2);
  REQUIRE(entry_of(*ro.img, 1).word == 0);
  REQUIRE(entry_of(*ro.img, 3).word == 0);
  REQUIRE(stored_refcount(ro, host1) == 0);
  require_qemu_check_clean(o.bytes());
}


// The image names a backing file that is not opened (convert -n opens the
// target alone): an unallocated cluster would show the backing file's data to
// QEMU, so the zeros must be written.
TEST_CASE("compat 0.10 zero_cluster with a backing file writes zeros, opened or not",
          "[qcow2][write][v2]") {
  CreateOptions c = options(1 << 20);
  c.version = 2;
  c.backing_file = "base.qcow2";
  c.backing_format = "qcow2";
  Opened o = open_image(new_image(c));
  Image& img = *o.img;
  REQUIRE(img.backing() == nullptr);
  require_ok(img.write_cluster(1, pattern_cluster(65536, 1)));
  require_ok(img.flush());
  require_ok(img.zero_cluster(1));  // allocated: its data becomes zeros
  require_ok(img.zero_cluster(3));  // never allocated: now allocated, zeros
  for (uint64_t gc : {1, 3}) {
    L2Entry e = entry_of(img, gc);
    REQUIRE(e.type(img.geometry()) == ClusterType::kNormal);
    std::vector<uint8_t> got(65536, 0xff);
    require_ok(img.file().read_or_zero(e.host_offset(), got));
    REQUIRE(std::all_of(got.begin(), got.end(), [](uint8_t b) { return b == 0; }));
  }
  require_ok(img.close());
}

TEST_CASE("set_autoclear refuses a version 2 image, whose header has no such field",
          "[qcow2][write][v2]") {
  CreateOptions c = options(1 << 20);
  c.version = 2;
  Opened o = open_image(new_image(c));
  const std::vector<uint8_t> before = o.bytes();
  Status st = o.img->set_autoclear(uint64_t{1} << 62);
  REQUIRE(st.code() == StatusCode::kInvalidArgument);
  REQUIRE(o.bytes() == before);
}
TEST_CASE("extended L2 entries: whole clusters allocated, zero clusters by bitmap",
          "[qcow2][write][extended_l2]") {
  CreateOptions c = options(1 << 20);
  c.extended_l2 = true;
  Opened o = open_image(new_image(c));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 65536);
  require_ok(img.write_cluster(0, pattern_cluster(65536, 1)));
  m.write_cluster(0, pattern_cluster(65536, 1));
  require_ok(img.write_cluster(1, pattern_cluster(65536, 2)));
  require_ok(img.zero_cluster(1));
  require_ok(img.zero_cluster(2));
  std::vector<uint8_t> small = pattern_cluster(100, 3);
  require_ok(img.write(3 * 65536 + 5000, small));  // a partial write allocates all
  m.write(3 * 65536 + 5000, small);
  REQUIRE(entry_of(img, 0).bitmap == kBitmapAllAllocated);
  REQUIRE(entry_of(img, 3).bitmap == kBitmapAllAllocated);
  REQUIRE(entry_of(img, 1).bitmap == kBitmapAllZero);
  REQUIRE(entry_of(img, 1).host_offset() == 0);
  REQUIRE(entry_of(img, 2).bitmap == kBitmapAllZero);
  close_and_verify(o, m);
  require_qemu_check_clean(o.bytes());
}

TEST_CASE("a virtual size that ends inside a cluster is written up to its end", "[qcow2][write]") {
  Opened o = open_image(new_image(options(100000)));  // rounded up to 100352
  Image& img = *o.img;
  REQUIRE(img.virtual_size() == 100352);
  DiskModel m(2 * 65536, 65536);  // the model's second cluster is longer than the disk
  std::vector<uint8_t> tail = pattern_cluster(1000, 3);
  require_ok(img.write(100352 - 1000, tail));
  m.write(100352 - 1000, tail);
  std::vector<uint8_t> one(1, 0x5A);
  REQUIRE_FALSE(img.write(100352, one).is_ok());
  require_ok(img.close());
  require_clean(o.bytes());
  std::vector<uint8_t> buf(100352);
  require_ok(img.read(0, buf));
  REQUIRE(std::equal(buf.begin(), buf.end(), m.bytes().begin()));
}

TEST_CASE("L2 cache eviction in the middle of writes and links keeps the image exact",
          "[qcow2][write][cache]") {
  // 2 MiB clusters: the cache keeps 32 tables, each mapping 512 GiB, so 40
  // writes 512 GiB apart evict it.
  CreateOptions c = options(uint64_t{40} << 39, 21);
  Opened o = open_image(new_image(c));
  Image& img = *o.img;
  const uint64_t cs = img.geometry().cluster_size;
  const uint64_t per_table = img.geometry().l2_entries;
  std::map<uint64_t, std::vector<uint8_t>> model;
  for (uint64_t t = 0; t < 40; ++t) {
    std::vector<uint8_t> d = pattern_cluster(cs, static_cast<uint32_t>(t + 1));
    require_ok(img.write_cluster(t * per_table, d));
    model[t * per_table] = d;
    if (t >= 2) {
      // Share the cluster written two tables back: its table is cold.
      uint64_t src = (t - 2) * per_table;
      require_ok(img.link_cluster(t * per_table + 1, host_of(img, src), src));
      model[t * per_table + 1] = model[src];
    }
  }
  require_ok(img.write_cluster(0, pattern_cluster(cs, 77)));  // shared with 2*per_table+1
  model[0] = pattern_cluster(cs, 77);
  require_ok(img.close());
  require_clean(o.bytes());
  std::vector<uint8_t> buf(cs);
  for (const auto& [gc, want] : model) {
    require_ok(img.read(gc * cs, buf));
    INFO("guest cluster " << gc);
    REQUIRE(buf == want);
    Result<std::vector<uint8_t>> ind = testsupport::read_guest_cluster(o.bytes(), gc);
    REQUIRE(ind.is_ok());
    REQUIRE(*ind == want);
  }
}

// refcheck must be able to fail, or every test above proves nothing.
TEST_CASE("refcheck finds corruption, leaks and wrong COPIED flags", "[qcow2][refcheck]") {
  Opened o = open_image(new_image(options(1 << 20)));
  require_ok(o.img->write_cluster(0, pattern_cluster(65536, 1)));
  require_ok(o.img->write_cluster(1, pattern_cluster(65536, 2)));
  const uint64_t h0 = host_of(*o.img, 0);
  const uint64_t h1 = host_of(*o.img, 1);
  require_ok(o.img->close());
  std::vector<uint8_t> good = o.bytes();
  require_clean(good);
  RefCheckReport base = refcheck(good);
  REQUIRE(base.computed[h0 >> 16] == 1);
  REQUIRE(base.computed[0] == 1);
  const uint64_t l2 = o.img->l1_table()[0] & kL1eOffsetMask;
  const uint64_t rb = load_be64(good.data() + o.img->header().refcount_table_offset);
  auto set_rc = [&](std::vector<uint8_t>& b, uint64_t host, uint16_t v) {
    store_be16(b.data() + rb + 2 * (host >> 16), v);
  };

  SECTION("a used cluster with refcount 0") {
    std::vector<uint8_t> b = good;
    set_rc(b, h0, 0);
    RefCheckReport r = refcheck(b);
    REQUIRE_FALSE(r.consistent());
    REQUIRE(r.corruptions.size() == 1);
    REQUIRE(r.corruptions[0].cluster == h0 >> 16);
  }
  SECTION("a leak") {
    std::vector<uint8_t> b = good;
    set_rc(b, 0, 2);  // the header cluster
    RefCheckReport r = refcheck(b);
    REQUIRE(r.consistent());
    REQUIRE_FALSE(r.clean());
    REQUIRE(r.leaks.size() == 1);
    REQUIRE(r.leaks[0].cluster == 0);
  }
  SECTION("COPIED on a cluster with refcount 2 (a leak)") {
    std::vector<uint8_t> b = good;
    set_rc(b, h1, 2);
    RefCheckReport r = refcheck(b);
    REQUIRE(r.leaks.size() == 1);
    REQUIRE(r.copied_wrong.size() == 1);
    REQUIRE_FALSE(r.consistent());
  }
  SECTION("two entries sharing a cluster, one with COPIED") {
    std::vector<uint8_t> b = good;
    store_be64(b.data() + l2 + 8 * 1, h0 | kOflagCopied);
    set_rc(b, h0, 2);
    set_rc(b, h1, 0);
    RefCheckReport r = refcheck(b);
    REQUIRE(r.corruptions.empty());
    REQUIRE(r.copied_wrong.size() == 2);
    REQUIRE_FALSE(r.consistent());
  }
  SECTION("missing COPIED is reported apart") {
    std::vector<uint8_t> b = good;
    store_be64(b.data() + l2, h0);
    RefCheckReport r = refcheck(b);
    REQUIRE(r.consistent());
    REQUIRE(r.copied_missing.size() == 1);
    REQUIRE_FALSE(r.clean());
  }
  SECTION("unaligned and out-of-file references") {
    std::vector<uint8_t> b = good;
    store_be64(b.data() + l2 + 8 * 2, (h0 + 512) | kOflagCopied);
    store_be64(b.data() + l2 + 8 * 3, (uint64_t{1} << 40) | kOflagCopied);
    RefCheckReport r = refcheck(b);
    REQUIRE(r.errors.size() == 2);
    REQUIRE_FALSE(r.consistent());
  }
  SECTION("a truncated file loses its data clusters") {
    std::vector<uint8_t> b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(h1));
    RefCheckReport r = refcheck(b);
    REQUIRE_FALSE(r.errors.empty());
  }
  SECTION("garbage is not an image") {
    std::vector<uint8_t> b(4096, 0xAB);
    REQUIRE_FALSE(refcheck(b).consistent());
  }
}

}  // namespace qdedup::qcow2
