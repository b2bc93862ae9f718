// ops::dedup_offline as a whole job on the memory file system, over an image
// stock QEMU wrote: duplicates inside and across L2 tables, zero clusters
// (written zeros and zero flags), compressed clusters, two internal snapshots
// whose L2 tables are shared with the active state and with each other, and a
// persistent dirty bitmap. The run, its dry run, and a crash at every write.
#include "ops/dedup_offline.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <vector>

#include "dedup/extension.h"
#include "dedup/resume.h"
#include "hash/sha256.h"
#include "io/faulty_file.h"
#include "io/file_system.h"
#include "qcow2/format.h"
#include "support/qemu_scripts.h"
#include "support/refcheck.h"
#include "util/endian.h"

namespace qdedup::ops {
namespace {

using Bytes = std::vector<uint8_t>;
using testsupport::read_guest_cluster;
using testsupport::refcheck;

// Distinct non-zero contents: 0x11, 0x22, 0x33, 0x44, 0x55. The walk meets a
// compressed 0x33 cluster first: it is kept, the other compressed one and the
// uncompressed one at 264k are merged into it.
constexpr uint64_t kDistinctData = 5;
// Keepers in the on-disk index: the uncompressed ones (a compressed keeper is
// not in the v1 entry format).
constexpr uint64_t kIndexedData = 4;

// The image a qemu-img/qemu-io script makes ($IMG), or a failed test.
Bytes qemu_made(const std::string& script) {
  Result<Bytes> made = testsupport::run_qemu_script(script);
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  return *made;
}

// The image of testsupport::kSnapshotsScript.
Bytes qemu_image() { return qemu_made(testsupport::kSnapshotsScript); }

// The guest's view of the active state and of each snapshot, every cluster.
std::vector<Bytes> guest_views(const Bytes& image) {
  auto snaps = testsupport::list_snapshots(image);
  REQUIRE(snaps.is_ok());
  const uint64_t cluster_size = uint64_t{1} << load_be32(image.data() + qcow2::kOffClusterBits);
  const uint64_t guest_clusters = load_be64(image.data() + qcow2::kOffSize) / cluster_size;
  std::vector<Bytes> views(1 + snaps->size());
  for (size_t v = 0; v < views.size(); ++v) {
    std::optional<size_t> snap;
    if (v > 0) snap = v - 1;
    for (uint64_t gc = 0; gc < guest_clusters; ++gc) {
      auto c = read_guest_cluster(image, gc, snap);
      INFO("view " << v << " guest cluster " << gc << ": " << c.status().message());
      REQUIRE(c.is_ok());
      views[v].insert(views[v].end(), c->begin(), c->end());
    }
  }
  return views;
}

uint64_t used_clusters(const Bytes& image) {
  uint64_t n = 0;
  for (uint64_t rc : refcheck(image).stored) n += rc != 0;
  return n;
}

bool bitmaps_valid(const Bytes& image) {
  return (load_be64(image.data() + qcow2::kOffAutoclearFeatures) & qcow2::kAutoclearBitmaps) != 0;
}

struct Run {
  DedupOfflineReport report;
  Bytes after;
};

Run run_on(const Bytes& image, bool dry_run) {
  io::MemoryFileSystem fs;
  fs.add_bytes("i.qcow2", image);
  DedupOfflineJob job;
  job.images = {"i.qcow2"};
  job.dry_run = dry_run;
  job.threads = 1;
  Run r{dedup_offline(fs, job), fs.bytes("i.qcow2")};
  REQUIRE(r.report.images.size() == 1);
  INFO(r.report.images[0].error);
  REQUIRE(r.report.images[0].outcome == ImageOutcome::kDone);
  return r;
}

TEST_CASE("dedup-offline merges duplicates in every table and keeps every view and the bitmap",
          "[ops][dedup-offline]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  const Bytes image = qemu_image();
  REQUIRE(bitmaps_valid(image));
  const std::vector<Bytes> before = guest_views(image);
  REQUIRE(before.size() == 3);

  Run dry = run_on(image, true);
  const DedupOfflineImage& plan = dry.report.images[0];
  CHECK(dry.after == image);  // a dry run writes nothing

  Run real = run_on(image, false);
  const DedupOfflineImage& done = real.report.images[0];
  INFO(refcheck(real.after).summary());
  CHECK(refcheck(real.after).clean());
  auto qemu = testsupport::qemu_img_check(real.after);
  REQUIRE(qemu.is_ok());
  CHECK(*qemu == 0);
  CHECK(guest_views(real.after) == before);
  CHECK(bitmaps_valid(real.after));

  CHECK(done.stats.data_clusters_after() == kDistinctData);
  CHECK(done.stats.duplicate_clusters > 0);
  CHECK(done.stats.zero_clusters == 2);  // the written zeros at 192k
  CHECK(done.stats.cap_overflows == 0);
  CHECK(done.index_written);
  CHECK(done.index_entries == kIndexedData);
  CHECK(done.stats.compressed_clusters == 2);
  CHECK(done.stats.compressed_copies == 1);
  // The two streams share one host cluster, which the keeper's stream keeps.
  CHECK(done.stats.compressed_hosts_freed == 0);
  // The dry run's figures are the run's.
  CHECK(plan.stats.data_clusters == done.stats.data_clusters);
  CHECK(plan.stats.duplicate_clusters == done.stats.duplicate_clusters);
  CHECK(plan.stats.zero_clusters == done.stats.zero_clusters);
  CHECK(plan.stats.entries_remapped == done.stats.entries_remapped);
  CHECK(plan.stats.clusters_freed() == done.stats.clusters_freed());
  CHECK(done.stats.clusters_punched == done.stats.clusters_freed());
  // Freed clusters are gone from the refcounts: what qemu-img check counts.
  uint64_t used_before = 0, used_after = 0;
  for (uint64_t rc : refcheck(image).stored) used_before += rc != 0;
  for (uint64_t rc : refcheck(real.after).stored) used_after += rc != 0;
  CHECK(used_before - used_after == done.stats.clusters_freed());

  // A second run finds nothing left to merge.
  Run again = run_on(real.after, false);
  CHECK(again.report.images[0].stats.clusters_freed() == 0);
  CHECK(again.report.images[0].stats.data_clusters == kDistinctData);
  CHECK(guest_views(again.after) == before);
}

// Runs dedup-offline and its dry run on `image`: the run keeps every view,
// checks clean (ours and qemu-img's), and frees what the dry run said.
Run checked_run(const Bytes& image) {
  const std::vector<Bytes> before = guest_views(image);
  const Run dry = run_on(image, true);
  Run real = run_on(image, false);
  INFO(refcheck(real.after).summary());
  CHECK(refcheck(real.after).clean());
  auto qemu = testsupport::qemu_img_check(real.after);
  REQUIRE(qemu.is_ok());
  CHECK(*qemu == 0);
  CHECK(guest_views(real.after) == before);
  const dedup::OfflineStats& plan = dry.report.images[0].stats;
  const dedup::OfflineStats& done = real.report.images[0].stats;
  CHECK(plan.clusters_freed() == done.clusters_freed());
  CHECK(plan.data_clusters_after() == done.data_clusters_after());
  CHECK(plan.cap_overflows == done.cap_overflows);
  CHECK(done.clusters_punched == done.clusters_freed());
  CHECK(used_clusters(image) - used_clusters(real.after) == done.clusters_freed());
  return real;
}

TEST_CASE("dedup-offline: a compressed copy alone in its host cluster frees it",
          "[ops][dedup-offline][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // Each qemu-io run starts a new host cluster for its compressed streams.
  const Bytes made = qemu_made(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 1M\n"
      "qemu-io -c 'write -P 0x66 0 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -c -P 0x66 64k 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -c -P 0x77 128k 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -P 0x77 192k 4k' -c 'write -c -P 0 256k 4k' \"$IMG\" >/dev/null\n");
  const Run r = checked_run(made);
  const dedup::OfflineStats& s = r.report.images[0].stats;
  CHECK(s.compressed_clusters == 3);
  CHECK(s.duplicate_clusters == 2);  // the compressed 0x66, the uncompressed 0x77
  CHECK(s.zero_clusters == 1);       // the compressed zeros
  CHECK(s.compressed_copies == 2);
  // The 0x66 stream's cluster; the zero stream shares one with nothing
  // either, the 0x77 keeper's stays.
  CHECK(s.compressed_hosts_freed == 2);
  CHECK(s.data_clusters_after() == 2);
  CHECK(r.report.images[0].index_entries == 1);  // the uncompressed 0x66
}

TEST_CASE("dedup-offline leaves a compressed cluster that does not decompress as it is",
          "[ops][dedup-offline][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  Bytes image = qemu_made(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 1M\n"
      "qemu-io -c 'write -P 0x66 0 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -c -P 0x66 64k 4k' \"$IMG\" >/dev/null\n");
  // Guest cluster 16's entry (one L2 table): a compressed descriptor; its
  // stream's first bytes become garbage that raw deflate refuses.
  const uint64_t l1 = load_be64(image.data() + 40);
  const uint64_t l2 = load_be64(image.data() + l1) & qcow2::kL1eOffsetMask;
  const uint64_t word = load_be64(image.data() + l2 + 16 * 8);
  REQUIRE((word & qcow2::kOflagCompressed) != 0);
  const uint64_t stream = word & ((1ull << 58) - 1);  // 4 KiB clusters: 58 offset bits
  REQUIRE(stream + 16 <= image.size());
  std::fill_n(image.begin() + static_cast<std::ptrdiff_t>(stream), 16, uint8_t{0xff});
  const Run r = run_on(image, false);
  const dedup::OfflineStats& s = r.report.images[0].stats;
  CHECK(s.undecodable_compressed == 1);
  CHECK(s.clusters_freed() == 0);
  CHECK(load_be64(r.after.data() + l2 + 16 * 8) == word);  // still mapped as it was
  CHECK(refcheck(r.after).clean());
}

TEST_CASE("dedup-offline keeps every host cluster of a compressed keeper within the refcount cap",
          "[ops][dedup-offline][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // refcount_bits=2 (at most 3): three compressed streams fill one host
  // cluster's refcount; an uncompressed copy of the first cannot join it.
  const Bytes made = qemu_made(
      "qemu-img create -q -f qcow2 -o cluster_size=4096,refcount_bits=2 \"$IMG\" 1M\n"
      "qemu-io -c 'write -c -P 0x61 0 4k' -c 'write -c -P 0x62 4k 4k' "
      "-c 'write -c -P 0x63 8k 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -P 0x61 64k 4k' -c 'write -P 0x61 68k 4k' -c 'write -P 0x62 72k 4k' "
      "\"$IMG\" >/dev/null\n");
  std::vector<uint64_t> stored = refcheck(made).stored;
  REQUIRE(std::count(stored.begin(), stored.end(), 3) >= 1);  // the shared stream cluster
  const Run r = checked_run(made);
  const dedup::OfflineStats& s = r.report.images[0].stats;
  CHECK(s.compressed_clusters == 3);
  // 0x61 at 64k: the cap; it keeps 0x61 and 68k joins it. 0x62 at 72k: the cap too.
  CHECK(s.cap_overflows == 2);
  CHECK(s.duplicate_clusters == 1);
  CHECK(s.data_clusters_after() == 5);
  for (uint64_t rc : refcheck(r.after).stored) CHECK(rc <= 3);
}

TEST_CASE("dedup-offline interrupted inside its first table resumes from cursor 0",
          "[ops][dedup-offline][resume]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // 64 KiB clusters, one L2 table, 24 MiB of data: three 8 MiB read batches.
  const Bytes made = qemu_made(
      "qemu-img create -q -f qcow2 \"$IMG\" 64M\n"
      "qemu-io -c 'write -P 0x11 0 12M' -c 'write -P 0x22 12M 12M' \"$IMG\" >/dev/null\n");
  const Run whole = run_on(made, false);
  io::MemoryFileSystem fs;
  fs.add_bytes("i.qcow2", made);
  // Cancelled after the first batch of the only table: its clusters are
  // planned (keepers in the index), nothing is repointed, the cursor is 0.
  std::atomic<bool> cancel{false};
  DedupOfflineJob job;
  job.images = {"i.qcow2"};
  job.threads = 1;
  job.jobs = 1;
  job.checkpoint_bytes = 1;
  job.cancel = &cancel;
  job.progress = [&](const DedupOfflineProgress&) { cancel = true; };
  DedupOfflineReport first = dedup_offline(fs, job);
  INFO(first.images[0].error);
  REQUIRE(first.images[0].outcome == ImageOutcome::kInterrupted);
  CHECK(first.images[0].stats.cursor == 0);
  CHECK(refcheck(fs.bytes("i.qcow2")).clean());
  cancel = false;
  job.progress = nullptr;
  DedupOfflineReport second = dedup_offline(fs, job);
  INFO(second.images[0].error << second.images[0].resume_note);
  REQUIRE(second.images[0].outcome == ImageOutcome::kDone);
  CHECK(second.images[0].resumed);
  const Bytes after = fs.bytes("i.qcow2");
  INFO(refcheck(after).summary());
  CHECK(refcheck(after).clean());
  CHECK(used_clusters(after) == used_clusters(whole.after));
}

TEST_CASE("dedup-offline checkpoints and interruptions on a version 2 image (no record)",
          "[ops][dedup-offline][resume]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  const Bytes made = qemu_made(
      "qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=4096 \"$IMG\" 4M\n"
      "qemu-io -c 'write -P 0x11 0 64k' -c 'write -P 0x11 2M 64k' \"$IMG\" >/dev/null\n");
  const std::vector<Bytes> before = guest_views(made);
  io::MemoryFileSystem fs;
  fs.add_bytes("v2.qcow2", made);
  std::atomic<bool> cancel{false};
  DedupOfflineJob job;
  job.images = {"v2.qcow2"};
  job.threads = 1;
  job.checkpoint_bytes = 1;
  job.cancel = &cancel;
  job.progress = [&](const DedupOfflineProgress&) { cancel = true; };
  DedupOfflineReport first = dedup_offline(fs, job);
  INFO(first.images[0].error);
  CHECK(first.images[0].outcome == ImageOutcome::kInterrupted);
  CHECK(refcheck(fs.bytes("v2.qcow2")).clean());
  cancel = false;
  job.progress = nullptr;
  DedupOfflineReport second = dedup_offline(fs, job);
  INFO(second.images[0].error);
  REQUIRE(second.images[0].outcome == ImageOutcome::kDone);
  CHECK_FALSE(second.images[0].resumed);
  const Bytes after = fs.bytes("v2.qcow2");
  CHECK(refcheck(after).clean());
  CHECK(guest_views(after) == before);
  CHECK(used_clusters(after) < used_clusters(made));
}

