// The one interface through which the core touches a file.
//
// Three implementations: PosixFile (the only code that calls the OS),
// MemoryFile (unit tests) and FaultyFile (fails or "crashes" at the Nth write).
// The core takes a File&, never a path, so every command can run on any of them.
//
// Thread safety: none; a File is used by one thread at a time, except where
// concurrent_reads() or thread_safe() says otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "util/status.h"

namespace qdedup::io {

// A run of a file's bytes, as lseek(SEEK_DATA/SEEK_HOLE) reports it.
struct FileExtent {
  uint64_t end = 0;   // the run is [offset asked, end)
  bool hole = false;  // true: no data stored there, reads return zeros
};

class File {
 public:
  virtual ~File() = default;

  // Name for messages (the path as the user gave it).
  virtual const std::string& name() const = 0;

  // Reads up to buf.size() bytes at `offset`. Returns the bytes read, short
  // only at end of file.
  virtual Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) = 0;
  // Writes all of buf at `offset`, extending the file if needed.
  virtual Status pwrite(uint64_t offset, std::span<const uint8_t> buf) = 0;
  // Makes every completed write durable (fdatasync).
  virtual Status flush() = 0;
  virtual Result<uint64_t> size() = 0;
  virtual Status truncate(uint64_t size) = 0;
  // Deallocates [offset, offset+len); reads of it then return zeros. May be a
  // no-op that writes zeros where the OS cannot punch holes.
  virtual Status punch_hole(uint64_t offset, uint64_t len) = 0;
  // Gives [offset, offset + len) blocks on the device, extending the file
  // where it ends before (posix_fallocate; qemu-img's preallocation=falloc).
  // Here: zeros written.
  virtual Status allocate(uint64_t offset, uint64_t len);
  // Bytes the file occupies on its device (st_blocks * 512 for POSIX).
  virtual Result<uint64_t> allocated_size() { return size(); }
  // A hint that [offset, offset + len) will be written soon. Where reserving
  // the blocks first makes those writes cheaper, they are reserved, without
  // changing the file's size (truncate() to the size releases what lies
  // beyond it). Returns false when nothing was reserved; later calls would
  // not reserve either. Never an error: the writes report any.
  virtual bool reserve(uint64_t offset, uint64_t len) {
    (void)offset;
    (void)len;
    return false;
  }

  // Whether pread() may be called from several threads at once while no other
  // call is in progress (reading many clusters in parallel).
  virtual bool concurrent_reads() const { return false; }
  // Whether every call but reserve() may be made from several threads at
  // once (a file system call each: holes punched by a thread of their own).
  virtual bool thread_safe() const { return false; }

  // Block status: the run of data or hole starting at `offset`. Past the end
  // of the file: a hole ending at UINT64_MAX. Where it cannot be told (here:
  // always), everything up to the end of the file is data.
  virtual Result<FileExtent> extent_at(uint64_t offset);

  // Reads exactly buf.size() bytes; a short read is a Corruption naming `what`.
  Status read_exact(uint64_t offset, std::span<uint8_t> buf, const char* what);
  // Reads buf.size() bytes, treating bytes past end of file as zeros (QEMU
  // does the same: a qcow2 file need not end on a cluster boundary).
  Status read_or_zero(uint64_t offset, std::span<uint8_t> buf);
};

// Writes zeros over the first block of a new raw image of `size` bytes (512
// bytes when it is under 4 KiB, else 4 KiB), as QEMU's file driver does after
// creating one so that later alignment probing finds the block allocated: a
// raw image qdedup makes has the allocation qemu-img's has.
Status allocate_first_block(File& file, uint64_t size);

// Writes `len` zero bytes at `offset`.
Status write_zeros(File& file, uint64_t offset, uint64_t len);

}  // namespace qdedup::io
