#include "dedup/resume.h"

#include <algorithm>
#include <unordered_set>

#include "dedup/index_entry.h"
#include "dedup/index_io.h"
#include "dedup/index_reader.h"
#include "hash/sha256.h"
#include "qcow2/walk.h"
#include "util/text.h"
#include "util/endian.h"

namespace qdedup::dedup {

namespace {

// A compressed keeper or copy: an L2 compressed descriptor (bit 62 set, bit 63
// clear) whose bytes start inside the file, past the header cluster.
bool compressed_descriptor_ok(uint64_t word, const qcow2::Geometry& g, uint64_t file_size) {
  if (!(word & kKeeperCompressed) || (word & qcow2::kOflagCopied)) return false;
  const qcow2::CompressedRange r = qcow2::compressed_range(g, qcow2::L2Entry{word, 0});
  return r.offset >= g.cluster_size && r.offset < file_size && r.length <= qcow2::kMaxFileOffset - r.offset;
}

class ResumeLoader final : public IndexVisitor {
 public:
  ResumeLoader(qcow2::Image& image, DedupIndex& index, uint64_t file_size)
      : image_(image), index_(index), file_size_(file_size) {}
  Status misordered(uint64_t n, const StoredIndexEntry&, int) override {
    return corruption("progress record entry " + std::to_string(n) + " out of order");
  }
  Status entry(uint64_t n, const StoredIndexEntry& e) override {
    const qcow2::Geometry& g = image_.geometry();
    uint64_t first_cluster = e.host_offset >> g.cluster_bits;
    if (compressed_descriptor_ok(e.host_offset, g, file_size_)) {
      first_cluster = qcow2::compressed_range(g, qcow2::L2Entry{e.host_offset, 0}).offset >> g.cluster_bits;
    } else if (!index_host_offset_ok(e.host_offset, g.cluster_size)) {
      return corruption("progress record entry " + std::to_string(n) + ": invalid host offset");
    }
    QD_ASSIGN_OR_RETURN(uint64_t rc, image_.refcount(first_cluster));
    if (rc == 0) return corruption("progress record entry " + std::to_string(n) + ": cluster not in use");
    if (e.host_offset & kKeeperCompressed) compressed_.insert(e.host_offset);
    return index_.insert(e.hash.data(), e.host_offset, e.owner_guest_cluster);
  }
  Status checksum_mismatch() override { return corruption("progress record checksum mismatch"); }

  // The compressed keepers' descriptors: a well-formed descriptor in a used
  // cluster may still start in the middle of a stream, so the caller checks
  // that a table maps each of them.
  std::unordered_set<uint64_t>& compressed() { return compressed_; }