TEST_CASE("a read error while the pool threads read is reported and leaves the image consistent",
          "[ops][dedup-offline]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  const Bytes image = qemu_image();
  const std::vector<Bytes> before = guest_views(image);
  // The host cluster holding the 0x55 data: only the hashing pass reads it.
  constexpr uint64_t kCs = 4096;
  uint64_t bad = 0;
  for (uint64_t off = kCs; off + kCs <= image.size() && bad == 0; off += kCs) {
    if (std::all_of(image.begin() + off, image.begin() + off + kCs,
                    [](uint8_t b) { return b == 0x55; })) {
      bad = off;
    }
  }
  REQUIRE(bad != 0);
  for (unsigned threads : {1u, 2u}) {
    INFO(threads << " hashing threads");
    io::MemoryFileSystem fs;
    auto f = std::make_unique<io::FaultyFile>(image, "i.qcow2");
    f->fail_reads(bad, bad + kCs);
    io::FaultyFile* faulty = f.get();
    fs.add("i.qcow2", std::move(f));
    DedupOfflineJob job;
    job.images = {"i.qcow2"};
    job.threads = threads;
    DedupOfflineReport r = dedup_offline(fs, job);
    REQUIRE(r.images[0].outcome == ImageOutcome::kFailed);
    CHECK(r.images[0].error.find("injected read error at " + std::to_string(bad)) !=
          std::string::npos);
    CHECK(r.any_failed());
    const Bytes& after = faulty->live_bytes();
    auto rc = refcheck(after);
    INFO(rc.summary());
    CHECK(rc.consistent());
    CHECK(guest_views(after) == before);
    CHECK(bitmaps_valid(after));
  }
}

