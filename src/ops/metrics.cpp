#include "ops/metrics.h"

#include <array>

#include "dedup/index.h"
#include "dedup/index_check.h"
#include "qcow2/chain.h"
#include "qcow2/check.h"

namespace qdedup::ops {

namespace {

Status measure_index(io::File& file, qcow2::CheckAnalysis& a, ImageMetrics& m) {
  dedup::DedupCheckResult d = dedup::check_dedup(file, a, {});
  m.index.state = d.state;
  m.index.hash = d.hash;
  m.index.entries = d.entries;
  auto found = dedup::find_dedup_extension(a.header);
  if (!found || !*found) return Status::ok();
  const dedup::DedupExtension& ext = **found;
  m.counters = ext.counters;
  m.index.refcount_cap = ext.refcount_cap;
  if (d.state != dedup::IndexState::kValid || ext.index_size == 0) return Status::ok();
  const uint64_t cs = a.g.cluster_size;
  const uint64_t first = ext.index_offset / cs;
  const uint64_t end = (ext.index_offset + ext.index_size + cs - 1) / cs;
  m.index.bytes = (end - first) * cs;
  // The index lies in clusters of refcount 0 (docs/format.md, section 5),
  // which the qcow2 layer counted as free; while it is valid they are not.
  const uint64_t file_clusters = (a.file_size + cs - 1) / cs;
  if (first < file_clusters) m.usage.free_clusters -= std::min(end, file_clusters) - first;
  static_assert(dedup::DedupIndex::kSegments == std::tuple_size_v<decltype(d.entries_by_first_byte)>);
  const dedup::DedupIndex::Footprint f = dedup::DedupIndex::footprint(d.entries_by_first_byte);
  m.index.ram_bytes = f.bytes;
  m.index.load_factor = f.slots ? static_cast<double>(ext.index_entries) / static_cast<double>(f.slots) : 0;
  return Status::ok();
}

Status measure_image(io::FileSystem& fs, const MetricsJob& job, ImageMetrics& m) {
  io::OpenOptions oo;
  oo.lock = job.force_share ? io::LockMode::kForceShare : io::LockMode::kRead;
  QD_ASSIGN_OR_RETURN(std::unique_ptr<io::File> file, fs.open(m.file, oo));
  QD_ASSIGN_OR_RETURN(std::string format, qcow2::probe_format(*file));
  if (format != "qcow2") return invalid_argument("not a qcow2 image (metrics are about qcow2 images)");
  qcow2::CheckOptions co;
  co.tally_mappings = true;  // measure_usage's figures, from the same walk
  QD_ASSIGN_OR_RETURN(qcow2::CheckAnalysis a, qcow2::analyse_image(*file, co));
  QD_ASSIGN_OR_RETURN(m.allocated_size, file->allocated_size());
  auto found = dedup::find_dedup_extension(a.header);
  qcow2::UsageOptions uo;
  if (found && *found) uo.refcount_cap = (*found)->refcount_cap;
  QD_ASSIGN_OR_RETURN(m.usage, qcow2::measure_usage(*file, a, uo));
  return measure_index(*file, a, m);
}

}  // namespace

double ImageMetrics::dedup_ratio() const {
  if (usage.active_distinct_targets == 0) return 1.0;
  return static_cast<double>(mapped_clusters()) / static_cast<double>(usage.active_distinct_targets);
}

uint64_t ImageMetrics::metadata_bytes() const {
  const qcow2::Usage& u = usage;
  return u.header_bytes + u.l1_bytes + u.l2_bytes + u.refcount_bytes + u.snapshot_table_bytes +
         u.bitmap_bytes + index.bytes;
}

uint64_t MetricsReport::failed() const {
  uint64_t n = 0;
  for (const ImageMetrics& m : images) n += m.error.empty() ? 0 : 1;
  return n;
}

MetricsTotals MetricsReport::totals() const {
  MetricsTotals t;
  for (const ImageMetrics& m : images) {
    if (!m.error.empty()) continue;
    const qcow2::Usage& u = m.usage;
    ++t.images;
    t.virtual_size += u.virtual_size;
    t.file_size += u.file_size;
    t.allocated_size += m.allocated_size;
    t.guest_bytes += m.mapped_clusters() * u.cluster_size;
    t.target_bytes += u.active_distinct_targets * u.cluster_size;
    t.host_data_bytes += u.host_data_clusters * u.cluster_size;
    t.metadata_bytes += m.metadata_bytes();
    t.free_bytes += u.free_clusters * u.cluster_size;
  }
  return t;
}

MetricsReport metrics(io::FileSystem& fs, const MetricsJob& job) {
  MetricsReport r;
  for (const std::string& file : job.files) {
    ImageMetrics m;
    m.file = file;
    Status st = measure_image(fs, job, m);
    if (!st) {
      ImageMetrics failed;
      failed.file = file;
      failed.error = st.message();
      m = std::move(failed);
    }
    r.images.push_back(std::move(m));
  }
  return r;
}

}  // namespace qdedup::ops
