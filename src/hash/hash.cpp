#include "hash/hash.h"

#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#define XXH_DISPATCH_DISABLE_REPLACE  // call the _dispatch names explicitly
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>
#include <new>
#include <utility>

#include "hash/little_endian.h"
#include "hash/sha256.h"
#include "hash/sha256_x2.h"
#include "hash/skein.h"

namespace qdedup::hash {

namespace {

// SHA-256: OpenSSL for one input (src/hash/sha256.h), both at once for two
// of the same length when the CPU has the SHA extensions. OpenSSL 3.0 frees
// and re-creates the provider's small digest context at every message; that
// allocation is inside OpenSSL and cannot be avoided through EVP.
class Sha256Hasher : public Hasher {
 public:
  Sha256Hasher() : sha_(make_sha256()), x2_(sha256_x2_supported()) {}

  size_t digest_size() const override { return kSha256DigestSize; }
  void hash(std::span<const uint8_t> data, uint8_t* out) override {
    sha_.update(data);
    sha_.final(out);
  }
  void hash2(std::span<const uint8_t> a, std::span<const uint8_t> b, uint8_t* out_a,
             uint8_t* out_b) override {
    if (x2_ && a.size() == b.size()) {
      sha256_x2(a.data(), b.data(), a.size(), out_a, out_b);
    } else {
      Hasher::hash2(a, b, out_a, out_b);
    }
  }

 private:
  static Sha256 make_sha256() {
    Result<Sha256> s = Sha256::create();
    if (!s) throw std::bad_alloc();
    return std::move(s).value();
  }

  Sha256 sha_;
  bool x2_;
};

class SkeinHasher : public Hasher {
 public:
  SkeinHasher() : skein_(32) {}
  size_t digest_size() const override { return 32; }
  void hash(std::span<const uint8_t> data, uint8_t* out) override { skein_.hash(data, out); }

 private:
  Skein512 skein_;  // holds the precomputed Skein-512-256 chaining value
};

class Blake2bHasher : public Hasher {
 public:
  size_t digest_size() const override { return 32; }
  void hash(std::span<const uint8_t> data, uint8_t* out) override {
    blake2b(data, std::span<uint8_t>(out, 32));
  }
};

class Xxh3Hasher : public Hasher {
 public:
  size_t digest_size() const override { return 16; }
  void hash(std::span<const uint8_t> data, uint8_t* out) override {
#if defined(__x86_64__) || defined(__i386__)
    // Picks the widest vector unit (SSE2, AVX2, AVX-512) at run time; the
    // result is the same as XXH3_128bits.
    const XXH128_hash_t h = XXH3_128bits_dispatch(data.data(), data.size());
#else
    const XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
#endif
    XXH128_canonical_t canonical;
    XXH128_canonicalFromHash(&canonical, h);
    std::memcpy(out, canonical.digest, sizeof canonical.digest);
  }
};

// --- BLAKE2b (RFC 7693) ---------------------------------------------------

// RFC 7693 section 2.6: the SHA-512 initial hash values.
constexpr uint64_t kBlake2bIv[8] = {
    0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
    0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179};

// RFC 7693 section 2.7: message word schedule; rounds 10 and 11 reuse rows 0
// and 1.
constexpr uint8_t kBlake2bSigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

constexpr size_t kBlake2bBlockBytes = 128;

// RFC 7693 section 3.1: the mixing function G.
template <int A, int B, int C, int D>
[[gnu::always_inline]] inline void blake2b_g(uint64_t v[16], uint64_t x, uint64_t y) {
  v[A] = v[A] + v[B] + x;
  v[D] = std::rotr(v[D] ^ v[A], 32);
  v[C] = v[C] + v[D];
  v[B] = std::rotr(v[B] ^ v[C], 24);
  v[A] = v[A] + v[B] + y;
  v[D] = std::rotr(v[D] ^ v[A], 16);
  v[C] = v[C] + v[D];
  v[B] = std::rotr(v[B] ^ v[C], 63);
}

template <int R>
[[gnu::always_inline]] inline void blake2b_round(uint64_t v[16], const uint64_t m[16]) {
  constexpr const uint8_t* s = kBlake2bSigma[R];
  blake2b_g<0, 4, 8, 12>(v, m[s[0]], m[s[1]]);
  blake2b_g<1, 5, 9, 13>(v, m[s[2]], m[s[3]]);
  blake2b_g<2, 6, 10, 14>(v, m[s[4]], m[s[5]]);
  blake2b_g<3, 7, 11, 15>(v, m[s[6]], m[s[7]]);
  blake2b_g<0, 5, 10, 15>(v, m[s[8]], m[s[9]]);
  blake2b_g<1, 6, 11, 12>(v, m[s[10]], m[s[11]]);
  blake2b_g<2, 7, 8, 13>(v, m[s[12]], m[s[13]]);
  blake2b_g<3, 4, 9, 14>(v, m[s[14]], m[s[15]]);
}

// RFC 7693 section 3.2: compression function F. `t` is the byte offset at
// the end of this block (the high counter word stays 0: a cluster is far
// below 2^64 bytes).
void blake2b_compress(uint64_t h[8], const uint8_t* block, uint64_t t, bool last) {
  uint64_t m[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) m[i] = load_le64(block + 8 * i);
  uint64_t v[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    v[i] = h[i];
    v[i + 8] = kBlake2bIv[i];
  }
  v[12] ^= t;
  if (last) v[14] = ~v[14];
  [&]<int... R>(std::integer_sequence<int, R...>) {
    (blake2b_round<R>(v, m), ...);
  }(std::make_integer_sequence<int, 12>{});
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) h[i] ^= v[i] ^ v[i + 8];
}

}  // namespace

