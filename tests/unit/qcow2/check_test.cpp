// qcow2 check and repair: every kind of damage the corruption corpus holds,
// made in memory at known offsets, is found (with the counts qemu-img check
// gives), repaired to a clean image with the guest data kept, and a crash at
// any write of the repair is finished by a second repair.
#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <vector>

#include "io/faulty_file.h"
#include "io/memory_file.h"
#include "qcow2/check.h"
#include "qcow2/check_repair.h"
#include "qcow2/format.h"
#include "support/image_builder.h"
#include "support/refcheck.h"
#include "util/endian.h"

namespace qdedup::qcow2 {
namespace {

using Bytes = std::vector<uint8_t>;
using image_builder::get_be;
using image_builder::put_be;

// A 4 KiB-cluster image with data, a snapshot (so some clusters and an L2
// table have refcount 2) and data written after the snapshot.
const Bytes& base_image() {
  static const Bytes bytes = [] {
    auto made = testsupport::run_qemu_script(
        "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 256k\n"
        "qemu-io -c 'write -P 0x11 0 16k' -c 'write -P 0x22 64k 8k' \"$IMG\"\n"
        "qemu-img snapshot -c s1 \"$IMG\"\n"
        "qemu-io -c 'write -P 0x33 0 4k' -c 'write -P 0x44 128k 4k' \"$IMG\"\n");
    return made.is_ok() ? *made : Bytes{};
  }();
  return bytes;
}

// The same kind of image with 1-bit refcounts, where a second reference to a
// cluster overflows.
const Bytes& base_image_1bit() {
  static const Bytes bytes = [] {
    auto made = testsupport::run_qemu_script(
        "qemu-img create -q -f qcow2 -o cluster_size=4096,refcount_bits=1 \"$IMG\" 256k\n"
        "qemu-io -c 'write -P 0x11 0 16k' -c 'write -P 0x22 64k 8k' \"$IMG\"\n");
    return made.is_ok() ? *made : Bytes{};
  }();
  return bytes;
}

struct Geo {
  uint64_t cs, l1, reftable;
};
Geo geo(const Bytes& b) {
  return {uint64_t{1} << get_be(b, kOffClusterBits, 4), get_be(b, kOffL1TableOffset, 8),
          get_be(b, kOffRefcountTableOffset, 8)};
}
// File offset of the active L2 entry of guest cluster `gc` (one L2 table here).
uint64_t l2_entry_at(const Bytes& b, uint64_t gc) {
  Geo g = geo(b);
  uint64_t l2 = get_be(b, g.l1, 8) & kL1eOffsetMask;
  return l2 + 8 * gc;
}
uint64_t host_cluster_of(const Bytes& b, uint64_t gc) {
  return (get_be(b, l2_entry_at(b, gc), 8) & kL2eOffsetMask) / geo(b).cs;
}
// 16-bit refcount entry of `cluster` (the first refcount block covers all).
uint64_t refcount_at(const Bytes& b, uint64_t cluster) {
  Geo g = geo(b);
  return (get_be(b, g.reftable, 8) & kReftOffsetMask) + 2 * cluster;
}

std::vector<Bytes> guest_view(const Bytes& b) {
  std::vector<Bytes> out;
  for (uint64_t gc = 0; gc < 64; ++gc) {
    auto c = testsupport::read_guest_cluster(b, gc);
    out.push_back(c.is_ok() ? *c : Bytes{});
  }
  return out;
}

// "" if the views are equal, else the first guest cluster that differs.
std::string view_diff(const std::vector<Bytes>& got, const std::vector<Bytes>& want) {
  if (got.size() != want.size()) return "different cluster counts";
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) return "guest cluster " + std::to_string(i) + " differs";
  }
  return "";
}

CheckCounts counts_of(const Bytes& b) {
  io::MemoryFile f("t", b);
  auto a = analyse_image(f, {});
  REQUIRE(a.is_ok());
  return a->counts;
}

Result<RepairSummary> repair_bytes(Bytes& b, RepairMode mode = RepairMode::kAll) {
  io::MemoryFile f("t", b);
  auto r = repair_image(f, RepairOptions{mode, {}, 0});
  b = f.bytes();
  return r;
}

struct Damage {
  const char* name;
  std::function<void(Bytes&)> apply;
  bool data_kept;  // guest data must be unchanged after repair
  const Bytes& (*base)() = base_image;
};

