#!/usr/bin/env bash
# `qdedup check`: qemu-img's exit codes (0, 1, 2, 3, 63), its human and JSON output on
# the same image, the dedup object, refused argument combinations, and bad files
# answered with one "qdedup: FILE: ..." line without touching them.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img qemu-io jq python3

qemu-img create -q -f qcow2 clean.qcow2 64M
qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' clean.qcow2 >/dev/null
qemu-img snapshot -c s1 clean.qcow2
qemu-io -c 'write -P 3 0 64k' clean.qcow2 >/dev/null

# Patches a 16-bit refcount of host cluster N (the first refcount block covers it).
set_refcount() {
  python3 - "$1" "$2" "$3" <<'EOF'
import struct, sys
path, cluster, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'r+b') as f:
    f.seek(48); reftable = struct.unpack('>Q', f.read(8))[0]
    f.seek(reftable); block = struct.unpack('>Q', f.read(8))[0] & ~0x1ff
    f.seek(block + 2 * cluster); f.write(struct.pack('>H', value))
EOF
}
# Host cluster of guest cluster N (64 KiB clusters, first L2 table).
host_cluster() {
  python3 - "$1" "$2" <<'EOF'
import struct, sys
path, gc = sys.argv[1], int(sys.argv[2])
with open(path, 'rb') as f:
    f.seek(40); l1 = struct.unpack('>Q', f.read(8))[0]
    f.seek(l1); l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2 + 8 * gc); e = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
print(e // 65536)
EOF
}

# check_like_qemu FILE WHAT: same exit code, same stdout, same JSON keys and values.
check_like_qemu() {
  local file=$1 what=$2 qrc drc
  qemu-img check "$file" >q.out 2>q.err
  qrc=$?
  run "$QDEDUP" check "$file"
  drc=$rc
  expect_eq "$qrc" "$drc" "$what: exit code"
  expect_eq "$(cat q.out)" "$(cat "$out")" "$what: stdout"
  expect_eq "$(grep -E '^(ERROR|Leaked)' q.err | sort)" "$(grep -E '^(ERROR|Leaked)' "$err" | sort)" \
    "$what: findings on stderr"
  qemu-img check --output=json "$file" 2>/dev/null | jq -S . >q.json
  "$QDEDUP" check --output=json "$file" 2>/dev/null | jq -S 'del(.dedup)' >d.json
  expect_eq "$(cat q.json)" "$(cat d.json)" "$what: JSON"
}

check_like_qemu clean.qcow2 "clean image"
expect_status 0 "clean image"
run "$QDEDUP" check --output=json clean.qcow2
expect_eq '{"index":"absent"}' "$(jq -c .dedup "$out")" "clean image: dedup object"

# A leak: one more cluster at the end of the file, with refcount 1.
cp clean.qcow2 leak.qcow2
size=$(stat -c %s leak.qcow2)
truncate -s $((size + 65536)) leak.qcow2
set_refcount leak.qcow2 $((size / 65536)) 1
check_like_qemu leak.qcow2 "leaked cluster"
expect_status 3 "leaked cluster"

cp clean.qcow2 low.qcow2
shared=$(host_cluster low.qcow2 1)
set_refcount low.qcow2 "$shared" 1
check_like_qemu low.qcow2 "refcount too low"
expect_status 2 "refcount too low"

# -q: nothing on stdout, the exit code stays.
run "$QDEDUP" check -q low.qcow2
expect_status 2 "check -q"
expect_eq "" "$(cat "$out")" "check -q: stdout"

# -r leaks on a leak: fixed, reported as qemu-img does, then clean.
cp leak.qcow2 leak2.qcow2
run "$QDEDUP" check -r leaks leak.qcow2
expect_status 0 "check -r leaks"
expect_out_has "The following inconsistencies were found and repaired:" "check -r leaks"
expect_out_has "    1 leaked clusters" "check -r leaks"
qemu-img check -r leaks leak2.qcow2 >q.out 2>/dev/null
expect_eq "$(cat q.out)" "$(cat "$out")" "check -r leaks: the same report as qemu-img"
run "$QDEDUP" check --output=json leak.qcow2
expect_status 0 "after -r leaks"

