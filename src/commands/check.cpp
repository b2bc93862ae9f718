// qdedup check: qemu-img check's interface, output and exit codes (see
// command.h), plus the dedup index (docs/format.md).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands/command.h"
#include "commands/image_name.h"
#include "io/file_system.h"
#include "ops/check.h"
#include "util/qemu_json.h"
#include "util/text.h"

namespace qdedup::commands {

namespace {

using ordered_json = nlohmann::ordered_json;

struct CheckArgs {
  std::string file;
  std::string format;
  std::string output = "human";
  std::string repair;  // "", "leaks", "all"
  bool image_opts = false;
  bool force_share = false;
  bool verify_hashes = false;
  bool progress = false;
  unsigned threads = 0;
};

void print_human(const ops::CheckReport& o) {
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
    std::printf("Dedup index: %s", dedup::index_state_name(d.state));
    if (!d.hash.empty()) std::printf(" (%s, %llu entries)", d.hash.c_str(), static_cast<unsigned long long>(d.entries));
    if (d.state == dedup::IndexState::kStale) std::printf("; the next qdedup write or 'qdedup check -r all' rebuilds it");
    std::printf("\n");
    if (d.verified) {
      std::printf("Dedup hashes verified: %llu clusters, %llu mismatches\n",
                  static_cast<unsigned long long>(d.verified),
                  static_cast<unsigned long long>(d.hash_mismatches));
    }
    if (o.index_rebuilt) std::printf("Dedup index rebuilt.\n");
  }
}

ordered_json to_json(const ops::CheckReport& o, const CheckArgs& a) {
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
  dj["index"] = dedup::index_state_name(d.state);
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

void log_line(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

int run_check(const CheckArgs& a) {
  ops::CheckJob job;
  auto name = parse_image_name(a.file, a.image_opts, a.format);
  if (!name) return report_error(name.status().with_prefix(a.file));
  job.file = name->path;
  job.format = name->format;
  if (a.repair == "all") job.repair = qcow2::RepairMode::kAll;
  if (a.repair == "leaks") job.repair = qcow2::RepairMode::kLeaks;
  job.force_share = a.force_share;
  job.verify_hashes = a.verify_hashes;
  job.progress = a.progress && !quiet();
  job.threads = a.threads;
  job.log = log_line;
  Result<ops::CheckReport> checked = ops::check(io::posix_file_system(), job);
  if (!checked) return report_error(checked.status());
  const ops::CheckReport& result = *checked;
  const std::string who = escape_for_display(a.file);
  if (result.format == "raw") {
    std::fprintf(stderr, "%s: %s: this image format (raw) does not support checks\n",
                 program_name(), who.c_str());
    return kExitNoChecks;
  }
  const qcow2::CheckCounts& c = result.counts;
  if (result.repaired && a.output == "human" && !quiet() && (c.leaks_fixed || c.corruptions_fixed)) {
    std::printf("The following inconsistencies were found and repaired:\n\n"
                "    %llu leaked clusters\n    %llu corruptions\n\n"
                "Double checking the fixed image now...\n",
                static_cast<unsigned long long>(c.leaks_fixed),
                static_cast<unsigned long long>(c.corruptions_fixed));
  }
  if (!quiet()) {
    if (a.output == "json") {
      std::cout << qemu_json(to_json(result, a)) << "\n";
    } else {
      print_human(result);
    }
  }
  std::fflush(stdout);
  if (c.check_errors) {
    std::fprintf(stderr, "%s: %s: check failed: %llu internal errors\n", program_name(),
                 who.c_str(), static_cast<unsigned long long>(c.check_errors));
    return kExitError;
  }
  return check_exit_status(c.corruptions, c.leaks);
}

}  // namespace

std::function<int()> register_check(CLI::App& app) {
  auto a = std::make_shared<CheckArgs>();
  app.add_option("-f", a->format, "Image format (qcow2; raw has no checks)");
  app.add_option("--output", a->output, "Output format")->check(CLI::IsMember({"human", "json"}));
  app.add_flag("--json{json}", a->output, "Same as --output=json");
  app.add_option("-r", a->repair, "Repair: 'leaks' frees leaked clusters, 'all' fixes everything")
      ->check(CLI::IsMember({"leaks", "all"}));
  // qemu-img's long form; bare (no '=') it means all.
  app.add_flag("--repair{all}", a->repair, "Same as -r: --repair=leaks, --repair=all, or --repair (all)")
      ->check(CLI::IsMember({"leaks", "all"}))
      ->option_text("[=leaks|all]");
  app.add_flag("-U,--force-share", a->force_share, "Open even if another process is writing the image");
  app.add_flag("--verify-hashes", a->verify_hashes,
               "Also read every indexed cluster and compare it with its hash");
  app.add_flag("-p", a->progress, "Show progress of --verify-hashes on stderr");
  app.add_option("--threads", a->threads, "Hashing threads (default: all cores)");
  app.add_flag("--image-opts", a->image_opts,
               "FILE is an option string (driver=qcow2,file.filename=PATH)");
  app.add_option("FILE", a->file, "Image (a path, or a json:{...} name)")->required();
  app.footer("Exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 raw image.\n"
             "Example:\n  qdedup check -r all disk.qcow2");
  return [a] { return run_check(*a); };
}

}  // namespace qdedup::commands
