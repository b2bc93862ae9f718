// The read side of convert: block status (holes of raw files, zero and
// unallocated clusters of qcow2 images through their backing chain) and the
// reader thread's batches. Whatever the reader skips, marks zero or hashes,
// every unit must agree with a plain read of the concatenated sources.
#include "ops/convert_source.h"

#include <catch2/catch.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hash/hash.h"
#include "hash/hash_pool.h"
#include "support/refcheck.h"
#include "support/scratch_dir.h"

namespace qdedup::ops {
namespace {

using image_builder::ScratchDir;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t KiB = 1024;

// A raw file of `size` bytes (a hole) with `pieces` of data written in it.
struct Piece {
  uint64_t offset;
  uint64_t length;
  uint8_t fill;
};
void make_raw(const std::string& path, uint64_t size, const std::vector<Piece>& pieces) {
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
  for (const Piece& p : pieces) {
    Bytes b(p.length, p.fill);
    REQUIRE(::pwrite(fd, b.data(), b.size(), static_cast<off_t>(p.offset)) ==
            static_cast<ssize_t>(b.size()));
  }
  ::close(fd);
}

bool run_sh(const std::string& dir, const std::string& script) {
  std::string cmd = "cd '" + dir + "' && (" + script + ") >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// What the reader must agree with: the whole disk read in one go.
Bytes read_all(SourceSet& src) {
  Bytes all(src.size());
  REQUIRE(src.read(0, all).is_ok());
  return all;
}

struct Tally {
  uint64_t holes = 0, zeros = 0, data = 0;
};

// Runs a reader over `src` and checks every unit of every batch against a
// plain read: holes and zero units read as zeros, data units hold the bytes
// and (with a pool) their digests. Returns how many units of each kind.
Tally check_reader(SourceSet& src, ReaderOptions o) {
  const Bytes want = read_all(src);
  std::unique_ptr<hash::Hasher> hasher;
  if (o.pool != nullptr) hasher = hash::make_hasher(hash::HashAlgorithm::kSha256);
  SourceReader reader(src, o);
  REQUIRE(reader.start().is_ok());
  Tally t;
  uint64_t expect_offset = 0;
  while (SourceBatch* b = reader.next()) {
    REQUIRE(b->status.is_ok());
    REQUIRE(b->offset == expect_offset);
    expect_offset += b->bytes;
    for (size_t u = 0; u < b->units(); ++u) {
      const uint64_t at = b->offset + u * o.unit;
      const uint64_t n = std::min<uint64_t>(o.unit, b->offset + b->bytes - at);
      std::span<const uint8_t> expected(want.data() + at, n);
      INFO("unit at guest offset " << at << ", state " << int(b->state[u]));
      if (b->state[u] == SourceBatch::kData) {
        ++t.data;
        REQUIRE(std::memcmp(b->data.data() + u * o.unit, expected.data(), n) == 0);
        // A partial last unit is zero-padded, and hashed padded.
        for (uint64_t i = n; i < o.unit; ++i) REQUIRE(b->data.data()[u * o.unit + i] == 0);
        if (hasher) {
          uint8_t digest[64];
          hasher->hash({b->data.data() + u * o.unit, o.unit}, digest);
          REQUIRE(std::memcmp(digest, b->digests.data() + u * hasher->digest_size(),
                              hasher->digest_size()) == 0);
        }
      } else {
        (b->state[u] == SourceBatch::kHole ? t.holes : t.zeros)++;
        REQUIRE(std::all_of(expected.begin(), expected.end(), [](uint8_t x) { return x == 0; }));
      }
    }
    reader.release(b);
  }
  REQUIRE(expect_offset == src.size());
  return t;
}

TEST_CASE("raw source: holes are skipped, data read, zeros detected", "[convert_source]") {
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  const std::string raw = dir.file("disk.raw");
  // Data at 256 KiB (4 KiB) and 768 KiB (64 KiB); written zeros at 512 KiB.
  make_raw(raw, 1024 * KiB, {{256 * KiB, 4 * KiB, 0x11}, {512 * KiB, 8 * KiB, 0}, {768 * KiB, 64 * KiB, 0x22}});
  SourceSet src;
  REQUIRE(src.open(io::posix_file_system(), {raw}, "raw", false).is_ok());
  REQUIRE(src.size() == 1024 * KiB);

  auto first = src.extent_at(0);
  REQUIRE(first.is_ok());
  // File systems without SEEK_HOLE report everything as data; ext4 and tmpfs
  // (where tests run) report the hole.
  if (first->zero) {
    CHECK(first->end == 256 * KiB);
    auto data = src.extent_at(256 * KiB);
    REQUIRE(data.is_ok());
    CHECK_FALSE(data->zero);
    CHECK(data->end > 256 * KiB);
  }

  hash::HashPool pool(hash::HashAlgorithm::kSha256, 2);
  ReaderOptions o;
  o.unit = 4 * KiB;
  o.batch_bytes = 128 * KiB;  // extents span batches
  o.detect_zero = true;
  o.pool = &pool;
  Tally t = check_reader(src, o);
  CHECK(t.data == 1 + 16);
  CHECK(t.holes + t.zeros == 256 - 17);
  if (first->zero) CHECK(t.holes >= 256 - 17 - 2);  // the written zeros may be read

  o.block_status = false;  // -S 0: everything read, nothing skipped
  o.detect_zero = false;
  Tally all = check_reader(src, o);
  CHECK(all.data == 256);
  CHECK(all.holes == 0);
}

TEST_CASE("raw sources of odd sizes are concatenated", "[convert_source]") {
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  make_raw(dir.file("a.raw"), 5000, {{0, 5000, 0x33}});        // rounds up to 5120
  make_raw(dir.file("b.raw"), 70 * KiB, {{60 * KiB, 700, 0x44}});
  make_raw(dir.file("c.raw"), 0, {});
  make_raw(dir.file("d.raw"), 3 * KiB + 512, {{3 * KiB, 512, 0x55}});
  SourceSet src;
  REQUIRE(src.open(io::posix_file_system(), {dir.file("a.raw"), dir.file("b.raw"), dir.file("c.raw"), dir.file("d.raw")},
                   "raw", false)
              .is_ok());
  REQUIRE(src.size() == 5120 + 70 * KiB + 3 * KiB + 512);
  hash::HashPool pool(hash::HashAlgorithm::kSha256, 3);
  for (uint64_t unit : {uint64_t{512}, 4 * KiB, 64 * KiB}) {
    for (uint64_t batch_units : {uint64_t{3}, uint64_t{1000}}) {
      // With the pool, the large batches are hashed by all three threads.
      for (hash::HashPool* p : {static_cast<hash::HashPool*>(nullptr), &pool}) {
        INFO("unit " << unit << ", batch units " << batch_units << (p ? ", pool" : ""));
        ReaderOptions o;
        o.unit = unit;
        o.batch_bytes = unit * batch_units;
        o.detect_zero = true;
        o.pool = p;
        Tally t = check_reader(src, o);
        CHECK(t.data > 0);
      }
    }
  }
}

TEST_CASE("qcow2 source: zero and unallocated clusters through the backing chain",
          "[convert_source]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img not installed: skipped");
    return;
  }
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  // base (512 KiB): data in [0, 64 KiB). overlay (1 MiB): a zero cluster at 0,
  // data at 128 KiB, a compressed cluster at 192 KiB; the rest falls through
  // to the base (data, then unallocated), and past the base's end reads zeros.
  REQUIRE(run_sh(dir.path(),
                 "qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 512k && "
                 "qemu-io -f qcow2 -c 'write -P 0x61 0 64k' base.qcow2 && "
                 "qemu-img create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 top.qcow2 1M && "
                 "qemu-io -f qcow2 -c 'write -z 0 4k' -c 'write -P 0x62 128k 8k' "
                 "-c 'write -c -P 0x63 192k 4k' -c 'write -P 0x64 600k 4k' top.qcow2"));
  SourceSet src;
  REQUIRE(src.open(io::posix_file_system(), {dir.file("top.qcow2")}, "qcow2", false).is_ok());
  REQUIRE(src.size() == 1024 * KiB);

