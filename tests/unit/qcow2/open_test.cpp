// Image::open on damaged, truncated and unusual images: it must fail cleanly
// (a non-ok Status with a message, never a crash, never a write), or succeed
// where QEMU would.
#include <algorithm>
#include <catch2/catch.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow2/create.h"
#include "qcow2/format.h"
#include "qcow2/header.h"
#include "qcow2/image.h"
#include "support/image_builder.h"
#include "support/open_checks.h"

namespace qdedup::qcow2 {
namespace {

using namespace image_builder;

// The image the header-field tests start from: 64 KiB clusters, 1 MiB, a
// backing file and format, no data. Layout (as qemu-img's): header at 0,
// refcount table at 0x10000, refcount block at 0x20000, L1 (1 entry) at
// 0x30000; the file ends right after the L1 table.
std::vector<uint8_t> base_image() {
  CreateOptions o = small_options(1 << 20, 16);
  o.backing_file = "base.qcow2";
  o.backing_format = "qcow2";
  std::vector<uint8_t> b = created_image(o);
  REQUIRE(b.size() == 0x30008);
  REQUIRE(get_be(b, kOffRefcountTableOffset, 8) == 0x10000);
  REQUIRE(get_be(b, kOffRefcountTableClusters, 4) == 1);
  REQUIRE(get_be(b, kOffL1TableOffset, 8) == 0x30000);
  REQUIRE(get_be(b, kOffL1Size, 4) == 1);
  REQUIRE(get_be(b, kOffHeaderLength, 4) == 112);
  return b;
}

struct FieldCase {
  const char* field;
  uint32_t offset;
  int width;
  uint64_t value;
  Outcome read_only;
  Outcome writable;
};

// Bytes an open needs: everything up to the end of the refcount table, the
// active L1 table and (if any) the snapshot table without its final padding.
uint64_t bytes_needed_to_open(const std::vector<uint8_t>& b, uint64_t snapshot_table_end = 0) {
  uint64_t cs = uint64_t{1} << get_be(b, kOffClusterBits, 4);
  uint64_t reftable_end =
      get_be(b, kOffRefcountTableOffset, 8) + get_be(b, kOffRefcountTableClusters, 4) * cs;
  uint64_t l1_end = get_be(b, kOffL1TableOffset, 8) + get_be(b, kOffL1Size, 4) * 8;
  return std::max({reftable_end, l1_end, snapshot_table_end});
}

void check_every_truncation(const std::vector<uint8_t>& full, const std::vector<uint8_t>& guest,
                            uint64_t needed) {
  REQUIRE(needed <= full.size());
  for (uint64_t len = 0; len <= full.size(); ++len) {
    INFO("truncated to " << len << " of " << full.size() << " bytes (" << needed
                         << " needed to open)");
    std::span<const uint8_t> prefix(full.data(), len);
    Outcome want = len < needed ? kCorrupt : kOpens;
    auto ro = check_open_view(prefix, false, want);
    if (ro) {
      std::vector<uint8_t> disk;
      Status s = read_all(*ro, &disk);  // may fail; must not crash
      if (len == full.size()) {
        REQUIRE(s.is_ok());
        CHECK(disk == guest);
      }
    }
    check_open_view(prefix, true,
                    len < needed ? kCorrupt : Outcome{Outcome::kEither, std::nullopt});
  }
}

std::vector<uint8_t> with_header(std::vector<uint8_t> image, const Header& h) {
  auto cluster0 = encode_header(h);
  REQUIRE(cluster0.is_ok());
  std::copy(cluster0->begin(), cluster0->end(), image.begin());
  return image;
}

Header header_of(const std::vector<uint8_t>& image) {
  auto h = decode_header(image);
  REQUIRE(h.is_ok());
  return std::move(h).value();
}

Status open_status(const std::vector<uint8_t>& bytes, bool writable) {
  io::MemoryFile mem("x.qcow2", bytes);
  auto r = open_borrowed(mem, writable);
  return r.is_ok() ? Status::ok() : r.status();
}

}  // namespace

TEST_CASE("open of the unmodified test image succeeds read-only and writable", "[qcow2][open]") {
  io::MemoryFile mem("x.qcow2", base_image());
  auto img = check_open(mem, false, kOpens);
  REQUIRE(img);
  CHECK(img->header().backing_file == "base.qcow2");
  CHECK(img->header().backing_format == "qcow2");
  CHECK(img->virtual_size() == (1 << 20));
  CHECK(read_all(*img).is_ok());
  CHECK(check_open(mem, true, kOpens) != nullptr);
}

TEST_CASE("open fails cleanly when each header field in turn is corrupted",
          "[qcow2][open][header]") {
  const std::vector<uint8_t> base = base_image();
  const uint64_t cs = 0x10000;
  const uint64_t bfo = get_be(base, kOffBackingFileOffset, 8);
  REQUIRE(bfo > 112);
  const uint64_t ones = UINT64_MAX;
  const Outcome corrupt_rw_only = kCorrupt;  // readable, but not writable

  const std::vector<FieldCase> cases = {
      {"magic", kOffMagic, 4, 0, kCorrupt, kCorrupt},
      {"magic", kOffMagic, 4, ones, kCorrupt, kCorrupt},
      {"magic", kOffMagic, 4, 0x514649fa, kCorrupt, kCorrupt},
      {"version", kOffVersion, 4, 0, kUnsupported, kUnsupported},
      {"version", kOffVersion, 4, 1, kUnsupported, kUnsupported},
      {"version", kOffVersion, 4, 4, kUnsupported, kUnsupported},
      {"version", kOffVersion, 4, ones, kUnsupported, kUnsupported},
      {"version", kOffVersion, 4, 2, kOpens, kOpens},  // v3 fields read as extensions: zero = end
      {"backing_file_offset", kOffBackingFileOffset, 8, 0, kOpens, kOpens},
      {"backing_file_offset", kOffBackingFileOffset, 8, ones, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, 1ull << 62, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, cs + 8, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, cs, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, cs - 4, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, 8, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, 104, kCorrupt, kCorrupt},
      {"backing_file_offset", kOffBackingFileOffset, 8, bfo + 1, kOpens, kOpens},
      // An empty name: no backing file, as qemu-img 7.2 reads and writes it.
      {"backing_file_size", kOffBackingFileSize, 4, 0, kOpens, kOpens},
      {"backing_file_size", kOffBackingFileSize, 4, 1, kOpens, kOpens},
      {"backing_file_size", kOffBackingFileSize, 4, 1023, kOpens, kOpens},
      {"backing_file_size", kOffBackingFileSize, 4, 1024, kCorrupt, kCorrupt},
      {"backing_file_size", kOffBackingFileSize, 4, ones, kCorrupt, kCorrupt},
      {"cluster_bits", kOffClusterBits, 4, 0, kUnsupported, kUnsupported},
      {"cluster_bits", kOffClusterBits, 4, 8, kUnsupported, kUnsupported},
      {"cluster_bits", kOffClusterBits, 4, 22, kUnsupported, kUnsupported},
      {"cluster_bits", kOffClusterBits, 4, ones, kUnsupported, kUnsupported},
      {"cluster_bits", kOffClusterBits, 4, 9, kFails, kFails},       // backing name past cluster
      {"cluster_bits", kOffClusterBits, 4, 17, kCorrupt, kCorrupt},  // tables unaligned
      {"cluster_bits", kOffClusterBits, 4, 21, kCorrupt, kCorrupt},
      {"size", kOffSize, 8, 0, kOpens, kOpens},
      {"size", kOffSize, 8, 1000, kOpens, kOpens},
      {"size", kOffSize, 8, 1ull << 29, kOpens, kOpens},  // exactly what one L1 entry maps
      {"size", kOffSize, 8, (1ull << 29) + 1, kCorrupt, kCorrupt},  // L1 too small
      {"size", kOffSize, 8, 1ull << 62, kCorrupt, kCorrupt},
      {"size", kOffSize, 8, 0x7fffffffffffffffull, kCorrupt, kCorrupt},
      {"size", kOffSize, 8, ones, kCorrupt, kCorrupt},
      {"crypt_method", kOffCryptMethod, 4, 1, kUnsupported, kUnsupported},
      {"crypt_method", kOffCryptMethod, 4, 2, kUnsupported, kUnsupported},
      {"crypt_method", kOffCryptMethod, 4, ones, kUnsupported, kUnsupported},
      {"l1_size", kOffL1Size, 4, 0, kCorrupt, kCorrupt},  // too small for 1 MiB
      {"l1_size", kOffL1Size, 4, 2, kCorrupt, kCorrupt},  // past the end of the file
      {"l1_size", kOffL1Size, 4, 0x400001, kCorrupt, kCorrupt},
      {"l1_size", kOffL1Size, 4, 0x80000000, kCorrupt, kCorrupt},
      {"l1_size", kOffL1Size, 4, ones, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, 0, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, 0x30001, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, 0x30008, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, 0x40000, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, 1ull << 55, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, ones, kCorrupt, kCorrupt},
      {"l1_table_offset", kOffL1TableOffset, 8, ones << 16, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, 0, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, 0x10001, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, 0x30000, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, 0x40000, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, 1ull << 62, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, ones << 16, kCorrupt, kCorrupt},
      {"refcount_table_offset", kOffRefcountTableOffset, 8, ones, kCorrupt, kCorrupt},
      {"refcount_table_clusters", kOffRefcountTableClusters, 4, 0, kCorrupt, kCorrupt},
      // Two clusters end exactly at 0x30000: inside the file, but the second
      // is the refcount block, whose entries have reserved reftable bits set.
      {"refcount_table_clusters", kOffRefcountTableClusters, 4, 2, kOpens, corrupt_rw_only},
      {"refcount_table_clusters", kOffRefcountTableClusters, 4, 3, kCorrupt, kCorrupt},
      {"refcount_table_clusters", kOffRefcountTableClusters, 4, 129, kCorrupt, kCorrupt},
      {"refcount_table_clusters", kOffRefcountTableClusters, 4, ones, kCorrupt, kCorrupt},
      {"nb_snapshots", kOffNbSnapshots, 4, 0, kOpens, kOpens},
      {"nb_snapshots", kOffNbSnapshots, 4, 1, kCorrupt, kCorrupt},  // table offset 0
      {"nb_snapshots", kOffNbSnapshots, 4, 65537, kCorrupt, kCorrupt},
      {"nb_snapshots", kOffNbSnapshots, 4, ones, kCorrupt, kCorrupt},
      {"snapshots_offset", kOffSnapshotsOffset, 8, 0, kOpens, kOpens},
      {"snapshots_offset", kOffSnapshotsOffset, 8, 0x40000, kOpens, kOpens},  // unused
      {"incompatible_features", kOffIncompatibleFeatures, 8, kIncompatDirty, kOpens, kCorrupt},
      {"incompatible_features", kOffIncompatibleFeatures, 8, kIncompatCorrupt, kOpens, kCorrupt},
      {"incompatible_features", kOffIncompatibleFeatures, 8, kIncompatDataFile, kUnsupported,
       kUnsupported},
      {"incompatible_features", kOffIncompatibleFeatures, 8, kIncompatCompression, kCorrupt,
       kCorrupt},  // bit set with zlib
      {"incompatible_features", kOffIncompatibleFeatures, 8, kIncompatExtendedL2, kOpens, kOpens},
      {"incompatible_features", kOffIncompatibleFeatures, 8, 1ull << 5, kUnsupported, kUnsupported},
      {"incompatible_features", kOffIncompatibleFeatures, 8, 1ull << 63, kUnsupported,
       kUnsupported},
      {"incompatible_features", kOffIncompatibleFeatures, 8, ones, kUnsupported, kUnsupported},
      {"compatible_features", kOffCompatibleFeatures, 8, ones, kOpens, kOpens},
      {"autoclear_features", kOffAutoclearFeatures, 8, ones, kOpens, kOpens},
      {"refcount_order", kOffRefcountOrder, 4, 0, kOpens, kOpens},
      {"refcount_order", kOffRefcountOrder, 4, 6, kOpens, kOpens},
      {"refcount_order", kOffRefcountOrder, 4, 7, kCorrupt, kCorrupt},
      {"refcount_order", kOffRefcountOrder, 4, ones, kCorrupt, kCorrupt},
      {"header_length", kOffHeaderLength, 4, 0, kCorrupt, kCorrupt},
      {"header_length", kOffHeaderLength, 4, 72, kCorrupt, kCorrupt},
      {"header_length", kOffHeaderLength, 4, 103, kCorrupt, kCorrupt},
      {"header_length", kOffHeaderLength, 4, 104, kOpens, kOpens},  // compression type absent
      {"header_length", kOffHeaderLength, 4, bfo + 8, kCorrupt, kCorrupt},  // over the name
      {"header_length", kOffHeaderLength, 4, cs, kCorrupt, kCorrupt},
      {"header_length", kOffHeaderLength, 4, cs + 1, kCorrupt, kCorrupt},
      {"header_length", kOffHeaderLength, 4, ones, kCorrupt, kCorrupt},
      {"compression_type", kOffCompressionType, 1, 1, kCorrupt, kCorrupt},  // bit missing
      {"compression_type", kOffCompressionType, 1, 2, kUnsupported, kUnsupported},
      {"compression_type", kOffCompressionType, 1, 0xff, kUnsupported, kUnsupported},
  };
  for (const FieldCase& c : cases) {
    std::vector<uint8_t> bytes = base;
    put_be(bytes, c.offset, c.width, c.value);
    io::MemoryFile mem("x.qcow2", bytes);
    INFO(c.field << " = " << c.value << " (0x" << std::hex << c.value << std::dec << ")");
    auto ro = check_open(mem, false, c.read_only);
    if (ro) CHECK(read_all(*ro).is_ok());  // a plain image with no data reads as zeros
    check_open(mem, true, c.writable);
  }
}

TEST_CASE("open rejects an unaligned snapshots_offset even without snapshots",
          "[qcow2][open][header]") {
  // QEMU validates the snapshot table's offset unconditionally
  // (qcow2_validate_table: "Snapshot table offset invalid"), also when
  // nb_snapshots is 0 [qemu-img 7.2 refuses such an image].
  const std::vector<uint8_t> base = base_image();
  for (uint64_t v : {uint64_t{0x123}, uint64_t{0x30008}, UINT64_MAX}) {
    std::vector<uint8_t> bytes = base;
    put_be(bytes, kOffSnapshotsOffset, 8, v);
    io::MemoryFile mem("x.qcow2", bytes);
    INFO("snapshots_offset 0x" << std::hex << v);
    check_open(mem, false, kCorrupt);
    check_open(mem, true, kCorrupt);
  }
}

TEST_CASE("open survives any value in any byte of a small image's metadata", "[qcow2][open]") {
  // 512-byte clusters keep this exhaustive: every byte of the file (header,
  // extensions, backing name, refcount table and block, L1, L2, data) is set
  // to 0x00, 0xff and its value with the top bit flipped.
  WrittenImage w = written_image(9, 3, 16 * 1024);
  REQUIRE(w.bytes.size() < 16 * 1024);
  const Outcome either{Outcome::kEither, std::nullopt};
  std::vector<uint8_t> bytes = w.bytes;
  uint64_t opened = 0;
  for (uint64_t off = 0; off < bytes.size(); ++off) {
    const uint8_t orig = w.bytes[off];
    for (uint8_t v : {uint8_t{0}, uint8_t{0xff}, static_cast<uint8_t>(orig ^ 0x80)}) {
      if (v == orig) continue;
      bytes[off] = v;
      INFO("byte " << off << " set to " << int{v});
      auto ro = check_open_view(bytes, false, either);
      if (ro) {
        ++opened;
        (void)read_all(*ro);
      }
      check_open_view(bytes, true, either);
    }
    bytes[off] = orig;
  }
  // Most single-byte changes hit data or unused bytes and must not stop an open.
  CHECK(opened > bytes.size());
}

TEST_CASE("open of a fresh image truncated at every length degrades cleanly",
          "[qcow2][open][truncate]") {
  for (uint32_t bits : {9u, 12u}) {
    for (uint32_t version : {2u, 3u}) {
      INFO("cluster_bits " << bits << ", version " << version);
      CreateOptions o = small_options(64 * 1024, bits, version);
      o.backing_file = "base.qcow2";
      o.backing_format = "qcow2";
      std::vector<uint8_t> full = created_image(o);
      REQUIRE_FALSE(full.empty());
      check_every_truncation(full, std::vector<uint8_t>(64 * 1024, 0), bytes_needed_to_open(full));
    }
  }
}

TEST_CASE("open of a written image truncated at every length degrades cleanly",
          "[qcow2][open][truncate]") {
  for (uint32_t bits : {9u, 12u}) {
    for (uint32_t version : {2u, 3u}) {
      INFO("cluster_bits " << bits << ", version " << version);
      WrittenImage w = written_image(bits, version, 64 * 1024);
      check_every_truncation(w.bytes, w.guest, bytes_needed_to_open(w.bytes));
    }
  }
}

TEST_CASE("open of an image with a snapshot table truncated at every length degrades cleanly",
          "[qcow2][open][truncate][snapshot]") {
  WrittenImage w = written_image(9, 3, 32 * 1024);
  uint64_t l1 = get_be(w.bytes, kOffL1TableOffset, 8);
  uint32_t l1_size = static_cast<uint32_t>(get_be(w.bytes, kOffL1Size, 4));
  std::vector<uint8_t> table = snapshot_entry(l1, l1_size, "1", "first");
  std::vector<uint8_t> second = snapshot_entry(l1, l1_size, "2", "second snap");
  table.insert(table.end(), second.begin(), second.end());
  uint64_t at = append_snapshot_table(w.bytes, 9, table, 2);
  // The last entry's padding need not be in the file (QEMU omits it).
  const uint64_t unpadded = 40 + 24 + 1 + 11;
  REQUIRE(second.size() == 80);
  w.bytes.resize(w.bytes.size() - (second.size() - unpadded));
  {
    io::MemoryFile mem("s.qcow2", w.bytes);
    auto img = check_open(mem, false, kOpens);
    REQUIRE(img);
    REQUIRE(img->snapshots().size() == 2);
    CHECK(img->snapshots()[1].name == "second snap");
  }
  check_every_truncation(w.bytes, w.guest, at + table.size() - (second.size() - unpadded));
}

TEST_CASE("open names an unknown incompatible feature from the image's table",
          "[qcow2][open][features]") {
  std::vector<uint8_t> image = created_image(small_options(1 << 20, 16));
  REQUIRE_FALSE(image.empty());
  Header h = header_of(image);
  REQUIRE_FALSE(h.feature_names.empty());  // 64 KiB clusters: QEMU's table is there
  h.feature_names.push_back({0, 40, "my feature"});
  h.incompatible_features = 1ull << 40;
  std::vector<uint8_t> bytes = with_header(image, h);
  for (bool writable : {false, true}) {
    Status s = open_status(bytes, writable);
    CHECK(s.code() == StatusCode::kUnsupported);
    CHECK_THAT(s.message(), Catch::Contains("my feature"));
  }
  // A bit without a name is described by its mask, after the names (as QEMU).
  h.incompatible_features = (1ull << 40) | (1ull << 41);
  Status both = open_status(with_header(image, h), false);
  CHECK(both.code() == StatusCode::kUnsupported);
  CHECK_THAT(both.message(),
             Catch::Contains("my feature, Unknown incompatible feature: 20000000000"));
}

TEST_CASE("open describes unknown incompatible bits by number without a feature table",
          "[qcow2][open][features]") {
  // 512-byte clusters: no room for a feature name table.
  std::vector<uint8_t> image = created_image(small_options(1 << 20, 9));
  REQUIRE_FALSE(image.empty());
  REQUIRE(header_of(image).feature_names.empty());
  for (unsigned bit : {5u, 20u, 63u}) {
    std::vector<uint8_t> bytes = image;
    put_be(bytes, kOffIncompatibleFeatures, 8, 1ull << bit);
    Status s = open_status(bytes, false);
    INFO("bit " << bit);
    CHECK(s.code() == StatusCode::kUnsupported);
    char mask[64];
    std::snprintf(mask, sizeof mask, "Unknown incompatible feature: %llx", 1ull << bit);
    CHECK_THAT(s.message(), Catch::Contains(mask));
  }
}

TEST_CASE("the corrupt bit allows read-only opens only", "[qcow2][open][features]") {
  WrittenImage w = written_image(12, 3, 64 * 1024);
  put_be(w.bytes, kOffIncompatibleFeatures, 8, kIncompatCorrupt);
  io::MemoryFile mem("c.qcow2", w.bytes);
  auto ro = check_open(mem, false, kOpens);
  REQUIRE(ro);
  std::vector<uint8_t> disk;
  REQUIRE(read_all(*ro, &disk).is_ok());
  CHECK(disk == w.guest);
  Status rw = open_status(w.bytes, true);
  CHECK(rw.code() == StatusCode::kCorruption);
  CHECK_THAT(rw.message(), Catch::Contains("corrupt"));
}

TEST_CASE("the dirty bit blocks writable opens", "[qcow2][open][features]") {
  WrittenImage w = written_image(12, 3, 64 * 1024);
  put_be(w.bytes, kOffIncompatibleFeatures, 8, kIncompatDirty);
  io::MemoryFile mem("d.qcow2", w.bytes);
  check_open(mem, true, kCorrupt);
  auto ro = check_open(mem, false, kOpens);
  REQUIRE(ro);
  std::vector<uint8_t> disk;
  REQUIRE(read_all(*ro, &disk).is_ok());
  CHECK(disk == w.guest);
}

TEST_CASE("unknown autoclear bits are cleared by the first write and kept by readers",
          "[qcow2][open][features]") {
  const uint64_t unknown = (1ull << 5) | (1ull << 9) | (1ull << 63);
  std::vector<uint8_t> image = created_image(small_options(1 << 20, 12));
  REQUIRE_FALSE(image.empty());
  put_be(image, kOffAutoclearFeatures, 8, unknown);
  io::MemoryFile mem("a.qcow2", image);
  {
    auto ro = check_open(mem, false, kOpens);
    REQUIRE(ro);
    CHECK(ro->header().autoclear_features == unknown);
    CHECK(read_all(*ro).is_ok());
    CHECK(ro->write(0, std::vector<uint8_t>(512, 1)).code() == StatusCode::kInvalidArgument);
  }
  CHECK(get_be(mem.bytes(), kOffAutoclearFeatures, 8) == unknown);
  {
    auto rw = check_open(mem, true, kOpens);
    REQUIRE(rw);
    REQUIRE(rw->write(4096, std::vector<uint8_t>(512, 1)).is_ok());
    CHECK(get_be(mem.bytes(), kOffAutoclearFeatures, 8) == 0);
    REQUIRE(rw->close().is_ok());
  }
  CHECK(get_be(mem.bytes(), kOffAutoclearFeatures, 8) == 0);
  // Nothing else in the header moved.
  for (uint32_t off = 0; off < kOffAutoclearFeatures; ++off) {
    INFO("header byte " << off);
    CHECK(mem.bytes()[off] == image[off]);
  }
  auto again = check_open(mem, false, kOpens);
  REQUIRE(again);
  std::vector<uint8_t> buf(512);
  REQUIRE(again->read(4096, buf).is_ok());
  CHECK(buf == std::vector<uint8_t>(512, 1));
}

TEST_CASE("open enforces QEMU's table size limits before reading anything",
          "[qcow2][open][limits]") {
  const std::vector<uint8_t> base = base_image();
  SECTION("an active L1 table over 4 Mi entries") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffL1Size, 4, 0x400001);
    Status s = open_status(b, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("too large"));
  }
  SECTION("a refcount table over 8 MiB") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffRefcountTableClusters, 4, 129);  // 129 x 64 KiB
    Status s = open_status(b, true);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("too large"));
  }
  SECTION("more than 65536 snapshots") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffNbSnapshots, 4, 65537);
    put_be(b, kOffSnapshotsOffset, 8, 0x30000);
    Status s = open_status(b, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("too large"));
  }
  SECTION("a size that no L1 table within the limit can map") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffSize, 8, 1ull << 62);
    put_be(b, kOffL1Size, 4, 0x400000);
    CHECK(open_status(b, false).code() == StatusCode::kCorruption);
  }
}

