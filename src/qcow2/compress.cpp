#include "qcow2/compress.h"

#include <zlib.h>
#include <zstd.h>

#include "qcow2/format.h"

namespace qdedup::qcow2 {

namespace {

Status inflate_raw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream s{};
  if (inflateInit2(&s, -12) != Z_OK) return io_error("zlib initialisation failed");
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&s, Z_FINISH);
  bool full = s.avail_out == 0;
  inflateEnd(&s);
  // QEMU accepts Z_STREAM_END or Z_BUF_ERROR once the cluster is full.
  if ((rc == Z_STREAM_END || rc == Z_BUF_ERROR) && full) return Status::ok();
  return corruption("compressed cluster does not decompress (zlib)");
}

Status zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  if (ctx == nullptr) return io_error("zstd initialisation failed");
  // Bound the decoder's window so a hostile frame cannot demand large memory.
  ZSTD_DCtx_setParameter(ctx, ZSTD_d_windowLogMax, 23);
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  Status st = Status::ok();
  while (ob.pos < ob.size) {
    size_t rc = ZSTD_decompressStream(ctx, &ob, &ib);
    if (ZSTD_isError(rc)) {
      st = corruption(std::string("compressed cluster does not decompress (zstd: ") +
                      ZSTD_getErrorName(rc) + ")");
      break;
    }
    if (rc == 0 || ib.pos == ib.size) {
      if (ob.pos < ob.size) st = corruption("compressed cluster is truncated (zstd)");
      break;
    }
  }
  ZSTD_freeDCtx(ctx);
  return st;
}

}  // namespace

Status decompress_cluster(uint8_t compression_type, std::span<const uint8_t> in,
                          std::span<uint8_t> out) {
  if (compression_type == kCompressionZstd) return zstd_decompress(in, out);
  return inflate_raw(in, out);
}

}  // namespace qdedup::qcow2
