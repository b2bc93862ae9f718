// A readable virtual disk: a qcow2 image or a raw file. Backing chains are
// BlockDevices pointing at BlockDevices.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "io/file.h"
#include "util/status.h"

namespace qdedup::qcow2 {

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  virtual const std::string& name() const = 0;
  virtual const char* format() const = 0;  // "qcow2" or "raw"
  virtual uint64_t virtual_size() const = 0;
  // Reads guest bytes [offset, offset + buf.size()); the range must lie
  // inside virtual_size().
  virtual Status read(uint64_t offset, std::span<uint8_t> buf) = 0;
};

// A raw file as a disk. QEMU reports raw sizes rounded up to 512 bytes and
// reads the tail as zeros; so does this.
class RawDevice : public BlockDevice {
 public:
  static Result<std::unique_ptr<RawDevice>> open(std::unique_ptr<io::File> file);
  const std::string& name() const override { return file_->name(); }
  const char* format() const override { return "raw"; }
  uint64_t virtual_size() const override { return size_; }
  Status read(uint64_t offset, std::span<uint8_t> buf) override;
  io::File& file() { return *file_; }

 private:
  RawDevice(std::unique_ptr<io::File> file, uint64_t size)
      : file_(std::move(file)), size_(size) {}
  std::unique_ptr<io::File> file_;
  uint64_t size_;
};

}  // namespace qdedup::qcow2
