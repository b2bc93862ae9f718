// Skein-512 (Skein 1.3, Ferguson et al., 2010-10-01) in its plain hashing
// mode: Threefish-512 in the UBI chaining mode, written from the published
// specification (sections 3.3 Threefish, 3.4 UBI, 3.5 Skein, 3.5.2 the
// configuration string). Portable C++, no assembly.
//
// qdedup's "skein" cluster hash is Skein-512-256 (Skein512(32)). Other output
// lengths up to one output block (512 bits) exist so the tests can check the
// Skein-512-512 vectors of the specification's Appendix C and of the
// submission's LongMsgKAT_512.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace qdedup::hash {

class Skein512 {
 public:
  static constexpr size_t kBlockBytes = 64;
  static constexpr size_t kMaxOutputBytes = 64;

  // Precondition: 1 <= output_bytes <= kMaxOutputBytes. Computes the
  // chaining value after the configuration block once, so that hash() only
  // processes the message and output blocks.
  explicit Skein512(size_t output_bytes);

  size_t output_bytes() const { return output_bytes_; }

  // Writes output_bytes() bytes of Skein-512-(8*output_bytes) of `message`
  // to `out`. Allocates nothing; const, so one Skein512 may be shared by
  // threads.
  void hash(std::span<const uint8_t> message, uint8_t* out) const;

 private:
  size_t output_bytes_;
  uint64_t iv_[8];  // chaining value after the configuration UBI
};

}  // namespace qdedup::hash
