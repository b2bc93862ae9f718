// UnsyncedFile: gathered writes land as written, reads see them, and blocks
// reserved ahead of a front-to-back writer are given back at the end.
#include "io/unsynced_file.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "io/memory_file.h"
#include "io/posix_file.h"
#include "support/scratch_dir.h"

namespace qdedup::io {
namespace {

using image_builder::ScratchDir;

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::unique_ptr<PosixFile> new_file(const std::string& path) {
  OpenOptions o;
  o.writable = true;
  o.create = true;
  auto r = PosixFile::open(path, o);
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

// Writes `image` front to back in pieces of 4 KiB to 1.5 MiB, with a rewrite
// of an earlier range now and then (as an L2 table written back), reading
// back across gathered bytes on the way.
void write_like_an_image(UnsyncedFile& f, const std::vector<uint8_t>& image) {
  std::mt19937 rng(7);
  uint64_t at = 0;
  while (at < image.size()) {
    const uint64_t n = std::min<uint64_t>(image.size() - at, (rng() % 384 + 1) * 4096);
    REQUIRE(f.pwrite(at, std::span<const uint8_t>(image.data() + at, n)).is_ok());
    at += n;
    if (rng() % 4 == 0 && at > 8192) {
      const uint64_t back = (rng() % (at / 4096 - 1)) * 4096;
      REQUIRE(f.pwrite(back, std::span<const uint8_t>(image.data() + back, 4096)).is_ok());
      std::vector<uint8_t> got(4096);
      auto r = f.pread(back, got);
      REQUIRE(r.is_ok());
      REQUIRE(got == std::vector<uint8_t>(image.begin() + back, image.begin() + back + 4096));
    }
  }
}

}  // namespace

TEST_CASE("UnsyncedFile writes what it gathers, in order, and reads it back",
          "[io][unsynced]") {
  auto mem = std::make_unique<MemoryFile>("m");
  MemoryFile* inner = mem.get();
  UnsyncedFile f(std::move(mem), /*reserve_ahead=*/true);  // MemoryFile reserves nothing
  const auto image = pattern(5 << 20, 1);
  write_like_an_image(f, image);
  auto size = f.size();
  REQUIRE(size.is_ok());
  CHECK(*size == image.size());
  REQUIRE(f.write_gathered().is_ok());
  std::vector<uint8_t> got(image.size());
  REQUIRE(inner->pread(0, got).is_ok());
  CHECK(got == image);
}

TEST_CASE("UnsyncedFile reserves again after a shrink freed its reservation", "[io][unsynced]") {
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  auto posix = new_file(dir.file("image"));
  if (!posix->reserve(0, 4096)) {
    WARN("this file system reserves nothing: nothing to check");
    return;
  }
  PosixFile* inner = posix.get();
  UnsyncedFile f(std::move(posix), /*reserve_ahead=*/true);
  const auto image = pattern(4 << 20, 3);
  REQUIRE(f.pwrite(0, image).is_ok());
  // The shrink (ext4 frees every block past the new end, reserved ones too)
  // happens while the reservation is held; the next write must reserve anew.
  const uint64_t half = image.size() / 2;
  REQUIRE(f.truncate(half).is_ok());
  REQUIRE(f.pwrite(half, std::span<const uint8_t>(image.data(), 4096)).is_ok());
  auto a = inner->allocated_size();
  REQUIRE(a.is_ok());
  CHECK(*a > (uint64_t{64} << 20));
  REQUIRE(f.write_gathered().is_ok());
  a = inner->allocated_size();
  REQUIRE(a.is_ok());
  CHECK(*a <= half + 2 * 4096);
}

TEST_CASE("UnsyncedFile reserves ahead on ext4 and gives the rest back at the end",
          "[io][unsynced]") {
  ScratchDir dir;
  REQUIRE(!dir.path().empty());
  const std::string path = dir.file("image");
  auto posix = new_file(path);
  // Does this file system reserve? (ext4 yes; tmpfs and others no.)
  const bool reserves = posix->reserve(0, 1 << 20);
  if (reserves) {
    auto s = posix->size();
    auto a = posix->allocated_size();
    REQUIRE(s.is_ok());
    REQUIRE(a.is_ok());
    CHECK(*s == 0);            // the size does not change
    CHECK(*a >= (1u << 20));   // the blocks are there
    REQUIRE(posix->truncate(0).is_ok());
  }
  PosixFile* inner = posix.get();
  const auto image = pattern(7 << 20, 2);
  {
    UnsyncedFile f(std::move(posix), /*reserve_ahead=*/true);
    write_like_an_image(f, image);
    if (reserves) {
      auto a = inner->allocated_size();
      REQUIRE(a.is_ok());
      CHECK(*a > image.size());  // 64 MiB steps reserved ahead
    }
    REQUIRE(f.sync_now().is_ok());
    auto s = inner->size();
    auto a = inner->allocated_size();
    REQUIRE(s.is_ok());
    REQUIRE(a.is_ok());
    CHECK(*s == image.size());
    // Nothing reserved is left beyond the end (one block of slack for metadata).
    CHECK(*a <= image.size() + 4096);
    std::vector<uint8_t> got(image.size());
    REQUIRE(inner->pread(0, got).is_ok());
    CHECK(got == image);

  }
  if (!reserves) WARN("this file system reserves nothing: the reservation checks were skipped");
}

}  // namespace qdedup::io
