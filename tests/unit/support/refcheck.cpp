#include "support/refcheck.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "io/memory_file.h"
#include "qcow2/compress.h"
#include "qcow2/format.h"
#include "qcow2/geometry.h"
#include "qcow2/header.h"
#include "qcow2/refcount.h"
#include "util/endian.h"

namespace qdedup::testsupport {

namespace {

using qcow2::Geometry;
using qcow2::Header;

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// The bytes [offset, offset+length) of the image, zeros past its end (a qcow2
// file need not end on a cluster boundary).
std::vector<uint8_t> bytes_at(std::span<const uint8_t> image, uint64_t offset, uint64_t length) {
  std::vector<uint8_t> out(static_cast<size_t>(length), 0);
  if (offset < image.size()) {
    uint64_t n = std::min<uint64_t>(length, image.size() - offset);
    std::copy_n(image.begin() + static_cast<std::ptrdiff_t>(offset), n, out.begin());
  }
  return out;
}

struct Parsed {
  Header h;
  Geometry g;
};

Result<Parsed> parse(std::span<const uint8_t> image) {
  if (image.size() < qcow2::kHeaderV2Length) return corruption("file shorter than a header");
  uint32_t cluster_bits = load_be32(image.data() + qcow2::kOffClusterBits);
  if (cluster_bits < qcow2::kMinClusterBits || cluster_bits > qcow2::kMaxClusterBits) {
    return corruption("cluster_bits " + std::to_string(cluster_bits) + " out of range");
  }
  uint64_t n = std::min<uint64_t>(image.size(), uint64_t{1} << cluster_bits);
  QD_ASSIGN_OR_RETURN(Header h, qcow2::decode_header(image.first(static_cast<size_t>(n))));
  Parsed p;
  p.h = h;
  p.g = Geometry::from_header(h);
  return p;
}

Result<std::vector<SnapshotRef>> parse_snapshots(std::span<const uint8_t> image, const Header& h,
                                                 uint64_t* table_bytes) {
  std::vector<SnapshotRef> out;
  uint64_t off = h.snapshots_offset;
  uint64_t end = off;
  for (uint32_t i = 0; i < h.nb_snapshots; ++i) {
    off = (off + 7) & ~uint64_t{7};
    if (off + 40 > image.size())
      return corruption("snapshot entry " + std::to_string(i) + " beyond end of file");
    const uint8_t* p = image.data() + off;
    SnapshotRef s;
    s.l1_table_offset = load_be64(p);
    s.l1_size = load_be32(p + 8);
    uint16_t id_len = load_be16(p + 12);
    uint16_t name_len = load_be16(p + 14);
    uint32_t extra = load_be32(p + 36);
    uint64_t var_at = off + 40 + extra;
    if (var_at + id_len + name_len > image.size()) {
      return corruption("snapshot entry " + std::to_string(i) + " beyond end of file");
    }
    s.id.assign(image.begin() + static_cast<std::ptrdiff_t>(var_at),
                image.begin() + static_cast<std::ptrdiff_t>(var_at + id_len));
    s.name.assign(image.begin() + static_cast<std::ptrdiff_t>(var_at + id_len),
                  image.begin() + static_cast<std::ptrdiff_t>(var_at + id_len + name_len));
    off = var_at + id_len + name_len;
    end = off;
    out.push_back(std::move(s));
  }
  if (table_bytes) *table_bytes = end - h.snapshots_offset;
  return out;
}

// The walk: counts references, remembers the active entries whose COPIED
// flag must be checked once every reference is known.
class Checker {
 public:
  Checker(std::span<const uint8_t> image, const Parsed& p, RefCheckReport& r)
      : image_(image), h_(p.h), g_(p.g), r_(r) {
    r_.file_clusters = (image.size() + g_.cluster_size - 1) / g_.cluster_size;
    r_.computed.assign(static_cast<size_t>(r_.file_clusters), 0);
  }

  void run() {
    count(0, g_.cluster_size, "header");
    walk_l1(h_.l1_table_offset, h_.l1_size, "active", true);
    walk_snapshots();
    walk_bitmaps();
    walk_reftable();
    compare_refcounts();
    check_copied();
  }

 private:
  struct CopiedCheck {
    std::string where;
    uint64_t entry;
    uint64_t cluster;
  };

  void error(std::string m) { r_.errors.push_back(std::move(m)); }

