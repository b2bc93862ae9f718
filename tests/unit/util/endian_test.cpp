// Big-endian loads and stores: the byte order of every qcow2 field.
#include "util/endian.h"

#include <array>
#include <catch2/catch.hpp>
#include <cstdint>

namespace qdedup {

TEST_CASE("store_be writes the most significant byte first", "[util][endian]") {
  std::array<uint8_t, 8> b{};
  store_be16(b.data(), 0x0102);
  CHECK(b[0] == 0x01);
  CHECK(b[1] == 0x02);
  store_be32(b.data(), 0x514649fb);
  CHECK(b == std::array<uint8_t, 8>{0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 0});
  store_be64(b.data(), 0x0102030405060708ull);
  CHECK(b == std::array<uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("load_be reads the most significant byte first without sign extension",
          "[util][endian]") {
  const uint8_t ones[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  CHECK(load_be16(ones) == 0xffff);
  CHECK(load_be32(ones) == 0xffffffffu);
  CHECK(load_be64(ones) == UINT64_MAX);
  const uint8_t high[8] = {0x80, 0, 0, 0, 0, 0, 0, 0x01};
  CHECK(load_be16(high) == 0x8000);
  CHECK(load_be32(high) == 0x80000000u);
  CHECK(load_be64(high) == 0x8000000000000001ull);
  const uint8_t magic[4] = {'Q', 'F', 'I', 0xfb};
  CHECK(load_be32(magic) == 0x514649fbu);
}

TEST_CASE("load_be and store_be round trip at unaligned addresses", "[util][endian]") {
  const uint64_t values[] = {0,
                             1,
                             0xff,
                             0x100,
                             0x7fffffffffffffffull,
                             0x8000000000000000ull,
                             0xfedcba9876543210ull,
                             UINT64_MAX};
  uint8_t buf[16] = {};
  for (int shift = 0; shift < 8; ++shift) {
    uint8_t* p = buf + shift;
    for (uint64_t v : values) {
      store_be64(p, v);
      CHECK(load_be64(p) == v);
      store_be32(p, static_cast<uint32_t>(v));
      CHECK(load_be32(p) == static_cast<uint32_t>(v));
      store_be16(p, static_cast<uint16_t>(v));
      CHECK(load_be16(p) == static_cast<uint16_t>(v));
    }
  }
}

TEST_CASE("store_be touches only its own bytes", "[util][endian]") {
  uint8_t buf[12];
  for (auto& c : buf) c = 0xaa;
  store_be64(buf + 2, 0);
  CHECK(buf[0] == 0xaa);
  CHECK(buf[1] == 0xaa);
  CHECK(buf[10] == 0xaa);
  CHECK(buf[11] == 0xaa);
  store_be32(buf + 2, 0x11223344);
  CHECK(buf[6] == 0);  // the rest of the earlier 64-bit zero is untouched
  CHECK(load_be64(buf + 2) == 0x1122334400000000ull);
}

}  // namespace qdedup
