#include "ops/check.h"

#include "dedup/extension.h"
#include "dedup/resume.h"
#include "qcow2/chain.h"
#include "qcow2/header.h"
#include "util/text.h"

namespace qdedup::ops {

namespace {

// One full pass: qcow2 structures, then the dedup index. `log` false: silent.
// `before_repair`: the pass -r all repairs from, which leaves COPIED findings
// to the repair's own lines and reads the snapshot table as it will be
// repaired (as qemu-img check -r all does both).
Result<CheckReport> check_pass(io::File& file, const CheckJob& job, bool log,
                               bool before_repair = false) {
  qcow2::CheckOptions co;
  if (log) co.log = job.log;
  co.quiet_copied = before_repair;
  co.repair_snapshots = before_repair;
  QD_ASSIGN_OR_RETURN(qcow2::CheckAnalysis an, qcow2::analyse_image(file, co));
  dedup::DedupCheckOptions dopt;
  dopt.verify_hashes = job.verify_hashes && log;
  dopt.progress = job.progress && log;
  dopt.threads = job.threads;
  if (log) dopt.log = job.log;
  CheckReport r;
  r.format = "qcow2";
  r.counts = an.counts;
  r.incompatible_features = an.header.incompatible_features;
  r.autoclear_features = an.header.autoclear_features;
  r.version = an.header.version;
  r.dedup = dedup::check_dedup(file, an, dopt);
  r.counts.corruptions += r.dedup.errors;
  r.counts.check_errors += r.dedup.check_errors;
  return r;
}

// Autoclear bits that a writer which knows them keeps: QEMU's and qdedup's.
constexpr uint64_t kKnownAutoclear = qcow2::kAutoclearBitmaps | qcow2::kAutoclearDataFileRaw |
                                     dedup::kAutoclearDedupIndex | dedup::kAutoclearResume;

bool needs_repair(const CheckReport& r, qcow2::RepairMode mode, uint64_t incompatible) {
  if (r.counts.leaks || r.counts.corruptions || r.counts.check_errors) return true;
  if (incompatible & (qcow2::kIncompatDirty | qcow2::kIncompatCorrupt)) return true;
  if (r.version >= 3 && (r.autoclear_features & ~kKnownAutoclear)) return true;
  return mode == qcow2::RepairMode::kAll && r.dedup.present && r.dedup.state != dedup::IndexState::kValid;
}

// The index is rebuilt when -r all finds it stale or damaged, or when the
// repair made a valid one stale; only once the qcow2 structures are sound.
Result<bool> rebuild_index_if_needed(io::FileSystem& fs, io::File& file, const CheckJob& job,
                                     const CheckReport& first, bool changed) {
  const qcow2::RepairMode mode = *job.repair;
  if (!first.dedup.present || first.dedup.check_errors != 0) return false;
  const bool valid = first.dedup.state == dedup::IndexState::kValid;
  bool wanted = mode == qcow2::RepairMode::kAll ? !valid || changed : valid && changed;
  if (!wanted) return false;
  QD_ASSIGN_OR_RETURN(CheckReport mid, check_pass(file, job, false));
  if (mid.counts.corruptions != mid.dedup.errors || mid.counts.check_errors != 0) return false;
  if (job.log) job.log("Rebuilding the dedup index");
  QD_ASSIGN_OR_RETURN(auto scratch, fs.open_scratch(io::directory_of(job.file)));
  QD_TRY(dedup::rebuild_dedup_index(file, std::move(scratch), job.threads));
  return true;
}

// Repairs, then checks again.
Result<CheckReport> repair(io::FileSystem& fs, io::File& file, const CheckJob& job,
                           const CheckReport& first) {
  if (!needs_repair(first, *job.repair, first.incompatible_features)) return first;
  qcow2::RepairOptions ro;
  ro.mode = *job.repair;
  ro.log = job.log;
  ro.clear_autoclear = dedup::kAutoclearDedupIndex;
  ro.known_autoclear = dedup::kAutoclearResume;
  QD_ASSIGN_OR_RETURN(qcow2::RepairSummary summary, qcow2::repair_image(file, ro));
  if (summary.unmapped_data && job.log) {
    job.log("Note: some guest clusters could not be kept (see the Repairing lines above); "
            "all other guest data is unchanged");
  }
  QD_ASSIGN_OR_RETURN(bool rebuilt, rebuild_index_if_needed(fs, file, job, first, summary.changed));
  QD_ASSIGN_OR_RETURN(CheckReport second, check_pass(file, job, true));
  second.repaired = true;
  second.index_rebuilt = rebuilt;
  second.counts.leaks_fixed = summary.leaks_fixed;
  second.counts.corruptions_fixed = summary.corruptions_fixed;
  if (rebuilt) second.counts.corruptions_fixed += first.dedup.errors;
  return second;
}

}  // namespace

Result<CheckReport> check(io::FileSystem& fs, const CheckJob& job) {
  const std::string who = escape_for_display(job.file);
  if (job.repair && job.force_share) {
    return invalid_argument("-U cannot be used with -r (repair needs the image to itself)");
  }
  io::OpenOptions oo;
  oo.writable = job.repair.has_value();
  oo.lock = job.repair ? io::LockMode::kWrite
                       : (job.force_share ? io::LockMode::kForceShare : io::LockMode::kRead);
  QD_ASSIGN_OR_RETURN(std::unique_ptr<io::File> file, fs.open(job.file, oo).with_prefix(who));
  std::string format = job.format;
  if (format.empty()) {
    QD_ASSIGN_OR_RETURN(format, qcow2::probe_format(*file).with_prefix(who));
  }
  if (format == "raw") {
    CheckReport r;
    r.format = "raw";
    return r;
  }
  if (format != "qcow2") {
    return invalid_argument(who + ": unknown format '" + escape_for_display(format) + "'");
  }
  const bool repair_all = job.repair == qcow2::RepairMode::kAll;
  QD_ASSIGN_OR_RETURN(CheckReport first, check_pass(*file, job, true, repair_all).with_prefix(who));
  if (!job.repair) return first;
  return repair(fs, *file, job, first).with_prefix(who + ": check failed");
}

}  // namespace qdedup::ops