std::vector<Damage> damages() {
  return {
      {"leaked cluster", [](Bytes& b) { put_be(b, refcount_at(b, host_cluster_of(b, 32)), 2, 2); }, true},
      {"refcount too low", [](Bytes& b) { put_be(b, refcount_at(b, host_cluster_of(b, 1)), 2, 1); }, true},
      {"refcount zero for a used cluster",
       [](Bytes& b) { put_be(b, refcount_at(b, host_cluster_of(b, 2)), 2, 0); }, true},
      {"COPIED set on a shared cluster",
       [](Bytes& b) {
         uint64_t at = l2_entry_at(b, 1);
         put_be(b, at, 8, get_be(b, at, 8) | kOflagCopied);
       }, true},
      {"COPIED missing on an owned cluster",
       [](Bytes& b) {
         uint64_t at = l2_entry_at(b, 0);
         put_be(b, at, 8, get_be(b, at, 8) & ~kOflagCopied);
       }, true},
      {"reserved bits in an L2 entry",
       [](Bytes& b) {
         uint64_t at = l2_entry_at(b, 32);
         put_be(b, at, 8, get_be(b, at, 8) | 0x2);
       }, true},
      {"L2 entry into the refcount table",
       [](Bytes& b) { put_be(b, l2_entry_at(b, 40), 8, kOflagCopied | geo(b).reftable); }, true},
      {"L2 entry into the header, misaligned",
       [](Bytes& b) { put_be(b, l2_entry_at(b, 40), 8, kOflagCopied | 0x200); }, false},
      {"L2 entry beyond the end of the file",
       [](Bytes& b) { put_be(b, l2_entry_at(b, 32), 8, kOflagCopied | (1ull << 30)); }, false},
      {"misaligned refcount block",
       [](Bytes& b) {
         Geo g = geo(b);
         put_be(b, g.reftable, 8, get_be(b, g.reftable, 8) + 1024);
       }, true},
      {"dirty bit without refcount updates",
       [](Bytes& b) {
         put_be(b, kOffIncompatibleFeatures, 8, get_be(b, kOffIncompatibleFeatures, 8) | kIncompatDirty);
         put_be(b, refcount_at(b, host_cluster_of(b, 32)), 2, 0);
       }, true},
      {"snapshot L1 table misaligned",
       [](Bytes& b) {
         uint64_t table = get_be(b, kOffSnapshotsOffset, 8);
         put_be(b, table, 8, get_be(b, table, 8) + 512);
       }, true},
      {"snapshot L1 table too large",
       [](Bytes& b) { put_be(b, get_be(b, kOffSnapshotsOffset, 8) + 8, 4, 0x10000000); }, true},
      {"more references than 1-bit refcounts hold",
       [](Bytes& b) {
         // Guest cluster 20 shares guest cluster 1's cluster (COPIED clear).
         put_be(b, l2_entry_at(b, 20), 8, get_be(b, l2_entry_at(b, 1), 8) & ~kOflagCopied);
       }, true, base_image_1bit},
      {"v3 snapshot entry with 8 bytes of extra data (the spec asks for 16)",
       [](Bytes& b) {
         // Entry 0: extra data cut to its first 8 bytes, the id and name moved up.
         const uint64_t t = get_be(b, kOffSnapshotsOffset, 8);
         const uint64_t extra = get_be(b, t + 36, 4), names = get_be(b, t + 12, 2) + get_be(b, t + 14, 2);
         REQUIRE(extra >= 16);
         std::copy(b.begin() + static_cast<std::ptrdiff_t>(t + 40 + extra),
                   b.begin() + static_cast<std::ptrdiff_t>(t + 40 + extra + names),
                   b.begin() + static_cast<std::ptrdiff_t>(t + 48));
         put_be(b, t + 36, 4, 8);
       }, true},
      {"too much extra data in a snapshot entry",
       [](Bytes& b) { put_be(b, get_be(b, kOffSnapshotsOffset, 8) + 36, 4, 5000); }, true},
      {"two L1 entries share an L2 table",
       [](Bytes& b) {
         // Grow the L1 table by one entry pointing at the first L2 table.
         Geo g = geo(b);
         put_be(b, g.l1 + 8, 8, get_be(b, g.l1, 8));
         put_be(b, kOffL1Size, 4, 2);
       }, true},
  };
}

