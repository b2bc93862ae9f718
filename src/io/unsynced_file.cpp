#include "io/unsynced_file.h"

#include <algorithm>
#include <cstring>

namespace qdedup::io {

namespace {
constexpr size_t kGatherBytes = 1u << 20;
}

Status UnsyncedFile::write_pending() {
  if (pending_.empty()) return Status::ok();
  Status st = inner_->pwrite(pending_start_, pending_);
  pending_.clear();
  return st;
}

Status UnsyncedFile::pwrite(uint64_t offset, std::span<const uint8_t> buf) {
  bool appends = !pending_.empty() && offset == pending_start_ + pending_.size() &&
                 pending_.size() + buf.size() <= kGatherBytes;
  if (!appends) {
    QD_TRY(write_pending());
    if (buf.size() >= kGatherBytes) return inner_->pwrite(offset, buf);
    pending_.reserve(kGatherBytes);
    pending_start_ = offset;
  }
  pending_.insert(pending_.end(), buf.begin(), buf.end());
  return Status::ok();
}

Result<size_t> UnsyncedFile::pread(uint64_t offset, std::span<uint8_t> buf) {
  if (overlaps(offset, buf.size())) QD_TRY(write_pending());
  return inner_->pread(offset, buf);
}

Result<uint64_t> UnsyncedFile::size() {
  QD_ASSIGN_OR_RETURN(uint64_t s, inner_->size());
  if (!pending_.empty()) s = std::max<uint64_t>(s, pending_start_ + pending_.size());
  return s;
}

Status UnsyncedFile::truncate(uint64_t size) {
  QD_TRY(write_pending());
  return inner_->truncate(size);
}

Status UnsyncedFile::punch_hole(uint64_t offset, uint64_t len) {
  QD_TRY(write_pending());
  return inner_->punch_hole(offset, len);
}

Result<uint64_t> UnsyncedFile::allocated_size() {
  QD_TRY(write_pending());
  return inner_->allocated_size();
}

Status UnsyncedFile::sync_now() {
  QD_TRY(write_pending());
  return inner_->flush();
}

}  // namespace qdedup::io
