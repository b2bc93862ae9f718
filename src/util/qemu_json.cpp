#include "util/qemu_json.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <tuple>
#include <vector>

namespace qdedup {

unsigned qdict_bucket(const std::string& key) {
  unsigned value = 0x238F13AFu * static_cast<unsigned>(key.size());
  for (unsigned i = 0; i < key.size(); ++i) {
    value += static_cast<unsigned>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
  }
  return (1103515243u * value + 12345u) % 512u;
}

namespace {

bool valid_codepoint(long cp) {
  if (cp > 0x10FFFF) return false;
  if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return false;
  return !(cp >= 0xD800 && cp <= 0xDFFF);
}

// QEMU's mod_utf8_codepoint: the code point at s[i] (-1 if invalid) and the
// index after what it consumed.
long next_codepoint(const std::string& s, size_t& i) {
  static const long kMin[5] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
  unsigned byte = static_cast<unsigned char>(s[i++]);
  if (byte < 0x80) return byte;
  if (byte >= 0xFE || (byte & 0x40) == 0) return -1;
  unsigned len = 0, mask = 0x80;
  for (; byte & mask; mask >>= 1) ++len;
  long cp = byte & (mask - 1);
  for (unsigned k = 1; k < len; ++k) {
    unsigned next = i < s.size() ? static_cast<unsigned char>(s[i]) : 0;
    if ((next & 0xC0) != 0x80) return -1;
    ++i;
    cp = (cp << 6) | (next & 0x3F);
  }
  if (!valid_codepoint(cp)) return -1;
  if (cp < kMin[len - 2] && !(cp == 0 && len == 2)) return -1;
  return cp;
}

void quoted(std::string& out, const std::string& s) {
  out += '"';
  char buf[16];
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\0') break;  // QEMU's strings end at a NUL
    long cp = next_codepoint(s, i);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp < 0) cp = 0xFFFD;
        if (cp > 0xFFFF) {
          std::snprintf(buf, sizeof buf, "\\u%04lX\\u%04lX", 0xD800 + ((cp - 0x10000) >> 10),
                        0xDC00 + ((cp - 0x10000) & 0x3FF));
          out += buf;
        } else if (cp < 0x20 || cp >= 0x7F) {
          std::snprintf(buf, sizeof buf, "\\u%04lX", cp);
          out += buf;
        } else {
          out += static_cast<char>(cp);
        }
    }
  }
  out += '"';
}

void newline(std::string& out, unsigned depth) {
  out += '\n';
  out.append(depth * 4, ' ');
}

void write(std::string& out, const nlohmann::ordered_json& j, unsigned depth) {
  if (j.is_object()) {
    std::vector<std::tuple<unsigned, long, std::string>> keys;
    long added = 0;
    for (auto it = j.begin(); it != j.end(); ++it) {
      keys.emplace_back(qdict_bucket(it.key()), -added++, it.key());
    }
    std::sort(keys.begin(), keys.end());
    out += '{';
    bool first = true;
    for (const auto& [bucket, order, key] : keys) {
      if (!first) out += ',';
      first = false;
      newline(out, depth + 1);
      quoted(out, key);
      out += ": ";
      write(out, j.at(key), depth + 1);
    }
    newline(out, depth);
    out += '}';
  } else if (j.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& e : j) {
      if (!first) out += ',';
      first = false;
      newline(out, depth + 1);
      write(out, e, depth + 1);
    }
    newline(out, depth);
    out += ']';
  } else if (j.is_string()) {
    quoted(out, j.get_ref<const std::string&>());
  } else if (j.is_number_unsigned()) {
    out += std::to_string(j.get<uint64_t>());
  } else if (j.is_number_integer()) {
    out += std::to_string(j.get<int64_t>());
  } else {
    out += j.dump();  // bool, null, double
  }
}

}  // namespace

std::string qemu_json(const nlohmann::ordered_json& j) {
  std::string out;
  write(out, j, 0);
  return out;
}

}  // namespace qdedup
