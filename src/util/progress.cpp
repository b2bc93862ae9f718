#include "util/progress.h"

#include <unistd.h>

#include <string>

#include "util/size.h"

namespace qdedup {

Progress::Progress(bool enabled, uint64_t total)
    : enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0), total_(total),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  update(0);
}

void Progress::update(uint64_t done, const std::string& note) {
  if (tty_ && note != note_) {
    note_ = note;
    last_permille_ = -1;  // redraw for the note
  }
  update(done);
}

void Progress::update(uint64_t done) {
  if (!enabled_ || finished_) return;
  int permille = total_ ? static_cast<int>(done * 1000 / total_) : 1000;
  auto now = std::chrono::steady_clock::now();
  if (permille == last_permille_) return;
  if (tty_ && permille != 1000 && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_permille_ = permille;
  last_draw_ = now;
  double pct = permille / 10.0;
  if (!tty_) {
    std::fprintf(stderr, "    (%0.2f/100%%)\r", pct);
    std::fflush(stderr);
    return;
  }
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
  // With a note the bar is shorter, and the note is cut so that the line
  // does not wrap on an 80-column terminal (a wrapped line is not redrawn in
  // place); \033[K clears what a longer line before left.
  const int width = note_.empty() ? 30 : 20;
  int filled = permille * width / 1000;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(static_cast<size_t>(width), '.');
  const size_t note_width = 80 - 1 - (2 + static_cast<size_t>(width) + 8 + 12 + 10);
  std::string note = note_.size() > note_width ? note_.substr(0, note_width - 3) + "..." : note_;
  std::fprintf(stderr, "\r[%s] %5.1f%% %9s/s ETA %s %s\033[K", bar.c_str(), pct,
               format_iec_size(static_cast<uint64_t>(rate)).c_str(), eta.c_str(), note.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  update(total_);
  finished_ = true;
  std::fprintf(stderr, "\n");
}

}  // namespace qdedup
