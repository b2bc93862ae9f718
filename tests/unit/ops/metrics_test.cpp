// ops::metrics on images of known content: every figure asserted exactly,
// on a plain image, after dedup-offline and after a deduplicating convert, on
// an image stock QEMU wrote with two snapshots, compressed clusters and a
// bitmap; and the index RAM model against the table itself.
#include "ops/metrics.h"

#include <catch2/catch.hpp>
#include <array>
#include <ctime>
#include <vector>

#include "dedup/index.h"
#include "hash/hash.h"
#include "io/memory_file.h"
#include "ops/convert.h"
#include "ops/dedup_offline.h"
#include "support/qemu_scripts.h"
#include "support/refcheck.h"

namespace qdedup::ops {
namespace {

using Bytes = std::vector<uint8_t>;
using testsupport::pattern_cluster;

constexpr uint64_t kCluster = 4096;
// Pattern 0 is zeros. Non-zero: 1 x4, 2 x3, 5 x2, 3, 4, 6, 7 once: 13 mapped
// clusters of 7 distinct contents.
constexpr std::array<uint32_t, 16> kPatterns = {1, 2, 1, 0, 3, 2, 1, 4, 0, 5, 5, 6, 2, 0, 7, 1};

io::MemoryFileSystem converted(const std::string& dedup, uint32_t refcount_order = 4) {
  Bytes raw;
  for (uint32_t p : kPatterns) {
    Bytes c = pattern_cluster(kCluster, p);
    raw.insert(raw.end(), c.begin(), c.end());
  }
  io::MemoryFileSystem fs;
  fs.add_bytes("src.raw", raw);
  ConvertOptions o;
  o.sources = {"src.raw"};
  o.target = "i.qcow2";
  o.target_format = "qcow2";
  if (!dedup.empty()) o.create.dedup = dedup;
  o.create.image.cluster_bits = 12;
  o.create.image.refcount_order = refcount_order;
  o.create.cluster_size_set = true;
  o.threads = 1;
  auto r = convert(fs, o);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return fs;
}

// Runs dedup-offline on i.qcow2, which must succeed.
void dedup_offline_done(io::MemoryFileSystem& fs) {
  DedupOfflineJob job;
  job.images = {"i.qcow2"};
  job.threads = 1;
  DedupOfflineReport run = dedup_offline(fs, job);
  REQUIRE(run.images.size() == 1);
  INFO(run.images[0].error);
  REQUIRE(run.images[0].outcome == ImageOutcome::kDone);
}

ImageMetrics measured(io::MemoryFileSystem& fs, const std::string& file = "i.qcow2") {
  MetricsReport r = metrics(fs, MetricsJob{.files = {file}});
  REQUIRE(r.images.size() == 1);
  INFO(r.images[0].error);
  REQUIRE(r.images[0].error.empty());
  return r.images[0];
}

uint64_t bucket(const ImageMetrics& m, uint64_t le) {
  for (const auto& b : m.usage.histogram) {
    if (b.le == le) return b.clusters;
  }
  FAIL("no bucket le=" << le);
  return 0;
}

uint64_t free_clusters_by_refcheck(const Bytes& image) {
  auto rc = testsupport::refcheck(image);
  uint64_t n = 0;
  for (uint64_t i = 0; i < rc.file_clusters; ++i) n += rc.stored[i] == 0 && rc.computed[i] == 0;
  return n;
}

TEST_CASE("metrics of a plain image, and of it after dedup-offline", "[ops][metrics]") {
  io::MemoryFileSystem fs = converted("");
  ImageMetrics plain = measured(fs);
  const qcow2::Usage& u = plain.usage;
  CHECK(u.cluster_size == kCluster);
  CHECK(u.virtual_size == kPatterns.size() * kCluster);
  CHECK(u.active_data_clusters == 13);
  CHECK(u.active_compressed_clusters == 0);
  CHECK(u.active_zero_clusters == 0);  // a new target leaves zeros unallocated
  CHECK(u.active_distinct_targets == 13);
  CHECK(u.host_data_clusters == 13);
  CHECK(u.shared_host_clusters == 0);
  CHECK(u.total_references == 13);
  CHECK(bucket(plain, 1) == 13);
  CHECK(u.most_shared.empty());
  CHECK(plain.dedup_ratio() == 1.0);
  CHECK(plain.bytes_saved() == 0);
  CHECK(plain.index.state == dedup::IndexState::kAbsent);
  CHECK_FALSE(plain.counters.has_value());
  CHECK(u.l2_bytes == kCluster);
  CHECK(u.free_clusters == free_clusters_by_refcheck(fs.bytes("i.qcow2")));

  dedup_offline_done(fs);

  ImageMetrics after = measured(fs);
  const qcow2::Usage& v = after.usage;
  CHECK(v.active_data_clusters == 13);
  CHECK(v.active_distinct_targets == 7);
  CHECK(v.host_data_clusters == 7);
  CHECK(after.dedup_ratio() == Approx(13.0 / 7.0));
  CHECK(after.bytes_saved() == 6 * kCluster);
  CHECK(v.shared_host_clusters == 3);  // patterns 1, 2 and 5
  CHECK(v.total_references == 13);
  CHECK(bucket(after, 1) == 4);  // 3, 4, 6, 7
  CHECK(bucket(after, 2) == 1);  // 5
  CHECK(bucket(after, 4) == 2);  // 1 (four references) and 2 (three)
  CHECK(bucket(after, 8) == 0);
  REQUIRE(v.most_shared.size() == 3);
  CHECK(v.most_shared[0].references == 4);
  CHECK(v.most_shared[1].references == 3);
  CHECK(v.most_shared[2].references == 2);
  CHECK_FALSE(v.most_shared[0].repeated_byte.has_value());  // a pattern, not one byte
  CHECK(after.index.state == dedup::IndexState::kValid);
  CHECK(after.index.hash == "sha256");
  CHECK(after.index.entries == 7);
  CHECK(after.index.bytes == kCluster);  // 7 entries of 48 bytes, one cluster
  CHECK(after.index.ram_bytes == 1024 * 12);  // the table's initial 1024 slots
  CHECK(after.index.load_factor == Approx(7.0 / 1024));
  REQUIRE(after.counters.has_value());
  CHECK(after.counters->clusters_deduplicated == 6);
  CHECK(after.counters->clusters_freed == 6);
  CHECK(after.counters->index_entries_added == 7);
  CHECK(after.counters->runs == 1);
  // The valid index's cluster has refcount 0 but is not free.
  CHECK(v.free_clusters == free_clusters_by_refcheck(fs.bytes("i.qcow2")) - 1);
  CHECK(after.metadata_bytes() == v.header_bytes + v.l1_bytes + v.l2_bytes + v.refcount_bytes +
                                      v.snapshot_table_bytes + v.bitmap_bytes + after.index.bytes);
}

TEST_CASE("metrics of a deduplicating convert: counters and index", "[ops][metrics]") {
  const uint64_t before = static_cast<uint64_t>(std::time(nullptr));
  io::MemoryFileSystem fs = converted("sha256");
  const uint64_t after = static_cast<uint64_t>(std::time(nullptr));
  ImageMetrics m = measured(fs);
  CHECK(m.usage.active_data_clusters == 13);
  CHECK(m.usage.active_distinct_targets == 7);
  CHECK(m.usage.host_data_clusters == 7);
  CHECK(m.bytes_saved() == 6 * kCluster);
  CHECK(m.index.state == dedup::IndexState::kValid);
  CHECK(m.index.entries == 7);
  REQUIRE(m.counters.has_value());
  CHECK(m.counters->clusters_deduplicated == 6);
  CHECK(m.counters->clusters_stored_unique == 7);
  CHECK(m.counters->clusters_freed == 0);
  CHECK(m.counters->runs == 1);
  CHECK(m.counters->last_run_version == QDEDUP_VERSION);
  CHECK(m.counters->last_run_time >= before);
  CHECK(m.counters->last_run_time <= after);
  CHECK(m.usage.free_clusters == free_clusters_by_refcheck(fs.bytes("i.qcow2")) - 1);  // the index's

  // A dedup-offline run over it: one run more, the convert's counters kept.
  dedup_offline_done(fs);
  ImageMetrics again = measured(fs);
  REQUIRE(again.counters.has_value());
  CHECK(again.counters->runs == 2);
  CHECK(again.counters->clusters_deduplicated == 6);  // nothing left to merge
  CHECK(again.counters->clusters_stored_unique == 7);
  CHECK(again.usage.active_distinct_targets == 7);
}

TEST_CASE("metrics: index states in check's words; several images and a failing one", "[ops][metrics]") {
  io::MemoryFileSystem fs = converted("sha256");
  Bytes image = fs.bytes("i.qcow2");
  // What stock QEMU does when it opens the image read-write: the index is stale.
  image[qcow2::kOffAutoclearFeatures] &= 0xbf;  // bit 62 is in the first byte (big endian)
  fs.add_bytes("stale.qcow2", image);
  fs.add_bytes("raw.img", Bytes(kCluster, 0));
  MetricsReport r = metrics(fs, MetricsJob{.files = {"i.qcow2", "stale.qcow2", "missing.qcow2", "raw.img"}});
  REQUIRE(r.images.size() == 4);
  CHECK(r.images[0].index.state == dedup::IndexState::kValid);
  CHECK(r.images[1].index.state == dedup::IndexState::kStale);
  CHECK(r.images[1].index.ram_bytes == 0);
  CHECK(r.images[1].usage.active_distinct_targets == 7);
  CHECK_FALSE(r.images[2].error.empty());
  CHECK(r.images[3].error.find("not a qcow2 image") != std::string::npos);
  CHECK(r.failed() == 2);
  const MetricsTotals t = r.totals();
  CHECK(t.images == 2);
  CHECK(t.guest_bytes == 2 * 13 * kCluster);
  CHECK(t.bytes_saved() == 2 * 6 * kCluster);
  // The stale index's cluster is free space for QEMU: counted as free.
  CHECK(r.images[1].usage.free_clusters == r.images[0].usage.free_clusters + 1);
}

TEST_CASE("metrics of an image stock QEMU wrote: snapshots, compressed clusters, a bitmap",
          "[ops][metrics][qemu]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img/qemu-io not found: skipped");
    return;
  }
  // testsupport::kSnapshotsScript: see the expected figures below.
  auto made = testsupport::run_qemu_script(testsupport::kSnapshotsScript);
  INFO(made.status().message());
  REQUIRE(made.is_ok());
  io::MemoryFileSystem fs;
  fs.add_bytes("q.qcow2", *made);
  ImageMetrics m = measured(fs, "q.qcow2");
  const qcow2::Usage& u = m.usage;
  // The tables: T0 (s1 only), T0' (s2 only), T0'' (active) for the first
  // 2 MiB; T1 (s1 and s2) and T1' (active) for the second.
  // Active: gc 0-3, 16-17, 48-49 (zeros as data), 66, 128, 130, 256 in T0'';
  // 512-515, 525-526, 768-769 in T1': 20 data; 64-65 compressed; 32-33 zero.
  CHECK(u.active_data_clusters == 20);
  CHECK(u.active_compressed_clusters == 2);
  CHECK(u.active_zero_clusters == 2);
  CHECK(u.active_distinct_targets == 22);  // QEMU shares nothing inside one view
  CHECK(m.dedup_ratio() == 1.0);
  // Each snapshot maps 11 clusters of its first table and 6 of T1.
  CHECK(u.snapshot_mapped_clusters == 34);
  // The first 0x11 clusters at gc 0 and 2, replaced by 0x44 after s1.
  CHECK(u.snapshot_only_host_clusters == 2);
  // 22 normal host clusters and the one both compressed streams are packed in.
  CHECK(u.host_data_clusters == 23);
  CHECK(u.host_compressed_clusters == 1);
  // References: 1 (gc 0 and 2 of s1, 128, 130, 256, 768, 769), 2 (the 0x44
  // clusters: T0' and T0''), 3 (gc 1, 3, 16, 17, 48, 49, 66 in three tables;
  // 512-515, 525-526: T1 twice and T1'), 6 (two streams in three tables).
  CHECK(bucket(m, 1) == 7);
  CHECK(bucket(m, 2) == 2);
  CHECK(bucket(m, 4) == 13);
  CHECK(bucket(m, 8) == 1);
  CHECK(u.shared_host_clusters == 16);
  CHECK(u.total_references == 7 + 2 * 2 + 13 * 3 + 6);
  CHECK(u.clusters_at_cap == 0);
  REQUIRE(u.most_shared.size() == 10);
  CHECK(u.most_shared[0].references == 6);
  CHECK(u.most_shared[0].compressed);
  for (size_t i = 1; i < u.most_shared.size(); ++i) {
    INFO(i);
    CHECK(u.most_shared[i].references == 3);
    REQUIRE(u.most_shared[i].repeated_byte.has_value());  // qemu-io -P writes one byte
    const uint8_t b = *u.most_shared[i].repeated_byte;
    CHECK((b == 0x00 || b == 0x11 || b == 0x22 || b == 0x33));
  }
  CHECK(u.l2_bytes == 5 * kCluster);
  CHECK(u.l1_bytes == 3 * kCluster);
  CHECK(u.snapshot_table_bytes == kCluster);
  // Directory, table and the one data cluster of bm0's dirty bits.
  CHECK(u.bitmap_bytes == 3 * kCluster);
  CHECK(u.free_clusters == free_clusters_by_refcheck(*made));
  CHECK(m.index.state == dedup::IndexState::kAbsent);
  CHECK_FALSE(m.counters.has_value());
}