TEST_CASE("a dedup-offline batch runs two images at once and fails bad ones alone",
          "[ops][dedup-offline][batch]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  const Bytes image = qemu_image();
  const std::vector<Bytes> before = guest_views(image);
  const Bytes expected = run_on(image, false).after;
  Bytes corrupt = image;
  corrupt[79] |= 2;  // incompatible feature bit 1: corrupt
  io::MemoryFileSystem fs;
  DedupOfflineJob job;
  for (int i = 0; i < 5; ++i) {
    std::string name = "i" + std::to_string(i) + ".qcow2";
    fs.add_bytes(name, i == 2 ? corrupt : image);
    job.images.push_back(name);
  }
  job.images.push_back("missing.qcow2");
  job.jobs = 2;
  job.threads = 2;
  DedupOfflineReport r = dedup_offline(fs, job);
  REQUIRE(r.images.size() == 6);
  CHECK(r.any_failed());
  for (size_t i = 0; i < r.images.size(); ++i) {
    INFO(r.images[i].file << ": " << r.images[i].error);
    if (i == 2 || i == 5) {
      CHECK(r.images[i].outcome == ImageOutcome::kFailed);
      continue;
    }
    CHECK(r.images[i].outcome == ImageOutcome::kDone);
    CHECK(fs.bytes(r.images[i].file) == expected);
  }
  CHECK(r.images[2].error.find("marked corrupt") != std::string::npos);
  CHECK(fs.bytes("i2.qcow2") == corrupt);  // refused: untouched
}

