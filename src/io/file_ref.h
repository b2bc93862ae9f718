// A File that forwards to another File it does not own: lets an owner of a
// File (a command, a test) hand it to code that takes a unique_ptr<File>.
#pragma once

#include "io/file.h"

namespace qdedup::io {

class FileRef : public File {
 public:
  explicit FileRef(File& target) : target_(target) {}

  const std::string& name() const override { return target_.name(); }
  Result<size_t> pread(uint64_t offset, std::span<uint8_t> buf) override {
    return target_.pread(offset, buf);
  }
  Status pwrite(uint64_t offset, std::span<const uint8_t> buf) override {
    return target_.pwrite(offset, buf);
  }
  Status flush() override { return target_.flush(); }
  Result<uint64_t> size() override { return target_.size(); }
  Status truncate(uint64_t size) override { return target_.truncate(size); }
  Status punch_hole(uint64_t offset, uint64_t len) override {
    return target_.punch_hole(offset, len);
  }
  Status allocate(uint64_t offset, uint64_t len) override {
    return target_.allocate(offset, len);
  }
  Result<uint64_t> allocated_size() override { return target_.allocated_size(); }
  bool reserve(uint64_t offset, uint64_t len) override { return target_.reserve(offset, len); }
  Result<FileExtent> extent_at(uint64_t offset) override { return target_.extent_at(offset); }
  bool concurrent_reads() const override { return target_.concurrent_reads(); }
  bool thread_safe() const override { return target_.thread_safe(); }

 private:
  File& target_;
};

}  // namespace qdedup::io
