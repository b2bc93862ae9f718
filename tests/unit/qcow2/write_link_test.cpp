// Sharing clusters on the write path of qcow2::Image: link_cluster needs the
// owner of a cluster that is not yet shared and clears its COPIED flag;
// overwriting or zeroing one of two sharers copies or releases it and gives
// the survivor COPIED back; 1-bit refcounts cannot share. Refcounts and COPIED
// flags are checked by support/refcheck.h after close().
#include <catch2/catch.hpp>
#include <optional>
#include <vector>

#include "qcow2/create.h"
#include "qcow2/image.h"
#include "support/refcheck.h"
#include "support/write_checks.h"

namespace qdedup::qcow2 {
namespace {

using namespace testsupport;  // write_checks.h

}  // namespace

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

}  // namespace qdedup::qcow2
