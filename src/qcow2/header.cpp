#include "qcow2/header.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "qcow2/format.h"
#include "util/endian.h"
#include "util/size.h"
#include "util/text.h"

namespace qdedup::qcow2 {

namespace {

std::string string_from(std::span<const uint8_t> bytes) {
  return std::string(bytes.begin(), bytes.end());
}

Status decode_extension(Header& h, uint32_t type, std::span<const uint8_t> data) {
  switch (type) {
    case kExtBackingFormat:
      // QEMU refuses names of 16 bytes or more (ext_backing_format).
      if (data.size() >= 16) {
        return corruption("backing format extension: name of " +
                          std::to_string(data.size()) + " bytes is too long");
      }
      h.backing_format = string_from(data);
      return Status::ok();
    case kExtFeatureTable:
      h.feature_names.clear();
      // A last entry cut short counts, its missing bytes zero (QEMU reads the
      // table into a zeroed buffer).
      for (size_t off = 0; off + 2 <= data.size(); off += kFeatureNameEntrySize) {
        FeatureName f;
        f.type = data[off];
        f.bit = data[off + 1];
        const uint8_t* name = data.data() + off + 2;
        const size_t room = std::min<size_t>(kFeatureNameLength, data.size() - off - 2);
        size_t len = 0;
        while (len < room && name[len] != 0) ++len;
        f.name.assign(reinterpret_cast<const char*>(name), len);
        h.feature_names.push_back(std::move(f));
      }
      return Status::ok();
    case kExtBitmaps:
      if (data.size() != 24) {
        return corruption("bitmaps extension: invalid length " +
                          std::to_string(data.size()) + " (expected 24)");
      }
      h.bitmaps_ext = std::vector<uint8_t>(data.begin(), data.end());
      return Status::ok();
    case kExtCrypto:
      h.crypto_ext = std::vector<uint8_t>(data.begin(), data.end());
      return Status::ok();
    case kExtDataFile:
      h.data_file = string_from(data);
      return Status::ok();
    default:
      h.unknown_extensions.push_back({type, {data.begin(), data.end()}});
      return Status::ok();
  }
}

// Parses the extension area [start, end) of cluster 0.
Status decode_extensions(Header& h, std::span<const uint8_t> bytes,
                         uint64_t start, uint64_t end) {
  uint64_t off = start;
  while (true) {
    // As QEMU, an area that ends without an end marker is accepted.
    if (off >= end) return Status::ok();
    if (off + 8 > end) {
      return corruption("header extension area at " + hex(off) +
                        " runs past its end (" + hex(end) + ")");
    }
    if (off + 8 > bytes.size()) {
      return corruption("header extension at " + hex(off) +
                        " lies beyond the end of the file");
    }
    uint32_t type = load_be32(bytes.data() + off);
    uint32_t len = load_be32(bytes.data() + off + 4);
    if (type == kExtEnd) return Status::ok();
    uint64_t data_off = off + 8;
    if (len > end - data_off) {
      return corruption("header extension " + hex(type) + " at " + hex(off) +
                        " is too large (" + std::to_string(len) + " bytes)");
    }
    if (data_off + len > bytes.size()) {
      return corruption("header extension " + hex(type) + " at " + hex(off) +
                        " lies beyond the end of the file");
    }
    QD_TRY(decode_extension(h, type, bytes.subspan(data_off, len)));
    uint64_t padded = 0;
    (void)align_up(len, 8, &padded);
    off = data_off + padded;
  }
}

// The fields after the version 2 header (defaults for version 2).
Status decode_version_fields(Header& h, std::span<const uint8_t> bytes) {
  const uint8_t* p = bytes.data();
  const uint64_t cluster_size = h.cluster_size();
  if (h.version == 2) {
    h.header_length = kHeaderV2Length;
    h.refcount_order = 4;
    return Status::ok();
  }
  if (bytes.size() < kHeaderV3MinLength) {
    return corruption("file too short for a version 3 header");
  }
  h.incompatible_features = load_be64(p + kOffIncompatibleFeatures);
  h.compatible_features = load_be64(p + kOffCompatibleFeatures);
  h.autoclear_features = load_be64(p + kOffAutoclearFeatures);
  h.refcount_order = load_be32(p + kOffRefcountOrder);
  h.header_length = load_be32(p + kOffHeaderLength);
  if (h.header_length < kHeaderV3MinLength) {
    return corruption("header_length " + std::to_string(h.header_length) +
                      " is too short (at least 104)");
  }
  if (h.header_length > cluster_size) {
    return corruption("header_length " + std::to_string(h.header_length) +
                      " exceeds the cluster size");
  }
  if (h.header_length > bytes.size()) {
    return corruption("header_length " + std::to_string(h.header_length) +
                      " runs past the end of the file");
  }
  if (h.header_length > kOffCompressionType) h.compression_type = p[kOffCompressionType];
  if (h.header_length > kHeaderV3Length) {
    h.unknown_header_fields.assign(p + kHeaderV3Length, p + h.header_length);
  }
  return Status::ok();
}

// The backing file name; returns where the header extension area ends.
Result<uint64_t> decode_backing_name(Header& h, std::span<const uint8_t> bytes) {
  const uint64_t cluster_size = h.cluster_size();
  uint64_t ext_end = cluster_size;
  if (h.backing_file_offset != 0) {
    if (h.backing_file_offset > cluster_size) {
      return corruption("backing_file_offset " + hex(h.backing_file_offset) +
                        " lies outside the first cluster");
    }
    if (h.backing_file_offset < h.header_length) {
      return corruption("backing_file_offset " + hex(h.backing_file_offset) +
                        " overlaps the header");
    }
    if (h.backing_file_size > kMaxBackingFileSize ||
        h.backing_file_size > cluster_size - h.backing_file_offset) {
      return corruption("backing file name too long (" +
                        std::to_string(h.backing_file_size) + " bytes)");
    }
    if (h.backing_file_offset + h.backing_file_size > bytes.size()) {
      return corruption("backing file name lies beyond the end of the file");
    }
    // An empty name is no backing file, as QEMU reads it; the header
    // extensions still end where the name would start.
    h.backing_file = string_from(bytes.subspan(h.backing_file_offset, h.backing_file_size));
    ext_end = h.backing_file_offset;
  }
  return ext_end;
}

}  // namespace

Result<Header> decode_header(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderV2Length) {
    return corruption("file too short for a qcow2 header (" +
                      std::to_string(bytes.size()) + " bytes)");
  }
  const uint8_t* p = bytes.data();
  if (load_be32(p + kOffMagic) != kMagic) {
    return corruption("not a qcow2 image (bad magic)");
  }
  Header h;
  h.version = load_be32(p + kOffVersion);
  if (h.version != 2 && h.version != 3) {
    return unsupported("unsupported qcow2 version " + std::to_string(h.version));
  }
  h.backing_file_offset = load_be64(p + kOffBackingFileOffset);
  h.backing_file_size = load_be32(p + kOffBackingFileSize);
  h.cluster_bits = load_be32(p + kOffClusterBits);
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return unsupported("unsupported cluster size 2^" + std::to_string(h.cluster_bits) +
                       " (cluster_bits must be 9..21)");
  }
  h.size = load_be64(p + kOffSize);
  h.crypt_method = load_be32(p + kOffCryptMethod);
  h.l1_size = load_be32(p + kOffL1Size);
  h.l1_table_offset = load_be64(p + kOffL1TableOffset);
  h.refcount_table_offset = load_be64(p + kOffRefcountTableOffset);
  h.refcount_table_clusters = load_be32(p + kOffRefcountTableClusters);
  h.nb_snapshots = load_be32(p + kOffNbSnapshots);
  h.snapshots_offset = load_be64(p + kOffSnapshotsOffset);

  QD_TRY(decode_version_fields(h, bytes));
  // The header extensions end where the backing file name starts, if any.
  QD_ASSIGN_OR_RETURN(uint64_t ext_end, decode_backing_name(h, bytes));
  QD_TRY(decode_extensions(h, bytes, h.header_length, ext_end));
  return h;
}

