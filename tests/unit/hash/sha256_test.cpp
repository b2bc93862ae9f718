// Incremental SHA-256: known answers, a message fed in pieces of every split
// gives the one-shot digest, and final() starts a fresh message.
#include "hash/sha256.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace qdedup::hash {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string hex_of(const Sha256Digest& d) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Sha256 make() {
  Result<Sha256> s = Sha256::create();
  REQUIRE(s.is_ok());
  return std::move(s).value();
}

}  // namespace

TEST_CASE("Sha256 matches the NIST FIPS 180-2 examples", "[hash][sha256]") {
  Sha256 s = make();
  s.update(bytes_of("abc"));
  CHECK(hex_of(s.final()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Nothing added since final(): the empty message.
  CHECK(hex_of(s.final()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hex_of(sha256(bytes_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(hex_of(sha256({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("Sha256 fed in pieces gives the one-shot digest at every split", "[hash][sha256]") {
  std::vector<uint8_t> m(300);
  std::mt19937 rng(5);
  for (uint8_t& b : m) b = static_cast<uint8_t>(rng());
  const Sha256Digest whole = sha256(m);
  Sha256 s = make();
  for (size_t a = 0; a <= m.size(); a += 7) {
    for (size_t b = a; b <= m.size(); b += 13) {
      s.update(std::span<const uint8_t>(m.data(), a));
      s.update(std::span<const uint8_t>(m.data() + a, b - a));
      s.update(std::span<const uint8_t>(m.data() + b, m.size() - b));
      INFO("split at " << a << " and " << b);
      REQUIRE(s.final() == whole);
    }
  }
  uint8_t out[kSha256DigestSize];
  s.update(m);
  s.final(out);
  CHECK(std::equal(whole.begin(), whole.end(), out));
}

TEST_CASE("a moved Sha256 carries its message", "[hash][sha256]") {
  Sha256 a = make();
  a.update(bytes_of("ab"));
  Sha256 b = std::move(a);
  b.update(bytes_of("c"));
  CHECK(hex_of(b.final()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
}  // namespace qdedup::hash
