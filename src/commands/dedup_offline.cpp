// qdedup dedup-offline [-o dedup=HASH[,dedup_verify=on]] [--no-index] [--dry-run] [-j N]
//                      [-p] [-U] [--output=human|json] [--json] [--max-rate RATE] IMAGE...
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "commands/command.h"
#include "ops/dedup_offline.h"
#include "util/progress.h"
#include "util/size.h"
#include "util/text.h"

namespace qdedup::commands {

namespace {

std::atomic<bool> g_cancel{false};

// The first SIGINT/SIGTERM asks the run to stop after its current step; a
// second one ends the process at once (crash-safe too: at worst leaks).
extern "C" void on_signal(int sig) {
  g_cancel.store(true);
  std::signal(sig, SIG_DFL);
}

struct DedupOfflineArgs {
  std::vector<std::string> options;
  bool no_index = false;
  bool dry_run = false;
  bool against_backing = false;
  bool force_share = false;
  unsigned jobs = 0;
  unsigned threads = 0;
  bool progress = false;
  std::string output = "human";
  bool json = false;
  std::string max_rate;
  std::vector<std::string> images;
};

const char* outcome_name(ops::ImageOutcome o) {
  switch (o) {
    case ops::ImageOutcome::kDone: return "done";
    case ops::ImageOutcome::kInterrupted: return "interrupted";
    case ops::ImageOutcome::kFailed: return "failed";
  }
  return "failed";
}

// The plan's and the run's figures (an image's, or the batch's total).
nlohmann::ordered_json stats_json(const dedup::OfflineStats& s, uint64_t cluster_size) {
  nlohmann::ordered_json j;
  j["data-clusters-before"] = s.data_clusters;
  j["data-clusters-after"] = s.data_clusters_after();
  j["duplicate-clusters"] = s.duplicate_clusters;
  j["zero-clusters"] = s.zero_clusters;
  j["preallocated-zero-clusters"] = s.preallocated_zero;
  j["backing-clusters"] = s.backing_clusters;
  j["compressed-clusters"] = s.compressed_clusters;
  j["compressed-copies"] = s.compressed_copies;
  j["compressed-host-clusters-freed"] = s.compressed_hosts_freed;
  j["undecodable-compressed-clusters"] = s.undecodable_compressed;
  j["entries-remapped"] = s.entries_remapped;
  j["refcount-cap-overflows"] = s.cap_overflows;
  j["verify-mismatches"] = s.verify_mismatches;
  j["bytes-read"] = s.bytes_read;
  j["bytes-freed"] = s.clusters_freed() * cluster_size;
  if (!s.estimates.empty()) {
    nlohmann::ordered_json est = nlohmann::ordered_json::array();
    for (const auto& e : s.estimates) {
      est.push_back({{"cluster-size", e.granularity},
                     {"chunks", e.chunks},
                     {"zero-chunks", e.zero_chunks},
                     {"distinct-chunks", e.distinct_chunks},
                     {"data-bytes-after", e.bytes_after()}});
    }
    j["at-other-cluster-sizes"] = est;
  }
  return j;
}

nlohmann::ordered_json image_json(const ops::DedupOfflineImage& i) {
  nlohmann::ordered_json j;
  j["filename"] = to_valid_utf8(i.file);
  j["status"] = outcome_name(i.outcome);
  if (i.outcome == ops::ImageOutcome::kFailed) {
    j["error"] = to_valid_utf8(i.error);
    return j;
  }
  j["dry-run"] = i.dry_run;
  j["hash"] = i.hash;
  j["cluster-size"] = i.cluster_size;
  j.update(stats_json(i.stats, i.cluster_size));
  j["leaked-clusters-freed"] = i.leaks_freed;
  j["file-size-before"] = i.file_size_before;
  j["file-size-after"] = i.file_size_after;
  j["allocated-bytes-before"] = i.allocated_before;
  j["allocated-bytes-after"] = i.allocated_after;
  j["index-written"] = i.index_written;
  j["index-entries"] = i.index_entries;
  if (!i.index_note.empty()) j["index-note"] = to_valid_utf8(i.index_note);
  j["resumed"] = i.resumed;
  if (!i.resume_note.empty()) j["resume-note"] = to_valid_utf8(i.resume_note);
  j["seconds"] = i.seconds;
  return j;
}

// Sums of the images that were done or interrupted.
struct Totals {
  dedup::OfflineStats stats;
  uint64_t bytes_freed = 0, leaks_freed = 0;
  uint64_t allocated_before = 0, allocated_after = 0;
  size_t done = 0, failed = 0, interrupted = 0;
};

Totals totals(const ops::DedupOfflineReport& r) {
  Totals t;
  for (const auto& i : r.images) {
    if (i.outcome == ops::ImageOutcome::kFailed) {
      ++t.failed;
      continue;
    }
    (i.outcome == ops::ImageOutcome::kDone ? t.done : t.interrupted) += 1;
    t.stats += i.stats;
    t.bytes_freed += i.bytes_freed();
    t.leaks_freed += i.leaks_freed;
    t.allocated_before += i.allocated_before;
    t.allocated_after += i.allocated_after;
  }
  return t;
}

nlohmann::ordered_json report_json(const ops::DedupOfflineReport& r) {
  nlohmann::ordered_json j;
  nlohmann::ordered_json images = nlohmann::ordered_json::array();
  for (const auto& i : r.images) images.push_back(image_json(i));
  j["images"] = images;
  Totals t = totals(r);
  nlohmann::ordered_json total = stats_json(t.stats, 0);
  total["bytes-freed"] = t.bytes_freed;
  total["leaked-clusters-freed"] = t.leaks_freed;
  total["allocated-bytes-before"] = t.allocated_before;
  total["allocated-bytes-after"] = t.allocated_after;
  total["images-done"] = t.done;
  total["images-interrupted"] = t.interrupted;
  total["images-failed"] = t.failed;
  j["total"] = total;
  return j;
}

double ratio(const dedup::OfflineStats& s) {
  const uint64_t after = s.data_clusters_after();
  return after ? static_cast<double>(s.data_clusters) / static_cast<double>(after) : 1.0;
}

std::string human_line(const dedup::OfflineStats& s, uint64_t bytes_freed, bool dry_run) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s %llu clusters (%s): %llu duplicate, %llu zero, %llu preallocated zero, "
                "%llu as in the backing file; data clusters %llu -> %llu (ratio %.3f)",
                dry_run ? "would free" : "freed",
                static_cast<unsigned long long>(s.clusters_freed()), format_iec_size(bytes_freed).c_str(),
                static_cast<unsigned long long>(s.duplicate_clusters),
                static_cast<unsigned long long>(s.zero_clusters),
                static_cast<unsigned long long>(s.preallocated_zero),
                static_cast<unsigned long long>(s.backing_clusters),
                static_cast<unsigned long long>(s.data_clusters),
                static_cast<unsigned long long>(s.data_clusters_after()), ratio(s));
  return buf;
}