Result<Header> read_header(io::File& file, uint64_t file_size) {
  // Cluster 0 holds the header, its extensions and the backing file name:
  // read all of it (at most 2 MiB, never more than the file).
  std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(file_size, kHeaderV3Length)));
  QD_TRY(file.read_exact(0, head, "header"));
  if (head.size() >= kOffClusterBits + 4) {
    uint32_t cluster_bits = load_be32(head.data() + kOffClusterBits);
    if (cluster_bits >= kMinClusterBits && cluster_bits <= kMaxClusterBits) {
      head.resize(static_cast<size_t>(std::min<uint64_t>(file_size, uint64_t{1} << cluster_bits)));
      QD_TRY(file.read_exact(0, head, "header"));
    }
  }
  return decode_header(head);
}

Status validate_table(uint64_t offset, uint64_t entries, uint64_t entry_bytes,
                      uint64_t max_bytes, TableName name, uint64_t cluster_size) {
  if (entries > max_bytes / entry_bytes) {
    return corruption(std::string(name.name) + " too large (" + std::to_string(entries) + " " +
                      name.unit + ")");
  }
  if (offset % cluster_size != 0 || (entries > 0 && offset == 0)) {
    return corruption(std::string(name.name) + " offset " + hex(offset) + " invalid");
  }
  return Status::ok();
}

