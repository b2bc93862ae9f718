#!/usr/bin/env bash
# Hostile qcow2 files: each is answered with a one-line error and exit 1, within 256 MiB of
# address space and 10 seconds, without printing the file's bytes raw to the terminal.
# The files are images made by qemu-img, patched field by field (offsets from
# src/qcow2/format.h; layout in QEMU's docs/interop/qcow2.txt, "Header").
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img python3
: "${QDEDUP_TESTTOOL:?QDEDUP_TESTTOOL must name qdedup-testtool}"

# put FILE OFFSET HEX: writes the bytes HEX at OFFSET, in place.
put() {
  python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0))
    f.write(bytes.fromhex(sys.argv[3]))
' "$1" "$2" "$3"
}
be32() { printf '%08x' "$1"; }
be64() { printf '%016x' "$1"; }
# Hex of STRING (printf escapes allowed), NUL padded to LEN bytes.
padded() {
  python3 -c '
import sys
s = sys.argv[1].encode().decode("unicode_escape").encode("latin-1")
print(s.ljust(int(sys.argv[2]), b"\0").hex())
' "$1" "$2"
}

# Header fields (byte offsets, as in src/qcow2/format.h).
OFF_BACKING_FILE_OFFSET=8
OFF_BACKING_FILE_SIZE=16
OFF_CLUSTER_BITS=20
OFF_L1_SIZE=36
OFF_REFCOUNT_TABLE_CLUSTERS=56
OFF_NB_SNAPSHOTS=60
OFF_SNAPSHOTS_OFFSET=64
OFF_INCOMPATIBLE_FEATURES=72
OFF_HEADER_LENGTH=100
# qemu-img 7.2 (64 KiB clusters) writes the feature name table extension at 0x70: 8 bytes
# of type and length, then eight 48-byte entries from 0x78 (type, bit, 46-byte name).
FEATURE_TABLE=0x78
feature_entry() { echo $((FEATURE_TABLE + 48 * $1)); }

qemu-img create -q -f qcow2 base.qcow2 1M
qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 1M
fresh() { cp "${2:-base.qcow2}" "$1"; }

# info_refuses FILE KEY [ARGS...]: `qdedup info ARGS FILE` fails within limits, naming FILE
# and KEY, prints no raw control character, and leaves FILE as it was.
info_refuses() {
  local file=$1 key=$2
  shift 2
  local before
  before=$(sha256sum "$file")
  run_limited "$QDEDUP" info "$@" "$file"
  local what="info $* $file ($key)"
  expect_eq "$before" "$(sha256sum "$file")" "$what: the file is unchanged"
  expect_error "$what"
  # Along a backing chain, the error may name the member where the problem lies.
  [[ " $* " == *" --backing-chain "* ]] || expect_err_has "qdedup: $file: " "$what"
  expect_err_has "$key" "$what"
  if LC_ALL=C grep -q '[[:cntrl:]]' <(tr -d '\n' <"$err"); then
    fail "$what: raw control characters on stderr"
  else
    pass
  fi
  [[ " $* " == *" --backing-chain "* ]] || metrics_bounded "$file"
}

# metrics_bounded FILE: `qdedup metrics` on FILE ends within the same limits, with a
# report (0) or one error line (1), and leaves FILE as it was. (Some files check only
# reports findings about: metrics then measures what there is.)
metrics_bounded() {
  local file=$1 before
  before=$(sha256sum "$file")
  run_limited "$QDEDUP" metrics "$file"
  local what="metrics $file"
  if [ "$rc" -eq 0 ]; then pass; else expect_error "$what"; fi
  expect_eq "$before" "$(sha256sum "$file")" "$what: the file is unchanged"
}

# dump_refuses FILE KEY: the testtool's `dump`, which reads the guest disk through the
# backing chain, fails within limits and leaves FILE as it was.
dump_refuses() {
  local file=$1 key=$2 before
  before=$(sha256sum "$file")
  run_limited "$QDEDUP_TESTTOOL" dump "$file" dump.out
  local what="testtool dump $file ($key)"
  expect_eq "$before" "$(sha256sum "$file")" "$what: the file is unchanged"
  if [ "$rc" -eq 124 ]; then
    fail "$what: timed out (hang?)"
  elif [ "$rc" -ne 1 ]; then
    fail "$what: exit status $rc, expected 1"
  else
    pass
  fi
  expect_err_has "$key" "$what"
  rm -f dump.out
}