  auto zero = src.extent_at(0);
  REQUIRE(zero.is_ok());
  CHECK(zero->zero);
  CHECK(zero->end == 4 * KiB);
  auto backing_data = src.extent_at(4 * KiB);
  REQUIRE(backing_data.is_ok());
  CHECK_FALSE(backing_data->zero);
  auto backing_hole = src.extent_at(64 * KiB);
  REQUIRE(backing_hole.is_ok());
  CHECK(backing_hole->zero);
  CHECK(backing_hole->end <= 128 * KiB);
  auto past_base = src.extent_at(520 * KiB);
  REQUIRE(past_base.is_ok());
  CHECK(past_base->zero);
  CHECK(past_base->end == 600 * KiB);

  hash::HashPool pool(hash::HashAlgorithm::kSha256, 2);
  ReaderOptions o;
  o.unit = 4 * KiB;
  o.batch_bytes = 64 * KiB;
  o.detect_zero = true;
  o.pool = &pool;
  Tally t = check_reader(src, o);
  // 15 base clusters (the first is zeroed above them), 2 + 1 + 1 in the overlay.
  CHECK(t.data == 15 + 2 + 1 + 1);
  CHECK(t.holes == 256 - t.data);
}

TEST_CASE("above the base (convert -B): unallocated runs are left to the backing file",
          "[convert_source]") {
  if (!testsupport::have_qemu()) {
    WARN("qemu-img not installed: skipped");
    return;
  }
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  // 4 KiB clusters, so that an L2 table covers 2 MiB. base: 1 MiB. top: 3 MiB, a zero
  // cluster at 8 KiB, data at [12 KiB, 20 KiB) and at 2 MiB + 64 KiB.
  REQUIRE(run_sh(dir.path(),
                 "qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 1M && "
                 "qemu-io -f qcow2 -c 'write -P 0x61 0 1M' base.qcow2 && "
                 "qemu-img create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 top.qcow2 3M && "
                 "qemu-io -f qcow2 -c 'write -z 8k 4k' -c 'write -P 0x62 12k 8k' "
                 "-c 'write -P 0x63 2112k 4k' top.qcow2"));
  SourceSet src;
  REQUIRE(src.open(io::posix_file_system(), {dir.file("top.qcow2")}, "qcow2", false).is_ok());

  auto first = src.extent_at(0, true);
  REQUIRE(first.is_ok());
  CHECK(first->backing);
  CHECK_FALSE(first->zero);
  CHECK(first->end == 8 * KiB);
  auto zero = src.extent_at(8 * KiB, true);
  REQUIRE(zero.is_ok());
  CHECK(zero->zero);
  CHECK_FALSE(zero->backing);
  CHECK(zero->end == 12 * KiB);
  auto data = src.extent_at(12 * KiB, true);
  REQUIRE(data.is_ok());
  CHECK_FALSE(data->zero);
  CHECK_FALSE(data->backing);
  CHECK(data->end == 20 * KiB);
  // One query: the run that starts within the base goes on past its end, to the end of
  // the L2 table (as QEMU answers it), not to the base's end.
  auto run = src.extent_at(20 * KiB, true);
  REQUIRE(run.is_ok());
  CHECK(run->backing);
  CHECK(run->end == 2048 * KiB);
  // A query that starts past the base's end: zeros.
  auto past = src.extent_at(2048 * KiB, true);
  REQUIRE(past.is_ok());
  CHECK(past->zero);
  CHECK_FALSE(past->backing);
  CHECK(past->end == 2112 * KiB);
  // Not above the base: the backing file's data, and zeros past its end.
  auto through = src.extent_at(20 * KiB);
  REQUIRE(through.is_ok());
  CHECK_FALSE(through->backing);
  CHECK_FALSE(through->zero);
  CHECK(through->end <= 1024 * KiB);

  // The reader, in 16 KiB units: unit 0 is data and zero, with a backing run [0, 8 KiB)
  // kept for the writer; unit 1 is data, with [20 KiB, 32 KiB) left; units 2 .. 127
  // are left to the backing file; past the target's backing end (1 MiB here), zeros
  // are left too.
  ReaderOptions o;
  o.unit = 16 * KiB;
  o.batch_bytes = 3072 * KiB;
  o.above_base = true;
  o.backing_end = 1024 * KiB;
  SourceReader reader(src, o);
  REQUIRE(reader.start().is_ok());
  SourceBatch* b = reader.next();
  REQUIRE(b != nullptr);
  REQUIRE(b->status.is_ok());
  REQUIRE(b->units() == 192);
  CHECK(b->state[0] == SourceBatch::kData);
  CHECK(b->state[1] == SourceBatch::kData);
  size_t left = 0;
  for (size_t u = 2; u < 192; ++u) left += b->state[u] == SourceBatch::kBacking;
  CHECK(left == 191 - 2);  // all but the unit of the data at 2112 KiB
  CHECK(b->state[2112 / 16] == SourceBatch::kData);
  using Run = std::pair<uint64_t, uint64_t>;
  CHECK(b->backing_runs == std::vector<Run>{{0, 8 * KiB}, {20 * KiB, 32 * KiB},
                                           {2116 * KiB, 2128 * KiB}});
  reader.release(b);
  CHECK(reader.next() == nullptr);
}

TEST_CASE("a reader stopped early joins its thread", "[convert_source]") {
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  make_raw(dir.file("big.raw"), 4096 * KiB, {{0, 4096 * KiB, 0x77}});
  SourceSet src;
  REQUIRE(src.open(io::posix_file_system(), {dir.file("big.raw")}, "raw", false).is_ok());
  ReaderOptions o;
  o.unit = 4 * KiB;
  o.batch_bytes = 64 * KiB;
  SourceReader reader(src, o);
  REQUIRE(reader.start().is_ok());
  SourceBatch* b = reader.next();
  REQUIRE(b != nullptr);
  CHECK(b->offset == 0);
  // The destructor stops the thread, which is blocked on the full pipeline.
}

}  // namespace
}  // namespace qdedup::ops
