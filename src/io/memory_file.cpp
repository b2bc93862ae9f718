#include "io/memory_file.h"

#include <algorithm>
#include <cstring>

namespace qdedup::io {

namespace {
// Memory files are for tests; refuse sizes that would exhaust the test host.
constexpr uint64_t kMaxMemoryFileSize = uint64_t{16} << 30;
}  // namespace

Result<size_t> MemoryFile::pread(uint64_t offset, std::span<uint8_t> buf) {
  if (offset >= bytes_.size()) return size_t{0};
  size_t n = static_cast<size_t>(
      std::min<uint64_t>(buf.size(), bytes_.size() - offset));
  // An empty span may have a null data(): memcpy's pointers must never be null.
  if (n != 0) std::memcpy(buf.data(), bytes_.data() + offset, n);
  return n;
}

Status MemoryFile::pwrite(uint64_t offset, std::span<const uint8_t> buf) {
  if (offset > kMaxMemoryFileSize || buf.size() > kMaxMemoryFileSize - offset) {
    return no_space(name_ + ": write beyond the memory file limit");
  }
  uint64_t end = offset + buf.size();
  if (end > bytes_.size()) bytes_.resize(static_cast<size_t>(end), 0);
  if (!buf.empty()) std::memcpy(bytes_.data() + offset, buf.data(), buf.size());
  return Status::ok();
}

Status MemoryFile::truncate(uint64_t size) {
  if (size > kMaxMemoryFileSize) return no_space(name_ + ": truncate too large");
  bytes_.resize(static_cast<size_t>(size), 0);
  return Status::ok();
}

Status MemoryFile::punch_hole(uint64_t offset, uint64_t len) {
  if (offset >= bytes_.size()) return Status::ok();
  uint64_t end = std::min<uint64_t>(bytes_.size(), offset + len);
  std::fill(bytes_.begin() + static_cast<std::ptrdiff_t>(offset),
            bytes_.begin() + static_cast<std::ptrdiff_t>(end), uint8_t{0});
  return Status::ok();
}

}  // namespace qdedup::io
