// The command table: one row per subcommand. main.cpp registers every row
// with CLI11 and builds `qdedup --help` from it.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
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

std::function<int()> register_check(CLI::App& app);
std::function<int()> register_convert(CLI::App& app);
std::function<int()> register_create(CLI::App& app);
std::function<int()> register_info(CLI::App& app);

// Prints "qdedup: <message>" on stderr and returns 1.
int report_error(const Status& status);
// True after -q: commands print results only.
bool quiet();

}  // namespace qdedup::commands
