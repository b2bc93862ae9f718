# Helpers for the interop tests (tests/interop/*.sh), which check qdedup against the
# real qemu-img and qemu-io. A test sources this file first; it sources common.bash
# (run, fail, pass, expect_*, finish, skip; the test runs in $TEST_TMP) and then:
#   - skips the test (exit 77) unless qemu-img, qemu-io, jq, python3 and the testtool exist;
#   - makes QDEDUP and QDEDUP_TESTTOOL absolute paths (the tests change directory);
#   - sets TT to the testtool;
#   - on exit, kills the background processes started with `bg_start` and still running.
#
#   qio IMG CMD...            qemu-io -f qcow2 IMG -c CMD -c CMD...; a failed command
#                             (exit != 0, or "failed"/"error" in its output) is a failure
#   make_image IMG OPTS SIZE  qemu-img create -f qcow2 -o OPTS IMG SIZE (quiet)
#   expect_check_clean IMG WHAT   qemu-img check: exit 0, no corruptions, leaks, errors
#   expect_info_same WHAT ARGS... qdedup info ARGS == qemu-img info ARGS, JSON (byte for
#                             byte, key order included) and human
#                             (expect_info_json_same / expect_info_human_same: one of them)
#   expect_data_same IMG WHAT     testtool dump IMG == qemu-img convert -O raw IMG
#   expect_data_is IMG MODEL WHAT the guest data of IMG (via qemu-img) == raw file MODEL
#   model_new MODEL SIZE / model_write MODEL OFF LEN BYTE   a raw model of guest data
#   bg_start VAR CMD...       start CMD in the background, its pid in $VAR, stdout in
#                             $TEST_TMP/VAR.out, stderr in $TEST_TMP/VAR.err
#   bg_stop PID               kill and reap a process started by bg_start
#   wait_for COND_CMD SECS    poll COND_CMD (a string for eval) until true or SECS pass
#   qcow2_peek IMG GUEST_OFF  "<host offset> <COPIED> <refcount>" of a guest cluster
# shellcheck shell=bash

