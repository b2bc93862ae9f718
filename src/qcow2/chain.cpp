#include "qcow2/chain.h"

#include <spdlog/spdlog.h>

#include <climits>
#include <cstdlib>
#include <set>
#include <vector>

#include "qcow2/format.h"
#include "util/endian.h"
#include "util/text.h"

namespace qdedup::qcow2 {

namespace {

}  // namespace

bool looks_like_protocol(const std::string& name) {
  // "json:{...}", "nbd://host", "http:..." : QEMU would hand these to a
  // protocol driver. qdedup only opens files.
  auto colon = name.find(':');
  if (colon == std::string::npos) return false;
  auto slash = name.find('/');
  return slash == std::string::npos || colon < slash;
}

namespace {

io::LockMode lock_for(const OpenRequest& req) {
  if (req.writable) return io::LockMode::kWrite;
  return req.force_share ? io::LockMode::kForceShare : io::LockMode::kRead;
}

struct ChainOpener {
  io::FileSystem& fs;
  std::set<std::string> seen;

  Result<std::unique_ptr<BlockDevice>> open(const OpenRequest& req, int depth, bool is_backing) {
    auto fail = [&](const Status& s) { return s.with_prefix(escape_for_display(req.path)); };
    if (depth > kMaxChainDepth) {
      return fail(corruption("backing chain is deeper than " + std::to_string(kMaxChainDepth)));
    }
    if (!seen.insert(fs.canonical_name(req.path)).second) {
      return fail(corruption("backing chain loops back to this file"));
    }
    io::OpenOptions oo;
    oo.writable = req.writable;
    oo.lock = lock_for(req);
    oo.require_regular = is_backing;
    auto file = fs.open(req.path, oo);
    if (!file) return fail(file.status());
    std::unique_ptr<io::File> f = std::move(file).value();
    std::string format = req.format;
    if (format.empty()) {
      auto probed = probe_format(*f);
      if (!probed) return fail(probed.status());
      format = *probed;
    }
    if (format == "raw") {
      auto raw = RawDevice::open(std::move(f));
      if (!raw) return fail(raw.status());
      return std::unique_ptr<BlockDevice>(std::move(raw).value());
    }
    if (format != "qcow2") return fail(unsupported("unknown format '" + format + "'"));
    auto img = Image::open(std::move(f), ImageOptions{req.writable});
    if (!img) return fail(img.status());
    std::unique_ptr<Image> image = std::move(img).value();
    spdlog::debug("{}: qcow2 v{}, cluster size {}, {} snapshots, depth {}{}", req.path,
                  image->header().version, image->geometry().cluster_size,
                  image->snapshots().size(), depth, req.writable ? ", writable" : "");
    if (req.open_backing && image->header().has_backing()) {
      const std::string& name = image->header().backing_file;
      if (looks_like_protocol(name)) {
        return fail(unsupported("backing file '" + escape_for_display(name) +
                                "' is a protocol or URL; qdedup only follows plain files"));
      }
      OpenRequest b;
      b.path = resolve_backing_path(req.path, name);
      b.format = image->header().backing_format.value_or("");
      b.force_share = req.force_share;
      if (!b.format.empty() && b.format != "raw" && b.format != "qcow2") {
        return fail(unsupported("backing file format '" + b.format + "' is not supported"));
      }
      QD_ASSIGN_OR_RETURN(auto backing, open(b, depth + 1, true));
      image->set_backing(std::move(backing));
    }
    return std::unique_ptr<BlockDevice>(std::move(image));
  }
};

}  // namespace

Result<std::string> probe_format(io::File& file) {
  uint8_t head[8] = {};
  QD_ASSIGN_OR_RETURN(size_t n, file.pread(0, head));
  if (n == 8 && load_be32(head) == kMagic && load_be32(head + 4) >= 2) {
    return std::string("qcow2");
  }
  return std::string("raw");
}

std::string resolve_backing_path(const std::string& image_path, const std::string& backing) {
  if (backing.empty() || backing[0] == '/') return backing;
  auto slash = image_path.rfind('/');
  if (slash == std::string::npos) return backing;
  return image_path.substr(0, slash + 1) + backing;
}

Result<std::unique_ptr<BlockDevice>> open_device(const OpenRequest& req) {
  ChainOpener opener{req.fs ? *req.fs : io::posix_file_system(), {}};
  return opener.open(req, 0, req.backing_member);
}

Status attach_backing(Image& image, const std::string& path, io::FileSystem* fs, bool force_share) {
  if (!image.header().has_backing()) return Status::ok();
  const std::string& name = image.header().backing_file;
  if (looks_like_protocol(name)) {
    return unsupported("backing file '" + escape_for_display(name) +
                       "' is a protocol or URL; qdedup only follows plain files");
  }
  OpenRequest b;
  b.path = resolve_backing_path(path, name);
  b.format = image.header().backing_format.value_or("");
  b.force_share = force_share;
  b.backing_member = true;
  b.fs = fs;
  if (!b.format.empty() && b.format != "raw" && b.format != "qcow2") {
    return unsupported("backing file format '" + b.format + "' is not supported");
  }
  QD_ASSIGN_OR_RETURN(auto backing, open_device(b));
  image.set_backing(std::move(backing));
  return Status::ok();
}

Result<std::unique_ptr<Image>> open_qcow2(const OpenRequest& req) {
  OpenRequest r = req;
  if (r.format.empty()) r.format = "qcow2";
  if (r.format != "qcow2") return invalid_argument(req.path + ": not a qcow2 image");
  QD_ASSIGN_OR_RETURN(std::unique_ptr<BlockDevice> dev, open_device(r));
  return std::unique_ptr<Image>(static_cast<Image*>(dev.release()));
}

}  // namespace qdedup::qcow2