  // One reference to every cluster that [offset, offset+length) touches.
  void count(uint64_t offset, uint64_t length, const std::string& what) {
    if (length == 0) return;
    if (offset > qcow2::kMaxFileOffset || length > qcow2::kMaxFileOffset - offset) {
      error(what + " at " + hex(offset) + ": range overflows");
      return;
    }
    uint64_t first = offset >> g_.cluster_bits;
    uint64_t last = (offset + length - 1) >> g_.cluster_bits;
    for (uint64_t c = first; c <= last; ++c) {
      if (c < r_.file_clusters) {
        ++r_.computed[static_cast<size_t>(c)];
      } else {
        error(what + " at " + hex(offset) + ": cluster " + std::to_string(c) +
              " lies beyond the end of the file");
        ++beyond_[c];
      }
    }
  }

  void walk_l1(uint64_t l1_offset, uint64_t l1_size, const std::string& name, bool active) {
    if (l1_size == 0) return;
    if (l1_offset % g_.cluster_size != 0) {
      error(name + " L1 table at " + hex(l1_offset) + " is not cluster aligned");
      return;
    }
    if (l1_offset + l1_size * 8 > image_.size()) {
      error(name + " L1 table at " + hex(l1_offset) + " extends beyond the end of the file");
    }
    count(l1_offset, l1_size * 8, name + " L1 table");
    std::vector<uint8_t> l1 = bytes_at(image_, l1_offset, l1_size * 8);
    for (uint64_t i = 0; i < l1_size; ++i) {
      uint64_t e = load_be64(l1.data() + 8 * i);
      if (active && (e & qcow2::kL1eReservedMask)) {
        error("active L1[" + std::to_string(i) + "] " + hex(e) + " has reserved bits set");
      }
      uint64_t l2 = e & qcow2::kL1eOffsetMask;
      if (l2 == 0) continue;
      std::string where = name + " L1[" + std::to_string(i) + "]";
      if (l2 % g_.cluster_size != 0) {
        error(where + ": L2 table " + hex(l2) + " is not cluster aligned");
        continue;
      }
      count(l2, g_.cluster_size, where + " L2 table");
      if (active) copied_.push_back({"L1[" + std::to_string(i) + "]", e, l2 >> g_.cluster_bits});
      walk_l2(l2, active);
    }
  }

  void walk_l2(uint64_t l2_offset, bool active) {
    std::vector<uint8_t> t = bytes_at(image_, l2_offset, g_.cluster_size);
    for (uint64_t i = 0; i < g_.l2_entries; ++i) {
      const uint8_t* p = t.data() + i * g_.l2_entry_bytes;
      uint64_t word = load_be64(p);
      uint64_t bitmap = g_.extended_l2 ? load_be64(p + 8) : 0;
      std::string where = "L2 " + hex(l2_offset) + "[" + std::to_string(i) + "]";
      if (word & qcow2::kOflagCompressed) {
        if (word & qcow2::kOflagCopied) error(where + ": COPIED set on a compressed cluster");
        if (bitmap != 0) error(where + ": compressed cluster with a subcluster bitmap");
        uint64_t coffset = word & g_.cluster_offset_mask;
        uint64_t sectors = ((word >> g_.csize_shift) & g_.csize_mask) + 1;
        count(coffset, sectors * 512 - (coffset & 511), where + " compressed data");
        continue;
      }
      uint64_t reserved = qcow2::kL2eStdReservedMask | (g_.extended_l2 ? qcow2::kOflagZero : 0);
      if (word & reserved) error(where + ": " + hex(word) + " has reserved bits set");
      bool zero_flag = !g_.extended_l2 && (word & qcow2::kOflagZero);
      if (zero_flag && h_.version < 3) error(where + ": zero cluster in a version 2 image");
      uint64_t off = word & qcow2::kL2eOffsetMask;
      if (g_.extended_l2) {
        if (bitmap & (bitmap >> 32)) error(where + ": subcluster both allocated and zero");
        if (off == 0 && (bitmap & 0xffffffffu)) {
          error(where + ": allocated subclusters without a host cluster");
        }
      }
      if (off == 0) continue;
      if (off % g_.cluster_size != 0) {
        error(where + ": data cluster " + hex(off) + " is not cluster aligned");
        continue;
      }
      count(off, g_.cluster_size, where + " data cluster");
      if (active) copied_.push_back({where, word, off >> g_.cluster_bits});
    }
  }

