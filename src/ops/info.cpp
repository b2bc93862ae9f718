#include "ops/info.h"

#include "qcow2/chain.h"
#include "qcow2/image.h"
#include "util/text.h"

namespace qdedup::ops {

namespace {

std::optional<DedupInfo> collect_dedup(const qcow2::Header& h) {
  auto found = dedup::find_dedup_extension(h);
  DedupInfo d;
  if (!found) {
    d.error = found.status().message();
    return d;
  }
  if (!*found) return std::nullopt;
  d.ext = **found;
  d.index_state = (h.autoclear_features & dedup::kAutoclearDedupIndex) != 0 ? dedup::IndexState::kValid
                                                                            : dedup::IndexState::kStale;
  return d;
}

}  // namespace

// Collects the image's facts and, with --backing-chain, its backing files'.
Result<std::vector<InfoEntry>> info(io::FileSystem& fs, const InfoJob& a) {
  std::vector<InfoEntry> infos;
  qcow2::OpenRequest req{.path = a.file, .format = a.format, .force_share = a.force_share,
                         .open_backing = false, .fs = &fs};
  for (int depth = 0;; ++depth) {
    if (depth > qcow2::kMaxChainDepth) {
      return corruption(escape_for_display(a.file) + ": backing chain is deeper than " +
                        std::to_string(qcow2::kMaxChainDepth));
    }
    QD_ASSIGN_OR_RETURN(auto dev, qcow2::open_device(req));
    auto* img = dynamic_cast<qcow2::Image*>(dev.get());
    io::File* file = img ? &img->file() : &static_cast<qcow2::RawDevice*>(dev.get())->file();
    auto info = qcow2::collect_info(*dev, *file);
    if (!info) return info.status().with_prefix(escape_for_display(req.path));
    InfoEntry entry{*info, img ? collect_dedup(img->header()) : std::nullopt};
    infos.push_back(entry);
    if (!a.backing_chain || !info->full_backing_filename) break;
    for (const auto& prev : infos) {
      if (prev.image.filename == *info->full_backing_filename) {
        return corruption(escape_for_display(req.path) + ": backing chain loops back to '" +
                          escape_for_display(prev.image.filename) + "'");
      }
    }
    if (qcow2::looks_like_protocol(*info->backing_filename)) {
      return unsupported(escape_for_display(req.path) + ": backing file '" +
                         escape_for_display(*info->backing_filename) +
                         "' is a protocol or URL; qdedup only follows plain files");
    }
    req.path = *info->full_backing_filename;
    req.format = info->backing_format.value_or("");
    req.backing_member = true;
  }
  return infos;
}

}  // namespace qdedup::ops
