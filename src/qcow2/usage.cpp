#include "qcow2/usage.h"

#include <algorithm>
#include <queue>

#include "qcow2/bitmap.h"
#include "qcow2/format.h"
#include "util/endian.h"

namespace qdedup::qcow2 {

namespace {

uint64_t clusters_for(uint64_t bytes, uint64_t cluster_size) {
  return (bytes + cluster_size - 1) / cluster_size;
}

// Bytes of the whole clusters [offset, offset + bytes) touches.
uint64_t spanned_bytes(uint64_t offset, uint64_t bytes, uint64_t cluster_size) {
  if (bytes == 0) return 0;
  const uint64_t first = offset / cluster_size;
  const uint64_t last = (offset + bytes - 1) / cluster_size;
  return (last - first + 1) * cluster_size;
}

// The persistent bitmaps' clusters, counted as check counts them (nothing
// when QEMU would ignore them: autoclear bit 0 clear).
Result<uint64_t> bitmap_bytes(io::File& file, const CheckAnalysis& a) {
  const Header& h = a.header;
  const uint64_t cs = a.g.cluster_size;
  if (!h.bitmaps_ext || !(h.autoclear_features & kAutoclearBitmaps)) return 0;
  auto ext = decode_bitmaps_extension(*h.bitmaps_ext);
  if (!ext || ext->nb_bitmaps == 0) return 0;
  const uint64_t dir_offset = ext->bitmap_directory_offset;
  const uint64_t dir_size = ext->bitmap_directory_size;
  if (dir_size > (64ull << 20) || dir_offset > a.file_size || dir_size > a.file_size - dir_offset) {
    return 0;  // check reports it; nothing there to count
  }
  uint64_t bytes = spanned_bytes(dir_offset, dir_size, cs);
  std::vector<uint8_t> dir(dir_size);
  QD_TRY(file.read_or_zero(dir_offset, dir));
  for (const BitmapDirectoryEntry& e : decode_bitmap_directory(dir, ext->nb_bitmaps)) {
    const uint64_t table_bytes = uint64_t{e.bitmap_table_size} * 8;
    if (e.bitmap_table_offset % cs != 0 || e.bitmap_table_offset > a.file_size ||
        table_bytes > a.file_size - e.bitmap_table_offset) {
      continue;
    }
    bytes += clusters_for(table_bytes, cs) * cs;
    std::vector<uint8_t> table(table_bytes);
    QD_TRY(file.read_or_zero(e.bitmap_table_offset, table));
    for (uint32_t i = 0; i < e.bitmap_table_size; ++i) {
      const uint64_t entry = load_be64(table.data() + 8 * i);
      if (bitmap_table_entry_valid(entry, cs) && bitmap_table_entry_offset(entry) != 0) bytes += cs;
    }
  }
  return bytes;
}

std::vector<RefcountBucket> empty_histogram(uint64_t cap) {
  std::vector<RefcountBucket> h;
  // Powers of two below the cap (at most 64 of them: 2^63 doubled is 0).
  for (uint64_t le = 1; le < cap; le *= 2) {
    h.push_back({le, 0});
    if (le > cap / 2) break;
  }
  h.push_back({cap, 0});
  return h;
}

void count_in_histogram(std::vector<RefcountBucket>& h, uint64_t references) {
  // Buckets are 1, 2, 4, ...: the first whose le is at least `references`;
  // counts above the cap (an image at fault) go into the last one.
  for (RefcountBucket& b : h) {
    if (references <= b.le) {
      ++b.clusters;
      return;
    }
  }
  ++h.back().clusters;
}

bool single_byte(std::span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [&](uint8_t b) { return b == bytes.front(); });
}

// The `n` data host clusters with the most references (more than 1), offered
// one by one: a min-heap of the best n so far (ties: the lower cluster wins).
class MostShared {
 public:
  explicit MostShared(unsigned n) : n_(n) {}

  void offer(uint64_t references, uint64_t cluster) {
    if (n_ == 0 || references < 2) return;
    best_.push({references, cluster});
    if (best_.size() > n_) best_.pop();
  }

