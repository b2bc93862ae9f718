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

// Collects the image's facts and, with --backing-chain, its backing files':
// the chain is opened (with its depth, loop and file-type rules) by
// qcow2::open_device, as for every command that reads through it.
Result<std::vector<InfoEntry>> info(io::FileSystem& fs, const InfoJob& a) {
  qcow2::OpenRequest req{.path = a.file, .format = a.format, .force_share = a.force_share,
                         .open_backing = a.backing_chain, .fs = &fs};
  QD_ASSIGN_OR_RETURN(std::unique_ptr<qcow2::BlockDevice> top, qcow2::open_device(req));
  std::vector<InfoEntry> infos;
  for (qcow2::BlockDevice* dev = top.get(); dev != nullptr;) {
    auto* img = dynamic_cast<qcow2::Image*>(dev);
    io::File& file = img ? img->file() : static_cast<qcow2::RawDevice*>(dev)->file();
    auto info = qcow2::collect_info(*dev, file);
    if (!info) return info.status().with_prefix(escape_for_display(dev->name()));
    infos.push_back({*info, img ? collect_dedup(img->header()) : std::nullopt});
    dev = img && a.backing_chain ? img->backing() : nullptr;
  }
  return infos;
}

}  // namespace qdedup::ops
