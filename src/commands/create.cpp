// qdedup create [-f qcow2|raw] [-o OPTIONS] [-b BACKING [-F FMT]] FILE [SIZE]
#include <cstdio>

#include "commands/command.h"
#include "dedup/extension.h"
#include "io/posix_file.h"
#include "qcow2/chain.h"
#include "qcow2/create.h"
#include "util/size.h"

namespace qdedup::commands {

namespace {

struct CreateArgs {
  std::string format = "qcow2";
  std::vector<std::string> options;
  std::string backing;
  std::string backing_format;
  std::string file;
  std::string size;
};

// Writes the image to a temporary file beside FILE, then renames it into
// place, so a failed create leaves no file and never damages an existing one.
Status write_new_image(const std::string& path, const qcow2::CreateRequest& req) {
  std::unique_ptr<io::PosixFile> guard;
  if (io::file_exists(path)) {
    // Overwriting, as qemu-img does, but never an image someone is using.
    QD_ASSIGN_OR_RETURN(guard, io::PosixFile::open(path, {.writable = true,
                                                          .require_regular = true,
                                                          .lock = io::LockMode::kWrite}));
  }
  std::string tmp = io::temporary_name_beside(path);
  auto opened = io::PosixFile::open(tmp, {.writable = true, .create = true, .exclusive = true});
  if (!opened) return opened.status();
  std::unique_ptr<io::PosixFile> file = std::move(opened).value();
  Status st;
  if (req.format == "raw") {
    // qemu-img rounds a raw image up to whole 512-byte sectors.
    uint64_t size = 0;
    st = align_up(req.image.size, 512, &size) ? file->truncate(size)
                                              : invalid_argument("size too large");
    if (st) st = file->flush();
  } else {
    st = qcow2::create_image(*file, req.image);
  }
  file.reset();
  if (st) st = io::rename_file(tmp, path);
  if (!st) io::remove_file(tmp);
  return st;
}

Status run_create(const CreateArgs& a) {
  qcow2::CreateRequest req;
  req.format = a.format;
  if (req.format != "qcow2" && req.format != "raw") {
    return invalid_argument("unknown format '" + req.format + "' (qcow2 or raw)");
  }
  for (const std::string& o : a.options) QD_TRY(qcow2::apply_create_options(o, req));
  if (req.help) {
    std::fputs(qcow2::create_options_help().c_str(), stdout);
    return Status::ok();
  }
  if (a.file.empty()) return invalid_argument("expecting a file name");
  auto at_file = [&](const Status& s) { return s.with_prefix(a.file); };
  if (!a.backing.empty()) req.image.backing_file = a.backing;
  if (!a.backing_format.empty()) req.image.backing_format = a.backing_format;
  if (!a.size.empty()) {
    auto parsed = parse_size(a.size);
    if (!parsed) return at_file(parsed.status());
    req.size = *parsed;
  }
  if (req.dedup != "off" && req.format != "qcow2") {
    return at_file(invalid_argument("dedup needs the qcow2 format"));
  }
  QD_TRY(at_file(dedup::apply_dedup_create_options(req.dedup, req.dedup_verify == "on",
                                                   req.cluster_size_set, req.image)));
  if (req.format == "raw" && (!req.image.backing_file.empty())) {
    return at_file(invalid_argument("raw images have no backing file"));
  }
  QD_TRY(at_file(qcow2::validate_create_options(req.image)));
  if (!req.image.backing_file.empty()) {
    // Like qemu-img: the backing file must open, and gives the size if none.
    qcow2::OpenRequest b;
    b.path = qcow2::resolve_backing_path(a.file, req.image.backing_file);
    b.format = req.image.backing_format;
    b.force_share = true;
    QD_ASSIGN_OR_RETURN(auto backing, qcow2::open_device(b));
    if (!req.size) req.size = backing->virtual_size();
  }
  if (!req.size) return at_file(invalid_argument("image creation needs a size parameter"));
  req.image.size = *req.size;
  QD_TRY(at_file(qcow2::validate_create_options(req.image)));
  if (!quiet()) {
    std::printf("Formatting '%s', fmt=%s", a.file.c_str(), req.format.c_str());
    if (req.format == "qcow2") {
      std::printf(" cluster_size=%llu", 1ull << req.image.cluster_bits);
      if (!req.image.backing_file.empty()) {
        std::printf(" backing_file=%s backing_fmt=%s", req.image.backing_file.c_str(),
                    req.image.backing_format.c_str());
      }
    }
    std::printf(" size=%llu\n", static_cast<unsigned long long>(req.image.size));
  }
  return at_file(write_new_image(a.file, req));
}

}  // namespace

std::function<int()> register_create(CLI::App& app) {
  auto a = std::make_shared<CreateArgs>();
  app.add_option("-f", a->format, "Image format: qcow2 (default) or raw");
  app.add_option("-o", a->options, "Comma-separated key=value options ('-o help' lists them)")
      ->allow_extra_args(false);
  app.add_option("-b", a->backing, "Backing file");
  app.add_option("-F", a->backing_format, "Backing file format (qcow2 or raw)");
  app.add_option("FILE", a->file, "Image to create")->required(false);
  app.add_option("SIZE", a->size, "Virtual size, with optional suffix k, M, G, T, P, E");
  app.footer("Example:\n  qdedup create -f qcow2 -o cluster_size=4k disk.qcow2 10G");
  return [a] {
    Status s = run_create(*a);
    return s ? 0 : report_error(s);
  };
}

}  // namespace qdedup::commands
