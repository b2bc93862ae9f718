// decode_header / encode_header: the qcow2 header and its extensions.
#include "qcow2/header.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "qcow2/format.h"
#include "support/image_builder.h"
#include "util/endian.h"

namespace qdedup::qcow2 {
namespace {

using image_builder::get_be;
using image_builder::put_be;

constexpr uint32_t kExtA = 0x11111111;
constexpr uint32_t kExtB = 0x0badcafe;

// A v3 header with a bit of everything, 64 KiB clusters.
Header full_v3_header() {
  Header h;
  h.version = 3;
  h.cluster_bits = 16;
  h.size = 1ull << 30;
  h.l1_size = 2;
  h.l1_table_offset = 0x30000;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.nb_snapshots = 1;
  h.snapshots_offset = 0x50000;
  h.incompatible_features = 0;
  h.compatible_features = kCompatLazyRefcounts | (1ull << 40);
  h.autoclear_features = kAutoclearBitmaps;
  h.refcount_order = 5;
  h.unknown_header_fields = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04};
  h.backing_format = "qcow2";
  h.feature_names = default_feature_names();
  h.feature_names.push_back({2, 9, "my autoclear"});
  h.bitmaps_ext = image_builder::pattern_bytes(24, 7);
  h.unknown_extensions.push_back({kExtB, image_builder::pattern_bytes(5, 1)});
  h.unknown_extensions.push_back({kExtA, image_builder::pattern_bytes(16, 2)});
  h.backing_file = "base image.qcow2";
  return h;
}

void require_same(const Header& a, const Header& b) {
  CHECK(a.version == b.version);
  CHECK(a.cluster_bits == b.cluster_bits);
  CHECK(a.size == b.size);
  CHECK(a.crypt_method == b.crypt_method);
  CHECK(a.l1_size == b.l1_size);
  CHECK(a.l1_table_offset == b.l1_table_offset);
  CHECK(a.refcount_table_offset == b.refcount_table_offset);
  CHECK(a.refcount_table_clusters == b.refcount_table_clusters);
  CHECK(a.nb_snapshots == b.nb_snapshots);
  CHECK(a.snapshots_offset == b.snapshots_offset);
  CHECK(a.incompatible_features == b.incompatible_features);
  CHECK(a.compatible_features == b.compatible_features);
  CHECK(a.autoclear_features == b.autoclear_features);
  CHECK(a.refcount_order == b.refcount_order);
  CHECK(a.compression_type == b.compression_type);
  CHECK(a.unknown_header_fields == b.unknown_header_fields);
  CHECK(a.backing_format == b.backing_format);
  REQUIRE(a.feature_names.size() == b.feature_names.size());
  for (size_t i = 0; i < a.feature_names.size(); ++i) {
    CHECK(a.feature_names[i].type == b.feature_names[i].type);
    CHECK(a.feature_names[i].bit == b.feature_names[i].bit);
    CHECK(a.feature_names[i].name == b.feature_names[i].name);
  }
  CHECK(a.bitmaps_ext == b.bitmaps_ext);
  CHECK(a.crypto_ext == b.crypto_ext);
  CHECK(a.data_file == b.data_file);
  REQUIRE(a.unknown_extensions.size() == b.unknown_extensions.size());
  for (size_t i = 0; i < a.unknown_extensions.size(); ++i) {
    CHECK(a.unknown_extensions[i].type == b.unknown_extensions[i].type);
    CHECK(a.unknown_extensions[i].data == b.unknown_extensions[i].data);
  }
  CHECK(a.backing_file == b.backing_file);
}

std::vector<uint8_t> encoded(const Header& h) {
  auto r = encode_header(h);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

Header decoded(const std::vector<uint8_t>& bytes) {
  auto r = decode_header(bytes);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

// Extension types in file order, walked independently of the decoder.
std::vector<uint32_t> extension_types(const std::vector<uint8_t>& b, uint32_t start) {
  std::vector<uint32_t> types;
  for (uint64_t off = start; off + 8 <= b.size();) {
    uint32_t type = load_be32(b.data() + off);
    uint32_t len = load_be32(b.data() + off + 4);
    if (type == kExtEnd) break;
    types.push_back(type);
    off += 8 + (uint64_t{len} + 7) / 8 * 8;
  }
  return types;
}

}  // namespace

TEST_CASE("encode_header then decode_header round trips a full v3 header", "[qcow2][header]") {
  Header h = full_v3_header();
  std::vector<uint8_t> bytes = encoded(h);
  REQUIRE(bytes.size() == 65536);
  CHECK(load_be32(bytes.data()) == kMagic);
  // 112 bytes of known fields plus the 8 unknown ones, kept at 112..119.
  CHECK(get_be(bytes, kOffHeaderLength, 4) == 120);
  CHECK(std::vector<uint8_t>(bytes.begin() + 112, bytes.begin() + 120) == h.unknown_header_fields);

  Header d = decoded(bytes);
  require_same(d, h);
  CHECK(d.header_length == 120);
  CHECK(d.has_backing());
  CHECK(d.backing_file_size == h.backing_file.size());
  // A second encoding is byte-for-byte the first.
  CHECK(encoded(d) == bytes);
}

TEST_CASE("encode_header writes extensions in QEMU's order with unknown ones last, in order",
          "[qcow2][header]") {
  Header h = full_v3_header();
  std::vector<uint8_t> bytes = encoded(h);
  CHECK(extension_types(bytes, 120) ==
        std::vector<uint32_t>{kExtBackingFormat, kExtFeatureTable, kExtBitmaps, kExtB, kExtA});
  // The backing name follows the end marker, and backing_file_offset says so.
  uint64_t name_at = get_be(bytes, kOffBackingFileOffset, 8);
  CHECK(get_be(bytes, name_at - 8, 8) == 0);
  CHECK(std::string(bytes.begin() + static_cast<std::ptrdiff_t>(name_at),
                    bytes.begin() + static_cast<std::ptrdiff_t>(name_at) + 16) ==
        "base image.qcow2");
}

TEST_CASE("decode_header keeps unknown extensions byte for byte in file order", "[qcow2][header]") {
  // Written by hand: B, A order, odd lengths with zero padding.
  Header h;
  h.cluster_bits = 12;
  h.size = 1 << 20;
  std::vector<uint8_t> bytes = encoded(h);
  uint32_t off = 112;
  auto put_ext = [&](uint32_t type, const std::vector<uint8_t>& data) {
    put_be(bytes, off, 4, type);
    put_be(bytes, off + 4, 4, data.size());
    std::copy(data.begin(), data.end(), bytes.begin() + off + 8);
    off += 8 + static_cast<uint32_t>((data.size() + 7) / 8 * 8);
  };
  auto b_data = image_builder::pattern_bytes(13, 3);
  auto a_data = image_builder::pattern_bytes(1, 4);
  put_ext(kExtB, b_data);
  put_ext(kExtA, a_data);
  put_ext(0x77777777, {});
  Header d = decoded(bytes);
  REQUIRE(d.unknown_extensions.size() == 3);
  CHECK(d.unknown_extensions[0].type == kExtB);
  CHECK(d.unknown_extensions[0].data == b_data);
  CHECK(d.unknown_extensions[1].type == kExtA);
  CHECK(d.unknown_extensions[1].data == a_data);
  CHECK(d.unknown_extensions[2].type == 0x77777777);
  CHECK(d.unknown_extensions[2].data.empty());
  // Re-encoding reproduces the same cluster.
  CHECK(encoded(d) == bytes);
}

TEST_CASE("decode_header reads a feature table entry cut short, zero padded as QEMU",
          "[qcow2][header]") {
  // iotest 036 adds a 14-byte table: type 0, bit 63, "Test feature".
  Header h;
  h.cluster_bits = 16;
  h.size = 1 << 20;
  std::vector<uint8_t> bytes = encoded(h);
  const std::string name = "Test feature";
  std::vector<uint8_t> data = {0, 63};
  data.insert(data.end(), name.begin(), name.end());
  put_be(bytes, 112, 4, kExtFeatureTable);
  put_be(bytes, 116, 4, data.size());
  std::copy(data.begin(), data.end(), bytes.begin() + 120);
  Header d = decoded(bytes);
  REQUIRE(d.feature_names.size() == 1);
  CHECK(d.feature_names[0].type == 0);
  CHECK(d.feature_names[0].bit == 63);
  CHECK(d.feature_names[0].name == name);
  CHECK(describe_features(d, 0, 1ull << 63) == name);
}

TEST_CASE("encode_header then decode_header round trips a v2 header", "[qcow2][header]") {
  Header h;
  h.version = 2;
  h.cluster_bits = 16;
  h.size = 10ull << 30;
  h.l1_size = 20;
  h.l1_table_offset = 0x30000;
  h.refcount_table_offset = 0x10000;
  h.refcount_table_clusters = 1;
  h.backing_format = "raw";
  h.unknown_extensions.push_back({kExtA, {1, 2, 3}});
  h.backing_file = "/abs/base.raw";
  std::vector<uint8_t> bytes = encoded(h);
  // A v2 header is 72 bytes; extensions start right after it.
  CHECK(extension_types(bytes, 72) == std::vector<uint32_t>{kExtBackingFormat, kExtA});
  Header d = decoded(bytes);
  require_same(d, h);
  CHECK(d.header_length == 72);
  CHECK(d.refcount_order == 4);
  CHECK(encoded(d) == bytes);
}

TEST_CASE("a v2 header has no feature bits, refcount order or feature table", "[qcow2][header]") {
  Header h;
  h.version = 2;
  h.cluster_bits = 16;
  h.feature_names = default_feature_names();
  std::vector<uint8_t> bytes = encoded(h);
  CHECK(extension_types(bytes, 72).empty());
  // Garbage where a v3 header has its feature words is an extension area
  // to a v2 reader: here it is the end marker.
  Header d = decoded(bytes);
  CHECK(d.feature_names.empty());
  CHECK(d.incompatible_features == 0);
}

TEST_CASE("decode_header round trips crypto and data file extensions verbatim", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.crypto_ext = image_builder::pattern_bytes(16, 9);
  h.data_file = "data.raw";
  h.bitmaps_ext = std::vector<uint8_t>(24, 0);
  h.bitmaps_ext->at(3) = 1;
  Header d = decoded(encoded(h));
  require_same(d, h);
}

TEST_CASE("decode_header reads the compression type only when header_length covers it",
          "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.compression_type = kCompressionZstd;
  h.incompatible_features = kIncompatCompression;
  std::vector<uint8_t> bytes = encoded(h);
  CHECK(bytes[kOffCompressionType] == 1);
  CHECK(decoded(bytes).compression_type == kCompressionZstd);
  put_be(bytes, kOffHeaderLength, 4, 104);  // field absent: reads as zlib
  Header d = decoded(bytes);
  CHECK(d.compression_type == kCompressionZlib);
  CHECK(d.header_length == 104);
}

TEST_CASE("decode_header rejects short files and a bad magic as corruption", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  std::vector<uint8_t> bytes = encoded(h);
  for (size_t n : {size_t{0}, size_t{4}, size_t{71}, size_t{72}, size_t{103}}) {
    INFO("length " << n);
    auto r = decode_header(std::span<const uint8_t>(bytes.data(), n));
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
  }
  bytes[3] = 0xfa;
  CHECK(decode_header(bytes).status().code() == StatusCode::kCorruption);
}

TEST_CASE("decode_header refuses versions other than 2 and 3 as unsupported", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  std::vector<uint8_t> bytes = encoded(h);
  for (uint32_t v : {0u, 1u, 4u, 0xffffffffu}) {
    put_be(bytes, kOffVersion, 4, v);
    auto r = decode_header(bytes);
    INFO("version " << v);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kUnsupported);
    CHECK_THAT(r.status().message(), Catch::Contains(std::to_string(v)));
  }
}

TEST_CASE("decode_header accepts cluster_bits 9..21 only", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 9;
  std::vector<uint8_t> bytes = encoded(h);
  bytes.resize(1 << 21, 0);  // room for the largest cluster
  for (uint32_t bits : {9u, 12u, 16u, 21u}) {
    put_be(bytes, kOffClusterBits, 4, bits);
    INFO("cluster_bits " << bits);
    CHECK(decode_header(bytes).is_ok());
  }
  for (uint32_t bits : {0u, 8u, 22u, 63u, 64u, 0xffffffffu}) {
    put_be(bytes, kOffClusterBits, 4, bits);
    INFO("cluster_bits " << bits);
    CHECK(decode_header(bytes).status().code() == StatusCode::kUnsupported);
  }
}

TEST_CASE("decode_header rejects header_length below 104 or above the cluster size",
          "[qcow2][header]") {
  Header h;
  h.cluster_bits = 12;
  std::vector<uint8_t> bytes = encoded(h);
  for (uint32_t len : {0u, 72u, 103u, 4097u, 0xffffffffu}) {
    put_be(bytes, kOffHeaderLength, 4, len);
    INFO("header_length " << len);
    auto r = decode_header(bytes);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK_THAT(r.status().message(), Catch::Contains("header_length"));
  }
  // 105 breaks the spec's multiple-of-8 rule, but QEMU 7.2 accepts it.
  put_be(bytes, kOffHeaderLength, 4, 105);
  CHECK(decode_header(bytes).is_ok());
}

TEST_CASE("decode_header keeps unknown header fields up to header_length", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 12;
  std::vector<uint8_t> bytes = encoded(h);
  put_be(bytes, kOffHeaderLength, 4, 136);
  for (int i = 112; i < 136; ++i) bytes[i] = static_cast<uint8_t>(i);
  put_be(bytes, 136, 8, 0);  // end of extensions
  Header d = decoded(bytes);
  REQUIRE(d.unknown_header_fields.size() == 24);
  CHECK(d.unknown_header_fields.front() == 112);
  CHECK(d.unknown_header_fields.back() == 135);
  CHECK(encoded(d) == bytes);
}

TEST_CASE("decode_header rejects an extension whose length runs past the cluster",
          "[qcow2][header]") {
  Header h;
  h.cluster_bits = 12;
  h.unknown_extensions.push_back({kExtA, {1, 2, 3, 4}});
  std::vector<uint8_t> bytes = encoded(h);
  REQUIRE(get_be(bytes, 112, 4) == kExtA);
  for (uint32_t len : {4096u - 120u + 1u, 65536u, 0xfffffff8u, 0xffffffffu}) {
    put_be(bytes, 116, 4, len);
    INFO("length " << len);
    auto r = decode_header(bytes);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK_THAT(r.status().message(), Catch::Contains("too large"));
  }
}

TEST_CASE("decode_header accepts an extension area that fills cluster 0 without an end marker",
          "[qcow2][header]") {
  // QEMU's qcow2_read_extensions() loops while offset < end: an area filled
  // exactly to its end needs no terminator (qemu-img 7.2 opens such images).
  Header h;
  h.cluster_bits = 12;
  h.unknown_extensions.push_back({kExtA, {1, 2, 3, 4}});
  std::vector<uint8_t> bytes = encoded(h);
  for (uint32_t len : {4096u - 120u, 4096u - 124u}) {  // the second one via padding
    put_be(bytes, 116, 4, len);
    INFO("length " << len);
    auto r = decode_header(bytes);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    REQUIRE(r->unknown_extensions.size() == 1);
    CHECK(r->unknown_extensions[0].data.size() == len);
  }
}

TEST_CASE("decode_header rejects an extension running into the backing file name",
          "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.unknown_extensions.push_back({kExtA, {1, 2, 3, 4}});
  h.backing_file = "base.qcow2";
  std::vector<uint8_t> bytes = encoded(h);
  uint64_t name_at = get_be(bytes, kOffBackingFileOffset, 8);
  put_be(bytes, 116, 4, name_at - 120 + 1);
  auto r = decode_header(bytes);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == StatusCode::kCorruption);
}

