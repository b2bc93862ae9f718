#include "dedup/index_check.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <unordered_map>

#include "dedup/dedup_writer.h"
#include "dedup/extension.h"
#include "dedup/index_io.h"
#include "dedup/index_reader.h"
#include "hash/hash_pool.h"
#include "io/file_ref.h"
#include "qcow2/format.h"
#include "qcow2/image.h"
#include "util/endian.h"
#include "util/progress.h"
#include "util/text.h"

namespace qdedup::dedup {

namespace {

constexpr uint64_t kL2CacheBytes = 64ull << 20;  // at least 16 tables

// Active L2 lookups for the owner check: the active L1 table read once, up
// to 64 MiB of L2 tables cached.
class ActiveMap {
 public:
  ActiveMap(io::File& file, const qcow2::CheckAnalysis& a) : file_(file), a_(a) {}

  // The host offset the active tables map `guest_cluster` to (0: none).
  Result<uint64_t> host_of(uint64_t guest_cluster) {
    const qcow2::Geometry& g = a_.g;
    if (!l1_loaded_) QD_TRY(load_l1());
    uint64_t l1i = g.l1_index(guest_cluster);
    if (l1i >= l1_.size()) return uint64_t{0};
    uint64_t l2 = l1_[l1i] & qcow2::kL1eOffsetMask;
    if (l2 == 0) return uint64_t{0};
    const std::vector<uint8_t>* table = by_l1_[l1i];
    if (!table) {
      auto it = cache_.find(l2);
      if (it == cache_.end()) {
        if (cache_.size() >= std::max<uint64_t>(16, kL2CacheBytes / g.cluster_size)) {
          cache_.clear();
          by_l1_.assign(by_l1_.size(), nullptr);
        }
        std::vector<uint8_t> t(g.cluster_size);
        QD_TRY(file_.read_or_zero(l2, t));
        it = cache_.emplace(l2, std::move(t)).first;
      }
      table = by_l1_[l1i] = &it->second;
    }
    const uint8_t* p = table->data() + g.l2_index(guest_cluster) * g.l2_entry_bytes;
    const qcow2::L2Entry e{load_be64(p), g.extended_l2 ? load_be64(p + 8) : 0};
    return e.cluster_type(g) == qcow2::ClusterType::kNormal ? e.host_offset() : uint64_t{0};
  }

 private:
  // Entries past the end of the file read as zeros: only the entries that
  // start inside it are read.
  Status load_l1() {
    const uint64_t offset = a_.header.l1_table_offset;
    const uint64_t readable = offset < a_.file_size ? (a_.file_size - offset + 7) / 8 : 0;
    std::vector<uint8_t> raw(std::min<uint64_t>(a_.header.l1_size, readable) * 8);
    QD_TRY(file_.read_or_zero(offset, raw));
    l1_.resize(raw.size() / 8);
    for (uint64_t i = 0; i < l1_.size(); ++i) l1_[i] = load_be64(raw.data() + 8 * i);
    by_l1_.assign(l1_.size(), nullptr);
    l1_loaded_ = true;
    return Status::ok();
  }

  io::File& file_;
  const qcow2::CheckAnalysis& a_;
  bool l1_loaded_ = false;
  std::vector<uint64_t> l1_;
  // L2 tables read, by offset, and the same by active L1 index.
  std::unordered_map<uint64_t, std::vector<uint8_t>> cache_;
  std::vector<const std::vector<uint8_t>*> by_l1_;
};

// Counts one corruption of the dedup state and logs it.
struct ErrorLog {
  DedupCheckResult& r;
  const qcow2::CheckLog& log;
  void operator()(const std::string& line) const {
    ++r.errors;
    if (log) log("ERROR " + line);
  }
};

class IndexChecker {
 public:
  IndexChecker(io::File& file, qcow2::CheckAnalysis& a, const DedupCheckOptions& o,
               DedupCheckResult& r)
      : file_(file), a_(a), o_(o), r_(r), error_{r, o.log}, map_(file, a) {}

  void run(const DedupExtension& ext);

 private:
  void check_region(const DedupExtension& ext);
  Status check_entries(const DedupExtension& ext);
  Status verify(const DedupExtension& ext, hash::HashAlgorithm algo);

