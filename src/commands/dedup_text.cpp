#include "commands/dedup_text.h"

#include <algorithm>
#include <ctime>

#include "util/text.h"

namespace qdedup::commands {

std::string last_run_text(const dedup::DedupCounters& c) {
  if (c.last_run_time == 0) return "unknown";
  char date[40] = "";
  const std::time_t t = static_cast<std::time_t>(c.last_run_time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", &tm);
  std::string s = date;
  if (!c.last_run_version.empty()) s += ", qdedup " + escape_for_display(c.last_run_version);
  return s;
}

void print_counters(std::FILE* out, const dedup::DedupCounters& c, const char* indent, int width) {
  auto line = [&](std::string key, const std::string& value) {
    std::replace(key.begin(), key.end(), '-', ' ');
    key += ':';
    std::fprintf(out, "%s%-*s %s\n", indent, width, key.c_str(), value.c_str());
  };
  for (const auto& [name, value] : dedup::counter_fields(c)) line(name, std::to_string(value));
  line("last-run", last_run_text(c));
}

}  // namespace qdedup::commands
