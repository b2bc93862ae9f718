// Test-only checks for opening qcow2 images: expected outcomes, an open
// that also proves it wrote nothing, a bounded whole-disk read, and an image
// with data written through Image::write. Header-only; uses Catch2 macros, so
// include it from test files only.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qcow2/create.h"
#include "qcow2/image.h"
#include "support/image_builder.h"

namespace qdedup::image_builder {

// What an open should do: succeed, fail (with a given code if set), or either.
struct Outcome {
  enum Kind { kOk, kFail, kEither } kind = kOk;
  std::optional<StatusCode> code;
};
inline const Outcome kOpens{Outcome::kOk, std::nullopt};
inline const Outcome kFails{Outcome::kFail, std::nullopt};
inline Outcome fails_with(StatusCode c) { return {Outcome::kFail, c}; }
inline const Outcome kCorrupt = fails_with(StatusCode::kCorruption);
inline const Outcome kUnsupported = fails_with(StatusCode::kUnsupported);

// Opens `mem` (borrowed) and checks the outcome; also checks that the open
// wrote nothing. Returns the image when it opened.
inline std::unique_ptr<qcow2::Image> check_open(io::MemoryFile& mem, bool writable,
                                                const Outcome& want) {
  const std::vector<uint8_t> before = mem.bytes();
  auto calls = std::make_shared<FileCalls>();
  auto r = open_borrowed(mem, writable, calls);
  INFO((writable ? "writable" : "read-only")
       << " open: " << (r.is_ok() ? std::string("ok") : r.status().message()));
  if (want.kind == Outcome::kOk) CHECK(r.is_ok());
  if (want.kind == Outcome::kFail) {
    CHECK_FALSE(r.is_ok());
    if (!r.is_ok() && want.code) CHECK(r.status().code() == *want.code);
  }
  if (!r.is_ok()) CHECK_FALSE(r.status().message().empty());
  CHECK(calls->mutations == 0);
  CHECK(mem.bytes() == before);
  if (!r.is_ok()) return nullptr;
  return std::move(r).value();
}

// As check_open, over a read-only view of `bytes` (no copy).
inline std::unique_ptr<qcow2::Image> check_open_view(std::span<const uint8_t> bytes, bool writable,
                                                     const Outcome& want) {
  auto calls = std::make_shared<FileCalls>();
  auto r =
      qcow2::Image::open(std::make_unique<SpanFile>(bytes, calls), qcow2::ImageOptions{writable});
  if (want.kind == Outcome::kOk && !r.is_ok()) {
    FAIL_CHECK((writable ? "writable" : "read-only") << " open: " << r.status().message());
  }
  if (want.kind == Outcome::kFail && r.is_ok()) {
    FAIL_CHECK((writable ? "writable" : "read-only") << " open succeeded");
  }
  if (!r.is_ok() && want.code && r.status().code() != *want.code) {
    FAIL_CHECK("open failed with " << status_code_name(r.status().code()) << ": "
                                   << r.status().message());
  }
  if (!r.is_ok() && r.status().message().empty()) FAIL_CHECK("error without a message");
  if (calls->mutations != 0) FAIL_CHECK("open tried to write");
  if (!r.is_ok()) return nullptr;
  return std::move(r).value();
}

// Reads the guest disk in 64 KiB pieces (at most its first 4 MiB, so that a
// header claiming a huge disk costs nothing); errors are allowed, crashes are
// not. `out`, if given, receives what was read (the disk must be small).
inline Status read_all(qcow2::Image& img, std::vector<uint8_t>* out = nullptr) {
  const uint64_t end = std::min<uint64_t>(img.virtual_size(), 4 << 20);
  if (out) out->assign(end, 0);
  std::vector<uint8_t> buf(64 * 1024);
  Status first_error;
  for (uint64_t off = 0; off < end; off += buf.size()) {
    std::span<uint8_t> piece(buf.data(), std::min<uint64_t>(buf.size(), end - off));
    Status s = img.read(off, piece);
    if (!s.is_ok() && first_error.is_ok()) first_error = s;
    if (out) std::copy(piece.begin(), piece.end(), out->begin() + static_cast<std::ptrdiff_t>(off));
  }
  return first_error;
}

// An image written through Image::write, with the guest bytes it should read.
struct WrittenImage {
  std::vector<uint8_t> bytes;
  std::vector<uint8_t> guest;
};

inline WrittenImage written_image(uint32_t cluster_bits, uint32_t version, uint64_t size) {
  qcow2::CreateOptions o = small_options(size, cluster_bits, version);
  o.backing_file = "base.qcow2";
  o.backing_format = "qcow2";
  io::MemoryFile mem("w.qcow2");
  REQUIRE(qcow2::create_image(mem, o).is_ok());
  WrittenImage w;
  w.guest.assign(size, 0);
  {
    auto img = open_borrowed(mem, true);
    REQUIRE(img.is_ok());
    // A partial first cluster, a range across clusters (and, with small
    // clusters, across an L2 table boundary), and the last byte.
    const std::pair<uint64_t, size_t> writes[] = {
        {100, 700}, {size / 2 - 1000, 3000}, {size - 1, 1}};
    uint32_t seed = 1;
    for (auto [off, len] : writes) {
      auto data = pattern_bytes(len, seed++);
      REQUIRE((*img)->write(off, data).is_ok());
      std::copy(data.begin(), data.end(), w.guest.begin() + static_cast<std::ptrdiff_t>(off));
    }
    REQUIRE((*img)->close().is_ok());
  }
  w.bytes = mem.bytes();
  return w;
}

}  // namespace qdedup::image_builder
