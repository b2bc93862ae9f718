// Test-only helpers for the write path of qcow2::Image on images held in
// memory: new images, a model of the whole virtual disk, and checks that
// reads, refcounts and COPIED flags are exactly right. The refcount checks go
// through support/refcheck.h, which recomputes them independently of Image.
//
// Header-only; uses Catch2 macros (a failed check ends the calling test), so
// include it from test files only. Functions only; no shared state.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "io/memory_file.h"
#include "qcow2/create.h"
#include "qcow2/image.h"
#include "support/refcheck.h"
#include "util/status.h"

namespace qdedup::testsupport {

// Options for a new v3 image of `size` bytes with 2^cluster_bits-byte clusters.
inline qcow2::CreateOptions options(uint64_t size, uint32_t cluster_bits = 16) {
  qcow2::CreateOptions o;
  o.size = size;
  o.cluster_bits = cluster_bits;
  return o;
}

// The bytes of a new image made with `o`; the test fails if creation fails.
inline std::vector<uint8_t> new_image(const qcow2::CreateOptions& o) {
  std::vector<uint8_t> bytes = create_in_memory(o);
  REQUIRE(!bytes.empty());
  return bytes;
}

// An image open on a MemoryFile that the image owns; `file` stays valid as
// long as `img` lives.
struct Opened {
  std::unique_ptr<qcow2::Image> img;
  io::MemoryFile* file = nullptr;
  const std::vector<uint8_t>& bytes() const { return file->bytes(); }
};

// Opens a private copy of `bytes`; the test fails if the open fails.
inline Opened open_image(std::vector<uint8_t> bytes, bool writable = true) {
  auto f = std::make_unique<io::MemoryFile>("test.qcow2", std::move(bytes));
  io::MemoryFile* raw = f.get();
  qcow2::ImageOptions io;
  io.writable = writable;
  Result<std::unique_ptr<qcow2::Image>> r = qcow2::Image::open(std::move(f), io);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return Opened{std::move(r.value()), raw};
}

inline void require_ok(const Status& s) {
  INFO(s.message());
  REQUIRE(s.is_ok());
}

// refcheck finds no error, corruption, leak or COPIED mismatch.
inline void require_clean(std::span<const uint8_t> bytes) {
  RefCheckReport r = refcheck(bytes);
  INFO(r.summary());
  REQUIRE(r.clean());
}

// The host offset that guest cluster `gc` maps to (0 if none).
inline uint64_t host_of(qcow2::Image& img, uint64_t gc) {
  Result<qcow2::L2Entry> e = img.l2_entry(gc);
  REQUIRE(e.is_ok());
  return e->host_offset();
}

inline qcow2::L2Entry entry_of(qcow2::Image& img, uint64_t gc) {
  Result<qcow2::L2Entry> e = img.l2_entry(gc);
  REQUIRE(e.is_ok());
  return *e;
}

// The refcount Image holds for the cluster at `host_offset` (needs a writable
// image).
inline uint64_t refcount_of(qcow2::Image& img, uint64_t host_offset) {
  Result<uint64_t> rc = img.refcount(host_offset >> img.geometry().cluster_bits);
  REQUIRE(rc.is_ok());
  return *rc;
}

// The refcount stored on disk for the cluster at `host_offset`, as refcheck
// reads it (Image::refcount() needs a writable image).
inline uint64_t stored_refcount(const Opened& o, uint64_t host_offset) {
  RefCheckReport r = refcheck(o.bytes());
  uint64_t c = host_offset >> o.img->geometry().cluster_bits;
  REQUIRE(c < r.stored.size());
  return r.stored[c];
}

// The whole virtual disk as a flat byte array: what every read must return.
// Offsets and sizes are in bytes, guest clusters by index.
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
inline void require_reads(qcow2::Image& img, const DiskModel& m) {
  uint64_t cs = img.geometry().cluster_size;
  std::vector<uint8_t> buf(static_cast<size_t>(cs));
  for (uint64_t gc = 0; gc < img.geometry().guest_clusters; ++gc) {
    require_ok(img.read(gc * cs, buf));
    INFO("guest cluster " << gc);
    REQUIRE(buf == m.cluster(gc));
  }
}

// The independent reader of support/refcheck agrees with the model.
inline void require_independent_reads(std::span<const uint8_t> bytes, const DiskModel& m,
                                      uint64_t guest_clusters) {
  for (uint64_t gc = 0; gc < guest_clusters; ++gc) {
    Result<std::vector<uint8_t>> c = read_guest_cluster(bytes, gc);
    INFO("guest cluster " << gc << ": " << c.status().message());
    REQUIRE(c.is_ok());
    REQUIRE(*c == m.cluster(gc));
  }
}

// Closes, checks everything, re-opens read-only and checks again.
inline void close_and_verify(Opened& o, const DiskModel& m) {
  require_ok(o.img->close());
  require_clean(o.bytes());
  require_reads(*o.img, m);
  uint64_t guest_clusters = o.img->geometry().guest_clusters;
  require_independent_reads(o.bytes(), m, guest_clusters);
  Opened ro = open_image(o.bytes(), false);
  require_reads(*ro.img, m);
}

// `qemu-img check` finds nothing wrong; does nothing without qemu-img.
inline void require_qemu_check_clean(std::span<const uint8_t> bytes) {
  if (!have_qemu()) return;
  std::string out;
  Result<int> rc = qemu_img_check(bytes, &out);
  REQUIRE(rc.is_ok());
  INFO(out);
  REQUIRE(*rc == 0);
}

}  // namespace qdedup::testsupport