bool table_in_file(uint64_t offset, uint64_t bytes, uint64_t file_size) {
  return bytes == 0 || (offset <= file_size && bytes <= file_size - offset);
}

namespace {

// Features and fields that this build cannot or may not open.
Status validate_features(const Header& h, bool writable) {
  if (h.refcount_order > kMaxRefcountOrder) {
    return corruption("refcount_order " + std::to_string(h.refcount_order) +
                      " is too large (refcount width may not exceed 64 bits)");
  }
  if (uint64_t unknown = h.incompatible_features & ~kIncompatKnownMask) {
    return unsupported("unsupported qcow2 feature(s): " +
                       describe_features(h, 0, unknown));
  }
  if (h.incompatible_features & kIncompatDataFile) {
    return unsupported("images with an external data file are not supported" +
                       (h.data_file ? " (data file '" + *h.data_file + "')" : std::string()));
  }
  if (h.crypt_method != 0) {
    return unsupported("encrypted images are not supported (crypt_method " +
                       std::to_string(h.crypt_method) + ")");
  }
  if (writable && (h.incompatible_features & kIncompatCorrupt)) {
    return corruption("image is marked corrupt; it can only be opened read-only");
  }
  if (h.compression_type > kCompressionZstd) {
    return unsupported("unknown compression type " + std::to_string(h.compression_type));
  }
  bool compression_bit = (h.incompatible_features & kIncompatCompression) != 0;
  if (compression_bit != (h.compression_type != kCompressionZlib)) {
    return corruption(compression_bit
                          ? "compression type feature bit set with zlib compression"
                          : "compression type feature bit missing for zstd compression");
  }
  if ((h.incompatible_features & kIncompatExtendedL2) && h.cluster_bits < 14) {
    return corruption("extended L2 entries need a cluster size of at least 16384 bytes");
  }
  if (h.size > kMaxFileOffset) {
    return corruption("virtual size " + std::to_string(h.size) + " is too large");
  }
  return Status::ok();
}

Status validate_refcount_table(const Header& h, uint64_t file_size) {
  if (h.refcount_table_clusters == 0) {
    return corruption("image does not contain a reference count table");
  }
  const uint64_t cluster_size = h.cluster_size();
  QD_TRY(validate_table(h.refcount_table_offset, h.refcount_table_clusters, cluster_size,
                        kMaxReftableBytes, {"reference count table", "clusters"}, cluster_size));
  if (!table_in_file(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} * cluster_size,
                     file_size)) {
    return corruption("reference count table at " + hex(h.refcount_table_offset) +
                      " lies beyond the end of the file");
  }
  return Status::ok();
}

