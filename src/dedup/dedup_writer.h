// Deduplicating writes into a qcow2 image: the one place that decides whether
// a guest cluster is linked to an existing host cluster or stored anew, and
// that writes the hash index and the dedup extension at the end.
//
// Used by convert; dedup-offline will drive the same class.
#pragma once

#include <memory>
#include <span>

#include "dedup/extension.h"
#include "hash/hash.h"
#include "dedup/index.h"
#include "qcow2/image.h"

namespace qdedup::dedup {

struct DedupConfig {
  hash::HashAlgorithm algorithm = hash::HashAlgorithm::kSha256;
  bool verify = false;        // compare bytes before sharing
  uint64_t refcount_cap = 0;  // 0: the refcount width's maximum
};

class DedupWriter {
 public:
  // `scratch` holds the index's records (full hashes) while writing.
  DedupWriter(qcow2::Image& image, const DedupConfig& config, std::unique_ptr<io::File> scratch);

  // Stores one whole guest cluster with hash `hash` (digest_size bytes).
  Status put(uint64_t guest_cluster, std::span<const uint8_t> data, const uint8_t* hash);
  // Counts a guest cluster written without deduplication because the source
  // ended inside it.
  void note_partial_cluster() { ++counters_.partial_cluster_reads; }

  // Closes the image's write path, writes the index past the end of the file,
  // the dedup extension into the header, and sets the autoclear bit.
  Status finish();

  // For an image that already has an index (loaded or rebuilt into index()):
  // call before changing `guest_cluster`, so that an entry whose cluster is
  // about to be overwritten in place or freed leaves the index.
  Status forget(uint64_t guest_cluster);
  // Lifetime counters carried over from the image's extension.
  void set_counters(const DedupCounters& c) { counters_ = c; }

  const DedupCounters& counters() const { return counters_; }
  const DedupIndex& index() const { return index_; }
  DedupIndex& mutable_index() { return index_; }
  uint64_t refcount_cap() const { return cap_; }

 private:
  Status store_new(uint64_t guest_cluster, std::span<const uint8_t> data, const uint8_t* hash);
  Result<bool> same_bytes(uint64_t host_offset, std::span<const uint8_t> data);
  Status write_index(DedupExtension& ext);

  qcow2::Image& image_;
  DedupConfig config_;
  uint64_t cap_;
  DedupIndex index_;
  DedupCounters counters_;
  std::vector<uint8_t> verify_buf_;
  std::unique_ptr<hash::Hasher> hasher_;  // for forget(): one cluster at a time
};

}  // namespace qdedup::dedup
