#!/usr/bin/env bash
# convert -n into an existing qcow2 target: what the source has as zeros (unallocated,
# zero clusters, holes, written zeros) must read as zeros in the target, whatever the
# target held before and whatever its backing file holds, on v2 (no zero flag) and v3,
# with and without extended L2 entries, -S 0 and dedup. Each qdedup result is checked
# against qemu-img convert -n into a copy of the same target (qemu-img compare), against
# the source itself, and by qemu-img check. A source that ends inside a cluster of a
# larger target leaves the rest of that cluster as the target showed it.
source "$(dirname "$0")/../lib/interop.bash"

MiB=$((1024 * 1024))
# The backing file: every byte 0x11, so that a zero area the convert forgets shows.
make_image base.qcow2 compat=1.1 1M
qio base.qcow2 "write -P 0x11 0 1M"

# Sources: a qcow2 image with data, explicit zero clusters, written zeros and
# unallocated areas (64 KiB clusters), and the same guest data as a sparse raw file
# with holes and written zeros.
make_image src.qcow2 compat=1.1 1M
qio src.qcow2 "write -P 0x22 64k 64k" "write -z 192k 64k" "write -P 0 320k 64k" \
  "write -P 0x23 448k 4k" "write -P 0x24 1020k 4k"
run qemu-img convert -f qcow2 -O raw src.qcow2 src.raw
expect_status 0 "qemu-img convert the source to raw"
truncate -s 0 holes.raw
truncate -s 1M holes.raw
dd if=src.raw of=holes.raw bs=64k skip=1 seek=1 count=1 conv=notrunc status=none
dd if=/dev/zero of=holes.raw bs=64k seek=5 count=1 conv=notrunc status=none
dd if=src.raw of=holes.raw bs=4k skip=112 seek=112 count=1 conv=notrunc status=none
dd if=src.raw of=holes.raw bs=4k skip=255 seek=255 count=1 conv=notrunc status=none
if cmp -s src.raw holes.raw; then pass; else fail "holes.raw has the source's data"; fi

# new_target NAME OPTS [BACKING]: a target that already holds data of its own (0x33 over
# its first half) above BACKING.
new_target() {
  local name=$1 opts=$2 backing=${3:-}
  if [ -n "$backing" ]; then opts="$opts,backing_file=$backing,backing_fmt=qcow2"; fi
  make_image "$name" "$opts" 1M
  qio "$name" "write -P 0x33 0 512k"
}

targets=(
  "v2-backing|compat=0.10|base.qcow2"
  "v2|compat=0.10|"
  "v3-backing|compat=1.1|base.qcow2"
  "v3|compat=1.1|"
  "xl2-backing|compat=1.1,extended_l2=on,cluster_size=64k|base.qcow2"
  "v2-backing-4k|compat=0.10,cluster_size=4k|base.qcow2"
)
for t in "${targets[@]}"; do
  IFS='|' read -r name opts backing <<<"$t"
  for src in src.qcow2 src.raw holes.raw; do
    fmt=raw
    [[ $src == *.qcow2 ]] && fmt=qcow2
    for sparse in default 0 dedup; do
      what="$name <- $src (-S $sparse)"
      args=()
      [ "$sparse" = 0 ] && args=(-S 0)
      if [ "$sparse" = dedup ]; then
        [[ $opts == compat=0.10* ]] && continue  # refused: checked below
        args=(-o dedup=sha256)
      fi
      new_target q.qcow2 "$opts" "$backing"
      cp q.qcow2 ref.qcow2
      run "$QDEDUP" convert -n -f "$fmt" -O qcow2 "${args[@]}" "$src" q.qcow2
      expect_status 0 "$what: qdedup convert -n"
      run qemu-img convert -n -f "$fmt" -O qcow2 "$src" ref.qcow2
      expect_status 0 "$what: qemu-img convert -n"
      run qemu-img compare -f "$fmt" -F qcow2 "$src" q.qcow2
      expect_status 0 "$what: qemu-img compare source target"
      run qemu-img compare -f qcow2 -F qcow2 ref.qcow2 q.qcow2
      expect_status 0 "$what: the same guest data as qemu-img's convert -n"
      expect_check_clean q.qcow2 "$what"
    done
  done
done

# dedup into a version 2 target is refused before anything is written: a v2 header has
# no autoclear field for the index's bit.
new_target v2.qcow2 compat=0.10 base.qcow2
cp v2.qcow2 v2.orig
run "$QDEDUP" convert -n -O qcow2 -o dedup=sha256 src.raw v2.qcow2
expect_error "dedup into a v2 target"
expect_err_has "compat=1.1" "dedup into a v2 target"
if cmp -s v2.qcow2 v2.orig; then pass; else fail "dedup into a v2 target changed it"; fi
run qemu-img info v2.qcow2
expect_status 0 "qemu-img opens the v2 target"

# A source that ends inside a cluster of a larger target (2 MiB over 1 MiB + 512 bytes):
# the cluster's bytes past the source's end keep what the target showed (its own data or
# its backing file's), as with qemu-img.
head -c $((MiB + 512)) /dev/urandom >part.raw
head -c $((MiB + 512)) /dev/zero >zpart.raw
make_image base2.qcow2 compat=1.1 2M
qio base2.qcow2 "write -P 0x44 0 2M"
for opts in compat=0.10 compat=1.1 compat=1.1,extended_l2=on; do
  for src in part.raw zpart.raw; do
    for backing in "" base2.qcow2; do
      what="partial last cluster: $opts, $src, backing '${backing}'"
      o=$opts
      [ -n "$backing" ] && o="$o,backing_file=$backing,backing_fmt=qcow2"
      make_image big.qcow2 "$o" 2M
      qio big.qcow2 "write -P 0x55 1M 64k"
      cp big.qcow2 bigref.qcow2
      run "$QDEDUP" convert -n -f raw -O qcow2 "$src" big.qcow2
      expect_status 0 "$what: qdedup convert -n"
      run qemu-img convert -n -f raw -O qcow2 "$src" bigref.qcow2
      expect_status 0 "$what: qemu-img convert -n"
      run qemu-img compare -f qcow2 -F qcow2 bigref.qcow2 big.qcow2
      expect_status 0 "$what: the same guest data as qemu-img's convert -n"
      expect_check_clean big.qcow2 "$what"
    done
  done
done

finish
