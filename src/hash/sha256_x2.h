// SHA-256 (FIPS 180-4) of two messages at once with the x86 SHA extensions.
//
// One SHA-256 stream is latency-bound: every SHA256RNDS2 instruction waits
// for the previous one, while the core could start a new one every cycle or
// two. Deduplication hashes many independent clusters of one size, so two of
// them are hashed together: their rounds are interleaved instruction by
// instruction and the two dependency chains overlap. The idea is the one of
// Linux's sha256_ni_finup2x (used by dm-verity); this is the project's own
// implementation, tested against OpenSSL (tests/unit/dedup/sha256_x2_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace qdedup::hash {

// True when this CPU has the SHA extensions, SSSE3 and SSE4.1. False on every
// other architecture.
bool sha256_x2_supported();

// digest_a = SHA-256(a[0, length)), digest_b = SHA-256(b[0, length)); 32
// bytes each. Precondition: sha256_x2_supported().
void sha256_x2(const uint8_t* a, const uint8_t* b, size_t length, uint8_t* digest_a,
               uint8_t* digest_b);

}  // namespace qdedup::hash
