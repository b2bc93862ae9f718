// Test-only: the guest data of a qcow2 image held in memory, read through the
// independent reader of support/refcheck.h, against a raw model of it.
// Header-only; uses Catch2 macros (a mismatch ends the calling test).
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "support/refcheck.h"

namespace qdedup::testsupport {

// Every guest cluster of `image` (through its active L1; no backing file)
// equals the same bytes of `raw`.
inline void require_guest_data(const std::vector<uint8_t>& image, const std::vector<uint8_t>& raw,
                               uint64_t cluster_size) {
  for (uint64_t gc = 0; gc * cluster_size < raw.size(); ++gc) {
    auto got = read_guest_cluster(image, gc);
    INFO("guest cluster " << gc);
    REQUIRE(got.is_ok());
    REQUIRE(std::equal(got->begin(), got->end(),
                       raw.begin() + static_cast<long>(gc * cluster_size)));
  }
}

}  // namespace qdedup::testsupport
