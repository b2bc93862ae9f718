#!/usr/bin/env bash
# convert -S N: which guest ranges end up allocated. For every cluster size from 512
# bytes to 64 KiB and N from 4 KiB to 1 MiB, from a qcow2 source (data, written zeros,
# zero clusters, unallocated areas) and a raw one (data, written zeros, holes), the
# allocation map of qdedup's target (qemu-img map, host offsets left out and runs
# merged) equals that of qemu-img convert -S N on the same source: qemu-img skips only
# N-aligned zero runs of N bytes, so with N above the cluster size it writes the zero
# clusters next to data as data. With dedup too; every target compares equal to its
# source and checks clean.
source "$(dirname "$0")/../lib/interop.bash"

make_image src.qcow2 compat=1.1 4M
qio src.qcow2 "write -P 1 0 1k" "write -P 2 8k 1k" "write -P 3 17k 1k" "write -P 0 65k 1k" \
  "write -P 4 200k 70k" "write -P 0 300k 64k" "write -P 5 1M 512" "write -z 1100k 64k" \
  "write -P 6 1200k 2k"
qemu-img create -q -f raw src.raw 4M
qemu-io -f raw -c "write -P 1 0 1k" -c "write -P 2 8k 1k" -c "write -P 0 12k 20k" \
  -c "write -P 3 33k 1k" -c "write -P 4 1M 100k" src.raw >/dev/null

for src in src.qcow2 src.raw; do
  for cs in 512 1k 4k 64k; do
    for n in 4k 8k 64k 1M; do
      what="convert -S $n -o cluster_size=$cs $src"
      run qemu-img convert -O qcow2 -o cluster_size=$cs -S $n "$src" want.qcow2
      expect_status 0 "qemu-img $what"
      run "$QDEDUP" convert -O qcow2 -o cluster_size=$cs -S $n "$src" got.qcow2
      expect_status 0 "$what"
      expect_eq "$(alloc_map want.qcow2)" "$(alloc_map got.qcow2)" "$what: allocation as qemu-img's"
      run qemu-img compare "$src" got.qcow2
      expect_status 0 "$what: qemu-img compare"
    done
  done
  for n in 8k 64k; do
    what="convert -S $n -o dedup=sha256,cluster_size=1k $src"
    run qemu-img convert -O qcow2 -o cluster_size=1k -S $n "$src" want.qcow2
    run "$QDEDUP" convert -O qcow2 -o dedup=sha256,cluster_size=1k -S $n "$src" got.qcow2
    expect_status 0 "$what"
    expect_eq "$(alloc_map want.qcow2)" "$(alloc_map got.qcow2)" "$what: allocation as qemu-img's"
    run qemu-img compare "$src" got.qcow2
    expect_status 0 "$what: qemu-img compare"
    run qemu-img check got.qcow2
    expect_status 0 "$what: qemu-img check"
  done
done

# A raw target's first block, allocated as qemu-img allocates it: 512 bytes when the
# target (whole 512-byte sectors) is under 4 KiB, else 4 KiB; zero and data sources.
for src_size in 3000 3600 4096 10000; do
  head -c "$src_size" /dev/zero >zero.raw
  run qemu-img convert -O raw zero.raw want.raw
  run "$QDEDUP" convert -O raw zero.raw got.raw
  expect_status 0 "convert -O raw of $src_size zero bytes"
  expect_eq "$(qemu-img map --output=json want.raw)" "$(qemu-img map --output=json got.raw)" \
    "convert -O raw of $src_size zero bytes: allocation as qemu-img's"
  expect_eq "$(stat -c %s want.raw)" "$(stat -c %s got.raw)" "convert -O raw of $src_size bytes: size"
done

finish
