// The dedup part of `qdedup check`: the extension, the index clusters'
// accounting (docs/format.md, section 5) and every index entry; with
// verify_hashes also the data under each entry. And, for `check -r all`, the
// rebuild of a stale or damaged index.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "io/file.h"
#include "qcow2/check.h"

namespace qdedup::dedup {

struct DedupCheckOptions {
  bool verify_hashes = false;
  bool progress = false;  // -p style progress on stderr while verifying
  unsigned threads = 0;   // 0: all cores
  qcow2::CheckLog log;
};

struct DedupCheckResult {
  bool present = false;   // the image has a dedup extension
  std::string state = "absent";  // absent, valid, stale, damaged
  std::string hash;       // algorithm name
  uint64_t entries = 0;   // entries the extension declares
  uint64_t errors = 0;    // corruptions of the extension or index
  uint64_t check_errors = 0;  // the dedup check could not complete
  uint64_t verified = 0;  // clusters rehashed (verify_hashes)
  uint64_t hash_mismatches = 0;
};

// Checks the dedup state of the image analysed in `a`.
DedupCheckResult check_dedup(io::File& file, qcow2::CheckAnalysis& a,
                             const DedupCheckOptions& options);

// Rebuilds the index of a dedup image (rehashing its allocated clusters),
// writes it past the end of the file and marks it valid. The image's qcow2
// structures must be consistent. `scratch` holds the index records meanwhile.
Status rebuild_dedup_index(io::File& file, std::unique_ptr<io::File> scratch, unsigned threads);

}  // namespace qdedup::dedup
