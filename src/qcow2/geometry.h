// Geometry derived from a validated header (QEMU keeps the same apart from
// QCowHeader in BDRVQcow2State), and the decoding of L1/L2 entries.
#pragma once

#include <cstdint>

#include "qcow2/format.h"
#include "qcow2/header.h"
#include "util/status.h"

namespace qdedup::qcow2 {

struct Geometry {
  uint32_t version = 3;
  uint32_t cluster_bits = 16;
  uint64_t cluster_size = 65536;
  bool extended_l2 = false;
  uint32_t l2_entry_bytes = 8;  // 16 with extended L2 entries
  uint64_t l2_entries = 8192;   // entries per L2 table (one cluster)
  uint32_t l2_bits = 13;
  uint32_t refcount_order = 4;
  uint32_t refcount_bits = 16;
  uint64_t refcount_max = 0xffff;
  uint64_t rb_entries = 32768;  // refcounts per refcount block
  uint32_t rb_bits = 15;
  uint64_t virtual_size = 0;
  uint64_t guest_clusters = 0;  // ceil(virtual_size / cluster_size)
  // Compressed cluster descriptors ("Compressed Clusters Descriptor").
  uint32_t csize_shift = 54;
  uint64_t csize_mask = 0xff;
  uint64_t cluster_offset_mask = (1ull << 54) - 1;

  static Geometry from_header(const Header& h);

  uint64_t bytes_per_l2() const { return cluster_size * l2_entries; }
  uint64_t l1_index(uint64_t guest_cluster) const { return guest_cluster >> l2_bits; }
  uint64_t l2_index(uint64_t guest_cluster) const { return guest_cluster & (l2_entries - 1); }
  uint64_t cluster_of(uint64_t host_offset) const { return host_offset >> cluster_bits; }
  // L1 entries needed to map `size` guest bytes.
  uint64_t l1_entries_for(uint64_t size) const;
};

// Cluster types of the spec's "Cluster mapping" section, with QEMU's names
// (qcow2_get_cluster_type: QCOW2_CLUSTER_UNALLOCATED, ..._ZERO_PLAIN,
// ..._ZERO_ALLOC, ..._NORMAL, ..._COMPRESSED).
enum class ClusterType {
  kUnallocated,  // falls through to the backing file
  kZeroPlain,    // reads as zeros, no host cluster
  kZeroAlloc,    // reads as zeros, host cluster preallocated
  kNormal,       // data at host_offset
  kCompressed,   // compressed data, see CompressedRange
};

// One L2 entry as stored (bitmap is 0 for standard entries).
struct L2Entry {
  uint64_t word = 0;
  uint64_t bitmap = 0;

  bool copied() const { return (word & kOflagCopied) != 0; }
  bool compressed() const { return (word & kOflagCompressed) != 0; }
  // Bit 0: the zero flag of a standard entry (reserved with extended L2).
  bool zero_flag() const { return (word & kOflagZero) != 0; }
  uint64_t host_offset() const { return word & kL2eOffsetMask; }
  // The entry's type as QEMU's qcow2_get_cluster_type() gives it, which is
  // what `check` judges: with extended L2 entries the zero flag is not used
  // (zeros live in the subcluster bitmap) and offset 0 is unallocated.
  // Inline: the check classifies every entry of every table.
  ClusterType cluster_type(const Geometry& g) const {
    if (compressed()) return ClusterType::kCompressed;
    const bool allocated = host_offset() != 0;
    if (zero_flag() && !g.extended_l2) {
      return allocated ? ClusterType::kZeroAlloc : ClusterType::kZeroPlain;
    }
    return allocated ? ClusterType::kNormal : ClusterType::kUnallocated;
  }
  // What the whole cluster reads as: cluster_type(), except that an extended
  // entry without a host cluster whose every subcluster is zero is kZeroPlain.
  ClusterType type(const Geometry& g) const;
};

// The entry of a guest cluster that reads as zeros without a host cluster:
// an all-zero subcluster bitmap (extended L2), the zero flag (v3), or, in v2,
// which has neither, unallocated (which reads from the backing file, if any).
L2Entry zero_entry(const Geometry& g);
// The entry of a data cluster shared by several entries (refcount above 1,
// so never COPIED).
L2Entry shared_entry(const Geometry& g, uint64_t host_offset);

// Where a compressed cluster's bytes lie in the file.
struct CompressedRange {
  uint64_t offset = 0;  // byte offset, not aligned
  uint64_t length = 0;  // bytes that may hold the compressed stream
};
CompressedRange compressed_range(const Geometry& g, const L2Entry& e);
// Encodes a compressed descriptor for `length` bytes at `offset`.
uint64_t encode_compressed_entry(const Geometry& g, uint64_t offset, uint64_t length);

// The host clusters an entry holds references to: [first, last], or none
// (a compressed stream counts one reference on every cluster it touches).
struct HeldClusters {
  uint64_t first = 1, last = 0;
  bool empty() const { return first > last; }
};
// Corruption for a compressed descriptor whose bytes lie beyond any file.
Result<HeldClusters> held_clusters(const Geometry& g, const L2Entry& e);

// Extended L2 subcluster bitmap halves.
inline constexpr uint64_t kBitmapAllAllocated = 0x00000000ffffffffull;
inline constexpr uint64_t kBitmapAllZero = 0xffffffff00000000ull;

}  // namespace qdedup::qcow2
