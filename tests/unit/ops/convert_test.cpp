// ops::convert as a whole job on the memory file system: round trips and
// exact counts, failures that must leave an existing target untouched and no
// temporary file, and a crash at every write of `convert -n` into an existing
// deduplicated image, whose every surviving state must be consistent, hold
// each guest cluster's old or new data, and keep its dedup index truthful.
#include "ops/convert.h"

#include <catch2/catch.hpp>
#include <vector>

#include "io/faulty_file.h"
#include "io/memory_file.h"
#include "io/file_system.h"
#include "ops/check.h"
#include "support/guest_data.h"
#include "support/refcheck.h"

namespace qdedup::ops {
namespace {

using Bytes = std::vector<uint8_t>;
using testsupport::pattern_cluster;
using testsupport::read_guest_cluster;
using testsupport::refcheck;
using testsupport::require_guest_data;

constexpr uint64_t kCluster = 4096;

// A raw disk of `patterns.size()` clusters: pattern 0 is zeros; equal
// patterns are equal clusters.
Bytes raw_disk(const std::vector<uint32_t>& patterns) {
  Bytes out;
  for (uint32_t p : patterns) {
    Bytes c = pattern_cluster(kCluster, p);
    out.insert(out.end(), c.begin(), c.end());
  }
  return out;
}

bool is_scratch(const std::string& name) { return name.ends_with("(scratch)"); }

ConvertOptions dedup_options(const std::string& src, const std::string& dst) {
  ConvertOptions o;
  o.sources = {src};
  o.target = dst;
  o.target_format = "qcow2";
  o.create.dedup = "sha256";
  o.threads = 2;
  return o;
}

TEST_CASE("convert on the memory file system: dedup qcow2 and raw round trips with exact counts",
          "[ops][convert]") {
  io::MemoryFileSystem fs;
  // 12 clusters: 3 zero, patterns 1 and 2 three times each, 3 to 5 once.
  const Bytes raw = raw_disk({1, 2, 0, 1, 3, 2, 0, 4, 1, 2, 0, 5});
  fs.add_bytes("src.raw", raw);
  auto r = convert(fs, dedup_options("src.raw", "dst.qcow2"));
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  CHECK(r->cluster_size == kCluster);
  CHECK(r->zero_clusters == 3);
  CHECK(r->clusters_written == 5);
  CHECK(r->clusters_deduplicated == 4);
  CHECK(r->index_entries == 5);
  CHECK(fs.names() == std::vector<std::string>{"dst.qcow2", "src.raw"});  // no temporary left
  const Bytes image = fs.bytes("dst.qcow2");
  auto rc = refcheck(image);
  INFO(rc.summary());
  CHECK(rc.clean());
  require_guest_data(image, raw, kCluster);

  ConvertOptions back;
  back.sources = {"dst.qcow2"};
  back.target = "back.raw";
  auto b = convert(fs, back);
  INFO(b.status().message());
  REQUIRE(b.is_ok());
  CHECK(fs.bytes("back.raw") == raw);

  // The image's check is clean and its index valid.
  CheckJob job;
  job.file = "dst.qcow2";
  auto c = check(fs, job);
  REQUIRE(c.is_ok());
  CHECK(c->counts.corruptions == 0);
  CHECK(c->counts.leaks == 0);
  CHECK(c->dedup.state == dedup::IndexState::kValid);
  CHECK(c->dedup.entries == 5);
}

TEST_CASE("a convert that fails leaves an existing target untouched and no temporary file",
          "[ops][convert]") {
  const Bytes raw = raw_disk({1, 2, 3, 1, 0, 4, 5, 6});
  const Bytes old_target = raw_disk({9, 9});
  // Counts the new file's writes once, then fails each in turn with ENOSPC.
  uint64_t writes = 0;
  {
    io::MemoryFileSystem fs;
    fs.add_bytes("src.raw", raw);
    io::FaultyFile* made = nullptr;
    fs.set_new_file_factory([&](const std::string& name) -> std::unique_ptr<io::File> {
      if (is_scratch(name)) return std::make_unique<io::MemoryFile>(name);
      auto f = std::make_unique<io::FaultyFile>(Bytes{}, name);
      made = f.get();
      return f;
    });
    ConvertOptions o = dedup_options("src.raw", "dst.qcow2");
    o.threads = 1;
    REQUIRE(convert(fs, o).is_ok());
    REQUIRE(made != nullptr);
    writes = made->writes();
  }
  REQUIRE(writes > 3);
  for (uint64_t n = 1; n <= writes; ++n) {
    INFO("write " << n << " of " << writes << " fails");
    io::MemoryFileSystem fs;
    fs.add_bytes("src.raw", raw);
    fs.add_bytes("dst.qcow2", old_target);
    fs.set_new_file_factory([&](const std::string& name) -> std::unique_ptr<io::File> {
      if (is_scratch(name)) return std::make_unique<io::MemoryFile>(name);
      auto f = std::make_unique<io::FaultyFile>(Bytes{}, name);
      f->fail_write(n, StatusCode::kNoSpace);
      return f;
    });
    ConvertOptions o = dedup_options("src.raw", "dst.qcow2");
    o.threads = 1;
    auto r = convert(fs, o);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kNoSpace);
    CHECK(fs.bytes("dst.qcow2") == old_target);
    CHECK(fs.names() == std::vector<std::string>{"dst.qcow2", "src.raw"});
  }
}

// The guest contents a state may show for cluster `gc`: the old or the new.
bool old_or_new(const Bytes& image, uint64_t gc, const Bytes& old_raw, const Bytes& new_raw) {
  auto got = read_guest_cluster(image, gc);
  if (!got.is_ok()) return false;
  auto at = [&](const Bytes& raw) {
    return std::equal(got->begin(), got->end(), raw.begin() + static_cast<long>(gc * kCluster));
  };
  return at(old_raw) || at(new_raw);
}

TEST_CASE("a crash at any write of convert -n into a dedup image leaves it consistent",
          "[ops][convert][crash]") {
  const Bytes old_raw = raw_disk({1, 2, 0, 1, 3, 2, 4, 0});
  // Overwrites shared and owned clusters, zeroes some, adds duplicates of old data.
  const Bytes new_raw = raw_disk({5, 2, 1, 0, 3, 5, 0, 1});
  Bytes base;
  {
    io::MemoryFileSystem fs;
    fs.add_bytes("old.raw", old_raw);
    REQUIRE(convert(fs, dedup_options("old.raw", "t.qcow2")).is_ok());
    base = fs.bytes("t.qcow2");
  }
  auto run = [&](io::FaultyFile** out, std::optional<uint64_t> crash_after) {
    auto fs = std::make_unique<io::MemoryFileSystem>();
    fs->add_bytes("new.raw", new_raw);
    auto f = std::make_unique<io::FaultyFile>(base, "t.qcow2");
    if (crash_after) f->crash_after_writes(*crash_after);
    *out = f.get();
    fs->add("t.qcow2", std::move(f));
    ConvertOptions o = dedup_options("new.raw", "t.qcow2");
    o.existing_target = true;
    o.create.dedup = "off";  // the target's extension decides
    o.threads = 1;
    Result<ConvertReport> r = convert(*fs, o);
    return std::pair<std::unique_ptr<io::MemoryFileSystem>, Result<ConvertReport>>(std::move(fs),
                                                                                    std::move(r));
  };
  io::FaultyFile* counter = nullptr;
  auto [fs0, ok] = run(&counter, std::nullopt);
  INFO(ok.status().message());
  REQUIRE(ok.is_ok());
  const uint64_t writes = counter->writes();
  require_guest_data(counter->live_bytes(), new_raw, kCluster);
  REQUIRE(writes > 5);

  uint64_t states = 0;
  for (uint64_t n = 0; n < writes; ++n) {
    io::FaultyFile* f = nullptr;
    auto [fs, r] = run(&f, n);
    REQUIRE_FALSE(r.is_ok());
    const std::vector<Bytes> crash_states = f->distinct_crash_states();
    for (size_t k = 0; k < crash_states.size(); ++k) {
      const Bytes& b = crash_states[k];
      ++states;
      INFO("crash after write " << n << " of " << writes << ", state " << k);
      auto rc = refcheck(b);
      INFO(rc.summary());
      REQUIRE(rc.consistent());
      for (uint64_t gc = 0; gc * kCluster < new_raw.size(); ++gc) {
        INFO("guest cluster " << gc);
        REQUIRE(old_or_new(b, gc, old_raw, new_raw));
      }
      // An index marked valid must be right; a stale one is allowed.
      io::MemoryFileSystem after;
      after.add_bytes("s.qcow2", b);
      CheckJob job;
      job.file = "s.qcow2";
      auto c = check(after, job);
      INFO(c.status().message());
      REQUIRE(c.is_ok());
      // check counts a missing COPIED flag as qemu-img does: the one harmless
      // finding a crash may leave (QEMU copies such a cluster on its next write).
      CHECK(c->counts.corruptions == rc.copied_missing.size());
      CHECK(c->dedup.errors == 0);
      CHECK((c->dedup.state == dedup::IndexState::kValid || c->dedup.state == dedup::IndexState::kStale));
    }
  }
  CHECK(states > writes);
}

}  // namespace
}  // namespace qdedup::ops