  void walk_snapshots() {
    if (h_.nb_snapshots == 0) return;
    uint64_t table_bytes = 0;
    Result<std::vector<SnapshotRef>> snaps = parse_snapshots(image_, h_, &table_bytes);
    if (!snaps) {
      error("snapshot table: " + snaps.status().message());
      return;
    }
    if (h_.snapshots_offset % g_.cluster_size != 0) {
      error("snapshot table at " + hex(h_.snapshots_offset) + " is not cluster aligned");
    }
    count(h_.snapshots_offset, table_bytes, "snapshot table");
    for (const SnapshotRef& s : *snaps) {
      walk_l1(s.l1_table_offset, s.l1_size, "snapshot " + s.id, false);
    }
  }

  // The persistent bitmaps' directory and tables, counted as qemu-img check
  // counts them: only while autoclear bit 0 says they are valid. Spec:
  // "Bitmaps extension" (nb_bitmaps u32, reserved u32, directory size u64,
  // directory offset u64) and "Bitmap directory" entries (table offset u64,
  // table size u32, flags u32, type u8, granularity u8, name size u16, extra
  // data size u32, extra data, name, padded to 8).
  void walk_bitmaps() {
    if (!h_.bitmaps_ext || !(h_.autoclear_features & qcow2::kAutoclearBitmaps)) return;
    const std::vector<uint8_t>& e = *h_.bitmaps_ext;
    if (e.size() < 24) {
      error("bitmaps extension too short");
      return;
    }
    const uint32_t n = load_be32(e.data());
    const uint64_t dir_size = load_be64(e.data() + 8);
    const uint64_t dir_offset = load_be64(e.data() + 16);
    count(dir_offset, dir_size, "bitmap directory");
    std::vector<uint8_t> dir = bytes_at(image_, dir_offset, dir_size);
    uint64_t at = 0;
    for (uint32_t i = 0; i < n; ++i) {
      if (at + 24 > dir.size()) {
        error("bitmap directory entry " + std::to_string(i) + " out of range");
        return;
      }
      const uint64_t table = load_be64(dir.data() + at);
      const uint32_t table_size = load_be32(dir.data() + at + 8);
      const uint16_t name_size = load_be16(dir.data() + at + 18);
      const uint32_t extra = load_be32(dir.data() + at + 20);
      count(table, uint64_t{table_size} * 8, "bitmap table");
      std::vector<uint8_t> t = bytes_at(image_, table, uint64_t{table_size} * 8);
      for (uint32_t k = 0; k < table_size; ++k) {
        const uint64_t off = load_be64(t.data() + 8 * k) & 0x00fffffffffffe00ull;
        if (off != 0) count(off, g_.cluster_size, "bitmap data");
      }
      at += (24 + extra + name_size + 7) & ~uint64_t{7};
    }
  }

  void walk_reftable() {
    uint64_t bytes = uint64_t{h_.refcount_table_clusters} * g_.cluster_size;
    if (h_.refcount_table_offset % g_.cluster_size != 0) {
      error("refcount table at " + hex(h_.refcount_table_offset) + " is not cluster aligned");
      return;
    }
    count(h_.refcount_table_offset, bytes, "refcount table");
    std::vector<uint8_t> raw = bytes_at(image_, h_.refcount_table_offset, bytes);
    reftable_.resize(static_cast<size_t>(bytes / 8));
    for (size_t i = 0; i < reftable_.size(); ++i) {
      uint64_t e = load_be64(raw.data() + 8 * i);
      std::string where = "refcount table[" + std::to_string(i) + "]";
      if (e & qcow2::kReftReservedMask) error(where + ": " + hex(e) + " has reserved bits set");
      uint64_t off = e & qcow2::kReftOffsetMask;
      if (off == 0) continue;
      if (off % g_.cluster_size != 0) {
        error(where + ": refcount block " + hex(off) + " is not cluster aligned");
        continue;
      }
      if (off >= image_.size()) {
        error(where + ": refcount block " + hex(off) + " lies beyond the end of the file");
        ++beyond_[off >> g_.cluster_bits];
        continue;
      }
      reftable_[i] = off;
      count(off, g_.cluster_size, where + " refcount block");
    }
  }

  uint64_t stored(uint64_t cluster) {
    uint64_t index = cluster >> g_.rb_bits;
    if (index >= reftable_.size() || reftable_[index] == 0) return 0;
    auto it = blocks_.find(index);
    if (it == blocks_.end()) {
      it = blocks_.emplace(index, bytes_at(image_, reftable_[index], g_.cluster_size)).first;
    }
    return qcow2::refcount_entry(it->second, g_.refcount_order, cluster & (g_.rb_entries - 1));
  }