TEST_CASE("open rejects tables that lie beyond the end of the file", "[qcow2][open][limits]") {
  const std::vector<uint8_t> base = base_image();
  SECTION("the L1 table") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffL1TableOffset, 8, 0x100000);
    Status s = open_status(b, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("L1"));
    CHECK_THAT(s.message(), Catch::Contains("beyond the end"));
  }
  SECTION("the L1 table's last entry") {
    std::vector<uint8_t> b = base;
    b.resize(b.size() - 1);
    CHECK(open_status(b, false).code() == StatusCode::kCorruption);
  }
  SECTION("the refcount table") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffRefcountTableOffset, 8, 0x100000);
    Status s = open_status(b, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("reference count table"));
    CHECK_THAT(s.message(), Catch::Contains("beyond the end"));
  }
  SECTION("the snapshot table offset") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffNbSnapshots, 4, 1);
    put_be(b, kOffSnapshotsOffset, 8, 0x100000);
    CHECK(open_status(b, false).code() == StatusCode::kCorruption);
  }
}

TEST_CASE("open rejects snapshot table entries that run past the end of the file",
          "[qcow2][open][limits][snapshot]") {
  std::vector<uint8_t> image = created_image(small_options(1 << 20, 12));
  REQUIRE_FALSE(image.empty());
  uint64_t l1 = get_be(image, kOffL1TableOffset, 8);
  SECTION("more entries than the table holds") {
    append_snapshot_table(image, 12, snapshot_entry(l1, 1, "1", "one"), 2);
    Status s = open_status(image, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("snapshot table entry 1"));
  }
  SECTION("a name running past the end of the file") {
    std::vector<uint8_t> e = snapshot_entry(l1, 1, "1", "one");
    put_be(e, 14, 2, 0xffff);  // name length
    append_snapshot_table(image, 12, e, 1);
    Status s = open_status(image, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("snapshot table entry 0"));
  }
  SECTION("too much extra data") {
    std::vector<uint8_t> e = snapshot_entry(l1, 1, "1", "one", 1032);
    append_snapshot_table(image, 12, e, 1);
    CHECK(open_status(image, false).code() == StatusCode::kCorruption);
  }
  SECTION("a snapshot L1 table beyond the end of the file") {
    append_snapshot_table(image, 12, snapshot_entry(0x1000000, 1, "1", "one"), 1);
    Status s = open_status(image, false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("L1"));
  }
  SECTION("a well-formed entry opens") {
    append_snapshot_table(image, 12, snapshot_entry(l1, 1, "1", "one"), 1);
    io::MemoryFile mem("s.qcow2", image);
    auto img = check_open(mem, false, kOpens);
    REQUIRE(img);
    REQUIRE(img->snapshots().size() == 1);
    CHECK(img->snapshots()[0].id == "1");
    CHECK(img->snapshots()[0].name == "one");
  }
}

