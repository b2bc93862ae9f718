// Shared pieces of the fuzz targets: opening an input as an in-memory qcow2
// image, and a bounded walk that reads guest data through Image::read.
//
// Every target is a plain LLVMFuzzerTestOneInput(): with QDEDUP_FUZZ=ON it is
// linked with libFuzzer (clang -fsanitize=fuzzer); otherwise with replay_main.cpp,
// which runs it once per file (the regression inputs under tests/fuzz/regressions/).
//
// Limits: targets ignore inputs above kMaxInputBytes, and the walk stops after
// a fixed number of L2 entries and bytes read, so one input costs at most a few
// milliseconds and a few MiB whatever the image claims. A broken invariant calls
// fuzz_fail(), which aborts: libFuzzer saves the input, the replay driver dies.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/memory_file.h"
#include "qcow2/image.h"
#include "util/status.h"

namespace qdedup::fuzz {

// Larger inputs are ignored (scripts/fuzz.sh also passes -max_len).
inline constexpr size_t kMaxInputBytes = 1u << 20;

[[noreturn]] inline void fuzz_fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

// A failed Status must carry a message: every error reaches the user as text.
inline void expect_message(const Status& s) {
  if (!s.is_ok() && s.message().empty()) fuzz_fail("error status without a message");
}

inline std::unique_ptr<io::MemoryFile> memory_file(const uint8_t* data, size_t size) {
  return std::make_unique<io::MemoryFile>("fuzz.qcow2", std::vector<uint8_t>(data, data + size));
}

// Opens the input read-only (as `info` does); null if the image is refused.
inline std::unique_ptr<qcow2::Image> open_image(const uint8_t* data, size_t size) {
  auto img = qcow2::Image::open(memory_file(data, size), qcow2::ImageOptions{false});
  expect_message(img.status());
  if (!img) return nullptr;
  return std::move(img).value();
}

struct WalkBudget {
  uint64_t l2_entries = 1u << 16;  // L2 entries looked at
  uint64_t read_bytes = 8u << 20;  // guest bytes read through Image::read
  uint64_t refcounts = 4096;       // refcount lookups
};

// Reads `len` guest bytes at `offset` if the budget allows; errors are fine
// (the image may be corrupt), crashes and overruns are not.
inline void budgeted_read(qcow2::Image& img, uint64_t offset, uint64_t len, WalkBudget& b) {
  if (len == 0 || len > b.read_bytes) return;
  if (offset > img.virtual_size() || len > img.virtual_size() - offset) return;
  b.read_bytes -= len;
  std::vector<uint8_t> buf(static_cast<size_t>(len));
  expect_message(img.read(offset, buf));
}

// The L1/L2 walk `info` and `check` do: every L2 entry of every allocated L1
// entry (within the budget), the refcount of each host cluster met, and every
// mapped guest cluster read whole and in an unaligned piece.
inline void walk_image(qcow2::Image& img, WalkBudget b = {}) {
  const qcow2::Geometry& g = img.geometry();
  const std::vector<uint64_t>& l1 = img.l1_table();
  for (uint64_t i = 0; i < l1.size() && b.l2_entries > 0; ++i) {
    if ((i << g.l2_bits) >= g.guest_clusters) break;
    if ((l1[i] & qcow2::kL1eOffsetMask) == 0) continue;
    if (b.refcounts > 0) {
      --b.refcounts;
      expect_message(img.refcount(g.cluster_of(l1[i] & qcow2::kL1eOffsetMask)).status());
    }
    for (uint64_t j = 0; j < g.l2_entries && b.l2_entries > 0; ++j, --b.l2_entries) {
      uint64_t guest_cluster = (i << g.l2_bits) | j;
      if (guest_cluster >= g.guest_clusters) break;
      auto e = img.l2_entry(guest_cluster);
      expect_message(e.status());
      if (!e) break;  // this L2 table cannot be read
      if (e->word == 0 && e->bitmap == 0) continue;
      if (e->type(g) == qcow2::ClusterType::kNormal && b.refcounts > 0) {
        --b.refcounts;
        expect_message(img.refcount(g.cluster_of(e->host_offset())).status());
      }
      uint64_t start = guest_cluster << g.cluster_bits;
      budgeted_read(img, start, g.cluster_size, b);
      // An odd piece inside the cluster: partial and subcluster paths.
      budgeted_read(img, start + 511, std::min<uint64_t>(g.cluster_size - 511, 1000), b);
    }
  }
  // The first clusters in order, and a read across a cluster boundary.
  for (uint64_t off = 0; off < 4 * g.cluster_size; off += g.cluster_size) {
    budgeted_read(img, off, g.cluster_size, b);
  }
  budgeted_read(img, g.cluster_size - 7, 14, b);
}

}  // namespace qdedup::fuzz
