#!/usr/bin/env bash
# qdedup reads what QEMU writes. A matrix of images made by qemu-img create, qemu-io and
# qemu-img convert (cluster sizes, refcount widths, compat levels, compressed clusters in
# both compression types, extended L2 entries, zero clusters, internal snapshots, lazy
# refcounts, bitmaps, preallocation, backing chains, an empty backing file name). For
# each image:
#   - `qdedup info` equals `qemu-img info`, as JSON (byte for byte, and whole objects after jq -S, nothing
#     deleted: actual-size is st_blocks * 512 in both) and as human text;
#   - the guest data qdedup reads (testtool dump) equals `qemu-img convert -O raw`;
#   - for overlays, the same with --backing-chain.
# shellcheck source=tests/lib/interop.bash
source "${QDEDUP_TESTS:-$(dirname "$0")/..}/lib/interop.bash"

# Checks one image (a path relative to the current directory, as the user would type it).
verify() {
  local img=$1 what=$2
  expect_info_same "$what" "$img"
  expect_data_same "$img" "$what"
}

verify_chain() {
  local img=$1 what=$2
  verify "$img" "$what"
  expect_info_same "$what (--backing-chain)" --backing-chain "$img"
}

# Varied patterns at unaligned offsets, scaled to the cluster size CS: a partial first
# cluster, a run over several clusters, writes across cluster boundaries, a single byte
# in the middle of the disk, the last bytes of the disk, and an overwrite of earlier data.
write_patterns() {
  local img=$1 cs=$2 size=$3
  qio "$img" \
    "write -P 0x11 0 $((cs / 2 + 123))" \
    "write -P 0x22 $((cs + 7)) $((2 * cs + 300))" \
    "write -P 0x33 $((5 * cs - 100)) 200" \
    "write -P 0x44 $((size / 2 + 511)) 1" \
    "write -P 0x55 $((size - 3000)) 3000" \
    "write -P 0x66 $((cs + 1000)) 10" \
    "write -P 0xff $((7 * cs + 4096 + 1)) 4095"
}

# ---- Cluster sizes, refcount widths, compat levels ----
for cs in 512 4096 65536 2097152; do
  img=cs$cs.qcow2
  make_image $img cluster_size=$cs 32M
  write_patterns $img $cs $((32 << 20))
  verify $img "cluster_size=$cs"
done

for bits in 1 2 4 8 16 32 64; do
  img=rc$bits.qcow2
  make_image $img cluster_size=4096,refcount_bits=$bits 8M
  write_patterns $img 4096 $((8 << 20))
  verify $img "refcount_bits=$bits"
done

for cs in 512 65536; do
  img=v2-$cs.qcow2
  make_image $img compat=0.10,cluster_size=$cs 16M
  write_patterns $img $cs $((16 << 20))
  # No zero clusters in v2: QEMU writes explicit zeros (or leaves unallocated).
  qio $img "write -z $((cs + 20)) 100" "write -z $((4 * cs)) $((2 * cs))" \
    "write -z $((10 * cs)) $cs"
  verify $img "compat=0.10 cluster_size=$cs"
done

# Preallocated images: metadata only (allocated clusters never written), and falloc.
for pre in metadata falloc; do
  img=prealloc-$pre.qcow2
  make_image $img preallocation=$pre,cluster_size=4096 4M
  write_patterns $img 4096 $((4 << 20))
  verify $img "preallocation=$pre"
done
make_image prealloc-xl2.qcow2 preallocation=metadata,extended_l2=on 4M
qio prealloc-xl2.qcow2 "write -P 0x5d 3000 100" "write -z 100000 3000"
verify prealloc-xl2.qcow2 "preallocation=metadata, extended_l2"

# A virtual size that is not a multiple of the cluster size: the last cluster is partial.
img=odd-size.qcow2
make_image $img cluster_size=65536 $((1000 * 1024 + 512))
qio $img "write -P 0x5a $((1000 * 1024 + 512 - 700)) 700" "write -P 0x5b 65000 1000"
verify $img "virtual size 1024512"
# An explicit format: -f qcow2, and -f raw (the qcow2 file shown as a raw image).
expect_info_same "info -f qcow2" -f qcow2 $img
expect_info_same "info -f raw" -f raw $img
# Sizes whose human form QEMU prints as "1e+03 KiB" / "1e+03 MiB" ("%0.3g"), and 0.
make_image empty.qcow2 cluster_size=65536 0
verify empty.qcow2 "virtual size 0"
make_image 1e3k.qcow2 cluster_size=65536 1023488
verify 1e3k.qcow2 "virtual size 1023488"
make_image 1e3m.qcow2 cluster_size=65536 1048141824
expect_info_same "virtual size 1048141824" 1e3m.qcow2

