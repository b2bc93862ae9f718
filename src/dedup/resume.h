// dedup-offline's progress record (docs/format.md, section 7, "Interruption and
// resumption"): the keepers found so far, as an index in the section 5 layout
// past the end of the file, and the cursor of the walk, in a header extension
// of its own, valid while autoclear bit 61 is set.
#pragma once

#include <cstdint>
#include <optional>

#include "dedup/extension.h"
#include "dedup/index.h"
#include "dedup/offline.h"
#include "hash/hash.h"
#include "qcow2/image.h"

namespace qdedup::dedup {

// Stored on disk: never renumber.
inline constexpr uint32_t kExtResume = 0x51445253;  // "QDRS"
inline constexpr unsigned kAutoclearResumeBit = 61;
inline constexpr uint64_t kAutoclearResume = 1ull << kAutoclearResumeBit;
// The dedup extension's 144 bytes (describing the keepers' index), then the
// cursor, the pending copies' offset and count, and their SHA-256.
inline constexpr uint32_t kExtResumeLength = kExtDedupBaseLength + 56;

struct ResumeRecord {
  DedupExtension index;  // hash, index location, size, entries and checksum
  uint64_t cursor = 0;   // every L2 table at a host offset below it is done
  uint64_t pending_offset = 0;  // 16 bytes per pending copy: cluster, target offset
  uint64_t pending_count = 0;
  std::array<uint8_t, 32> pending_checksum{};
};

// The record of `h`, if it has one and autoclear bit 61 is set.
Result<std::optional<ResumeRecord>> find_resume_record(const qcow2::Header& h);
// Loads the record's keepers into `index` (which must be empty) and its
// pending copies into `pending`. Any mismatch (checksum, order, a cluster
// that is not in use) is a Corruption: the caller then starts over.
Status load_resume_index(qcow2::Image& image, const ResumeRecord& r, DedupIndex& index,
                         std::vector<PendingRemap>& pending);
// Writes every entry of `index` and the pending copies past the end of the
// file, flushes, then the record (algorithm, cursor) into the header, and
// sets bit 61.
Status write_resume_record(qcow2::Image& image, DedupIndex& index, hash::HashAlgorithm algorithm,
                           uint64_t cursor, const std::vector<PendingRemap>& pending);
// Clears bit 61 and removes the record from the header (a finished run).
Status drop_resume_record(qcow2::Image& image);

}  // namespace qdedup::dedup
