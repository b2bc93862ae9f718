// Fuzz target "header": cluster 0 of a qcow2 image (src/qcow2/header.*).
//
// Input: the first bytes of an image (its header cluster; shorter is allowed).
// decode_header() and validate_header() must refuse bad input with a message,
// never crash. A decoded header that encodes must decode again, and encode to
// the same bytes (a header qdedup rewrites keeps what it read).
#include <cstdint>
#include <span>

#include "fuzz_support.h"
#include "qcow2/geometry.h"
#include "qcow2/header.h"

using namespace qdedup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInputBytes) return -1;
  std::span<const uint8_t> bytes(data, size);
  auto decoded = qcow2::decode_header(bytes);
  fuzz::expect_message(decoded.status());
  if (!decoded) return 0;
  const qcow2::Header& h = *decoded;

  bool valid = false;
  for (uint64_t file_size : {uint64_t{size}, uint64_t{1} << 40}) {
    for (bool writable : {false, true}) {
      Status s = qcow2::validate_header(h, file_size, writable);
      fuzz::expect_message(s);
      valid = valid || s.is_ok();
    }
  }
  if (valid) (void)qcow2::Geometry::from_header(h);
  (void)qcow2::describe_features(h, 0, h.incompatible_features | ~uint64_t{0});
  (void)qcow2::describe_features(h, 1, h.compatible_features);
  (void)qcow2::describe_features(h, 2, h.autoclear_features);

  auto encoded = qcow2::encode_header(h);
  fuzz::expect_message(encoded.status());
  if (!encoded) return 0;
  if (encoded->size() != h.cluster_size()) fuzz::fuzz_fail("encode_header: not one cluster");
  auto again = qcow2::decode_header(*encoded);
  if (!again) fuzz::fuzz_fail("encode_header wrote a header decode_header refuses");
  auto reencoded = qcow2::encode_header(*again);
  if (!reencoded || *reencoded != *encoded) {
    fuzz::fuzz_fail("decode(encode(h)) does not encode to the same bytes");
  }
  return 0;
}