  io::File& file_;
  qcow2::CheckAnalysis& a_;
  const DedupCheckOptions& o_;
  DedupCheckResult& r_;
  ErrorLog error_;
  ActiveMap map_;
};

void IndexChecker::run(const DedupExtension& ext) {
  Status st = validate_dedup_extension(ext, a_.file_size, a_.g.cluster_size, a_.g.refcount_max);
  if (!st) {
    error_(st.message());
    return;
  }
  check_region(ext);
  if (Status s = check_entries(ext); !s) {
    ++r_.check_errors;
    if (o_.log) o_.log("ERROR could not read the dedup index: " + s.message());
    return;
  }
  if (ext.index_entries > a_.counts.allocated_clusters) {
    error_("dedup index has " + std::to_string(ext.index_entries) + " entries for " +
           std::to_string(a_.counts.allocated_clusters) + " allocated clusters");
  }
  if (ext.counters.index_entries_removed > ext.counters.index_entries_added) {
    error_("dedup counters: more index entries removed (" +
           std::to_string(ext.counters.index_entries_removed) + ") than added (" +
           std::to_string(ext.counters.index_entries_added) + ")");
  }
  if (o_.verify_hashes && r_.errors == 0) {
    auto algo = hash::hash_from_id(ext.hash_algorithm);
    if (Status s = verify(ext, *algo); !s) {
      ++r_.check_errors;
      if (o_.log) o_.log("ERROR could not verify the dedup index: " + s.message());
    }
  }
}

// The index's clusters are not refcounted: nothing may reference them and
// their refcounts must be 0 (docs/format.md, section 5).
void IndexChecker::check_region(const DedupExtension& ext) {
  if (ext.index_size == 0) return;
  const qcow2::Geometry& g = a_.g;
  uint64_t first = ext.index_offset >> g.cluster_bits;
  uint64_t last = (ext.index_offset + ext.index_size - 1) >> g.cluster_bits;
  for (uint64_t c = first; c <= last; ++c) {
    uint64_t ref = a_.computed.get(c);
    std::optional<uint64_t> stored = a_.stored_refcount(file_, c);
    if (ref != 0 || (stored && *stored != 0)) {
      error_("dedup index cluster " + std::to_string(c) +
             " is in use: refcount=" + (stored ? std::to_string(*stored) : std::string("?")) +
             " reference=" + std::to_string(ref));
    }
  }
}

// The entry checks of docs/format.md, section 6: each violation is one
// error, and the check goes on to the next entry.
class EntryChecker final : public IndexVisitor {
 public:
  EntryChecker(io::File& file, qcow2::CheckAnalysis& a, const DedupExtension& ext, ActiveMap& map,
               ErrorLog error, std::array<uint64_t, 256>& by_first_byte)
      : by_first_byte_(by_first_byte),
        file_(file),
        a_(a),
        cap_(ext.refcount_cap),
        map_(map),
        error_(error),
        seen_cluster_(a.computed.size()) {}

  Status misordered(uint64_t n, const StoredIndexEntry& e, int order) override {
    if (order == 0) {
      error_(where(n) + "a second entry for hash " + hex_bytes(e.hash.data(), e.hash.size()));
    } else {
      error_(where(n) + "entries out of hash order");
    }
    return Status::ok();
  }
  Status entry(uint64_t n, const StoredIndexEntry& e) override;
  Status checksum_mismatch() override {
    error_("dedup index checksum mismatch");
    return Status::ok();
  }

 private:
  static std::string where(uint64_t n) { return "dedup index entry " + std::to_string(n) + ": "; }

