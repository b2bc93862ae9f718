#!/usr/bin/env bash
# QEMU accepts what qdedup's write path leaves behind. Writes through the testtool
# (`write IMG OFF LEN BYTE`, `link IMG DST SRC`) into images made by qemu-img and by
# qdedup, holding data, zero and compressed clusters written by qemu-io; after each
# change qemu-img check must be clean (exit 0: no corruptions, leaks or errors) and the
# guest data, read by QEMU, must equal a raw model of it kept by this script.
# Covers: cluster sizes 512/4k/64k, refcount widths 1/8/16/64, compat 0.10 and 1.1,
# extended L2, new refcount blocks and refcount table growth, internal snapshots (L2
# tables and data clusters copied), overlays (partial clusters merged with backing data),
# and shared clusters made with `link`.
# shellcheck source=tests/lib/interop.bash
source "${QDEDUP_TESTS:-$(dirname "$0")/..}/lib/interop.bash"

# tt_write IMG MODEL OFF LEN BYTE WHAT: a qdedup write, mirrored in the model, then
# checked by qemu-img check and a full compare of QEMU's reading with the model.
tt_write() {
  local img=$1 model=$2 off=$3 len=$4 byte=$5 what="$6: write $3+$4"
  run "$TT" write "$img" "$off" "$len" "$byte"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qdedup-testtool write $img $off $len $byte exit $rc"
    return 1
  fi
  pass
  model_write "$model" "$off" "$len" "$byte"
  expect_check_clean "$img" "$what"
  expect_data_is "$img" "$model" "$what"
}

model_from() {
  rm -f "$2"
  qemu-img convert -f qcow2 -O raw "$1" "$2"
}

# refcount_table_clusters, from the header (offset 56).
reftable_clusters() {
  od -An -tu1 -j56 -N4 "$1" | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }'
}

# ---- A series of writes over QEMU-written data, zero and compressed clusters ----
# series NAME CS [FLAGS]: NAME.qcow2 exists (16M); qemu-io fills it, then qdedup writes
# into it. FLAGS: "xl2" (extended L2: subcluster writes too), "nocomp" (no compressed
# writes: QEMU cannot compress into preallocated clusters).
series() {
  local name=$1 cs=$2 flags=${3:-} size=$((16 << 20)) c=-c xl2=
  [[ $flags == *nocomp* ]] && c=
  [[ $flags == *xl2* ]] && xl2=1
  local img=$name.qcow2 model=$name.raw sc=$(($2 / 32))
  local setup=("write -P 0x11 $cs $((2 * cs))" "write -z $((4 * cs)) $cs"
    "write $c -P 0x13 $((6 * cs)) $cs" "write $c -P 0x14 $((7 * cs)) $cs"
    "write -P 0x15 $((size / 2)) $((3 * cs))"
    "write -P 0x18 $((16 * cs)) $cs" "write -z $((16 * cs)) $cs")
  if [ -n "$xl2" ]; then
    setup+=("write -P 0x16 $((10 * cs + sc)) $sc" "write -z $((10 * cs + 3 * sc)) $sc"
      "write -P 0x17 $((10 * cs + 20 * sc + 7)) 9")
  fi
  qio "$img" "${setup[@]}" || return 1
  model_from "$img" "$model"
  tt_write "$img" "$model" 100 10 0xa1 "$name: partial cluster, new L2 entry"
  tt_write "$img" "$model" $((cs + 5)) 100 0xa2 "$name: overwrite QEMU's data in place"
  tt_write "$img" "$model" $((2 * cs - 50)) 100 0xa3 "$name: across two data clusters"
  tt_write "$img" "$model" $((4 * cs + 7)) 9 0xa4 "$name: into a zero cluster"
  tt_write "$img" "$model" $((6 * cs + 1)) "$cs" 0xa5 "$name: over compressed clusters"
  tt_write "$img" "$model" $((7 * cs)) "$cs" 0xa6 "$name: whole compressed cluster"
  tt_write "$img" "$model" $((12 * cs)) $((3 * cs)) 0xa7 "$name: whole new clusters"
  tt_write "$img" "$model" $((size / 2 + cs - 3)) 6 0xa8 "$name: middle of the disk"
  tt_write "$img" "$model" $((size - 1)) 1 0xa9 "$name: last byte"
  tt_write "$img" "$model" $((size / 4 + 1)) $((5 * cs + 17)) 0xaa "$name: unaligned run"
  tt_write "$img" "$model" $((16 * cs + 99)) 1 0xab "$name: into a zeroed allocated cluster"
  tt_write "$img" "$model" 100 10 0xac "$name: overwrite of its own write"
  if [ -n "$xl2" ]; then
    tt_write "$img" "$model" $((10 * cs + 2 * sc)) 10 0xad "$name: next to subclusters"
  fi
  expect_data_same "$img" "$name: qdedup reads its writes"
  expect_info_same "$name: after qdedup's writes" "$img"
}

