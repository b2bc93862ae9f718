// File names as qemu-img takes them: a path; a `json:{...}` pseudo-protocol
// name (QEMU's JSON, whose strings may be single-quoted); or, with
// --image-opts, a QemuOpts string (`driver=qcow2,file.filename=PATH`). qdedup
// takes those that name a local file (the `file` driver) and a format it has,
// and says which key it does not take otherwise.
#pragma once

#include <map>
#include <string>

#include "util/status.h"

namespace qdedup::commands {

struct ImageName {
  std::string path;
  std::string format;  // "" when the name does not give one
};

// QemuOpts syntax: key=value pairs separated by ',', a ',,' standing for a
// comma; an item without '=' is an error.
Result<std::map<std::string, std::string>> split_qemu_opts(const std::string& text);

// `format` is -f's value ("" when absent).
Result<ImageName> parse_image_name(const std::string& name, bool image_opts,
                                   const std::string& format);

}  // namespace qdedup::commands
