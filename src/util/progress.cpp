#include "util/progress.h"

#include <unistd.h>

#include <string>

#include "util/size.h"

namespace qdedup {

Progress::Progress(bool enabled, uint64_t total)
    : enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  update(0);
}

void Progress::update(uint64_t done, const std::string& note) {
  if (tty_ && note != note_) {
    note_ = note;
    redraw_ = true;
  }
  update(done);
}

void Progress::update(uint64_t done) {
  if (done > total_) done = total_;
  // Exactly 100 only at the end; with nothing to do (total 0) 0 until finish().
  double pct = 0;
  if (total_) {
    pct = done == total_ ? 100.0 : 100.0 * static_cast<double>(done) / static_cast<double>(total_);
  }
  draw(done, pct);
}

void Progress::draw(uint64_t done, double pct) {
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!tty_) {
    // qemu-img's rule (util/qemu-progress.c with convert's step of 1%): a line when the
    // figure moved by more than one point since the last line, at 0, and each time it
    // is told 100 (so the end repeats the last line, as qemu-img's does).
    const bool first = last_pct_ < 0;
    if (!first && !(pct > last_pct_ + 1.0) && pct != 100.0) return;
    last_pct_ = pct;
    std::fprintf(stderr, "    (%3.2f/100%%)\r", pct);
    std::fflush(stderr);
    return;
  }
  // On a terminal: the same figure, redrawn in place at most every 100 ms (and at
  // the end), followed by the rate, the time left and the note.
  if (pct == last_pct_ && !redraw_) return;
  if (pct != 100.0 && last_pct_ >= 0 && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_pct_ = pct;
  last_draw_ = now;
  redraw_ = false;
  double secs = std::chrono::duration<double>(now - start_).count();
  double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  std::string eta = "--:--";
  if (rate > 0 && done < total_) {
    auto left = static_cast<uint64_t>(static_cast<double>(total_ - done) / rate);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%02llu:%02llu", static_cast<unsigned long long>(left / 60),
                  static_cast<unsigned long long>(left % 60));
    eta = buf;
  }
  char head[96];
  std::snprintf(head, sizeof head, "    (%3.2f/100%%) %9s/s ETA %s", pct,
                format_iec_size(static_cast<uint64_t>(rate)).c_str(), eta.c_str());
  std::string line = head;
  // The note is cut so that the line does not wrap on an 80-column terminal (a
  // wrapped line is not redrawn in place); spaces, not an escape sequence,
  // clear what a longer line before left.
  if (!note_.empty()) {
    const size_t room = line.size() + 2 < 79 ? 79 - line.size() - 2 : 0;
    line += "  " + (note_.size() > room && room > 3 ? note_.substr(0, room - 3) + "..." : note_);
  }
  const size_t shown = line.size();
  if (line.size() < drawn_width_) line.append(drawn_width_ - line.size(), ' ');
  drawn_width_ = shown;
  std::fprintf(stderr, "\r%s", line.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  draw(total_, 100.0);
  end();
}

void Progress::end() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\n");
}

}  // namespace qdedup
