// qdedup metrics [--output=human|json|prometheus] [--json] [-U] IMAGE [IMAGE...]
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "commands/command.h"
#include "commands/dedup_text.h"
#include "commands/prometheus.h"
#include "io/file_system.h"
#include "ops/metrics.h"
#include "util/size.h"
#include "util/text.h"

namespace qdedup::commands {

namespace {

using nlohmann::ordered_json;
using ops::ImageMetrics;

struct MetricsArgs {
  std::vector<std::string> images;
  std::string output = "human";
  bool json = false;
  bool force_share = false;
};

// Histogram rows up to the last non-empty bucket (all of them when empty).
size_t histogram_rows(const qcow2::Usage& u) {
  size_t rows = u.histogram.size();
  while (rows > 1 && u.histogram[rows - 1].clusters == 0) --rows;
  return rows;
}

std::string bucket_label(const std::vector<qcow2::RefcountBucket>& h, size_t i) {
  const uint64_t lo = i == 0 ? 1 : h[i - 1].le + 1;
  return lo == h[i].le ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(h[i].le);
}

std::string ratio_text(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", r);
  return buf;
}

// ---- JSON -------------------------------------------------------------

ordered_json metadata_json(const ImageMetrics& m) {
  const qcow2::Usage& u = m.usage;
  return {{"header", u.header_bytes},   {"l1-tables", u.l1_bytes},
          {"l2-tables", u.l2_bytes},    {"refcounts", u.refcount_bytes},
          {"snapshot-table", u.snapshot_table_bytes}, {"bitmaps", u.bitmap_bytes},
          {"index", m.index.bytes},     {"total", m.metadata_bytes()}};
}

ordered_json sharing_json(const qcow2::Usage& u, uint64_t cap) {
  ordered_json j;
  j["shared-clusters"] = u.shared_host_clusters;
  j["references"] = u.total_references;
  j["refcount-cap"] = cap;
  j["clusters-at-cap"] = u.clusters_at_cap;
  ordered_json hist = ordered_json::array();
  for (const auto& b : u.histogram) hist.push_back({{"le", b.le}, {"clusters", b.clusters}});
  j["histogram"] = hist;
  ordered_json top = ordered_json::array();
  for (const auto& s : u.most_shared) {
    ordered_json o{{"offset", s.host_offset}, {"references", s.references}, {"compressed", s.compressed}};
    o["repeated-byte"] = s.repeated_byte ? ordered_json(*s.repeated_byte) : ordered_json(nullptr);
    top.push_back(o);
  }
  j["most-shared"] = top;
  return j;
}

ordered_json index_json(const ops::IndexMetrics& i) {
  ordered_json j{{"state", dedup::index_state_name(i.state)}};
  if (i.state == dedup::IndexState::kAbsent) return j;
  if (!i.hash.empty()) j["hash"] = i.hash;
  j["entries"] = i.entries;
  j["bytes"] = i.bytes;
  if (i.state == dedup::IndexState::kValid) {
    j["ram-bytes"] = i.ram_bytes;
    j["load-factor"] = i.load_factor;
  }
  return j;
}

// The cap the histogram ends at: the extension's, else the refcount width's maximum.
uint64_t effective_cap(const ImageMetrics& m) {
  return m.usage.histogram.empty() ? 0 : m.usage.histogram.back().le;
}

ordered_json image_json(const ImageMetrics& m) {
  ordered_json j;
  j["filename"] = to_valid_utf8(m.file);
  if (!m.error.empty()) {
    j["error"] = to_valid_utf8(m.error);
    return j;
  }
  const qcow2::Usage& u = m.usage;
  const uint64_t cs = u.cluster_size;
  j["virtual-size"] = u.virtual_size;
  j["cluster-size"] = cs;
  j["file-size"] = u.file_size;
  j["allocated-size"] = m.allocated_size;
  j["guest-bytes-allocated"] = m.mapped_clusters() * cs;
  j["data-clusters"] = u.active_data_clusters;
  j["compressed-clusters"] = u.active_compressed_clusters;
  j["zero-clusters"] = u.active_zero_clusters;
  j["snapshot-clusters"] = u.snapshot_mapped_clusters;
  j["snapshot-only-bytes"] = u.snapshot_only_host_clusters * cs;
  j["host-data-clusters"] = u.host_data_clusters;
  j["host-data-bytes"] = u.host_data_clusters * cs;
  j["host-compressed-clusters"] = u.host_compressed_clusters;
  j["dedup-ratio"] = m.dedup_ratio();
  j["bytes-saved"] = m.bytes_saved();
  j["free-clusters"] = u.free_clusters;
  j["metadata-bytes"] = metadata_json(m);
  j["sharing"] = sharing_json(u, effective_cap(m));
  j["index"] = index_json(m.index);
  if (m.counters) {
    ordered_json c;
    for (const auto& [key, value] : dedup::counter_fields(*m.counters)) c[key] = value;
    c["last-run-time"] = m.counters->last_run_time;
    c["last-run-version"] = to_valid_utf8(m.counters->last_run_version);
    j["counters"] = c;
  }
  return j;
}

ordered_json totals_json(const ops::MetricsTotals& t, uint64_t failed) {
  return {{"images", t.images},
          {"failed", failed},
          {"virtual-size", t.virtual_size},
          {"file-size", t.file_size},
          {"allocated-size", t.allocated_size},
          {"guest-bytes-allocated", t.guest_bytes},
          {"host-data-bytes", t.host_data_bytes},
          {"dedup-ratio", t.dedup_ratio()},
          {"bytes-saved", t.bytes_saved()},
          {"metadata-bytes", t.metadata_bytes},
          {"free-bytes", t.free_bytes}};
}

// ---- human ------------------------------------------------------------

void row(const char* key, const std::string& value) { std::printf("  %-26s %s\n", key, value.c_str()); }

std::string bytes_text(uint64_t bytes) {
  return format_iec_size(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

void render_histogram(const qcow2::Usage& u) {
  std::printf("  references per data cluster:\n");
  uint64_t most = 1;
  for (const auto& b : u.histogram) most = std::max(most, b.clusters);
  for (size_t i = 0; i < histogram_rows(u); ++i) {
    const uint64_t n = u.histogram[i].clusters;
    // Bars of up to 40 characters; any non-empty bucket gets at least one.
    size_t width = static_cast<size_t>(n * 40 / most);
    if (n && width == 0) width = 1;
    std::printf("    %13s %12llu%s%s\n", bucket_label(u.histogram, i).c_str(),
                static_cast<unsigned long long>(n), width ? " " : "", std::string(width, '#').c_str());
  }
}

void render_most_shared(const qcow2::Usage& u) {
  if (u.most_shared.empty()) return;
  std::printf("  most shared clusters:\n");
  for (const auto& s : u.most_shared) {
    std::string what = s.compressed ? "compressed" : "";
    if (s.repeated_byte) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "every byte 0x%02x", *s.repeated_byte);
      what = buf;
    }
    std::printf("    %18s %12llu refs%s%s\n", hex(s.host_offset).c_str(),
                static_cast<unsigned long long>(s.references), what.empty() ? "" : "  ", what.c_str());
  }
}

void render_index(const ImageMetrics& m) {
  const ops::IndexMetrics& i = m.index;
  std::string state = dedup::index_state_name(i.state);
  if (!i.hash.empty()) state += " (" + i.hash + ", " + std::to_string(i.entries) + " entries)";
  row("dedup index", state);
  if (i.state == dedup::IndexState::kValid) {
    row("index on disk", bytes_text(i.bytes));
    row("index in RAM when loaded", bytes_text(i.ram_bytes) + ", load factor " + ratio_text(i.load_factor));
  }
  if (!m.counters) return;
  std::printf("  lifetime counters:\n");
  print_counters(stdout, *m.counters, "    ", 24);
}

void render_image(const ImageMetrics& m) {
  const qcow2::Usage& u = m.usage;
  const uint64_t cs = u.cluster_size;
  std::printf("image: %s\n", escape_for_display(m.file).c_str());
  row("virtual size", bytes_text(u.virtual_size));
  row("cluster size", std::to_string(cs));
  row("file size", bytes_text(u.file_size));
  row("allocated on the host", bytes_text(m.allocated_size));
  row("guest data", bytes_text(m.mapped_clusters() * cs) + ": " + std::to_string(u.active_data_clusters) +
                        " data, " + std::to_string(u.active_compressed_clusters) + " compressed clusters");
  row("zero clusters", std::to_string(u.active_zero_clusters));
  if (u.snapshot_mapped_clusters || u.snapshot_only_host_clusters) {
    row("snapshots map", std::to_string(u.snapshot_mapped_clusters) + " clusters, " +
                             bytes_text(u.snapshot_only_host_clusters * cs) + " of their own");
  }
  row("host data clusters", std::to_string(u.host_data_clusters) + " (" +
                                std::to_string(u.host_compressed_clusters) + " with compressed data), " +
                                bytes_text(u.host_data_clusters * cs));
  row("dedup ratio", ratio_text(m.dedup_ratio()));
  row("bytes saved", bytes_text(m.bytes_saved()));
  row("metadata", bytes_text(m.metadata_bytes()));
  row("free clusters in the file", std::to_string(u.free_clusters));
  row("shared clusters", std::to_string(u.shared_host_clusters) + ", " + std::to_string(u.clusters_at_cap) +
                             " at the refcount cap (" + std::to_string(effective_cap(m)) + ")");
  render_histogram(u);
  render_most_shared(u);
  render_index(m);
}

void render_human(const ops::MetricsReport& r) {
  bool first = true;
  for (const ImageMetrics& m : r.images) {
    if (!m.error.empty()) continue;
    if (!first) std::printf("\n");
    first = false;
    render_image(m);
  }
  if (r.images.size() < 2) return;
  const ops::MetricsTotals t = r.totals();
  std::printf("\ntotal: %llu images", static_cast<unsigned long long>(t.images));
  if (r.failed()) std::printf(" (%llu failed)", static_cast<unsigned long long>(r.failed()));
  std::printf("\n");
  row("virtual size", bytes_text(t.virtual_size));
  row("file size", bytes_text(t.file_size));
  row("allocated on the host", bytes_text(t.allocated_size));
  row("guest data", bytes_text(t.guest_bytes));
  row("host data", bytes_text(t.host_data_bytes));
  row("dedup ratio", ratio_text(t.dedup_ratio()));
  row("bytes saved", bytes_text(t.bytes_saved()));
  row("metadata", bytes_text(t.metadata_bytes));
  row("free in the files", bytes_text(t.free_bytes));
}

int run_metrics(const MetricsArgs& a) {
  ops::MetricsJob job;
  job.files = a.images;
  job.force_share = a.force_share;
  const ops::MetricsReport r = ops::metrics(io::posix_file_system(), job);
  for (const ImageMetrics& m : r.images) {
    if (m.error.empty()) continue;
    std::fprintf(stderr, "%s: %s: %s\n", program_name(), escape_for_display(m.file).c_str(),
                 escape_for_display(m.error).c_str());
  }
  const std::string output = a.json ? "json" : a.output;
  if (output == "json") {
    ordered_json images = ordered_json::array();
    for (const ImageMetrics& m : r.images) images.push_back(image_json(m));
    ordered_json j{{"images", images}, {"total", totals_json(r.totals(), r.failed())}};
    std::cout << j.dump(4) << "\n";
  } else if (output == "prometheus") {
    render_prometheus(r, stdout);
  } else if (!quiet()) {
    render_human(r);
  }
  std::fflush(stdout);
  return r.failed() ? kExitError : kExitOk;
}

}  // namespace

std::function<int()> register_metrics(CLI::App& app) {
  auto a = std::make_shared<MetricsArgs>();
  app.add_option("--output", a->output, "Report format")
      ->check(CLI::IsMember({"human", "json", "prometheus"}));
  app.add_flag("--json", a->json, "Same as --output=json");
  app.add_flag("-U,--force-share", a->force_share, "Open even if another process is writing the image");
  app.add_option("IMAGES", a->images, "IMAGE [IMAGE...]")->required();
  app.footer("Reads metadata only (and the most shared clusters' bytes).\n"
             "Exit status: 0, or 1 if any image could not be measured.\n"
             "Example:\n  qdedup metrics --output=prometheus *.qcow2 > /var/lib/node_exporter/qdedup.prom");
  return [a] { return run_metrics(*a); };
}

}  // namespace qdedup::commands
