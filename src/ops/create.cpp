#include "ops/create.h"

#include "dedup/extension.h"
#include "qcow2/chain.h"
#include "qcow2/create.h"
#include "util/size.h"

namespace qdedup::ops {

Result<CreatePlan> plan_create(io::FileSystem& fs, const CreateJob& job) {
  CreatePlan plan;
  plan.file = job.file;
  CreateRequest& req = plan.request;
  req.format = job.format;
  if (req.format != "qcow2" && req.format != "raw") {
    return invalid_argument("unknown format '" + req.format + "' (qcow2 or raw)");
  }
  auto at_file = [&](const Status& s) { return job.file.empty() ? s : s.with_prefix(job.file); };
  for (const std::string& o : job.options) QD_TRY(at_file(parse_create_options(o, req)));
  if (req.help) return plan;
  if (job.file.empty()) return invalid_argument("expecting a file name");
  if (job.backing) {
    req.image.backing_file = *job.backing;
    req.given["backing_file"] = *job.backing;
  }
  if (!job.backing_format.empty()) {
    req.image.backing_format = job.backing_format;
    req.given["backing_fmt"] = job.backing_format;
  }
  if (!job.size.empty()) {
    auto parsed = parse_size(job.size);
    if (!parsed) return at_file(parsed.status());
    if (req.size) return at_file(invalid_argument("the image size must be specified only once"));
    req.size = *parsed;
  }
  // In qemu-img's order (bdrv_img_create): the backing file's name, then
  // whether it opens, then its format.
  const bool has_backing = req.given.count("backing_file") != 0;
  if (req.dedup != "off" && req.format != "qcow2") {
    return at_file(invalid_argument("dedup needs the qcow2 format"));
  }
  if (req.format == "raw" && has_backing) {
    return at_file(invalid_argument("raw images have no backing file"));
  }
  if (has_backing) {
    if (req.image.backing_file == job.file) {
      return at_file(invalid_argument(
          "trying to create an image with the same filename as the backing file"));
    }
    if (req.image.backing_file.empty()) {
      return at_file(invalid_argument("expected backing file name, got empty string"));
    }
    // Like qemu-img: the backing file must open, and gives the size if none.
    // Without -F qdedup does not probe (qemu-img refuses that too, once the
    // file opened).
    qcow2::OpenRequest b;
    b.path = qcow2::resolve_backing_path(job.file, req.image.backing_file);
    b.format = req.image.backing_format.empty() ? "raw" : req.image.backing_format;
    b.force_share = true;
    b.fs = &fs;
    auto backing = qcow2::open_device(b);
    if (!backing) {
      return at_file(backing.status().with_prefix("could not open the backing image"));
    }
    if (req.image.backing_format.empty()) {
      return at_file(invalid_argument("backing file specified without backing format (use -F)"));
    }
    if (!req.size) req.size = (*backing)->virtual_size();
  }
  if (!req.size) return at_file(invalid_argument("image creation needs a size parameter"));
  req.image.size = *req.size;
  return plan;
}

uint64_t planned_cluster_size(const CreateRequest& req) {
  if (req.cluster_size_set) return req.cluster_size;
  return uint64_t{1} << (req.dedup != "off" ? dedup::kDedupDefaultClusterBits
                                            : qcow2::CreateOptions{}.cluster_bits);
}

namespace {

Status write_image(io::File& file, const CreateRequest& req) {
  if (req.format != "raw") return qcow2::create_image(file, req.image);
  // qemu-img rounds a raw image up to whole 512-byte sectors.
  uint64_t size = 0;
  if (!align_up(req.image.size, 512, &size)) return invalid_argument("size too large");
  // As QEMU's file driver (raw_regular_truncate).
  switch (req.image.preallocation) {
    case qcow2::Preallocation::kOff:
      QD_TRY(file.truncate(size));
      break;
    case qcow2::Preallocation::kFalloc:
      QD_TRY(file.allocate(0, size));
      break;
    case qcow2::Preallocation::kFull:
      QD_TRY(file.truncate(size));
      QD_TRY(io::write_zeros(file, 0, size));
      break;
    case qcow2::Preallocation::kMetadata:
      return invalid_argument("Unsupported preallocation mode: metadata");
  }
  if (req.image.preallocation != qcow2::Preallocation::kFull) {
    QD_TRY(io::allocate_first_block(file, size));
  }
  return file.flush();
}

}  // namespace

Status create(io::FileSystem& fs, const CreatePlan& plan) {
  auto at_file = [&](const Status& s) { return s.with_prefix(plan.file); };
  CreateRequest req = plan.request;
  QD_TRY(at_file(resolve_create_options(req)));
  if (req.dedup != "off" && req.image.preallocation != qcow2::Preallocation::kOff) {
    // Preallocated clusters would all be distinct copies of one zero cluster.
    return at_file(invalid_argument("preallocation cannot be combined with dedup"));
  }
  QD_TRY(at_file(dedup::apply_dedup_create_options(req.dedup, req.dedup_verify == "on",
                                                   req.cluster_size_set, req.image)));
  QD_TRY(at_file(qcow2::validate_create_options(req.image)));
  QD_ASSIGN_OR_RETURN(auto beside, io::FileBeside::begin(fs, plan.file).with_prefix(plan.file));
  std::unique_ptr<io::File> file = beside->take_file();
  QD_TRY(at_file(write_image(*file, req)));
  file.reset();
  return at_file(beside->commit(true));
}

}  // namespace qdedup::ops
