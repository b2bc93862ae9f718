// Test-only helpers for building small qcow2 images in memory, patching their
// bytes and opening them with qcow2::Image while keeping the bytes visible to
// the test.
//
// Image::open() takes ownership of its File, so a test that wants to look at
// the bytes after a (failed) open hands it a BorrowedFile: a File that forwards
// to a MemoryFile the test keeps, and counts every call that could change it.
//
// Everything here is header-only and stateless; sizes are kept to a few KiB so
// that no test allocates more than a few MiB.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/memory_file.h"
#include "qcow2/create.h"
#include "qcow2/image.h"
#include "util/endian.h"
#include "util/status.h"

namespace qdedup::image_builder {

// Counts the calls a File receives that can change its bytes.
struct FileCalls {
  uint64_t mutations = 0;  // pwrite, truncate, punch_hole
  uint64_t flushes = 0;
};

// A File forwarding to a MemoryFile owned by the test. `calls` (optional) is
// shared with the test and accumulates counts across opens.
class BorrowedFile : public io::File {
 public:
  explicit BorrowedFile(io::MemoryFile& target, std::shared_ptr<FileCalls> calls = nullptr)
      : target_(target), calls_(std::move(calls)) {}

  const std::string& name() const override { return target_.name(); }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override {
    return target_.pread(offset, buf);
  }
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override {
    if (calls_) ++calls_->mutations;
    return target_.pwrite(offset, buf);
  }
  Status flush() override {
    if (calls_) ++calls_->flushes;
    return target_.flush();
  }
  Result<uint64_t> size() override { return target_.size(); }
  Status truncate(uint64_t size) override {
    if (calls_) ++calls_->mutations;
    return target_.truncate(size);
  }
  Status punch_hole(uint64_t offset, uint64_t len) override {
    if (calls_) ++calls_->mutations;
    return target_.punch_hole(offset, len);
  }

 private:
  io::MemoryFile& target_;
  std::shared_ptr<FileCalls> calls_;
};

// A read-only File over bytes owned by the test (no copy: cheap enough to
// open every prefix of an image). Writes are refused with kIoError and
// counted in `calls`.
class SpanFile : public io::File {
 public:
  explicit SpanFile(std::span<const uint8_t> bytes, std::shared_ptr<FileCalls> calls = nullptr)
      : bytes_(bytes), calls_(std::move(calls)) {}

  const std::string& name() const override { return name_; }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override {
    if (offset >= bytes_.size()) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes_.size() - offset));
    std::copy_n(bytes_.begin() + static_cast<std::ptrdiff_t>(offset), n, buf.begin());
    return n;
  }
  Status pwrite(uint64_t, std::span<const uint8_t>) override { return refuse(); }
  Status flush() override { return Status::ok(); }
  Result<uint64_t> size() override { return uint64_t{bytes_.size()}; }
  Status truncate(uint64_t) override { return refuse(); }
  Status punch_hole(uint64_t, uint64_t) override { return refuse(); }

 private:
  Status refuse() {
    if (calls_) ++calls_->mutations;
    return io_error(name_ + ": read-only test view");
  }
  std::span<const uint8_t> bytes_;
  std::shared_ptr<FileCalls> calls_;
  std::string name_ = "view.qcow2";
};

// Opens `mem` as a qcow2 image; `mem` must outlive the returned Image.
inline Result<std::unique_ptr<qcow2::Image>> open_borrowed(
    io::MemoryFile& mem, bool writable, std::shared_ptr<FileCalls> calls = nullptr) {
  return qcow2::Image::open(std::make_unique<BorrowedFile>(mem, std::move(calls)),
                            qcow2::ImageOptions{writable});
}

// Opens a private copy of `bytes` (the Image owns it).
inline Result<std::unique_ptr<qcow2::Image>> open_copy(std::span<const uint8_t> bytes,
                                                       bool writable) {
  auto file = std::make_unique<io::MemoryFile>("test.qcow2",
                                               std::vector<uint8_t>(bytes.begin(), bytes.end()));
  return qcow2::Image::open(std::move(file), qcow2::ImageOptions{writable});
}

// The bytes qcow2::create_image() writes for `o`; an empty vector if it fails
// (tests REQUIRE a non-empty result).
inline std::vector<uint8_t> created_image(const qcow2::CreateOptions& o) {
  io::MemoryFile mem("test.qcow2");
  if (!qcow2::create_image(mem, o)) return {};
  return mem.bytes();
}

inline qcow2::CreateOptions small_options(uint64_t size, uint32_t cluster_bits,
                                          uint32_t version = 3) {
  qcow2::CreateOptions o;
  o.size = size;
  o.cluster_bits = cluster_bits;
  o.version = version;
  return o;
}

// Deterministic bytes that differ per offset and per seed, never all zero.
inline std::vector<uint8_t> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    out[i] = static_cast<uint8_t>((x >> 16) | 1);
  }
  return out;
}

// Big-endian field access on an image held as bytes (grows it if needed).
inline void put_be(std::vector<uint8_t>& b, uint64_t offset, int width, uint64_t v) {
  if (b.size() < offset + static_cast<uint64_t>(width)) b.resize(offset + width, 0);
  switch (width) {
    case 1:
      b[offset] = static_cast<uint8_t>(v);
      break;
    case 2:
      store_be16(b.data() + offset, static_cast<uint16_t>(v));
      break;
    case 4:
      store_be32(b.data() + offset, static_cast<uint32_t>(v));
      break;
    default:
      store_be64(b.data() + offset, v);
      break;
  }
}
inline uint64_t get_be(const std::vector<uint8_t>& b, uint64_t offset, int width) {
  switch (width) {
    case 1:
      return b[offset];
    case 2:
      return load_be16(b.data() + offset);
    case 4:
      return load_be32(b.data() + offset);
    default:
      return load_be64(b.data() + offset);
  }
}

// One internal snapshot table entry as the spec lays it out, padded to 8.
// `extra_size` bytes of extra data (v3 needs at least 16); id and name
// without NUL.
inline std::vector<uint8_t> snapshot_entry(uint64_t l1_table_offset, uint32_t l1_size,
                                           const std::string& id, const std::string& name,
                                           uint32_t extra_size = 24) {
  std::vector<uint8_t> e(40 + extra_size, 0);
  store_be64(e.data(), l1_table_offset);
  store_be32(e.data() + 8, l1_size);
  store_be16(e.data() + 12, static_cast<uint16_t>(id.size()));
  store_be16(e.data() + 14, static_cast<uint16_t>(name.size()));
  store_be32(e.data() + 36, extra_size);
  e.insert(e.end(), id.begin(), id.end());
  e.insert(e.end(), name.begin(), name.end());
  e.resize((e.size() + 7) / 8 * 8, 0);
  return e;
}

// Appends `table` at the next cluster boundary of `image` and points the
// header's snapshot fields at it. Returns the table's offset.
inline uint64_t append_snapshot_table(std::vector<uint8_t>& image, uint32_t cluster_bits,
                                      const std::vector<uint8_t>& table, uint32_t nb_snapshots) {
  uint64_t cs = uint64_t{1} << cluster_bits;
  uint64_t offset = (image.size() + cs - 1) / cs * cs;
  image.resize(offset, 0);
  image.insert(image.end(), table.begin(), table.end());
  put_be(image, 60, 4, nb_snapshots);  // nb_snapshots
  put_be(image, 64, 8, offset);        // snapshots_offset
  return offset;
}

}  // namespace qdedup::image_builder
