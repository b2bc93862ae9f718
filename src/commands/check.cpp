// qdedup check: qemu-img check's interface, output and exit codes, plus the
// dedup index (docs/format.md).
//
// Exit codes: 0 clean, 1 the check could not complete, 2 corruptions,
// 3 only leaks, 63 the format has no checks (raw).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands/command.h"
#include "dedup/extension.h"
#include "dedup/index_check.h"
#include "io/posix_file.h"
#include "qcow2/chain.h"
#include "qcow2/check.h"
#include "qcow2/check_repair.h"
#include "util/text.h"

namespace qdedup::commands {

namespace {

using ordered_json = nlohmann::ordered_json;

struct CheckArgs {
  std::string file;
  std::string format;
  std::string output = "human";
  std::string repair;  // "", "leaks", "all"
  bool force_share = false;
  bool verify_hashes = false;
  bool progress = false;
  unsigned threads = 0;
};

struct Outcome {
  qcow2::CheckCounts counts;
  dedup::DedupCheckResult dedup;
  bool index_rebuilt = false;
};

void log_line(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

// One full pass: qcow2 structures, then the dedup index.
Result<Outcome> check_pass(io::File& file, const CheckArgs& a, bool log) {
  qcow2::CheckOptions co;
  if (log) co.log = log_line;
  QD_ASSIGN_OR_RETURN(qcow2::CheckAnalysis an, qcow2::analyse_image(file, co));
  dedup::DedupCheckOptions dopt;
  dopt.verify_hashes = a.verify_hashes;
  dopt.progress = a.progress && log;
  dopt.threads = a.threads;
  if (log) dopt.log = log_line;
  Outcome o;
  o.counts = an.counts;
  o.dedup = dedup::check_dedup(file, an, dopt);
  o.counts.corruptions += o.dedup.errors;
  o.counts.check_errors += o.dedup.check_errors;
  return o;
}

bool needs_repair(const Outcome& o, qcow2::RepairMode mode, uint64_t incompatible) {
  if (o.counts.leaks || o.counts.corruptions || o.counts.check_errors) return true;
  if (incompatible & (qcow2::kIncompatDirty | qcow2::kIncompatCorrupt)) return true;
  return mode == qcow2::RepairMode::kAll && o.dedup.present && o.dedup.state != "valid";
}

Result<uint64_t> incompatible_features(io::File& file) {
  uint8_t b[8];
  QD_TRY(file.read_exact(qcow2::kOffIncompatibleFeatures, b, "header"));
  uint64_t v = 0;
  for (uint8_t x : b) v = (v << 8) | x;
  return v;
}

// Repairs, then checks again; the counts reported are the second check's,
// with what was fixed carried over (as qemu-img does).
Result<Outcome> repair(io::File& file, const CheckArgs& a, const Outcome& first) {
  qcow2::RepairMode mode = a.repair == "all" ? qcow2::RepairMode::kAll : qcow2::RepairMode::kLeaks;
  QD_ASSIGN_OR_RETURN(uint64_t incompat, incompatible_features(file));
  if (!needs_repair(first, mode, incompat)) return first;
  qcow2::RepairOptions ro;
  ro.mode = mode;
  ro.log = log_line;
  ro.clear_autoclear = dedup::kAutoclearDedupIndex;
  QD_ASSIGN_OR_RETURN(qcow2::RepairSummary summary, qcow2::repair_image(file, ro));
  if (summary.unmapped_data) {
    log_line("Note: some guest clusters could not be kept (see the Repairing lines above); "
             "all other guest data is unchanged");
  }

  // The index: rebuilt when -r all finds it stale or damaged, or when this
  // repair made a valid one stale.
  bool index_rebuilt = false;
  if (first.dedup.present && first.dedup.check_errors == 0 &&
      (mode == qcow2::RepairMode::kAll ? first.dedup.state != "valid" || summary.changed
                                       : first.dedup.state == "valid" && summary.changed)) {
    QD_ASSIGN_OR_RETURN(Outcome mid, check_pass(file, CheckArgs{}, false));
    if (mid.counts.corruptions == mid.dedup.errors && mid.counts.check_errors == 0) {
      log_line("Rebuilding the dedup index");
      QD_ASSIGN_OR_RETURN(auto scratch, io::PosixFile::open_temporary(io::directory_of(a.file)));
      QD_TRY(dedup::rebuild_dedup_index(file, std::move(scratch), a.threads));
      index_rebuilt = true;
    }
  }

  QD_ASSIGN_OR_RETURN(Outcome second, check_pass(file, a, true));
  second.index_rebuilt = index_rebuilt;
  second.counts.leaks_fixed = summary.leaks_fixed;
  second.counts.corruptions_fixed = summary.corruptions_fixed;
  if (index_rebuilt) second.counts.corruptions_fixed += first.dedup.errors;
  return second;
}

void print_human(const Outcome& o) {
  const qcow2::CheckCounts& c = o.counts;
  if (!(c.corruptions || c.leaks || c.check_errors)) {
    std::printf("No errors were found on the image.\n");
  } else {
    if (c.corruptions) {
      std::printf("\n%llu errors were found on the image.\n"
                  "Data may be corrupted, or further writes to the image may corrupt it.\n",
                  static_cast<unsigned long long>(c.corruptions));
    }
    if (c.leaks) {
      std::printf("\n%llu leaked clusters were found on the image.\n"
                  "This means waste of disk space, but no harm to data.\n",
                  static_cast<unsigned long long>(c.leaks));
    }
    if (c.check_errors) {
      std::printf("\n%llu internal errors have occurred during the check.\n",
                  static_cast<unsigned long long>(c.check_errors));
    }
  }
  if (c.total_clusters != 0 && c.allocated_clusters != 0) {
    std::printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                static_cast<unsigned long long>(c.allocated_clusters),
                static_cast<unsigned long long>(c.total_clusters),
                static_cast<double>(c.allocated_clusters) * 100.0 / static_cast<double>(c.total_clusters),
                static_cast<double>(c.fragmented_clusters) * 100.0 / static_cast<double>(c.allocated_clusters),
                static_cast<double>(c.compressed_clusters) * 100.0 / static_cast<double>(c.allocated_clusters));
  }
  if (c.image_end_offset) {
    std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(c.image_end_offset));
  }
  const dedup::DedupCheckResult& d = o.dedup;
  if (d.present) {
    std::printf("Dedup index: %s", d.state.c_str());
    if (!d.hash.empty()) std::printf(" (%s, %llu entries)", d.hash.c_str(), static_cast<unsigned long long>(d.entries));
    if (d.state == "stale") std::printf("; the next qdedup write or 'qdedup check -r all' rebuilds it");
    std::printf("\n");
    if (d.verified) {
      std::printf("Dedup hashes verified: %llu clusters, %llu mismatches\n",
                  static_cast<unsigned long long>(d.verified),
                  static_cast<unsigned long long>(d.hash_mismatches));
    }
    if (o.index_rebuilt) std::printf("Dedup index rebuilt.\n");
  }
}

ordered_json to_json(const Outcome& o, const CheckArgs& a) {
  const qcow2::CheckCounts& c = o.counts;
  ordered_json j;
  j["filename"] = to_valid_utf8(a.file);
  j["format"] = "qcow2";
  j["check-errors"] = c.check_errors;
  // As qemu-img: the optional counters only when non-zero.
  auto opt = [&](const char* key, uint64_t v) {
    if (v) j[key] = v;
  };
  opt("image-end-offset", c.image_end_offset);
  opt("corruptions", c.corruptions);
  opt("leaks", c.leaks);
  opt("corruptions-fixed", c.corruptions_fixed);
  opt("leaks-fixed", c.leaks_fixed);
  opt("total-clusters", c.total_clusters);
  opt("allocated-clusters", c.allocated_clusters);
  opt("fragmented-clusters", c.fragmented_clusters);
  opt("compressed-clusters", c.compressed_clusters);
  const dedup::DedupCheckResult& d = o.dedup;
  ordered_json dj;
  dj["index"] = d.state;
  if (d.present) {
    if (!d.hash.empty()) dj["hash"] = d.hash;
    dj["entries"] = d.entries;
    dj["errors"] = d.errors;
    dj["verified-clusters"] = d.verified;
    dj["hash-mismatches"] = d.hash_mismatches;
    dj["rebuilt"] = o.index_rebuilt;
  }
  j["dedup"] = dj;
  return j;
}

int run_check(const CheckArgs& a) {
  std::string who = escape_for_display(a.file);
  if (!a.repair.empty() && a.force_share) {
    return report_error(invalid_argument("-U cannot be used with -r (repair needs the image to itself)"));
  }
  io::OpenOptions oo;
  oo.writable = !a.repair.empty();
  oo.lock = a.repair.empty() ? (a.force_share ? io::LockMode::kForceShare : io::LockMode::kRead)
                             : io::LockMode::kWrite;
  auto file = io::PosixFile::open(a.file, oo);
  if (!file) return report_error(file.status().with_prefix(who));
  std::string format = a.format;
  if (format.empty()) {
    auto probed = qcow2::probe_format(**file);
    if (!probed) return report_error(probed.status().with_prefix(who));
    format = *probed;
  }
  if (format == "raw") {
    std::fprintf(stderr, "qdedup: %s: this image format (raw) does not support checks\n", who.c_str());
    return 63;
  }
  if (format != "qcow2") {
    return report_error(invalid_argument(who + ": unknown format '" + escape_for_display(format) + "'"));
  }
  auto first = check_pass(**file, a, true);
  if (!first) return report_error(first.status().with_prefix(who));
  Outcome result = *first;
  if (!a.repair.empty()) {
    auto repaired = repair(**file, a, *first);
    if (!repaired) return report_error(repaired.status().with_prefix(who + ": check failed"));
    result = *repaired;
    if (a.output == "human" && !quiet() && (result.counts.leaks_fixed || result.counts.corruptions_fixed)) {
      std::printf("The following inconsistencies were found and repaired:\n\n"
                  "    %llu leaked clusters\n    %llu corruptions\n\n"
                  "Double checking the fixed image now...\n",
                  static_cast<unsigned long long>(result.counts.leaks_fixed),
                  static_cast<unsigned long long>(result.counts.corruptions_fixed));
    }
  }
  if (!quiet()) {
    if (a.output == "json") {
      std::cout << to_json(result, a).dump(4) << "\n";
    } else {
      print_human(result);
    }
  }
  std::fflush(stdout);
  if (result.counts.check_errors) {
    std::fprintf(stderr, "qdedup: %s: check failed: %llu internal errors\n", who.c_str(),
                 static_cast<unsigned long long>(result.counts.check_errors));
    return 1;
  }
  if (result.counts.corruptions) return 2;
  if (result.counts.leaks) return 3;
  return 0;
}

}  // namespace

std::function<int()> register_check(CLI::App& app) {
  auto a = std::make_shared<CheckArgs>();
  app.add_option("-f", a->format, "Image format (qcow2; raw has no checks)");
  app.add_option("--output", a->output, "Output format")->check(CLI::IsMember({"human", "json"}));
  app.add_option("-r", a->repair, "Repair: 'leaks' frees leaked clusters, 'all' fixes everything")
      ->check(CLI::IsMember({"leaks", "all"}));
  app.add_flag("-U,--force-share", a->force_share, "Open even if another process is writing the image");
  app.add_flag("--verify-hashes", a->verify_hashes,
               "Also read every indexed cluster and compare it with its hash");
  app.add_flag("-p", a->progress, "Show progress of --verify-hashes on stderr");
  app.add_option("--threads", a->threads, "Hashing threads (default: all cores)");
  app.add_option("FILE", a->file, "Image")->required();
  app.footer("Exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 raw image.\n"
             "Example:\n  qdedup check -r all disk.qcow2");
  return [a] { return run_check(*a); };
}

}  // namespace qdedup::commands
