#include "qcow2/device.h"

#include "util/size.h"

namespace qdedup::qcow2 {

Result<std::unique_ptr<RawDevice>> RawDevice::open(std::unique_ptr<io::File> file) {
  QD_ASSIGN_OR_RETURN(uint64_t size, file->size());
  uint64_t rounded = 0;
  if (!align_up(size, 512, &rounded)) return corruption("file too large");
  return std::unique_ptr<RawDevice>(new RawDevice(std::move(file), rounded));
}

Status RawDevice::read(uint64_t offset, std::span<uint8_t> buf) {
  return file_->read_or_zero(offset, buf);
}

}  // namespace qdedup::qcow2
