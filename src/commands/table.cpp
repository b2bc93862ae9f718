#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

#include "commands/command.h"

namespace qdedup::commands {

const std::vector<Command>& command_table() {
  static const std::vector<Command> kCommands = {
      {"create", "Create a new qcow2 (optionally deduplicating) or raw image", register_create},
      {"convert", "Copy disks into a raw or qcow2 image, deduplicating with -o dedup=HASH",
       register_convert},
      {"check", "Check an image's consistency and its dedup index; repair with -r", register_check},
      {"dedup-offline", "Deduplicate existing qcow2 images in place (batch, crash-safe)",
       register_dedup_offline},
      {"info", "Show facts about an image (qemu-img info compatible)", register_info},
      {"metrics", "Report space, sharing, the dedup index and counters (human, JSON, Prometheus)",
       register_metrics},
  };
  return kCommands;
}

namespace {

class HelpFormatter : public CLI::Formatter {
 public:
  std::string make_option_name(const CLI::Option* opt, bool is_positional) const override {
    std::string name = CLI::Formatter::make_option_name(opt, is_positional);
    for (size_t open; (open = name.find('{')) != std::string::npos;) {
      size_t close = name.find('}', open);
      if (close == std::string::npos) break;
      name.erase(open, close - open + 1);
    }
    return name;
  }
  // An optional value ("[=leaks|all]") is written against the name, as man pages do.
  std::string make_option_opts(const CLI::Option* opt) const override {
    std::string opts = CLI::Formatter::make_option_opts(opt);
    if (opts.rfind(" [=", 0) == 0) opts.erase(0, 1);
    return opts;
  }
};

}  // namespace

std::shared_ptr<CLI::Formatter> help_formatter() { return std::make_shared<HelpFormatter>(); }

namespace {
std::string& program_name_storage() {
  static std::string name = "qdedup";
  return name;
}
}  // namespace

const char* program_name() { return program_name_storage().c_str(); }

void set_program_name(const char* argv0) {
  if (!argv0) return;
  std::string name(argv0);
  if (size_t slash = name.rfind('/'); slash != std::string::npos) name.erase(0, slash + 1);
  if (!name.empty()) program_name_storage() = name;
}

int report_error(const Status& status) {
  std::fprintf(stderr, "%s: %s\n", program_name(), status.message().c_str());
  return kExitError;
}

bool quiet() { return spdlog::get_level() > spdlog::level::info; }

}  // namespace qdedup::commands