// Crashes dedup-offline on `image` after every write N in turn (a progress
// record after every table, `refcount_cache_blocks` as the job's): every
// state the crash can leave checks consistent (leaks allowed) under refcheck
// and qemu-img check, keeps every view and the bitmaps, and a rerun completes
// the deduplication as one uninterrupted run does. Returns the clean run's
// number of refcount cache evictions.
uint64_t crash_at_every_write(const Bytes& image, size_t refcount_cache_blocks) {
  const std::vector<Bytes> before = guest_views(image);
  auto run = [&](std::optional<uint64_t> crash_after) {
    io::MemoryFileSystem fs;
    auto f = std::make_unique<io::FaultyFile>(image, "i.qcow2");
    if (crash_after) f->crash_after_writes(*crash_after);
    io::FaultyFile* faulty = f.get();
    fs.add("i.qcow2", std::move(f));
    DedupOfflineJob job;
    job.images = {"i.qcow2"};
    job.threads = 1;
    job.checkpoint_bytes = 1;  // a progress record after every table: crashes hit them too
    job.refcount_cache_blocks = refcount_cache_blocks;
    DedupOfflineReport r = dedup_offline(fs, job);
    struct Out {
      DedupOfflineImage result;
      uint64_t writes;
      std::vector<Bytes> states;
    } out{r.images[0], faulty->writes(), faulty->distinct_crash_states()};
    return out;
  };
  auto clean = run(std::nullopt);
  INFO(clean.result.error);
  REQUIRE(clean.result.outcome == ImageOutcome::kDone);
  REQUIRE(clean.writes > 4);

  const Bytes whole_after = run_on(image, false).after;
  uint64_t states = 0, copied_states = 0;
  for (uint64_t n = 0; n < clean.writes; ++n) {
    auto crashed = run(n);
    REQUIRE(crashed.result.outcome == ImageOutcome::kFailed);
    for (const Bytes& b : crashed.states) {
      ++states;
      INFO("crash after write " << n << " of " << clean.writes);
      auto rc = refcheck(b);
      INFO(rc.summary());
      REQUIRE(rc.consistent());
      REQUIRE(guest_views(b) == before);
      REQUIRE(bitmaps_valid(b));
      std::string log;
      auto qemu = testsupport::qemu_img_check(b, &log);
      REQUIRE(qemu.is_ok());
      INFO(log);
      if (*qemu == 2) {
        // The one finding no order avoids (docs/format.md, section 2): a crash between
        // a keeper's COPIED clear and its refcount increase. Nothing else.
        CHECK(rc.copied_wrong.empty());
        CHECK(rc.corruptions.empty());
        CHECK_FALSE(rc.copied_missing.empty());
        ++copied_states;
      } else {
        REQUIRE((*qemu == 0 || *qemu == 3));  // clean, or leaks only
      }
      // The rerun mends that, frees the leaks and completes the deduplication.
      Run rerun = run_on(b, false);
      CHECK(refcheck(rerun.after).clean());
      CHECK(used_clusters(rerun.after) == used_clusters(whole_after));
      REQUIRE(guest_views(rerun.after) == before);
    }
  }
  CHECK(states >= clean.writes);
  WARN(states << " crash states, " << copied_states << " with the missing-COPIED finding only");
  return clean.result.refcount_evictions;
}

