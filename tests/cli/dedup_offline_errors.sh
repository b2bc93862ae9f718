#!/usr/bin/env bash
# `qdedup dedup-offline` on bad arguments and bad files: one "qdedup: ..." line, exit 1,
# and no write to any image.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img qemu-io sha256sum

qemu-img create -q -f qcow2 -o cluster_size=4k good.qcow2 1M
qemu-io -f qcow2 -c 'write -P 0x11 0 64k' good.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o refcount_bits=1 rc1.qcow2 1M
qemu-io -f qcow2 -c 'write -P 0x11 0 128k' rc1.qcow2 >/dev/null
head -c 1048576 /dev/zero >disk.raw
head -c 100 good.qcow2 >trunc.qcow2
sums() { sha256sum good.qcow2 rc1.qcow2 disk.raw trunc.qcow2; }
before=$(sums)

# fails WHAT NEEDLE ARGS...: exit 1, one line, the needle in it.
fails() {
  local what=$1 needle=$2
  shift 2
  run "$QDEDUP" dedup-offline "$@"
  expect_error "$what"
  expect_err_has "$needle" "$what"
}

fails "unknown -o key" "unknown option 'cluster_size'" -o cluster_size=4k good.qcow2
fails "dedup=off" "dedup=off: name a hash" -o dedup=off good.qcow2
fails "unknown hash" "qdedup: good.qcow2: " -o dedup=md5 good.qcow2
fails "xxh3 without verify" "not collision resistant" -o dedup=xxh3 good.qcow2
fails "bad dedup_verify" "dedup_verify must be on or off" -o dedup_verify=maybe good.qcow2
fails "bad --max-rate" "--max-rate: 'fast' is not a rate" --max-rate fast good.qcow2
fails "zero --max-rate" "is not a rate" --max-rate 0 good.qcow2
fails "-U without --dry-run" "-U needs --dry-run" -U good.qcow2
fails "missing file" "qdedup: missing.qcow2: " missing.qcow2
fails "raw file" "qdedup: disk.raw: not a qcow2 image" disk.raw
fails "truncated header" "qdedup: trunc.qcow2: " trunc.qcow2
fails "refcount_bits=1" "qemu-img amend -o refcount_bits=16" rc1.qcow2
expect_eq "$(sums)" "$before" "no image was written"

# The good image alongside a bad one: done, exit 1, one line for the bad one.
run "$QDEDUP" dedup-offline --json good.qcow2 disk.raw
expect_status 1 "batch with a raw file"
expect_eq "$(grep -c '^qdedup: ' "$err")" 1 "one line for the raw file"
expect_out_has '"status": "done"' "the good image is done"
finish
