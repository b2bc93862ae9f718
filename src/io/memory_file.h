// A File held in memory, for unit tests and for fault injection.
#pragma once

#include <vector>

#include "io/file.h"

namespace qdedup::io {

class MemoryFile : public File {
 public:
  explicit MemoryFile(std::string name = "memory", std::vector<uint8_t> bytes = {})
      : name_(std::move(name)), bytes_(std::move(bytes)) {}

  const std::string& name() const override { return name_; }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override;
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override;
  Status flush() override { return Status::ok(); }
  Result<uint64_t> size() override { return uint64_t{bytes_.size()}; }
  Status truncate(uint64_t size) override;
  Status punch_hole(uint64_t offset, uint64_t len) override;
  bool concurrent_reads() const override { return true; }  // a memcpy out of bytes_

  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t>& mutable_bytes() { return bytes_; }

 private:
  std::string name_;
  std::vector<uint8_t> bytes_;
};

}  // namespace qdedup::io
