// qdedup-bench-hash: hashing throughput per algorithm and cluster size, on one
// thread and on all threads, printed as a Markdown table. scripts/bench-hash.sh
// runs it beside `openssl speed -evp sha256` and passes that figure in, so the
// table shows the ratio.
//
//   qdedup-bench-hash [--size-mib N] [--min-seconds S] [--threads N]
//                     [--openssl-sha256 BYTES:MBPS]...
//
// Rates are MB/s (10^6 bytes per second, as openssl speed reports). One-thread
// rates are bytes per second of process CPU time, which is what openssl speed
// measures by default, so that other load on the machine does not distort the
// comparison; all-thread rates are per second of wall-clock time. Each figure
// is the best of several trials.
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <time.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hash/hash_pool.h"

using namespace qdedup;
using namespace qdedup;

namespace {

struct Options {
  size_t size_bytes = size_t{256} << 20;
  double min_seconds = 1.0;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::map<size_t, double> openssl_sha256_mbps;  // chunk bytes -> MB/s
};

constexpr size_t kChunkSizes[] = {4096, 65536, size_t{2} << 20};
// The "in cache" variant hashes this window (or one chunk, if larger) over and
// over: it fits the L2 cache of current x86 cores, as openssl speed's buffer does.
constexpr size_t kCacheWindow = 512 * 1024;

double now_seconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Runs trials of `trial` (which hashes `bytes_per_trial` bytes) until
// min_seconds of wall time have passed, at least 3 trials; returns the best
// trial's MB/s on `clock`.
template <typename F>
double best_rate(const Options& opt, clockid_t clock, size_t bytes_per_trial, F trial) {
  trial();  // warm up: fault in the digests, wake the threads
  double best = 0;
  const double start = now_seconds(CLOCK_MONOTONIC);
  for (int n = 0; n < 3 || now_seconds(CLOCK_MONOTONIC) - start < opt.min_seconds; ++n) {
    const double t0 = now_seconds(clock);
    trial();
    const double dt = now_seconds(clock) - t0;
    if (dt > 0) best = std::max(best, static_cast<double>(bytes_per_trial) / dt / 1e6);
  }
  return best;
}

struct Row {
  hash::HashAlgorithm algorithm;
  size_t chunk;
  double one_thread_ram;
  double one_thread_cache;
  double all_threads_ram;
};

Row measure(const Options& opt, const std::vector<uint8_t>& buffer, hash::HashAlgorithm algorithm,
            size_t chunk) {
  Row row{algorithm, chunk, 0, 0, 0};
  std::vector<uint8_t> digests((buffer.size() / chunk + 1) * hash::kMaxDigestSize);

  hash::HashPool single(algorithm, 1);
  row.one_thread_ram = best_rate(opt, CLOCK_PROCESS_CPUTIME_ID, buffer.size(),
                                 [&] { single.hash_chunks(buffer, chunk, digests.data()); });

  const size_t window = std::max(kCacheWindow, chunk);
  const size_t repeats = std::max<size_t>(1, (size_t{64} << 20) / window);
  row.one_thread_cache = best_rate(opt, CLOCK_PROCESS_CPUTIME_ID, window * repeats, [&] {
    for (size_t i = 0; i < repeats; ++i) {
      single.hash_chunks({buffer.data(), window}, chunk, digests.data());
    }
  });

  hash::HashPool pool(algorithm, opt.threads);
  row.all_threads_ram = best_rate(opt, CLOCK_MONOTONIC, buffer.size(),
                                  [&] { pool.hash_chunks(buffer, chunk, digests.data()); });
  return row;
}

std::string size_name(size_t bytes) {
  if (bytes >= (size_t{1} << 20)) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes >> 10) + " KiB";
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

void print_report(const Options& opt, const std::vector<Row>& rows,
                  const std::string& load_before) {
  std::printf("Machine: %s, %u hardware threads. OpenSSL %s; xxHash %u; g++ %s.\n",
              cpu_model().c_str(), std::thread::hardware_concurrency(),
              OpenSSL_version(OPENSSL_VERSION_STRING), XXH_versionNumber(), __VERSION__);
  std::printf("Buffer %zu MiB of random bytes; MB/s = 10^6 bytes/s; best of >= 3 trials.\n",
              opt.size_bytes >> 20);
  std::printf("Load average (1, 5, 15 min) before: %s; after: %s.\n\n", load_before.c_str(),
              load_average().c_str());
  std::printf(
      "| algorithm | cluster | 1 thread, MB/s (CPU time) | 1 thread in cache, MB/s "
      "| %u threads, MB/s (wall) | speed-up |\n",
      opt.threads);
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %.0f | %.0f | %.0f | %.2fx |\n", hash::hash_name(r.algorithm),
                size_name(r.chunk).c_str(), r.one_thread_ram, r.one_thread_cache, r.all_threads_ram,
                r.all_threads_ram / r.one_thread_ram);
  }

  if (!opt.openssl_sha256_mbps.empty()) {
    std::printf(
        "\n| cluster | qdedup sha256, 1 thread, MB/s | openssl speed -evp sha256, MB/s "
        "| ratio |\n|---:|---:|---:|---:|\n");
    for (const Row& r : rows) {
      auto it = opt.openssl_sha256_mbps.find(r.chunk);
      if (r.algorithm != hash::HashAlgorithm::kSha256 || it == opt.openssl_sha256_mbps.end()) continue;
      std::printf("| %s | %.0f | %.0f | %.3f |\n", size_name(r.chunk).c_str(), r.one_thread_ram,
                  it->second, r.one_thread_ram / it->second);
    }
  }

  // Issue 5's targets, judged on the one-thread figures from the big buffer.
  std::printf(
      "\n| target (issue 5) | worst cluster size | measured | met |\n"
      "|---|---|---:|---|\n");
  auto worst = [&](hash::HashAlgorithm a, auto value) {
    const Row* w = nullptr;
    for (const Row& r : rows) {
      if (r.algorithm == a && (w == nullptr || value(r) < value(*w))) w = &r;
    }
    return w;
  };
  auto one_thread = [](const Row& r) { return r.one_thread_ram; };
  if (const Row* w = worst(hash::HashAlgorithm::kSkein, one_thread)) {
    std::printf("| skein >= 400 MB/s per core | %s | %.0f MB/s | %s |\n",
                size_name(w->chunk).c_str(), w->one_thread_ram,
                w->one_thread_ram >= 400 ? "yes" : "NO");
  }
  if (const Row* w = worst(hash::HashAlgorithm::kXxh3, one_thread)) {
    std::printf("| xxh3 >= 10 GB/s per core | %s | %.0f MB/s | %s |\n", size_name(w->chunk).c_str(),
                w->one_thread_ram, w->one_thread_ram >= 10000 ? "yes" : "NO");
  }
  auto vs_openssl = [&](const Row& r) {
    auto it = opt.openssl_sha256_mbps.find(r.chunk);
    return it == opt.openssl_sha256_mbps.end() ? 1e9 : r.one_thread_ram / it->second;
  };
  const Row* w = worst(hash::HashAlgorithm::kSha256, vs_openssl);
  if (w != nullptr && vs_openssl(*w) < 1e9) {
    std::printf("| sha256 within 5%% of openssl speed | %s | ratio %.3f | %s |\n",
                size_name(w->chunk).c_str(), vs_openssl(*w), vs_openssl(*w) >= 0.95 ? "yes" : "NO");
  }
}

