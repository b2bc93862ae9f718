// qdedup-testtool: a small tool over qdedup_core for the shell tests, until
// the real commands cover the same ground.
//   dump IMAGE OUT          read the guest disk through the chain into a raw file
//   write IMAGE OFF LEN B   write LEN bytes of value B at guest offset OFF
//   link IMAGE DST SRC      make guest cluster DST share SRC's host cluster
//   hold IMAGE SECONDS      open IMAGE for writing (taking QEMU's locks) and wait
//   hash ALGO FILE          hash FILE as one message, print the hex digest
//   hash-pieces ALGO FILE CHUNK
//                           hash FILE in CHUNK-byte pieces on all cores (qdedup::hash::HashPool) and
//                           one by one on one thread; exit 1 unless they agree
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

#include "hash/hash.h"
#include "hash/hash_pool.h"
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

Result<std::vector<uint8_t>> read_all(const std::string& path) {
  QD_ASSIGN_OR_RETURN(auto f, io::PosixFile::open(path, {}));
  QD_ASSIGN_OR_RETURN(uint64_t size, f->size());
  std::vector<uint8_t> data(size);
  QD_TRY(f->read_exact(0, data, "file"));
  return data;
}

std::string hex_of(const uint8_t* p, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", p[i]);
    s += b;
  }
  return s;
}

int hash_file(const std::string& algo_name, const std::string& path) {
  auto algo = qdedup::hash::parse_hash_name(algo_name);
  if (!algo) return fail(algo.status());
  auto data = read_all(path);
  if (!data) return fail(data.status());
  auto h = qdedup::hash::make_hasher(*algo);
  std::vector<uint8_t> out(h->digest_size());
  h->hash(*data, out.data());
  std::printf("%s\n", hex_of(out.data(), out.size()).c_str());
  return 0;
}

int hash_pieces(const std::string& algo_name, const std::string& path, size_t chunk) {
  auto algo = qdedup::hash::parse_hash_name(algo_name);
  if (!algo) return fail(algo.status());
  auto data = read_all(path);
  if (!data) return fail(data.status());
  size_t pieces = (data->size() + chunk - 1) / chunk;
  qdedup::hash::HashPool pool(*algo);
  const size_t ds = pool.digest_size();
  std::vector<uint8_t> parallel(pieces * ds), sequential(pieces * ds);
  pool.hash_chunks(*data, chunk, parallel.data());
  auto h = qdedup::hash::make_hasher(*algo);
  for (size_t i = 0; i < pieces; ++i) {
    size_t n = std::min(chunk, data->size() - i * chunk);
    h->hash(std::span<const uint8_t>(data->data() + i * chunk, n), sequential.data() + i * ds);
  }
  for (size_t i = 0; i < pieces; ++i) {
    if (std::memcmp(parallel.data() + i * ds, sequential.data() + i * ds, ds) != 0) {
      std::fprintf(stderr, "piece %zu of %zu differs\n", i, pieces);
      return 1;
    }
  }
  std::printf("%zu pieces agree on %u threads\n", pieces, pool.threads());
  return 0;
}

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
  if (a.size() == 3 && a[0] == "hash") return hash_file(a[1], a[2]);
  if (a.size() == 4 && a[0] == "hash-pieces") return hash_pieces(a[1], a[2], std::stoull(a[3]));
  std::fprintf(stderr, "usage: qdedup-testtool dump|write|link|hold|hash|hash-pieces ...\n");
  return 2;
}
