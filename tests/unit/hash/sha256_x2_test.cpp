// Two-stream SHA-256 with the SHA extensions against OpenSSL's SHA-256: every
// length around the padding boundaries, cluster sizes, unaligned inputs.
#include "hash/sha256_x2.h"

#include <openssl/evp.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "hash/hash.h"

namespace qdedup::hash {
namespace {

std::vector<uint8_t> openssl_sha256(const uint8_t* data, size_t length) {
  std::vector<uint8_t> out(32);
  unsigned int n = 0;
  REQUIRE(EVP_Digest(data, length, out.data(), &n, EVP_sha256(), nullptr) == 1);
  REQUIRE(n == 32);
  return out;
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

}  // namespace

TEST_CASE("sha256_x2 agrees with OpenSSL on both messages", "[dedup][hash][sha256_x2]") {
  if (!sha256_x2_supported()) {
    WARN("this CPU has no SHA extensions: sha256_x2 is not used and not tested");
    return;
  }
  const std::vector<uint8_t> data = random_bytes(3 * 65536 + 64, 1);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 260; ++n) lengths.push_back(n);  // every padding case
  for (size_t n : {size_t{511}, size_t{512}, size_t{4095}, size_t{4096}, size_t{4097},
                   size_t{65536}, size_t{65536 + 55}, size_t{65536 + 56}}) {
    lengths.push_back(n);
  }
  for (size_t length : lengths) {
    // Unaligned starts, overlapping and identical messages included.
    for (const auto& [offset_a, offset_b] :
         {std::pair<size_t, size_t>{0, 65536}, {1, 3}, {5, 5}, {65536 + 7, 13}}) {
      INFO("length " << length << ", offsets " << offset_a << " and " << offset_b);
      const uint8_t* a = data.data() + offset_a;
      const uint8_t* b = data.data() + offset_b;
      std::vector<uint8_t> digest_a(32), digest_b(32);
      sha256_x2(a, b, length, digest_a.data(), digest_b.data());
      CHECK(digest_a == openssl_sha256(a, length));
      CHECK(digest_b == openssl_sha256(b, length));
    }
  }
}

TEST_CASE("sha256_x2 matches the FIPS 180-2 examples", "[dedup][hash][sha256_x2]") {
  if (!sha256_x2_supported()) return;
  const std::string abc = "abc";
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  std::vector<uint8_t> d1(32), d2(32);
  sha256_x2(reinterpret_cast<const uint8_t*>(abc.data()),
            reinterpret_cast<const uint8_t*>("xyz"), 3, d1.data(), d2.data());
  const std::vector<uint8_t> abc_digest = {
      0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
      0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  CHECK(d1 == abc_digest);
  sha256_x2(reinterpret_cast<const uint8_t*>(two_blocks.data()),
            reinterpret_cast<const uint8_t*>(two_blocks.data()), two_blocks.size(), d1.data(),
            d2.data());
  const std::vector<uint8_t> two_blocks_digest = {
      0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e, 0x60, 0x39,
      0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff, 0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1};
  CHECK(d1 == two_blocks_digest);
  CHECK(d2 == two_blocks_digest);
}

TEST_CASE("Hasher::hash2 gives the digests of two hash calls for every algorithm",
          "[dedup][hash][sha256_x2]") {
  const std::vector<uint8_t> data = random_bytes(2 * 65536 + 3, 2);
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    auto hasher = make_hasher(algorithm);
    const size_t d = hasher->digest_size();
    // Equal lengths (the two-stream path for sha256) and unequal ones.
    for (const auto& [len_a, len_b] :
         {std::pair<size_t, size_t>{4096, 4096}, {65536, 65536}, {65536, 3}, {0, 0}, {100, 99}}) {
      INFO(hash_name(algorithm) << ", lengths " << len_a << " and " << len_b);
      const std::span<const uint8_t> a(data.data() + 1, len_a);
      const std::span<const uint8_t> b(data.data() + 65536 + 2, len_b);
      std::vector<uint8_t> pair_a(d), pair_b(d), one_a(d), one_b(d);
      hasher->hash2(a, b, pair_a.data(), pair_b.data());
      hasher->hash(a, one_a.data());
      hasher->hash(b, one_b.data());
      CHECK(pair_a == one_a);
      CHECK(pair_b == one_b);
    }
  }
}

}  // namespace qdedup::hash
