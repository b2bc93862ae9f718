// Fuzz target "dedup": the dedup header extension and the on-disk hash index
// (src/dedup/extension.*, src/dedup/index_io.*; docs/format.md sections 3-5).
//
// Input, either:
// - a qcow2 image (it starts with the qcow2 magic; at most 1 MiB): opened
//   read-only in memory; its dedup extension is found and decoded; if it
//   decodes, the index it describes is loaded (checksum, order, refcounts),
//   and for small disks the index is also rebuilt from the image's data;
// - anything else: the payload of a dedup extension, decoded, validated
//   against a few geometries, and re-encoded (encode(decode(x)) must give back
//   the 144 bytes it decoded).
#include <cstdint>
#include <cstring>
#include <span>

#include "dedup/extension.h"
#include "hash/hash_pool.h"
#include "dedup/index.h"
#include "dedup/index_io.h"
#include "fuzz_support.h"
#include "qcow2/format.h"
#include "util/endian.h"

using namespace qdedup;

namespace {

// Larger disks are not rebuilt: rebuild_index() visits every guest cluster and
// hashes each mapped one, which for a hostile image is not bounded by the file.
constexpr uint64_t kMaxRebuildGuestClusters = 1u << 14;
constexpr uint64_t kMaxRebuildBytes = 8u << 20;

void fuzz_extension_bytes(std::span<const uint8_t> bytes) {
  auto e = dedup::decode_dedup_extension(bytes);
  fuzz::expect_message(e.status());
  if (!e) return;
  for (uint64_t cluster_size : {uint64_t{512}, uint64_t{4096}, uint64_t{2} << 20}) {
    for (uint64_t refcount_max : {uint64_t{1}, uint64_t{0xffff}, UINT64_MAX}) {
      fuzz::expect_message(
          dedup::validate_dedup_extension(*e, uint64_t{1} << 30, cluster_size, refcount_max));
    }
  }
  std::vector<uint8_t> encoded = dedup::encode_dedup_extension(*e);
  if (encoded.size() != dedup::kExtDedupLength ||
      std::memcmp(encoded.data(), bytes.data(), dedup::kExtDedupBaseLength) != 0) {
    fuzz::fuzz_fail("encode_dedup_extension(decode(x)) differs from x");
  }
}

void fuzz_image(const uint8_t* data, size_t size) {
  auto img = fuzz::open_image(data, size);
  if (!img) return;
  auto found = dedup::find_dedup_extension(img->header());
  fuzz::expect_message(found.status());
  if (!found || !*found) return;
  const dedup::DedupExtension& ext = **found;
  auto algo = hash::hash_from_id(ext.hash_algorithm);
  if (!algo) fuzz::fuzz_fail("decoded extension with an unknown hash");

  dedup::DedupIndex loaded(std::make_unique<io::MemoryFile>("records"), ext.hash_size);
  Status st = dedup::load_index(*img, ext, loaded);
  fuzz::expect_message(st);
  if (st) {
    if (loaded.size() != ext.index_entries) fuzz::fuzz_fail("load_index: entry count");
    uint64_t seen = 0;
    Status walk = loaded.for_each_sorted([&](const uint8_t*, const dedup::IndexEntry&) {
      ++seen;
      return Status::ok();
    });
    if (!walk || seen != ext.index_entries) fuzz::fuzz_fail("loaded index does not list back");
  }

  const qcow2::Geometry& g = img->geometry();
  if (g.guest_clusters > kMaxRebuildGuestClusters ||
      g.guest_clusters * g.cluster_size > kMaxRebuildBytes) {
    return;
  }
  hash::HashPool pool(*algo, 1);
  dedup::DedupIndex rebuilt(std::make_unique<io::MemoryFile>("records"), pool.digest_size());
  uint64_t cap = ext.refcount_cap ? ext.refcount_cap : g.refcount_max;
  fuzz::expect_message(dedup::rebuild_index(*img, pool, cap, rebuilt));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInputBytes) return -1;
  if (size >= 4 && load_be32(data) == qcow2::kMagic) {
    fuzz_image(data, size);
  } else {
    fuzz_extension_bytes({data, size});
  }
  return 0;
}
