#!/usr/bin/env bash
# qdedup and QEMU respect each other's image locks (QEMU's OFD byte locks, see
# QCOW2-NOTES.md section 5):
#   (a) while qemu-io has the image open read-write, qdedup neither writes it (testtool
#       write, create over it) nor reads it without -U, and `info -U` works; while qemu-io
#       has it open read-only, qdedup may read it but not write it;
#   (b) while qdedup holds it for writing (testtool hold), qemu-io cannot write it and
#       qemu-img info fails without -U and works with it.
# shellcheck source=tests/lib/interop.bash
source "${QDEDUP_TESTS:-$(dirname "$0")/..}/lib/interop.bash"

mkdir work && cd work || exit 1
qemu_rw='' qemu_ro='' holder=''  # pids, set by bg_start
make_image img.qcow2 cluster_size=65536 4M
qio img.qcow2 "write -P 0x5a 0 100k"
model_from_image() {
  rm -f model.raw
  qemu-img convert -f qcow2 -O raw img.qcow2 model.raw
}
model_from_image

# True once some process holds QEMU's lock byte $1 (101: "has write", 201: "forbids
# write") on img.qcow2. Read from /proc/locks, where adjacent bytes show as one range:
# probing with qemu-img or qemu-io would take locks itself and could make the process
# under test fail to start.
# shellcheck disable=SC2317  # called through wait_for's eval
byte_locked() {
  awk -v ino=":$(stat -c %i img.qcow2)" -v b="$1" '
    $2 == "OFDLCK" && substr($6, length($6) - length(ino) + 1) == ino && $7 <= b && b <= $8 {
      found = 1
    }
    END { exit !found }' /proc/locks
}

# ---- (a) qemu-io has the image open read-write ----
bg_start qemu_rw qemu-io -f qcow2 img.qcow2 -c 'sleep 600000'
if ! wait_for "byte_locked 101" 20; then
  fail "qemu-io did not lock the image: $(cat "$TEST_TMP/qemu_rw.err")"
fi
sum=$(sha256sum img.qcow2)

run "$TT" write img.qcow2 0 512 0x11
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then pass; else fail "testtool write under qemu-io: exit $rc"; fi
expect_err_has "lock" "testtool write under qemu-io"

run "$TT" link img.qcow2 5 0
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then pass; else fail "testtool link under qemu-io: exit $rc"; fi
expect_err_has "lock" "testtool link under qemu-io"

run "$QDEDUP" info img.qcow2
expect_error "qdedup info under qemu-io"
expect_err_has "lock" "qdedup info under qemu-io"
run "$QDEDUP" info --output=json img.qcow2
expect_error "qdedup info --output=json under qemu-io"

run "$QDEDUP" create -f qcow2 img.qcow2 1M
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then pass; else fail "qdedup create over the image: exit $rc"; fi
expect_err_has "lock" "qdedup create over an image in use"

expect_eq "$(sha256sum img.qcow2)" "$sum" "the image in use is unchanged"
expect_eq "$(ls -A)" "$(printf 'img.qcow2\nmodel.raw')" "nothing left beside the image"

# -U: qdedup reads what qemu-img -U reads.
run "$QDEDUP" info -U img.qcow2
expect_status 0 "qdedup info -U under qemu-io"
expect_out_has "image: img.qcow2" "qdedup info -U under qemu-io"
expect_info_same "info -U under qemu-io" -U img.qcow2

bg_stop "$qemu_rw"
if wait_for '! byte_locked 101' 20; then pass; else fail "the lock outlived qemu-io"; fi

# Once qemu-io is gone the same write works.
run "$TT" write img.qcow2 1000 512 0x11
expect_status 0 "testtool write after qemu-io exited"
model_write model.raw 1000 512 0x11
expect_check_clean img.qcow2 "after the write"
expect_data_is img.qcow2 model.raw "after the write"

# ---- (a') qemu-io has the image open read-only: readers share, writers wait ----
bg_start qemu_ro qemu-io -r -f qcow2 img.qcow2 -c 'sleep 600000'
if ! wait_for "byte_locked 201" 20; then
  fail "read-only qemu-io did not lock the image: $(cat "$TEST_TMP/qemu_ro.err")"
fi
sum=$(sha256sum img.qcow2)
run "$TT" write img.qcow2 0 512 0x22
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then pass; else fail "testtool write under a reader: exit $rc"; fi
expect_err_has "lock" "testtool write under a reader"
expect_eq "$(sha256sum img.qcow2)" "$sum" "the image a reader has open is unchanged"
expect_info_same "info while a reader has the image open" img.qcow2
run "$TT" dump img.qcow2 dump.raw
expect_status 0 "testtool dump while a reader has the image open"
run cmp model.raw dump.raw
expect_status 0 "data read while a reader has the image open"
bg_stop "$qemu_ro"

# ---- (b) qdedup holds the image for writing ----
bg_start holder "$TT" hold img.qcow2 60
if wait_for "grep -qx locked '$TEST_TMP/holder.out'" 20; then
  pass
else
  fail "testtool hold did not print 'locked': $(cat "$TEST_TMP/holder.err")"
fi
sum=$(sha256sum img.qcow2)

run qemu-io -f qcow2 -c 'write 0 512' img.qcow2
if [ "$rc" -ne 0 ]; then pass; else fail "qemu-io wrote an image qdedup holds"; fi
if grep -qF 'Failed to get "write" lock' "$out" "$err"; then
  pass
else
  fail "qemu-io under qdedup's hold: no 'Failed to get \"write\" lock': $(cat "$out" "$err")"
fi

run qemu-img info img.qcow2
expect_status 1 "qemu-img info under qdedup's hold"
expect_err_has 'Failed to get shared "write" lock' "qemu-img info under qdedup's hold"
run qemu-img check img.qcow2
expect_status 1 "qemu-img check under qdedup's hold"
expect_err_has 'Failed to get shared "write" lock' "qemu-img check under qdedup's hold"

run qemu-img info -U img.qcow2
expect_status 0 "qemu-img info -U under qdedup's hold"
expect_out_has "image: img.qcow2" "qemu-img info -U under qdedup's hold"
# A read-only QEMU user forbids writers, so it cannot start either, unless it shares.
run qemu-io -r -f qcow2 -c 'read -P 0x5a 0 512' img.qcow2
if [ "$rc" -ne 0 ] && grep -qF 'Failed to get shared "write" lock' "$out" "$err"; then
  pass
else
  fail "read-only qemu-io under qdedup's hold: exit $rc, $(cat "$out" "$err")"
fi
run qemu-io -r -U -f qcow2 -c 'read -P 0x5a 0 512' img.qcow2
expect_status 0 "qemu-io -r -U under qdedup's hold"
# A second qdedup writer is turned away too.
run "$TT" write img.qcow2 0 512 0x33
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then pass; else fail "second qdedup writer: exit $rc"; fi
expect_err_has "lock" "second qdedup writer"
expect_eq "$(sha256sum img.qcow2)" "$sum" "the image qdedup holds is unchanged"

bg_stop "$holder"
run qemu-io -f qcow2 -c 'write -P 0x44 0 512' img.qcow2
expect_status 0 "qemu-io write after the holder exited"
model_write model.raw 0 512 0x44
expect_check_clean img.qcow2 "after the holder exited"
expect_data_is img.qcow2 model.raw "after the holder exited"

finish
