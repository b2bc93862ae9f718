// The index entry codec: the layout of docs/format.md, section 5, byte for
// byte, and the host offset's form.
#include "dedup/index_entry.h"

#include <catch2/catch.hpp>

#include <vector>

#include "util/endian.h"

using namespace qdedup;
using namespace qdedup::dedup;

TEST_CASE("encode_index_entry writes the hash, then the host offset and the owner big-endian",
          "[dedup][index_entry]") {
  for (size_t hs : {size_t{16}, size_t{32}}) {
    INFO("hash size " << hs);
    std::vector<uint8_t> hash(hs);
    for (size_t i = 0; i < hs; ++i) hash[i] = static_cast<uint8_t>(0xa0 + i);
    std::vector<uint8_t> out = {0xee};  // appended after what is there
    encode_index_entry({hash, 0x123456789a000, 0x0102030405060708}, out);
    REQUIRE(out.size() == 1 + index_entry_size(hs));
    CHECK(index_entry_size(hs) == hs + 16);
    CHECK(out[0] == 0xee);
    const uint8_t* p = out.data() + 1;
    CHECK(std::equal(hash.begin(), hash.end(), p + kIndexEntryOffHash));
    CHECK(index_entry_off_host_offset(hs) == hs);
    CHECK(index_entry_off_owner(hs) == hs + 8);
    CHECK(load_be64(p + hs) == 0x123456789a000);
    CHECK(p[hs + 8] == 0x01);
    CHECK(p[hs + 15] == 0x08);

    const StoredIndexEntry e = decode_index_entry(p, hs);
    CHECK(e.hash.data() == p);
    CHECK(e.hash.size() == hs);
    CHECK(e.host_offset == 0x123456789a000);
    CHECK(e.owner_guest_cluster == 0x0102030405060708);
  }
}

TEST_CASE("index_host_offset_ok wants a non-zero, aligned offset inside the L2 offset field",
          "[dedup][index_entry]") {
  CHECK(index_host_offset_ok(0x10000, 4096));
  CHECK(index_host_offset_ok(0x00fffffffffff000, 4096));
  CHECK_FALSE(index_host_offset_ok(0, 4096));
  CHECK_FALSE(index_host_offset_ok(0x10200, 4096));             // not cluster aligned
  CHECK_FALSE(index_host_offset_ok(0x0100000000000000, 4096));  // bit 56
  CHECK_FALSE(index_host_offset_ok(0x8000000000010000, 4096));  // bit 63 (COPIED)
}