  // Most first.
  std::vector<SharedCluster> take(const CheckAnalysis& a, const MappingTally& m) {
    std::vector<SharedCluster> out;
    for (; !best_.empty(); best_.pop()) {
      const auto [refs, c] = best_.top();
      out.push_back({c << a.g.cluster_bits, refs, static_cast<bool>(m.compressed[c]), std::nullopt});
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

 private:
  using Candidate = std::pair<uint64_t, uint64_t>;  // references, cluster
  struct Worse {
    bool operator()(const Candidate& x, const Candidate& y) const {
      return x.first != y.first ? x.first > y.first : x.second < y.second;
    }
  };
  unsigned n_;
  std::priority_queue<Candidate, std::vector<Candidate>, Worse> best_;
};

}  // namespace

Result<Usage> measure_usage(io::File& file, CheckAnalysis& a, const UsageOptions& o) {
  const Geometry& g = a.g;
  const uint64_t cs = g.cluster_size;
  if (!a.mappings) return invalid_argument("measure_usage: the analysis has no mapping tally");
  const MappingTally& m = *a.mappings;
  // An L1 table larger than the file is refused (check counts it as a finding).
  const Header& h = a.header;
  auto too_big = [&](uint64_t entries) { return entries * 8 > a.file_size; };
  if (too_big(h.l1_size)) return corruption("the active L1 table is larger than the file");
  for (const Snapshot& s : a.snapshots) {
    if (too_big(s.l1_size)) return corruption("the L1 table of snapshot '" + s.id + "' is larger than the file");
  }
  if (!m.unwalkable.empty()) return corruption(m.unwalkable);

  Usage u;
  u.cluster_size = cs;
  u.virtual_size = g.virtual_size;
  u.file_size = a.file_size;
  const uint64_t cap = o.refcount_cap ? std::min(o.refcount_cap, g.refcount_max) : g.refcount_max;
  u.active_data_clusters = m.active_data;
  u.active_compressed_clusters = m.active_compressed;
  u.active_zero_clusters = m.active_zero;
  u.snapshot_mapped_clusters = m.snapshot_mapped;
  // Distinct targets: the host clusters of the normal entries plus the
  // distinct compressed descriptors.
  std::vector<uint64_t> descriptors = m.active_descriptors;
  std::sort(descriptors.begin(), descriptors.end());
  u.active_distinct_targets =
      m.active_normal_targets +
      static_cast<uint64_t>(std::unique(descriptors.begin(), descriptors.end()) - descriptors.begin());
  u.l2_bytes = m.l2_tables * cs;
  u.free_clusters = a.free_clusters;

  u.histogram = empty_histogram(cap);
  MostShared top(o.most_shared);
  const RefcountArray& computed = a.computed;
  for (uint64_t c = 0, n = m.data.size(); c < n; ++c) {
    if (!m.data[c]) continue;
    const uint64_t refs = computed.get(c);
    if (refs == 0) {
      // Data the check could not count (a compressed entry it rejects): not
      // free, though nothing counted and the stored refcount may be 0.
      std::optional<uint64_t> stored = a.stored_refcount(file, c);
      if (stored && *stored == 0 && u.free_clusters > 0) --u.free_clusters;
    }
    ++u.host_data_clusters;
    if (m.compressed[c]) ++u.host_compressed_clusters;
    if (!m.active[c]) ++u.snapshot_only_host_clusters;
    if (refs > 1) ++u.shared_host_clusters;
    if (refs >= cap) ++u.clusters_at_cap;
    u.total_references += refs;
    count_in_histogram(u.histogram, refs);
    top.offer(refs, c);
  }

  u.most_shared = top.take(a, m);
  std::vector<uint8_t> buf(cs);
  for (SharedCluster& s : u.most_shared) {
    if (s.compressed) continue;
    QD_TRY(file.read_or_zero(s.host_offset, buf));
    if (single_byte(buf)) s.repeated_byte = buf.front();
  }

  u.header_bytes = cs;
  u.l1_bytes = clusters_for(uint64_t{h.l1_size} * 8, cs) * cs;
  for (const Snapshot& s : a.snapshots) u.l1_bytes += clusters_for(uint64_t{s.l1_size} * 8, cs) * cs;
  uint64_t blocks = 0;
  for (uint64_t e : a.reftable) blocks += (e & kReftOffsetMask) != 0 ? 1 : 0;
  u.refcount_bytes = (uint64_t{h.refcount_table_clusters} + blocks) * cs;
  if (h.nb_snapshots) u.snapshot_table_bytes = spanned_bytes(h.snapshots_offset, a.snapshot_table_bytes, cs);
  QD_ASSIGN_OR_RETURN(u.bitmap_bytes, bitmap_bytes(file, a));
  return u;
}

}  // namespace qdedup::qcow2