# check_refuses FILE KEY: `qdedup check` and `qdedup check -r all` fail within limits
# with one line naming FILE and KEY, and neither writes to FILE.
check_refuses() {
  local file=$1 key=$2 before repair
  before=$(sha256sum "$file")
  for repair in "" "-r all"; do
    # shellcheck disable=SC2086
    run_limited "$QDEDUP" check $repair "$file"
    local what="check $repair $file ($key)"
    expect_error "$what"
    expect_err_has "qdedup: $file: " "$what"
    expect_err_has "$key" "$what"
    expect_eq "$before" "$(sha256sum "$file")" "$what: the file is unchanged"
  done
  metrics_bounded "$file"
}

# repairable FILE KEY: `qdedup check FILE` refuses it as check_refuses requires, and
# `check -r all` repairs it as qemu-img check -r all reads such a table (entries past
# QEMU's limits dropped, the rest read as zeros past the end of the file), within limits,
# to an image that qemu-img check finds clean.
repairable() {
  local file=$1 key=$2 before
  before=$(sha256sum "$file")
  run_limited "$QDEDUP" check "$file"
  expect_error "check $file ($key)"
  expect_err_has "$key" "check $file ($key)"
  expect_eq "$before" "$(sha256sum "$file")" "check $file ($key): the file is unchanged"
  cp "$file" "repaired-$file"
  run_limited "$QDEDUP" check -r all "repaired-$file"
  expect_status 0 "check -r all $file ($key)"
  run qemu-img check "repaired-$file"
  expect_status 0 "check -r all $file ($key): qemu-img check of the result"
  metrics_bounded "$file"
}

# An L1 table of 2^31 entries (16 GiB) claimed by a file of 1 KiB, and by a normal one.
fresh l1-tiny.qcow2 small.qcow2
truncate -s 1024 l1-tiny.qcow2
put l1-tiny.qcow2 $OFF_L1_SIZE "$(be32 0x80000000)"
info_refuses l1-tiny.qcow2 "L1"
info_refuses l1-tiny.qcow2 "L1" --output=json
fresh l1-big.qcow2
put l1-big.qcow2 $OFF_L1_SIZE "$(be32 0x80000000)"
info_refuses l1-big.qcow2 "L1"
dump_refuses l1-big.qcow2 "L1"
fresh l1-max.qcow2
put l1-max.qcow2 $OFF_L1_SIZE "$(be32 0xffffffff)"
info_refuses l1-max.qcow2 "L1"

# A refcount table of 2^40 bytes (2^24 clusters of 64 KiB), and of 2^32 - 1 clusters.
fresh reft.qcow2
put reft.qcow2 $OFF_REFCOUNT_TABLE_CLUSTERS "$(be32 0x01000000)"
info_refuses reft.qcow2 "reference count table"
dump_refuses reft.qcow2 "reference count table"
run_limited "$QDEDUP_TESTTOOL" write reft.qcow2 0 512 1
expect_status 1 "testtool write on a 2^40-byte refcount table"
put reft.qcow2 $OFF_REFCOUNT_TABLE_CLUSTERS "$(be32 0xffffffff)"
info_refuses reft.qcow2 "reference count table"

# Snapshot tables: 65537 entries is over QEMU's limit; 65536 entries claimed by a tiny file
# (one cluster holding 1000 valid entries, then the end of the file) must end in an error
# once the file runs out, not in a hang or in 65536 allocations (check -r all repairs both,
# where qemu-img check -r all marks the first corrupt and fails).
fresh snap-over.qcow2
put snap-over.qcow2 $OFF_NB_SNAPSHOTS "$(be32 65537)"
put snap-over.qcow2 $OFF_SNAPSHOTS_OFFSET "$(be64 0x30000)"
info_refuses snap-over.qcow2 "snapshot"
fresh snap-many.qcow2
python3 -c '
import struct, sys
# Fixed part: l1_table_offset, l1_size, id_size, name_size, date_sec, date_nsec,
# vm_clock_nsec, vm_state_size, extra_data_size; then 16 bytes of extra data (v3).
entry = struct.pack(">QIHHIIQII", 0, 0, 0, 0, 0, 0, 0, 0, 16) + bytes(16)
with open(sys.argv[1], "r+b") as f:
    f.seek(0x40000)
    f.write(entry * 1000)
