// A qcow2 image: the read path, the write path and their metadata caches.
//
// Write ordering follows QEMU (docs/format.md, "Crash safety"): guest data,
// flush, refcount increases, flush, L2 entries that only clear COPIED, flush,
// other L2 entries, flush, L1 entries, flush, then refcount decreases. At every
// instant the on-disk refcount of a cluster is at least its number of on-disk
// references, so a crash leaves at worst leaked clusters.
//
// Thread safety: none. One Image is used by one thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "io/file.h"
#include "qcow2/device.h"
#include "qcow2/geometry.h"
#include "qcow2/header.h"
#include "qcow2/refcount.h"
#include "qcow2/snapshot.h"

namespace qdedup::qcow2 {

struct ImageOptions {
  bool writable = false;
  // Autoclear bits that stay set when writing starts (every other one is
  // cleared, as QEMU does): kAutoclearBitmaps for a job that changes no guest
  // byte, so that the persistent bitmaps stay valid (docs/format.md, 7).
  uint64_t keep_autoclear = 0;
  // Refcount blocks cached before they are written back (0: the default
  // budget). Tests set 1 to make every move between blocks an eviction.
  size_t refcount_cache_blocks = 0;
};

class Image : public BlockDevice {
 public:
  // Decodes and validates the header, reads the L1 and snapshot tables.
  // Does not open the backing file: see open_chain() in chain.h.
  static Result<std::unique_ptr<Image>> open(std::unique_ptr<io::File> file,
                                             const ImageOptions& options);
  ~Image() override;

  const std::string& name() const override { return file_->name(); }
  const char* format() const override { return "qcow2"; }
  uint64_t virtual_size() const override { return header_.size; }
  Status read(uint64_t offset, std::span<uint8_t> buf) override;

  const Header& header() const { return header_; }
  const Geometry& geometry() const { return g_; }
  // Times cached refcount blocks were written back and dropped to bound memory.
  uint64_t refcount_evictions() const { return refcounts_.evictions(); }
  const std::vector<Snapshot>& snapshots() const { return snapshots_; }
  io::File& file() { return *file_; }
  void set_backing(std::unique_ptr<BlockDevice> backing) { backing_ = std::move(backing); }
  BlockDevice* backing() { return backing_.get(); }

  // Reads through the L1 table of snapshot `index` instead of the active one
  // from now on (read-only images), as QEMU's qcow2_snapshot_load_tmp: the
  // virtual size stays the image's.
  Status load_snapshot_tmp(size_t index);

  // The L2 entry mapping `guest_cluster` (a zero entry if no L2 table).
  Result<L2Entry> l2_entry(uint64_t guest_cluster);
  const std::vector<uint64_t>& l1_table() const { return l1_; }
  // The stored refcount of a host cluster (the refcount table is read on
  // first use when the image is read-only).
  Result<uint64_t> refcount(uint64_t host_cluster);
  // The refcount the cluster will have once pending releases are written
  // (writable images): 0 means it is about to be freed.
  Result<uint64_t> refcount_after_flush(uint64_t host_cluster) {
    return effective_refcount(host_cluster);
  }

  // ---- Write path (the image must be open writable) ----

  // Writes guest bytes; partial clusters are read, merged and rewritten.
  Status write(uint64_t offset, std::span<const uint8_t> buf);
  // Writes one whole guest cluster (`data` is exactly one cluster): in place
  // if the cluster is owned (refcount 1), else into a newly allocated one.
  Status write_cluster(uint64_t guest_cluster, std::span<const uint8_t> data);
  // Writes one whole guest cluster compressed, into an unallocated entry, as
  // QEMU's compressed write does: streams packed one after another in host
  // clusters (a stream may run into the next cluster when it is the next one
  // allocated), each counting one reference on every cluster it touches; a
  // cluster that does not compress to under a cluster is written as is.
  Status write_compressed_cluster(uint64_t guest_cluster, std::span<const uint8_t> data);
  // What QEMU does at the end of compressed writes: the file's end rounded up
  // to whole 512-byte sectors (after a flush).
  Status align_end_to_sector();
  // Points `guest_cluster` at the existing data cluster at `host_offset`,
  // whose refcount goes up by one. If that cluster was owned (refcount 1), its
  // current owner `owner_guest_cluster` loses QCOW_OFLAG_COPIED first.
  Status link_cluster(uint64_t guest_cluster, uint64_t host_offset,
                      std::optional<uint64_t> owner_guest_cluster);
  // Makes `guest_cluster` read as zeros (a zero cluster on v3; unallocated on
  // v2 without a backing file; written zeros otherwise).
  Status zero_cluster(uint64_t guest_cluster);
  // Clears the autoclear bits the job does not keep (ImageOptions), as the
  // first change to the image does; for a job that must invalidate qdedup's
  // index before it changes anything else (e.g. truncates past it).
  Status start_writing() { return begin_write(); }

  // ---- Remapping in place: any table, active or snapshot (dedup-offline) ----

