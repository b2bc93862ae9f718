// The analysis behind analyse_image() (check.h), split by subsystem:
// check.cpp runs it and compares refcounts, check_l2.cpp walks the L1 and L2
// tables, check_bitmaps.cpp the persistent bitmaps. Internal to src/qcow2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/file.h"
#include "qcow2/check.h"
#include "qcow2/geometry.h"

namespace qdedup::qcow2::check_detail {

std::string dec(uint64_t v);

class Analyser {
 public:
  Analyser(io::File& file, CheckAnalysis& a, const CheckOptions& o) : file_(file), a_(a), o_(o) {}

  Status run();

 private:
  // What the check decides for one L2 entry: the word -r all writes back
  // (with the "Repairing ..." line), or an unmapping, which wins, when the
  // entry's cluster cannot be read.
  struct EntryVerdict {
    uint64_t fixed = 0;
    std::string fix_what;
    std::string unmap;  // why the entry must be unmapped
  };

  void log(const std::string& line) {
    if (o_.log) o_.log(line);
  }
  void corrupt(const std::string& line) {
    ++a_.counts.corruptions;
    log(line);
  }
  void copied_mismatch(const std::string& line) {
    ++a_.counts.corruptions;
    ++a_.copied_mismatches;
    if (!o_.quiet_copied) log(line);
  }
  // What a counted reference is, for finding guest data that aliases metadata.
  enum Use : uint8_t { kMetadata = 0, kGuestData = 1 };
  // qcow2_inc_refcounts_imrt: counts a reference to every cluster of a byte
  // range. False if the range reaches a cluster or more past the end of the file.
  bool inc(uint64_t offset, uint64_t size, Use use = kMetadata);
  // True if [offset, offset + size) reaches a cluster or more past the end of the file.
  bool beyond_eof(uint64_t offset, uint64_t size) const;
  // The data cluster of the L2 entry at `at`: counted like inc(); a reference
  // beyond the refcount width is planned for un-sharing (a copy of its own).
  bool inc_data(uint64_t at, uint64_t word, uint64_t offset);
  // Plans to make the L2 entry at `at` read as zeros (or fall through to the
  // backing file on v2), for a cluster that cannot be read.
  void plan_unmap(uint64_t at, uint64_t word, const std::string& why);
  void plan_fix(uint64_t at, uint64_t old_word, uint64_t new_word, std::string what);

  // check_l2.cpp
  static constexpr uint32_t kActiveL1 = UINT32_MAX;
  // The L1 table of snapshot `snapshot` (its index), or the active one.
  Status walk_l1(uint64_t l1_offset, uint64_t l1_size, uint32_t snapshot);
  Status walk_l2(uint64_t l2_offset, bool active);
  // One L2 entry at file offset `at`, entry `index` of its table.
  // `next_contiguous`: where the previous allocated cluster of the active
  // table ended, for counting fragmented clusters.
  void check_l2_entry(uint64_t at, uint64_t index, const L2Entry& e, bool active,
                      uint64_t& next_contiguous);
  void check_compressed(uint64_t index, const L2Entry& e, bool active, EntryVerdict& v);
  void check_allocated(uint64_t at, const L2Entry& e, ClusterType type, bool active,
                       uint64_t& next_contiguous, EntryVerdict& v);
  // A zero cluster entry in a version 2 image (which has no zero flag).
  void check_v2_zero(const L2Entry& e, EntryVerdict& v);
  // CheckOptions::tally_mappings: what one entry maps, under one L1 entry.
  void tally_entry(const L2Entry& e, ClusterType type, bool active);
  void tally_table(uint64_t l2_offset);

  // check_bitmaps.cpp
  Status walk_bitmaps();

  // check.cpp
  void check_refblocks();
  void compare_refcounts();
  Status check_copied();

  io::File& file_;
  CheckAnalysis& a_;
  const CheckOptions& o_;
  // Two bits a host cluster (2k + Use): referenced as metadata, as guest data.
  std::vector<bool> uses_;
  MappingTally* tally_ = nullptr;  // a_.mappings, when asked for
};

}  // namespace qdedup::qcow2::check_detail
