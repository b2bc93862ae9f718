#include "dedup/index_check.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <future>
#include <thread>
#include <unordered_map>

#include "dedup/dedup_writer.h"
#include "dedup/extension.h"
#include "hash/hash_pool.h"
#include "dedup/index_io.h"
#include "io/file_ref.h"
#include "qcow2/format.h"
#include "qcow2/image.h"
#include "util/endian.h"
#include "util/progress.h"
#include "util/text.h"

namespace qdedup::dedup {

namespace {

constexpr uint64_t kChunkEntries = 16384;
constexpr uint64_t kL2CacheBytes = 64ull << 20;  // at least 16 tables

unsigned thread_count(unsigned t) {
  return t ? t : std::max(1u, std::thread::hardware_concurrency());
}

// Active L2 lookups for the owner check (a few tables cached).
class ActiveMap {
 public:
  ActiveMap(io::File& file, const qcow2::CheckAnalysis& a) : file_(file), a_(a) {}

  // The host offset the active tables map `guest_cluster` to (0: none).
  Result<uint64_t> host_of(uint64_t guest_cluster) {
    const qcow2::Geometry& g = a_.g;
    uint64_t l1i = g.l1_index(guest_cluster);
    if (l1i >= a_.header.l1_size) return uint64_t{0};
    uint8_t b[8];
    QD_TRY(file_.read_or_zero(a_.header.l1_table_offset + 8 * l1i, b));
    uint64_t l2 = load_be64(b) & qcow2::kL1eOffsetMask;
    if (l2 == 0) return uint64_t{0};
    auto it = cache_.find(l2);
    if (it == cache_.end()) {
      if (cache_.size() >= std::max<uint64_t>(16, kL2CacheBytes / g.cluster_size)) cache_.clear();
      std::vector<uint8_t> t(g.cluster_size);
      QD_TRY(file_.read_or_zero(l2, t));
      it = cache_.emplace(l2, std::move(t)).first;
    }
    uint64_t word = load_be64(it->second.data() + g.l2_index(guest_cluster) * g.l2_entry_bytes);
    if (word & qcow2::kOflagCompressed) return uint64_t{0};
    if (!g.extended_l2 && (word & qcow2::kOflagZero)) return uint64_t{0};
    return word & qcow2::kL2eOffsetMask;
  }

 private:
  io::File& file_;
  const qcow2::CheckAnalysis& a_;
  std::unordered_map<uint64_t, std::vector<uint8_t>> cache_;
};

class IndexChecker {
 public:
  IndexChecker(io::File& file, qcow2::CheckAnalysis& a, const DedupCheckOptions& o,
               DedupCheckResult& r)
      : file_(file), a_(a), o_(o), r_(r), map_(file, a) {}

  void run(const DedupExtension& ext);

 private:
  void error(const std::string& line) {
    ++r_.errors;
    if (o_.log) o_.log("ERROR " + line);
  }
  void check_region(const DedupExtension& ext);
  Status check_entries(const DedupExtension& ext);
  Status verify(const DedupExtension& ext, hash::HashAlgorithm algo);