  std::array<uint64_t, 256>& by_first_byte_;
  io::File& file_;
  qcow2::CheckAnalysis& a_;
  const uint64_t cap_;
  ActiveMap& map_;
  ErrorLog error_;
  std::vector<bool> seen_cluster_;
};

Status EntryChecker::entry(uint64_t n, const StoredIndexEntry& e) {
  const qcow2::Geometry& g = a_.g;
  const uint64_t host = e.host_offset, owner = e.owner_guest_cluster;
  ++by_first_byte_[e.hash[0]];
  if (!index_host_offset_ok(host, g.cluster_size) || host >= a_.file_size) {
    error_(where(n) + "invalid host offset 0x" + hex_digits(host));
    return Status::ok();
  }
  const uint64_t cluster = host >> g.cluster_bits;
  if (seen_cluster_[cluster]) error_(where(n) + "a second entry for the cluster at " + hex(host));
  seen_cluster_[cluster] = true;
  std::optional<uint64_t> rc = a_.stored_refcount(file_, cluster);
  if (rc && (*rc == 0 || *rc >= cap_)) {
    error_(where(n) + "cluster at " + hex(host) + " has refcount " + std::to_string(*rc) +
           ", outside 1.." + std::to_string(cap_ - 1));
    return Status::ok();
  }
  if (owner >= g.guest_clusters) {
    error_(where(n) + "owner guest cluster " + std::to_string(owner) + " is beyond the disk");
    return Status::ok();
  }
  QD_ASSIGN_OR_RETURN(uint64_t mapped, map_.host_of(owner));
  if (mapped != host) {
    error_(where(n) + "owner guest cluster " + std::to_string(owner) + " maps " +
           (mapped ? hex(mapped) : std::string("nothing")) + ", not " + hex(host));
  }
  return Status::ok();
}

Status IndexChecker::check_entries(const DedupExtension& ext) {
  EntryChecker checker(file_, a_, ext, map_, error_, r_.entries_by_first_byte);
  return read_index(file_, ext, checker);
}

// Rehashes the clusters of the index, one chunk of entries at a time, in
// host order: contiguous clusters are read with one pread, and the next batch
// is read while the current one is hashed.
class HashVerifier {
 public:
  HashVerifier(io::File& file, uint64_t cluster_size, const DedupExtension& ext,
               hash::HashAlgorithm algo, unsigned threads, bool progress, ErrorLog error)
      : file_(file),
        cs_(cluster_size),
        hs_(ext.hash_size),
        per_batch_(std::max<uint64_t>(kVerifyBatchBytes / cluster_size, 1)),
        pool_(algo, threads),
        digests_(per_batch_ * hs_),
        data_{std::vector<uint8_t>(per_batch_ * cs_), std::vector<uint8_t>(per_batch_ * cs_)},
        progress_(progress, ext.index_entries * cluster_size),  // bytes, for the rate
        error_(error) {}

  // Entries [first, first + n) of the index, encoded in `bytes`.
  Status chunk(uint64_t first, std::span<const uint8_t> bytes);
  void finish() { progress_.finish(); }

 private:
  static constexpr uint64_t kVerifyBatchBytes = 4u << 20;

  uint64_t host_of(uint64_t i) const {
    return decode_index_entry(entries_.data() + i * index_entry_size(hs_), hs_).host_offset;
  }
  // Reads batch `k` (entries order_[k..k+m)) into `out`, merging contiguous clusters.
  Status read_batch(uint64_t k, std::vector<uint8_t>& out);