# Every configuration on an image made by qemu-img; those marked "+" also on one made by
# qdedup create (whose layout may differ).
for cfg in \
  "+cs512:cluster_size=512" \
  "+cs4k-rc1:cluster_size=4096,refcount_bits=1" \
  "cs4k-rc8:cluster_size=4096,refcount_bits=8" \
  "cs4k-rc16:cluster_size=4096" \
  "+cs4k-rc64:cluster_size=4096,refcount_bits=64" \
  "+cs64k:cluster_size=65536" \
  "+v2-cs64k:compat=0.10" \
  "v2-cs512:compat=0.10,cluster_size=512" \
  "xl2-cs64k:extended_l2=on" \
  "+xl2-cs16k:extended_l2=on,cluster_size=16384" \
  "+lazy:lazy_refcounts=on,cluster_size=4096" \
  "zstd:compression_type=zstd,cluster_size=4096"; do
  opts=${cfg#*:}
  name=${cfg%%:*}
  for by in qemu-img qdedup; do
    img=$by-${name#+}
    if [ $by = qemu-img ]; then
      make_image "$img.qcow2" "$opts" 16M
    elif [[ $name == +* ]]; then
      run "$QDEDUP" create -f qcow2 -o "$opts" "$img.qcow2" 16M
      expect_status 0 "qdedup create -o $opts"
    else
      continue
    fi
    cs=$(qemu-img info --output=json "$img.qcow2" | jq '.["cluster-size"]')
    if [[ $opts == *extended_l2=on* ]]; then series "$img" "$cs" xl2; else series "$img" "$cs"; fi
    rm -f "$img.qcow2" "$img.raw"
  done
done
# Preallocated metadata: allocated clusters that were never written.
make_image prealloc.qcow2 preallocation=metadata,cluster_size=4096 16M
series prealloc 4096 nocomp
make_image prealloc-xl2.qcow2 preallocation=metadata,extended_l2=on 16M
series prealloc-xl2 65536 "nocomp xl2"
rm -f prealloc*.qcow2 prealloc*.raw

# ---- Images made of compressed clusters (qemu-img convert -c), 2 MiB and 512 bytes ----
# Compressed data spans host clusters and several compressed clusters share one; an
# overwrite must drop exactly the references the old descriptor held.
python3 -S - comp-src.raw <<'EOF'
import random, sys
rnd = random.Random(7)
nibbles = bytes(i & 15 for i in range(256))
open(sys.argv[1], "wb").write(rnd.randbytes(6 << 20).translate(nibbles))
EOF
for cs in 512 2097152; do
  run qemu-img convert -c -f raw -O qcow2 -o cluster_size=$cs comp-src.raw comp$cs.qcow2
  expect_status 0 "convert -c cluster_size=$cs"
  cp comp-src.raw comp$cs.raw
  tt_write comp$cs.qcow2 comp$cs.raw $((2 * 1024 * 1024 + 5)) 100 0xe3 "comp$cs"
  tt_write comp$cs.qcow2 comp$cs.raw 0 1 0xe4 "comp$cs"
  tt_write comp$cs.qcow2 comp$cs.raw $((3 * 1024 * 1024 - 700)) 3000 0xe5 "comp$cs"
  expect_data_same comp$cs.qcow2 "comp$cs: qdedup reads its writes"
done

# ---- A virtual size that is not a whole number of clusters ----
make_image tail.qcow2 cluster_size=65536 $((1000 * 1024 + 512))
model_new tail.raw $((1000 * 1024 + 512))
tt_write tail.qcow2 tail.raw $((1000 * 1024 + 500)) 12 0xe1 "tail: last bytes"
tt_write tail.qcow2 tail.raw $((15 * 65536 - 5)) 100 0xe2 "tail: into the partial cluster"

# ---- 512-byte clusters: many new refcount blocks and refcount table growth ----
# With 16-bit refcounts a block covers 256 clusters (128 KiB) and the first reftable
# cluster 64 blocks (8 MiB); with 64-bit ones a block covers 64 clusters and the table
# 2 MiB. 20 MiB of data needs new blocks and a larger table in both.
make_image grow16.qcow2 cluster_size=512 24M
run "$QDEDUP" create -f qcow2 -o cluster_size=512,refcount_bits=64 grow64.qcow2 24M
expect_status 0 "qdedup create grow64.qcow2"
for img in grow16.qcow2 grow64.qcow2; do
  model_new ${img%.qcow2}.raw 24M
  before=$(reftable_clusters $img)
  tt_write $img ${img%.qcow2}.raw 0 $((12 << 20)) 0x31 "$img"
  tt_write $img ${img%.qcow2}.raw $((12 * 1024 * 1024 + 100)) $((8 << 20)) 0x32 "$img"
  tt_write $img ${img%.qcow2}.raw $((5 * 1024 * 1024 + 3)) 1000 0x33 "$img"
  after=$(reftable_clusters $img)
  if [ "$after" -gt "$before" ]; then
    pass
  else
    fail "$img: the refcount table did not grow ($before -> $after clusters): test too weak"
  fi
  expect_data_same $img "$img after refcount table growth"
done

# ---- Internal snapshots: shared L2 tables and data clusters are copied ----
# snapshot_series NAME OPTS: writes after a snapshot must leave the snapshot intact.
snap_model() {
  rm -f "$3"
  qemu-img convert -f qcow2 -l snapshot.name="$2" -O raw "$1" "$3"
}
expect_snapshot_is() {
  local img=$1 snap=$2 model=$3 what=$4
  snap_model "$img" "$snap" snap.now.raw
  run cmp "$model" snap.now.raw
  if [ "$rc" -eq 0 ]; then pass; else fail "$what: snapshot $snap changed: $(head -n1 "$out")"; fi
}
snapshot_series() {
  local name=$1 opts=$2
  local img=$name.qcow2 model=$name.raw cs
  make_image "$img" "$opts" 4M
  cs=$(qemu-img info --output=json "$img" | jq '.["cluster-size"]')
  qio "$img" "write -P 0x21 0 $((6 * cs))" "write -P 0x22 $((3 << 20)) $((2 * cs))"
  run qemu-img snapshot -c s1 "$img"
  expect_status 0 "$name: snapshot -c s1"
  snap_model "$img" s1 "$name".s1.raw
  model_from "$img" "$model"
  tt_write "$img" "$model" 1000 100 0xb1 "$name: shared L2 and data"
  tt_write "$img" "$model" $((2 * cs + 3)) $((2 * cs)) 0xb2 "$name: owned L2, shared data"
  tt_write "$img" "$model" 1001 10 0xb3 "$name: copied cluster, now owned"
  tt_write "$img" "$model" $((3 << 20)) "$cs" 0xb4 "$name: whole shared cluster"
  tt_write "$img" "$model" $((2 << 20)) 300 0xb5 "$name: unallocated cluster"
  expect_snapshot_is "$img" s1 "$name".s1.raw "$name"
  run qemu-img snapshot -c s2 "$img"
  expect_status 0 "$name: snapshot -c s2"
  snap_model "$img" s2 "$name".s2.raw
  tt_write "$img" "$model" 5 $((4 * cs)) 0xb6 "$name: after a second snapshot"
  run qemu-img snapshot -d s1 "$img"
  expect_status 0 "$name: snapshot -d s1"
  expect_check_clean "$img" "$name: after snapshot -d s1"
  tt_write "$img" "$model" $((5 * cs)) 7 0xb7 "$name: after deleting the first snapshot"
  expect_snapshot_is "$img" s2 "$name".s2.raw "$name"
  # Going back to the snapshot restores its data, which qdedup's writes left alone.
  run qemu-img snapshot -a s2 "$img"
  expect_status 0 "$name: snapshot -a s2"
  expect_data_is "$img" "$name".s2.raw "$name: reverted to s2"
  expect_check_clean "$img" "$name: reverted to s2"
  tt_write "$img" "$name".s2.raw 0 1 0xb8 "$name: after reverting"
}
snapshot_series snap-cs64k cluster_size=65536
snapshot_series snap-cs512 cluster_size=512
snapshot_series snap-v2 compat=0.10,cluster_size=4096
snapshot_series snap-rc4 cluster_size=4096,refcount_bits=4

# ---- Overlays: partial clusters merge the backing file's data ----
python3 -S - base.raw <<'EOF'
import sys
data = bytearray(8 << 20)
for i in range(0, len(data), 512):
    data[i:i + 512] = bytes([((i >> 9) * 7 + 1) & 0xff]) * 512
open(sys.argv[1], "wb").write(data)
EOF
qemu-img convert -f raw -O qcow2 -o cluster_size=4096 base.raw base.qcow2
base_sum=$(sha256sum base.qcow2 base.raw)
overlay_series() {
  local name=$1 cs sc
  local img=$name.qcow2 model=$name.raw
  cs=$(qemu-img info --output=json "$img" | jq '.["cluster-size"]')
  sc=$((cs / 32))
  qio "$img" "write -P 0x41 $((2 * cs + 100)) 100" "write -z $((4 * cs)) $cs" \
    "write -P 0x42 $((6 * cs + 2 * sc)) $sc" "write -z $((6 * cs + 5 * sc)) $sc"
  model_from "$img" "$model"
  tt_write "$img" "$model" 5000 100 0xc1 "$name: partial cluster over backing data"
  tt_write "$img" "$model" $((cs - 1)) 3 0xc2 "$name: two partial clusters"
  tt_write "$img" "$model" $((2 * cs + 300)) 10 0xc3 "$name: next to QEMU's data"
  tt_write "$img" "$model" $((4 * cs + 10)) 10 0xc4 "$name: into a zero cluster"
  tt_write "$img" "$model" $((6 * cs + sc + 1)) 10 0xc5 "$name: next to subclusters"
  tt_write "$img" "$model" $((8 * 1024 * 1024 - 100)) 100 0xc6 "$name: end of the base"
  if [ "$(stat -c %s "$model")" -gt $((8 << 20)) ]; then
    tt_write "$img" "$model" $((8 * 1024 * 1024 - 50)) 150 0xc7 "$name: across the base's end"
  fi
  expect_data_same "$img" "$name: qdedup reads its writes"
}
qemu-img create -q -f qcow2 -o cluster_size=65536 -b base.qcow2 -F qcow2 ov64k.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 ov-larger.qcow2 12M
qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 ov-xl2.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw ov-v2-raw.qcow2
run "$QDEDUP" create -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 ov-qdedup.qcow2 10M
expect_status 0 "qdedup create overlay"
for ov in ov64k ov-larger ov-xl2 ov-v2-raw ov-qdedup; do overlay_series $ov; done
expect_eq "$(sha256sum base.qcow2 base.raw)" "$base_sum" "backing files unchanged"

# ---- Shared clusters: link ----
cs=65536
make_image link.qcow2 cluster_size=$cs 8M
qio link.qcow2 "write -P 0xaa $((2 * cs)) $cs" "write -P 0xbb $((5 * cs)) $cs" \
  "write -P 0xcc $((9 * cs)) $cs"
model_from link.qcow2 link.raw
# Guest cluster 5 (which had data of its own, now freed) shares cluster 2's host cluster.
run "$TT" link link.qcow2 5 2
expect_status 0 "link 5 2"
expect_check_clean link.qcow2 "after link 5 2"
a=$(qcow2_peek link.qcow2 $((2 * cs)))
b=$(qcow2_peek link.qcow2 $((5 * cs)))
expect_eq "$b" "$a" "clusters 2 and 5 share a host cluster"
expect_eq "${a#* }" "0 2" "shared cluster: no COPIED, refcount 2"
model_write link.raw $((5 * cs)) $cs 0xaa
expect_data_is link.qcow2 link.raw "after link 5 2"
qio link.qcow2 "read -P 0xaa $((5 * cs)) $cs"
# The host offset qemu-img map reports for guest offset $1 (from the JSON in $out).
map_offset() {
  jq -r "map(select(.start <= $1 and .start + .length > $1 and .data))
    | if length == 1 then .[0].offset + $1 - .[0].start else \"none\" end" "$out"
}
run qemu-img map --output=json -f qcow2 link.qcow2
expect_eq "$(map_offset $((5 * cs)))" "$(printf '%d' "${a%% *}")" "qemu-img map: cluster 5"
expect_eq "$(map_offset $((2 * cs)))" "$(printf '%d' "${a%% *}")" "qemu-img map: cluster 2"
# A third reference, into an unallocated cluster.
run "$TT" link link.qcow2 7 2
expect_status 0 "link 7 2"
expect_check_clean link.qcow2 "after link 7 2"
expect_eq "$(qcow2_peek link.qcow2 $((7 * cs)))" "${a% * *} 0 3" "three references"
model_write link.raw $((7 * cs)) $cs 0xaa
expect_data_is link.qcow2 link.raw "after link 7 2"
# qdedup's own write into a shared cluster copies it; the others keep the data.
tt_write link.qcow2 link.raw $((7 * cs + 10)) 20 0xd1 "link: write into a shared cluster"
expect_eq "$(qcow2_peek link.qcow2 $((2 * cs)))" "${a% * *} 0 2" "still two references"
# QEMU's write into cluster 2 copies it too; cluster 5 keeps the old data and the last
# reference, but QEMU leaves its entry without COPIED: exactly one OFLAG_COPIED error.
qio link.qcow2 "write -P 0xdd $((2 * cs + 4096)) 4096"
model_write link.raw $((2 * cs + 4096)) 4096 0xdd
expect_data_is link.qcow2 link.raw "after QEMU's write into a shared cluster"
qio link.qcow2 "read -P 0xaa $((5 * cs)) $cs"
run qemu-img check -f qcow2 link.qcow2
expect_status 2 "qemu-img check after QEMU's copy-on-write"
expect_eq "$(grep -c 'ERROR' "$err")" 1 "one error after QEMU's copy-on-write"
host=${a%% *}
expect_err_has "ERROR OFLAG_COPIED data cluster: l2_entry=${host#0x} refcount=1" \
  "check after QEMU's copy-on-write"
expect_out_has "1 errors were found on the image." "check after QEMU's copy-on-write"
# A qdedup write elsewhere; then qemu-img check -r all leaves the image clean.
run "$TT" write link.qcow2 $((9 * cs + 1)) 1 0xd2
expect_status 0 "testtool write after QEMU's copy-on-write"
model_write link.raw $((9 * cs + 1)) 1 0xd2
run qemu-img check -r all -f qcow2 link.qcow2
expect_status 0 "qemu-img check -r all"
expect_check_clean link.qcow2 "after check -r all"
expect_data_is link.qcow2 link.raw "after check -r all"

# qdedup's write into one of two sharers: the other owns its cluster again and gets
# COPIED back when qdedup closes the image.
make_image link2.qcow2 cluster_size=4096 1M
qio link2.qcow2 "write -P 0x71 0 4k"
model_from link2.qcow2 link2.raw
run "$TT" link link2.qcow2 3 0
expect_status 0 "link2: link 3 0"
model_write link2.raw 12288 4096 0x71
expect_check_clean link2.qcow2 "link2: after link 3 0"
tt_write link2.qcow2 link2.raw 12300 10 0x72 "link2: write into one sharer"
expect_eq "$(qcow2_peek link2.qcow2 0)" "$(qcow2_peek link2.qcow2 0 | cut -d' ' -f1) 1 1" \
  "link2: the other sharer owns its cluster again (COPIED, refcount 1)"

# Links across L2 tables (512-byte clusters: one L2 table maps 32 KiB), over a snapshot.
make_image link512.qcow2 cluster_size=512 1M
qio link512.qcow2 "write -P 0x51 0 1536" "write -P 0x52 $((100 * 1024)) 512"
model_from link512.qcow2 link512.raw
run "$TT" link link512.qcow2 $((300 * 2)) 1
expect_status 0 "link across L2 tables"
model_write link512.raw $((300 * 1024)) 512 0x51
expect_check_clean link512.qcow2 "after a link across L2 tables"
expect_data_is link512.qcow2 link512.raw "after a link across L2 tables"
run qemu-img snapshot -c s1 link512.qcow2
expect_status 0 "snapshot of shared clusters"
run "$TT" link link512.qcow2 $((200 * 1024 / 512)) 1
expect_status 0 "link after a snapshot"
model_write link512.raw $((200 * 1024)) 512 0x51
expect_check_clean link512.qcow2 "after a link after a snapshot"
expect_data_is link512.qcow2 link512.raw "after a link after a snapshot"
tt_write link512.qcow2 link512.raw 600 10 0x53 "link512: write into a shared cluster"

# refcount_bits=1: a cluster can have one reference only; link fails and changes nothing.
make_image link1.qcow2 cluster_size=4096,refcount_bits=1 1M
qio link1.qcow2 "write -P 0x61 0 8k"
sum=$(sha256sum link1.qcow2)
run "$TT" link link1.qcow2 10 0
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then pass; else fail "link with refcount_bits=1: exit $rc"; fi
expect_err_has "exceed" "link with refcount_bits=1"
expect_eq "$(sha256sum link1.qcow2)" "$sum" "link with refcount_bits=1 leaves the file alone"
expect_check_clean link1.qcow2 "after a failed link"

finish
