// Holes punched on a thread of their own: on a file system mounted with
// `discard`, each fallocate(PUNCH_HOLE) waits for the device, which a job that
// frees many clusters (dedup-offline) need not wait for.
//
// Thread safety: one thread calls punch() and drain(); the holes are punched
// on the puncher's thread, which touches nothing but the File.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

#include "io/file.h"

namespace qdedup::io {

class HolePuncher {
 public:
  // Where file.thread_safe() is false, punch() punches at once, on the
  // caller's thread.
  explicit HolePuncher(File& file);
  // Waits for the holes asked for (errors then are dropped: drain() first).
  ~HolePuncher();
  HolePuncher(const HolePuncher&) = delete;
  HolePuncher& operator=(const HolePuncher&) = delete;

  // Asks for [offset, offset + len) to be punched. The bytes must be free for
  // good: nothing may write them until drain() returned.
  void punch(uint64_t offset, uint64_t len);
  // Returns once every hole asked for is punched: the first error, if any.
  Status drain();

 private:
  struct Hole {
    uint64_t offset = 0, len = 0;
  };
  void main();

  File& file_;
  std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<Hole> queue_;
  bool busy_ = false;
  bool stop_ = false;
  Status error_ = Status::ok();
  std::thread thread_;  // not started where the file is not thread safe
};

}  // namespace qdedup::io
