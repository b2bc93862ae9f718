// Replays fuzz inputs through a target without libFuzzer: the regression test
// of the normal (and sanitizer) build. Each argument is a file or a directory
// (its regular files but dot files, recursively, in name order); each file is passed once to
// LLVMFuzzerTestOneInput(). A crash or a broken invariant aborts, which fails
// the test; otherwise prints the count and exits 0 (also for no input).
//
// Usage: qdedup-fuzz-replay-TARGET PATH...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::filesystem::path> inputs_of(const std::filesystem::path& p) {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  if (fs::is_directory(p)) {
    for (const auto& e : fs::recursive_directory_iterator(p)) {
      // Dot files (.keep holds an empty directory in git) are not inputs.
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
  } else if (fs::is_regular_file(p)) {
    out.push_back(p);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t count = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::filesystem::exists(argv[i])) {
      std::fprintf(stderr, "replay: %s does not exist\n", argv[i]);
      return 1;
    }
    for (const auto& path : inputs_of(argv[i])) {
      std::ifstream in(path, std::ios::binary);
      std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                 std::istreambuf_iterator<char>());
      if (!in.eof() && in.fail()) {
        std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
        return 1;
      }
      std::printf("replay: %s (%zu bytes)\n", path.c_str(), bytes.size());
      std::fflush(stdout);
      (void)LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      ++count;
    }
  }
  std::printf("replay: %zu input(s), no crash\n", count);
  return 0;
}