  io::File& file_;
  const uint64_t cs_, hs_, per_batch_;
  hash::HashPool pool_;
  std::vector<uint8_t> digests_;
  std::vector<uint8_t> data_[2];
  Progress progress_;
  ErrorLog error_;
  std::span<const uint8_t> entries_;  // the chunk being verified
  std::vector<uint64_t> order_;       // its entries by host offset
};

Status HashVerifier::read_batch(uint64_t k, std::vector<uint8_t>& out) {
  const uint64_t m = std::min(per_batch_, order_.size() - k);
  for (uint64_t j = 0; j < m;) {
    const uint64_t start = host_of(order_[k + j]);
    uint64_t run = 1;
    while (j + run < m && host_of(order_[k + j + run]) == start + run * cs_) ++run;
    QD_TRY(file_.read_or_zero(start, std::span<uint8_t>(out.data() + j * cs_, run * cs_)));
    j += run;
  }
  return Status::ok();
}

Status HashVerifier::chunk(uint64_t first, std::span<const uint8_t> bytes) {
  entries_ = bytes;
  const uint64_t n = bytes.size() / index_entry_size(hs_);
  order_.resize(n);
  for (uint64_t i = 0; i < n; ++i) order_[i] = i;
  std::sort(order_.begin(), order_.end(),
            [&](uint64_t x, uint64_t y) { return host_of(x) < host_of(y); });
  QD_TRY(read_batch(0, data_[0]));
  for (uint64_t k = 0, cur = 0; k < n; k += per_batch_, cur ^= 1) {
    const uint64_t m = std::min(per_batch_, n - k);
    std::future<Status> next;
    if (k + per_batch_ < n) {
      next = std::async(std::launch::async, &HashVerifier::read_batch, this, k + per_batch_,
                        std::ref(data_[cur ^ 1]));
    }
    pool_.hash_chunks(std::span<const uint8_t>(data_[cur].data(), m * cs_), cs_, digests_.data());
    for (uint64_t j = 0; j < m; ++j) {
      const uint64_t i = order_[k + j];
      const StoredIndexEntry want =
          decode_index_entry(bytes.data() + i * index_entry_size(hs_), hs_);
      ++error_.r.verified;
      if (std::memcmp(want.hash.data(), digests_.data() + j * hs_, hs_) != 0) {
        ++error_.r.hash_mismatches;
        error_("dedup index entry " + std::to_string(first + i) + ": the cluster at " +
               hex(want.host_offset) + " does not match its hash (its data changed)");
      }
    }
    progress_.update((first + k + m) * cs_);
    if (next.valid()) QD_TRY(next.get());
  }
  return Status::ok();
}

Status IndexChecker::verify(const DedupExtension& ext, hash::HashAlgorithm algo) {
  HashVerifier v(file_, a_.g.cluster_size, ext, algo, hash::threads_or_all_cores(o_.threads),
                 o_.progress, error_);
  QD_TRY(for_each_index_chunk(file_, ext, [&](uint64_t first, std::span<const uint8_t> bytes) {
    return v.chunk(first, bytes);
  }));
  v.finish();
  return Status::ok();
}

}  // namespace

const char* index_state_name(IndexState state) {
  switch (state) {
    case IndexState::kAbsent: return "absent";
    case IndexState::kValid: return "valid";
    case IndexState::kStale: return "stale";
    case IndexState::kDamaged: return "damaged";
  }
  return "?";
}

DedupCheckResult check_dedup(io::File& file, qcow2::CheckAnalysis& a,
                             const DedupCheckOptions& options) {
  DedupCheckResult r;
  auto found = find_dedup_extension(a.header);
  if (!found) {
    r.present = true;
    r.state = IndexState::kDamaged;
    if (found.status().code() == StatusCode::kUnsupported) {
      ++r.check_errors;
    } else {
      ++r.errors;
    }
    if (options.log) options.log("ERROR " + found.status().message());
    return r;
  }
  if (!*found) return r;
  const DedupExtension& ext = **found;
  r.present = true;
  r.entries = ext.index_entries;
  if (auto algo = hash::hash_from_id(ext.hash_algorithm)) r.hash = hash::hash_name(*algo);
  if (!(a.header.autoclear_features & kAutoclearDedupIndex)) {
    r.state = IndexState::kStale;
    return r;
  }
  IndexChecker checker(file, a, options, r);
  checker.run(ext);
  r.state = (r.errors || r.check_errors) ? IndexState::kDamaged : IndexState::kValid;
  return r;
}

Status rebuild_dedup_index(io::File& file, std::unique_ptr<io::File> scratch, unsigned threads) {
  QD_ASSIGN_OR_RETURN(auto image, qcow2::Image::open(std::make_unique<io::FileRef>(file),
                                                     qcow2::ImageOptions{.writable = true}));
  QD_ASSIGN_OR_RETURN(std::optional<DedupExtension> ext, find_dedup_extension(image->header()));
  if (!ext) return invalid_argument("the image has no dedup extension");
  auto algo = hash::hash_from_id(ext->hash_algorithm);
  if (!algo)
    return unsupported("unknown dedup hash algorithm id " + std::to_string(ext->hash_algorithm));
  DedupWriter writer(*image,
                     DedupConfig{*algo, (ext->flags & kDedupFlagVerify) != 0, ext->refcount_cap},
                     std::move(scratch));
  writer.set_counters(ext->counters);
  hash::HashPool pool(*algo, hash::threads_or_all_cores(threads));
  // Whoever made the index stale may have left COPIED flags off.
  image->audit_copied_on_close();
  QD_TRY(rebuild_index(*image, pool, writer.refcount_cap(), writer.mutable_index()));
  return writer.finish();
}

}  // namespace qdedup::dedup
