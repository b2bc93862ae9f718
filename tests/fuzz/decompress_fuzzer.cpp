// Fuzz target "decompress": compressed cluster streams (src/qcow2/compress.*).
//
// Input: byte 0 selects the mode (bit 0: 0 zlib, 1 zstd; bit 1: round trip),
// byte 1 the cluster size (2^(9 + byte % 13): 512 B .. 2 MiB), the rest is
// - a compressed stream: decompress_cluster() fills exactly one cluster or
//   fails with a message; it never writes outside the cluster (the output is
//   a vector of exactly that size, so AddressSanitizer sees any overrun);
// - round trip: plain data, repeated to fill a cluster, compressed as QEMU
//   does (raw deflate with a 4 KiB window, or a zstd frame); it must
//   decompress to the same cluster.
#include <zlib.h>
#include <zstd.h>

#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_support.h"
#include "qcow2/compress.h"
#include "qcow2/format.h"

using namespace qdedup;

namespace {

std::vector<uint8_t> deflate_raw(std::span<const uint8_t> in) {
  z_stream s{};
  if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    fuzz::fuzz_fail("deflateInit2");
  }
  std::vector<uint8_t> out(deflateBound(&s, static_cast<uLong>(in.size())));
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  if (deflate(&s, Z_FINISH) != Z_STREAM_END) fuzz::fuzz_fail("deflate");
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

std::vector<uint8_t> zstd_frame(std::span<const uint8_t> in) {
  std::vector<uint8_t> out(ZSTD_compressBound(in.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 1);
  if (ZSTD_isError(n)) fuzz::fuzz_fail("ZSTD_compress");
  out.resize(n);
  return out;
}

void round_trip(uint8_t type, std::span<const uint8_t> seed, std::vector<uint8_t>& cluster) {
  std::vector<uint8_t> plain(cluster.size(), 0);
  for (size_t i = 0; !seed.empty() && i < plain.size(); ++i) plain[i] = seed[i % seed.size()];
  std::vector<uint8_t> stream =
      type == qcow2::kCompressionZstd ? zstd_frame(plain) : deflate_raw(plain);
  Status s = qcow2::decompress_cluster(type, stream, cluster);
  if (!s) fuzz::fuzz_fail("a stream QEMU would write does not decompress");
  if (cluster != plain) fuzz::fuzz_fail("round trip changed the cluster");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > fuzz::kMaxInputBytes) return -1;
  uint8_t type = (data[0] & 1) ? qcow2::kCompressionZstd : qcow2::kCompressionZlib;
  bool round = (data[0] & 2) != 0;
  uint32_t cluster_bits = qcow2::kMinClusterBits + data[1] % 13;
  std::span<const uint8_t> rest(data + 2, size - 2);
  std::vector<uint8_t> cluster(size_t{1} << cluster_bits);
  if (round) {
    round_trip(type, rest, cluster);
  } else {
    fuzz::expect_message(qcow2::decompress_cluster(type, rest, cluster));
  }
  return 0;
}