  void compare_refcounts() {
    r_.stored.assign(r_.computed.size(), 0);
    for (uint64_t c = 0; c < r_.file_clusters; ++c) {
      uint64_t s = stored(c);
      uint64_t n = r_.computed[static_cast<size_t>(c)];
      r_.stored[static_cast<size_t>(c)] = s;
      if (s < n) r_.corruptions.push_back({c, s, n});
      if (s > n) r_.leaks.push_back({c, s, n});
    }
    for (const auto& [c, n] : beyond_) {
      uint64_t s = stored(c);
      if (s < n) r_.corruptions.push_back({c, s, n});
    }
  }

  void check_copied() {
    for (const CopiedCheck& c : copied_) {
      uint64_t s = stored(c.cluster);
      uint64_t n = c.cluster < r_.file_clusters ? r_.computed[static_cast<size_t>(c.cluster)]
                                                : beyond_[c.cluster];
      CopiedMismatch m{c.where, c.entry, c.cluster, s, n};
      bool copied = (c.entry & qcow2::kOflagCopied) != 0;
      if (copied && (s != 1 || n != 1)) r_.copied_wrong.push_back(m);
      if (!copied && s == 1) r_.copied_missing.push_back(m);
    }
  }

  std::span<const uint8_t> image_;
  const Header& h_;
  const Geometry& g_;
  RefCheckReport& r_;
  std::map<uint64_t, uint64_t> beyond_;  // references to clusters past the end
  std::vector<CopiedCheck> copied_;
  std::vector<uint64_t> reftable_;  // refblock offsets usable for lookup (0: none)
  std::map<uint64_t, std::vector<uint8_t>> blocks_;
};

void append_mismatches(std::ostringstream& out, const char* title,
                       const std::vector<RefMismatch>& v, size_t max_items) {
  if (v.empty()) return;
  out << title << " (" << v.size() << "):";
  for (size_t i = 0; i < v.size() && i < max_items; ++i) {
    out << " cluster " << v[i].cluster << " stored=" << v[i].stored << " refs=" << v[i].computed
        << ";";
  }
  out << "\n";
}

void append_copied(std::ostringstream& out, const char* title, const std::vector<CopiedMismatch>& v,
                   size_t max_items) {
  if (v.empty()) return;
  out << title << " (" << v.size() << "):";
  for (size_t i = 0; i < v.size() && i < max_items; ++i) {
    out << " " << v[i].where << "=" << hex(v[i].entry) << " cluster " << v[i].cluster
        << " stored=" << v[i].stored << " refs=" << v[i].computed << ";";
  }
  out << "\n";
}

std::string make_temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "qdedup-test-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return {};
  return tmpl;
}

}  // namespace

std::string RefCheckReport::summary(size_t max_items) const {
  std::ostringstream out;
  if (!errors.empty()) {
    out << "errors (" << errors.size() << "):";
    for (size_t i = 0; i < errors.size() && i < max_items; ++i) out << " " << errors[i] << ";";
    out << "\n";
  }
  append_mismatches(out, "corruptions", corruptions, max_items);
  append_mismatches(out, "leaks", leaks, max_items);
  append_copied(out, "COPIED set on a cluster whose refcount is not 1", copied_wrong, max_items);
  append_copied(out, "COPIED missing", copied_missing, max_items);
  std::string s = out.str();
  return s.empty() ? "clean" : s;
}

RefCheckReport refcheck(std::span<const uint8_t> image) {
  RefCheckReport r;
  Result<Parsed> p = parse(image);
  if (!p) {
    r.errors.push_back("header: " + p.status().message());
    return r;
  }
  Checker(image, *p, r).run();
  return r;
}

Result<std::vector<SnapshotRef>> list_snapshots(std::span<const uint8_t> image) {
  QD_ASSIGN_OR_RETURN(Parsed p, parse(image));
  return parse_snapshots(image, p.h, nullptr);
}

