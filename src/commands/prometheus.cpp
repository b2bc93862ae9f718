#include "commands/prometheus.h"

#include <functional>
#include <vector>

#include "util/text.h"

namespace qdedup::commands {

namespace {

using ops::ImageMetrics;

// One metric family: a value per image measured.
struct Family {
  const char* name;
  const char* type;  // gauge or counter
  const char* help;
  std::function<double(const ImageMetrics&)> value;
  bool needs_extension = false;  // only images with a readable dedup extension
};

std::vector<Family> families() {
  auto cs = [](const ImageMetrics& m) { return static_cast<double>(m.usage.cluster_size); };
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  return {
      {"qdedup_virtual_size_bytes", "gauge", "Virtual disk size.",
       [=](const ImageMetrics& m) { return d(m.usage.virtual_size); }},
      {"qdedup_file_size_bytes", "gauge", "Size of the image file.",
       [=](const ImageMetrics& m) { return d(m.usage.file_size); }},
      {"qdedup_allocated_size_bytes", "gauge", "Bytes the image file takes on the host (du).",
       [=](const ImageMetrics& m) { return d(m.allocated_size); }},
      {"qdedup_guest_allocated_bytes", "gauge",
       "Guest bytes the active disk maps to data (normal and compressed clusters).",
       [=](const ImageMetrics& m) { return d(m.mapped_clusters()) * cs(m); }},
      {"qdedup_zero_clusters", "gauge", "Zero clusters of the active disk.",
       [=](const ImageMetrics& m) { return d(m.usage.active_zero_clusters); }},
      {"qdedup_compressed_clusters", "gauge", "Compressed clusters of the active disk.",
       [=](const ImageMetrics& m) { return d(m.usage.active_compressed_clusters); }},
      {"qdedup_snapshot_only_bytes", "gauge", "Host data bytes that only snapshots reference.",
       [=](const ImageMetrics& m) { return d(m.usage.snapshot_only_host_clusters) * cs(m); }},
      {"qdedup_host_data_bytes", "gauge", "Host clusters holding guest data, in bytes.",
       [=](const ImageMetrics& m) { return d(m.usage.host_data_clusters) * cs(m); }},
      {"qdedup_dedup_ratio", "gauge", "Mapped guest clusters per distinct host target (active disk).",
       [=](const ImageMetrics& m) { return m.dedup_ratio(); }},
      {"qdedup_saved_bytes", "gauge", "Guest bytes not stored thanks to sharing (active disk).",
       [=](const ImageMetrics& m) { return d(m.bytes_saved()); }},
      {"qdedup_metadata_bytes", "gauge", "Header, tables, refcounts, snapshot table, bitmaps and index.",
       [=](const ImageMetrics& m) { return d(m.metadata_bytes()); }},
      {"qdedup_free_bytes", "gauge", "Unused clusters inside the image file, in bytes.",
       [=](const ImageMetrics& m) { return d(m.usage.free_clusters) * cs(m); }},
      {"qdedup_shared_clusters", "gauge", "Host data clusters referenced more than once.",
       [=](const ImageMetrics& m) { return d(m.usage.shared_host_clusters); }},
      {"qdedup_clusters_at_cap", "gauge", "Host data clusters whose references reached the refcount cap.",
       [=](const ImageMetrics& m) { return d(m.usage.clusters_at_cap); }},
      {"qdedup_index_entries", "gauge", "Entries of the dedup index.",
       [=](const ImageMetrics& m) { return d(m.index.entries); }, true},
      {"qdedup_index_bytes", "gauge", "Bytes of the dedup index on disk (valid index).",
       [=](const ImageMetrics& m) { return d(m.index.bytes); }, true},
      {"qdedup_index_ram_bytes", "gauge", "RAM the dedup index takes when loaded (valid index).",
       [=](const ImageMetrics& m) { return d(m.index.ram_bytes); }, true},
      {"qdedup_last_run_timestamp_seconds", "gauge",
       "When a qdedup run last wrote the dedup extension (0: unknown).",
       [=](const ImageMetrics& m) { return d(m.counters->last_run_time); }, true},
  };
}

// Metric names of the lifetime counters: qdedup_ + the JSON key with '_' + _total.
std::string counter_name(const char* key) {
  std::string n = std::string("qdedup_") + key + "_total";
  for (char& c : n) c = c == '-' ? '_' : c;
  return n;
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string image_label(const ImageMetrics& m) { return "image=\"" + prometheus_label_value(m.file) + "\""; }

void header(std::FILE* out, const std::string& name, const char* type, const char* help) {
  std::fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name.c_str(), help, name.c_str(), type);
}

void render_histogram(const std::vector<const ImageMetrics*>& images, std::FILE* out) {
  const char* name = "qdedup_cluster_references";
  header(out, name, "histogram", "References per host data cluster (refcount).");
  for (const ImageMetrics* m : images) {
    const std::string label = image_label(*m);
    uint64_t cumulative = 0;
    for (const qcow2::RefcountBucket& b : m->usage.histogram) {
      cumulative += b.clusters;
      std::fprintf(out, "%s_bucket{%s,le=\"%llu\"} %llu\n", name, label.c_str(),
                   static_cast<unsigned long long>(b.le), static_cast<unsigned long long>(cumulative));
    }
    std::fprintf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, label.c_str(),
                 static_cast<unsigned long long>(cumulative));
    std::fprintf(out, "%s_sum{%s} %llu\n", name, label.c_str(),
                 static_cast<unsigned long long>(m->usage.total_references));
    std::fprintf(out, "%s_count{%s} %llu\n", name, label.c_str(), static_cast<unsigned long long>(cumulative));
  }
}

void render_index_state(const std::vector<const ImageMetrics*>& images, std::FILE* out) {
  header(out, "qdedup_index_state", "gauge", "1 for the dedup index's state (absent, valid, stale, damaged).");
  for (const ImageMetrics* m : images) {
    for (dedup::IndexState state : dedup::kIndexStates) {
      std::fprintf(out, "qdedup_index_state{%s,state=\"%s\"} %d\n", image_label(*m).c_str(),
                   dedup::index_state_name(state), m->index.state == state ? 1 : 0);
    }
  }
}

}  // namespace

