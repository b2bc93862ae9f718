// Progress on stderr for long commands (-p): a bar with percent, throughput
// and ETA on a terminal; qemu-img's "    (NN.NN/100%)" line otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace qdedup {

class Progress {
 public:
  Progress(bool enabled, uint64_t total);
  ~Progress() { finish(); }
  void update(uint64_t done);
  // The same with a note after the bar on a terminal (what is being worked
  // on); the qemu-img line for pipes and files stays as it is. Drawn at most
  // every 100 ms, also when only the note changed.
  void update(uint64_t done, const std::string& note);
  void finish();

 private:
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  uint64_t total_;
  int last_permille_ = -1;
  std::string note_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace qdedup
