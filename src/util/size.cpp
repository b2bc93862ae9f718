#include "util/size.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace qdedup {

Result<uint64_t> parse_size(std::string_view text) {
  const std::string bad = "invalid size '" + std::string(text) + "'";
  size_t i = 0;
  // As QEMU's qemu_strtosz: strtoull's leading white space and '+' sign.
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i < text.size() && text[i] == '+') ++i;
  // The integer part: decimal digits, at least one.
  const size_t digits = i;
  uint64_t whole = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (whole > (UINT64_MAX - d) / 10) return invalid_argument(bad);
    whole = whole * 10 + d;
    ++i;
  }
  if (i == digits) return invalid_argument(bad);
  double frac = 0.0;
  if (i - digits == 1 && whole == 0 && i < text.size() && (text[i] == 'x' || text[i] == 'X')) {
    // "0x..." is hexadecimal, without a fraction.
    const size_t hex = ++i;
    while (i < text.size() && std::isxdigit(static_cast<unsigned char>(text[i]))) {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
      const uint64_t d = static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
      if (whole > (UINT64_MAX - d) / 16) return invalid_argument(bad);
      whole = whole * 16 + d;
      ++i;
    }
    if (i == hex || (i < text.size() && text[i] == '.')) return invalid_argument(bad);
  } else if (i < text.size() && text[i] == '.') {
    // A fraction, perhaps without digits ("1.k").
    ++i;
    double scale = 0.1;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      frac += scale * (text[i] - '0');
      scale /= 10;
      ++i;
    }
  }
  unsigned shift = 0;
  if (i < text.size()) {
    switch (text[i]) {
      case 'b': case 'B': shift = 0; break;
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      case 'p': case 'P': shift = 50; break;
      case 'e': case 'E': shift = 60; break;
      default: return invalid_argument(bad);
    }
    ++i;
  }
  if (i != text.size()) return invalid_argument(bad);
  // A fraction of a byte is refused; "1.0" and "1.0b" are one byte.
  if (frac != 0.0 && shift == 0) return invalid_argument(bad);
  if (shift > 0 && whole > (UINT64_MAX >> shift)) return invalid_argument(bad);
  uint64_t value = whole << shift;
  if (frac != 0.0) {
    // qemu-img rounds to the nearest byte, halves up.
    double extra = std::floor(frac * std::ldexp(1.0, static_cast<int>(shift)) + 0.5);
    uint64_t e = static_cast<uint64_t>(extra);
    if (value > UINT64_MAX - e) return invalid_argument(bad);
    value += e;
  }
  if (value > static_cast<uint64_t>(INT64_MAX)) {
    return invalid_argument(bad + ": too large");
  }
  return value;
}

std::string format_iec_size(uint64_t bytes) {
  static const char* const kSuffixes[] = {"B", "KiB", "MiB", "GiB",
                                          "TiB", "PiB", "EiB"};
  // As QEMU: pick the unit so that the number printed is below 1000.
  int exp = 0;
  std::frexp(static_cast<double>(bytes) / (1000.0 / 1024.0), &exp);
  int unit = exp > 0 ? (exp - 1) / 10 : 0;
  if (unit > 6) unit = 6;
  double div = std::ldexp(1.0, unit * 10);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %s", static_cast<double>(bytes) / div,
                kSuffixes[unit]);
  return buf;
}

Result<uint64_t> parse_number(std::string_view text) {
  const std::string s(text);
  if (s.find('\0') != std::string::npos) return invalid_argument("not a number");
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (end == s.c_str() || *end != '\0' || errno == ERANGE) {
    return invalid_argument("'" + s + "' is not a number");
  }
  return static_cast<uint64_t>(v);
}

}  // namespace qdedup
