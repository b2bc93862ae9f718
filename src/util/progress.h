// Progress on stderr for long commands (-p), in qemu-img's form "    (NN.NN/100%)":
// when stderr is not a terminal, one such line (ended by \r, as qemu-img ends
// it) each time the figure moves by more than one point, never an escape
// sequence; on a terminal redrawn in place with the rate and the time left.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace qdedup {

class Progress {
 public:
  Progress(bool enabled, uint64_t total);
  // Ends the line without claiming 100% (an error or an interruption), as
  // qemu-img does when a job stops.
  ~Progress() { end(); }
  // `done` of `total` (clamped to it); the rate on a terminal is `done` per second,
  // so both count bytes.
  void update(uint64_t done);
  // The same with a note after the bar on a terminal (what is being worked
  // on); the qemu-img line for pipes and files stays as it is. Drawn at most
  // every 100 ms, also when only the note changed.
  void update(uint64_t done, const std::string& note);
  // The job completed: the 100% record, then the end of the line.
  void finish();
  // The end of the line only (nothing more is printed after finish() or end()).
  void end();

 private:
  void draw(uint64_t done, double pct);

  bool enabled_;
  bool tty_;
  bool finished_ = false;
  uint64_t total_;
  double last_pct_ = -1;  // the figure last printed; -1 before the first
  bool redraw_ = false;   // the note changed
  size_t drawn_width_ = 0;
  std::string note_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace qdedup