std::string prometheus_label_value(std::string_view s) {
  std::string out;
  for (char c : to_valid_utf8(s)) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void render_prometheus(const ops::MetricsReport& r, std::FILE* out) {
  std::vector<const ImageMetrics*> images, with_extension;
  for (const ImageMetrics& m : r.images) {
    if (!m.error.empty()) continue;
    images.push_back(&m);
    if (m.counters) with_extension.push_back(&m);
  }
  for (const Family& f : families()) {
    const auto& subjects = f.needs_extension ? with_extension : images;
    if (subjects.empty()) continue;
    header(out, f.name, f.type, f.help);
    for (const ImageMetrics* m : subjects) {
      std::fprintf(out, "%s{%s} %s\n", f.name, image_label(*m).c_str(), number(f.value(*m)).c_str());
    }
  }
  if (!images.empty()) {
    render_histogram(images, out);
    render_index_state(images, out);
  }
  if (!with_extension.empty()) {
    for (const auto& [key, unused] : dedup::counter_fields({})) {
      const std::string name = counter_name(key);
      header(out, name, "counter", "Lifetime counter of the dedup extension (docs/format.md, section 3).");
      for (const ImageMetrics* m : with_extension) {
        for (const auto& [k, value] : dedup::counter_fields(*m->counters)) {
          if (std::string_view(k) == key) {
            std::fprintf(out, "%s{%s} %llu\n", name.c_str(), image_label(*m).c_str(),
                         static_cast<unsigned long long>(value));
          }
        }
      }
    }
  }
  if (!with_extension.empty()) {
    header(out, "qdedup_last_run_info", "gauge", "The qdedup version of the last run that wrote the extension.");
    for (const ImageMetrics* m : with_extension) {
      std::fprintf(out, "qdedup_last_run_info{%s,version=\"%s\"} 1\n", image_label(*m).c_str(),
                   prometheus_label_value(m->counters->last_run_version).c_str());
    }
  }
  std::fprintf(out, "# HELP qdedup_metrics_failed_images Images that could not be measured.\n"
                    "# TYPE qdedup_metrics_failed_images gauge\nqdedup_metrics_failed_images %llu\n",
               static_cast<unsigned long long>(r.failed()));
}

}  // namespace qdedup::commands
