#include "ops/convert_raw.h"

#include <algorithm>

#include "util/zero.h"

namespace qdedup::ops {

namespace {

// True if the `n` bytes at `pos` of the batch read as zeros. Hole sectors
// in the range are zero-filled first (their bytes were never read).
bool raw_range_is_zero(SourceBatch& b, uint64_t pos, uint64_t n) {
  constexpr uint64_t kUnit = 512;
  bool all_holes = true;
  for (uint64_t u = pos / kUnit; u * kUnit < pos + n; ++u) {
    if (b.state[u] != SourceBatch::kHole) {
      all_holes = false;
      continue;
    }
    std::fill_n(b.data.data() + u * kUnit, kUnit, uint8_t{0});
    b.state[u] = SourceBatch::kZero;
  }
  return all_holes || is_zero(std::span<const uint8_t>(b.data.data() + pos, n));
}

}  // namespace

// punch_hole writes zeros where the OS cannot punch: a zero run of an
// existing file reads as zeros either way.
Status write_raw_batch(io::File& f, SourceBatch& b, uint64_t sparse, bool existing) {
  std::span<const uint8_t> data(b.data.data(), b.bytes);
  if (sparse == 0) return f.pwrite(b.offset, data);
  uint64_t run_start = 0;
  bool run_zero = false;
  auto end_run = [&](uint64_t end) -> Status {
    if (end == run_start) return Status::ok();
    if (!run_zero) return f.pwrite(b.offset + run_start, data.subspan(run_start, end - run_start));
    return existing ? f.punch_hole(b.offset + run_start, end - run_start) : Status::ok();
  };
  for (uint64_t pos = 0; pos < b.bytes;) {
    uint64_t n = std::min<uint64_t>(sparse - (b.offset + pos) % sparse, b.bytes - pos);
    bool zero = raw_range_is_zero(b, pos, n);
    if (zero != run_zero) {
      QD_TRY(end_run(pos));
      run_start = pos;
      run_zero = zero;
    }
    pos += n;
  }
  return end_run(b.bytes);
}

}  // namespace qdedup::ops