 private:
  qcow2::Image& image_;
  DedupIndex& index_;
  uint64_t file_size_;
  std::unordered_set<uint64_t> compressed_;
};

// Corruption unless an L2 entry of some table maps each of `descriptors`.
Status check_mapped(qcow2::Image& image, std::unordered_set<uint64_t> descriptors) {
  if (descriptors.empty()) return Status::ok();
  QD_TRY(qcow2::walk_l2_tables(
      image, [&](const qcow2::L2TableVisit&, std::span<const qcow2::L2EntryVisit> entries) {
        for (const qcow2::L2EntryVisit& v : entries) {
          if (v.type == qcow2::ClusterType::kCompressed) descriptors.erase(v.entry.word & ~qcow2::kOflagCopied);
        }
        return Status::ok();
      }));
  if (descriptors.empty()) return Status::ok();
  return corruption("progress record: compressed keeper " + hex(*descriptors.begin()) + " is not mapped by any table");
}

void remove_record(qcow2::Header& h) {
  auto& x = h.unknown_extensions;
  x.erase(std::remove_if(x.begin(), x.end(), [](const auto& e) { return e.type == kExtResume; }),
          x.end());
}

}  // namespace

Result<std::optional<ResumeRecord>> find_resume_record(const qcow2::Header& h) {
  if (!(h.autoclear_features & kAutoclearResume)) return std::optional<ResumeRecord>();
  for (const qcow2::HeaderExtension& x : h.unknown_extensions) {
    if (x.type != kExtResume) continue;
    if (x.data.size() < kExtResumeLength) return corruption("progress record too short");
    QD_ASSIGN_OR_RETURN(DedupExtension e, decode_dedup_extension(x.data));
    const uint8_t* p = x.data.data() + kExtDedupBaseLength;
    ResumeRecord r;
    r.index = e;
    r.cursor = load_be64(p);
    r.pending_offset = load_be64(p + 8);
    r.pending_count = load_be64(p + 16);
    std::copy(p + 24, p + 56, r.pending_checksum.begin());
    return std::optional<ResumeRecord>(r);
  }
  return std::optional<ResumeRecord>();
}

Status load_resume_index(qcow2::Image& image, const ResumeRecord& r, DedupIndex& index,
                         std::vector<PendingRemap>& pending) {
  const qcow2::Geometry& g = image.geometry();
  QD_ASSIGN_OR_RETURN(uint64_t file_size, image.file().size());
  QD_TRY(validate_dedup_extension(r.index, file_size, g.cluster_size, g.refcount_max));
  if (r.index.hash_size != index.hash_size()) return corruption("progress record: other hash");
  if (r.pending_count != 0 && (r.pending_count > file_size / 16 || r.pending_offset > file_size ||
                               r.pending_count * 16 > file_size - r.pending_offset)) {
    return corruption("progress record: pending copies outside the file");
  }
  ResumeLoader loader(image, index, file_size);
  QD_TRY(read_index(image.file(), r.index, loader));
  std::vector<uint8_t> bytes(r.pending_count * 16);
  QD_TRY(image.file().read_exact(r.pending_offset, bytes, "progress record"));
  QD_ASSIGN_OR_RETURN(hash::Sha256 sum, hash::Sha256::create());
  sum.update(bytes);
  if (sum.final() != r.pending_checksum) return corruption("progress record: pending copies checksum");
  pending.clear();
  for (uint64_t i = 0; i < r.pending_count; ++i) {
    PendingRemap p{load_be64(bytes.data() + 16 * i), load_be64(bytes.data() + 16 * i + 8)};
    const bool copy_ok = compressed_descriptor_ok(p.cluster, g, file_size) ||
                         (p.cluster != 0 && p.cluster < (file_size >> g.cluster_bits));
    const bool target_ok = p.target_offset <= kPendingKept ||
                           index_host_offset_ok(p.target_offset, g.cluster_size) ||
                           compressed_descriptor_ok(p.target_offset, g, file_size);
    if (!copy_ok || !target_ok) {
      return corruption("progress record: pending copy " + std::to_string(i) + " is invalid");
    }
    if (p.target_offset > kPendingKept && (p.target_offset & kKeeperCompressed)) {
      loader.compressed().insert(p.target_offset);
    }
    pending.push_back(p);
  }
  return check_mapped(image, std::move(loader.compressed()));
}

Status write_resume_record(qcow2::Image& image, DedupIndex& index, hash::HashAlgorithm algorithm,
                           uint64_t cursor, const std::vector<PendingRemap>& pending) {
  QD_TRY(image.flush());
  QD_ASSIGN_OR_RETURN(uint64_t offset, image.end_of_file_cluster());
  QD_ASSIGN_OR_RETURN(WrittenIndex w, write_index_entries(image.file(), offset, index,
                                                         [](const IndexEntry&) { return true; }));
  ResumeRecord r;
  r.index.index_checksum = w.checksum;
  std::vector<uint8_t> pend(pending.size() * 16);
  for (size_t i = 0; i < pending.size(); ++i) {
    store_be64(pend.data() + 16 * i, pending[i].cluster);
    store_be64(pend.data() + 16 * i + 8, pending[i].target_offset);
  }
  r.pending_offset = offset + w.bytes;
  r.pending_count = pending.size();
  QD_ASSIGN_OR_RETURN(hash::Sha256 sum, hash::Sha256::create());
  sum.update(pend);
  sum.final(r.pending_checksum.data());
  if (!pend.empty()) QD_TRY(image.file().pwrite(r.pending_offset, pend));
  QD_TRY(image.file().flush());
  r.index.hash_algorithm = static_cast<uint32_t>(algorithm);
  r.index.hash_size = static_cast<uint32_t>(index.hash_size());
  r.index.index_offset = w.entries ? offset : 0;
  r.index.index_size = w.bytes;
  r.index.index_entries = w.entries;
  r.index.refcount_cap = image.geometry().refcount_max;
  r.cursor = cursor;
  // The old record stops being valid before the header changes.
  QD_TRY(image.clear_autoclear(kAutoclearResume));
  qcow2::Header h = image.header();
  remove_record(h);
  std::vector<uint8_t> data = encode_dedup_extension(r.index);
  data.resize(kExtDedupBaseLength);  // the record's layout: the extension's first part
  data.resize(kExtResumeLength);
  uint8_t* p = data.data() + kExtDedupBaseLength;
  store_be64(p, r.cursor);
  store_be64(p + 8, r.pending_offset);
  store_be64(p + 16, r.pending_count);
  std::copy(r.pending_checksum.begin(), r.pending_checksum.end(), p + 24);
  h.unknown_extensions.push_back({kExtResume, std::move(data)});
  QD_TRY(image.rewrite_header(h));
  return image.set_autoclear(kAutoclearResume);
}

Status drop_resume_record(qcow2::Image& image) {
  bool present = std::any_of(image.header().unknown_extensions.begin(),
                             image.header().unknown_extensions.end(),
                             [](const auto& e) { return e.type == kExtResume; });
  if (!present && !(image.header().autoclear_features & kAutoclearResume)) return Status::ok();
  QD_TRY(image.clear_autoclear(kAutoclearResume));
  qcow2::Header h = image.header();
  remove_record(h);
  return image.rewrite_header(h);
}

}  // namespace qdedup::dedup
