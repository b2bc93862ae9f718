#include "io/file.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace qdedup::io {

Status File::read_exact(uint64_t offset, std::span<uint8_t> buf,
                        const char* what) {
  QD_ASSIGN_OR_RETURN(size_t n, pread(offset, buf));
  if (n != buf.size()) {
    return corruption(std::string(what) + " at offset " +
                      std::to_string(offset) + " lies beyond the end of the file");
  }
  return Status::ok();
}

Status File::read_or_zero(uint64_t offset, std::span<uint8_t> buf) {
  QD_ASSIGN_OR_RETURN(size_t n, pread(offset, buf));
  std::fill(buf.begin() + static_cast<std::ptrdiff_t>(n), buf.end(), uint8_t{0});
  return Status::ok();
}

Result<FileExtent> File::extent_at(uint64_t offset) {
  QD_ASSIGN_OR_RETURN(uint64_t end, size());
  if (offset >= end) return FileExtent{UINT64_MAX, true};
  return FileExtent{end, false};
}

Status allocate_first_block(File& file, uint64_t size) {
  if (size == 0) return Status::ok();
  static const std::vector<uint8_t> kZeros(4096, 0);
  const size_t n = size < 4096 ? 512 : 4096;
  return file.pwrite(0, std::span<const uint8_t>(kZeros.data(), n));
}

Status write_zeros(File& file, uint64_t offset, uint64_t len) {
  static const std::vector<uint8_t> kZeros(1u << 20, 0);
  while (len > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len, kZeros.size()));
    QD_TRY(file.pwrite(offset, std::span<const uint8_t>(kZeros.data(), n)));
    offset += n;
    len -= n;
  }
  return Status::ok();
}

Status File::allocate(uint64_t offset, uint64_t len) { return write_zeros(*this, offset, len); }

}  // namespace qdedup::io
