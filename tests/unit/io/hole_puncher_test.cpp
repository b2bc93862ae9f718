// io::HolePuncher: holes punched on its own thread for a thread-safe file,
// at once for the others; drain() waits for them and reports the first error.
#include "io/hole_puncher.h"

#include <catch2/catch.hpp>
#include <vector>

#include "io/faulty_file.h"
#include "io/memory_file.h"
#include "io/posix_file.h"
#include "support/scratch_dir.h"

namespace qdedup::io {
namespace {

TEST_CASE("HolePuncher punches every hole asked for before drain returns", "[io][hole_puncher]") {
  image_builder::ScratchDir dir;
  const std::string path = dir.path() + "/f";
  auto f = PosixFile::open(path, OpenOptions{.writable = true, .create = true});
  REQUIRE(f.is_ok());
  REQUIRE((*f)->thread_safe());
  const std::vector<uint8_t> ones(64 * 4096, 0x11);
  REQUIRE((*f)->pwrite(0, ones).is_ok());
  {
    HolePuncher p(**f);
    for (uint64_t i = 0; i < 64; i += 2) p.punch(i * 4096, 4096);
    REQUIRE(p.drain().is_ok());
    std::vector<uint8_t> back(ones.size());
    REQUIRE((*f)->read_exact(0, back, "test").is_ok());
    for (uint64_t i = 0; i < 64; ++i) {
      INFO("block " << i);
      CHECK(back[i * 4096] == (i % 2 == 0 ? 0 : 0x11));
      CHECK(back[i * 4096 + 4095] == (i % 2 == 0 ? 0 : 0x11));
    }
    // Usable again after a drain.
    p.punch(4096, 4096);
    REQUIRE(p.drain().is_ok());
    REQUIRE((*f)->read_exact(4096, std::span<uint8_t>(back.data(), 4096), "test").is_ok());
    CHECK(back[0] == 0);
  }
}

TEST_CASE("HolePuncher punches at once on a file that is not thread safe, and reports errors",
          "[io][hole_puncher]") {
  FaultyFile f(std::vector<uint8_t>(8192, 0x22));
  REQUIRE_FALSE(f.thread_safe());
  HolePuncher p(f);
  p.punch(0, 4096);
  std::vector<uint8_t> back(4096);
  REQUIRE(f.read_exact(0, back, "test").is_ok());
  CHECK(back[0] == 0);  // punched before drain
  f.crash_after_writes(0);
  p.punch(4096, 4096);
  Status st = p.drain();
  CHECK_FALSE(st.is_ok());
  CHECK(p.drain().is_ok());  // the error is reported once
}

}  // namespace
}  // namespace qdedup::io
