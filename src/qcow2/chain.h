// Opening images by path: format probing, locking and the backing chain.
//
// Backing policy (docs/security.md): backing names are plain files only,
// never protocols or URLs; relative names resolve against the directory of
// the image that names them; devices, FIFOs and directories are refused; a
// chain deeper than kMaxChainDepth or a loop is an error.
#pragma once

#include <memory>
#include <string>

#include "io/file_system.h"
#include "qcow2/device.h"
#include "qcow2/image.h"

namespace qdedup::qcow2 {

inline constexpr int kMaxChainDepth = 16;

struct OpenRequest {
  std::string path;
  std::string format;        // "qcow2", "raw" or "" to probe
  bool writable = false;
  bool force_share = false;  // -U: take no read locks that would stop writers
  bool open_backing = true;  // follow the backing chain for reads
  bool backing_member = false;  // named by an image: plain files only
  io::FileSystem* fs = nullptr;  // where the chain's files are; null: the OS's
};

// "qcow2" if the file starts with the qcow2 magic and a version >= 2, else "raw".
Result<std::string> probe_format(io::File& file);

// Opens `req.path` (and its backing chain if asked). Errors are prefixed with
// the path of the file at fault.
Result<std::unique_ptr<BlockDevice>> open_device(const OpenRequest& req);

// As open_device() but requires qcow2 and returns the Image.
Result<std::unique_ptr<Image>> open_qcow2(const OpenRequest& req);

// Opens the backing chain of `image`, itself opened from `path` (the chain's
// names resolve against it), for reads, and attaches it to the image.
// Nothing happens when the image has no backing file.
Status attach_backing(Image& image, const std::string& path, io::FileSystem* fs, bool force_share);

// True for names QEMU would hand to a protocol driver ("json:{...}",
// "nbd://host"): qdedup never follows those.
bool looks_like_protocol(const std::string& name);

// Resolves a backing name against the directory of `image_path`, as QEMU does.
std::string resolve_backing_path(const std::string& image_path, const std::string& backing);

}  // namespace qdedup::qcow2
