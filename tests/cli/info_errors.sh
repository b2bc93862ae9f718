#!/usr/bin/env bash
# `qdedup info` on files that are not (valid) images: one "qdedup: FILE: ..." line and
# exit 1. And on a raw file: the same facts as qemu-img.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img jq

qemu-img create -q -f qcow2 real.qcow2 1G
head -c 100 real.qcow2 >trunc.qcow2
head -c 71 real.qcow2 >short.qcow2
: >empty
head -c 65536 /dev/urandom >garbage
mkdir dir

# info_fails FILE [info args...]: the error names FILE.
info_fails() {
  local file=$1
  shift
  local sum_before=""
  [ -f "$file" ] && sum_before=$(sha256sum "$file")
  run "$QDEDUP" info "$@" "$file"
  local what="info $* $file"
  expect_error "$what"
  expect_err_has "qdedup: $file: " "$what"
  if [ -n "$sum_before" ]; then
    expect_eq "$sum_before" "$(sha256sum "$file")" "$what: file unchanged"
  fi
}

info_fails missing
info_fails missing --output=json
info_fails dir
info_fails dir -f raw
info_fails dir -f qcow2
info_fails empty -f qcow2
info_fails garbage -f qcow2
info_fails trunc.qcow2
info_fails trunc.qcow2 -f qcow2
info_fails short.qcow2
info_fails trunc.qcow2 --output=json
info_fails real.qcow2 -f vmdk
# Bad magic, seen as what it claims to be with -f qcow2.
printf 'QFI\xfa' | dd of=garbage conv=notrunc status=none
info_fails garbage -f qcow2

# An empty file without -f is a raw image of size 0, as for qemu-img.
run "$QDEDUP" info --output=json empty
expect_status 0 "info empty"
expect_eq "0 raw" "$(jq -r '"\(.["virtual-size"]) \(.format)"' "$out")" "info empty"

# Raw files: the human form names the format; the JSON has qemu-img's keys and values.
head -c 1000000 /dev/urandom >disk.raw
truncate -s 3M sparse.raw
for f in disk.raw sparse.raw empty; do
  run "$QDEDUP" info "$f"
  expect_status 0 "info $f"
  expect_out_has "file format: raw" "info $f"
  expect_out_has "image: $f" "info $f"
  run qemu-img info --output=json "$f"
  theirs=$(json_sans_actual_size "$out")
  run "$QDEDUP" info --output=json "$f"
  expect_status 0 "info --output=json $f"
  expect_eq "$theirs" "$(json_sans_actual_size "$out")" "info --output=json $f vs qemu-img"
  expect_eq "$(jq -r 'keys | join(" ")' <(qemu-img info --output=json "$f"))" \
    "$(jq -r 'keys | join(" ")' "$out")" "info --output=json $f: the same keys as qemu-img"
done
# The human form matches qemu-img's line for line (disk size aside).
run "$QDEDUP" info disk.raw
expect_eq "$(qemu-img info disk.raw | grep -v '^disk size:')" "$(grep -v '^disk size:' "$out")" \
  "info disk.raw: human form vs qemu-img"

finish
