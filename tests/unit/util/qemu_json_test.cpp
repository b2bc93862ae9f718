// qemu_json: qemu-img's JSON, byte for byte (its QDict key order and its writer).
#include "util/qemu_json.h"

#include <catch2/catch.hpp>

namespace qdedup {

using nlohmann::ordered_json;

TEST_CASE("qemu_json orders keys as qemu-img's QDicts do", "[util][qemu_json]") {
  // Added in qdedup's order; printed in the order qemu-img 7.2 prints these keys
  // (iotest 043's reference output, 7 of info's keys).
  ordered_json j;
  j["filename"] = "a";
  j["format"] = "qcow2";
  j["virtual-size"] = 1;
  j["cluster-size"] = 2;
  j["dirty-flag"] = false;
  j["backing-filename"] = "b";
  j["full-backing-filename"] = "b";
  CHECK(qemu_json(j) ==
        "{\n    \"virtual-size\": 1,\n    \"filename\": \"a\",\n    \"cluster-size\": 2,\n"
        "    \"format\": \"qcow2\",\n    \"full-backing-filename\": \"b\",\n"
        "    \"backing-filename\": \"b\",\n    \"dirty-flag\": false\n}");
}

TEST_CASE("qdict_bucket is QEMU's tdb_hash modulo 512", "[util][qemu_json]") {
  // Worked by hand from qobject/qdict.c: "a" -> 0x238F13AF + 97, times
  // 1103515243, plus 12345, in 32 bits.
  unsigned v = 0x238F13AFu + 97u;
  CHECK(qdict_bucket("a") == (1103515243u * v + 12345u) % 512u);
  CHECK(qdict_bucket("") == 12345u % 512u);
}

TEST_CASE("qemu_json writes containers and scalars as QEMU's JSON writer", "[util][qemu_json]") {
  CHECK(qemu_json(ordered_json::array()) == "[\n]");
  CHECK(qemu_json(ordered_json::object()) == "{\n}");
  ordered_json nested;
  nested["flags"] = ordered_json::array();
  CHECK(qemu_json(ordered_json::array({nested})) == "[\n    {\n        \"flags\": [\n        ]\n    }\n]");
  CHECK(qemu_json(ordered_json(18446744073709551615ull)) == "18446744073709551615");
  CHECK(qemu_json(ordered_json(-5)) == "-5");
  CHECK(qemu_json(ordered_json(nullptr)) == "null");
}

TEST_CASE("qemu_json escapes strings as QEMU: \\uXXXX outside printable ASCII",
          "[util][qemu_json]") {
  CHECK(qemu_json("sn\xc3\xa4p \xe2\x82\xac") == "\"sn\\u00E4p \\u20AC\"");
  CHECK(qemu_json("\x01\x7f\"\\\n\t") == "\"\\u0001\\u007F\\\"\\\\\\n\\t\"");
  // Beyond the BMP: a surrogate pair.
  CHECK(qemu_json("\xf0\x9f\x98\x80") == "\"\\uD83D\\uDE00\"");
  // Not UTF-8 (a stray continuation, an impossible byte, a cut sequence, an
  // overlong form, a surrogate): U+FFFD each, as mod_utf8_codepoint decides.
  CHECK(qemu_json("\x80") == "\"\\uFFFD\"");
  CHECK(qemu_json("\xff") == "\"\\uFFFD\"");
  CHECK(qemu_json("\xe2\x82") == "\"\\uFFFD\"");
  CHECK(qemu_json("\xe0\x80\xaf") == "\"\\uFFFD\"");
  CHECK(qemu_json("\xed\xa0\x80") == "\"\\uFFFD\"");
  // The two-byte NUL of modified UTF-8 is U+0000.
  CHECK(qemu_json("a\xc0\x80" "b") == "\"a\\u0000b\"");
}

}  // namespace qdedup
