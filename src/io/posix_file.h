// The POSIX File: the only code in qdedup that calls the operating system for
// file access. Also implements QEMU-compatible image locking.
#pragma once

#include "io/file.h"
#include "io/file_system.h"

namespace qdedup::io {

class PosixFile : public File {
 public:
  static Result<std::unique_ptr<PosixFile>> open(const std::string& path,
                                                 const OpenOptions& options);
  // An anonymous file in `dir` that vanishes when closed (scratch space).
  static Result<std::unique_ptr<PosixFile>> open_temporary(const std::string& dir);
  ~PosixFile() override;
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  const std::string& name() const override { return path_; }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override;
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override;
  Status flush() override;
  Result<uint64_t> size() override;
  Status truncate(uint64_t size) override;
  Status punch_hole(uint64_t offset, uint64_t len) override;
  Status allocate(uint64_t offset, uint64_t len) override;
  Result<uint64_t> allocated_size() override;
  // fallocate(FALLOC_FL_KEEP_SIZE) on ext4, where a buffered write into
  // reserved blocks skips delayed allocation's per-block work (half the
  // system time of a large sequential write, measured); elsewhere nothing.
  bool reserve(uint64_t offset, uint64_t len) override;
  // pread, pwrite, fallocate and fdatasync on one descriptor.
  bool concurrent_reads() const override { return true; }
  bool thread_safe() const override { return true; }

  // lseek SEEK_DATA/SEEK_HOLE, as QEMU's file-posix block status. Where the
  // file system or the file type cannot tell (devices, old kernels),
  // everything is data up to the end of the file. Moves the file position,
  // which pread/pwrite do not use.
  Result<FileExtent> extent_at(uint64_t offset) override;

 private:
  PosixFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  Status apply_lock(LockMode mode);
  Status os_error(const char* what, int err) const;

  std::string path_;
  int fd_ = -1;
  enum class Reserve { kUnknown, kYes, kNo } reserve_ = Reserve::kUnknown;
};

// Removes a file; errors are ignored (used to clean up after a failed create).
void remove_file(const std::string& path);
// Atomically renames `from` to `to`, and syncs the directory unless
// `sync_directory` is false (nothing is to be made durable: qemu-img's
// "unsafe" cache mode).
Status rename_file(const std::string& from, const std::string& to, bool sync_directory = true);
bool file_exists(const std::string& path);
}  // namespace qdedup::io
