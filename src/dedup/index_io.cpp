#include "dedup/index_io.h"

#include <openssl/evp.h>

#include <array>
#include <cstring>

#include "util/endian.h"

namespace qdedup::dedup {

namespace {
constexpr uint64_t kReadChunkEntries = 16384;
constexpr uint64_t kRebuildBatchBytes = 2u << 20;
}  // namespace

Status load_index(qcow2::Image& image, const DedupExtension& ext, DedupIndex& index) {
  const qcow2::Geometry& g = image.geometry();
  QD_ASSIGN_OR_RETURN(uint64_t file_size, image.file().size());
  QD_TRY(validate_dedup_extension(ext, file_size, g.cluster_size, g.refcount_max));
  const uint64_t hs = ext.hash_size;
  const uint64_t entry_size = index_entry_size(hs);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return io_error("out of memory");
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<uint8_t> buf, prev;
  Status st;
  for (uint64_t first = 0; st && first < ext.index_entries; first += kReadChunkEntries) {
    uint64_t n = std::min(kReadChunkEntries, ext.index_entries - first);
    buf.resize(n * entry_size);
    st = image.file().read_exact(ext.index_offset + first * entry_size, buf, "dedup index");
    if (!st) break;
    EVP_DigestUpdate(ctx, buf.data(), buf.size());
    for (uint64_t i = 0; st && i < n; ++i) {
      const uint8_t* e = buf.data() + i * entry_size;
      uint64_t host = load_be64(e + hs);
      uint64_t owner = load_be64(e + hs + 8);
      auto bad = [&](const std::string& what) {
        return corruption("dedup index entry " + std::to_string(first + i) + ": " + what);
      };
      if (!prev.empty() && std::memcmp(prev.data(), e, hs) >= 0) {
        st = bad("out of order or duplicate hash");
      } else if (host == 0 || host % g.cluster_size != 0 || (host & ~qcow2::kL2eOffsetMask)) {
        st = bad("invalid host offset");
      } else if (owner >= g.guest_clusters) {
        st = bad("owner beyond the virtual disk");
      } else {
        auto rc = image.refcount(host >> g.cluster_bits);
        if (!rc) {
          st = rc.status();
        } else if (*rc == 0 || *rc >= ext.refcount_cap) {
          st = bad("cluster refcount " + std::to_string(*rc) + " outside 1.." +
                   std::to_string(ext.refcount_cap - 1));
        } else {
          st = index.insert(e, host, owner);
        }
      }
      prev.assign(e, e + hs);
    }
  }
  std::array<uint8_t, 32> sum{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, sum.data(), &len);
  EVP_MD_CTX_free(ctx);
  QD_TRY(st);
  if (sum != ext.index_checksum) return corruption("dedup index checksum mismatch");
  return Status::ok();
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