TEST_CASE("metrics with 64-bit refcounts: the histogram ends at the width's maximum",
          "[ops][metrics]") {
  // The buckets double up to the cap: found by the fuzzer, the doubling once
  // wrapped to 0 below a cap of 2^64 - 1 and never ended.
  io::MemoryFileSystem fs = converted("", 6);
  ImageMetrics m = measured(fs);
  REQUIRE(m.usage.histogram.size() == 65);
  CHECK(m.usage.histogram[63].le == uint64_t{1} << 63);
  CHECK(m.usage.histogram.back().le == UINT64_MAX);
  CHECK(bucket(m, 1) == 13);
}

TEST_CASE("the index RAM model equals what the table allocates", "[dedup][index][metrics]") {
  for (uint64_t n : {0, 1, 7, 1000, 5000, 40000}) {
    INFO(n << " entries");
    dedup::DedupIndex index(std::make_unique<io::MemoryFile>("records"), 32);
    auto hasher = hash::make_hasher(hash::HashAlgorithm::kSha256);
    std::array<uint64_t, dedup::DedupIndex::kSegments> per_segment{};
    for (uint64_t i = 0; i < n; ++i) {
      uint8_t seed[8];
      for (int b = 0; b < 8; ++b) seed[b] = static_cast<uint8_t>(i >> (8 * b));
      uint8_t d[32];
      hasher->hash(seed, d);
      REQUIRE(index.insert(d, (i + 1) * kCluster, i).is_ok());
      ++per_segment[d[0]];
    }
    CHECK(dedup::DedupIndex::footprint(per_segment).bytes == index.memory_bytes());
  }
}

}  // namespace
}  // namespace qdedup::ops
