#include "io/unsynced_file.h"

#include <algorithm>
#include <cstring>

namespace qdedup::io {

namespace {
constexpr size_t kGatherBytes = 1u << 20;
// Blocks reserved at a time ahead of the writes.
constexpr uint64_t kReserveStep = 64ull << 20;
}  // namespace

void UnsyncedFile::reserve_up_to(uint64_t end) {
  const uint64_t from = reserved_end_;
  const uint64_t to = end + kReserveStep;
  if (!inner_->reserve(from, to - from)) {
    reserve_ahead_ = false;
    return;
  }
  reserved_end_ = to;
}

Status UnsyncedFile::release_reserved() {
  if (reserved_end_ == 0) return Status::ok();
  QD_ASSIGN_OR_RETURN(uint64_t end, inner_->size());
  reserved_end_ = 0;
  // A truncate to the same size frees the blocks beyond it (ext4 does so
  // explicitly for reserved ones); new reservations start again from 0.
  return inner_->truncate(end);
}

Status UnsyncedFile::write_gathered() {
  QD_TRY(write_pending());
  return release_reserved();
}

Status UnsyncedFile::write_pending() {
  if (pending_size_ == 0) return Status::ok();
  Status st = inner_->pwrite(pending_start_, std::span<const uint8_t>(pending_.data(), pending_size_));
  pending_size_ = 0;
  return st;
}

Status UnsyncedFile::pwrite(uint64_t offset, std::span<const uint8_t> buf) {
  if (reserve_ahead_ && offset + buf.size() > reserved_end_) reserve_up_to(offset + buf.size());
  bool appends = pending_size_ != 0 && offset == pending_start_ + pending_size_ &&
                 pending_size_ + buf.size() <= kGatherBytes;
  if (!appends) {
    QD_TRY(write_pending());
    if (buf.size() >= kGatherBytes) return inner_->pwrite(offset, buf);
    pending_.resize(kGatherBytes);
    pending_start_ = offset;
  }
  std::memcpy(pending_.data() + pending_size_, buf.data(), buf.size());
  pending_size_ += buf.size();
  return Status::ok();
}

Result<size_t> UnsyncedFile::pread(uint64_t offset, std::span<uint8_t> buf) {
  if (overlaps(offset, buf.size())) QD_TRY(write_pending());
  return inner_->pread(offset, buf);
}

Result<uint64_t> UnsyncedFile::size() {
  QD_ASSIGN_OR_RETURN(uint64_t s, inner_->size());
  if (pending_size_ != 0) s = std::max<uint64_t>(s, pending_start_ + pending_size_);
  return s;
}

Status UnsyncedFile::truncate(uint64_t size) {
  QD_TRY(write_pending());
  // Same size: nothing to do. Not a mere shortcut: ext4 (auto_da_alloc) takes
  // a truncate to 0 as "the file is being replaced" and then writes back all
  // its dirty pages at close, so a new image, emptied by create, would cost a
  // full writeback at close even in "unsafe" mode.
  QD_ASSIGN_OR_RETURN(uint64_t current, inner_->size());
  if (current == size) return Status::ok();
  // A shrink frees the reserved blocks beyond the new end too.
  if (size < current) reserved_end_ = std::min(reserved_end_, size);
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
  QD_TRY(write_gathered());
  return inner_->flush();
}

}  // namespace qdedup::io