Status validate_l1_table(const Header& h, uint64_t file_size) {
  const uint64_t cluster_size = h.cluster_size();
  bool extended = (h.incompatible_features & kIncompatExtendedL2) != 0;
  uint64_t l2_entries = cluster_size / (extended ? 16 : 8);
  uint64_t min_l1 = div_round_up(h.size, cluster_size * l2_entries);
  if (min_l1 > kMaxL1Entries) {
    return corruption("virtual size " + std::to_string(h.size) +
                      " is too large for the cluster size");
  }
  if (h.l1_size < min_l1) {
    return corruption("L1 table is too small (" + std::to_string(h.l1_size) +
                      " entries for " + std::to_string(min_l1) + " needed)");
  }
  QD_TRY(validate_table(h.l1_table_offset, h.l1_size, 8, kMaxL1Entries * 8,
                        {"active L1 table", "entries"}, cluster_size));
  if (!table_in_file(h.l1_table_offset, uint64_t{h.l1_size} * 8, file_size)) {
    return corruption("active L1 table at " + hex(h.l1_table_offset) + " (" +
                      std::to_string(h.l1_size) + " entries) lies beyond the end of the file");
  }
  return Status::ok();
}

// The snapshot table's entries are validated when parsed.
Status validate_snapshot_table(const Header& h, uint64_t file_size) {
  // As QEMU's qcow2_validate_table(): aligned even when there are no snapshots.
  QD_TRY(validate_table(h.snapshots_offset, h.nb_snapshots, kSnapshotHeaderBytes,
                        kSnapshotHeaderBytes * kMaxSnapshots, {"snapshot table", "snapshots"},
                        h.cluster_size()));
  if (h.snapshots_offset > kMaxFileOffset ||
      (h.nb_snapshots > 0 && h.snapshots_offset >= file_size)) {
    return corruption("snapshot table offset " + hex(h.snapshots_offset) + " invalid");
  }
  return Status::ok();
}

}  // namespace

Status validate_header(const Header& h, uint64_t file_size, bool writable) {
  QD_TRY(validate_features(h, writable));
  QD_TRY(validate_refcount_table(h, file_size));
  QD_TRY(validate_l1_table(h, file_size));
  return validate_snapshot_table(h, file_size);
}

namespace {

// Writes the header extensions into cluster 0 (`out`) from byte `off` on,
// advancing it. False if they do not fit.
bool encode_extensions(const Header& h, std::span<uint8_t> out, uint64_t& off) {
  const uint64_t cluster_size = out.size();
  uint8_t* p = out.data();
  bool overflow = false;
  auto put_ext = [&](uint32_t type, std::span<const uint8_t> data) {
    uint64_t padded = 0;
    (void)align_up(data.size(), 8, &padded);
    if (off + 8 + padded > cluster_size) {
      overflow = true;
      return;
    }
    store_be32(p + off, type);
    store_be32(p + off + 4, static_cast<uint32_t>(data.size()));
    std::copy(data.begin(), data.end(), p + off + 8);
    off += 8 + padded;
  };
  auto as_bytes = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  if (h.backing_format) put_ext(kExtBackingFormat, as_bytes(*h.backing_format));
  if (h.data_file) put_ext(kExtDataFile, as_bytes(*h.data_file));
  if (h.crypto_ext) put_ext(kExtCrypto, *h.crypto_ext);
  if (h.version >= 3 && !h.feature_names.empty()) {
    std::vector<uint8_t> table(h.feature_names.size() * kFeatureNameEntrySize, 0);
    for (size_t i = 0; i < h.feature_names.size(); ++i) {
      const FeatureName& f = h.feature_names[i];
      uint8_t* e = table.data() + i * kFeatureNameEntrySize;
      e[0] = f.type;
      e[1] = f.bit;
      std::copy_n(f.name.begin(), std::min<size_t>(f.name.size(), kFeatureNameLength), e + 2);
    }
    put_ext(kExtFeatureTable, table);
  }
  if (h.bitmaps_ext) put_ext(kExtBitmaps, *h.bitmaps_ext);
  for (const HeaderExtension& e : h.unknown_extensions) put_ext(e.type, e.data);
  return !overflow;
}

}  // namespace

