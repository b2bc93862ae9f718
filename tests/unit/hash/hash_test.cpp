// The cluster hashes: known answers for every algorithm, cross-checks against
// independent implementations, and the name/id tables stored on disk.
// Skein has its own file, skein_test.cpp.
#include "hash/hash.h"

#include <openssl/evp.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "support/scratch_dir.h"

namespace qdedup::hash {
namespace {

std::vector<uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// The inputs the reference values below were computed from:
// byte i = (i * 131 + 7) mod 256.
std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 131 + 7);
  return v;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::string digest_hex(HashAlgorithm algorithm, const std::vector<uint8_t>& data) {
  auto hasher = make_hasher(algorithm);
  uint8_t out[kMaxDigestSize];
  hasher->hash(data, out);
  return to_hex(out, hasher->digest_size());
}

std::string blake2b_hex(const std::vector<uint8_t>& data, size_t digest_bytes) {
  uint8_t out[64];
  blake2b(data, std::span<uint8_t>(out, digest_bytes));
  return to_hex(out, digest_bytes);
}

// Writes each message to a file, runs `tool_command FILE...` in that
// directory and returns, per message, the first word of the line naming its
// file (the "DIGEST  NAME" lines of b2sum and xxhsum).
std::vector<std::string> digests_from_tool(const std::string& tool_command,
                                           const std::vector<std::vector<uint8_t>>& messages) {
  image_builder::ScratchDir dir;
  REQUIRE(!dir.path().empty());
  std::string command = "cd '" + dir.path() + "' && " + tool_command;
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string name = "m";  // appended, not operator+: GCC 12 -O3 misreports the latter
    name.append(std::to_string(i));
    std::ofstream(dir.file(name), std::ios::binary)
        .write(reinterpret_cast<const char*>(messages[i].data()),
               static_cast<std::streamsize>(messages[i].size()));
    command += " " + name;
  }
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::map<std::string, std::string> by_name;
  char digest[129];
  char name[64];
  while (std::fscanf(pipe, "%128s %63s", digest, name) == 2) by_name[name] = digest;
  REQUIRE(::pclose(pipe) == 0);
  std::vector<std::string> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string file = "m";
    file.append(std::to_string(i));
    out.push_back(by_name[file]);
  }
  return out;
}

std::vector<std::vector<uint8_t>> random_messages(uint64_t seed, size_t count, size_t max_length) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<uint8_t>> messages;
  for (size_t i = 0; i < count; ++i) {
    std::vector<uint8_t> m(rng() % (max_length + 1));
    for (uint8_t& b : m) b = static_cast<uint8_t>(rng());
    messages.push_back(std::move(m));
  }
  return messages;
}

}  // namespace

