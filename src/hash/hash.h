// Cluster hashes for deduplication, behind one small interface.
//
// A Hasher is one thread's reusable hashing context: no allocation per call,
// not thread-safe (make one per thread; src/hash/hash_pool.h hashes batches
// on all cores). Algorithm ids are stored in the dedup header extension
// (docs/format.md, section 3): never renumber.
//
//   sha256   SHA-256 (FIPS 180-4) from OpenSSL, which uses the CPU's SHA
//            extensions where present; pairs of equal-length inputs with
//            this project's two-stream SHA extensions code
//            (src/hash/sha256_x2.h) where the CPU has them.
//   skein    Skein-512-256 (Skein 1.3), this project's own implementation
//            (src/hash/skein.h).
//   blake2b  BLAKE2b-256 (RFC 7693 with digest length nn = 32; not a
//            truncated BLAKE2b-512, whose bytes differ), this project's own
//            implementation: OpenSSL 3.0's BLAKE2B-512 has no settable length.
//   xxh3     XXH3-128 from libxxhash, digest in XXH128's canonical big-endian
//            form. Not collision resistant: matches must be verified.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/status.h"

namespace qdedup::hash {

enum class HashAlgorithm : uint32_t {
  kSha256 = 1,
  kSkein = 2,    // Skein-512-256
  kBlake2b = 3,  // BLAKE2b-256
  kXxh3 = 4,     // XXH3-128: not collision resistant, needs dedup_verify=on
};

// Every algorithm this build knows, in id order.
inline constexpr HashAlgorithm kAllHashAlgorithms[] = {
    HashAlgorithm::kSha256, HashAlgorithm::kSkein, HashAlgorithm::kBlake2b,
    HashAlgorithm::kXxh3};

inline constexpr size_t kMaxDigestSize = 32;

class Hasher {
 public:
  virtual ~Hasher() = default;
  virtual size_t digest_size() const = 0;
  // Writes digest_size() bytes of the hash of `data` to `out`.
  virtual void hash(std::span<const uint8_t> data, uint8_t* out) = 0;
  // The same for two inputs, digests to out_a and out_b. A Hasher that can
  // hash two inputs faster together than one after the other overrides it.
  virtual void hash2(std::span<const uint8_t> a, std::span<const uint8_t> b, uint8_t* out_a,
                     uint8_t* out_b) {
    hash(a, out_a);
    hash(b, out_b);
  }
};

// Null only for a value outside HashAlgorithm's enumerators.
std::unique_ptr<Hasher> make_hasher(HashAlgorithm algorithm);
size_t digest_size(HashAlgorithm algorithm);

// "sha256", "skein", "blake2b", "xxh3".
const char* hash_name(HashAlgorithm algorithm);
Result<HashAlgorithm> parse_hash_name(std::string_view name);
// The algorithm stored as `id` on disk, if this build knows it.
std::optional<HashAlgorithm> hash_from_id(uint32_t id);
// False for hashes where a match must be confirmed byte for byte.
bool is_collision_resistant(HashAlgorithm algorithm);

// Unkeyed BLAKE2b (RFC 7693) with digest length out.size() bytes, 1 to 64.
// The "blake2b" Hasher is blake2b(data, 32 bytes); other lengths are here for
// the RFC's BLAKE2b-512 test vector.
void blake2b(std::span<const uint8_t> data, std::span<uint8_t> out);

}  // namespace qdedup::hash
