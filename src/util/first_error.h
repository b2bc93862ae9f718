// The first failed Status of work running on several threads at once.
//
// Thread safety: set() and take() from any thread.
#pragma once

#include <mutex>
#include <utility>

#include "util/status.h"

namespace qdedup {

class FirstError {
 public:
  // Keeps `st` if it is the first failure.
  void set(Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_ && !st) first_ = std::move(st);
  }
  // The first failure (ok if none), and forgets it.
  Status take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(first_, Status::ok());
  }

 private:
  std::mutex mu_;
  Status first_ = Status::ok();
};

}  // namespace qdedup
