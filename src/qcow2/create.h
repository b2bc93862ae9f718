// Creating a new, empty qcow2 image (what `qemu-img create -f qcow2` writes).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/file.h"
#include "qcow2/header.h"
#include "qcow2/qemu_layout.h"
#include "util/status.h"

namespace qdedup::qcow2 {

struct CreateOptions {
  uint64_t size = 0;            // virtual size in bytes (rounded up to 512)
  uint32_t cluster_bits = 16;
  uint32_t version = 3;         // compat 1.1; 2 for compat 0.10
  uint32_t refcount_order = 4;  // 16-bit refcounts
  bool lazy_refcounts = false;
  bool extended_l2 = false;
  uint8_t compression_type = 0;
  std::string backing_file;
  std::string backing_format;
  Preallocation preallocation = Preallocation::kOff;
  // Added by upper layers (the dedup extension and its autoclear bit).
  std::vector<HeaderExtension> extensions;
  std::vector<FeatureName> extra_feature_names;
  uint64_t autoclear_features = 0;
};

// Checks option combinations exactly as qemu-img create does.
Status validate_create_options(const CreateOptions& o);

// Writes a new image into an empty `file`: header cluster, refcount table,
// refcount blocks, L1 table and, with preallocation, L2 tables and data
// clusters, in QEMU's layout (qcow2/qemu_layout.h). Flushes before returning.
Status create_image(io::File& file, const CreateOptions& o);

}  // namespace qdedup::qcow2
