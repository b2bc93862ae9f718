// qdedup-testtool: a small tool over qdedup_core for the shell tests, until
// the real commands cover the same ground.
//   dump IMAGE OUT          read the guest disk through the chain into a raw file
//   write IMAGE OFF LEN B   write LEN bytes of value B at guest offset OFF
//   link IMAGE DST SRC      make guest cluster DST share SRC's host cluster
//   hold IMAGE SECONDS      open IMAGE for writing (taking QEMU's locks) and wait
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "io/posix_file.h"
#include "qcow2/chain.h"
#include "qcow2/image.h"

using namespace qdedup;

namespace {

int fail(const Status& s) {
  std::fprintf(stderr, "qdedup-testtool: %s\n", s.message().c_str());
  return 1;
}

int dump(const std::string& path, const std::string& out_path) {
  auto dev = qcow2::open_device({path, "", false, false, true});
  if (!dev) return fail(dev.status());
  auto out = io::PosixFile::open(out_path, {.writable = true, .create = true});
  if (!out) return fail(out.status().with_prefix(out_path));
  if (auto s = (*out)->truncate(0); !s) return fail(s);
  std::vector<uint8_t> buf(1 << 20);
  uint64_t size = (*dev)->virtual_size();
  for (uint64_t off = 0; off < size; off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    std::span<uint8_t> piece(buf.data(), n);
    if (auto s = (*dev)->read(off, piece); !s) return fail(s);
    bool zero = std::all_of(piece.begin(), piece.end(), [](uint8_t b) { return b == 0; });
    if (!zero) {
      if (auto s = (*out)->pwrite(off, piece); !s) return fail(s);
    }
  }
  if (auto s = (*out)->truncate(size); !s) return fail(s);
  return 0;
}

Result<std::unique_ptr<qcow2::Image>> open_rw(const std::string& path) {
  return qcow2::open_qcow2({path, "qcow2", true, false, true});
}

int write(const std::string& path, uint64_t off, uint64_t len, int value) {
  auto img = open_rw(path);
  if (!img) return fail(img.status());
  std::vector<uint8_t> data(len, static_cast<uint8_t>(value));
  if (auto s = (*img)->write(off, data); !s) return fail(s);
  if (auto s = (*img)->close(); !s) return fail(s);
  return 0;
}

int link(const std::string& path, uint64_t dst, uint64_t src) {
  auto img = open_rw(path);
  if (!img) return fail(img.status());
  auto e = (*img)->l2_entry(src);
  if (!e) return fail(e.status());
  if (e->type((*img)->geometry()) != qcow2::ClusterType::kNormal) {
    return fail(invalid_argument("source cluster is not a data cluster"));
  }
  if (auto s = (*img)->link_cluster(dst, e->host_offset(), src); !s) return fail(s);
  if (auto s = (*img)->close(); !s) return fail(s);
  return 0;
}

int hold(const std::string& path, unsigned seconds) {
  auto img = open_rw(path);
  if (!img) return fail(img.status());
  std::printf("locked\n");
  std::fflush(stdout);
  sleep(seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 3 && a[0] == "dump") return dump(a[1], a[2]);
  if (a.size() == 5 && a[0] == "write") {
    return write(a[1], std::stoull(a[2], nullptr, 0), std::stoull(a[3], nullptr, 0),
                 std::stoi(a[4], nullptr, 0));
  }
  if (a.size() == 4 && a[0] == "link") {
    return link(a[1], std::stoull(a[2], nullptr, 0), std::stoull(a[3], nullptr, 0));
  }
  if (a.size() == 3 && a[0] == "hold") return hold(a[1], static_cast<unsigned>(std::stoul(a[2])));
  std::fprintf(stderr, "usage: qdedup-testtool dump|write|link|hold ...\n");
  return 2;
}
