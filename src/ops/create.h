// `create`: a new, empty image (qcow2 or raw), as qemu-img create makes it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "io/file_system.h"
#include "ops/create_options.h"
#include "util/status.h"

namespace qdedup::ops {

struct CreateJob {
  std::string file;
  std::string format = "qcow2";      // -f
  std::vector<std::string> options;  // each -o
  std::optional<std::string> backing;  // -b (given empty: an error, as qemu-img)
  std::string backing_format;        // -F
  std::string size;                  // SIZE, as typed ("" for none)
};

// The image `create` will write, every option resolved and checked (the
// backing file opened for its size when SIZE is absent). With -o help,
// `request.help` is set and nothing else is checked.
struct CreatePlan {
  std::string file;
  CreateRequest request;
};

// Errors are prefixed with the file at fault.
Result<CreatePlan> plan_create(io::FileSystem& fs, const CreateJob& job);

// The cluster size given, or the default (4 KiB with dedup, else 64 KiB):
// what the image gets if the options check out.
uint64_t planned_cluster_size(const CreateRequest& req);

// Checks the planned values (resolve_create_options, the dedup policy, their
// combination), then writes the planned image to a new file beside plan.file, then renames it
// into place: a failed create leaves no file, and never damages (or replaces
// while someone uses it) an existing one.
Status create(io::FileSystem& fs, const CreatePlan& plan);

}  // namespace qdedup::ops
