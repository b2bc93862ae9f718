// How the commands print the dedup extension's counters (info, metrics).
#pragma once

#include <cstdio>
#include <string>

#include "dedup/extension.h"

namespace qdedup::commands {

// "2026-12-03 07:30:00 UTC, qdedup 0.1.0", or "unknown".
std::string last_run_text(const dedup::DedupCounters& c);
// One "INDENTname: value" line per counter (names with spaces), then the last run.
void print_counters(std::FILE* out, const dedup::DedupCounters& c, const char* indent, int width);

}  // namespace qdedup::commands