void render_human(const ops::DedupOfflineReport& r, bool dry_run) {
  for (const auto& i : r.images) {
    if (i.outcome == ops::ImageOutcome::kFailed) continue;  // reported on stderr
    std::string line = escape_for_display(i.file) + ": " + human_line(i.stats, i.bytes_freed(), dry_run);
    if (!dry_run) {
      line += "; du " + format_iec_size(i.allocated_before) + " -> " + format_iec_size(i.allocated_after);
    }
    if (i.leaks_freed) line += "; " + std::to_string(i.leaks_freed) + " leaked clusters freed";
    if (i.stats.cap_overflows) {
      line += "; " + std::to_string(i.stats.cap_overflows) + " copies kept at the refcount cap";
    }
    if (i.stats.compressed_clusters) {
      line += "; " + std::to_string(i.stats.compressed_clusters) + " compressed (" +
              std::to_string(i.stats.compressed_copies) + " of them copies)";
    }
    if (i.stats.undecodable_compressed) {
      line += "; " + std::to_string(i.stats.undecodable_compressed) +
              " compressed clusters that do not decompress left as they are";
    }
    char t[64];
    std::snprintf(t, sizeof t, "; %.2f s", i.seconds);
    line += t;
    if (i.resumed) line += " (resumed an interrupted run: figures are this run's)";
    if (i.outcome == ops::ImageOutcome::kInterrupted) line += " (interrupted: run again to finish)";
    std::printf("%s\n", line.c_str());
    for (const auto& e : i.stats.estimates) {
      const uint64_t before = i.stats.data_clusters * i.cluster_size;
      std::printf("%s: at %s clusters the same data would need %s (%s saved, ratio %.3f; "
                  "'qdedup convert -O qcow2 -o dedup=sha256,cluster_size=%lluk' makes such an "
                  "image)\n",
                  escape_for_display(i.file).c_str(), format_iec_size(e.granularity).c_str(),
                  format_iec_size(e.bytes_after()).c_str(),
                  format_iec_size(before > e.bytes_after() ? before - e.bytes_after() : 0).c_str(),
                  e.bytes_after() ? static_cast<double>(before) / static_cast<double>(e.bytes_after()) : 1.0,
                  static_cast<unsigned long long>(e.granularity / 1024));
    }
    if (!i.resume_note.empty()) {
      std::printf("%s: %s\n", escape_for_display(i.file).c_str(), escape_for_display(i.resume_note).c_str());
    }
    if (!i.index_note.empty()) {
      std::printf("%s: no dedup index written: %s\n", escape_for_display(i.file).c_str(),
                  escape_for_display(i.index_note).c_str());
    }
  }
  if (r.images.size() > 1) {
    Totals t = totals(r);
    std::printf("total (%zu done, %zu interrupted, %zu failed): %s\n", t.done, t.interrupted, t.failed,
                human_line(t.stats, t.bytes_freed, dry_run).c_str());
  }
}

