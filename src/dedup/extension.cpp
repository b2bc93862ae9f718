#include "dedup/extension.h"

#include <algorithm>
#include <cstring>

#include "hash/sha256.h"
#include "util/endian.h"

namespace qdedup::dedup {

std::vector<std::pair<const char*, uint64_t>> counter_fields(const DedupCounters& c) {
  return {{"clusters-deduplicated", c.clusters_deduplicated},
          {"clusters-stored-unique", c.clusters_stored_unique},
          {"index-entries-added", c.index_entries_added},
          {"index-entries-removed", c.index_entries_removed},
          {"clusters-freed", c.clusters_freed},
          {"refcount-cap-overflows", c.refcount_cap_overflows},
          {"partial-cluster-reads", c.partial_cluster_reads},
          {"runs", c.runs}};
}

namespace {
constexpr uint32_t kOffCounters = 80;
constexpr uint32_t kOffRunTime = 144;
constexpr uint32_t kOffRunVersion = 152;
}

std::vector<uint8_t> encode_dedup_extension(const DedupExtension& e) {
  std::vector<uint8_t> out(kExtDedupLength, 0);
  uint8_t* p = out.data();
  store_be32(p + 0, e.ext_version);
  store_be32(p + 4, e.hash_algorithm);
  store_be32(p + 8, e.flags);
  store_be32(p + 12, e.hash_size);
  store_be64(p + 16, e.index_offset);
  store_be64(p + 24, e.index_size);
  store_be64(p + 32, e.index_entries);
  store_be64(p + 40, e.refcount_cap);
  std::copy(e.index_checksum.begin(), e.index_checksum.end(), p + 48);
  const DedupCounters& c = e.counters;
  const uint64_t counters[] = {c.clusters_deduplicated, c.clusters_stored_unique,
                               c.index_entries_added,   c.index_entries_removed,
                               c.clusters_freed,        c.refcount_cap_overflows,
                               c.partial_cluster_reads, c.runs};
  for (size_t i = 0; i < std::size(counters); ++i) store_be64(p + kOffCounters + 8 * i, counters[i]);
  store_be64(p + kOffRunTime, c.last_run_time);
  std::copy_n(c.last_run_version.begin(), std::min(c.last_run_version.size(), kRunVersionBytes),
              p + kOffRunVersion);
  return out;
}

Result<DedupExtension> decode_dedup_extension(std::span<const uint8_t> bytes) {
  if (bytes.size() < kExtDedupBaseLength) {
    return corruption("dedup extension: length " + std::to_string(bytes.size()) +
                      " is shorter than " + std::to_string(kExtDedupBaseLength));
  }
  const uint8_t* p = bytes.data();
  DedupExtension e;
  e.ext_version = load_be32(p);
  if (e.ext_version != kExtDedupVersion) {
    return unsupported("dedup extension version " + std::to_string(e.ext_version) +
                       " is not supported by this qdedup");
  }
  e.hash_algorithm = load_be32(p + 4);
  auto algo = hash::hash_from_id(e.hash_algorithm);
  if (!algo) {
    return unsupported("dedup hash algorithm id " + std::to_string(e.hash_algorithm) +
                       " is unknown to this qdedup");
  }
  e.flags = load_be32(p + 8);
  if (e.flags & ~kDedupFlagVerify) return corruption("dedup extension: reserved flags set");
  e.hash_size = load_be32(p + 12);
  if (e.hash_size != hash::digest_size(*algo)) {
    return corruption("dedup extension: hash size " + std::to_string(e.hash_size) +
                      " does not match " + hash::hash_name(*algo));
  }
  e.index_offset = load_be64(p + 16);
  e.index_size = load_be64(p + 24);
  e.index_entries = load_be64(p + 32);
  e.refcount_cap = load_be64(p + 40);
  std::copy_n(p + 48, 32, e.index_checksum.begin());
  DedupCounters& c = e.counters;
  uint64_t* counters[] = {&c.clusters_deduplicated, &c.clusters_stored_unique,
                          &c.index_entries_added,   &c.index_entries_removed,
                          &c.clusters_freed,        &c.refcount_cap_overflows,
                          &c.partial_cluster_reads, &c.runs};
  for (size_t i = 0; i < std::size(counters); ++i) *counters[i] = load_be64(p + kOffCounters + 8 * i);
  if (bytes.size() >= kExtDedupLength) {
    c.last_run_time = load_be64(p + kOffRunTime);
    const char* v = reinterpret_cast<const char*>(p + kOffRunVersion);
    c.last_run_version.assign(v, strnlen(v, kRunVersionBytes));
  }
  return e;
}

Status validate_dedup_extension(const DedupExtension& e, uint64_t file_size,
                                uint64_t cluster_size, uint64_t refcount_max) {
  uint64_t entry = index_entry_size(e.hash_size);
  if (e.refcount_cap == 0 || e.refcount_cap > refcount_max) {
    return corruption("dedup extension: refcount cap " + std::to_string(e.refcount_cap) +
                      " is outside 1.." + std::to_string(refcount_max));
  }
  if (e.index_entries > UINT64_MAX / entry || e.index_size != e.index_entries * entry) {
    return corruption("dedup extension: index size does not match its entry count");
  }
  if (e.index_size == 0) return Status::ok();
  if (e.index_offset == 0 || e.index_offset % cluster_size != 0 || e.index_offset > file_size ||
      e.index_size > file_size - e.index_offset) {
    return corruption("dedup extension: index at offset " + std::to_string(e.index_offset) +
                      " (" + std::to_string(e.index_size) + " bytes) lies outside the file");
  }
  return Status::ok();
}

std::array<uint8_t, 32> index_checksum(std::span<const uint8_t> index_bytes) {
  return hash::sha256(index_bytes);
}

DedupExtension empty_dedup_extension(hash::HashAlgorithm algorithm, bool verify, uint64_t refcount_cap) {
  DedupExtension e;
  e.hash_algorithm = static_cast<uint32_t>(algorithm);
  e.hash_size = static_cast<uint32_t>(hash::digest_size(algorithm));
  e.flags = verify ? kDedupFlagVerify : 0;
  e.refcount_cap = refcount_cap;
  e.index_checksum = index_checksum({});
  return e;
}

namespace {

Status check_choice(const DedupChoice& c, uint32_t version) {
  if (!hash::is_collision_resistant(c.algorithm) && !c.verify) {
    return invalid_argument(std::string("dedup=") + hash::hash_name(c.algorithm) +
                            " is not collision resistant: it needs dedup_verify=on");
  }
  if (version < 3) return invalid_argument("dedup needs compat=1.1 (qcow2 version 3)");
  return Status::ok();
}

}  // namespace

Result<std::optional<DedupChoice>> choose_dedup(const std::string& dedup, bool verify,
                                               bool cluster_size_set, qcow2::CreateOptions& o) {
  if (dedup == "off") return std::optional<DedupChoice>();
  QD_ASSIGN_OR_RETURN(hash::HashAlgorithm algo, hash::parse_hash_name(dedup));
  DedupChoice c{algo, verify};
  QD_TRY(check_choice(c, o.version));
  if (!cluster_size_set) o.cluster_bits = kDedupDefaultClusterBits;
  return std::optional<DedupChoice>(c);
}

Result<DedupChoice> choose_dedup(const std::string& dedup, bool verify,
                                 const std::optional<DedupExtension>& existing) {
  DedupChoice c{hash::HashAlgorithm::kSha256, verify};
  if (!dedup.empty()) {
    QD_ASSIGN_OR_RETURN(c.algorithm, hash::parse_hash_name(dedup));
  } else if (existing) {
    std::optional<hash::HashAlgorithm> algo = hash::hash_from_id(existing->hash_algorithm);
    if (!algo) return unsupported("unknown dedup hash id " + std::to_string(existing->hash_algorithm));
    c.algorithm = *algo;
    c.verify = verify || (existing->flags & kDedupFlagVerify) != 0;
  }
  // Any version: a version 2 image is deduplicated without an index.
  QD_TRY(check_choice(c, 3));
  return c;
}

Result<DedupChoice> choose_dedup(const DedupExtension& e, const qcow2::Header& h) {
  std::optional<hash::HashAlgorithm> algo = hash::hash_from_id(e.hash_algorithm);
  if (!algo) return unsupported("unknown dedup hash id " + std::to_string(e.hash_algorithm));
  DedupChoice c{*algo, (e.flags & kDedupFlagVerify) != 0};
  QD_TRY(check_choice(c, h.version));
  return c;
}

Status apply_dedup_create_options(const std::string& dedup, bool verify, bool cluster_size_set,
                                  qcow2::CreateOptions& o) {
  QD_ASSIGN_OR_RETURN(std::optional<DedupChoice> c, choose_dedup(dedup, verify, cluster_size_set, o));
  if (!c) return Status::ok();
  uint64_t refcount_max = o.refcount_order >= 6 ? UINT64_MAX : (uint64_t{1} << (1u << o.refcount_order)) - 1;
  o.extensions.push_back(
      {kExtDedup, encode_dedup_extension(empty_dedup_extension(c->algorithm, c->verify, refcount_max))});
  o.extra_feature_names.push_back({2, kAutoclearDedupBit, kDedupFeatureName});
  o.autoclear_features |= kAutoclearDedupIndex;
  return Status::ok();
}

Result<std::optional<DedupExtension>> find_dedup_extension(const qcow2::Header& h) {
  for (const qcow2::HeaderExtension& x : h.unknown_extensions) {
    if (x.type != kExtDedup) continue;
    QD_ASSIGN_OR_RETURN(DedupExtension e, decode_dedup_extension(x.data));
    return std::optional<DedupExtension>(e);
  }
  return std::optional<DedupExtension>();
}

void put_dedup_extension(qcow2::Header& h, const DedupExtension& e) {
  std::vector<uint8_t> data = encode_dedup_extension(e);
  auto it = std::find_if(h.unknown_extensions.begin(), h.unknown_extensions.end(),
                         [](const qcow2::HeaderExtension& x) { return x.type == kExtDedup; });
  if (it != h.unknown_extensions.end()) {
    it->data = std::move(data);
  } else {
    h.unknown_extensions.push_back({kExtDedup, std::move(data)});
  }
  bool named = std::any_of(h.feature_names.begin(), h.feature_names.end(), [](const auto& f) {
    return f.type == 2 && f.bit == kAutoclearDedupBit;
  });
  if (!named) {
    if (h.feature_names.empty()) h.feature_names = qcow2::default_feature_names();
    h.feature_names.push_back({2, kAutoclearDedupBit, kDedupFeatureName});
  }
}

}  // namespace qdedup::dedup
