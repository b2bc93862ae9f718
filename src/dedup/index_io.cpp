#include "dedup/index_io.h"

#include "dedup/index_entry.h"
#include "hash/sha256.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "dedup/index_reader.h"

namespace qdedup::dedup {

namespace {

constexpr uint64_t kRebuildBatchBytes = 2u << 20;

// load_index's checks: the first bad entry ends the load.
class IndexLoader final : public IndexVisitor {
 public:
  IndexLoader(qcow2::Image& image, const DedupExtension& ext, DedupIndex& index)
      : image_(image), g_(image.geometry()), cap_(ext.refcount_cap), index_(index) {}

  Status misordered(uint64_t n, const StoredIndexEntry&, int) override {
    return bad(n, "out of order or duplicate hash");
  }
  Status entry(uint64_t n, const StoredIndexEntry& e) override {
    if (!index_host_offset_ok(e.host_offset, g_.cluster_size)) return bad(n, "invalid host offset");
    if (e.owner_guest_cluster >= g_.guest_clusters) return bad(n, "owner beyond the virtual disk");
    QD_ASSIGN_OR_RETURN(uint64_t rc, image_.refcount(e.host_offset >> g_.cluster_bits));
    if (rc == 0 || rc >= cap_) {
      return bad(
          n, "cluster refcount " + std::to_string(rc) + " outside 1.." + std::to_string(cap_ - 1));
    }
    return index_.insert(e.hash.data(), e.host_offset, e.owner_guest_cluster);
  }
  Status checksum_mismatch() override { return corruption("dedup index checksum mismatch"); }

 private:
  static Status bad(uint64_t n, const std::string& what) {
    return corruption("dedup index entry " + std::to_string(n) + ": " + what);
  }

  qcow2::Image& image_;
  const qcow2::Geometry& g_;
  const uint64_t cap_;
  DedupIndex& index_;
};

}  // namespace

Status load_index(qcow2::Image& image, const DedupExtension& ext, DedupIndex& index) {
  const qcow2::Geometry& g = image.geometry();
  QD_ASSIGN_OR_RETURN(uint64_t file_size, image.file().size());
  QD_TRY(validate_dedup_extension(ext, file_size, g.cluster_size, g.refcount_max));
  IndexLoader loader(image, ext, index);
  return read_index(image.file(), ext, loader);
}

Result<WrittenIndex> write_index_entries(io::File& file, uint64_t offset, DedupIndex& index,
                                         const IndexFilter& keep) {
  constexpr size_t kWriteBytes = 1u << 20;
  QD_ASSIGN_OR_RETURN(hash::Sha256 sum, hash::Sha256::create());
  const size_t hs = index.hash_size();
  WrittenIndex w;
  std::vector<uint8_t> buf;
  buf.reserve(kWriteBytes);
  auto emit = [&]() -> Status {
    sum.update(buf);
    QD_TRY(file.pwrite(offset + w.bytes, buf));
    w.bytes += buf.size();
    buf.clear();
    return Status::ok();
  };
  QD_TRY(index.for_each_sorted([&](const uint8_t* hash, const IndexEntry& e) -> Status {
    QD_ASSIGN_OR_RETURN(bool wanted, keep(e));
    if (!wanted) return Status::ok();
    encode_index_entry({{hash, hs}, e.host_offset, e.owner_guest_cluster}, buf);
    ++w.entries;
    return buf.size() >= kWriteBytes ? emit() : Status::ok();
  }));
  if (!buf.empty()) QD_TRY(emit());
  sum.final(w.checksum.data());
  QD_TRY(file.flush());
  return w;
}

Status rebuild_index(qcow2::Image& image, hash::HashPool& pool, uint64_t refcount_cap,
                     DedupIndex& index) {
  const qcow2::Geometry& g = image.geometry();
  const uint64_t cs = g.cluster_size;
  const uint64_t per_batch = std::max<uint64_t>(kRebuildBatchBytes / cs, 1);
  std::vector<uint8_t> data(per_batch * cs), digests(per_batch * pool.digest_size());
  std::vector<std::pair<uint64_t, uint64_t>> batch;  // guest cluster, host offset
  auto flush_batch = [&]() -> Status {
    if (batch.empty()) return Status::ok();
    pool.hash_chunks(std::span<const uint8_t>(data.data(), batch.size() * cs), cs, digests.data());
    for (size_t k = 0; k < batch.size(); ++k) {
      const uint8_t* h = digests.data() + k * pool.digest_size();
      QD_ASSIGN_OR_RETURN(auto hit, index.find(h));
      if (!hit) QD_TRY(index.insert(h, batch[k].second, batch[k].first));
    }
    batch.clear();
    return Status::ok();
  };
  for (uint64_t gc = 0; gc < g.guest_clusters; ++gc) {
    QD_ASSIGN_OR_RETURN(qcow2::L2Entry e, image.l2_entry(gc));
    if (e.type(g) != qcow2::ClusterType::kNormal) continue;
    if (g.extended_l2 && (e.bitmap & qcow2::kBitmapAllAllocated) != qcow2::kBitmapAllAllocated) {
      continue;  // partly allocated: not a whole-cluster dedup target
    }
    uint64_t host = e.host_offset();
    if (host % cs != 0) return corruption("L2 entry for guest cluster " + std::to_string(gc) + " is unaligned");
    QD_ASSIGN_OR_RETURN(uint64_t rc, image.refcount(host >> g.cluster_bits));
    if (rc == 0 || rc >= refcount_cap) continue;
    QD_TRY(image.file().read_or_zero(host, std::span<uint8_t>(data.data() + batch.size() * cs, cs)));
    batch.emplace_back(gc, host);
    if (batch.size() == per_batch) QD_TRY(flush_batch());
  }
  return flush_batch();
}

}  // namespace qdedup::dedup
