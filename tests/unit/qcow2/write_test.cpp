// The write path of qcow2::Image on images held in memory: data reads back,
// and the refcounts and COPIED flags that an independent checker
// (support/refcheck.h) recomputes from scratch are exactly right after close().
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/memory_file.h"
#include "qcow2/create.h"
#include "qcow2/format.h"
#include "qcow2/image.h"
#include "support/refcheck.h"
#include "util/endian.h"

namespace qdedup::qcow2 {
namespace {

using testsupport::pattern_cluster;
using testsupport::refcheck;
using testsupport::RefCheckReport;

CreateOptions options(uint64_t size, uint32_t cluster_bits = 16) {
  CreateOptions o;
  o.size = size;
  o.cluster_bits = cluster_bits;
  return o;
}

std::vector<uint8_t> new_image(const CreateOptions& o) {
  std::vector<uint8_t> bytes = testsupport::create_in_memory(o);
  REQUIRE(!bytes.empty());
  return bytes;
}

// An image open on a MemoryFile that the image owns; `file` stays valid as
// long as `img` lives.
struct Opened {
  std::unique_ptr<Image> img;
  io::MemoryFile* file = nullptr;
  const std::vector<uint8_t>& bytes() const { return file->bytes(); }
};

Opened open_image(std::vector<uint8_t> bytes, bool writable = true) {
  auto f = std::make_unique<io::MemoryFile>("test.qcow2", std::move(bytes));
  io::MemoryFile* raw = f.get();
  ImageOptions io;
  io.writable = writable;
  Result<std::unique_ptr<Image>> r = Image::open(std::move(f), io);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return Opened{std::move(r.value()), raw};
}

void require_ok(const Status& s) {
  INFO(s.message());
  REQUIRE(s.is_ok());
}

void require_clean(std::span<const uint8_t> bytes) {
  RefCheckReport r = refcheck(bytes);
  INFO(r.summary());
  REQUIRE(r.clean());
}

uint64_t host_of(Image& img, uint64_t gc) {
  Result<L2Entry> e = img.l2_entry(gc);
  REQUIRE(e.is_ok());
  return e->host_offset();
}

L2Entry entry_of(Image& img, uint64_t gc) {
  Result<L2Entry> e = img.l2_entry(gc);
  REQUIRE(e.is_ok());
  return *e;
}

uint64_t refcount_of(Image& img, uint64_t host_offset) {
  Result<uint64_t> rc = img.refcount(host_offset >> img.geometry().cluster_bits);
  REQUIRE(rc.is_ok());
  return *rc;
}

// The refcount stored on disk for the cluster at `host_offset`, as refcheck
// reads it (Image::refcount() needs a writable image).
uint64_t stored_refcount(const Opened& o, uint64_t host_offset) {
  RefCheckReport r = refcheck(o.bytes());
  uint64_t c = host_offset >> o.img->geometry().cluster_bits;
  REQUIRE(c < r.stored.size());
  return r.stored[c];
}

// The whole virtual disk as a flat byte array: what every read must return.
class DiskModel {
 public:
  explicit DiskModel(uint64_t size, uint64_t cluster_size)
      : bytes_(static_cast<size_t>(size), 0), cs_(cluster_size) {}

