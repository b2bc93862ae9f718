// `check` and `check -r`: the qcow2 structures as qemu-img check sees them,
// then the dedup index; with a repair mode, the repair (crash-safe, in place),
// the index rebuild it calls for, and a second check whose counts are the
// ones reported (with what was fixed carried over, as qemu-img does).
#pragma once

#include <optional>
#include <string>

#include "dedup/index_check.h"
#include "io/file_system.h"
#include "qcow2/check.h"
#include "qcow2/check_repair.h"
#include "util/status.h"

namespace qdedup::ops {

struct CheckJob {
  std::string file;
  std::string format;                     // "" probes
  std::optional<qcow2::RepairMode> repair;  // -r leaks|all
  bool force_share = false;               // -U (not with repair)
  bool verify_hashes = false;
  bool progress = false;                  // -p: progress of --verify-hashes on stderr
  unsigned threads = 0;                   // hashing threads; 0: all cores
  qcow2::CheckLog log;                    // finding and "Repairing" lines
};

struct CheckReport {
  std::string format;  // "qcow2", or "raw": raw images have no checks (nothing else is set)
  qcow2::CheckCounts counts;
  dedup::DedupCheckResult dedup;
  bool index_rebuilt = false;
  bool repaired = false;  // a repair ran (and counts holds the second check)
  uint64_t incompatible_features = 0;  // the header's (0 on version 2), before any repair
  uint64_t autoclear_features = 0;     // the same
  uint32_t version = 0;
};

// Errors are prefixed with the file's name; a repair that fails says
// "FILE: check failed: ...".
Result<CheckReport> check(io::FileSystem& fs, const CheckJob& job);

}  // namespace qdedup::ops
