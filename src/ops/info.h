// `info`: what qemu-img info reports of an image (and, with --backing-chain,
// of each image of its backing chain), plus qdedup's own dedup facts.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "dedup/extension.h"
#include "dedup/index_check.h"
#include "io/file_system.h"
#include "qcow2/info.h"
#include "util/status.h"

namespace qdedup::ops {

struct InfoJob {
  std::string format;  // "" probes
  std::string output = "human";  // for the command: human or json
  bool backing_chain = false;
  bool force_share = false;  // -U
  std::string file;
};

// qdedup's own facts about an image: its dedup extension, if any.
struct DedupInfo {
  std::optional<dedup::DedupExtension> ext;
  // valid or stale, from the autoclear bit (info does not check the entries:
  // `check` and `metrics` also tell damaged apart).
  dedup::IndexState index_state = dedup::IndexState::kStale;
  std::string error;  // the extension could not be decoded
};

struct InfoEntry {
  qcow2::ImageInfo image;
  std::optional<DedupInfo> dedup;  // absent: no dedup extension
};

// The image first, then (with backing_chain) each backing file in order.
// Errors are prefixed with the file at fault.
Result<std::vector<InfoEntry>> info(io::FileSystem& fs, const InfoJob& job);

}  // namespace qdedup::ops