TEST_CASE("sha256 matches the NIST FIPS 180-2 examples", "[dedup][hash]") {
  // FIPS 180-2, Appendix B.1 and B.2, and NIST's empty-message and
  // one-million-'a' vectors (NIST CSRC "Examples with intermediate values").
  CHECK(digest_hex(HashAlgorithm::kSha256, bytes_of("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(digest_hex(HashAlgorithm::kSha256,
                   bytes_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(digest_hex(HashAlgorithm::kSha256, {}) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(digest_hex(HashAlgorithm::kSha256, std::vector<uint8_t>(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("blake2b with a 64-byte digest matches RFC 7693 Appendix A", "[dedup][hash]") {
  CHECK(blake2b_hex(bytes_of("abc"), 64) ==
        "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
        "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923");
}

TEST_CASE("blake2b-256 matches b2sum -l 256", "[dedup][hash]") {
  // Computed with `b2sum -l 256` (GNU coreutils 9.1, Debian bookworm) when
  // these tests were written; pattern(n) files were made by the same formula.
  // Lengths around the 128-byte block.
  CHECK(digest_hex(HashAlgorithm::kBlake2b, {}) ==
        "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  CHECK(digest_hex(HashAlgorithm::kBlake2b, bytes_of("abc")) ==
        "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  CHECK(digest_hex(HashAlgorithm::kBlake2b,
                   bytes_of("The quick brown fox jumps over the lazy dog")) ==
        "01718cec35cd3d796dd00020e0bfecb473ad23457d063b75eff29c0ffa2e58a9");
  const std::map<size_t, std::string> expected = {
      {127, "4a93be37d3af03b9b7210a679fd9ebecd7b4acbd94d63dce25b42da6883ae32f"},
      {128, "c945e7bf8641fd725826599b1b32c14553d474798f7d07072c1dacca292464a4"},
      {129, "67e9bafa1f1d736a9d5cee5a9aabd6634a323bab977dc8e40fec2bda7b7b7b61"},
      {255, "ccbf53d2bf849ea0558ec7821ad2f4fe9364231a27f32c5eeda21c25fbb6dd31"},
      {256, "abebbd91f14ecf1d601a9e9be2c2be68c0e1d42ed52fb6c0cf8cad221bfda721"},
      {1000, "109d4c66307a14be694feb326a7b83e35c22e0efbfe4a8ebb6360c6eca00b09e"},
  };
  for (const auto& [length, digest] : expected) {
    INFO("pattern of " << length << " bytes");
    CHECK(digest_hex(HashAlgorithm::kBlake2b, pattern(length)) == digest);
  }
}

TEST_CASE("blake2b-256 is not truncated blake2b-512", "[dedup][hash]") {
  // The digest length is a parameter of BLAKE2b, so the first 32 bytes of
  // BLAKE2b-512 are a different hash.
  CHECK(blake2b_hex(bytes_of("abc"), 32) != blake2b_hex(bytes_of("abc"), 64).substr(0, 64));
}

TEST_CASE("blake2b-512 agrees with OpenSSL's BLAKE2b-512 on random messages", "[dedup][hash]") {
  for (const auto& message : random_messages(7693, 300, 3000)) {
    uint8_t theirs[64];
    unsigned int length = 0;
    REQUIRE(EVP_Digest(message.data(), message.size(), theirs, &length, EVP_blake2b512(),
                       nullptr) == 1);
    REQUIRE(length == 64);
    INFO("message of " << message.size() << " bytes");
    CHECK(blake2b_hex(message, 64) == to_hex(theirs, 64));
  }
}

TEST_CASE("blake2b-256 agrees with b2sum -l 256 on random messages", "[dedup][hash]") {
  if (std::system("b2sum --version >/dev/null 2>&1") != 0) {
    WARN("b2sum (coreutils) not found: BLAKE2b-256 cross-check skipped");
    return;
  }
  const auto messages = random_messages(256, 100, 5000);
  const auto theirs = digests_from_tool("b2sum -l 256", messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    INFO("message of " << messages[i].size() << " bytes");
    CHECK(digest_hex(HashAlgorithm::kBlake2b, messages[i]) == theirs[i]);
  }
}

TEST_CASE("xxh3 matches xxhsum -H2 reference values", "[dedup][hash]") {
  // XXH3-128 in canonical (big-endian) form, computed with `xxhsum -H2`
  // (xxHash 0.8.1, Debian bookworm package xxhash) when these tests were
  // written. Lengths cover each of XXH3's code paths: 0, 1-3, 4-8, 9-16,
  // 17-128, 129-240 and long inputs (stripes of 64 bytes, blocks of 1024).
  CHECK(digest_hex(HashAlgorithm::kXxh3, {}) == "99aa06d3014798d86001c324468d497f");
  CHECK(digest_hex(HashAlgorithm::kXxh3, bytes_of("abc")) == "06b05ab6733a618578af5f94892f3950");
  const std::map<size_t, std::string> expected = {
      {1, "495b62073ef70ca44c5cca45d0f4811f"},    {3, "390cdc5b4a895dd76e3e2670e61106ac"},
      {4, "aa6e2f274640a3f43d668af6f2a44d77"},    {8, "6a86a3bda6af4e3d61ddbe7f31a6100d"},
      {9, "664c7ca18afd62558c7b67fd458a936b"},    {16, "7f9a218b0425449ae2ce54a7c19c730d"},
      {17, "66fc23f6439dbd778d96ef110fcdebb4"},   {128, "aec730751478556cff361dec1385710a"},
      {129, "98cd36ccbb5579264545b3a09738e31a"},  {240, "5293e17bf553903d3f2c53e72293711f"},
      {241, "b53840fe3fedf161956cae592c67279e"},  {1024, "f69630613f24324d70bd377d9574f4bb"},
      {4096, "3e0ff38fa88a55ea9ddd66c14af0daff"}, {65541, "f8029ae2275db5979977e4f0e1e51eb1"},
  };
  for (const auto& [length, digest] : expected) {
    INFO("pattern of " << length << " bytes");
    CHECK(digest_hex(HashAlgorithm::kXxh3, pattern(length)) == digest);
  }
}

TEST_CASE("xxh3 agrees with xxhsum -H2 on random messages", "[dedup][hash]") {
  if (std::system("xxhsum --version >/dev/null 2>&1") != 0) {
    WARN("xxhsum is not installed (Debian package xxhash): XXH3-128 cross-check skipped");
    return;
  }
  const auto messages = random_messages(128, 100, 5000);
  const auto theirs = digests_from_tool("xxhsum -H2", messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    INFO("message of " << messages[i].size() << " bytes");
    CHECK(digest_hex(HashAlgorithm::kXxh3, messages[i]) == theirs[i]);
  }
}

TEST_CASE("a reused Hasher gives the digests of fresh ones", "[dedup][hash]") {
  const auto messages = random_messages(42, 40, 70000);
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    INFO(hash_name(algorithm));
    auto reused = make_hasher(algorithm);
    REQUIRE(reused != nullptr);
    for (const auto& message : messages) {
      uint8_t out[kMaxDigestSize];
      reused->hash(message, out);
      CHECK(to_hex(out, reused->digest_size()) == digest_hex(algorithm, message));
    }
  }
}

TEST_CASE("every algorithm has a Hasher whose digest size matches digest_size", "[dedup][hash]") {
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    INFO(hash_name(algorithm));
    auto hasher = make_hasher(algorithm);
    REQUIRE(hasher != nullptr);
    CHECK(hasher->digest_size() == digest_size(algorithm));
    CHECK(digest_size(algorithm) <= kMaxDigestSize);
  }
  CHECK(digest_size(HashAlgorithm::kXxh3) == 16);
  CHECK(digest_size(HashAlgorithm::kSha256) == 32);
}

TEST_CASE("parse_hash_name accepts the four names and nothing else", "[dedup][hash]") {
  for (HashAlgorithm algorithm : kAllHashAlgorithms) {
    auto parsed = parse_hash_name(hash_name(algorithm));
    REQUIRE(parsed.is_ok());
    CHECK(*parsed == algorithm);
  }
  CHECK(*parse_hash_name("skein") == HashAlgorithm::kSkein);
  for (const char* bad : {"", "SHA256", "sha-256", "md5", "skein512", "xxh128", "blake3"}) {
    INFO("'" << bad << "'");
    auto parsed = parse_hash_name(bad);
    REQUIRE(!parsed.is_ok());
    CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
    CHECK(parsed.status().message().find("sha256, skein, blake2b, xxh3") != std::string::npos);
  }
}

TEST_CASE("hash_from_id knows the on-disk ids 1 to 4 and no others", "[dedup][hash]") {
  // Stored on disk (docs/format.md): the numbers must never change.
  CHECK(hash_from_id(1) == HashAlgorithm::kSha256);
  CHECK(hash_from_id(2) == HashAlgorithm::kSkein);
  CHECK(hash_from_id(3) == HashAlgorithm::kBlake2b);
  CHECK(hash_from_id(4) == HashAlgorithm::kXxh3);
  for (uint32_t bad : {0u, 5u, 255u, 0x80000001u, 0xFFFFFFFFu}) {
    INFO("id " << bad);
    CHECK(!hash_from_id(bad).has_value());
  }
}

TEST_CASE("only xxh3 needs byte-for-byte verification", "[dedup][hash]") {
  CHECK(is_collision_resistant(HashAlgorithm::kSha256));
  CHECK(is_collision_resistant(HashAlgorithm::kSkein));
  CHECK(is_collision_resistant(HashAlgorithm::kBlake2b));
  CHECK(!is_collision_resistant(HashAlgorithm::kXxh3));
}

}  // namespace qdedup::hash
