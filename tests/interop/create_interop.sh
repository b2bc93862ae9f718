#!/usr/bin/env bash
# QEMU accepts what `qdedup create` makes. For each option set:
#   - qemu-img check finds nothing (exit 0, no leaks);
#   - `qemu-img info` and `qdedup info` agree on the new image (JSON and human), and
#     qemu-img info reports the same as for `qemu-img create` with the same options
#     (except filename and actual-size: the file layouts may differ);
#   - data written by qemu-io (several offsets, partial clusters, zero writes, compressed
#     writes) leaves the image clean and reads back through qdedup as through QEMU.
# shellcheck source=tests/lib/interop.bash
source "${QDEDUP_TESTS:-$(dirname "$0")/..}/lib/interop.bash"

# info JSON of the image as qemu-img reports it, without what depends on the file name
# and the file layout.
qemu_info_core() {
  qemu-img info --output=json "$1" | jq -S 'del(.filename, .["actual-size"])'
}

# case_create NAME SIZE [CREATE-ARGS...]: `qdedup create` and `qemu-img create` with the
# same arguments, into NAME.qcow2 and NAME.ref.qcow2 (SIZE "": none, as with -b).
case_create() {
  local name=$1 size=$2
  shift 2
  run "$QDEDUP" create -f qcow2 "$@" "$name.qcow2" ${size:+"$size"}
  expect_status 0 "qdedup create $* $name.qcow2 $size"
  if [ "$rc" -ne 0 ]; then
    return 1
  fi
  local line
  line=$(cat "$out")
  run qemu-img create -f qcow2 "$@" "$name.ref.qcow2" ${size:+"$size"}
  expect_status 0 "qemu-img create $* $name.ref.qcow2 $size"
  # The "Formatting" line: the same options, values and order as qemu-img's.
  local ref_line
  ref_line=$(cat "$out")
  expect_eq "${ref_line/"'$name.ref.qcow2'"/"'$name.qcow2'"}" "$line" \
    "$name: the Formatting line (- qemu-img, + qdedup)"
  expect_check_clean "$name.qcow2" "$name: new image"
  expect_info_same "$name: new image" "$name.qcow2"
  expect_eq "$(qemu_info_core "$name.qcow2")" "$(qemu_info_core "$name.ref.qcow2")" \
    "$name: qemu-img info of qdedup's image vs qemu-img's (- qdedup, + qemu-img)"
}

# Data by qemu-io into a qdedup-made image, scaled to its cluster size CS (writes that
# would not fit a small disk are left out); then check, info and the data read back.
case_write() {
  local name=$1 cs=$2 size c off len
  local img=$name.qcow2 cmds=()
  size=$(qemu-img info --output=json "$img" | jq '.["virtual-size"]')
  for c in \
    "write -P 0x11 0 $((cs / 2 + 123))" \
    "write -P 0x22 $((cs + 7)) $((2 * cs + 300))" \
    "write -P 0x33 $((5 * cs - 100)) 200" \
    "write -z $((cs + 100)) 50" \
    "write -z $((8 * cs)) $((2 * cs))" \
    "write -P 0x44 $((size / 2 + 511)) 1" \
    "write -P 0x55 $((size - 3000)) 3000" \
    "write -P 0x56 $((size - 100)) 100" \
    "write -c -P 0x66 $((12 * cs)) $cs" \
    "write -P 0x77 $((cs + 1000)) 10"; do
    off=${c% *}
    off=${off##* }
    len=${c##* }
    if [ "$off" -ge 0 ] && [ $((off + len)) -le "$size" ]; then cmds+=("$c"); fi
  done
  qio "$img" "${cmds[@]}"
  expect_check_clean "$img" "$name: after qemu-io writes"
  expect_info_same "$name: after qemu-io writes" "$img"
  expect_data_same "$img" "$name: after qemu-io writes"
}

for cs in 512 4096 65536 2097152; do
  case_create cs$cs 32M -o cluster_size=$cs && case_write cs$cs $cs
done
for bits in 1 2 4 8 16 32 64; do
  case_create rc$bits 8M -o refcount_bits=$bits,cluster_size=4096 && case_write rc$bits 4096
done
case_create v2 16M -o compat=0.10 && case_write v2 65536
case_create v2-512 4M -o compat=0.10,cluster_size=512 && case_write v2-512 512
case_create xl2 16M -o extended_l2=on && case_write xl2 65536
case_create xl2-16k 16M -o extended_l2=on,cluster_size=16k && case_write xl2-16k 16384
case_create xl2-2m 64M -o extended_l2=on,cluster_size=2M,refcount_bits=1 \
  && case_write xl2-2m 2097152
case_create zstd 8M -o compression_type=zstd && case_write zstd 65536
case_create zstd-512 2M -o compression_type=zstd,cluster_size=512 && case_write zstd-512 512
case_create lazy 8M -o lazy_refcounts=on,cluster_size=4096 && case_write lazy 4096
case_create mixed 20M -o cluster_size=8k,refcount_bits=32,lazy_refcounts=on,compression_type=zstd \
  && case_write mixed 8192
# qemu-img rounds a size up to a multiple of 512; a size that is not a whole number of
# clusters; the largest size 512-byte clusters allow is tested in tests/cli.
case_create odd 1000 && case_write odd 512
case_create odd2 $((5 * 65536 + 512))
case_create big 100G -o cluster_size=2M

# Backing files: size taken from the backing file, or given (larger); qcow2 and raw;
# names relative to the new image's directory, as qemu-img resolves them.
mkdir sub
qemu-img create -q -f qcow2 sub/base.qcow2 6M
qio sub/base.qcow2 "write -P 0xa1 0 6M" "write -P 0xa2 70000 5"
truncate -s 3M sub/base.raw
printf 'raw base' | dd of=sub/base.raw bs=1 seek=4097 conv=notrunc status=none
case_create sub/ov "" -b base.qcow2 -F qcow2 && case_write sub/ov 65536
expect_info_same "overlay (--backing-chain)" --backing-chain sub/ov.qcow2
case_create sub/ov-big 10M -o cluster_size=4096 -b base.qcow2 -F qcow2 && case_write sub/ov-big 4096
case_create sub/ov-raw "" -b base.raw -F raw -o cluster_size=512 && case_write sub/ov-raw 512
expect_info_same "overlay of a raw base (--backing-chain)" --backing-chain sub/ov-raw.qcow2
case_create sub/ov-xl2 "" -b base.qcow2 -F qcow2 -o extended_l2=on && case_write sub/ov-xl2 65536
case_create sub/ov-v2 "" -b base.qcow2 -F qcow2 -o compat=0.10 && case_write sub/ov-v2 65536
case_create ov-abs "" -b "$TEST_TMP/sub/base.qcow2" -F qcow2 && case_write ov-abs 65536
# The backing file given as -o options; size given as an option too.
case_create sub/ov-opts "" -o backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=4k \
  && case_write sub/ov-opts 4096
case_create sized "" -o size=3M,cluster_size=512 && case_write sized 512

finish