' snap-many.qcow2
put snap-many.qcow2 $OFF_NB_SNAPSHOTS "$(be32 65536)"
put snap-many.qcow2 $OFF_SNAPSHOTS_OFFSET "$(be64 0x40000)"
info_refuses snap-many.qcow2 "snapshot"
info_refuses snap-many.qcow2 "snapshot" --output=json
dump_refuses snap-many.qcow2 "snapshot"

# Other header fields out of range.
fresh hdr.qcow2
put hdr.qcow2 $OFF_HEADER_LENGTH "$(be32 0xffffffff)"
info_refuses hdr.qcow2 "header_length"
fresh cbits.qcow2
put cbits.qcow2 $OFF_CLUSTER_BITS "$(be32 63)"
info_refuses cbits.qcow2 "cluster"
fresh bfo.qcow2
put bfo.qcow2 $OFF_BACKING_FILE_OFFSET "$(be64 0xfffffffffffffff0)"
put bfo.qcow2 $OFF_BACKING_FILE_SIZE "$(be32 0xffffffff)"
info_refuses bfo.qcow2 "backing"
fresh ext.qcow2
put ext.qcow2 0x74 "$(be32 0xffffffff)"  # length of the feature table extension
info_refuses ext.qcow2 "extension"

# A backing chain that loops: a -> b -> a, and c -> c. `info` alone reads one image and
# succeeds, as qemu-img's does; following the chain must stop.
qemu-img create -q -f qcow2 b.qcow2 1M
qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 a.qcow2
qemu-img rebase -u -b a.qcow2 -F qcow2 b.qcow2
qemu-img create -q -f qcow2 c.qcow2 1M
qemu-img rebase -u -b c.qcow2 -F qcow2 c.qcow2
run_limited "$QDEDUP" info a.qcow2
expect_status 0 "info a.qcow2 (backing loop, chain not followed)"
for img in a.qcow2 c.qcow2; do
  info_refuses $img "loop" --backing-chain
  info_refuses $img "loop" --backing-chain --output=json
  dump_refuses $img "loop"
done

# Backing files that are not regular files: reading the chain must refuse them, not
# read /dev/zero forever or block on a FIFO.
qemu-img create -q -f qcow2 -u -b /dev/zero -F raw zero.qcow2 1M
dump_refuses zero.qcow2 "not a regular file"
mkfifo fifo
qemu-img create -q -f qcow2 -u -b fifo -F raw fifo.qcow2 1M
dump_refuses fifo.qcow2 "not a regular file"
run_limited "$QDEDUP" info --backing-chain fifo.qcow2
if [ "$rc" -eq 124 ]; then fail "info --backing-chain fifo.qcow2: hangs on the FIFO"; else pass; fi

# Unknown incompatible feature bits, named in the image's feature table. Bit 5 with an
# all-NUL name: the error gives the bit's mask, as QEMU does ("Unknown incompatible
# feature: 20").
fresh feat-nul.qcow2
put feat-nul.qcow2 $OFF_INCOMPATIBLE_FEATURES "$(be64 0x20)"
put feat-nul.qcow2 "$(feature_entry 7)" "0005$(padded '' 46)"
info_refuses feat-nul.qcow2 "feature"
if grep -qE 'Unknown incompatible feature: 20$' "$err"; then
  pass
else
  fail "feat-nul.qcow2: the error does not name bit 5"