  io::File& file_;
  qcow2::CheckAnalysis& a_;
  const DedupCheckOptions& o_;
  DedupCheckResult& r_;
  ActiveMap map_;
};

void IndexChecker::run(const DedupExtension& ext) {
  Status st = validate_dedup_extension(ext, a_.file_size, a_.g.cluster_size, a_.g.refcount_max);
  if (!st) {
    error(st.message());
    return;
  }
  check_region(ext);
  if (Status s = check_entries(ext); !s) {
    ++r_.check_errors;
    if (o_.log) o_.log("ERROR could not read the dedup index: " + s.message());
    return;
  }
  if (ext.index_entries > a_.counts.allocated_clusters) {
    error("dedup index has " + std::to_string(ext.index_entries) + " entries for " +
          std::to_string(a_.counts.allocated_clusters) + " allocated clusters");
  }
  if (ext.counters.index_entries_removed > ext.counters.index_entries_added) {
    error("dedup counters: more index entries removed (" +
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
      error("dedup index cluster " + std::to_string(c) + " is in use: refcount=" +
            (stored ? std::to_string(*stored) : std::string("?")) +
            " reference=" + std::to_string(ref));
    }
  }
}

Status IndexChecker::check_entries(const DedupExtension& ext) {
  const qcow2::Geometry& g = a_.g;
  const uint64_t hs = ext.hash_size;
  const uint64_t es = index_entry_size(hs);
  std::vector<bool> seen_cluster(a_.computed.size());
  std::vector<uint8_t> buf, prev;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) return io_error("out of memory");
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  Status st;
  for (uint64_t first = 0; st && first < ext.index_entries; first += kChunkEntries) {
    uint64_t n = std::min(kChunkEntries, ext.index_entries - first);
    buf.resize(n * es);
    st = file_.read_exact(ext.index_offset + first * es, buf, "dedup index");
    if (!st) break;
    EVP_DigestUpdate(ctx, buf.data(), buf.size());
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t* e = buf.data() + i * es;
      uint64_t host = load_be64(e + hs);
      uint64_t owner = load_be64(e + hs + 8);
      std::string where = "dedup index entry " + std::to_string(first + i) + ": ";
      if (!prev.empty()) {
        int c = std::memcmp(prev.data(), e, hs);
        if (c == 0) error(where + "a second entry for hash " + hex_bytes(e, hs));
        if (c > 0) error(where + "entries out of hash order");
      }
      prev.assign(e, e + hs);
      if (host == 0 || host % g.cluster_size != 0 || (host & ~qcow2::kL2eOffsetMask) ||
          host >= a_.file_size) {
        error(where + "invalid host offset 0x" + hex_digits(host));
        continue;
      }
      uint64_t cluster = host >> g.cluster_bits;
      if (seen_cluster[cluster]) error(where + "a second entry for the cluster at " + hex(host));
      seen_cluster[cluster] = true;
      std::optional<uint64_t> rc = a_.stored_refcount(file_, cluster);
      if (rc && (*rc == 0 || *rc >= ext.refcount_cap)) {
        error(where + "cluster at " + hex(host) + " has refcount " + std::to_string(*rc) +
              ", outside 1.." + std::to_string(ext.refcount_cap - 1));
        continue;
      }
      if (owner >= g.guest_clusters) {
        error(where + "owner guest cluster " + std::to_string(owner) + " is beyond the disk");
        continue;
      }
      QD_ASSIGN_OR_RETURN(uint64_t mapped, map_.host_of(owner));
      if (mapped != host) {
        error(where + "owner guest cluster " + std::to_string(owner) + " maps " +
              (mapped ? hex(mapped) : std::string("nothing")) + ", not " + hex(host));
      }
    }
  }
  std::array<uint8_t, 32> sum{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, sum.data(), &len);
  EVP_MD_CTX_free(ctx);
  QD_TRY(st);
  if (sum != ext.index_checksum) error("dedup index checksum mismatch");
  return Status::ok();
}

