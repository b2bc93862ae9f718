// Fuzz target "info": the path of `qdedup info` on an image held in memory.
//
// Input: a whole qcow2 file (at most 1 MiB). Image::open() (header, L1 table,
// snapshot table), collect_info() (snapshots, bitmaps directory, backing name),
// then the bounded L1/L2 walk of fuzz_support.h: refcounts of the tables and
// clusters met, and guest data read through Image::read (plain, zero,
// compressed and extended-L2 clusters). Backing files are never opened.
#include <cstdint>

#include "fuzz_support.h"
#include "qcow2/info.h"

using namespace qdedup;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInputBytes) return -1;
  auto img = fuzz::open_image(data, size);
  if (!img) return 0;
  auto info = qcow2::collect_info(*img, img->file());
  fuzz::expect_message(info.status());
  if (info && info->snapshots.size() != img->snapshots().size()) {
    fuzz::fuzz_fail("collect_info lost snapshots");
  }
  fuzz::walk_image(*img);
  return 0;
}