TEST_CASE("decode_header rejects a file that ends inside the extension area", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.unknown_extensions.push_back({kExtA, std::vector<uint8_t>(64, 1)});
  std::vector<uint8_t> bytes = encoded(h);
  for (size_t n : {size_t{112}, size_t{116}, size_t{150}, size_t{191}}) {
    INFO("length " << n);
    auto r = decode_header(std::span<const uint8_t>(bytes.data(), n));
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("decode_header accepts a backing file name right after a v2 header", "[qcow2][header]") {
  // Old QEMU (before backing format extensions) wrote v2 images with the
  // backing name at offset 72 and no extension area at all. QEMU 7.2 opens
  // them: its extension loop simply ends at backing_file_offset.
  Header h;
  h.version = 2;
  h.cluster_bits = 16;
  std::vector<uint8_t> bytes = encoded(h);
  const std::string name = "base.qcow2";
  put_be(bytes, kOffBackingFileOffset, 8, 72);
  put_be(bytes, kOffBackingFileSize, 4, name.size());
  std::copy(name.begin(), name.end(), bytes.begin() + 72);
  auto r = decode_header(bytes);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  CHECK(r->backing_file == name);
  CHECK(r->unknown_extensions.empty());
}

TEST_CASE("decode_header accepts a v3 backing file name right after header_length",
          "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  std::vector<uint8_t> bytes = encoded(h);
  const std::string name = "base.qcow2";
  put_be(bytes, kOffBackingFileOffset, 8, 112);
  put_be(bytes, kOffBackingFileSize, 4, name.size());
  std::copy(name.begin(), name.end(), bytes.begin() + 112);
  auto r = decode_header(bytes);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  CHECK(r->backing_file == name);
}

TEST_CASE("decode_header limits the backing file name to 1023 bytes inside the cluster",
          "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.backing_file = std::string(1023, 'b');
  std::vector<uint8_t> bytes = encoded(h);
  CHECK(decoded(bytes).backing_file.size() == 1023);
  uint64_t name_at = get_be(bytes, kOffBackingFileOffset, 8);
  SECTION("1024 bytes") {
    put_be(bytes, kOffBackingFileSize, 4, 1024);
    auto r = decode_header(bytes);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK_THAT(r.status().message(), Catch::Contains("too long"));
  }
  SECTION("all ones") {
    put_be(bytes, kOffBackingFileSize, 4, 0xffffffff);
    CHECK(decode_header(bytes).status().code() == StatusCode::kCorruption);
  }
  SECTION("a name running past the cluster") {
    put_be(bytes, kOffBackingFileOffset, 8, 65536 - 100);
    put_be(bytes, kOffBackingFileSize, 4, 101);
    CHECK(decode_header(bytes).status().code() == StatusCode::kCorruption);
  }
  SECTION("an offset outside cluster 0") {
    put_be(bytes, kOffBackingFileOffset, 8, 65536 + name_at);
    CHECK(decode_header(bytes).status().code() == StatusCode::kCorruption);
  }
  SECTION("an offset inside the fixed header") {
    put_be(bytes, kOffBackingFileOffset, 8, 8);
    CHECK(decode_header(bytes).status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("encode_header refuses a backing file name over 1023 bytes", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.backing_file = std::string(1024, 'b');
  auto r = encode_header(h);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("decode_header limits the backing format name to 15 bytes", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  h.backing_file = "b";
  h.backing_format = std::string(15, 'f');
  CHECK(decoded(encoded(h)).backing_format == std::string(15, 'f'));
  for (size_t n : {size_t{16}, size_t{17}, size_t{100}}) {
    h.backing_format = std::string(n, 'f');
    INFO("length " << n);
    auto r = decode_header(encoded(h));
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK_THAT(r.status().message(), Catch::Contains("backing format"));
  }
}

TEST_CASE("decode_header requires the bitmaps extension to be 24 bytes", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  for (size_t n : {size_t{0}, size_t{16}, size_t{23}, size_t{25}, size_t{32}}) {
    h.bitmaps_ext = std::vector<uint8_t>(n, 1);
    INFO("length " << n);
    CHECK(decode_header(encoded(h)).status().code() == StatusCode::kCorruption);
  }
}

TEST_CASE("decode_header reads 46-byte feature names without a terminator", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 16;
  std::string long_name(46, 'n');
  h.feature_names = {{0, 5, long_name}, {1, 63, "x"}};
  Header d = decoded(encoded(h));
  REQUIRE(d.feature_names.size() == 2);
  CHECK(d.feature_names[0].name == long_name);
  CHECK(d.feature_names[1].bit == 63);
  CHECK(d.feature_names[1].name == "x");
}

TEST_CASE("encode_header fails when everything does not fit in one cluster", "[qcow2][header]") {
  Header h;
  h.cluster_bits = 9;
  h.feature_names = default_feature_names();  // 112 + (8 + 384) + 8 = 512 exactly
  REQUIRE(encode_header(h).is_ok());
  h.backing_format = "raw";  // 16 more bytes
  auto r = encode_header(h);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  h.feature_names.clear();
  h.backing_format.reset();
  h.unknown_header_fields.assign(512 - 112, 0);
  CHECK_FALSE(encode_header(h).is_ok());
  h.unknown_header_fields.assign(512 - 112 - 8, 0);  // exactly fits with the end marker
  CHECK(encode_header(h).is_ok());
}

TEST_CASE("describe_features names bits from the image's feature table", "[qcow2][header]") {
  Header h;
  h.feature_names = default_feature_names();
  h.feature_names.push_back({0, 20, "my feature"});
  CHECK(describe_features(h, 0, kIncompatDirty) == "dirty bit");
  CHECK(describe_features(h, 0, 1ull << 20) == "my feature");
  CHECK(describe_features(h, 0, 1ull << 5) == "Unknown incompatible feature: 20");
  // Names first, in the table's order; the unnamed bits as one mask (as QEMU).
  CHECK(describe_features(h, 0, (1ull << 20) | (1ull << 63) | (1ull << 62) | kIncompatDirty) ==
        "dirty bit, my feature, Unknown incompatible feature: c000000000000000");
  // Names of another type do not apply: (2, 0) is "bitmaps", not bit 0 here.
  CHECK(describe_features(h, 1, 1ull << 1) == "Unknown compatible feature: 2");
  // The table ends at its first entry without a name, as QEMU reads it.
  Header cut;
  cut.feature_names = {{0, 3, "three"}, {0, 4, ""}, {0, 5, "five"}};
  CHECK(describe_features(cut, 0, (1ull << 3) | (1ull << 5)) ==
        "three, Unknown incompatible feature: 20");
  // A hostile name cannot inject terminal escapes.
  h.feature_names.push_back({0, 30, "\x1b[2Jevil"});
  CHECK(describe_features(h, 0, 1ull << 30).find('\x1b') == std::string::npos);
}

}  // namespace qdedup::qcow2
