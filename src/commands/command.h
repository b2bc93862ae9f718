// The command table: one row per subcommand. main.cpp registers every row
// with CLI11 and builds `qdedup --help` from it.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "util/status.h"

namespace qdedup::commands {

// Registers a command's options on `app` and returns the function that runs
// it once parsing succeeded; that function returns the exit status.
using Register = std::function<std::function<int()>(CLI::App& app)>;

struct Command {
  const char* name;
  const char* description;
  Register setup;
};

const std::vector<Command>& command_table();

// The help layout of every command: CLI11's, except that a flag with a value
// of its own ("--json{json}") is listed under its plain name, and an optional
// value is written against it ("--repair[=leaks|all]").
std::shared_ptr<CLI::Formatter> help_formatter();

std::function<int()> register_check(CLI::App& app);
std::function<int()> register_convert(CLI::App& app);
std::function<int()> register_create(CLI::App& app);
std::function<int()> register_dedup_offline(CLI::App& app);
std::function<int()> register_info(CLI::App& app);
std::function<int()> register_metrics(CLI::App& app);

// Exit statuses, part of the interface (qemu-img's where it has them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // an error, or a check that could not complete
inline constexpr int kExitCorruptions = 2;  // check: corruptions remain
inline constexpr int kExitLeaks = 3;        // check: only leaked clusters remain
inline constexpr int kExitNoChecks = 63;    // check: the format has no checks (raw)
inline constexpr int kExitInterrupted = 130;  // dedup-offline: stopped by SIGINT/SIGTERM (128 + 2)

// The status of a completed check, as qemu-img check gives it.
inline int check_exit_status(uint64_t corruptions, uint64_t leaks) {
  if (corruptions) return kExitCorruptions;
  if (leaks) return kExitLeaks;
  return kExitOk;
}

// The name diagnostics start with: the last component of argv[0], as qemu-img and most Unix
// tools name themselves ("qdedup" when run as qdedup, and when argv[0] is empty).
const char* program_name();
void set_program_name(const char* argv0);

// Prints "<program>: <message>" on stderr and returns kExitError.
int report_error(const Status& status);
// True after -q: commands print results only.
bool quiet();

}  // namespace qdedup::commands