TEST_CASE("open rejects an extension running past cluster 0 and oversize backing names",
          "[qcow2][open][limits]") {
  const std::vector<uint8_t> base = base_image();
  REQUIRE(get_be(base, 112, 4) == kExtBackingFormat);
  SECTION("extension length past the cluster") {
    std::vector<uint8_t> b = base;
    put_be(b, 116, 4, 0x10000);
    CHECK(open_status(b, false).code() == StatusCode::kCorruption);
  }
  SECTION("backing format name of 16 bytes") {
    Header h = header_of(base);
    h.backing_format = std::string(16, 'q');
    Status s = open_status(with_header(base, h), false);
    CHECK(s.code() == StatusCode::kCorruption);
    CHECK_THAT(s.message(), Catch::Contains("backing format"));
  }
  SECTION("backing file name of 1024 bytes") {
    std::vector<uint8_t> b = base;
    put_be(b, kOffBackingFileSize, 4, 1024);
    CHECK(open_status(b, false).code() == StatusCode::kCorruption);
  }
}

TEST_CASE("open reads header extensions anywhere in a 64 KiB cluster 0", "[qcow2][open][header]") {
  // QEMU reads the whole first cluster; qemu-img 7.2 opens all of these.
  std::vector<uint8_t> image = created_image(small_options(1 << 20, 16));
  REQUIRE_FALSE(image.empty());
  Header h = header_of(image);
  SECTION("an unknown extension running past the first 4 KiB") {
    h.unknown_extensions.push_back({0x12345678, std::vector<uint8_t>(5000, 0xab)});
    io::MemoryFile mem("x.qcow2", with_header(image, h));
    auto img = check_open(mem, false, kOpens);
    REQUIRE(img);
    REQUIRE(img->header().unknown_extensions.size() == 1);
    CHECK(img->header().unknown_extensions[0].data.size() == 5000);
  }
  SECTION("a backing file name stored beyond the first 4 KiB") {
    std::vector<uint8_t> b = image;
    const std::string name = "base.qcow2";
    put_be(b, kOffBackingFileOffset, 8, 8000);
    put_be(b, kOffBackingFileSize, 4, name.size());
    std::copy(name.begin(), name.end(), b.begin() + 8000);
    io::MemoryFile mem("x.qcow2", b);
    auto img = check_open(mem, false, kOpens);
    REQUIRE(img);
    CHECK(img->header().backing_file == name);
  }
  SECTION("a header_length of 8 KiB") {
    h.feature_names.clear();
    h.unknown_header_fields.assign(8192 - 112, 0x5a);
    io::MemoryFile mem("x.qcow2", with_header(image, h));
    REQUIRE(get_be(mem.bytes(), kOffHeaderLength, 4) == 8192);
    auto img = check_open(mem, false, kOpens);
    REQUIRE(img);
    CHECK(img->header().header_length == 8192);
    CHECK(img->header().unknown_header_fields.size() == 8192 - 112);
  }
}

TEST_CASE("open of a file shorter than the fixed header is corruption", "[qcow2][open]") {
  for (size_t n : {size_t{0}, size_t{1}, size_t{71}, size_t{103}}) {
    std::vector<uint8_t> b = base_image();
    b.resize(n);
    INFO("length " << n);
    io::MemoryFile mem("x.qcow2", b);
    check_open(mem, false, kCorrupt);
  }
}

}  // namespace qdedup::qcow2
