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

}  // namespace qdedup::qcow2