Result<std::vector<uint8_t>> read_guest_cluster(std::span<const uint8_t> image,
                                                uint64_t guest_cluster,
                                                std::optional<size_t> snapshot) {
  QD_ASSIGN_OR_RETURN(Parsed p, parse(image));
  const Geometry& g = p.g;
  if (p.h.has_backing()) return unsupported("images with a backing file");
  uint64_t l1_offset = p.h.l1_table_offset;
  uint64_t l1_size = p.h.l1_size;
  if (snapshot) {
    QD_ASSIGN_OR_RETURN(std::vector<SnapshotRef> snaps, parse_snapshots(image, p.h, nullptr));
    if (*snapshot >= snaps.size()) return invalid_argument("no such snapshot");
    l1_offset = snaps[*snapshot].l1_table_offset;
    l1_size = snaps[*snapshot].l1_size;
  }
  std::vector<uint8_t> out(static_cast<size_t>(g.cluster_size), 0);
  uint64_t l1i = guest_cluster >> g.l2_bits;
  if (l1i >= l1_size) return out;
  uint64_t l2 = load_be64(bytes_at(image, l1_offset + 8 * l1i, 8).data()) & qcow2::kL1eOffsetMask;
  if (l2 == 0) return out;
  std::vector<uint8_t> e = bytes_at(
      image, l2 + (guest_cluster & (g.l2_entries - 1)) * g.l2_entry_bytes, g.l2_entry_bytes);
  uint64_t word = load_be64(e.data());
  uint64_t bitmap = g.extended_l2 ? load_be64(e.data() + 8) : 0;
  if (word & qcow2::kOflagCompressed) {
    uint64_t coffset = word & g.cluster_offset_mask;
    uint64_t sectors = ((word >> g.csize_shift) & g.csize_mask) + 1;
    std::vector<uint8_t> in = bytes_at(image, coffset, sectors * 512 - (coffset & 511));
    QD_TRY(qcow2::decompress_cluster(p.h.compression_type, in, out));
    return out;
  }
  uint64_t off = word & qcow2::kL2eOffsetMask;
  if (!g.extended_l2) {
    if ((word & qcow2::kOflagZero) || off == 0) return out;
    return bytes_at(image, off, g.cluster_size);
  }
  uint64_t sc = g.cluster_size / qcow2::kSubclustersPerCluster;
  for (uint32_t i = 0; i < qcow2::kSubclustersPerCluster; ++i) {
    if (!(bitmap & (uint64_t{1} << i))) continue;  // zero or unallocated: zeros
    std::vector<uint8_t> piece = bytes_at(image, off + i * sc, sc);
    std::copy(piece.begin(), piece.end(), out.begin() + static_cast<std::ptrdiff_t>(i * sc));
  }
  return out;
}

std::vector<uint8_t> create_in_memory(const qcow2::CreateOptions& o) {
  io::MemoryFile f("new.qcow2");
  if (!qcow2::create_image(f, o)) return {};
  return f.bytes();
}

bool have_qemu() {
  return std::system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1") ==
         0;
}

Result<std::vector<uint8_t>> run_qemu_script(const std::string& script) {
  std::string dir = make_temp_dir();
  if (dir.empty()) return io_error("cannot create a temporary directory");
  std::string img = dir + "/t.qcow2";
  {
    std::ofstream sh(dir + "/script.sh");
    sh << script << "\n";
  }
  std::string cmd =
      "cd '" + dir + "' && IMG='" + img + "' /bin/sh -e ./script.sh >'" + dir + "/log' 2>&1";
  int rc = std::system(cmd.c_str());
  std::vector<uint8_t> bytes;
  std::string log;
  {
    std::ifstream logf(dir + "/log");
    log.assign(std::istreambuf_iterator<char>(logf), {});
    std::ifstream in(img, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::filesystem::remove_all(dir);
  if (rc != 0) return io_error("qemu script failed: " + script + "\n" + log);
  return bytes;
}

Result<int> qemu_img_check(std::span<const uint8_t> image, std::string* output) {
  std::string dir = make_temp_dir();
  if (dir.empty()) return io_error("cannot create a temporary directory");
  {
    std::ofstream out(dir + "/c.qcow2", std::ios::binary);
    out.write(reinterpret_cast<const char*>(image.data()),
              static_cast<std::streamsize>(image.size()));
  }
  std::string cmd = "qemu-img check '" + dir + "/c.qcow2' >'" + dir + "/log' 2>&1";
  int rc = std::system(cmd.c_str());
  if (output) {
    std::ifstream logf(dir + "/log");
    output->assign(std::istreambuf_iterator<char>(logf), {});
  }
  std::filesystem::remove_all(dir);
  if (rc == -1 || !WIFEXITED(rc)) return io_error("cannot run qemu-img check");
  return WEXITSTATUS(rc);
}

std::vector<uint8_t> pattern_cluster(uint64_t cluster_size, uint32_t pattern) {
  std::vector<uint8_t> out(static_cast<size_t>(cluster_size), 0);
  if (pattern == 0) return out;
  uint64_t x = pattern * 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < out.size(); i += 8) {
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    for (size_t j = 0; j < 8 && i + j < out.size(); ++j) {
      out[i + j] = static_cast<uint8_t>(x >> (8 * j));
    }
    x += pattern;
  }
  return out;
}

}  // namespace qdedup::testsupport
