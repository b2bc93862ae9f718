// qdedup create [-f qcow2|raw] [-o OPTIONS] [-b BACKING [-F FMT]] FILE [SIZE]
#include <cstdio>
#include <string>

#include "commands/command.h"
#include "io/file_system.h"
#include "ops/create.h"

namespace qdedup::commands {

namespace {

// qemu-img's "Formatting" line: every option of the format in qemu-img
// 7.2's order, given or with its default, sizes and numbers as parsed, other
// values as typed; qdedup's own options last.
std::string formatting_line(const ops::CreatePlan& plan) {
  const ops::CreateRequest& req = plan.request;
  std::string line = "Formatting '" + plan.file + "', fmt=" + req.format;
  auto put = [&](const char* key, const std::string& value) { line += std::string(" ") + key + "=" + value; };
  auto given = [&](const char* key, const char* fallback) {
    auto it = req.given.find(key);
    if (it != req.given.end()) {
      put(key, it->second);
    } else if (fallback) {
      put(key, fallback);
    }
  };
  const std::string size = std::to_string(req.image.size);
  if (req.format == "raw") {
    put("size", size);
    given("preallocation", nullptr);
    return line;
  }
  put("cluster_size", std::to_string(ops::planned_cluster_size(req)));
  given("extended_l2", "off");
  given("preallocation", nullptr);
  given("compression_type", "zlib");
  put("size", size);
  given("compat", nullptr);
  given("backing_file", nullptr);
  given("backing_fmt", nullptr);
  given("lazy_refcounts", "off");
  if (req.given.count("refcount_bits")) {
    // Printed signed, as qemu-img prints a number option ("-1" stays -1).
    put("refcount_bits", std::to_string(static_cast<int64_t>(req.refcount_bits)));
  } else {
    put("refcount_bits", "16");
  }
  given("dedup", nullptr);
  given("dedup_verify", nullptr);
  return line;
}

Status run_create(const ops::CreateJob& job) {
  QD_ASSIGN_OR_RETURN(ops::CreatePlan plan, ops::plan_create(io::posix_file_system(), job));
  if (plan.request.help) {
    std::fputs(ops::create_options_help().c_str(), stdout);
    return Status::ok();
  }
  // Before the values are checked, as qemu-img prints it.
  if (!quiet()) {
    std::printf("%s\n", formatting_line(plan).c_str());
    std::fflush(stdout);
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