# ---- Compressed clusters ----
# The source mixes compressible patterns, incompressible random bytes (QEMU stores those
# uncompressed) and holes; convert -c writes every non-zero cluster compressed.
python3 -S - src.raw <<'EOF'
import random, sys
rnd = random.Random(4)
data = bytearray(6 << 20)
def put(off, b): data[off:off + len(b)] = b
put(0, b"\x21" * 70000)
put(100000, rnd.randbytes(150000))
put(300001, (b"qdedup " * 40000)[:250000])
put((2 << 20) + 12345, b"\x7e" * 5)
put((4 << 20) - 1000, rnd.randbytes(3000))
put((6 << 20) - 4096, b"\x01\x02\x03\x04" * 1024)
open(sys.argv[1], "wb").write(data)
EOF
for ct in zlib zstd; do
  for cs in 512 4096 65536 2097152; do
    img=comp-$ct-$cs.qcow2
    run qemu-img convert -c -f raw -O qcow2 -o compression_type=$ct,cluster_size=$cs src.raw $img
    expect_status 0 "convert -c $ct cluster_size=$cs"
    verify $img "compressed ($ct, cluster_size=$cs)"
  done
  # Compressed writes by qemu-io next to normal ones, then a partial overwrite of a
  # compressed cluster (QEMU decompresses and writes it back as a normal cluster).
  img=compw-$ct.qcow2
  make_image $img compression_type=$ct,cluster_size=65536 8M
  qio $img "write -c -P 0x31 0 64k" "write -c -P 0x32 64k 128k" "write -P 0x33 192k 64k" \
    "write -c -P 0x34 1M 64k" "write -P 0x35 $((1024 * 1024 + 1000)) 300" \
    "write -c -P 0x36 $((8 * 1024 * 1024 - 65536)) 64k"
  verify $img "compressed writes ($ct)"
done
img=comp-v2.qcow2
run qemu-img convert -c -f raw -O qcow2 -o compat=0.10,cluster_size=4096 src.raw $img
expect_status 0 "convert -c compat=0.10"
verify $img "compressed (compat=0.10)"
img=compw-512.qcow2
make_image $img cluster_size=512 1M
qio $img "write -c -P 0x41 0 512" "write -c -P 0x42 512 512" "write -c -P 0x43 4096 2048" \
  "write -P 0x44 700 10"
verify $img "compressed writes (cluster_size=512)"

# ---- Extended L2 entries (32 subclusters per cluster) ----
for cs in 16384 65536 2097152; do
  sc=$((cs / 32))
  img=xl2-$cs.qcow2
  make_image $img extended_l2=on,cluster_size=$cs 32M
  qio $img \
    "write -P 0x51 $((sc + 100)) 100" \
    "write -P 0x52 $((3 * sc)) $((2 * sc))" \
    "write -P 0x53 $((cs - 10)) 20" \
    "write -z $((2 * cs + sc)) $((3 * sc))" \
    "write -P 0x54 $((3 * cs)) $cs" \
    "write -z $((3 * cs + 5 * sc)) $sc" \
    "write -z $((3 * cs + 7 * sc + 10)) 100" \
    "write -z $((5 * cs)) $cs" \
    "write -P 0x55 $((6 * cs)) $cs" \
    "write -z -u $((6 * cs)) $cs" \
    "write -c -P 0x56 $((8 * cs)) $cs" \
    "write -P 0x57 $((16 << 20)) 1"
  verify $img "extended_l2 cluster_size=$cs"
done

# ---- Zero clusters (v3) ----
img=zero.qcow2
make_image $img cluster_size=65536 8M
qio $img \
  "write -P 0x61 0 256k" \
  "write -z 64k 64k" \
  "write -z -u 128k 64k" \
  "write -z 1M 128k" \
  "write -z 200000 1000" \
  "write -P 0x62 2M 64k" "write -z $((2 * 1024 * 1024 + 512)) 512"
verify $img "zero clusters (v3)"

