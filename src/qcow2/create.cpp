#include "qcow2/create.h"

#include <vector>

#include "qcow2/format.h"
#include "qcow2/geometry.h"
#include "qcow2/refcount.h"
#include "util/endian.h"
#include "util/size.h"

namespace qdedup::qcow2 {

Status validate_create_options(const CreateOptions& o) {
  if (o.cluster_bits < kMinClusterBits || o.cluster_bits > kMaxClusterBits) {
    return invalid_argument("cluster size must be a power of two between 512 and 2048k");
  }
  if (o.refcount_order > kMaxRefcountOrder) {
    return invalid_argument("refcount_bits must be a power of two up to 64");
  }
  if (o.version == 2) {
    if (o.refcount_order != 4) {
      return invalid_argument("different refcount widths than 16 bits require compat=1.1 or above");
    }
    if (o.lazy_refcounts) return invalid_argument("lazy refcounts only supported with compatibility level 1.1 and above");
    if (o.extended_l2) return invalid_argument("extended L2 entries are only supported with compatibility level 1.1 and above");
    if (o.compression_type != kCompressionZlib) {
      return invalid_argument("compression_type requires compatibility level 1.1 or above");
    }
  }
  if (o.extended_l2 && o.cluster_bits < 14) {
    return invalid_argument("extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  if (!o.backing_file.empty() && o.backing_format.empty()) {
    return invalid_argument("backing file specified without backing format (use -F)");
  }
  if (o.backing_file.empty() && !o.backing_format.empty()) {
    return invalid_argument("backing format specified without a backing file");
  }
  if (o.backing_file.size() > kMaxBackingFileSize) {
    return invalid_argument("backing file name too long");
  }
  if (o.backing_format.size() >= 16) return invalid_argument("backing format name too long");
  Header h;
  h.cluster_bits = o.cluster_bits;
  h.incompatible_features = o.extended_l2 ? kIncompatExtendedL2 : 0;
  Geometry g = Geometry::from_header(h);
  if (o.size > kMaxFileOffset || g.l1_entries_for(o.size) > kMaxL1Entries) {
    return invalid_argument("the image size is too large for file format 'qcow2' "
                            "(try using a larger cluster size)");
  }
  return Status::ok();
}

Status create_image(io::File& file, const CreateOptions& o) {
  QD_TRY(validate_create_options(o));
  Header h;
  h.version = o.version;
  h.cluster_bits = o.cluster_bits;
  (void)align_up(o.size, 512, &h.size);
  h.refcount_order = o.refcount_order;
  if (o.version >= 3) {
    if (o.lazy_refcounts) h.compatible_features |= kCompatLazyRefcounts;
    if (o.extended_l2) h.incompatible_features |= kIncompatExtendedL2;
    h.compression_type = o.compression_type;
    if (o.compression_type != kCompressionZlib) h.incompatible_features |= kIncompatCompression;
    // QEMU writes its feature name table only where cluster 0 has room.
    if ((uint64_t{1} << o.cluster_bits) > 4096) h.feature_names = default_feature_names();
    h.unknown_extensions = o.extensions;
    h.autoclear_features = o.autoclear_features;
    if (!o.extra_feature_names.empty()) {
      if (h.feature_names.empty()) h.feature_names = default_feature_names();
      for (const auto& f : o.extra_feature_names) h.feature_names.push_back(f);
    }
  }
  if (!o.backing_file.empty()) {
    h.backing_file = o.backing_file;
    h.backing_format = o.backing_format;
  }
  Geometry g = Geometry::from_header(h);
  const uint64_t cs = g.cluster_size;
  h.l1_size = static_cast<uint32_t>(g.l1_entries_for(h.size));
  uint64_t l1_clusters = div_round_up(uint64_t{h.l1_size} * 8, cs);
  // Layout: header | refcount table | refcount blocks | L1. Find the smallest
  // table and block counts that describe every cluster, themselves included.
  RefcountLayout layout = refcount_layout(g, 0, 1 + std::max<uint64_t>(l1_clusters, 1), 0);
  const uint64_t rt = layout.table_clusters, rb = layout.blocks;
  if (rt * cs > kMaxReftableBytes) return invalid_argument("image too large for its refcount table");
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = static_cast<uint32_t>(rt);
  uint64_t rb_offset = (1 + rt) * cs;
  h.l1_table_offset = rb_offset + rb * cs;
  uint64_t used_clusters = 1 + rt + rb + l1_clusters;

  auto encoded = encode_header(h);
  if (!encoded && !h.feature_names.empty()) {
    // Small clusters: drop the (optional) feature name table to make room.
    h.feature_names.clear();
    encoded = encode_header(h);
  }
  if (!encoded) return encoded.status();
  std::vector<uint8_t> cluster0 = std::move(encoded).value();
  QD_TRY(file.truncate(0));
  QD_TRY(file.pwrite(0, cluster0));
  std::vector<uint8_t> table(rt * cs, 0);
  for (uint64_t i = 0; i < rb; ++i) store_be64(table.data() + 8 * i, rb_offset + i * cs);
  QD_TRY(file.pwrite(cs, table));
  std::vector<uint8_t> blocks(rb * cs, 0);
  for (uint64_t c = 0; c < used_clusters; ++c) {
    std::span<uint8_t> block(blocks.data() + (c / g.rb_entries) * cs, cs);
    set_refcount_entry(block, h.refcount_order, c % g.rb_entries, 1);
  }
  QD_TRY(file.pwrite(rb_offset, blocks));
  // The L1 table is all zeros; the file ends right after it, as QEMU's does.
  std::vector<uint8_t> l1(uint64_t{h.l1_size} * 8, 0);
  if (!l1.empty()) {
    QD_TRY(file.pwrite(h.l1_table_offset, l1));
  } else {
    QD_TRY(file.truncate(h.l1_table_offset));
  }
  return file.flush();
}

}  // namespace qdedup::qcow2