# The tests change directory: make the binaries' paths absolute first.
for v in QDEDUP QDEDUP_TESTTOOL; do
  if [ -n "${!v:-}" ] && [[ ${!v} != /* ]]; then printf -v "$v" '%s' "$PWD/${!v}"; fi
done
# shellcheck source=tests/lib/common.bash
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

require_cmd qemu-img qemu-io jq python3 cmp sha256sum
: "${QDEDUP_TESTTOOL:?QDEDUP_TESTTOOL must name qdedup-testtool (run the tests through ctest)}"
[ -x "$QDEDUP_TESTTOOL" ] || skip "$QDEDUP_TESTTOOL is not built"

TT=$QDEDUP_TESTTOOL

# Background processes still running, killed on exit before the temp dir goes.
bg_pids=()
interop_cleanup() {
  local p
  for p in "${bg_pids[@]}"; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  rm -rf "$TEST_TMP"
}
trap interop_cleanup EXIT

bg_start() {
  local var=$1
  shift
  "$@" </dev/null >"$TEST_TMP/$var.out" 2>"$TEST_TMP/$var.err" &
  local pid=$!
  bg_pids+=("$pid")
  printf -v "$var" '%s' "$pid"
}

# Stops a process started by bg_start and reaps it.
bg_stop() {
  local p rest=()
  kill "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  for p in "${bg_pids[@]}"; do
    if [ "$p" != "$1" ]; then rest+=("$p"); fi
  done
  bg_pids=("${rest[@]}")
  return 0
}

wait_for() {
  local cond=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if eval "$cond"; then return 0; fi
    sleep 0.1
  done
  return 1
}

qio() {
  local img=$1 c args=()
  shift
  for c in "$@"; do args+=(-c "$c"); done
  last_cmd="qemu-io -f qcow2 $img ${args[*]}"
  qemu-io -f qcow2 "$img" "${args[@]}" </dev/null >"$out" 2>"$err"
  rc=$?
  if [ "$rc" -ne 0 ] || grep -qiE 'failed|error' "$out" "$err"; then
    fail "qemu-io on $img: $*"
    head -n 5 "$out" | sed 's/^/    /'
    return 1
  fi
  pass
}

make_image() {
  local img=$1 opts=$2 size=$3
  run qemu-img create -q -f qcow2 -o "$opts" "$img" "$size"
  expect_status 0 "qemu-img create -o $opts $img $size"
}

# qemu-img check must find nothing at all: exit 0, and its JSON report no corruptions,
# leaks or internal errors.
expect_check_clean() {
  local img=$1 what=$2
  run qemu-img check --output=json -f qcow2 "$img"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qemu-img check $img exit $rc"
    qemu-img check -f qcow2 "$img" 2>&1 | head -n 20 | sed 's/^/    /'
    return 1
  fi
  local bad
  bad=$(jq -r '[(.corruptions // 0), (.leaks // 0), (.["check-errors"] // 0)] | join(" ")' "$out")
  if [ "$bad" != "0 0 0" ]; then
    fail "$what: qemu-img check $img: corruptions/leaks/check-errors = $bad"
    return 1
  fi
  pass
}

# Runs `qdedup info ARGS` and `qemu-img info ARGS` (both with --output=json, then both in
# human form) and requires identical results. JSON is compared whole after jq -S, with
# actual-size included: both tools report st_blocks * 512 of the same unchanged file.
expect_info_same() {
  expect_info_json_same "$@"
  expect_info_human_same "$@"
}

expect_info_json_same() {
  local what=$1
  shift
  local q="$TEST_TMP/.info.q.json" r="$TEST_TMP/.info.r.json"
  run "$QDEDUP" info --output=json "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qdedup info --output=json $* exit $rc"
    return 1
  fi
  if ! jq -S . "$out" >"$q" 2>/dev/null; then
    fail "$what: qdedup info --output=json $* printed invalid JSON"
    return 1
  fi
  cp "$out" "$q.raw"
  run qemu-img info --output=json "$@"
  expect_status 0 "$what: qemu-img info --output=json $*"
  jq -S . "$out" >"$r"
  if ! diff -u "$r" "$q" >"$TEST_TMP/.info.diff"; then
    fail "$what: info --output=json $* differs (- qemu-img, + qdedup)"
    head -n 40 "$TEST_TMP/.info.diff" | sed 's/^/    /'
  elif ! cmp -s "$out" "$q.raw"; then
    # The same objects: byte for byte they differ only in key order (qemu-img's is its
    # QDict hash order, which qdedup follows).
    fail "$what: info --output=json $* has qemu-img's content in another key order"
    diff -u "$out" "$q.raw" | head -n 40 | sed 's/^/    /'
  else
    pass
  fi
}

expect_info_human_same() {
  local what=$1
  shift
  local q="$TEST_TMP/.info.q.txt"
  run "$QDEDUP" info "$@"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qdedup info $* exit $rc"
    return 1
  fi
  cp "$out" "$q"
  run qemu-img info "$@"
  expect_status 0 "$what: qemu-img info $*"
  if diff -u "$out" "$q" >"$TEST_TMP/.info.diff"; then
    pass
  else
    fail "$what: info $* (human) differs (- qemu-img, + qdedup)"
    head -n 40 "$TEST_TMP/.info.diff" | sed 's/^/    /'
  fi
}

# The guest data qdedup reads through the chain equals what QEMU reads, byte for byte.
expect_data_same() {
  local img=$1 what=$2
  local mine="$TEST_TMP/.dump.raw" ref="$TEST_TMP/.ref.raw"
  rm -f "$mine" "$ref"
  run "$TT" dump "$img" "$mine"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qdedup-testtool dump $img exit $rc"
    return 1
  fi
  run qemu-img convert -f qcow2 -O raw "$img" "$ref"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qemu-img convert $img exit $rc"
    return 1
  fi
  run cmp "$ref" "$mine"
  if [ "$rc" -eq 0 ]; then
    pass
  else
    fail "$what: guest data of $img read by qdedup differs from qemu-img's: $(head -n1 "$out")"
    return 1
  fi
}

# The guest data of IMG as QEMU reads it equals the raw file MODEL.
expect_data_is() {
  local img=$1 model=$2 what=$3 ref="$TEST_TMP/.ref.raw"
  rm -f "$ref"
  run qemu-img convert -f qcow2 -O raw "$img" "$ref"
  if [ "$rc" -ne 0 ]; then
    fail "$what: qemu-img convert $img exit $rc"
    return 1
  fi
  run cmp "$model" "$ref"
  if [ "$rc" -eq 0 ]; then
    pass
  else
    fail "$what: guest data of $img (read by qemu-img) differs from the model: $(head -n1 "$out")"
    return 1
  fi
}

# alloc_map IMG: the allocation map of IMG as qemu-img map reports it, host offsets left
# out and runs of the same kind merged: one "START LENGTH PRESENT ZERO DATA DEPTH" a line.
alloc_map() {
  qemu-img map --output=json "$1" | python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    k = (e["present"], e["zero"], e["data"], e["depth"])
    if runs and runs[-1][0] == k and runs[-1][1] + runs[-1][2] == e["start"]:
        runs[-1][2] += e["length"]
    else:
        runs.append([k, e["start"], e["length"]])
for k, start, length in runs:
    print(start, length, *k)'
}

model_new() {
  rm -f "$1"
  truncate -s "$2" "$1"
}

model_write() {
  local model=$1 off=$2 len=$3 oct
  oct=$(printf '%03o' "$4")
  head -c "$len" /dev/zero | tr '\0' "\\$oct" |
    dd of="$model" bs=64k seek="$off" oflag=seek_bytes iflag=fullblock conv=notrunc status=none
}

# qcow2_peek IMG GUEST_OFFSET: prints "<host offset> <copied 0|1> <refcount>" of the
# active L2 entry mapping GUEST_OFFSET (host offset 0: unallocated, zero or compressed;
# then the refcount printed is 0). Reads the file directly, as QEMU would.
qcow2_peek() {
  python3 -S - "$1" "$2" <<'EOF'
import struct, sys
path, guest = sys.argv[1], int(sys.argv[2], 0)
f = open(path, "rb")
def rd(off, n):
    f.seek(off)
    return f.read(n)
h = rd(0, 112)
cluster_bits, = struct.unpack(">I", h[20:24])
l1_size, l1_off, rt_off = struct.unpack(">IQQ", h[36:56])
version, = struct.unpack(">I", h[4:8])
incompat = struct.unpack(">Q", h[72:80])[0] if version >= 3 else 0
order = struct.unpack(">I", h[96:100])[0] if version >= 3 else 4
cs = 1 << cluster_bits
esize = 16 if incompat & 0x10 else 8
l2_entries = cs // esize
gc = guest >> cluster_bits
l1i, l2i = gc // l2_entries, gc % l2_entries
mask = 0x00fffffffffffe00
l1e = struct.unpack(">Q", rd(l1_off + 8 * l1i, 8))[0] if l1i < l1_size else 0
entry = struct.unpack(">Q", rd((l1e & mask) + esize * l2i, 8))[0] if l1e & mask else 0
host = 0 if entry & (1 << 62) else entry & mask
refcount = 0
if host:
    c = host >> cluster_bits
    rb_entries = cs * 8 >> order
    rte = struct.unpack(">Q", rd(rt_off + 8 * (c // rb_entries), 8))[0] & ~0x1ff
    if rte:
        bits, i = 1 << order, c % rb_entries
        if bits < 8:
            refcount = (rd(rte + i * bits // 8, 1)[0] >> (i * bits % 8)) & ((1 << bits) - 1)
        else:
            refcount = int.from_bytes(rd(rte + i * bits // 8, bits // 8), "big")
print("0x%x %d %d" % (host, entry >> 63, refcount))
EOF
}
