// Test-only checkers and builders for qcow2 images held in memory.
//
// refcheck() recomputes every cluster's reference count from scratch, the way
// `qemu-img check` does (block/qcow2-refcount.c, check_refcounts_l1/l2), and
// compares it with the refcounts stored in the image. It is deliberately
// independent of qcow2::Image and of the write path: it uses only the header
// decoder, Geometry and the refcount entry codec, and walks the tables itself.
//
// read_guest_cluster() is an equally independent reader of one guest cluster
// through the active L1 table or a snapshot's, for checking what a guest (or a
// snapshot) would see without trusting Image::read.
//
// Thread safety: functions only; no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow2/create.h"
#include "util/status.h"

namespace qdedup::testsupport {

// A cluster whose stored refcount differs from the references found.
struct RefMismatch {
  uint64_t cluster = 0;   // host cluster index
  uint64_t stored = 0;    // refcount stored in its refcount block (0 if none)
  uint64_t computed = 0;  // references found by walking the metadata
};

// An active L1 or NORMAL/ZERO_ALLOC L2 entry whose COPIED flag disagrees with
// the refcount of the cluster it points to.
struct CopiedMismatch {
  std::string where;      // "L1[2]" or "L2 0x50000[17]"
  uint64_t entry = 0;     // the entry as stored
  uint64_t cluster = 0;   // host cluster it points to
  uint64_t stored = 0;    // stored refcount of that cluster
  uint64_t computed = 0;  // references found
};

struct RefCheckReport {
  // Structural problems: unparsable header or tables, unaligned offsets,
  // references beyond the end of the file, reserved bits, invalid entries.
  std::vector<std::string> errors;
  // stored < computed (a used cluster that could be handed out again).
  std::vector<RefMismatch> corruptions;
  // stored > computed, for clusters that start inside the file.
  std::vector<RefMismatch> leaks;
  // COPIED set on an entry whose cluster's stored refcount (or reference
  // count) is not 1: QEMU would overwrite a shared cluster in place.
  std::vector<CopiedMismatch> copied_wrong;
  // COPIED clear on an entry whose cluster has refcount 1 (harmless; QEMU
  // then copies on write, `qemu-img check` reports it).
  std::vector<CopiedMismatch> copied_missing;

  uint64_t file_clusters = 0;
  std::vector<uint64_t> computed;  // per host cluster inside the file
  std::vector<uint64_t> stored;    // per host cluster inside the file

  // No errors, no corruption, no wrong COPIED: what a crash may leave.
  bool consistent() const { return errors.empty() && corruptions.empty() && copied_wrong.empty(); }
  // Consistent, and no leaks or missing COPIED: what a clean close leaves.
  bool clean() const { return consistent() && leaks.empty() && copied_missing.empty(); }
  // A few lines describing every finding (at most `max_items` per kind).
  std::string summary(size_t max_items = 8) const;
};

// Checks the qcow2 image in `image` (the whole file). Never fails: problems
// that stop the walk are reported in `errors`.
RefCheckReport refcheck(std::span<const uint8_t> image);

// A snapshot as listed in the snapshot table.
struct SnapshotRef {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
};
Result<std::vector<SnapshotRef>> list_snapshots(std::span<const uint8_t> image);

// Reads one whole guest cluster through the active L1 table, or through
// snapshot number `snapshot` (an index into list_snapshots()). Unallocated
// clusters read as zeros (the image must have no backing file).
Result<std::vector<uint8_t>> read_guest_cluster(std::span<const uint8_t> image,
                                                uint64_t guest_cluster,
                                                std::optional<size_t> snapshot = {});

// ---- Building test images ----

// A new image made by qcow2::create_image in memory; empty on failure.
std::vector<uint8_t> create_in_memory(const qcow2::CreateOptions& o);

// True if qemu-img and qemu-io can be run.
bool have_qemu();

// Runs `script` with /bin/sh in a fresh temporary directory where $IMG names
// "t.qcow2" (which the script creates), and returns the bytes of $IMG. The
// directory is removed afterwards. Fails if the script exits non-zero.
Result<std::vector<uint8_t>> run_qemu_script(const std::string& script);

// Writes `image` to a temporary file and runs `qemu-img check` on it;
// returns its exit code (0 clean, 2 corrupted, 3 leaks only).
Result<int> qemu_img_check(std::span<const uint8_t> image, std::string* output = nullptr);

// One cluster of a recognisable pattern: 0 gives zeros; any other value a
// pattern unique to (pattern, byte offset).
std::vector<uint8_t> pattern_cluster(uint64_t cluster_size, uint32_t pattern);

}  // namespace qdedup::testsupport
