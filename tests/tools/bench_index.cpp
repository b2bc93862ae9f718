// qdedup-bench-index: the in-RAM dedup index at scale. Inserts N distinct
// pseudo-random 32-byte hashes into dedup::DedupIndex (its record store on a
// scratch file), looks up min(N, 16 M) of them in a scattered order, then
// as many hashes that are not in the index, then visits all entries in hash order
// with for_each_sorted() (what convert does to write the index into the
// image), and reports RAM per entry and rates.
// scripts/bench-index.sh runs it at 16 M and 256 M entries, one process per
// size so that the peak RSS belongs to that size alone.
//
//   qdedup-bench-index --entries N [--dir DIR] [--header]
//
// Prints one Markdown table row on stdout (--header prints the header rows
// first) and progress on stderr. Exit status 1 if a lookup returns a wrong
// answer (a missing hit, a wrong host offset, a false hit) or on an I/O error.
//
// RAM per entry is given four ways: DedupIndex::memory_bytes() / N (the
// table's slots, what the 24-byte bound is about); peak_memory_bytes() / N
// (the same at its highest, while a segment grew); the process's peak RSS
// (getrusage ru_maxrss) less its RSS before the first insert, / N, taken
// after the lookups: this includes the transient peak while the table grows
// (old and new slot arrays are both alive during a rehash) and the record
// store's write buffer; and the same peak after the sorted walk, which
// includes the walk's own working memory.
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "dedup/index.h"
#include "io/posix_file.h"
#include "util/endian.h"

using namespace qdedup;

namespace {

constexpr size_t kHashBytes = 32;
constexpr uint64_t kClusterBytes = 4096;
// Hits are looked up in the order i -> i * kStride mod N: a permutation when
// gcd(kStride, N) = 1, which holds for every N < kStride as kStride is prime.
constexpr uint64_t kStride = 2654435761;  // prime, about 2^31.3
// Misses use keys from 2^61 up: make_hash() words are splitmix64(4k + w), so
// hit keys (below 2^61) and miss keys never share a word input.
constexpr uint64_t kMissKeyBase = uint64_t{1} << 61;

struct Options {
  uint64_t entries = 0;
  std::string dir = "/tmp";
  bool header = false;
};

double now_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The hash of key `k` (k < 2^62): 32 bytes that look random. splitmix64 is a
// bijection, so distinct keys have distinct first 8 bytes, and therefore
// distinct fingerprints: a miss never reads the record store.
void make_hash(uint64_t k, uint8_t* out) {
  for (uint64_t w = 0; w < 4; ++w) store_be64(out + 8 * w, splitmix64(k * 4 + w));
}

// Resident set size now, in bytes (from /proc/self/statm).
uint64_t current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  statm >> size_pages >> resident_pages;
  return resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // ru_maxrss is in KiB on Linux
}

std::string entries_name(uint64_t n) {
  char buf[32];
  if (n % (uint64_t{1} << 20) == 0) {
    std::snprintf(buf, sizeof buf, "%lluM", static_cast<unsigned long long>(n >> 20));
  } else {
    std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(n));
  }
  return buf;
}

void progress(const char* phase, uint64_t done, uint64_t total, double start) {
  std::fprintf(stderr, "\r%s: %llu/%llu (%.0f s)   ", phase, static_cast<unsigned long long>(done),
               static_cast<unsigned long long>(total), now_seconds() - start);
}

struct Measurement {
  uint64_t memory_bytes = 0;
  uint64_t peak_memory_bytes = 0;
  uint64_t lookups = 0;  // of each kind
  uint64_t rss_before = 0;
  uint64_t peak_rss = 0;         // after the lookups
  uint64_t peak_rss_walk = 0;    // after the sorted walk
  double insert_seconds = 0;
  double hit_seconds = 0;
  double miss_seconds = 0;
  double walk_seconds = 0;
  uint64_t wrong = 0;
};

Status insert_all(dedup::DedupIndex& index, uint64_t n, Measurement& m) {
  uint8_t h[kHashBytes];
  const double start = now_seconds();
  for (uint64_t i = 0; i < n; ++i) {
    make_hash(i, h);
    QD_TRY(index.insert(h, (i + 1) * kClusterBytes, i));
    if ((i & 0xffffff) == 0xffffff) progress("insert", i + 1, n, start);
  }
  m.insert_seconds = now_seconds() - start;
  std::fprintf(stderr, "\n");
  return Status::ok();
}

Status look_up_hits(dedup::DedupIndex& index, uint64_t n, Measurement& m) {
  uint8_t h[kHashBytes];
  const double start = now_seconds();
  for (uint64_t j = 0; j < m.lookups; ++j) {
    __extension__ using U128 = unsigned __int128;
    const auto i = static_cast<uint64_t>(static_cast<U128>(j) * kStride % n);
    make_hash(i, h);
    QD_ASSIGN_OR_RETURN(std::optional<dedup::IndexEntry> e, index.find(h));
    if (!e || e->host_offset != (i + 1) * kClusterBytes || e->owner_guest_cluster != i) ++m.wrong;
    if ((j & 0xffffff) == 0xffffff) progress("lookup (hits)", j + 1, m.lookups, start);
  }
  m.hit_seconds = now_seconds() - start;
  std::fprintf(stderr, "\n");
  return Status::ok();
}

