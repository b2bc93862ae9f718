// Test-only fault injection over the write path of qcow2::Image: scenarios
// (lists of Image operations on a base image) run on an io::FaultyFile that
// crashes after, or fails with ENOSPC at, every one of their writes, and each
// disk state that can be left behind is checked.
//
// A state passes when it
//   - has no refcount below its references and no COPIED flag on a cluster
//     whose refcount is not 1 (leaks and missing COPIED are allowed);
//   - opens, and reads every guest cluster as either one of the contents it
//     had since the last completed flush or its content at that flush;
//   - keeps every internal snapshot's view unchanged;
//   - stays usable: re-opened writable it closes, takes one more write
//     (to Scenario::spare_cluster), and is still consistent.
//
// Uses Catch2 macros: call only from a running test. The checks record every
// bad state and end with one CHECK, so that a failure lists them all.
// Functions only; no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/file.h"
#include "qcow2/create.h"
#include "qcow2/image.h"
#include "util/status.h"

namespace qdedup::testsupport::crash {

// One operation of a scenario, on guest clusters by index.
struct Op {
  enum Kind { kWrite, kWritePart, kZero, kLink, kFlush, kClose } kind;
  uint64_t gc = 0;
  uint32_t pattern = 0;  // kWrite, kWritePart
  uint64_t src = 0;      // kLink: share the host cluster of this guest cluster
  uint64_t offset = 0;   // kWritePart: bytes inside the cluster
  uint64_t length = 0;

  static Op write(uint64_t gc, uint32_t p) { return {kWrite, gc, p}; }
  static Op part(uint64_t gc, uint64_t off, uint64_t len, uint32_t p) {
    return {kWritePart, gc, p, 0, off, len};
  }
  static Op zero(uint64_t gc) { return {kZero, gc}; }
  static Op link(uint64_t gc, uint64_t src) { return {kLink, gc, 0, src}; }
  static Op flush() { return {kFlush}; }
  static Op close() { return {kClose}; }
};

struct Scenario {
  std::string name;
  std::vector<uint8_t> base;
  std::vector<Op> ops;
  uint64_t spare_cluster = 0;  // written by the usability check
  size_t refcount_cache_blocks = 0;  // ImageOptions of the scenario's run (0: the default)
};

// Opens `f` as a qcow2 image (the image owns `f`).
Result<std::unique_ptr<qcow2::Image>> open_on(std::unique_ptr<io::File> f, bool writable,
                                              size_t refcount_cache_blocks = 0);

// Runs `s` once without faults (it must succeed and leave a clean image) to
// count its writes W; then, for every N in 0..W, runs it again crashing after
// N writes and checks the states the crash can leave: only flushed writes,
// every write, and random subsets of the unflushed writes.
void crash_at_every_write(const Scenario& s);

// For every write N of `s`, runs it with write N failing with ENOSPC: the
// operation must report kNoSpace and the bytes stay consistent. With
// `keep_going`, the disk then has room again (as when QEMU resumes a VM
// paused on ENOSPC): the rest of the scenario and a close() must succeed and
// leave a consistent image holding everything but, possibly, the failed op.
void no_space_at_every_write(const Scenario& s, bool keep_going);

// Runs `s` without faults and returns how many times its image evicted the
// refcount block cache (ImageOptions::refcount_cache_blocks).
uint64_t refcount_evictions_of(const Scenario& s);

// ---- Scenarios ----

// Applies `ops` without faults and closes: the base of a later scenario. The
// test fails unless every operation succeeds and the result is clean.
std::vector<uint8_t> prepare(std::vector<uint8_t> base, const std::vector<Op>& ops);

// Writes, a partial write and a flush on a new image made with `o`.
Scenario fresh_writes(const qcow2::CreateOptions& o, const std::string& name);
// Whole and partial overwrites of clusters the image already owns, and one
// new cluster.
Scenario overwrites(const qcow2::CreateOptions& o, const std::string& name);
// link_cluster to owned and shared clusters, copy on write of a sharer, and a
// link that replaces a cluster's own data.
Scenario links(const qcow2::CreateOptions& o, const std::string& name);
// Two sharers both rewritten before a flush: the second write must not go in
// place while the first one's old reference can still be on disk.
Scenario rewrite_both_sharers(const qcow2::CreateOptions& o, const std::string& name);
// zero_cluster of owned, shared and never allocated clusters.
Scenario zeros(const qcow2::CreateOptions& o, const std::string& name);
// A 512-byte-cluster image filled until its file holds `fill_to_clusters`
// clusters, so that the scenario's writes need a new refcount block (every
// rb_entries clusters) and, at 64-bit refcounts, a larger refcount table (one
// 512-byte table cluster covers 64 * 64 clusters).
Scenario refcount_growth(uint32_t refcount_order, uint64_t fill_to_clusters,
                         const std::string& name);
// Links, writes and zeroes whose clusters lie in different refcount blocks of
// a 512-byte-cluster image, run with one refcount block cached: every move to
// another block evicts the cache and writes it back in the middle of an
// operation.
Scenario across_refcount_blocks(const std::string& name);
// Writes and links into an image with an internal snapshot that shares L2
// tables and data. Needs qemu-img/qemu-io (see have_qemu()).
Scenario with_snapshot();
// Writes, zeroes and links over compressed clusters. Needs qemu-img/qemu-io.
Scenario over_compressed();

}  // namespace qdedup::testsupport::crash
