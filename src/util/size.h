// Sizes as qemu-img spells them: parsing "10G" and printing "1 GiB".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace qdedup {

// Parses a size as qemu-img (qemu_strtosz) does: leading white space and
// '+', a decimal integer or "0x" and hexadecimal digits, then for decimal an
// optional fraction ("1.5G"; without a suffix only a zero one, "1.0"), and a
// suffix: none or B (bytes), k/K, M, G, T, P, E (powers of 1024). A fraction
// is rounded to the nearest byte. Rejects negative values, garbage and values
// above INT64_MAX.
Result<uint64_t> parse_size(std::string_view text);

// Parses a number option as QEMU's QemuOpts does (qemu_strtou64, base 0):
// leading white space, an optional sign, decimal, 0x hexadecimal or 0 octal
// digits and nothing after them; no suffix. A '-' wraps as strtoull does
// ("-1" is 2^64 - 1). Fails on garbage, an empty string and overflow.
Result<uint64_t> parse_number(std::string_view text);

// Formats like QEMU's size_to_str(): three significant digits, IEC units
// ("0 B", "512 B", "196 KiB", "1 GiB", "1.5 GiB").
std::string format_iec_size(uint64_t bytes);

// Rounds `value` up to a multiple of `align` (a power of two); false on overflow.
inline bool align_up(uint64_t value, uint64_t align, uint64_t* out) {
  uint64_t r = value + (align - 1);
  if (r < value) return false;
  *out = r & ~(align - 1);
  return true;
}

inline uint64_t div_round_up(uint64_t a, uint64_t b) {
  return a / b + (a % b != 0);
}

}  // namespace qdedup