TEST_CASE("a crash at any write of dedup-offline leaves every view intact and a rerun finishes",
          "[ops][dedup-offline][crash]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  crash_at_every_write(qemu_image(), 0);
}

TEST_CASE("a crash at any write of dedup-offline with one refcount block cached",
          "[ops][dedup-offline][crash]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // 512-byte clusters, 64-bit refcounts: a refcount block covers 64 clusters
  // (32 KiB), so the image's ~200 clusters span four blocks and a cache of
  // one block is written back and dropped whenever the run moves to another
  // (the path a big image takes past the default budget). Snapshot s1 shares
  // the tables; the bitmap must stay valid through every eviction.
  const Bytes image = qemu_made(
      "qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 \"$IMG\" 256k\n"
      "qemu-io -c 'write -P 0x11 0 24k' -c 'write -P 0x22 32k 16k' -c 'write -P 0x11 96k 24k' "
      "-c 'write -P 0 160k 8k' -c 'write -c -P 0x22 200k 4k' \"$IMG\" >/dev/null\n"
      "qemu-img snapshot -c s1 \"$IMG\"\n"
      "qemu-img bitmap --add \"$IMG\" bm0\n"
      "qemu-io -c 'write -P 0x33 64k 8k' -c 'write -P 0x22 128k 8k' \"$IMG\" >/dev/null\n");
  CHECK(crash_at_every_write(image, 0) == 0);  // the default budget holds every block
  CHECK(crash_at_every_write(image, 1) >= 10);
}

