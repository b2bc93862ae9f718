// qdedup: a qemu-img-style tool for deduplicated qcow2 images.
//
// Builds the command line from the command table, runs the chosen command and
// returns its exit status. Results go to stdout, diagnostics to stderr.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

#include "commands/command.h"

int main(int argc, char** argv) {
  using qdedup::commands::command_table;
  using qdedup::commands::program_name;
  qdedup::commands::set_program_name(argc > 0 ? argv[0] : nullptr);
  CLI::App app{"qdedup: cluster-level deduplication for QCOW2 disk images, "
               "compatible with stock QEMU"};
  app.name("qdedup");
  app.set_version_flag("--version", std::string("qdedup ") + QDEDUP_VERSION);
  app.require_subcommand(1);
  app.formatter(qdedup::commands::help_formatter());  // before the subcommands: they inherit it
  bool quiet = false;
  bool verbose = false;
  app.add_flag("-q,--quiet", quiet, "Print results and errors only")->configurable(false);
  app.add_flag("-v,--verbose", verbose, "Debug logging on stderr");
  app.footer("Run 'qdedup COMMAND --help' for a command's options and an example.");

  // A first word that is no command is an error, even with --help after it.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const auto& cmd : command_table()) known |= std::string(argv[1]) == cmd.name;
    if (!known) {
      std::fprintf(stderr, "%s: unknown command '%s' (see 'qdedup --help')\n", program_name(),
                   argv[1]);
      return qdedup::commands::kExitError;
    }
  }

  std::function<int()> run;
  for (const auto& cmd : command_table()) {
    CLI::App* sub = app.add_subcommand(cmd.name, cmd.description);
    sub->fallthrough();  // -q and -v work after the command too
    auto runner = cmd.setup(*sub);
    sub->callback([&run, runner] { run = runner; });
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\n", program_name(), e.what());
    return qdedup::commands::kExitError;
  }

  auto logger = spdlog::stderr_color_mt("qdedup");
  logger->set_pattern(std::string(program_name()) + ": %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(verbose ? spdlog::level::debug
                            : quiet ? spdlog::level::warn : spdlog::level::info);
  return run ? run() : qdedup::commands::kExitError;
}
