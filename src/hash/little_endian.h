// Little-endian 64-bit words, as BLAKE2b (RFC 7693, section 2.4) and Skein
// (Skein 1.3, section 3.1) read their input and write their output. qdedup's
// on-disk structures are big-endian: util/endian.h.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace qdedup::hash {

inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

// Writes words[0..n) to out[0..8n), each little-endian.
inline void store_le64_words(const uint64_t* words, int n, uint8_t* out) {
  for (int i = 0; i < n; ++i) {
    for (int b = 0; b < 8; ++b) out[8 * i + b] = static_cast<uint8_t>(words[i] >> (8 * b));
  }
}

}  // namespace qdedup::hash