Status parse_options(const std::vector<std::string>& options, ops::DedupOfflineJob& job) {
  for (const std::string& group : options) {
    size_t start = 0;
    while (start <= group.size()) {
      size_t comma = group.find(',', start);
      if (comma == std::string::npos) comma = group.size();
      const std::string kv = group.substr(start, comma - start);
      start = comma + 1;
      const auto eq = kv.find('=');
      const std::string key = kv.substr(0, eq);
      const std::string value = eq == std::string::npos ? "" : kv.substr(eq + 1);
      if (key == "dedup") {
        if (value.empty() || value == "off") return invalid_argument("dedup=" + value + ": name a hash");
        job.dedup = value;
      } else if (key == "dedup_verify") {
        if (value != "on" && value != "off") return invalid_argument("dedup_verify must be on or off");
        job.verify = value == "on";
      } else {
        return invalid_argument("unknown option '" + escape_for_display(key) +
                                "' (dedup-offline takes dedup= and dedup_verify=)");
      }
    }
  }
  return Status::ok();
}

int run_dedup_offline(const DedupOfflineArgs& a) {
  ops::DedupOfflineJob job;
  job.images = a.images;
  if (Status st = parse_options(a.options, job); !st) return report_error(st);
  if (a.force_share && !a.dry_run) {
    return report_error(invalid_argument("-U needs --dry-run (a real run needs the image to itself)"));
  }
  if (!a.max_rate.empty()) {
    Result<uint64_t> rate = parse_size(a.max_rate);
    if (!rate || *rate == 0) return report_error(invalid_argument("--max-rate: '" + a.max_rate + "' is not a rate"));
    job.max_read_rate = *rate;
  }
  job.no_index = a.no_index;
  job.dry_run = a.dry_run;
  job.against_backing = a.against_backing;
  job.force_share = a.force_share;
  job.jobs = a.jobs;
  job.threads = a.threads;
  job.cancel = &g_cancel;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::unique_ptr<Progress> progress;
  if (a.progress && !quiet()) {
    // Bytes of the batch's files walked, over their total (known once the run
    // starts); on a terminal, the images' state after the bar.
    const size_t images = a.images.size();
    job.progress = [&progress, images](const ops::DedupOfflineProgress& p) {
      if (!progress) progress = std::make_unique<Progress>(true, std::max<uint64_t>(p.total, 1));
      std::string note = std::to_string(p.finished + p.failed) + "/" + std::to_string(images);
      if (p.failed) note += " (" + std::to_string(p.failed) + " failed)";
      if (!p.current.empty()) note += ": " + escape_for_display(p.current);
      progress->update(p.done, note);
    };
  }
  ops::DedupOfflineReport r = ops::dedup_offline(io::posix_file_system(), job);
  if (progress) {
    // A stopped batch ends the line without claiming 100%.
    const bool interrupted = std::any_of(r.images.begin(), r.images.end(), [](const auto& i) {
      return i.outcome == ops::ImageOutcome::kInterrupted;
    });
    if (interrupted) {
      progress->end();
    } else {
      progress->finish();
    }
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  for (const auto& i : r.images) {
    if (i.outcome == ops::ImageOutcome::kFailed) {
      std::fprintf(stderr, "%s: %s: %s\n", program_name(), escape_for_display(i.file).c_str(),
                   escape_for_display(i.error).c_str());
    }
  }
  if (a.json || a.output == "json") {
    std::cout << report_json(r).dump(4) << "\n";
  } else if (!quiet()) {
    render_human(r, a.dry_run);
  }
  if (r.any_failed()) return kExitError;
  if (r.interrupted()) return kExitInterrupted;
  return kExitOk;
}

}  // namespace

std::function<int()> register_dedup_offline(CLI::App& app) {
  auto a = std::make_shared<DedupOfflineArgs>();
  app.add_option("-o", a->options, "dedup=HASH (default: the image's, else sha256), dedup_verify=on")
      ->allow_extra_args(false);
  app.add_flag("--no-index", a->no_index, "Deduplicate only: write no dedup index");
  app.add_flag("--dry-run", a->dry_run, "Write nothing; report what a run would free");
  app.add_flag("--against-backing", a->against_backing,
               "Drop clusters whose data the backing file holds at the same offset");
  app.add_flag("-U,--force-share", a->force_share, "With --dry-run: read an image in use");
  app.add_option("-j", a->jobs, "Images deduplicated at once (default 2)");
  app.add_option("--threads", a->threads, "Hashing threads (default: all cores)");
  app.add_flag("-p", a->progress, "Show progress on stderr");
  app.add_option("--output", a->output, "Report format")->check(CLI::IsMember({"human", "json"}));
  app.add_flag("--json", a->json, "Same as --output=json");
  app.add_option("--max-rate", a->max_rate, "Cap the read rate, bytes per second (e.g. 200M)");
  app.add_option("IMAGES", a->images, "IMAGE [IMAGE...]")->required();
  app.footer("Example:\n  qdedup dedup-offline --dry-run *.qcow2\n  qdedup dedup-offline -p *.qcow2");
  return [a] { return run_dedup_offline(*a); };
}

}  // namespace qdedup::commands
