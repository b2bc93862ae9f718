// The `-o` options of `create` and `convert`: the qcow2 layer's create
// options and qdedup's own (dedup=, dedup_verify=), parsed in one place.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "qcow2/create.h"
#include "util/status.h"

namespace qdedup::ops {

// The `-o` options of `create`, as key=value pairs separated by commas
// (qemu-img's syntax). Unknown keys and bad values are errors.
struct CreateRequest {
  qcow2::CreateOptions image;
  std::string format = "qcow2";
  std::optional<uint64_t> size;  // from -o size= or the SIZE argument
  std::string dedup = "off";
  bool cluster_size_set = false;  // cluster_size given explicitly
  std::string dedup_verify = "off";
  bool help = false;             // -o help
};
Status apply_create_options(const std::string& text, CreateRequest& req);
// The text `-o help` prints.
std::string create_options_help();

}  // namespace qdedup::ops
