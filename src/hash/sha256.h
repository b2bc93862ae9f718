// SHA-256 (FIPS 180-4) through OpenSSL, which uses the CPU's SHA extensions
// where present: incremental, for data that arrives in pieces (the dedup
// index checksum, docs/format.md section 3), and one-shot.
//
// Sha256 owns its OpenSSL digest context (freed by the destructor) and is
// reusable: final() starts the next message. Not thread-safe: one per thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "util/status.h"

// OpenSSL's types, declared here so that users need not include OpenSSL.
struct evp_md_st;
struct evp_md_ctx_st;

namespace qdedup::hash {

inline constexpr size_t kSha256DigestSize = 32;
using Sha256Digest = std::array<uint8_t, kSha256DigestSize>;

class Sha256 {
 public:
  // Fails (IoError "out of memory") only when OpenSSL cannot allocate.
  static Result<Sha256> create();

  // Appends `data` to the message.
  void update(std::span<const uint8_t> data);
  // Writes the digest of the message to `out` (kSha256DigestSize bytes) and
  // starts a new, empty message.
  void final(uint8_t* out);
  Sha256Digest final();

 private:
  struct Free {
    void operator()(evp_md_st* md) const;
    void operator()(evp_md_ctx_st* ctx) const;
  };
  Sha256(std::unique_ptr<evp_md_st, Free> md, std::unique_ptr<evp_md_ctx_st, Free> ctx);
  void start();

  // Fetched once: an init with EVP_sha256() would repeat the provider lookup
  // for every message.
  std::unique_ptr<evp_md_st, Free> md_;
  std::unique_ptr<evp_md_ctx_st, Free> ctx_;
};

// SHA-256 of `data` in one call.
Sha256Digest sha256(std::span<const uint8_t> data);

}  // namespace qdedup::hash
