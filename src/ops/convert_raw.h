// The raw target of `convert`: a batch of the sources written as it is, its
// zero runs left as holes.
#pragma once

#include <cstdint>

#include "io/file.h"
#include "ops/convert_source.h"
#include "util/status.h"

namespace qdedup::ops {

// Writes batch `b` into the raw file `f`. Zero runs of at least `sparse`
// bytes (on their `sparse` grid) are left as holes in a new file (`existing`
// false) or punched in an existing one, as qemu-img -n does; `sparse` 0
// writes every byte. Consecutive runs of the same kind go in one call.
Status write_raw_batch(io::File& f, SourceBatch& b, uint64_t sparse, bool existing);

}  // namespace qdedup::ops
