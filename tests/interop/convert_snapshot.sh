#!/usr/bin/env bash
# `qdedup convert -l SNAPSHOT`: the source's internal snapshot is read instead of its
# active state, as qemu-img convert -l reads it (QEMU's qcow2_snapshot_load_tmp): by id
# or else by name, or `snapshot.id=` / `snapshot.name=`; the target has the size of the
# source's active state (a snapshot taken before a resize has a shorter L1 table: the rest
# reads as zeros). Each case runs both tools: raw targets are identical byte for byte,
# qcow2 targets compare identical, have the same allocation map and check clean. The
# source is left unchanged. Refusals: a raw source, a snapshot that is not there, -l with
# several sources, a key -l does not take.
source "${QDEDUP_TESTS:?set QDEDUP_TESTS to the tests directory}/lib/interop.bash" || exit 1

# 4 KiB clusters: an L2 table covers 2 MiB, so the L1 table grows with the resize.
# Snapshot 1 "sn1": data A. Snapshot 2 "1" (a name that is also the first id): data B,
# a discard, a zero cluster. Snapshot 3 "sn3": taken after a resize to 12 MiB. Then the
# active state changes again.
make_image src.qcow2 cluster_size=4k 8M
qio src.qcow2 "write -P 0x11 0 1M" "write -P 0x12 4M 64k"
run qemu-img snapshot -c sn1 src.qcow2
qio src.qcow2 "write -P 0x21 512k 1M" "discard 4M 64k" "write -z 6M 128k" "write -P 0x22 7M 4k"
run qemu-img snapshot -c 1 src.qcow2
run qemu-img resize -q src.qcow2 12M
qio src.qcow2 "write -P 0x31 10M 64k"
run qemu-img snapshot -c sn3 src.qcow2
qio src.qcow2 "write -P 0x41 0 4M" "write -P 0x42 11M 1M"
sum_before=$(md5sum <src.qcow2)

for sel in 1 sn1 2 snapshot.name=1 snapshot.id=2 snapshot.id=1,snapshot.name=sn1 sn3 3; do
  rm -f want.raw got.raw want.qcow2 got.qcow2
  run qemu-img convert -l "$sel" -O raw src.qcow2 want.raw
  expect_status 0 "qemu-img convert -l $sel"
  run "$QDEDUP" convert -l "$sel" -O raw src.qcow2 got.raw
  expect_status 0 "convert -l $sel -O raw"
  if cmp -s want.raw got.raw; then pass; else
    fail "convert -l $sel -O raw: not qemu-img's data ($(cmp want.raw got.raw 2>&1 | head -1))"
  fi
  qemu-img convert -l "$sel" -O qcow2 src.qcow2 want.qcow2
  run "$QDEDUP" convert -l "$sel" -O qcow2 src.qcow2 got.qcow2
  expect_status 0 "convert -l $sel -O qcow2"
  expect_check_clean got.qcow2 "convert -l $sel -O qcow2"
  run qemu-img compare want.qcow2 got.qcow2
  expect_status 0 "convert -l $sel -O qcow2: qemu-img's data"
  expect_eq "$(alloc_map want.qcow2)" "$(alloc_map got.qcow2)" "convert -l $sel -O qcow2: allocation map"
  if cmp -s want.qcow2 got.qcow2; then pass; else fail "convert -l $sel -O qcow2: not qemu-img's file"; fi
done
# Not the active state: snapshot 1 holds data A where the active state has 0x41.
expect_eq "$(qemu-io -f raw -c 'read -q -P 0x11 0 512k' want.raw 2>&1; echo ok)" ok \
  "the case tells: the snapshot's data is not the active state's"
expect_eq "$sum_before" "$(md5sum <src.qcow2)" "the source is unchanged"

# With dedup and -B (the snapshot's own backing file is the image's).
run "$QDEDUP" convert -l sn1 -O qcow2 -o dedup=sha256 src.qcow2 got.qcow2
expect_status 0 "convert -l sn1 -o dedup=sha256"
expect_check_clean got.qcow2 "convert -l sn1 -o dedup=sha256"
qemu-img convert -l sn1 -O raw src.qcow2 want.raw
run qemu-img compare -f raw -F qcow2 want.raw got.qcow2
expect_status 0 "convert -l sn1 -o dedup=sha256: the snapshot's data"
make_image base.qcow2 cluster_size=64k 8M
qio base.qcow2 "write -P 0x51 0 8M"
run qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qio top.qcow2 "write -P 0x61 1M 64k"
run qemu-img snapshot -c s top.qcow2
qio top.qcow2 "write -P 0x62 2M 64k"
for b in "" "-B base.qcow2 -F qcow2"; do
  # shellcheck disable=SC2086 # $b is several options
  qemu-img convert -l s -O qcow2 $b top.qcow2 want.qcow2
  # shellcheck disable=SC2086
  run "$QDEDUP" convert -l s -O qcow2 $b top.qcow2 got.qcow2
  expect_status 0 "convert -l s $b (source with a backing file)"
  run qemu-img compare want.qcow2 got.qcow2
  expect_status 0 "convert -l s $b: qemu-img's data"
  expect_eq "$(alloc_map want.qcow2)" "$(alloc_map got.qcow2)" "convert -l s $b: allocation map"
done

# Refusals: one line, no target.
qemu-img create -q -f raw r.raw 1M
refuse() {
  local what=$1 why=$2
  shift 2
  rm -f x.raw
  run "$QDEDUP" convert "$@"
  expect_error "convert $what"
  expect_err_has "$why" "convert $what: the reason"
  if [ ! -e x.raw ]; then pass; else fail "convert $what: a target was left"; fi
}
refuse "-l of a raw source" "does not support temporarily loading internal snapshots" \
  -l sn1 -f raw r.raw x.raw
refuse "-l nope" "Failed to load snapshot: Can't find snapshot" -l nope src.qcow2 x.raw
refuse "-l snapshot.id=1,snapshot.name=1" "Can't find snapshot" \
  -l snapshot.id=1,snapshot.name=1 src.qcow2 x.raw
refuse "-l with two sources" "No support for concatenating multiple snapshot" \
  -l sn1 src.qcow2 src.qcow2 x.raw
refuse "-l snapshot.foo=1" "Invalid parameter 'snapshot.foo'" -l snapshot.foo=1 src.qcow2 x.raw

finish