  // The entry at `index` of the L2 table at host offset `l2_offset`.
  Result<L2Entry> table_entry(uint64_t l2_offset, uint64_t index);
  // Rewrites entry `index` of the L2 table at `l2_offset`, which `table_refs`
  // L1 entries (active and snapshot ones) point at, to `e`, in place: the
  // table is not copied, so the change shows through all of those L1 entries.
  // The clusters `e` maps gain `table_refs` references now (in the refcount
  // cache, written before the table); those the old entry mapped lose them
  // once the table is on disk (flush()). For changes that keep the guest's
  // view (both entries read the same bytes). `e` must not carry COPIED: it is
  // for entries whose cluster is or becomes shared, or that map no cluster.
  Status remap_entry(uint64_t l2_offset, uint64_t index, const L2Entry& e, uint64_t table_refs);
  // Clears COPIED on one entry, before its cluster gains references: flush()
  // writes such a change ahead of every refcount increase.
  Status clear_copied(uint64_t l2_offset, uint64_t index);

  // Flushes, then gives the bytes of those of `clusters` whose refcount is 0
  // on disk (referenced by nothing) back to the file system, in runs of
  // adjacent clusters. Returns how many clusters it punched.
  Result<uint64_t> punch_free_clusters(std::vector<uint64_t> clusters);
  // Flushes, then returns the runs of adjacent clusters among `clusters`
  // whose refcount is 0 on disk, as {first cluster, count}, for the caller to
  // punch (on a thread of its own, say: nothing here reuses a free cluster
  // inside the file, but truncate_free_tail() must come after the punches).
  struct ClusterRun {
    uint64_t first = 0, count = 0;
  };
  Result<std::vector<ClusterRun>> free_cluster_runs(std::vector<uint64_t> clusters);
  // Flushes, then cuts the trailing clusters whose refcount is 0 off the file.
  // Returns the bytes cut.
  Result<uint64_t> truncate_free_tail();

  // Puts everything on disk in crash-safe order.
  Status flush();
  // Flushes and sets COPIED on entries whose cluster became owned again.
  Status close();
  // The same in the middle of a job (a checkpoint): the image stays open.
  Status settle_copied() { return fix_copied_flags(); }
  // Makes close() check every active entry's COPIED flag, not only those of
  // clusters this session released: for images another program wrote (stock
  // QEMU leaves COPIED off after its copy-on-write ends a sharing).
  void audit_copied_on_close() { audit_copied_ = true; }

  // Rewrites cluster 0 from `h` (which must keep this image's geometry and
  // table locations) and flushes. For header extensions of upper layers.
  Status rewrite_header(const Header& h);
  // Clears autoclear bits with an 8-byte write at offset 88, flushed.
  Status clear_autoclear(uint64_t bits);
  // Sets autoclear bits with an 8-byte write at offset 88, flushed.
  Status set_autoclear(uint64_t bits);
  // Host offset just past the last byte of the file, rounded up to a cluster.
  Result<uint64_t> end_of_file_cluster();

 private:
  struct L2Table {
    std::vector<uint8_t> mem;   // current contents
    std::vector<uint8_t> disk;  // contents on disk (empty: new table)
    bool dirty = false;
  };

  Image(std::unique_ptr<io::File> file, Header header, const ImageOptions& options);
  Status load(uint64_t file_size);
  Result<L2Table*> load_l2(uint64_t l2_offset);
  // Returns the active L2 table for `guest_cluster`, allocating it or copying
  // a shared one first.
  Result<L2Table*> writable_l2(uint64_t guest_cluster);
  L2Entry entry_at(const L2Table& t, uint64_t index) const;
  void store_entry(L2Table& t, uint64_t index, const L2Entry& e) const;
  // Replaces the entry of `guest_cluster`, scheduling the release of the
  // clusters the old entry held.
  Status replace_entry(uint64_t guest_cluster, const L2Entry& e);
  Status release_clusters(const L2Entry& old, uint64_t count = 1);
  // Adds `count` references to every host cluster `e` maps.
  Status reference_clusters(const L2Entry& e, uint64_t count);
  Result<uint64_t> effective_refcount(uint64_t host_cluster);
  Status read_cluster_part(uint64_t guest_cluster, uint64_t in_cluster,
                           std::span<uint8_t> out);
  Status read_from_backing(uint64_t offset, std::span<uint8_t> out);
  Status begin_write();
  Result<uint64_t> allocate_bytes(uint64_t size);
  Status write_l2_tables();
  Status write_copied_clears();
  Status fix_copied_flags();
  Status maybe_evict();

  std::unique_ptr<io::File> file_;
  Header header_;
  Geometry g_;
  bool writable_;
  uint64_t keep_autoclear_ = 0;
  bool write_started_ = false;
  bool refcounts_loaded_ = false;
  bool audit_copied_ = false;
  std::vector<uint64_t> l1_;
  std::set<uint64_t> l1_dirty_;  // L1 indexes to write
  std::vector<Snapshot> snapshots_;
  Refcounts refcounts_;
  std::unordered_map<uint64_t, L2Table> l2_cache_;  // by host offset
  std::map<uint64_t, uint64_t> pending_release_;   // host cluster -> count
  std::set<uint64_t> maybe_owned_;  // clusters whose refcount may have dropped to 1
  std::unique_ptr<BlockDevice> backing_;
  // One decompressed cluster, as compressed clusters are often read piecewise.
  uint64_t decompressed_entry_ = 0;
  std::vector<uint8_t> decompressed_;
  // Compressed writes: where the next stream goes (0: a new cluster), and
  // the buffer they compress into.
  uint64_t free_byte_offset_ = 0;
  std::vector<uint8_t> compressed_;
};

}  // namespace qdedup::qcow2