  void write(uint64_t offset, std::span<const uint8_t> data) {
    std::copy(data.begin(), data.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(offset));
  }
  void write_cluster(uint64_t gc, std::span<const uint8_t> data) { write(gc * cs_, data); }
  void zero_cluster(uint64_t gc) {
    std::fill_n(bytes_.begin() + static_cast<std::ptrdiff_t>(gc * cs_), cs_, uint8_t{0});
  }
  void copy_cluster(uint64_t to, uint64_t from) {
    std::vector<uint8_t> c = cluster(from);
    write_cluster(to, c);
  }
  std::vector<uint8_t> cluster(uint64_t gc) const {
    auto b = bytes_.begin() + static_cast<std::ptrdiff_t>(gc * cs_);
    return std::vector<uint8_t>(b, b + static_cast<std::ptrdiff_t>(cs_));
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  uint64_t cs_;
};

// Image::read of the whole disk equals the model, cluster by cluster so that a
// failure names the cluster.
void require_reads(Image& img, const DiskModel& m) {
  uint64_t cs = img.geometry().cluster_size;
  std::vector<uint8_t> buf(static_cast<size_t>(cs));
  for (uint64_t gc = 0; gc < img.geometry().guest_clusters; ++gc) {
    require_ok(img.read(gc * cs, buf));
    INFO("guest cluster " << gc);
    REQUIRE(buf == m.cluster(gc));
  }
}

// The independent reader of support/refcheck agrees with the model.
void require_independent_reads(std::span<const uint8_t> bytes, const DiskModel& m,
                               uint64_t guest_clusters) {
  for (uint64_t gc = 0; gc < guest_clusters; ++gc) {
    Result<std::vector<uint8_t>> c = testsupport::read_guest_cluster(bytes, gc);
    INFO("guest cluster " << gc << ": " << c.status().message());
    REQUIRE(c.is_ok());
    REQUIRE(*c == m.cluster(gc));
  }
}

// Closes, checks everything, re-opens read-only and checks again.
void close_and_verify(Opened& o, const DiskModel& m) {
  require_ok(o.img->close());
  require_clean(o.bytes());
  require_reads(*o.img, m);
  uint64_t guest_clusters = o.img->geometry().guest_clusters;
  require_independent_reads(o.bytes(), m, guest_clusters);
  Opened ro = open_image(o.bytes(), false);
  require_reads(*ro.img, m);
}

void require_qemu_check_clean(std::span<const uint8_t> bytes) {
  if (!testsupport::have_qemu()) return;
  std::string out;
  Result<int> rc = testsupport::qemu_img_check(bytes, &out);
  REQUIRE(rc.is_ok());
  INFO(out);
  REQUIRE(*rc == 0);
}

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

TEST_CASE("link_cluster of an owned cluster needs its owner and clears its COPIED",
          "[qcow2][write][link]") {
  Opened o = open_image(new_image(options(1 << 20)));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), img.geometry().cluster_size);
  std::vector<uint8_t> a = pattern_cluster(65536, 1);
  require_ok(img.write_cluster(0, a));
  require_ok(img.write_cluster(1, pattern_cluster(65536, 2)));
  m.write_cluster(0, a);
  m.write_cluster(1, pattern_cluster(65536, 2));
  const uint64_t host = host_of(img, 0);
  REQUIRE(entry_of(img, 0).copied());

  SECTION("without an owner, or with the wrong one, nothing changes") {
    REQUIRE(img.link_cluster(4, host, std::nullopt).code() == StatusCode::kInvalidArgument);
    REQUIRE(img.link_cluster(4, host, 1).code() == StatusCode::kInvalidArgument);
    REQUIRE(img.link_cluster(4, host, 3).code() == StatusCode::kInvalidArgument);
    REQUIRE(entry_of(img, 0).copied());
    REQUIRE(refcount_of(img, host) == 1);
    close_and_verify(o, m);
  }
  SECTION("targets that are not clusters in use are refused") {
    REQUIRE(img.link_cluster(4, host + 512, 0).code() == StatusCode::kInvalidArgument);
    REQUIRE(img.link_cluster(4, 0, 0).code() == StatusCode::kInvalidArgument);
    uint64_t beyond = (o.bytes().size() / 65536 + 10) * 65536;
    REQUIRE(img.link_cluster(4, beyond, std::nullopt).code() == StatusCode::kInvalidArgument);
    REQUIRE(img.link_cluster(16, host, 0).code() == StatusCode::kInvalidArgument);
    close_and_verify(o, m);
  }
  SECTION("with the owner: refcount 2, neither entry COPIED, on disk too") {
    require_ok(img.link_cluster(4, host, 0));
    m.copy_cluster(4, 0);
    REQUIRE(refcount_of(img, host) == 2);
    REQUIRE_FALSE(entry_of(img, 0).copied());
    REQUIRE_FALSE(entry_of(img, 4).copied());
    REQUIRE(host_of(img, 4) == host);
    // Linking again to where it already points is a no-op.
    require_ok(img.link_cluster(4, host, 0));
    REQUIRE(refcount_of(img, host) == 2);
    // A shared cluster needs no owner.
    require_ok(img.link_cluster(5, host, std::nullopt));
    m.copy_cluster(5, 0);
    REQUIRE(refcount_of(img, host) == 3);
    // Re-linking a guest cluster that held data releases that data.
    uint64_t old1 = host_of(img, 1);
    require_ok(img.link_cluster(1, host, std::nullopt));
    m.copy_cluster(1, 0);
    close_and_verify(o, m);
    RefCheckReport r = refcheck(o.bytes());
    REQUIRE(r.stored[host >> 16] == 4);
    REQUIRE(r.stored[old1 >> 16] == 0);
    Opened ro = open_image(o.bytes(), false);
    for (uint64_t gc : {0, 1, 4, 5}) {
      REQUIRE(host_of(*ro.img, gc) == host);
      REQUIRE_FALSE(entry_of(*ro.img, gc).copied());
    }
  }
  SECTION("the owner's COPIED is off on disk once the link is flushed") {
    require_ok(img.link_cluster(4, host, 0));
    require_ok(img.flush());
    Opened ro = open_image(o.bytes(), false);
    REQUIRE_FALSE(entry_of(*ro.img, 0).copied());
    REQUIRE(host_of(*ro.img, 4) == host);
    RefCheckReport r = refcheck(o.bytes());
    INFO(r.summary());
    REQUIRE(r.consistent());
    REQUIRE(r.stored[host >> 16] == 2);
  }
}

TEST_CASE("overwriting one of two sharers copies it and the survivor gets COPIED back",
          "[qcow2][write][link]") {
  Opened o = open_image(new_image(options(1 << 20)));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 65536);
  require_ok(img.write_cluster(2, pattern_cluster(65536, 1)));
  m.write_cluster(2, pattern_cluster(65536, 1));
  const uint64_t host = host_of(img, 2);
  require_ok(img.link_cluster(9, host, 2));
  m.copy_cluster(9, 2);
  require_ok(img.flush());

