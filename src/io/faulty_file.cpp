#include "io/faulty_file.h"

#include <algorithm>
#include <utility>

namespace qdedup::io {

namespace {
Status crashed_status(const std::string& name) {
  return Status(StatusCode::kCrashed, name + ": simulated crash");
}
}  // namespace

Status FaultyFile::admit_write() {
  if (crashed_) return crashed_status(name_);
  if (crash_after_ && writes_ >= *crash_after_) {
    crashed_ = true;
    return crashed_status(name_);
  }
  ++writes_;
  if (fail_at_ && writes_ == *fail_at_) {
    return Status(fail_code_, name_ + ": injected failure at write " +
                                  std::to_string(writes_));
  }
  return Status::ok();
}

void FaultyFile::apply(MemoryFile& f, const Op& op) {
  Status s;
  switch (op.kind) {
    case Op::kWrite: s = f.pwrite(op.offset, op.data); break;
    case Op::kTruncate: s = f.truncate(op.offset); break;
    case Op::kPunch: s = f.punch_hole(op.offset, op.length); break;
  }
  (void)s;  // the live copy already accepted the same operation
}

Result<size_t> FaultyFile::pread(uint64_t offset, std::span<uint8_t> buf) {
  if (crashed_) return crashed_status(name_);
  if (bad_reads_ && offset < bad_reads_->second && offset + buf.size() > bad_reads_->first) {
    return io_error(name_ + ": injected read error at " + std::to_string(offset));
  }
  return live_.pread(offset, buf);
}

Status FaultyFile::pwrite(uint64_t offset, std::span<const uint8_t> buf) {
  QD_TRY(admit_write());
  QD_TRY(live_.pwrite(offset, buf));
  pending_.push_back(Op{Op::kWrite, offset, buf.size(), {buf.begin(), buf.end()}});
  return Status::ok();
}

Status FaultyFile::truncate(uint64_t size) {
  QD_TRY(admit_write());
  QD_TRY(live_.truncate(size));
  pending_.push_back(Op{Op::kTruncate, size, 0, {}});
  return Status::ok();
}

Status FaultyFile::punch_hole(uint64_t offset, uint64_t len) {
  QD_TRY(admit_write());
  QD_TRY(live_.punch_hole(offset, len));
  pending_.push_back(Op{Op::kPunch, offset, len, {}});
  return Status::ok();
}

Status FaultyFile::flush() {
  if (crashed_) return crashed_status(name_);
  for (const Op& op : pending_) apply(durable_, op);
  pending_.clear();
  ++flushes_;
  return Status::ok();
}

Result<uint64_t> FaultyFile::size() {
  if (crashed_) return crashed_status(name_);
  return live_.size();
}

std::vector<uint8_t> FaultyFile::image_after_crash(Survivors which,
                                                   uint32_t seed) const {
  MemoryFile out(name_, durable_.bytes());
  std::mt19937 rng(seed);
  for (const Op& op : pending_) {
    bool keep = which == Survivors::kAll ||
                (which == Survivors::kRandomSubset && (rng() & 1) != 0);
    if (keep) apply(out, op);
  }
  return out.bytes();
}

std::vector<std::vector<uint8_t>> FaultyFile::distinct_crash_states() const {
  std::vector<std::vector<uint8_t>> out;
  for (auto [which, seed] : {std::pair{Survivors::kFlushedOnly, 0u}, {Survivors::kAll, 0u},
                             {Survivors::kRandomSubset, 1u}, {Survivors::kRandomSubset, 2u}}) {
    std::vector<uint8_t> b = image_after_crash(which, seed);
    if (std::find(out.begin(), out.end(), b) == out.end()) out.push_back(std::move(b));
  }
  return out;
}

}  // namespace qdedup::io
