// In-place repair of what analyse_image() finds (qemu-img check -r).
//
// Crash safety (docs/format.md, "Repair"): each round re-analyses the image
// and then changes it in an order that never lets a stored refcount fall
// below the number of references on disk, nor leaves QCOW_OFLAG_COPIED on a
// cluster whose refcount is above 1:
//   1. entries that cannot stay (unusable offsets, reserved bits) are
//      rewritten: this only removes or keeps references;
//   2. broken refcount structures are rebuilt from the computed counts into
//      new clusters past the end of the file, then the header is switched to
//      them in one write (the old structures become leaks);
//   3. an entry whose reference would overflow the refcount width gets a copy
//      of its cluster (new cluster refcounted, data copied, flush, entry
//      switched);
//   4. damaged snapshot entries are deleted (new table in new clusters, then
//      the header switch) unless refcounts must first be raised; their
//      clusters become leaks for the next round;
//   5. COPIED is cleared where the true refcount is not 1, refcounts that are
//      too low are raised, leaked refcounts are lowered, COPIED is set where
//      the refcount is 1 — with a flush after each step.
// A crash at any write leaves an image that the next `check -r all` finishes.
#pragma once

#include <string>

#include "io/file.h"
#include "qcow2/check.h"

namespace qdedup::qcow2 {

enum class RepairMode { kNone, kLeaks, kAll };

struct RepairOptions {
  RepairMode mode = RepairMode::kAll;
  CheckLog log;  // "Repairing ..." lines
  // Autoclear bits to clear before the first write (qdedup's own bits, whose
  // data a repair may invalidate). QEMU's unknown bits are always cleared.
  uint64_t clear_autoclear = 0;
  // Autoclear bits unknown to QEMU that stay set: a qdedup job's own record
  // that the repair keeps true (dedup-offline's progress record: leaks and
  // COPIED flags do not change it).
  uint64_t keep_autoclear = 0;
  // Autoclear bits unknown to QEMU that are the caller's own (qdedup's): the
  // repair clears every other bit QEMU does not know, as QEMU does when it
  // opens an image for writing, even when it has nothing else to repair.
  uint64_t known_autoclear = 0;
};

struct RepairSummary {
  bool changed = false;       // something was written
  bool unmapped_data = false;  // some guest clusters now read differently
  // What was repaired, counted as qemu-img counts it: one per refcount
  // raised, COPIED flag or entry rewritten, snapshot deleted, corruption
  // mended by a rebuild; one per leak freed (not the old structures a
  // rebuild leaves behind).
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
};

// Repairs the image in `file`. Fails like qemu-img when -r leaks meets
// refcount structures that need a rebuild ("need to rebuild").
Result<RepairSummary> repair_image(io::File& file, const RepairOptions& options);

}  // namespace qdedup::qcow2
