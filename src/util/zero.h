// Zero detection for guest data.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace qdedup {

// True if every byte of `data` is zero. Compares the bytes with themselves
// shifted by one (libc's vectorized memcmp) once the first is known to be zero.
inline bool is_zero(std::span<const uint8_t> data) {
  return data.empty() || (data[0] == 0 && std::memcmp(data.data(), data.data() + 1, data.size() - 1) == 0);
}

}  // namespace qdedup
