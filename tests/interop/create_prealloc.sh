#!/usr/bin/env bash
# `qdedup create -o preallocation=off|metadata|falloc|full` makes the image qemu-img makes:
# for each mode, cluster size, size and option set (small clusters whose refcount table
# must grow, extended L2 entries, 1- and 64-bit refcounts, compat=0.10, an empty image):
#   - the same file, byte for byte (the refcount tables QEMU outgrew and freed included,
#     and the zeros its copy-on-write writes after a size that ends inside a cluster);
#   - the same `qemu-img map` and the same "Formatting" line; qemu-img check clean;
#   - falloc and full give the data its blocks on disk, metadata and off do not.
# And the edges: raw images (falloc, full; metadata refused as QEMU refuses it), a backing
# file (refused without extended_l2, with QEMU's words; with it, the guest reads the
# backing file), a bad mode, and the commands that do not preallocate (dedup, convert).
# shellcheck source=tests/lib/interop.bash
source "${QDEDUP_TESTS:-$(dirname "$0")/..}/lib/interop.bash"

# case_prealloc MODE CLUSTER SIZE [EXTRA-OPTIONS]
case_prealloc() {
  local mode=$1 cs=$2 size=$3 extra=${4:-}
  local o="preallocation=$mode,cluster_size=$cs$extra" what="create -o $1,$cs$extra $size"
  rm -f q.qcow2 d.qcow2
  run qemu-img create -f qcow2 -o "$o" q.qcow2 "$size"
  expect_status 0 "qemu-img $what"
  local ref_line
  ref_line=$(sed 's/q\.qcow2/IMG/' "$out")
  run "$QDEDUP" create -f qcow2 -o "$o" d.qcow2 "$size"
  expect_status 0 "qdedup $what"
  [ "$rc" -eq 0 ] || return
  expect_eq "$ref_line" "$(sed 's/d\.qcow2/IMG/' "$out")" "$what: the Formatting line"
  expect_eq "$(stat -c %s q.qcow2)" "$(stat -c %s d.qcow2)" "$what: file size"
  if cmp -s q.qcow2 d.qcow2; then pass; else
    fail "$what: not qemu-img's file byte for byte ($(cmp q.qcow2 d.qcow2 2>&1 | head -1))"
  fi
  expect_eq "$(qemu-img map --output=json q.qcow2 | sed 's/q\.qcow2/IMG/')" \
    "$(qemu-img map --output=json d.qcow2 | sed 's/d\.qcow2/IMG/')" "$what: qemu-img map"
  expect_check_clean d.qcow2 "$what"
}

for mode in off metadata falloc full; do
  case_prealloc "$mode" 64k 64M
  case_prealloc "$mode" 64k 64M ,extended_l2=on
  case_prealloc "$mode" 64k 0
  case_prealloc "$mode" 512 1M ,refcount_bits=64
  case_prealloc "$mode" 4k 12M ,compat=0.10
  case_prealloc "$mode" 1k 3M ,refcount_bits=1
done
# Refcount tables that grow several times while the L2 tables are placed (512-byte
# clusters, 16-bit refcounts: one table cluster describes 8 MiB).
case_prealloc metadata 512 24M
case_prealloc falloc 512 24M
case_prealloc off 512 1G
# Sizes that end inside a cluster (and inside a subcluster).
case_prealloc metadata 64k 102912
case_prealloc metadata 64k 102912 ,extended_l2=on
case_prealloc metadata 2k 1474048 ,refcount_bits=2
case_prealloc falloc 64k 100000
# Where the per-request cap moves a data cluster (256 KiB clusters, 64-bit refcounts), and
# where freed refcount tables share file-system blocks with later clusters.
case_prealloc metadata 256k 8G ,refcount_bits=64
case_prealloc metadata 512 37455360 ,refcount_bits=32

# Disk usage: falloc and full give the 64 MiB of data blocks, metadata does not.
for mode in metadata falloc full; do
  "$QDEDUP" create -q -f qcow2 -o preallocation=$mode u-$mode.qcow2 64M
done
expect_eq yes "$( [ "$(du -B1 u-metadata.qcow2 | cut -f1)" -lt 1048576 ] && echo yes)" \
  "metadata: under 1 MiB on disk"
for mode in falloc full; do
  expect_eq yes "$( [ "$(du -B1 u-$mode.qcow2 | cut -f1)" -ge 67108864 ] && echo yes)" \
    "$mode: the data's 64 MiB on disk"
done

# Raw images, as QEMU's file driver.
for mode in falloc full; do
  run "$QDEDUP" create -q -f raw -o preallocation=$mode r-$mode.raw 1M
  expect_status 0 "create -f raw -o preallocation=$mode"
  expect_eq 1048576 "$(stat -c %s r-$mode.raw)" "raw $mode: size"
  expect_eq yes "$( [ "$(du -B1 r-$mode.raw | cut -f1)" -ge 1048576 ] && echo yes)" \
    "raw $mode: allocated"
done
run "$QDEDUP" create -q -f raw -o preallocation=metadata r.raw 1M
expect_error "create -f raw -o preallocation=metadata"
expect_err_has "Unsupported preallocation mode: metadata" "raw metadata: QEMU's words"

# A bad mode, after the Formatting line, in QEMU's words.
run "$QDEDUP" create -f qcow2 -o preallocation=1234 bad.qcow2 1M
expect_status 1 "preallocation=1234"
expect_err_has "Parameter 'preallocation' does not accept value '1234'" "bad mode: QEMU's words"

# A backing file: only with extended L2 entries, whose subclusters then read from it.
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c "write -q -P 0xff 0 1M" base.raw
run "$QDEDUP" create -q -f qcow2 -o preallocation=metadata -b base.raw -F raw b1.qcow2 512k
expect_status 1 "preallocation with a backing file, no extended L2"
expect_err_has "Backing file and preallocation can only be used at the same time if extended_l2 is on" \
  "backing without extended_l2: QEMU's words"
for mode in metadata falloc; do
  run "$QDEDUP" create -q -f qcow2 -o extended_l2=on,preallocation=$mode -b base.raw -F raw \
    b-$mode.qcow2 512k
  expect_status 0 "preallocation=$mode with a backing file and extended L2"
  expect_check_clean b-$mode.qcow2 "backing, $mode"
  qio b-$mode.qcow2 "read -q -P 0xff 0 512k"
done

# What does not preallocate says so.
run "$QDEDUP" create -q -f qcow2 -o dedup=sha256,preallocation=metadata dd.qcow2 1M
expect_error "dedup with preallocation"
expect_err_has "preallocation cannot be combined with dedup" "dedup: the reason"
run "$QDEDUP" convert -q -f raw -O qcow2 -o preallocation=metadata r-full.raw c.qcow2
expect_error "convert -o preallocation"
expect_err_has "not supported by convert" "convert: the reason"

finish
