// qdedup create [-f qcow2|raw] [-o OPTIONS] [-b BACKING [-F FMT]] FILE [SIZE]
#include <cstdio>

#include "commands/command.h"
#include "io/file_system.h"
#include "ops/create.h"

namespace qdedup::commands {

namespace {

Status run_create(const ops::CreateJob& job) {
  QD_ASSIGN_OR_RETURN(ops::CreatePlan plan, ops::plan_create(io::posix_file_system(), job));
  const ops::CreateRequest& req = plan.request;
  if (req.help) {
    std::fputs(ops::create_options_help().c_str(), stdout);
    return Status::ok();
  }
  if (!quiet()) {
    std::printf("Formatting '%s', fmt=%s", plan.file.c_str(), req.format.c_str());
    if (req.format == "qcow2") {
      std::printf(" cluster_size=%llu", 1ull << req.image.cluster_bits);
      if (!req.image.backing_file.empty()) {
        std::printf(" backing_file=%s backing_fmt=%s", req.image.backing_file.c_str(),
                    req.image.backing_format.c_str());
      }
    }
    std::printf(" size=%llu\n", static_cast<unsigned long long>(req.image.size));
  }
  return ops::create(io::posix_file_system(), plan);
}

}  // namespace

std::function<int()> register_create(CLI::App& app) {
  auto a = std::make_shared<ops::CreateJob>();
  app.add_option("-f", a->format, "Image format: qcow2 (default) or raw");
  app.add_option("-o", a->options, "Comma-separated key=value options ('-o help' lists them)")
      ->allow_extra_args(false);
  app.add_option("-b", a->backing, "Backing file");
  app.add_option("-F", a->backing_format, "Backing file format (qcow2 or raw)");
  app.add_option("FILE", a->file, "Image to create")->required(false);
  app.add_option("SIZE", a->size, "Virtual size, with optional suffix k, M, G, T, P, E");
  app.footer("Example:\n  qdedup create -f qcow2 -o cluster_size=4k disk.qcow2 10G");
  return [a] {
    Status s = run_create(*a);
    return s ? kExitOk : report_error(s);
  };
}

}  // namespace qdedup::commands
