// Progress on stderr for long commands (-p): a bar with percent, throughput
// and ETA on a terminal; qemu-img's "    (NN.NN/100%)" line otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace qdedup {

class Progress {
 public:
  Progress(bool enabled, uint64_t total);
  ~Progress() { finish(); }
  void update(uint64_t done);
  void finish();

 private:
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  uint64_t total_;
  int last_permille_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace qdedup
