// What the data dedup-offline reads would dedup to at smaller cluster sizes
// (--dry-run): every batch of clusters is also hashed in pieces of each
// granularity, and the distinct non-zero pieces are counted by a 64-bit
// fingerprint (the digest's first bytes).
//
// Thread safety: none (the caller's thread; hashing runs on the pool).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_set>
#include <vector>

#include "dedup/offline.h"
#include "hash/hash_pool.h"

namespace qdedup::dedup {

class GranularityEstimator {
 public:
  // One estimate in `out` for each of `granularities` that is a power of two
  // of at least 512 bytes and below `cluster_size` (others are ignored).
  // `out` must outlive the estimator.
  GranularityEstimator(std::span<const uint64_t> granularities, uint64_t cluster_size,
                       std::vector<GranularityEstimate>& out);

  // Hashes `data` (whole clusters) in pieces for each estimate.
  void add(hash::HashPool& pool, std::span<const uint8_t> data);

 private:
  std::vector<GranularityEstimate>& out_;
  std::vector<std::unordered_set<uint64_t>> seen_;  // fingerprints, per estimate
  std::vector<uint8_t> digests_, skip_;
};

}  // namespace qdedup::dedup
