// Compressed cluster streams: raw deflate (zlib type) and zstd.
#pragma once

#include <cstdint>
#include <span>

#include "util/status.h"

namespace qdedup::qcow2 {

// Decompresses `in` into exactly out.size() bytes (one cluster). As QEMU, a
// stream that ends early or carries trailing bytes is accepted as long as a
// full cluster was produced. Never writes past `out`.
Status decompress_cluster(uint8_t compression_type, std::span<const uint8_t> in,
                          std::span<uint8_t> out);

// Compresses one cluster `in` into `out` as QEMU does (qcow2-threads.c, same
// library and parameters, so the same bytes): the stream's length, or 0 when
// it does not fit in out.size() bytes (QEMU then stores the cluster as is).
Result<size_t> compress_cluster(uint8_t compression_type, std::span<const uint8_t> in,
                                std::span<uint8_t> out);

}  // namespace qdedup::qcow2
