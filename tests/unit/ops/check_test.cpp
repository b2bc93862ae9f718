// ops::check as a whole job on the memory file system: findings and the
// repair with its index rebuild, and a crash at every write of `check -r all`
// on a deduplicated image whose index went stale, finished by the next run.
#include "ops/check.h"

#include <catch2/catch.hpp>
#include <vector>

#include "dedup/extension.h"
#include "io/faulty_file.h"
#include "io/file_system.h"
#include "ops/convert.h"
#include "qcow2/format.h"
#include "support/guest_data.h"
#include "support/refcheck.h"
#include "util/endian.h"

namespace qdedup::ops {
namespace {

using Bytes = std::vector<uint8_t>;
using testsupport::pattern_cluster;
using testsupport::read_guest_cluster;
using testsupport::refcheck;
using testsupport::require_guest_data;

constexpr uint64_t kCluster = 4096;

// A deduplicated image of 16 clusters with sharing, made by convert.
Bytes dedup_image(Bytes* raw_out) {
  Bytes raw;
  for (uint32_t p : {1, 2, 1, 0, 3, 2, 1, 4, 0, 5, 5, 6, 2, 0, 7, 1}) {
    Bytes c = pattern_cluster(kCluster, p);
    raw.insert(raw.end(), c.begin(), c.end());
  }
  io::MemoryFileSystem fs;
  fs.add_bytes("src.raw", raw);
  ConvertOptions o;
  o.sources = {"src.raw"};
  o.target = "d.qcow2";
  o.target_format = "qcow2";
  o.create.dedup = "sha256";
  o.threads = 1;
  auto r = convert(fs, o);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  *raw_out = raw;
  return fs.bytes("d.qcow2");
}

// What stock QEMU does when it opens the image read-write: clears the
// autoclear bits, so the index is stale.
void make_index_stale(Bytes& image) {
  uint64_t bits = load_be64(image.data() + qcow2::kOffAutoclearFeatures);
  store_be64(image.data() + qcow2::kOffAutoclearFeatures, bits & ~dedup::kAutoclearDedupIndex);
}

Result<CheckReport> check_bytes(const Bytes& image, std::optional<qcow2::RepairMode> mode,
                                Bytes* after = nullptr) {
  io::MemoryFileSystem fs;
  fs.add_bytes("i.qcow2", image);
  CheckJob job;
  job.file = "i.qcow2";
  job.repair = mode;
  job.threads = 1;
  auto r = check(fs, job);
  if (after) *after = fs.bytes("i.qcow2");
  return r;
}

TEST_CASE("check on the memory file system reports a stale index and -r all rebuilds it",
          "[ops][check]") {
  Bytes raw;
  Bytes image = dedup_image(&raw);
  make_index_stale(image);
  auto plain = check_bytes(image, std::nullopt);
  REQUIRE(plain.is_ok());
  CHECK(plain->format == "qcow2");
  CHECK(plain->counts.corruptions == 0);
  CHECK(plain->dedup.state == dedup::IndexState::kStale);
  CHECK_FALSE(plain->repaired);

  Bytes leaks_only;
  auto leaks = check_bytes(image, qcow2::RepairMode::kLeaks, &leaks_only);
  REQUIRE(leaks.is_ok());
  CHECK(leaks->dedup.state == dedup::IndexState::kStale);  // -r leaks leaves a stale index alone
  CHECK(leaks_only == image);

  Bytes repaired;
  auto all = check_bytes(image, qcow2::RepairMode::kAll, &repaired);
  INFO(all.status().message());
  REQUIRE(all.is_ok());
  CHECK(all->repaired);
  CHECK(all->index_rebuilt);
  CHECK(all->dedup.state == dedup::IndexState::kValid);
  CHECK(all->counts.corruptions == 0);
  CHECK(all->counts.leaks == 0);
  CHECK(refcheck(repaired).clean());
  require_guest_data(repaired, raw, kCluster);
}

TEST_CASE("check names a raw image and refuses -U with a repair", "[ops][check]") {
  io::MemoryFileSystem fs;
  fs.add_bytes("disk.raw", Bytes(65536, 0));
  CheckJob job;
  job.file = "disk.raw";
  auto r = check(fs, job);
  REQUIRE(r.is_ok());
  CHECK(r->format == "raw");
  job.repair = qcow2::RepairMode::kAll;
  job.force_share = true;
  CHECK(check(fs, job).status().code() == StatusCode::kInvalidArgument);
  job.file = "missing.qcow2";
  job.force_share = false;
  auto missing = check(fs, job);
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().rfind("missing.qcow2: ", 0) == 0);
}

TEST_CASE("a crash at any write of check -r all on a stale dedup image is finished by the next",
          "[ops][check][crash]") {
  Bytes raw;
  Bytes image = dedup_image(&raw);
  make_index_stale(image);
  auto run = [&](std::optional<uint64_t> crash_after, Bytes* live) {
    io::MemoryFileSystem fs;
    auto f = std::make_unique<io::FaultyFile>(image, "i.qcow2");
    if (crash_after) f->crash_after_writes(*crash_after);
    io::FaultyFile* faulty = f.get();
    fs.add("i.qcow2", std::move(f));
    CheckJob job;
    job.file = "i.qcow2";
    job.repair = qcow2::RepairMode::kAll;
    job.threads = 1;
    Result<CheckReport> r = check(fs, job);
    struct Out {
      Result<CheckReport> r;
      uint64_t writes;
      std::vector<Bytes> states;
    } out{r, faulty->writes(), faulty->distinct_crash_states()};
    if (live) *live = faulty->live_bytes();
    return out;
  };
  Bytes live;
  auto clean = run(std::nullopt, &live);
  INFO(clean.r.status().message());
  REQUIRE(clean.r.is_ok());
  REQUIRE(clean.r->index_rebuilt);
  REQUIRE(clean.writes > 2);
  require_guest_data(live, raw, kCluster);

  uint64_t states = 0;
  for (uint64_t n = 0; n < clean.writes; ++n) {
    auto crashed = run(n, nullptr);
    REQUIRE_FALSE(crashed.r.is_ok());
    for (const Bytes& b : crashed.states) {
      ++states;
      INFO("crash after write " << n << " of " << clean.writes);
      auto rc = refcheck(b);
      INFO(rc.summary());
      REQUIRE(rc.consistent());
      require_guest_data(b, raw, kCluster);
      auto again = check_bytes(b, std::nullopt);
      REQUIRE(again.is_ok());
      CHECK(again->dedup.errors == 0);  // valid or stale, never a wrong valid index
      Bytes fixed;
      auto second = check_bytes(b, qcow2::RepairMode::kAll, &fixed);
      INFO(second.status().message());
      REQUIRE(second.is_ok());
      CHECK(second->counts.corruptions == 0);
      CHECK(second->counts.leaks == 0);
      CHECK(second->dedup.state == dedup::IndexState::kValid);
      CHECK(refcheck(fixed).clean());
      require_guest_data(fixed, raw, kCluster);
    }
  }
  CHECK(states >= clean.writes);
}

}  // namespace
}  // namespace qdedup::ops
