#include "dedup/dedup_writer.h"

#include <algorithm>
#include <cstring>
#include <ctime>

#include "dedup/index_entry.h"
#include "dedup/index_io.h"
#include "hash/sha256.h"

namespace qdedup::dedup {

DedupWriter::DedupWriter(qcow2::Image& image, const DedupConfig& config,
                         std::unique_ptr<io::File> scratch)
    : image_(image),
      config_(config),
      cap_(config.refcount_cap ? std::min(config.refcount_cap, image.geometry().refcount_max)
                               : image.geometry().refcount_max),
      index_(std::move(scratch), hash::digest_size(config.algorithm)),
      hasher_(hash::make_hasher(config.algorithm)) {}

Status DedupWriter::forget(uint64_t guest_cluster) {
  QD_ASSIGN_OR_RETURN(qcow2::L2Entry e, image_.l2_entry(guest_cluster));
  if (e.type(image_.geometry()) != qcow2::ClusterType::kNormal) return Status::ok();
  const uint64_t host = e.host_offset();
  QD_ASSIGN_OR_RETURN(uint64_t rc,
                      image_.refcount_after_flush(host >> image_.geometry().cluster_bits));
  if (rc > 1) return Status::ok();  // still shared after this write: content stays
  verify_buf_.resize(image_.geometry().cluster_size);
  QD_TRY(image_.file().read_or_zero(host, verify_buf_));
  uint8_t h[hash::kMaxDigestSize];
  hasher_->hash(verify_buf_, h);
  QD_ASSIGN_OR_RETURN(std::optional<IndexEntry> hit, index_.find(h));
  if (hit && hit->host_offset == host) {
    QD_TRY(index_.remove(h));
    ++counters_.index_entries_removed;
  }
  return Status::ok();
}

Status DedupWriter::store_new(uint64_t guest_cluster, std::span<const uint8_t> data,
                              const uint8_t* hash) {
  QD_TRY(image_.write_cluster(guest_cluster, data));
  QD_ASSIGN_OR_RETURN(qcow2::L2Entry e, image_.l2_entry(guest_cluster));
  QD_TRY(index_.insert(hash, e.host_offset(), guest_cluster));
  ++counters_.clusters_stored_unique;
  ++counters_.index_entries_added;
  return Status::ok();
}

Result<bool> DedupWriter::same_bytes(uint64_t host_offset, std::span<const uint8_t> data) {
  verify_buf_.resize(data.size());
  QD_TRY(image_.file().read_exact(host_offset, verify_buf_, "deduplicated cluster"));
  return std::memcmp(verify_buf_.data(), data.data(), data.size()) == 0;
}

Status DedupWriter::put(uint64_t guest_cluster, std::span<const uint8_t> data, const uint8_t* hash) {
  QD_ASSIGN_OR_RETURN(std::optional<IndexEntry> hit, index_.find(hash));
  if (!hit) return store_new(guest_cluster, data, hash);
  const uint64_t target = hit->host_offset >> image_.geometry().cluster_bits;
  QD_ASSIGN_OR_RETURN(uint64_t live, image_.refcount_after_flush(target));
  if (live == 0) {
    // The cluster is being freed: the entry is stale.
    ++counters_.index_entries_removed;
    return store_new(guest_cluster, data, hash);
  }
  QD_ASSIGN_OR_RETURN(uint64_t rc, image_.refcount(target));
  if (rc >= cap_) {
    // The target is full: this copy is stored and becomes the new target.
    ++counters_.refcount_cap_overflows;
    ++counters_.index_entries_removed;
    return store_new(guest_cluster, data, hash);
  }
  if (config_.verify) {
    QD_ASSIGN_OR_RETURN(bool same, same_bytes(hit->host_offset, data));
    if (!same) {
      // A hash collision: keep the indexed cluster, store this one unshared.
      QD_TRY(image_.write_cluster(guest_cluster, data));
      ++counters_.clusters_stored_unique;
      return Status::ok();
    }
  }
  if (live == 1) {
    // Sharing an owned cluster needs its owner; an owner recorded earlier may
    // have been rewritten since. Then this copy is stored and replaces it.
    QD_ASSIGN_OR_RETURN(qcow2::L2Entry owner, image_.l2_entry(hit->owner_guest_cluster));
    if (owner.type(image_.geometry()) != qcow2::ClusterType::kNormal ||
        owner.host_offset() != hit->host_offset) {
      ++counters_.index_entries_removed;
      return store_new(guest_cluster, data, hash);
    }
  }
  QD_TRY(image_.link_cluster(guest_cluster, hit->host_offset, hit->owner_guest_cluster));
  ++counters_.clusters_deduplicated;
  return Status::ok();
}

// The index (docs/format.md, section 5): entries sorted by hash, written in
// 1 MiB pieces into clusters past the end of the file; not refcounted.
Status DedupWriter::write_index(DedupExtension& ext) {
  QD_ASSIGN_OR_RETURN(uint64_t offset, image_.end_of_file_cluster());
  auto keep = [this](const IndexEntry& e) -> Result<bool> {
    if (e.owner_guest_cluster & kOwnerNotActive) return false;  // no active owner
    if (e.host_offset & kKeeperCompressed) return false;        // not in the entry format
    QD_ASSIGN_OR_RETURN(uint64_t rc, image_.refcount(e.host_offset >> image_.geometry().cluster_bits));
    return rc != 0 && rc < cap_;  // else not a target any more
  };
  QD_ASSIGN_OR_RETURN(WrittenIndex w, write_index_entries(image_.file(), offset, index_, keep));
  ext.index_checksum = w.checksum;
  ext.index_offset = w.entries ? offset : 0;
  ext.index_size = w.bytes;
  ext.index_entries = w.entries;
  return Status::ok();
}

Status DedupWriter::finish() {
  QD_TRY(image_.close());
  DedupExtension ext;
  ext.hash_algorithm = static_cast<uint32_t>(config_.algorithm);
  ext.hash_size = static_cast<uint32_t>(hash::digest_size(config_.algorithm));
  ext.flags = config_.verify ? kDedupFlagVerify : 0;
  ext.refcount_cap = cap_;
  ext.counters = counters_;
  ++ext.counters.runs;
  ext.counters.last_run_time = static_cast<uint64_t>(std::max<std::time_t>(std::time(nullptr), 0));
  ext.counters.last_run_version = QDEDUP_VERSION;
  QD_TRY(write_index(ext));
  qcow2::Header h = image_.header();
  put_dedup_extension(h, ext);
  Status st = image_.rewrite_header(h);
  if (!st && st.code() == StatusCode::kInvalidArgument) {
    // Cluster 0 too small for the feature name table as well: drop the table.
    h.feature_names.clear();
    st = image_.rewrite_header(h);
  }
  QD_TRY(st);
  return image_.set_autoclear(kAutoclearDedupIndex);
}

}  // namespace qdedup::dedup
