// parse_size and format_iec_size against what qemu-img 7.2 accepts and prints.
// Expected strings were checked with `qemu-img info` on raw files of the same
// size, and `qemu-img create -f raw x SIZE` for the parser.
#include "util/size.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>

namespace qdedup {
namespace {

uint64_t parsed(const std::string& text) {
  auto r = parse_size(text);
  INFO("parse_size(\"" << text << "\"): " << r.status().message());
  REQUIRE(r.is_ok());
  return *r;
}

}  // namespace

TEST_CASE("parse_size reads plain byte counts and the B suffix", "[util][size]") {
  CHECK(parsed("0") == 0);
  CHECK(parsed("1") == 1);
  CHECK(parsed("512") == 512);
  CHECK(parsed("1b") == 1);
  CHECK(parsed("1B") == 1);
  CHECK(parsed("9223372036854775807") == 9223372036854775807ull);
}

TEST_CASE("parse_size suffixes are powers of 1024 in either case", "[util][size]") {
  CHECK(parsed("1k") == 1024);
  CHECK(parsed("1K") == 1024);
  CHECK(parsed("1m") == 1024 * 1024);
  CHECK(parsed("1M") == 1024 * 1024);
  CHECK(parsed("10G") == 10ull << 30);
  CHECK(parsed("1g") == 1ull << 30);
  CHECK(parsed("3T") == 3ull << 40);
  CHECK(parsed("2P") == 2ull << 50);
  CHECK(parsed("1E") == 1ull << 60);
  CHECK(parsed("7E") == 7ull << 60);
}

TEST_CASE("parse_size accepts a decimal fraction with a suffix", "[util][size]") {
  CHECK(parsed("1.5G") == 1610612736ull);
  CHECK(parsed("1.5k") == 1536);
  CHECK(parsed("0.5K") == 512);
  CHECK(parsed("0.125K") == 128);
  CHECK(parsed("1.0k") == 1024);
}

TEST_CASE("parse_size rounds a fractional byte count to the nearest byte, as qemu-img",
          "[util][size]") {
  // Values printed by `qemu-img create -f raw x SIZE` (7.2): "size=N".
  CHECK(parsed("1.1k") == 1126);       // 1126.4
  CHECK(parsed("0.3K") == 307);        // 307.2
  CHECK(parsed("0.6k") == 614);        // 614.4
  CHECK(parsed("1.9k") == 1946);       // 1945.6
  CHECK(parsed("0.9k") == 922);        // 921.6
  CHECK(parsed("1.99k") == 2038);      // 2037.76
  CHECK(parsed("0.0009k") == 1);       // 0.9216
  CHECK(parsed("2.675M") == 2804941);  // 2804940.8
}

TEST_CASE("parse_size reads what qemu_strtosz reads around the edges", "[util][size]") {
  // Checked with `qemu-io -f raw -c "write 0 SIZE"` (qemu-io 7.2 prints the
  // parsed byte count; qemu-img create rounds raw sizes up to 512).
  CHECK(parsed(" 12") == 12);     // strtoull's leading white space
  CHECK(parsed("+5") == 5);       // and sign
  CHECK(parsed("010") == 10);     // decimal, not octal
  CHECK(parsed("07k") == 7168);
  CHECK(parsed("0x10") == 16);    // hexadecimal after "0x"
  CHECK(parsed("0X1f") == 31);
  CHECK(parsed("0x10k") == 16384);  // deprecated in QEMU, still accepted by 7.2
  CHECK(parsed("1.") == 1);       // a fraction of zero needs no suffix
  CHECK(parsed("1.0") == 1);
  CHECK(parsed("1.0b") == 1);
  CHECK(parsed("1.k") == 1024);
  CHECK(parsed("1.00049k") == 1025);  // 1024.50176, rounded half up
  CHECK(parsed("1.0004k") == 1024);
}

TEST_CASE("parse_size rejects empty, negative and malformed sizes", "[util][size]") {
  for (const char* bad :
       {"", "-1", "1X", "X", "1KB", "1k5", "1e3", "k", ".", "1 ", "1.5", "1.5B", "--1", "+-1",
        ".5k", "1 k", "0x", "0x1.8k", "0x10.5k", "00x10", "1.5e3", " ", "+", "0.5", "1.25b"}) {
    INFO("input: \"" << bad << "\"");
    auto r = parse_size(bad);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_FALSE(r.status().message().empty());
  }
}

TEST_CASE("parse_size rejects values above INT64_MAX and overflowing values", "[util][size]") {
  for (const char* bad :
       {"16E", "8E", "9223372036854775808", "99999999999999999999", "18446744073709551615",
        "18446744073709551616", "8192P", "100000000000000000000000000000000K"}) {
    INFO("input: \"" << bad << "\"");
    auto r = parse_size(bad);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("format_iec_size prints like QEMU's size_to_str", "[util][size]") {
  CHECK(format_iec_size(0) == "0 B");
  CHECK(format_iec_size(1) == "1 B");
  CHECK(format_iec_size(512) == "512 B");
  CHECK(format_iec_size(999) == "999 B");
  // 1000 bytes print as 0.977 KiB: QEMU switches unit once the number would
  // reach 1000, then prints three significant digits.
  CHECK(format_iec_size(1000) == "0.977 KiB");
  CHECK(format_iec_size(1023) == "0.999 KiB");
  CHECK(format_iec_size(1024) == "1 KiB");
  CHECK(format_iec_size(10240) == "10 KiB");
  CHECK(format_iec_size(102400) == "100 KiB");
  CHECK(format_iec_size(196608 + 8192) == "200 KiB");
  CHECK(format_iec_size(200704) == "196 KiB");
  CHECK(format_iec_size(1000448) == "977 KiB");
  CHECK(format_iec_size(1048576) == "1 MiB");
  CHECK(format_iec_size(1048576000) == "0.977 GiB");
  CHECK(format_iec_size(1073741824) == "1 GiB");
  CHECK(format_iec_size(1610612736) == "1.5 GiB");
  CHECK(format_iec_size(1ull << 40) == "1 TiB");
  CHECK(format_iec_size(1ull << 50) == "1 PiB");
  CHECK(format_iec_size(1ull << 60) == "1 EiB");
  CHECK(format_iec_size(9223372036854775807ull) == "8 EiB");
  CHECK(format_iec_size(UINT64_MAX) == "16 EiB");
}

}  // namespace qdedup
