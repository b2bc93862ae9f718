// The `-o` options of `create` and `convert`: the qcow2 layer's create
// options and qdedup's own (dedup=, dedup_verify=), parsed in one place.
#pragma once

#include <cstdint>
#include <map>
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
  // Every key given, with its last value as typed (create's "Formatting" line).
  std::map<std::string, std::string> given;
  uint64_t cluster_size = 0;   // -o cluster_size, parsed (checked by resolve)
  uint64_t refcount_bits = 0;  // -o refcount_bits, parsed (checked by resolve)
};

// As qemu-img does, in two steps. parse_create_options: the syntax, the keys
// and values of the wrong type (a size, a number, on/off) are errors, which
// qemu-img reports before its "Formatting" line. resolve_create_options: the
// values themselves (a cluster size out of range, an unknown compat level or
// compression type), reported after it; it sets `image` from them.
Status parse_create_options(const std::string& text, CreateRequest& req);
Status resolve_create_options(CreateRequest& req);
// Both (convert, which prints no "Formatting" line).
Status apply_create_options(const std::string& text, CreateRequest& req);
// The text `-o help` prints.
std::string create_options_help();

}  // namespace qdedup::ops
