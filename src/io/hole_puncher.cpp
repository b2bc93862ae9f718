#include "io/hole_puncher.h"

#include <system_error>

namespace qdedup::io {

HolePuncher::HolePuncher(File& file) : file_(file) {
  if (!file_.thread_safe()) return;
  try {
    thread_ = std::thread([this] { main(); });
  } catch (const std::system_error&) {
    // No thread to be had: punch on the caller's.
  }
}

HolePuncher::~HolePuncher() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

void HolePuncher::punch(uint64_t offset, uint64_t len) {
  if (!thread_.joinable()) {
    Status st = file_.punch_hole(offset, len);
    if (!st && error_) error_ = std::move(st);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({offset, len});
  }
  work_cv_.notify_one();
}

Status HolePuncher::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
  Status st = std::move(error_);
  error_ = Status::ok();
  return st;
}

void HolePuncher::main() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    const Hole h = queue_.front();
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    Status st = file_.punch_hole(h.offset, h.len);
    lock.lock();
    busy_ = false;
    if (!st && error_) error_ = std::move(st);
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

}  // namespace qdedup::io