# ---- Internal snapshots: the active layer is what reads return ----
for opts in cluster_size=512 cluster_size=65536 compat=0.10,cluster_size=4096; do
  cs=${opts##*=}
  img=snap-${opts//[=,]/-}.qcow2
  make_image "$img" "$opts" 4M
  write_patterns "$img" "$cs" $((4 << 20))
  run qemu-img snapshot -c s1 "$img"
  expect_status 0 "snapshot -c s1"
  qio "$img" "write -P 0x71 $((cs / 3)) $((cs * 2))" "write -P 0x72 $((3 << 20)) 5000"
  run qemu-img snapshot -c second-snapshot-with-a-longer-name "$img"
  expect_status 0 "snapshot -c second"
  qio "$img" "write -z 0 $cs" "write -P 0x73 $((2 * cs + 1)) 1"
  run qemu-img snapshot -c s3 "$img"
  expect_status 0 "snapshot -c s3"
  run qemu-img snapshot -d s1 "$img"
  expect_status 0 "snapshot -d"
  # Names of 16 and 17 characters: the width of the TAG column.
  run qemu-img snapshot -c sixteen-chars-16 "$img"
  expect_status 0 "snapshot -c sixteen-chars-16"
  run qemu-img snapshot -c seventeen-chars17 "$img"
  expect_status 0 "snapshot -c seventeen-chars17"
  qio "$img" "write -P 0x74 100 100"
  verify "$img" "internal snapshots $opts"
done

# Snapshot and file names outside printable ASCII: qdedup's human output escapes them
# (\xNN, util/text.h: a name from an image must not drive the terminal) where qemu-img
# prints the raw bytes, so only the JSON (valid UTF-8 in both) is compared.
img=$'sn\xc3\xa4p.qcow2'
make_image "$img" cluster_size=65536 1M
run qemu-img snapshot -c $'sn\xc3\xa4p \xe2\x82\xac' "$img"
expect_status 0 "snapshot -c (UTF-8 name)"
run qemu-img snapshot -c $'tab\there' "$img"
expect_status 0 "snapshot -c (tab in the name)"
expect_info_json_same "UTF-8 and control characters in names" "$img"

# The corrupt bit (incompatible bit 1, byte 79): QEMU still reads the image.
make_image corrupt.qcow2 cluster_size=65536 1M
qio corrupt.qcow2 "write -P 0x5c 1000 1000"
printf '\x02' | dd of=corrupt.qcow2 bs=1 seek=79 conv=notrunc status=none
verify corrupt.qcow2 "corrupt bit set"

# ---- Lazy refcounts: clean, then left dirty by a crashed writer ----
img=lazy.qcow2
make_image $img lazy_refcounts=on,cluster_size=4096 8M
write_patterns $img 4096 $((8 << 20))
verify $img "lazy_refcounts=on"
cp $img lazy-dirty.qcow2
# qemu-io's abort leaves the dirty bit set (and refcounts stale); no core file please.
{ (ulimit -c 0; qemu-io -f qcow2 lazy-dirty.qcow2 -c 'write -P 0x81 1M 12k' -c abort) \
  >/dev/null; } 2>/dev/null
run jq -r '.["dirty-flag"]' <(qemu-img info --output=json lazy-dirty.qcow2)
expect_eq "$(cat "$out")" true "qemu-io abort left the dirty bit"
verify lazy-dirty.qcow2 "lazy_refcounts=on, dirty"

# ---- Bitmaps ----
img=bitmaps.qcow2
make_image $img cluster_size=65536 8M
qio $img "write -P 0x91 0 100k"
run qemu-img bitmap --add $img b0
expect_status 0 "bitmap --add b0"
run qemu-img bitmap --add -g 128k --disable $img other-bitmap
expect_status 0 "bitmap --add other-bitmap"
verify $img "bitmaps"

# ---- Backing chains: relative names, images in a subdirectory, run from elsewhere ----
mkdir -p chain/img/sub other
python3 -S - chain/img/base.raw <<'EOF'
import sys
data = bytearray(8 << 20)
for i in range(0, len(data), 4096):
    data[i:i + 4096] = bytes([(i >> 12) & 0xff]) * 4096
open(sys.argv[1], "wb").write(data)
EOF
(
  cd chain/img || exit 1
  qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 8M
  qemu-io -f qcow2 base.qcow2 -c 'write -P 0xb1 0 8M' -c 'write -P 0xb2 100000 3' >/dev/null
  for b in raw qcow2; do
    qemu-img create -q -f qcow2 -o cluster_size=65536 -b base.$b -F $b mid-$b.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=512 -b ../mid-$b.qcow2 -F qcow2 \
      sub/top-$b.qcow2
  done
)
for b in raw qcow2; do
  # Data at every level: the top over the middle over the base, zero clusters in the
  # middle and the top hiding the levels below, partial writes merging with lower data.
  qio chain/img/mid-$b.qcow2 "write -P 0xc1 $((64 * 1024 - 100)) 200" \
    "write -P 0xc2 1M 64k" "write -z 2M 64k" "write -P 0xc3 $((5 * 1024 * 1024 + 3)) 7"
  qio chain/img/sub/top-$b.qcow2 "write -P 0xd1 1000 10" \
    "write -P 0xd2 $((1024 * 1024 + 512)) 1024" "write -z 3M 4k" \
    "write -z $((1024 * 1024 + 4096)) 512" "write -P 0xd3 $((8 * 1024 * 1024 - 1)) 1"
  # (cd, not a subshell: failures must reach the counters of this shell)
  cd other || exit 1
  verify_chain ../chain/img/sub/top-$b.qcow2 "chain over $b base, from another directory"
  cd ../chain || exit 1
  verify_chain img/sub/top-$b.qcow2 "chain over $b base, from the parent directory"
  cd img/sub || exit 1
  verify_chain top-$b.qcow2 "chain over $b base, from the image's directory"
  cd "$TEST_TMP" || exit 1
done
# Spaces in directory and file names.
mkdir "with space"
qemu-img create -q -f qcow2 -o cluster_size=4096 "with space/a base.qcow2" 2M
qio "with space/a base.qcow2" "write -P 0xd5 0 1M"
qemu-img create -q -f qcow2 -b "a base.qcow2" -F qcow2 "with space/the top.qcow2"
qio "with space/the top.qcow2" "write -P 0xd6 5000 10"
verify_chain "with space/the top.qcow2" "spaces in names"

# An absolute backing name, and extended L2 overlays whose unallocated subclusters read
# from the backing file.
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=65536 \
  -b "$TEST_TMP/chain/img/base.qcow2" -F qcow2 xl2-overlay.qcow2
qio xl2-overlay.qcow2 "write -P 0xe1 $((2048 + 5)) 10" "write -z 8k 2k" "write -z 128k 64k" \
  "write -P 0xe2 $((256 * 1024 + 3 * 2048)) $((4 * 2048))"
verify_chain xl2-overlay.qcow2 "extended L2 overlay (absolute backing name)"
# A v3 zero cluster hides the backing data; v2 overlays have no zero clusters.
qemu-img create -q -f qcow2 -o compat=0.10 -b chain/img/base.qcow2 -F qcow2 v2-overlay.qcow2
qio v2-overlay.qcow2 "write -z 0 64k" "write -P 0xe3 70000 10"
verify_chain v2-overlay.qcow2 "v2 overlay"

# The overlay is larger than its base (reads past the base's end are zeros), smaller
# than its base, or over a raw base whose size is not a multiple of 512.
qemu-img create -q -f qcow2 -o cluster_size=65536 small-base.qcow2 4M
qio small-base.qcow2 "write -P 0xf1 0 4M"
qemu-img create -q -f qcow2 -o cluster_size=4096 -b small-base.qcow2 -F qcow2 big-top.qcow2 8M
qio big-top.qcow2 "write -P 0xf2 $((4 * 1024 * 1024 - 1000)) 2000" "write -P 0xf3 7M 10"
verify_chain big-top.qcow2 "overlay larger than its base"
qemu-img create -q -f qcow2 -o cluster_size=4096 -b small-base.qcow2 -F qcow2 small-top.qcow2 1M
qio small-top.qcow2 "write -P 0xf4 5000 10"
verify_chain small-top.qcow2 "overlay smaller than its base"
head -c 1000001 chain/img/base.raw >odd.raw
qemu-img create -q -f qcow2 -o cluster_size=4096 -b odd.raw -F raw odd-top.qcow2 2M
qio odd-top.qcow2 "write -P 0xf5 999000 100"
verify_chain odd-top.qcow2 "raw base of 1000001 bytes"

# A backing_file_offset with a backing_file_size of 0 (the header bytes 16-19 zeroed):
# QEMU reads that as no backing file, and so must qdedup. The backing data written
# before no longer shows; qemu-io can still write the image.
qemu-img create -q -f qcow2 -o cluster_size=65536 -b small-base.qcow2 -F qcow2 empty-name.qcow2 4M
qio empty-name.qcow2 "write -P 0xf6 65536 100"
printf '\0\0\0\0' | dd of=empty-name.qcow2 bs=1 seek=16 conv=notrunc status=none
verify empty-name.qcow2 "backing_file_offset set, backing_file_size 0"
qio empty-name.qcow2 "write -P 0xf7 0 100"
verify empty-name.qcow2 "backing_file_size 0, after a qemu-io write"

finish
