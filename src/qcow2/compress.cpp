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

// As QEMU's qcow2_zlib_compress: raw deflate, 4 KiB window, default level.
Result<size_t> deflate_raw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream s{};
  if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
    return io_error("zlib initialisation failed");
  }
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&s, Z_FINISH);
  const size_t n = out.size() - s.avail_out;
  deflateEnd(&s);
  if (rc == Z_STREAM_END) return n;
  if (rc == Z_OK || rc == Z_BUF_ERROR) return size_t{0};  // does not fit
  return io_error("zlib compression failed");
}

// As QEMU's qcow2_zstd_compress: one ZSTD_compressStream2 call, default level.
Result<size_t> zstd_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_CCtx* ctx = ZSTD_createCCtx();
  if (ctx == nullptr) return io_error("zstd initialisation failed");
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  const size_t rc = ZSTD_compressStream2(ctx, &ob, &ib, ZSTD_e_end);
  ZSTD_freeCCtx(ctx);
  if (rc == 0) return ob.pos;
  if (!ZSTD_isError(rc)) return size_t{0};  // more output pending: does not fit
  return io_error(std::string("zstd compression failed: ") + ZSTD_getErrorName(rc));
}

}  // namespace

Result<size_t> compress_cluster(uint8_t compression_type, std::span<const uint8_t> in,
                                std::span<uint8_t> out) {
  if (compression_type == kCompressionZstd) return zstd_compress(in, out);
  return deflate_raw(in, out);
}

Status decompress_cluster(uint8_t compression_type, std::span<const uint8_t> in,
                          std::span<uint8_t> out) {
  if (compression_type == kCompressionZstd) return zstd_decompress(in, out);
  return inflate_raw(in, out);
}

}  // namespace qdedup::qcow2