// Interrupts dedup-offline on `image` after the k-th progress report (read
// batch or table) for every k in turn, with a checkpoint after every table,
// and resumes it: each stop leaves a consistent image (not even leaky) with
// every view intact; each resumed run ends where the uninterrupted one does,
// reading nothing twice, and the two runs' figures add up to its figures.
// Returns the number of stops (the last report ends the run instead).
int check_every_stop(const Bytes& image, uint64_t indexed) {
  const std::vector<Bytes> before = guest_views(image);
  const Run whole = run_on(image, false);
  const dedup::OfflineStats& w = whole.report.images[0].stats;
  int stops = 0;
  for (int stop_at = 1;; ++stop_at) {
    INFO("stopped at progress report " << stop_at);
    io::MemoryFileSystem fs;
    fs.add_bytes("i.qcow2", image);
    std::atomic<bool> cancel{false};
    int reports = 0;
    DedupOfflineJob job;
    job.images = {"i.qcow2"};
    job.threads = 1;
    job.jobs = 1;
    job.cancel = &cancel;
    job.checkpoint_bytes = 1;
    job.progress = [&](const DedupOfflineProgress&) {
      if (++reports == stop_at) cancel = true;
    };
    DedupOfflineReport first = dedup_offline(fs, job);
    if (first.images[0].outcome == ImageOutcome::kDone) break;  // stopped after the last table
    REQUIRE(first.images[0].outcome == ImageOutcome::kInterrupted);
    ++stops;
    const Bytes stopped = fs.bytes("i.qcow2");
    auto rc = refcheck(stopped);
    INFO(rc.summary());
    CHECK(rc.clean());  // consistent, not even leaky
    CHECK(guest_views(stopped) == before);
    const dedup::OfflineStats& a = first.images[0].stats;
    CHECK(a.bytes_read < w.bytes_read);

    cancel = false;
    job.progress = nullptr;
    DedupOfflineReport second = dedup_offline(fs, job);
    INFO(second.images[0].error << second.images[0].resume_note);
    REQUIRE(second.images[0].outcome == ImageOutcome::kDone);
    CHECK(second.images[0].resumed);
    const dedup::OfflineStats& b = second.images[0].stats;
    const Bytes resumed = fs.bytes("i.qcow2");
    CHECK(refcheck(resumed).clean());
    CHECK(guest_views(resumed) == before);
    // Nothing done before the checkpoint is read again: the two runs together
    // read what one run reads (each table is one read batch here, so the stop
    // comes between tables, after a checkpoint).
    CHECK(a.bytes_read + b.bytes_read == w.bytes_read);
    // The same result as the uninterrupted run: the same clusters in use,
    // the same decisions at the cap, the same figures between the two runs.
    CHECK(refcheck(resumed).stored == refcheck(whole.after).stored);
    CHECK(used_clusters(resumed) == used_clusters(whole.after));
    CHECK(a.cap_overflows + b.cap_overflows == w.cap_overflows);
    CHECK(a.duplicate_clusters + b.duplicate_clusters == w.duplicate_clusters);
    CHECK(a.clusters_freed() + b.clusters_freed() == w.clusters_freed());
    CHECK(second.images[0].index_written);
    CHECK(second.images[0].index_entries == indexed);
    // The progress record is gone once the run finished.
    CHECK((load_be64(resumed.data() + qcow2::kOffAutoclearFeatures) & (1ull << 61)) == 0);
  }
  return stops;
}

TEST_CASE("an interrupted dedup-offline leaves a consistent image and resumes from its checkpoint",
          "[ops][dedup-offline][resume]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // The record then holds uncompressed and compressed keepers and pending
  // copies of both kinds.
  CHECK(check_every_stop(qemu_image(), kIndexedData) >= 3);
}

// The data of the image's progress record (docs/format.md, 7), or null.
uint8_t* resume_record(Bytes& image) {
  uint64_t at = load_be32(image.data() + qcow2::kOffHeaderLength);
  while (at + 8 <= image.size()) {
    const uint32_t type = load_be32(image.data() + at);
    const uint32_t length = load_be32(image.data() + at + 4);
    if (type == 0) break;
    if (type == dedup::kExtResume) return image.data() + at + 8;
    at += 8 + ((length + 7) & ~7u);
  }
  return nullptr;
}