fi
dump_refuses feat-nul.qcow2 "feature"
# A 46-byte name without a terminating NUL: all of it, and nothing after it.
fresh feat-long.qcow2
put feat-long.qcow2 $OFF_INCOMPATIBLE_FEATURES "$(be64 0x20)"
put feat-long.qcow2 "$(feature_entry 6)" "0005$(padded "$(printf 'N%.0s' {1..46})" 46)"
info_refuses feat-long.qcow2 "$(printf 'N%.0s' {1..46})"
expect_err_lacks "$(printf 'N%.0s' {1..47})" "feat-long.qcow2"
expect_err_lacks "raw external data" "feat-long.qcow2: the name runs into the next entry"
# A name carrying a terminal escape sequence: printed escaped, never raw.
fresh feat-esc.qcow2
put feat-esc.qcow2 $OFF_INCOMPATIBLE_FEATURES "$(be64 0x40)"
put feat-esc.qcow2 "$(feature_entry 7)" "0006$(padded 'evil\x1b[31m' 46)"
info_refuses feat-esc.qcow2 'evil\x1b[31m'
info_refuses feat-esc.qcow2 'evil\x1b[31m' --output=json
dump_refuses feat-esc.qcow2 'evil\x1b[31m'
if LC_ALL=C grep -q $'\x1b' "$err"; then
  fail "feat-esc.qcow2: testtool printed a raw ESC"
else
  pass
fi

# A backing file name carrying an escape sequence: `info` shows it escaped.
qemu-img create -q -f qcow2 -u -b $'x\x1b[2Jy' -F raw bname.qcow2 1M
run_limited "$QDEDUP" info bname.qcow2
expect_status 0 "info bname.qcow2"
expect_out_has 'backing file: x\x1b[2Jy' "info bname.qcow2"
if LC_ALL=C grep -q $'\x1b' "$out"; then fail "info bname.qcow2: raw ESC on stdout"; else pass; fi
info_refuses bname.qcow2 'x\x1b[2Jy' --backing-chain

# The same files through check: refused at open, or (backing problems: check never
# opens backing files) checked within limits.
check_refuses l1-tiny.qcow2 "L1"
check_refuses l1-big.qcow2 "L1"
check_refuses reft.qcow2 "reference count table"
repairable snap-over.qcow2 "snapshot"
check_refuses hdr.qcow2 "header_length"
check_refuses cbits.qcow2 "cluster"
check_refuses feat-nul.qcow2 "feature"
check_refuses feat-esc.qcow2 'evil\x1b[31m'
for img in a.qcow2 c.qcow2 zero.qcow2 fifo.qcow2; do
  run_limited "$QDEDUP" check "$img"
  expect_status 0 "check $img (its backing file is not opened)"
done
repairable snap-many.qcow2 "snapshot"
# 65536 version 3 entries of 1024 bytes without extra data: exactly QEMU's 64 MiB. The
# repair would give each 24 bytes of extra data, which no longer fits: like qemu-img, it
# fails without writing the table, and no snapshot is lost (found by a review: the repair
# wrote the table anyway, and its next round dropped the 1501 entries past the limit).
qemu-img create -q -f qcow2 snap-full.qcow2 1M
python3 -c '
import struct, sys
entry = struct.pack(">QIHHIIQII", 0, 0, 0, 984, 0, 0, 0, 0, 0) + b"n" * 984
with open(sys.argv[1], "r+b") as f:
    f.seek(0x100000)
    f.write(entry * 65536)
    f.seek(60)
    f.write(struct.pack(">IQ", 65536, 0x100000))
' snap-full.qcow2
run_limited "$QDEDUP" check -r all snap-full.qcow2
expect_status 1 "check -r all snap-full.qcow2 (a table that would grow past 64 MiB)"
expect_eq yes "$(tail -n1 "$err" | grep -q '^qdedup: snap-full.qcow2: .*snapshot table' && echo yes)" \
  "check -r all snap-full.qcow2: the last line says why ($(tail -n1 "$err" | cut -c1-200))"
expect_eq 65536 "$(python3 -c '
import struct, sys
with open(sys.argv[1], "rb") as f:
    f.seek(60)
    print(struct.unpack(">I", f.read(4))[0])
' snap-full.qcow2)" "check -r all snap-full.qcow2: every snapshot kept"

finish