int usage() {
  std::fprintf(stderr,
               "usage: qdedup-bench-hash [--size-mib N] [--min-seconds S] [--threads N]\n"
               "                         [--openssl-sha256 BYTES:MBPS]...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage();
    const char* value = argv[++i];
    if (arg == "--size-mib") {
      opt.size_bytes = std::strtoull(value, nullptr, 10) << 20;
    } else if (arg == "--min-seconds") {
      opt.min_seconds = std::strtod(value, nullptr);
    } else if (arg == "--threads") {
      opt.threads = static_cast<unsigned>(std::strtoul(value, nullptr, 10));
    } else if (arg == "--openssl-sha256") {
      char* colon = nullptr;
      const size_t bytes = std::strtoull(value, &colon, 10);
      if (colon == nullptr || *colon != ':') return usage();
      opt.openssl_sha256_mbps[bytes] = std::strtod(colon + 1, nullptr);
    } else {
      return usage();
    }
  }
  if (opt.size_bytes < kChunkSizes[2] || opt.threads == 0) return usage();

  std::vector<uint8_t> buffer(opt.size_bytes);
  std::mt19937_64 rng(1);
  for (size_t i = 0; i + 8 <= buffer.size(); i += 8) {
    const uint64_t r = rng();
    std::memcpy(buffer.data() + i, &r, 8);
  }

  const std::string load_before = load_average();
  std::vector<Row> rows;
  for (hash::HashAlgorithm algorithm : hash::kAllHashAlgorithms) {
    for (size_t chunk : kChunkSizes) {
      std::fprintf(stderr, "measuring %s, %s clusters...\n", hash::hash_name(algorithm),
                   size_name(chunk).c_str());
      rows.push_back(measure(opt, buffer, algorithm, chunk));
    }
  }
  print_report(opt, rows, load_before);
  return 0;
}