TEST_CASE("a damaged or forged progress record is not used: the run starts over",
          "[ops][dedup-offline][resume]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  const Bytes made = qemu_image();
  const std::vector<Bytes> before = guest_views(made);
  const Run whole = run_on(made, false);
  DedupOfflineJob job;
  job.images = {"i.qcow2"};
  job.threads = 1;
  job.jobs = 1;
  job.checkpoint_bytes = 1;
  // Offsets in the record: the index's (as in the dedup extension), then the
  // cursor and the pending copies' offset, count and checksum.
  constexpr size_t kHashSize = 12, kIndexOffset = 16, kIndexSize = 24, kIndexEntries = 32;
  constexpr size_t kIndexChecksum = 48;
  constexpr size_t kPendingOffset = dedup::kExtDedupBaseLength + 8;
  constexpr size_t kPendingCount = dedup::kExtDedupBaseLength + 16;
  constexpr size_t kPendingChecksum = dedup::kExtDedupBaseLength + 24;
  constexpr size_t kEntryHostOffset = 32;  // sha256

  // The first stop whose record holds both keepers and pending copies.
  Bytes stopped;
  for (int stop_at = 1; stopped.empty(); ++stop_at) {
    io::MemoryFileSystem fs;
    fs.add_bytes("i.qcow2", made);
    std::atomic<bool> cancel{false};
    int reports = 0;
    job.cancel = &cancel;
    job.progress = [&](const DedupOfflineProgress&) {
      if (++reports == stop_at) cancel = true;
    };
    DedupOfflineReport first = dedup_offline(fs, job);
    REQUIRE(first.images[0].outcome == ImageOutcome::kInterrupted);
    Bytes image = fs.bytes("i.qcow2");
    const uint8_t* r = resume_record(image);
    REQUIRE(r != nullptr);
    if (load_be64(r + kIndexEntries) != 0 && load_be64(r + kPendingCount) != 0) stopped = image;
  }
  job.cancel = nullptr;
  job.progress = nullptr;

  auto reseal_pending = [](Bytes& image, uint8_t* r) {
    const uint64_t at = load_be64(r + kPendingOffset), n = load_be64(r + kPendingCount);
    const hash::Sha256Digest d = hash::sha256(std::span<const uint8_t>(image.data() + at, n * 16));
    std::copy(d.begin(), d.end(), r + kPendingChecksum);
  };
  auto reseal_index = [](Bytes& image, uint8_t* r) {
    const uint64_t at = load_be64(r + kIndexOffset), n = load_be64(r + kIndexSize);
    const hash::Sha256Digest d = hash::sha256(std::span<const uint8_t>(image.data() + at, n));
    std::copy(d.begin(), d.end(), r + kIndexChecksum);
  };
  auto first_pending = [](Bytes& image, uint8_t* r) { return image.data() + load_be64(r + kPendingOffset); };
  auto first_entry = [](Bytes& image, uint8_t* r) { return image.data() + load_be64(r + kIndexOffset); };
  // The first keeper that is (or is not) compressed: its entry's host offset.
  auto keeper_offset = [](Bytes& image, uint8_t* r, bool compressed) -> uint8_t* {
    constexpr size_t kEntrySize = 48;  // sha256
    for (uint64_t i = 0; i < load_be64(r + kIndexEntries); ++i) {
      uint8_t* e = image.data() + load_be64(r + kIndexOffset) + i * kEntrySize + kEntryHostOffset;
      if (((load_be64(e) & dedup::kKeeperCompressed) != 0) == compressed) return e;
    }
    FAIL("no such keeper in the record");
    return nullptr;
  };
  struct Damage {
    const char* what;
    const char* note;  // in the run's note
    std::function<void(Bytes&, uint8_t*)> apply;
  };
  const std::vector<Damage> damages = {
      {"a pending copy names a compressed stream past the end of the file (resealed)",
       "pending copy 0 is invalid",
       [&](Bytes& image, uint8_t* r) {
         store_be64(first_pending(image, r), qcow2::kOflagCompressed | (image.size() + (1u << 20)));
         reseal_pending(image, r);
       }},
      {"a pending copy names cluster 0 (resealed)", "pending copy 0 is invalid",
       [&](Bytes& image, uint8_t* r) {
         store_be64(first_pending(image, r), 0);
         reseal_pending(image, r);
       }},
      {"a pending copy's byte flipped", "pending copies checksum",
       [&](Bytes& image, uint8_t* r) { first_pending(image, r)[7] ^= 1; }},
      {"more pending copies than the file holds", "pending copies outside the file",
       [&](Bytes&, uint8_t* r) { store_be64(r + kPendingCount, uint64_t{1} << 40); }},
      {"a keeper's hash byte flipped", "progress record checksum mismatch",
       [&](Bytes& image, uint8_t* r) { first_entry(image, r)[0] ^= 1; }},
      {"a keeper past the end of the file (resealed)", "progress record entry 0",
       [&](Bytes& image, uint8_t* r) {
         store_be64(first_entry(image, r) + kEntryHostOffset, (image.size() + (1u << 20)) & ~4095ull);
         reseal_index(image, r);
       }},
      {"a keeper at an unaligned offset (resealed)", "invalid host offset",
       [&](Bytes& image, uint8_t* r) {
         uint8_t* e = keeper_offset(image, r, false);
         store_be64(e, load_be64(e) + 512);
         reseal_index(image, r);
       }},
      // Well formed, in a used cluster, but inside a stream: no table maps it.
      {"a compressed keeper moved by 512 bytes (resealed)", "is not mapped by any table",
       [&](Bytes& image, uint8_t* r) {
         uint8_t* e = keeper_offset(image, r, true);
         store_be64(e, load_be64(e) + 512);
         reseal_index(image, r);
       }},
      {"the record's hash size", "hash size", [&](Bytes&, uint8_t* r) { store_be32(r + kHashSize, 33); }},
      {"the record's index past the end of the file", "progress record not used",
       [&](Bytes& image, uint8_t* r) { store_be64(r + kIndexOffset, image.size() + (1u << 20)); }},
  };
  for (const Damage& d : damages) {
    INFO(d.what);
    Bytes image = stopped;
    d.apply(image, resume_record(image));
    io::MemoryFileSystem fs;
    fs.add_bytes("i.qcow2", image);
    DedupOfflineReport again = dedup_offline(fs, job);
    INFO(again.images[0].error);
    REQUIRE(again.images[0].outcome == ImageOutcome::kDone);
    CHECK_FALSE(again.images[0].resumed);
    INFO(again.images[0].resume_note);
    CHECK(again.images[0].resume_note.find(d.note) != std::string::npos);
    CHECK(again.images[0].resume_note.find("starting over") != std::string::npos);
    const Bytes after = fs.bytes("i.qcow2");
    INFO(refcheck(after).summary());
    CHECK(refcheck(after).clean());
    auto qemu = testsupport::qemu_img_check(after);
    REQUIRE(qemu.is_ok());
    CHECK(*qemu == 0);
    CHECK(guest_views(after) == before);
    CHECK(used_clusters(after) == used_clusters(whole.after));
    CHECK((load_be64(after.data() + qcow2::kOffAutoclearFeatures) & dedup::kAutoclearResume) == 0);
  }
}

