#include "hash/skein.h"

#include <bit>
#include <cassert>
#include <cstring>
#include <utility>

#include "hash/little_endian.h"

namespace qdedup::hash {

namespace {

// Skein 1.3, Table 4: Threefish-512 rotation constants R[d mod 8][j].
constexpr int kRotation[8][4] = {
    {46, 36, 19, 37}, {33, 27, 14, 42}, {17, 49, 36, 39}, {44, 9, 54, 56},
    {39, 30, 34, 24}, {13, 50, 10, 17}, {25, 29, 39, 43}, {8, 35, 56, 22},
};

// Section 3.3.2: C240, folded into the extra key word k8.
constexpr uint64_t kKeyScheduleParity = 0x1BD11BDAA9FC1A22;

// Section 3.5.1, Table 6: the tweak's Type field (tweak bits 120..125, i.e.
// bits 56..61 of the high tweak word) and its First/Final flags (bits 126 and
// 127).
constexpr uint64_t kTypeConfig = uint64_t{4} << 56;
constexpr uint64_t kTypeMessage = uint64_t{48} << 56;
constexpr uint64_t kTypeOutput = uint64_t{63} << 56;
constexpr uint64_t kFirst = uint64_t{1} << 62;
constexpr uint64_t kFinal = uint64_t{1} << 63;

// Section 3.5.2: the configuration string's first word is the schema "SHA3"
// (0x53, 0x48, 0x41, 0x33) then version 1, both little-endian.
constexpr uint64_t kConfigSchemaVersion = 0x0000000133414853;

inline void load_block(const uint8_t* p, uint64_t m[8]) {
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) m[i] = load_le64(p + 8 * i);
}

// MIX (section 3.3.1): y0 = x0 + x1, y1 = (x1 <<< R) ^ y0.
template <int R>
[[gnu::always_inline]] inline void mix(uint64_t& x0, uint64_t& x1) {
  x0 += x1;
  x1 = std::rotl(x1, R) ^ x0;
}

// Four rounds with rotations from kRotation[D..D+3]. The word permutation pi =
// (2,1,4,7,6,5,0,3) is applied by renaming rather than moving words: after
// four rounds the renaming is back to the identity, which is when the next
// subkey is injected.
template <int D>
[[gnu::always_inline]] inline void four_rounds(uint64_t x[8]) {
  mix<kRotation[D][0]>(x[0], x[1]);
  mix<kRotation[D][1]>(x[2], x[3]);
  mix<kRotation[D][2]>(x[4], x[5]);
  mix<kRotation[D][3]>(x[6], x[7]);

  mix<kRotation[D + 1][0]>(x[2], x[1]);
  mix<kRotation[D + 1][1]>(x[4], x[7]);
  mix<kRotation[D + 1][2]>(x[6], x[5]);
  mix<kRotation[D + 1][3]>(x[0], x[3]);

  mix<kRotation[D + 2][0]>(x[4], x[1]);
  mix<kRotation[D + 2][1]>(x[6], x[3]);
  mix<kRotation[D + 2][2]>(x[0], x[5]);
  mix<kRotation[D + 2][3]>(x[2], x[7]);

  mix<kRotation[D + 3][0]>(x[6], x[1]);
  mix<kRotation[D + 3][1]>(x[0], x[7]);
  mix<kRotation[D + 3][2]>(x[2], x[5]);
  mix<kRotation[D + 3][3]>(x[4], x[3]);
}

// Subkey s (section 3.3.2): k[(s+i) mod 9], plus tweak words on 5 and 6 and
// the subkey number on 7. `k` holds the 8 key words and k8; `t` holds t0, t1
// and t2 = t0 ^ t1.
template <int S>
[[gnu::always_inline]] inline void inject_subkey(uint64_t x[8], const uint64_t k[9],
                                                 const uint64_t t[3]) {
  x[0] += k[(S + 0) % 9];
  x[1] += k[(S + 1) % 9];
  x[2] += k[(S + 2) % 9];
  x[3] += k[(S + 3) % 9];
  x[4] += k[(S + 4) % 9];
  x[5] += k[(S + 5) % 9] + t[S % 3];
  x[6] += k[(S + 6) % 9] + t[(S + 1) % 3];
  x[7] += k[(S + 7) % 9] + uint64_t{S};
}

template <int S>
[[gnu::always_inline]] inline void eight_rounds(uint64_t x[8], const uint64_t k[9],
                                                const uint64_t t[3]) {
  inject_subkey<S>(x, k, t);
  four_rounds<0>(x);
  inject_subkey<S + 1>(x, k, t);
  four_rounds<4>(x);
}

// One UBI step (section 3.4): h <- Threefish-512(key h, tweak (t0, t1), m) ^ m.
// 72 rounds fully unrolled: 9 x (subkey, 4 rounds, subkey, 4 rounds), then
// subkey 18.
void ubi_block(uint64_t h[8], const uint64_t m[8], uint64_t t0, uint64_t t1) {
  uint64_t k[9];
  k[8] = kKeyScheduleParity;
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    k[i] = h[i];
    k[8] ^= h[i];
  }
  const uint64_t t[3] = {t0, t1, t0 ^ t1};

  uint64_t x[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) x[i] = m[i];
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (eight_rounds<2 * I>(x, k, t), ...);
  }(std::make_integer_sequence<int, 9>{});
  inject_subkey<18>(x, k, t);

#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) h[i] = x[i] ^ m[i];
}

}  // namespace

Skein512::Skein512(size_t output_bytes) : output_bytes_(output_bytes) {
  assert(output_bytes >= 1 && output_bytes <= kMaxOutputBytes);
  // Configuration UBI (section 3.5.2) from a zero key: schema and version,
  // output length in bits, tree parameters 0 (sequential hashing). The
  // configuration string is 32 bytes, zero padded to one block.
  const uint64_t config[8] = {kConfigSchemaVersion, uint64_t{8} * output_bytes};
  for (uint64_t& w : iv_) w = 0;
  ubi_block(iv_, config, 32, kTypeConfig | kFirst | kFinal);
}

void Skein512::hash(std::span<const uint8_t> message, uint8_t* out) const {
  uint64_t h[8];
  for (int i = 0; i < 8; ++i) h[i] = iv_[i];

  // Message UBI. The tweak position counts message bytes processed so far,
  // including the current block. Every block but the last is full; the last
  // (an all-zero block for an empty message) is zero padded, and its
  // position counts only the real bytes.
  const uint8_t* p = message.data();
  size_t left = message.size();
  uint64_t position = 0;
  uint64_t first = kFirst;
  uint64_t m[8];
  while (left > kBlockBytes) {
    load_block(p, m);
    position += kBlockBytes;
    ubi_block(h, m, position, kTypeMessage | first);
    first = 0;
    p += kBlockBytes;
    left -= kBlockBytes;
  }
  uint8_t last[kBlockBytes] = {};
  if (left > 0) std::memcpy(last, p, left);
  load_block(last, m);
  position += left;
  ubi_block(h, m, position, kTypeMessage | first | kFinal);

  // Output UBI (section 3.5.3): one block holding the 8-byte counter 0, which
  // yields up to 512 bits of output.
  const uint64_t counter_block[8] = {};
  ubi_block(h, counter_block, 8, kTypeOutput | kFirst | kFinal);

  uint8_t bytes[kBlockBytes];
  store_le64_words(h, 8, bytes);
  std::memcpy(out, bytes, output_bytes_);
}

}  // namespace qdedup::hash
