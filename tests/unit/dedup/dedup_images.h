// Images with a valid dedup index, written through DedupWriter, for the tests
// of loading and checking the index.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "dedup/dedup_writer.h"
#include "io/memory_file.h"
#include "support/image_builder.h"

namespace qdedup::dedup_images {

// A 1 MiB image with 4 KiB clusters whose guest clusters 0..clusters-1 hold
// image_builder::pattern_bytes(4096, pattern_of(c)), deduplicated with
// SHA-256: one index entry per distinct pattern.
inline std::vector<uint8_t> deduplicated_image(uint64_t clusters,
                                               const std::function<uint32_t(uint64_t)>& pattern_of) {
  namespace ib = qdedup::image_builder;
  io::MemoryFile mem("img.qcow2");
  REQUIRE(qcow2::create_image(mem, ib::small_options(1 << 20, 12)).is_ok());
  auto img = ib::open_borrowed(mem, true);
  REQUIRE(img.is_ok());
  dedup::DedupWriter w(**img, dedup::DedupConfig{}, std::make_unique<io::MemoryFile>("records"));
  auto hasher = hash::make_hasher(hash::HashAlgorithm::kSha256);
  for (uint64_t c = 0; c < clusters; ++c) {
    auto data = ib::pattern_bytes(4096, pattern_of(c));
    uint8_t h[32];
    hasher->hash(data, h);
    REQUIRE(w.put(c, data, h).is_ok());
  }
  REQUIRE(w.finish().is_ok());
  img->reset();
  return mem.bytes();
}

}  // namespace qdedup::dedup_images