void blake2b(std::span<const uint8_t> data, std::span<uint8_t> out) {
  assert(!out.empty() && out.size() <= 64);
  // Parameter block (section 2.5): digest length nn, key length 0, fanout 1,
  // depth 1.
  uint64_t h[8];
  std::copy_n(kBlake2bIv, 8, h);
  h[0] ^= 0x01010000 ^ uint64_t{out.size()};

  // Every block but the last is compressed as non-final; the last one (an
  // all-zero block for empty input) is zero padded and final, with the
  // counter at the real length.
  const uint8_t* p = data.data();
  size_t left = data.size();
  uint64_t offset = 0;
  while (left > kBlake2bBlockBytes) {
    offset += kBlake2bBlockBytes;
    blake2b_compress(h, p, offset, false);
    p += kBlake2bBlockBytes;
    left -= kBlake2bBlockBytes;
  }
  uint8_t last[kBlake2bBlockBytes] = {};
  if (left > 0) std::memcpy(last, p, left);
  blake2b_compress(h, last, offset + left, true);

  uint8_t bytes[64];
  store_le64_words(h, 8, bytes);
  std::memcpy(out.data(), bytes, out.size());
}

std::unique_ptr<Hasher> make_hasher(HashAlgorithm algorithm) {
  switch (algorithm) {
    case HashAlgorithm::kSha256:
      return std::make_unique<Sha256Hasher>();
    case HashAlgorithm::kSkein:
      return std::make_unique<SkeinHasher>();
    case HashAlgorithm::kBlake2b:
      return std::make_unique<Blake2bHasher>();
    case HashAlgorithm::kXxh3:
      return std::make_unique<Xxh3Hasher>();
  }
  return nullptr;
}

size_t digest_size(HashAlgorithm algorithm) {
  return algorithm == HashAlgorithm::kXxh3 ? 16 : 32;
}

const char* hash_name(HashAlgorithm algorithm) {
  switch (algorithm) {
    case HashAlgorithm::kSha256: return "sha256";
    case HashAlgorithm::kSkein: return "skein";
    case HashAlgorithm::kBlake2b: return "blake2b";
    case HashAlgorithm::kXxh3: return "xxh3";
  }
  return "unknown";
}

Result<HashAlgorithm> parse_hash_name(std::string_view name) {
  for (HashAlgorithm a : kAllHashAlgorithms) {
    if (name == hash_name(a)) return a;
  }
  return invalid_argument("unknown dedup hash '" + std::string(name) +
                          "' (supported: sha256, skein, blake2b, xxh3)");
}

std::optional<HashAlgorithm> hash_from_id(uint32_t id) {
  for (HashAlgorithm a : kAllHashAlgorithms) {
    if (id == static_cast<uint32_t>(a)) return a;
  }
  return std::nullopt;
}

bool is_collision_resistant(HashAlgorithm algorithm) {
  return algorithm != HashAlgorithm::kXxh3;
}

}  // namespace qdedup::hash