Result<std::vector<uint8_t>> encode_header(const Header& h) {
  const uint64_t cluster_size = h.cluster_size();
  std::vector<uint8_t> out(cluster_size, 0);
  uint8_t* p = out.data();
  uint32_t header_length = kHeaderV2Length;
  if (h.version >= 3) {
    header_length = kHeaderV3Length + static_cast<uint32_t>(h.unknown_header_fields.size());
  }
  if (header_length > cluster_size) return invalid_argument("header does not fit in one cluster");

  store_be32(p + kOffMagic, kMagic);
  store_be32(p + kOffVersion, h.version);
  store_be32(p + kOffClusterBits, h.cluster_bits);
  store_be64(p + kOffSize, h.size);
  store_be32(p + kOffCryptMethod, h.crypt_method);
  store_be32(p + kOffL1Size, h.l1_size);
  store_be64(p + kOffL1TableOffset, h.l1_table_offset);
  store_be64(p + kOffRefcountTableOffset, h.refcount_table_offset);
  store_be32(p + kOffRefcountTableClusters, h.refcount_table_clusters);
  store_be32(p + kOffNbSnapshots, h.nb_snapshots);
  store_be64(p + kOffSnapshotsOffset, h.snapshots_offset);
  if (h.version >= 3) {
    store_be64(p + kOffIncompatibleFeatures, h.incompatible_features);
    store_be64(p + kOffCompatibleFeatures, h.compatible_features);
    store_be64(p + kOffAutoclearFeatures, h.autoclear_features);
    store_be32(p + kOffRefcountOrder, h.refcount_order);
    store_be32(p + kOffHeaderLength, header_length);
    p[kOffCompressionType] = h.compression_type;
    std::copy(h.unknown_header_fields.begin(), h.unknown_header_fields.end(),
              p + kHeaderV3Length);
  }

  uint64_t off = header_length;
  bool overflow = !encode_extensions(h, out, off);
  if (off + 8 > cluster_size) overflow = true;
  off += 8;  // end-of-extensions marker: already zero
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > kMaxBackingFileSize ||
        off + h.backing_file.size() > cluster_size) {
      overflow = true;
    } else {
      store_be64(p + kOffBackingFileOffset, off);
      store_be32(p + kOffBackingFileSize, static_cast<uint32_t>(h.backing_file.size()));
      std::copy(h.backing_file.begin(), h.backing_file.end(), p + off);
    }
  }
  if (overflow) {
    return invalid_argument("header, extensions and backing file name do not fit in one "
                            "cluster of " + std::to_string(cluster_size) + " bytes");
  }
  return out;
}

std::vector<FeatureName> default_feature_names() {
  return {
      {0, 0, "dirty bit"},          {0, 1, "corrupt bit"},
      {0, 2, "external data file"}, {0, 3, "compression type"},
      {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
      {2, 0, "bitmaps"},            {2, 1, "raw external data"},
  };
}

std::string describe_features(const Header& h, uint8_t type, uint64_t bits) {
  static const char* const kTypeNames[] = {"incompatible", "compatible", "autoclear"};
  std::string out;
  // As QEMU's report_unsupported_feature: the table's names in its order, up
  // to its first entry without a name, then the bits it does not name.
  for (const FeatureName& f : h.feature_names) {
    if (f.name.empty()) break;
    if (f.type != type || f.bit >= 64 || !(bits & (uint64_t{1} << f.bit))) continue;
    if (!out.empty()) out += ", ";
    out += escape_for_display(f.name);
    bits &= ~(uint64_t{1} << f.bit);
  }
  if (bits) {
    char mask[17];
    std::snprintf(mask, sizeof mask, "%" PRIx64, bits);
    // Appends one piece at a time (GCC 12 -O3 misreports string operator+).
    if (!out.empty()) out += ", ";
    out.append("Unknown ").append(kTypeNames[type < 3 ? type : 0]).append(" feature: ");
    out.append(mask);
  }
  return out;
}

}  // namespace qdedup::qcow2
