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
    return invalid_argument("Cluster size must be a power of two between 512 and 2048k");
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
  if (!o.backing_file.empty() && o.preallocation != Preallocation::kOff && !o.extended_l2) {
    return invalid_argument("Backing file and preallocation can only be used at the same time "
                            "if extended_l2 is on");
  }
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

namespace {

// A refcount table of `clusters` clusters pointing at `refblocks` (by cluster).
std::vector<uint8_t> reftable_bytes(const std::vector<uint64_t>& refblocks, uint64_t clusters,
                                    uint64_t cs) {
  std::vector<uint8_t> table(clusters * cs, 0);
  for (uint64_t i = 0; i < refblocks.size(); ++i) {
    if (refblocks[i] != 0) store_be64(table.data() + 8 * i, refblocks[i] * cs);
  }
  return table;
}

// The refcount table and its blocks: 1 for every used cluster.
Status write_refcounts(io::File& file, const Geometry& g, const NewImageLayout& layout) {
  const uint64_t cs = g.cluster_size;
  std::vector<uint8_t> block(cs);
  for (uint64_t i = 0; i < layout.refblocks.size(); ++i) {
    if (layout.refblocks[i] == 0) continue;
    std::fill(block.begin(), block.end(), 0);
    const uint64_t first = i * g.rb_entries, end = first + g.rb_entries;
    auto it = layout.used.upper_bound(first);
    if (it != layout.used.begin()) --it;
    for (; it != layout.used.end() && it->first < end; ++it) {
      for (uint64_t c = std::max(it->first, first); c < std::min(it->second, end); ++c) {
        set_refcount_entry(block, g.refcount_order, c - first, 1);
      }
    }
    QD_TRY(file.pwrite(layout.refblocks[i] * cs, block));
  }
  return file.pwrite(layout.reftable * cs,
                     reftable_bytes(layout.refblocks, layout.reftable_clusters, cs));
}

// The L1 table and, with preallocation, the L2 tables: every guest cluster
// mapped to its host cluster (COPIED; with extended L2 entries no subcluster
// is marked allocated, as QEMU leaves them, so that they read from the
// backing file or as zeros).
Status write_tables(io::File& file, const Geometry& g, uint64_t l1_entries,
                    const NewImageLayout& layout) {
  const uint64_t cs = g.cluster_size;
  std::vector<uint8_t> l1(l1_entries * 8, 0);
  std::vector<uint8_t> l2(cs);
  auto run = layout.data.begin();
  for (uint64_t i = 0; i < layout.l2.size(); ++i) {
    store_be64(l1.data() + 8 * i, layout.l2[i] * cs | kOflagCopied);
    std::fill(l2.begin(), l2.end(), 0);
    const uint64_t first = i * g.l2_entries, end = first + g.l2_entries;
    for (; run != layout.data.end() && run->guest < end; ++run) {
      const uint64_t to = std::min(run->guest + run->count, end);
      for (uint64_t c = std::max(run->guest, first); c < to; ++c) {
        const uint64_t host = (run->host + (c - run->guest)) * cs;
        store_be64(l2.data() + (c - first) * g.l2_entry_bytes, host | kOflagCopied);
      }
      if (run->guest + run->count > end) break;  // continues in the next table
    }
    QD_TRY(file.pwrite(layout.l2[i] * cs, l2));
  }
  if (l1.empty()) return Status::ok();
  return file.pwrite(layout.l1 * cs, l1);
}

}  // namespace

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
  QD_ASSIGN_OR_RETURN(NewImageLayout layout, plan_new_image(g, h.l1_size, o.preallocation));
  h.refcount_table_offset = layout.reftable * cs;
  h.refcount_table_clusters = static_cast<uint32_t>(layout.reftable_clusters);
  h.l1_table_offset = layout.l1 * cs;

  auto encoded = encode_header(h);
  if (!encoded && !h.feature_names.empty()) {
    // Small clusters: drop the (optional) feature name table to make room.
    h.feature_names.clear();
    encoded = encode_header(h);
  }
  if (!encoded) return encoded.status();
  QD_TRY(file.truncate(0));
  QD_TRY(file.pwrite(0, *encoded));
  // Outgrown refcount tables first: what QEMU wrote later overwrites them.
  for (const NewImageLayout::OldTable& t : layout.old_tables) {
    QD_TRY(file.pwrite(t.cluster * cs, reftable_bytes(t.refblocks, t.clusters, cs)));
  }
  QD_TRY(write_refcounts(file, g, layout));
  QD_TRY(write_tables(file, g, h.l1_size, layout));
  for (const NewImageLayout::DataRun& run : layout.data) {
    if (o.preallocation == Preallocation::kFalloc) {
      QD_TRY(file.allocate(run.host * cs, run.count * cs));
    } else if (o.preallocation == Preallocation::kFull) {
      QD_TRY(io::write_zeros(file, run.host * cs, run.count * cs));  // as QEMU's file driver
    }
  }
  QD_TRY(file.truncate(layout.file_size));
  if (layout.zero_tail_bytes != 0) {
    QD_TRY(io::write_zeros(file, layout.zero_tail_offset, layout.zero_tail_bytes));
  }
  return file.flush();
}

}  // namespace qdedup::qcow2