TEST_CASE("a resumed dedup-offline decides at the refcount cap as the uninterrupted run does",
          "[ops][dedup-offline][resume][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // refcount_bits=2 (at most 3). Table 1: an uncompressed 0x62, then three
  // compressed streams in one host cluster (refcount 3), of which the 0x62
  // one is a copy: merged, the host cluster keeps 2 references. Table 2 (at
  // 2M): an uncompressed 0x61, a copy of the compressed 0x61 keeper, which
  // has room once table 1 is done (in a run, a dry run and a resumed run
  // alike); then copies of 0x63 and 0x61, for which the host cluster is full
  // again: the cap makes them keepers, and the last 0x61 joins the new one.
  const Bytes made = qemu_made(
      "qemu-img create -q -f qcow2 -o cluster_size=4096,refcount_bits=2 \"$IMG\" 4M\n"
      "qemu-io -c 'write -P 0x62 0 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -c -P 0x61 4k 4k' -c 'write -c -P 0x62 8k 4k' "
      "-c 'write -c -P 0x63 12k 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -P 0x61 2M 4k' -c 'write -P 0x63 2052k 4k' "
      "-c 'write -P 0x61 2056k 4k' -c 'write -P 0x61 3M 4k' \"$IMG\" >/dev/null\n");
  const Run r = checked_run(made);
  const dedup::OfflineStats& s = r.report.images[0].stats;
  CHECK(s.duplicate_clusters == 3);  // the compressed 0x62, 0x61 at 2M and at 3M
  CHECK(s.cap_overflows == 2);       // 0x63 at 2052k, 0x61 at 2056k
  CHECK(s.data_clusters_after() == 5);
  for (uint64_t rc : refcheck(r.after).stored) CHECK(rc <= 3);
  // Indexed: the uncompressed keepers 0x62, 0x63 and 0x61 (at 2056k).
  CHECK(check_every_stop(made, 3) >= 1);
}

TEST_CASE("an interrupted dedup-offline counts a freed compressed host cluster once",
          "[ops][dedup-offline][resume][compressed]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // The compressed 0x66 copy is mapped by the snapshot's table and by the
  // active one (copied when 0x77 was written): its stream is still pending
  // when the run stops after the first table.
  const Bytes made = qemu_made(
      "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 4M\n"
      "qemu-io -c 'write -P 0x66 0 4k' \"$IMG\" >/dev/null\n"
      "qemu-io -c 'write -c -P 0x66 64k 4k' \"$IMG\" >/dev/null\n"
      "qemu-img snapshot -c s1 \"$IMG\"\n"
      "qemu-io -c 'write -P 0x77 128k 4k' \"$IMG\" >/dev/null\n");
  const Run r = checked_run(made);
  CHECK(r.report.images[0].stats.compressed_hosts_freed == 1);
  CHECK(check_every_stop(made, 2) >= 1);
}

}  // namespace
}  // namespace qdedup::ops
