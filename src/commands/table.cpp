#include <spdlog/spdlog.h>

#include <cstdio>

#include "commands/command.h"

namespace qdedup::commands {

const std::vector<Command>& command_table() {
  static const std::vector<Command> kCommands = {
      {"create", "Create a new qcow2 (optionally deduplicating) or raw image", register_create},
      {"convert", "Copy disks into a raw or qcow2 image, deduplicating with -o dedup=HASH",
       register_convert},
      {"check", "Check an image's consistency and its dedup index; repair with -r",
       register_check},
      {"dedup-offline", "Deduplicate existing qcow2 images in place (batch, crash-safe)",
       register_dedup_offline},
      {"info", "Show facts about an image (qemu-img info compatible)", register_info},
      {"metrics", "Report space, sharing, the dedup index and counters (human, JSON, Prometheus)",
       register_metrics},
  };
  return kCommands;
}

int report_error(const Status& status) {
  std::fprintf(stderr, "qdedup: %s\n", status.message().c_str());
  return kExitError;
}

bool quiet() { return spdlog::get_level() > spdlog::level::info; }

}  // namespace qdedup::commands
