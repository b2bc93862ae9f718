#include "dedup/granularity_estimator.h"

#include <cstring>

namespace qdedup::dedup {

GranularityEstimator::GranularityEstimator(std::span<const uint64_t> granularities,
                                           uint64_t cluster_size,
                                           std::vector<GranularityEstimate>& out)
    : out_(out) {
  for (uint64_t gr : granularities) {
    if (gr < 512 || gr >= cluster_size || (gr & (gr - 1)) != 0) continue;
    out_.push_back({gr});
    seen_.emplace_back();
  }
}

void GranularityEstimator::add(hash::HashPool& pool, std::span<const uint8_t> data) {
  for (size_t k = 0; k < out_.size(); ++k) {
    GranularityEstimate& e = out_[k];
    const size_t pieces = data.size() / e.granularity;
    digests_.resize(pieces * pool.digest_size());
    skip_.assign(pieces, 0);
    pool.hash_nonzero_chunks(data, e.granularity, digests_.data(), skip_.data(), true);
    for (size_t i = 0; i < pieces; ++i) {
      ++e.chunks;
      if (skip_[i] == hash::HashPool::kZeroChunk) {
        ++e.zero_chunks;
        continue;
      }
      uint64_t fp;
      std::memcpy(&fp, digests_.data() + i * pool.digest_size(), sizeof fp);
      if (seen_[k].insert(fp).second) ++e.distinct_chunks;
    }
  }
}

}  // namespace qdedup::dedup
