#include "hash/sha256_x2.h"

#include <cassert>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define QDEDUP_SHA_NI 1
#endif

namespace qdedup::hash {

#if QDEDUP_SHA_NI

namespace {

#define QDEDUP_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

// FIPS 180-4, 4.2.2: the first 32 bits of the fractional parts of the cube
// roots of the first 64 primes.
alignas(16) constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

// FIPS 180-4, 5.3.3: the initial hash value H(0) = a, b, c, d, e, f, g, h.
alignas(16) constexpr uint32_t kInitial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

constexpr size_t kBlock = 64;

// The SHA extensions keep the eight working variables in two registers, as
// (lane 3 .. lane 0) A B E F and C D G H.
struct State {
  __m128i abef;
  __m128i cdgh;
};

// Swaps the bytes of each 32-bit lane: big-endian words <-> native.
QDEDUP_SHA_TARGET inline __m128i byte_swap_words(__m128i x) {
  return _mm_shuffle_epi8(x, _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL));
}

QDEDUP_SHA_TARGET inline State initial_state() {
  const __m128i dcba = _mm_load_si128(reinterpret_cast<const __m128i*>(&kInitial[0]));
  const __m128i hgfe = _mm_load_si128(reinterpret_cast<const __m128i*>(&kInitial[4]));
  const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  return {_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0)};
}

// Writes the big-endian digest H0..H7 of `s`.
QDEDUP_SHA_TARGET inline void store_digest(const State& s, uint8_t* out) {
  const __m128i feba = _mm_shuffle_epi32(s.abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
  const __m128i dcba = _mm_blend_epi16(feba, dchg, 0xF0);
  const __m128i hgfe = _mm_alignr_epi8(dchg, feba, 8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), byte_swap_words(dcba));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), byte_swap_words(hgfe));
}

// Message word group w[i] = W[4i .. 4i+3] (FIPS 180-4, 6.2.2 step 1) from the
// four before it, kept in a ring of four: w[i-4] + sigma0 terms (SHA256MSG1),
// + W[t-7] (the words of w[i-2] and w[i-1] straddling them), then the sigma1
// terms (SHA256MSG2).
QDEDUP_SHA_TARGET inline __m128i next_words(__m128i w4, __m128i w3, __m128i w2, __m128i w1) {
  const __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(w4, w3), _mm_alignr_epi8(w1, w2, 4));
  return _mm_sha256msg2_epu32(t, w1);
}

// One 64-byte block of each message, the 64 rounds of the two interleaved.
QDEDUP_SHA_TARGET void compress_x2(State& sa, State& sb, const uint8_t* pa, const uint8_t* pb) {
  __m128i wa[4];
  __m128i wb[4];
  for (int i = 0; i < 4; ++i) {
    wa[i] = byte_swap_words(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 16 * i)));
    wb[i] = byte_swap_words(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + 16 * i)));
  }
  __m128i a0 = sa.abef, a1 = sa.cdgh;
  __m128i b0 = sb.abef, b1 = sb.cdgh;
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    if (i >= 4) {
      wa[i & 3] = next_words(wa[i & 3], wa[(i + 1) & 3], wa[(i + 2) & 3], wa[(i + 3) & 3]);
      wb[i & 3] = next_words(wb[i & 3], wb[(i + 1) & 3], wb[(i + 2) & 3], wb[(i + 3) & 3]);
    }
    const __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(&kRound[4 * i]));
    __m128i ma = _mm_add_epi32(wa[i & 3], k);
    __m128i mb = _mm_add_epi32(wb[i & 3], k);
    // Rounds 4i and 4i+1 (the low half of the message register), then 4i+2
    // and 4i+3: each SHA256RNDS2 returns the new A B E F, and the old one
    // becomes the new C D G H.
    a1 = _mm_sha256rnds2_epu32(a1, a0, ma);
    b1 = _mm_sha256rnds2_epu32(b1, b0, mb);
    ma = _mm_shuffle_epi32(ma, 0x0E);
    mb = _mm_shuffle_epi32(mb, 0x0E);
    a0 = _mm_sha256rnds2_epu32(a0, a1, ma);
    b0 = _mm_sha256rnds2_epu32(b0, b1, mb);
  }
  sa.abef = _mm_add_epi32(sa.abef, a0);
  sa.cdgh = _mm_add_epi32(sa.cdgh, a1);
  sb.abef = _mm_add_epi32(sb.abef, b0);
  sb.cdgh = _mm_add_epi32(sb.cdgh, b1);
}

// The message's last length % 64 bytes, then 0x80, zeros and the bit length
// as a 64-bit big-endian number (FIPS 180-4, 5.1.1): one block, or two when
// the tail leaves fewer than 9 bytes free. Returns the number of blocks.
size_t pad_tail(const uint8_t* message, size_t length, uint8_t (&tail)[2 * kBlock]) {
  const size_t rest = length % kBlock;
  std::memset(tail, 0, sizeof tail);
  std::memcpy(tail, message + (length - rest), rest);
  tail[rest] = 0x80;
  const size_t blocks = rest + 9 <= kBlock ? 1 : 2;
  const uint64_t bits = static_cast<uint64_t>(length) * 8;
  for (int i = 0; i < 8; ++i) {
    tail[blocks * kBlock - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
  }
  return blocks;
}

}  // namespace

bool sha256_x2_supported() {
  static const bool supported = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid(1, eax, ebx, ecx, edx);
    const bool sse = (ecx & bit_SSSE3) != 0 && (ecx & bit_SSE4_1) != 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return sse && (ebx & bit_SHA) != 0;
  }();
  return supported;
}

QDEDUP_SHA_TARGET void sha256_x2(const uint8_t* a, const uint8_t* b, size_t length,
                                 uint8_t* digest_a, uint8_t* digest_b) {
  assert(sha256_x2_supported());
  State sa = initial_state();
  State sb = sa;
  const size_t full = length / kBlock * kBlock;
  for (size_t offset = 0; offset < full; offset += kBlock) {
    compress_x2(sa, sb, a + offset, b + offset);
  }
  uint8_t tail_a[2 * kBlock];
  uint8_t tail_b[2 * kBlock];
  const size_t blocks = pad_tail(a, length, tail_a);
  pad_tail(b, length, tail_b);
  for (size_t i = 0; i < blocks; ++i) {
    compress_x2(sa, sb, tail_a + i * kBlock, tail_b + i * kBlock);
  }
  store_digest(sa, digest_a);
  store_digest(sb, digest_b);
}

#else  // no SHA extensions on this architecture

bool sha256_x2_supported() { return false; }

void sha256_x2(const uint8_t*, const uint8_t*, size_t, uint8_t*, uint8_t*) {
  std::abort();  // precondition broken: never hand back digests that were not computed
}

#endif

}  // namespace qdedup::hash