Status look_up_misses(dedup::DedupIndex& index, Measurement& m) {
  uint8_t h[kHashBytes];
  const double start = now_seconds();
  for (uint64_t i = 0; i < m.lookups; ++i) {
    make_hash(kMissKeyBase + i, h);
    QD_ASSIGN_OR_RETURN(std::optional<dedup::IndexEntry> e, index.find(h));
    if (e) ++m.wrong;
    if ((i & 0xffffff) == 0xffffff) progress("lookup (misses)", i + 1, m.lookups, start);
  }
  m.miss_seconds = now_seconds() - start;
  std::fprintf(stderr, "\n");
  return Status::ok();
}

// Visits every entry in hash order, checking the order and the count.
Status walk_sorted(dedup::DedupIndex& index, uint64_t n, Measurement& m) {
  uint8_t prev[kHashBytes] = {};
  uint64_t seen = 0;
  const double start = now_seconds();
  QD_TRY(index.for_each_sorted([&](const uint8_t* hash, const dedup::IndexEntry& e) -> Status {
    if (seen > 0 && std::memcmp(prev, hash, kHashBytes) >= 0) ++m.wrong;
    if (e.host_offset == 0) ++m.wrong;
    std::memcpy(prev, hash, kHashBytes);
    if ((++seen & 0xffffff) == 0) progress("sorted walk", seen, n, start);
    return Status::ok();
  }));
  m.walk_seconds = now_seconds() - start;
  std::fprintf(stderr, "\n");
  if (seen != n) ++m.wrong;
  return Status::ok();
}

Status run(const Options& opt, Measurement& m) {
  QD_ASSIGN_OR_RETURN(auto scratch, io::PosixFile::open_temporary(opt.dir));
  m.rss_before = current_rss_bytes();
  dedup::DedupIndex index(std::move(scratch), kHashBytes);
  QD_TRY(insert_all(index, opt.entries, m));
  if (index.size() != opt.entries) {
    return corruption("index holds " + std::to_string(index.size()) + " entries, expected " +
                      std::to_string(opt.entries));
  }
  m.memory_bytes = index.memory_bytes();
  m.peak_memory_bytes = index.peak_memory_bytes();
  // Each lookup of a hit reads its record from the store: 16 M of them give
  // the rate; all 256 M would only take longer.
  m.lookups = std::min<uint64_t>(opt.entries, uint64_t{16} << 20);
  QD_TRY(look_up_hits(index, opt.entries, m));
  QD_TRY(look_up_misses(index, m));
  m.peak_rss = peak_rss_bytes();
  QD_TRY(walk_sorted(index, opt.entries, m));
  m.peak_rss_walk = peak_rss_bytes();
  return Status::ok();
}

double mops(uint64_t n, double seconds) {
  return seconds > 0 ? static_cast<double>(n) / seconds / 1e6 : 0.0;
}

void print_header() {
  std::printf(
      "| entries | table RAM (memory_bytes) | bytes/entry (memory_bytes) | bytes/entry "
      "(peak_memory_bytes, while growing) | peak RSS | "
      "bytes/entry (peak RSS - RSS before) | peak RSS incl. sorted walk | bytes/entry incl. "
      "sorted walk | insert Mops/s | lookup hit Mops/s | lookup miss Mops/s | sorted walk "
      "Mentries/s | wrong answers |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
}

double per_entry(uint64_t peak, uint64_t before, uint64_t n) {
  return static_cast<double>(peak > before ? peak - before : 0) / static_cast<double>(n);
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / 1048576.0; }

void print_row(const Options& opt, const Measurement& m) {
  const uint64_t n = opt.entries;
  std::printf(
      "| %s | %.1f MiB | %.2f | %.2f | %.1f MiB | %.2f | %.1f MiB | %.2f | %.2f | %.2f | %.2f | "
      "%.2f | "
      "%llu |\n",
      entries_name(n).c_str(), mib(m.memory_bytes),
      static_cast<double>(m.memory_bytes) / static_cast<double>(n),
      static_cast<double>(m.peak_memory_bytes) / static_cast<double>(n), mib(m.peak_rss),
      per_entry(m.peak_rss, m.rss_before, n), mib(m.peak_rss_walk),
      per_entry(m.peak_rss_walk, m.rss_before, n), mops(n, m.insert_seconds),
      mops(m.lookups, m.hit_seconds), mops(m.lookups, m.miss_seconds), mops(n, m.walk_seconds),
      static_cast<unsigned long long>(m.wrong));
}

int usage() {
  std::fprintf(stderr, "usage: qdedup-bench-index --entries N [--dir DIR] [--header]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--header") {
      opt.header = true;
      continue;
    }
    if (i + 1 >= argc) return usage();
    const char* value = argv[++i];
    if (arg == "--entries") {
      opt.entries = std::strtoull(value, nullptr, 10);
    } else if (arg == "--dir") {
      opt.dir = value;
    } else {
      return usage();
    }
  }
  if (opt.header) print_header();
  if (opt.entries == 0) return opt.header ? 0 : usage();
  if (opt.entries >= kStride || opt.entries >= UINT32_MAX) {
    std::fprintf(stderr, "qdedup-bench-index: --entries must be below 2^32 - 1\n");
    return 2;
  }

  Measurement m;
  Status st = run(opt, m);
  if (!st) {
    std::fprintf(stderr, "qdedup-bench-index: %s\n", st.message().c_str());
    return 1;
  }
  print_row(opt, m);
  std::fflush(stdout);
  if (m.wrong != 0) {
    std::fprintf(stderr, "qdedup-bench-index: %llu wrong lookup answers\n",
                 static_cast<unsigned long long>(m.wrong));
    return 1;
  }
  return 0;
}
