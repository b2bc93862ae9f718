// Fuzz target "check": the path of `qdedup check` and `qdedup check -r all` on
// an image held in memory (src/qcow2/check*.*, src/dedup/index_check.*), and
// the measurement of `qdedup metrics` on the same analysis (src/qcow2/usage.*).
//
// Input: a whole qcow2 file (at most 1 MiB). analyse_image() and check_dedup()
// must finish with counted findings or an error with a message, never crash.
// Then repair_image() runs on a copy, and its result is held to what the
// check command promises:
// - a repair that reports success leaves an image whose qcow2 analysis finds
//   no leaks and no corruption beyond what analysis called unrepairable (dedup
//   index damage is the index rebuild's business, not repair_image's);
// - the guest data that read back before the repair reads back the same after
//   it, unless the repair said it had to unmap data (unusable offsets);
// - a second repair of the repaired image changes nothing.
#include <cstdint>
#include <map>
#include <vector>

#include "dedup/index_check.h"
#include "fuzz_support.h"
#include "qcow2/check.h"
#include "qcow2/check_repair.h"
#include "qcow2/usage.h"

using namespace qdedup;

namespace {

// Guest bytes read per image: the first clusters of the disk and those the
// L1/L2 walk meets, within fuzz_support.h's budget.
constexpr uint64_t kMaxGuestRead = 1u << 20;

using GuestData = std::map<uint64_t, std::vector<uint8_t>>;

// Guest clusters that read without error, by guest offset: the first four and
// those with an L2 entry, within kMaxGuestRead.
GuestData readable_clusters(const std::vector<uint8_t>& bytes) {
  GuestData out;
  auto img = fuzz::open_image(bytes.data(), bytes.size());
  if (!img) return out;
  const qcow2::Geometry& g = img->geometry();
  uint64_t budget = kMaxGuestRead;
  for (uint64_t gc = 0; gc < g.guest_clusters && budget >= g.cluster_size; ++gc) {
    auto e = img->l2_entry(gc);
    if (!e) continue;
    if (e->word == 0 && e->bitmap == 0 && gc >= 4) continue;
    uint64_t off = gc << g.cluster_bits;
    std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(g.cluster_size, img->virtual_size() - off)));
    budget -= g.cluster_size;
    if (img->read(off, buf)) out.emplace(off, std::move(buf));
  }
  return out;
}

// True if every cluster of `want` reads back the same from the image in `bytes`.
bool reads_same(const std::vector<uint8_t>& bytes, const GuestData& want) {
  if (want.empty()) return true;
  auto img = fuzz::open_image(bytes.data(), bytes.size());
  if (!img) return false;
  for (const auto& [off, data] : want) {
    std::vector<uint8_t> buf(data.size());
    if (!img->read(off, buf) || buf != data) return false;
  }
  return true;
}

// The qcow2 findings of `qdedup check` (the dedup index is checked too, for
// crashes, but its damage is mended by an index rebuild, not by repair_image).
Result<qcow2::CheckCounts> analyse(io::File& f) {
  qcow2::CheckOptions co;
  co.tally_mappings = true;  // as `qdedup metrics` runs it
  QD_ASSIGN_OR_RETURN(qcow2::CheckAnalysis a, qcow2::analyse_image(f, co));
  (void)dedup::check_dedup(f, a, {false, false, 1, {}});
  // `qdedup metrics` measures on the same analysis.
  auto usage = qcow2::measure_usage(f, a, {});
  fuzz::expect_message(usage.status());
  if (usage) {
    uint64_t in_buckets = 0;
    for (const auto& b : usage->histogram) in_buckets += b.clusters;
    if (in_buckets != usage->host_data_clusters || usage->shared_host_clusters > usage->host_data_clusters ||
        usage->host_data_clusters > (a.file_size + a.g.cluster_size - 1) / a.g.cluster_size) {
      fuzz::fuzz_fail("metrics' figures do not add up");
    }
  }
  qcow2::CheckCounts c = a.counts;
  // Corruptions repair cannot mend (kept in a.unrepairable) are not held against it.
  c.corruptions -= std::min(c.corruptions, a.unrepairable);
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInputBytes) return -1;
  io::MemoryFile original("fuzz.qcow2", std::vector<uint8_t>(data, data + size));
  auto before = analyse(original);
  fuzz::expect_message(before.status());
  if (!before) return 0;
  if (original.bytes() != std::vector<uint8_t>(data, data + size)) {
    fuzz::fuzz_fail("check wrote to the image");
  }

  io::MemoryFile repaired("fuzz.qcow2", original.bytes());
  auto summary = qcow2::repair_image(repaired, qcow2::RepairOptions{qcow2::RepairMode::kAll, {}, 0});
  fuzz::expect_message(summary.status());
  if (!summary) return 0;
  auto after = analyse(repaired);
  if (!after) fuzz::fuzz_fail("the repaired image cannot be checked");
  if (after->leaks != 0 || after->corruptions != 0 || after->check_errors != 0) {
    fuzz::fuzz_fail("repair reported success but the image is not clean");
  }

  if (!summary->unmapped_data) {
    if (!reads_same(repaired.bytes(), readable_clusters(original.bytes()))) {
      fuzz::fuzz_fail("repair changed guest data without saying so");
    }
  }

  std::vector<uint8_t> once = repaired.bytes();
  auto again = qcow2::repair_image(repaired, qcow2::RepairOptions{qcow2::RepairMode::kAll, {}, 0});
  if (!again) fuzz::fuzz_fail("a second repair of a repaired image failed");
  if (again->changed || repaired.bytes() != once) {
    fuzz::fuzz_fail("a second repair of a repaired image wrote to it");
  }
  return 0;
}
