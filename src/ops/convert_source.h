// The read side of `convert`: the sources concatenated into one disk, their
// block status (which ranges read as zeros without being read, as QEMU's
// bdrv_block_status), and a reader thread that fills, classifies and hashes
// batches ahead of the thread that writes the target.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "hash/hash_pool.h"
#include "io/aligned_buffer.h"
#include "io/file_system.h"
#include "qcow2/device.h"
#include "util/status.h"

namespace qdedup::ops {

// The run of guest bytes [offset asked, end) of a disk: known to read as
// zeros (`zero`), left to the top image's backing file (`backing`: asked
// above the base, unallocated in the top image within its backing file's
// length), or possibly holding data.
struct SourceExtent {
  uint64_t end = 0;
  bool zero = false;
  bool backing = false;
};

// Block status of one disk at `offset` (< virtual_size()): holes of a raw
// file (File::extent_at); zero clusters of a qcow2 image, and its
// unallocated clusters through the backing chain (zeros past the backing
// file's end or without one). Anything else (compressed clusters, partly
// zero subclusters, files without block status) is data. The extent ends at
// or before virtual_size(). `above_base`: as QEMU's bdrv_block_status_above
// with the top image's backing file as the base (convert -B): an
// unallocated cluster of a qcow2 image is a `backing` extent, not looked up
// in the backing chain.
Result<SourceExtent> device_extent(qcow2::BlockDevice& dev, uint64_t offset,
                                   bool above_base = false);

// convert -l: the internal snapshot of the first source that is read instead
// of its active state (qemu-img's rules: `snapshot.id=`, `snapshot.name=`, or
// one value, an id or else a name, which needs a single source).
struct SnapshotSelect {
  std::optional<std::string> id;
  std::optional<std::string> name;
  std::optional<std::string> id_or_name;
};

// The sources, concatenated into one read-only disk.
class SourceSet {
 public:
  Status open(io::FileSystem& fs, const std::vector<std::string>& paths, const std::string& format,
              bool force_share, const std::optional<SnapshotSelect>& snapshot = std::nullopt);
  uint64_t size() const { return total_; }
  // Reads guest bytes [offset, offset + buf.size()); errors name the source.
  Status read(uint64_t offset, std::span<uint8_t> buf);
  // device_extent() of the concatenation; the extent ends at a source's end.
  // Above the base, an extent that starts before `cut` (the end of the
  // target's backing file) ends there at the latest, as qemu-img's queries
  // do, and zeros from `cut` on are left to the backing file (where it reads
  // zeros).
  Result<SourceExtent> extent_at(uint64_t offset, bool above_base = false,
                                 uint64_t cut = UINT64_MAX);

 private:
  size_t source_of(uint64_t offset) const;
  Status load_snapshot(const SnapshotSelect& s, size_t sources);

  std::vector<std::unique_ptr<qcow2::BlockDevice>> devs_;
  std::vector<uint64_t> starts_;
  uint64_t total_ = 0;
};

// One batch of consecutive units of the concatenated sources: the clusters of
// a qcow2 target, 512-byte sectors of a raw one.
struct SourceBatch {
  // Per-unit state.
  static constexpr uint8_t kData = 0;  // read; hashed when the reader hashes
  static constexpr uint8_t kZero = hash::HashPool::kZeroChunk;  // read, all zero
  static constexpr uint8_t kHole = 2;  // reads as zeros: not read, bytes undefined
  // Left to the target's backing file (ReaderOptions::above_base): not read,
  // bytes undefined, never written.
  static constexpr uint8_t kBacking = 3;

  uint64_t offset = 0;  // guest offset of unit 0 (a multiple of the unit)
  uint64_t bytes = 0;   // guest bytes; the last unit may be partial
  io::AlignedBuffer data;        // units() * unit bytes (page-aligned); a partial last unit is zero-padded
  std::vector<uint8_t> state;    // one per unit
  std::vector<uint8_t> digests;  // digest_size bytes per unit (data units, when hashed)
  // With above_base: the guest ranges [first, second) left to the backing
  // file inside data units (a unit only partly backing is read whole; the
  // writer writes the rest of it), in order.
  std::vector<std::pair<uint64_t, uint64_t>> backing_runs;
  double hash_seconds = 0;       // wall time this batch spent hashing
  Status status;                 // a read error ends the batches

  size_t units() const { return state.size(); }
};

struct ReaderOptions {
  uint64_t unit = 512;         // a power of two
  uint64_t batch_bytes = 0;    // a multiple of unit
  bool block_status = true;    // skip holes (false: read everything, as -S 0)
  bool read_holes = false;     // with block_status: holes are read as data (-S 0 -B)
  bool detect_zero = false;    // mark all-zero units kZero
  // convert -B: block status above each source's backing file (kBacking
  // units), and zero ranges from `backing_end` on (past the end of the
  // target's backing file, where it reads zeros) are kBacking too.
  bool above_base = false;
  uint64_t backing_end = UINT64_MAX;
  hash::HashPool* pool = nullptr;    // hash the data units on all cores, or null
};

// Reads the sources in order on its own thread, up to kDepth batches ahead of
// the consumer. One consumer thread calls next() and release().
class SourceReader {
 public:
  static constexpr size_t kDepth = 3;

  SourceReader(SourceSet& src, const ReaderOptions& options);
  // Stops the thread and waits for it.
  ~SourceReader();
  SourceReader(const SourceReader&) = delete;
  SourceReader& operator=(const SourceReader&) = delete;

  // Starts the reader thread.
  Status start();
  // The next batch, in order, or null past the end. A batch whose status is
  // an error is the last one. The batch stays valid until release().
  SourceBatch* next();
  void release(SourceBatch* batch);

 private:
  void main();
  void fill(SourceBatch& b, uint64_t offset);
  Status mark_holes(SourceBatch& b);
  Status read_data(SourceBatch& b);

  SourceSet& src_;
  const ReaderOptions o_;
  std::vector<uint8_t> touched_;  // mark_holes: the kinds of extent each unit meets
  SourceExtent extent_;          // the last extent asked of the sources
  uint64_t extent_start_ = 0;
  bool have_extent_ = false;

  SourceBatch slots_[kDepth];
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t produced_ = 0;  // batches filled (slot = sequence % kDepth)
  uint64_t consumed_ = 0;  // batches handed out by next()
  uint64_t released_ = 0;  // batches given back
  uint64_t batches_ = 0;   // total batches
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace qdedup::ops
