#include "qcow2/geometry.h"

#include "util/size.h"
#include "util/text.h"

namespace qdedup::qcow2 {

Geometry Geometry::from_header(const Header& h) {
  Geometry g;
  g.version = h.version;
  g.cluster_bits = h.cluster_bits;
  g.cluster_size = uint64_t{1} << h.cluster_bits;
  g.extended_l2 = (h.incompatible_features & kIncompatExtendedL2) != 0;
  g.l2_entry_bytes = g.extended_l2 ? 16 : 8;
  g.l2_bits = h.cluster_bits - (g.extended_l2 ? 4 : 3);
  g.l2_entries = uint64_t{1} << g.l2_bits;
  g.refcount_order = h.refcount_order;
  g.refcount_bits = 1u << h.refcount_order;
  g.refcount_max = g.refcount_bits == 64 ? UINT64_MAX : (uint64_t{1} << g.refcount_bits) - 1;
  g.rb_bits = h.cluster_bits + 3 - h.refcount_order;
  g.rb_entries = uint64_t{1} << g.rb_bits;
  g.virtual_size = h.size;
  g.guest_clusters = div_round_up(h.size, g.cluster_size);
  g.csize_shift = 62 - (h.cluster_bits - 8);
  g.csize_mask = (uint64_t{1} << (h.cluster_bits - 8)) - 1;
  g.cluster_offset_mask = (uint64_t{1} << g.csize_shift) - 1;
  return g;
}

uint64_t Geometry::l1_entries_for(uint64_t size) const {
  return div_round_up(size, bytes_per_l2());
}

ClusterType L2Entry::type(const Geometry& g) const {
  ClusterType t = cluster_type(g);
  if (t == ClusterType::kUnallocated && g.extended_l2 && (bitmap >> 32) == 0xffffffffu) {
    return ClusterType::kZeroPlain;
  }
  return t;
}

L2Entry zero_entry(const Geometry& g) {
  L2Entry z;
  if (g.extended_l2) {
    z.bitmap = kBitmapAllZero;
  } else if (g.version >= 3) {
    z.word = kOflagZero;
  }
  return z;
}

L2Entry shared_entry(const Geometry& g, uint64_t host_offset) {
  return L2Entry{host_offset, g.extended_l2 ? kBitmapAllAllocated : 0};
}

CompressedRange compressed_range(const Geometry& g, const L2Entry& e) {
  CompressedRange r;
  r.offset = e.word & g.cluster_offset_mask;
  uint64_t sectors = ((e.word >> g.csize_shift) & g.csize_mask) + 1;
  r.length = sectors * 512 - (r.offset & 511);
  return r;
}

Result<HeldClusters> held_clusters(const Geometry& g, const L2Entry& e) {
  switch (e.type(g)) {
    case ClusterType::kNormal:
    case ClusterType::kZeroAlloc:
      return HeldClusters{e.host_offset() >> g.cluster_bits, e.host_offset() >> g.cluster_bits};
    case ClusterType::kCompressed: {
      CompressedRange r = compressed_range(g, e);
      if (r.length == 0 || r.offset + r.length > kMaxFileOffset) {
        return corruption("compressed cluster descriptor " + hex(e.word) + " out of range");
      }
      return HeldClusters{r.offset >> g.cluster_bits, (r.offset + r.length - 1) >> g.cluster_bits};
    }
    default:
      return HeldClusters{};
  }
}

uint64_t encode_compressed_entry(const Geometry& g, uint64_t offset, uint64_t length) {
  uint64_t extra_sectors = (offset + length - 1) / 512 - offset / 512;
  return kOflagCompressed | (extra_sectors << g.csize_shift) | offset;
}

}  // namespace qdedup::qcow2
