// escape_for_display and to_valid_utf8: names read from an image must not be
// able to drive the terminal or break JSON output.
#include "util/text.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>

namespace qdedup {
namespace {

using namespace std::string_literals;

// An independent strict UTF-8 validator (RFC 3629): no overlong forms, no
// surrogates, nothing above U+10FFFF.
bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t min;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      len = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return false;
    i += len;
  }
  return true;
}

const std::string kReplacement = "\xef\xbf\xbd";  // U+FFFD

}  // namespace

TEST_CASE("escape_for_display keeps printable ASCII unchanged", "[util][text]") {
  CHECK(escape_for_display("") == "");
  CHECK(escape_for_display("base.qcow2") == "base.qcow2");
  CHECK(escape_for_display("a b ~!@#$%^&*()_+{}|:\"<>?") == "a b ~!@#$%^&*()_+{}|:\"<>?");
}

TEST_CASE("escape_for_display escapes control bytes, ESC, DEL and NUL as \\xNN", "[util][text]") {
  CHECK(escape_for_display("\x1b[2J") == "\\x1b[2J");
  CHECK(escape_for_display("a\nb") == "a\\x0ab");
  CHECK(escape_for_display("\r") == "\\x0d");
  CHECK(escape_for_display("\t") == "\\x09");
  CHECK(escape_for_display("\x7f") == "\\x7f");
  CHECK(escape_for_display("x\0y"s) == "x\\x00y");
}

TEST_CASE("escape_for_display doubles backslashes so escapes cannot be faked", "[util][text]") {
  CHECK(escape_for_display("\\") == "\\\\");
  // A literal "\x1b" in a name must not look like an escaped ESC.
  CHECK(escape_for_display("\\x1b") == "\\\\x1b");
  CHECK(escape_for_display("\\x1b") != escape_for_display("\x1b"));
}

TEST_CASE("escape_for_display escapes every non-ASCII byte in lower-case hex", "[util][text]") {
  CHECK(escape_for_display("\xc3\xa9") == "\\xc3\\xa9");  // é
  CHECK(escape_for_display("\xff\x80") == "\\xff\\x80");
}

TEST_CASE("escape_for_display output is printable ASCII for every byte value", "[util][text]") {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  std::string out = escape_for_display(all);
  for (unsigned char c : out) {
    INFO("byte " << int{c});
    CHECK((c >= 0x20 && c < 0x7f));
  }
  CHECK(out.size() == 95 + 1 + (256 - 95) * 4);  // 94 printable kept + '\\' doubled
}

TEST_CASE("to_valid_utf8 keeps valid UTF-8 unchanged", "[util][text]") {
  for (const std::string& s :
       {""s, "plain"s, "caf\xc3\xa9"s, "\xe2\x82\xac 10"s, "\xf0\x9f\x98\x80"s, "\xf4\x8f\xbf\xbf"s,
        "nul\0in"s, "\xed\x9f\xbf"s, "\xee\x80\x80"s}) {
    INFO("input size " << s.size());
    CHECK(to_valid_utf8(s) == s);
  }
}

TEST_CASE("to_valid_utf8 replaces stray and invalid bytes with U+FFFD", "[util][text]") {
  CHECK(to_valid_utf8("a\xff"
                      "b") == "a" + kReplacement + "b");
  CHECK(to_valid_utf8("\x80") == kReplacement);
  CHECK(to_valid_utf8("\xfe\xfe") == kReplacement + kReplacement);
  CHECK(to_valid_utf8("\xf8\x88\x80\x80\x80") != "\xf8\x88\x80\x80\x80");  // 5-byte form
  // A truncated sequence at the end, and one interrupted by ASCII.
  std::string cut = to_valid_utf8("x\xe2\x82");
  CHECK(cut.rfind("x" + kReplacement, 0) == 0);
  CHECK(is_valid_utf8(cut));
  CHECK(to_valid_utf8("\xe2(x") == kReplacement + "(x");
}

TEST_CASE("to_valid_utf8 rejects overlong encodings", "[util][text]") {
  // "/" encoded in two and three bytes, and NUL in two: classic filter bypasses.
  for (const std::string& s :
       {"\xc0\xaf"s, "\xe0\x80\xaf"s, "\xc0\x80"s, "\xc1\xbf"s, "\xf0\x8f\xbf\xbf"s}) {
    std::string out = to_valid_utf8(s);
    INFO("input size " << s.size());
    CHECK(out != s);
    CHECK(out.find('/') == std::string::npos);
    CHECK(out.find('\0') == std::string::npos);
    CHECK(is_valid_utf8(out));
  }
}

TEST_CASE("to_valid_utf8 rejects UTF-16 surrogates and code points above U+10FFFF",
          "[util][text]") {
  for (const std::string& s : {"\xed\xa0\x80"s, "\xed\xbf\xbf"s, "\xed\xa0\xbd\xed\xb8\x80"s,
                               "\xf4\x90\x80\x80"s, "\xf7\xbf\xbf\xbf"s}) {
    std::string out = to_valid_utf8(s);
    INFO("input size " << s.size());
    CHECK(out != s);
    CHECK(out.find(kReplacement) != std::string::npos);
    CHECK(is_valid_utf8(out));
  }
}

TEST_CASE("to_valid_utf8 output is valid UTF-8 for every two-byte input", "[util][text]") {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      std::string s{static_cast<char>(a), static_cast<char>(b)};
      std::string out = to_valid_utf8(s);
      if (!is_valid_utf8(out)) FAIL("invalid output for bytes " << a << ", " << b);
      // Valid input is never changed.
      if (is_valid_utf8(s) && out != s) FAIL("valid input changed: " << a << ", " << b);
    }
  }
  SUCCEED();
}

}  // namespace qdedup
