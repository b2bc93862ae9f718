// The write path under ENOSPC, by fault injection at every write: the crash
// scenarios of support/crash_harness.h run with one write failing with ENOSPC.
// The operation returns the error and the bytes written so far are leak-only
// at worst; and, separately, the rest of the scenario then runs (the disk has
// room again, as when QEMU resumes a guest paused on ENOSPC) and must leave a
// consistent image.
#include <catch2/catch.hpp>

#include "support/crash_harness.h"
#include "support/refcheck.h"
#include "support/write_checks.h"

namespace qdedup::qcow2 {
namespace {

using testsupport::options;
using testsupport::crash::fresh_writes;
using testsupport::crash::links;
using testsupport::crash::no_space_at_every_write;
using testsupport::crash::overwrites;
using testsupport::crash::refcount_growth;
using testsupport::crash::with_snapshot;
using testsupport::crash::zeros;

void no_space_scenarios(bool keep_going) {
  no_space_at_every_write(fresh_writes(options(1 << 20), "fresh image"), keep_going);
  no_space_at_every_write(overwrites(options(1 << 20), "overwrite"), keep_going);
  no_space_at_every_write(links(options(1 << 20), "links"), keep_going);
  no_space_at_every_write(zeros(options(1 << 20), "zero clusters"), keep_going);
  no_space_at_every_write(refcount_growth(4, 250, "new refcount block"), keep_going);
  no_space_at_every_write(refcount_growth(6, 4080, "refcount table growth"), keep_going);
  if (testsupport::have_qemu()) no_space_at_every_write(with_snapshot(), keep_going);
}

}  // namespace

TEST_CASE("ENOSPC at any write is reported and leaves a consistent image",
          "[qcow2][crash][nospace]") {
  no_space_scenarios(false);
}

TEST_CASE("after ENOSPC at any write the image stays usable and consistent",
          "[qcow2][crash][nospace]") {
  no_space_scenarios(true);
}

}  // namespace qdedup::qcow2
