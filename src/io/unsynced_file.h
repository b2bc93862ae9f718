// A File for a new file that nobody can see until it is renamed into place:
// flush() orders nothing and syncs nothing, and sequential writes are
// gathered into large ones. The owner makes the file durable once, at the
// end, with sync_now() (or not at all, for qemu-img's "unsafe" cache mode).
#pragma once

#include <memory>
#include <vector>

#include "io/aligned_buffer.h"
#include "io/file.h"

namespace qdedup::io {

// With `reserve_ahead`, the blocks ahead of the writes are reserved in steps
// (File::reserve), for a file written front to back without holes (a qcow2
// image, not a sparse raw one); what is left beyond the end is released by
// write_gathered() and sync_now().
class UnsyncedFile : public File {
 public:
  explicit UnsyncedFile(std::unique_ptr<File> inner, bool reserve_ahead = false)
      : inner_(std::move(inner)), reserve_ahead_(reserve_ahead) {}
  ~UnsyncedFile() override { (void)write_pending(); }

  const std::string& name() const override { return inner_->name(); }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override;
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override;
  Status flush() override { return Status::ok(); }
  Result<uint64_t> size() override;
  Status truncate(uint64_t size) override;
  Status punch_hole(uint64_t offset, uint64_t len) override;
  Result<uint64_t> allocated_size() override;

  // Writes what is gathered and syncs: the one real flush.
  Status sync_now();
  // Writes what is gathered, without syncing.
  Status write_gathered();

 private:
  Status write_pending();
  // Reserves blocks up to at least `end`, and a step beyond.
  void reserve_up_to(uint64_t end);
  // Gives back the reserved blocks beyond the end of the file.
  Status release_reserved();
  bool overlaps(uint64_t offset, uint64_t len) const {
    return pending_size_ != 0 && offset < pending_start_ + pending_size_ &&
           pending_start_ < offset + len;
  }

  std::unique_ptr<File> inner_;
  uint64_t pending_start_ = 0;
  size_t pending_size_ = 0;
  AlignedBuffer pending_;  // bytes for [pending_start_, +pending_size_)
  bool reserve_ahead_ = false;
  uint64_t reserved_end_ = 0;  // blocks below it are reserved or written
};

}  // namespace qdedup::io