// Rehashes every indexed cluster, chunk by chunk, in host order: contiguous
// clusters are read with one pread, and the next batch is read while the
// current one is hashed.
Status IndexChecker::verify(const DedupExtension& ext, hash::HashAlgorithm algo) {
  const uint64_t cs = a_.g.cluster_size;
  const uint64_t hs = ext.hash_size;
  const uint64_t es = index_entry_size(hs);
  hash::HashPool pool(algo, thread_count(o_.threads));
  const uint64_t per_batch = std::max<uint64_t>((4u << 20) / cs, 1);
  std::vector<uint8_t> buf, digests(per_batch * hs);
  std::vector<uint8_t> data[2] = {std::vector<uint8_t>(per_batch * cs),
                                  std::vector<uint8_t>(per_batch * cs)};
  Progress progress(o_.progress, ext.index_entries);
  for (uint64_t first = 0; first < ext.index_entries; first += kChunkEntries) {
    uint64_t n = std::min(kChunkEntries, ext.index_entries - first);
    buf.resize(n * es);
    QD_TRY(file_.read_exact(ext.index_offset + first * es, buf, "dedup index"));
    std::vector<uint64_t> order(n);
    for (uint64_t i = 0; i < n; ++i) order[i] = i;
    auto host_of = [&](uint64_t i) { return load_be64(buf.data() + i * es + hs); };
    std::sort(order.begin(), order.end(), [&](uint64_t x, uint64_t y) { return host_of(x) < host_of(y); });
    // Reads batch `k` (entries order[k..k+m)) into `out`, merging contiguous clusters.
    auto read_batch = [&](uint64_t k, std::vector<uint8_t>& out) -> Status {
      uint64_t m = std::min(per_batch, n - k);
      for (uint64_t j = 0; j < m;) {
        uint64_t run = 1;
        while (j + run < m && host_of(order[k + j + run]) == host_of(order[k + j]) + run * cs) ++run;
        QD_TRY(file_.read_or_zero(host_of(order[k + j]), std::span<uint8_t>(out.data() + j * cs, run * cs)));
        j += run;
      }
      return Status::ok();
    };
    QD_TRY(read_batch(0, data[0]));
    for (uint64_t k = 0, cur = 0; k < n; k += per_batch, cur ^= 1) {
      uint64_t m = std::min(per_batch, n - k);
      std::future<Status> next;
      if (k + per_batch < n) {
        next = std::async(std::launch::async, read_batch, k + per_batch, std::ref(data[cur ^ 1]));
      }
      pool.hash_chunks(std::span<const uint8_t>(data[cur].data(), m * cs), cs, digests.data());
      for (uint64_t j = 0; j < m; ++j) {
        const uint8_t* want = buf.data() + order[k + j] * es;
        ++r_.verified;
        if (std::memcmp(want, digests.data() + j * hs, hs) != 0) {
          ++r_.hash_mismatches;
          error("dedup index entry " + std::to_string(first + order[k + j]) + ": the cluster at " +
                hex(host_of(order[k + j])) + " does not match its hash (its data changed)");
        }
      }
      progress.update(first + k + m);
      if (next.valid()) QD_TRY(next.get());
    }
  }
  progress.finish();
  return Status::ok();
}

}  // namespace

DedupCheckResult check_dedup(io::File& file, qcow2::CheckAnalysis& a,
                             const DedupCheckOptions& options) {
  DedupCheckResult r;
  auto found = find_dedup_extension(a.header);
  if (!found) {
    r.present = true;
    r.state = "damaged";
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
    r.state = "stale";
    return r;
  }
  IndexChecker checker(file, a, options, r);
  checker.run(ext);
  r.state = (r.errors || r.check_errors) ? "damaged" : "valid";
  return r;
}

Status rebuild_dedup_index(io::File& file, std::unique_ptr<io::File> scratch, unsigned threads) {
  QD_ASSIGN_OR_RETURN(auto image, qcow2::Image::open(std::make_unique<io::FileRef>(file),
                                                     qcow2::ImageOptions{.writable = true}));
  QD_ASSIGN_OR_RETURN(std::optional<DedupExtension> ext, find_dedup_extension(image->header()));
  if (!ext) return invalid_argument("the image has no dedup extension");
  auto algo = hash::hash_from_id(ext->hash_algorithm);
  if (!algo) return unsupported("unknown dedup hash algorithm id " + std::to_string(ext->hash_algorithm));
  DedupWriter writer(*image,
                     DedupConfig{*algo, (ext->flags & kDedupFlagVerify) != 0, ext->refcount_cap},
                     std::move(scratch));
  writer.set_counters(ext->counters);
  hash::HashPool pool(*algo, thread_count(threads));
  // Whoever made the index stale may have left COPIED flags off.
  image->audit_copied_on_close();
  QD_TRY(rebuild_index(*image, pool, writer.refcount_cap(), writer.mutable_index()));
  return writer.finish();
}

}  // namespace qdedup::dedup