TEST_CASE("check finds each damage with qemu-img's counts and repair makes the image clean",
          "[qcow2][check]") {
  for (const Damage& d : damages()) {
    INFO(d.name);
    const Bytes& base = d.base();
    REQUIRE_FALSE(base.empty());  // qemu-img and qemu-io build it (scripts/setup.sh installs them)
    REQUIRE(counts_of(base).corruptions == 0);
    REQUIRE(counts_of(base).leaks == 0);
    Bytes b = base;
    d.apply(b);
    const std::vector<Bytes> before = guest_view(b);
    // A check that cannot complete (a snapshot table past QEMU's limits) is
    // qemu-img's exit status 1, as a check error is.
    io::MemoryFile probe("t", b);
    auto analysed = analyse_image(probe, {});
    const CheckCounts c = analysed.is_ok() ? analysed->counts : CheckCounts{1};
    CHECK(c.corruptions + c.leaks + c.check_errors > 0);
    std::string qemu_out;
    auto qemu = testsupport::qemu_img_check(b, &qemu_out);
    if (qemu.is_ok()) {
      INFO("qemu-img check:\n" << qemu_out);
      int ours = c.check_errors ? 1 : c.corruptions ? 2 : c.leaks ? 3 : 0;
      CHECK(ours == *qemu);
    }
    auto r = repair_bytes(b);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    CheckCounts after = counts_of(b);
    CHECK(after.corruptions == 0);
    CHECK(after.leaks == 0);
    CHECK(after.check_errors == 0);
    CHECK((get_be(b, kOffIncompatibleFeatures, 8) & kIncompatDirty) == 0);
    testsupport::RefCheckReport ref = testsupport::refcheck(b);
    INFO(ref.summary());
    CHECK(ref.clean());
    if (qemu.is_ok()) CHECK(*testsupport::qemu_img_check(b) == 0);
    if (d.data_kept) CHECK(view_diff(guest_view(b), before) == "");
  }
}

TEST_CASE("check -r leaks frees leaks and refuses a refcount rebuild", "[qcow2][check]") {
  const Bytes& base = base_image();
  REQUIRE_FALSE(base.empty());  // qemu-img and qemu-io build it (scripts/setup.sh installs them)
  Bytes leak = base;
  damages()[0].apply(leak);
  REQUIRE(repair_bytes(leak, RepairMode::kLeaks).is_ok());
  CHECK(counts_of(leak).leaks == 0);

  Bytes zero = base;
  damages()[2].apply(zero);
  Bytes untouched = zero;
  auto r = repair_bytes(zero, RepairMode::kLeaks);
  CHECK_FALSE(r.is_ok());
  CHECK(zero == untouched);
}

// Crash at every write of a repair; every surviving disk state is repaired
// by a second run to a clean image with the guest data of the fault-free run.
TEST_CASE("a crash at any write of a repair is finished by the next repair", "[qcow2][check][crash]") {
  uint64_t states = 0;
  for (const Damage& d : damages()) {
    REQUIRE_FALSE(d.base().empty());
    Bytes damaged = d.base();
    d.apply(damaged);
    Bytes reference = damaged;
    REQUIRE(repair_bytes(reference).is_ok());
    const std::vector<Bytes> want = guest_view(reference);

    io::FaultyFile counter(damaged);
    REQUIRE(repair_image(counter, RepairOptions{}).is_ok());
    const uint64_t writes = counter.writes();
    INFO(d.name << ": " << writes << " writes");
    REQUIRE(writes > 0);
    for (uint64_t n = 0; n < writes; ++n) {
      io::FaultyFile f(damaged);
      f.crash_after_writes(n);
      auto r = repair_image(f, RepairOptions{});
      REQUIRE_FALSE(r.is_ok());
      const std::vector<Bytes> crash_states = f.distinct_crash_states();
      for (size_t k = 0; k < crash_states.size(); ++k) {
        Bytes b = crash_states[k];
        ++states;
        INFO("crash after write " << n << ", state " << k);
        auto again = repair_bytes(b);
        INFO(again.status().message());
        REQUIRE(again.is_ok());
        CheckCounts c = counts_of(b);
        CHECK(c.corruptions == 0);
        CHECK(c.leaks == 0);
        CHECK(view_diff(guest_view(b), want) == "");
      }
    }
  }
  CHECK(states > 20);
}

}  // namespace
}  // namespace qdedup::qcow2