  uint64_t survivor = 0, changed = 0;
  SECTION("write the linked cluster") {
    survivor = 2;
    changed = 9;
  }
  SECTION("write the original owner") {
    survivor = 9;
    changed = 2;
  }
  std::vector<uint8_t> d = pattern_cluster(65536, 2);
  SECTION("partial write") {
    survivor = 2;
    changed = 9;
    d = m.cluster(9);
    std::fill_n(d.begin() + 1000, 50, uint8_t{0xEE});
  }
  REQUIRE(changed != 0);
  require_ok(img.write(changed * 65536, d));
  m.write_cluster(changed, d);
  REQUIRE(host_of(img, survivor) == host);
  REQUIRE(host_of(img, changed) != host);
  require_reads(img, m);
  close_and_verify(o, m);
  Opened ro = open_image(o.bytes(), false);
  REQUIRE(stored_refcount(ro, host) == 1);
  REQUIRE(entry_of(*ro.img, survivor).copied());
  REQUIRE(entry_of(*ro.img, changed).copied());
  require_qemu_check_clean(o.bytes());
}

TEST_CASE("zeroing one of two sharers gives the survivor COPIED back", "[qcow2][write][link]") {
  Opened o = open_image(new_image(options(1 << 20)));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 65536);
  require_ok(img.write_cluster(2, pattern_cluster(65536, 1)));
  m.write_cluster(2, pattern_cluster(65536, 1));
  const uint64_t host = host_of(img, 2);
  require_ok(img.link_cluster(3, host, 2));
  m.copy_cluster(3, 2);
  require_ok(img.zero_cluster(2));
  m.zero_cluster(2);
  close_and_verify(o, m);
  Opened ro = open_image(o.bytes(), false);
  REQUIRE(stored_refcount(ro, host) == 1);
  REQUIRE(entry_of(*ro.img, 3).copied());
}

TEST_CASE("1-bit refcounts cannot share a cluster and the image stays clean",
          "[qcow2][write][link]") {
  CreateOptions o1 = options(1 << 20);
  o1.refcount_order = 0;
  Opened o = open_image(new_image(o1));
  Image& img = *o.img;
  DiskModel m(img.virtual_size(), 65536);
  require_ok(img.write_cluster(0, pattern_cluster(65536, 1)));
  m.write_cluster(0, pattern_cluster(65536, 1));
  const uint64_t host = host_of(img, 0);
  Status s = img.link_cluster(1, host, 0);
  REQUIRE_FALSE(s.is_ok());
  REQUIRE(s.code() != StatusCode::kCorruption);
  REQUIRE(entry_of(img, 1).word == 0);
  REQUIRE(refcount_of(img, host) == 1);
  // The refused link must not have touched the owner's entry.
  CHECK(entry_of(img, 0).copied());
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