# -r all with JSON: the fixed counts.
run "$QDEDUP" check -r all --output=json low.qcow2
expect_status 0 "check -r all"
expect_eq "1" "$(jq '."corruptions-fixed"' "$out")" "check -r all: corruptions-fixed"
run qemu-img check low.qcow2
expect_status 0 "qemu-img check after qdedup check -r all"

# Refcount zero for a used cluster: -r leaks cannot rebuild (exit 1, unchanged), -r all can.
cp clean.qcow2 zero.qcow2
set_refcount zero.qcow2 "$(host_cluster zero.qcow2 2)" 0
sum=$(sha256sum zero.qcow2)
run "$QDEDUP" check -r leaks zero.qcow2
expect_status 1 "-r leaks needing a rebuild"
expect_err_has "ERROR need to rebuild refcount structures" "-r leaks needing a rebuild"
expect_eq "$sum" "$(sha256sum zero.qcow2)" "-r leaks needing a rebuild: image unchanged"
run "$QDEDUP" check -r all zero.qcow2
expect_status 0 "-r all rebuilding"
expect_err_has "Rebuilding refcount structure" "-r all rebuilding"
run qemu-img compare clean.qcow2 zero.qcow2
expect_status 0 "-r all rebuilding: guest data kept"

# Raw images have no checks (63), as with qemu-img.
head -c 1M /dev/zero >disk.raw
run "$QDEDUP" check disk.raw
expect_status 63 "raw image"
run "$QDEDUP" check -f raw clean.qcow2
expect_status 63 "-f raw"

# A dedup image: the dedup object, and a stale index after a stock write.
head -c 256k /dev/urandom >half.raw
cat half.raw half.raw >dup.raw
"$QDEDUP" convert -O qcow2 -o dedup=sha256 dup.raw dup.qcow2
run "$QDEDUP" check --verify-hashes --output=json dup.qcow2
expect_status 0 "dedup image"
expect_eq '"valid" 64 64 0' "$(jq -r '.dedup | "\"\(.index)\" \(.entries) \(."verified-clusters") \(.errors)"' "$out")" \
  "dedup image: dedup object"
qemu-io -c 'write -P 0xab 0 4k' dup.qcow2 >/dev/null
run "$QDEDUP" check --output=json dup.qcow2
expect_eq "stale" "$(jq -r .dedup.index "$out")" "after a stock write: index stale"
run "$QDEDUP" check -r all dup.qcow2
expect_status 0 "check -r all on a stale index"
expect_out_has "Dedup index rebuilt." "check -r all on a stale index"
run "$QDEDUP" check --verify-hashes --output=json dup.qcow2
expect_eq "valid 0" "$(jq -r '"\(.dedup.index) \(.dedup.errors)"' "$out")" "after the rebuild"
run qemu-img check dup.qcow2
expect_status 0 "qemu-img check after the rebuild"

# Refused combinations and bad files: one line, exit 1, file untouched.
run "$QDEDUP" check -r all -U clean.qcow2
expect_error "-r with -U"
run "$QDEDUP" check -r sometimes clean.qcow2
expect_status 1 "-r sometimes"
run "$QDEDUP" check missing.qcow2
expect_error "missing file"
expect_err_has "qdedup: missing.qcow2: " "missing file"
head -c 100 clean.qcow2 >trunc.qcow2
sum=$(sha256sum trunc.qcow2)
run "$QDEDUP" check -r all trunc.qcow2
expect_error "truncated header"
expect_err_has "qdedup: trunc.qcow2: " "truncated header"
expect_eq "$sum" "$(sha256sum trunc.qcow2)" "truncated header: file unchanged"

finish
