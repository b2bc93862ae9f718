#!/usr/bin/env bash
# -p as qemu-img prints it: when stderr is not a terminal, "    (NN.NN/100%)" records ended by
# \r, from 0.00 to 100.00, one each time the figure moved by more than one point, and no
# escape sequence; on a terminal (script(1) gives one) the same figure with the rate and ETA.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img script python3

# 48 MiB: 16 MiB random, the same again, 16 MiB of zeros.
head -c 16M /dev/urandom >a
cat a a >disk.raw
truncate -s 48M disk.raw

# Checks a -p stream in FILE (what the command wrote on stderr) as a pipe reader sees it.
check_plain_progress() {
  local file=$1 what=$2
  if grep -q $'\033' "$file"; then fail "$what: an escape sequence on a pipe"; else pass; fi
  if [ "$(tail -c 2 "$file" | od -An -c | tr -d ' ')" = '\r\n' ]; then pass
  else fail "$what: does not end with \\r\\n as qemu-img's does"; fi
  tr '\r' '\n' <"$file" | sed '/^$/d' >"$file.lines"
  if grep -vqE '^    \([0-9]+\.[0-9]{2}/100%\)$' "$file.lines"; then
    fail "$what: a record not in qemu-img's form: $(grep -vE '^    \([0-9]+\.[0-9]{2}/100%\)$' "$file.lines" | head -1)"
  else
    pass
  fi
  expect_eq "$(head -1 "$file.lines")" "    (0.00/100%)" "$what: the first record"
  expect_eq "$(tail -1 "$file.lines")" "    (100.00/100%)" "$what: the last record"
  # Each record but those at 100 moves more than one point past the one before (the
  # printed figures are rounded to 0.01), so at most 101 differ; never backwards.
  local bad
  bad=$(sed 's/^    (//; s|/100%)$||' "$file.lines" | awk '
    NR > 1 && $1 < prev { print "went back from " prev " to " $1; exit }
    NR > 1 && $1 != 100 && $1 < prev + 0.995 { print "moved only from " prev " to " $1; exit }
    { prev = $1 }')
  if [ -n "$bad" ]; then fail "$what: $bad"; else pass; fi
  local n
  n=$(sort -u "$file.lines" | wc -l)
  if [ "$n" -ge 2 ] && [ "$n" -le 101 ]; then pass; else fail "$what: $n distinct records"; fi
}

run "$QDEDUP" convert -p -O qcow2 -o dedup=sha256 disk.raw d.qcow2
expect_status 0 "convert -p"
cp "$err" convert.err
check_plain_progress convert.err "convert -p"
[ -s "$out" ] && fail "convert -p wrote on stdout: $(head -c 200 "$out")"
# qemu-img's own -p on the same input: the same form (its records go to stdout).
run qemu-img convert -p -O qcow2 disk.raw q.qcow2
expect_status 0 "qemu-img convert -p"
cp "$out" qemu.out
check_plain_progress qemu.out "qemu-img convert -p (the oracle of this test's rules)"

# The records themselves are qemu-img's: it counts the bytes it copies (data; all with
# -S 0) by requests of at most 2 MiB and prints as each starts. Sources with data runs,
# holes and zero clusters, raw and qcow2 targets, with and without -S 0.
if command -v qemu-io >/dev/null; then
  qemu-img create -q -f qcow2 runs.qcow2 100M
  qemu-io -c "write -P 1 0 3M" -c "write -P 2 10M 512k" -c "write -P 3 50M 7M" \
    -c "write -z 60M 1M" runs.qcow2 >/dev/null
  qemu-img create -q -f raw holes.raw 64M
  qemu-io -f raw -c "write -P 1 1M 100k" -c "write -P 1 40M 3M" holes.raw >/dev/null
  for src in runs.qcow2 holes.raw disk.raw; do
    for sparse in "" "-S 0"; do
      for fmt in raw qcow2; do
        # shellcheck disable=SC2086  # $sparse is zero or two words
        qemu-img convert -p $sparse -O "$fmt" "$src" t.qemu >want.txt 2>&1
        # shellcheck disable=SC2086
        "$QDEDUP" convert -p $sparse -O "$fmt" "$src" t.qdedup >got.txt 2>&1
        expect_eq "$(tr '\r' '\n' <want.txt)" "$(tr '\r' '\n' <got.txt)" \
          "convert -p $sparse -O $fmt $src: qemu-img's records"
      done
    done
  done
  rm -f t.qemu t.qdedup
fi

run "$QDEDUP" check --verify-hashes -p d.qcow2
expect_status 0 "check --verify-hashes -p"
cp "$err" check.err
check_plain_progress check.err "check --verify-hashes -p"

cp q.qcow2 o.qcow2
run "$QDEDUP" dedup-offline -p o.qcow2
expect_status 0 "dedup-offline -p"
# dedup-offline prints its report line on stderr after the records: the records must be
# the stream up to the end of the progress line, and that line ends \r\n.
if grep -q $'\033' "$err"; then fail "dedup-offline -p: an escape sequence on a pipe"; else pass; fi
head -n 1 "$err" >offline.err
if [ "$(head -c "$(($(wc -c <offline.err)))" "$err" | tail -c 2 | od -An -c | tr -d ' ')" = '\r\n' ]; then pass
else fail "dedup-offline -p: the progress line does not end with \\r\\n"; fi
check_plain_progress offline.err "dedup-offline -p"

# -q silences -p.
run "$QDEDUP" -q check --verify-hashes -p d.qcow2
expect_status 0 "-q check --verify-hashes -p"
if [ -s "$err" ]; then fail "-q check -p wrote on stderr: $(head -c 200 "$err" | od -c | head -3)"; else pass; fi
run "$QDEDUP" -q convert -p -O qcow2 disk.raw quiet.qcow2
expect_status 0 "-q convert -p"
if [ -s "$err" ]; then fail "-q convert -p wrote on stderr: $(head -c 200 "$err" | od -c | head -3)"; else pass; fi

# A convert that fails part-way (an L2 entry at 3/4 of the disk is misaligned) ends the
# progress line without claiming 100%, after the records it printed before.
cp q.qcow2 bad.qcow2
python3 - bad.qcow2 <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    l1 = struct.unpack(">Q", f.read(48)[40:48])[0]
    f.seek(l1)
    l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
    f.seek(l2 + 8 * 576)  # guest offset 36 MiB of 48, 64 KiB clusters
    f.write(struct.pack(">Q", (1 << 63) | 0x10200))
PY
run "$QDEDUP" convert -p -O qcow2 bad.qcow2 never.qcow2
if [ "$rc" -ne 0 ]; then pass; else fail "convert -p of a source with a misaligned L2 entry exited 0"; fi
expect_err_has "not cluster aligned" "convert -p of a misaligned entry"
if grep -qE '\((5|6|7)[0-9]\.[0-9]{2}/100%\)' "$err"; then pass; else fail "the failed convert -p printed no record past half way"; fi
if grep -q '100.00/100%' "$err"; then fail "a failed convert -p printed 100%: $(tr '\r' '\n' <"$err" | tail -3)"
else pass; fi

# On a terminal: redrawn in place with the rate and the time left, ending at 100.00.
rm -f t.qcow2
printf '%s' "$QDEDUP" >qdedup.path
if script -qec '"$(cat qdedup.path)" convert -p -O qcow2 -o dedup=sha256 disk.raw t.qcow2' /dev/null \
  >tty.out </dev/null; then pass; else fail "convert -p under script(1) failed"; fi
tr '\r' '\n' <tty.out | sed '/^ *$/d' >tty.lines
# A record past 0 with a rate above zero and the time left.
if grep -qE '^    \([0-9]+\.[0-9]{2}/100%\) +[0-9.]*[1-9][0-9.]* [KMGT]?i?B/s ETA [0-9]{2}:[0-9]{2}' tty.lines ||
  grep -qE '^    \(100\.00/100%\) +[0-9.]*[1-9][0-9.]* [KMGT]?i?B/s ETA --:--' tty.lines; then pass
else fail "convert -p on a terminal: no record with a rate and ETA: $(head -3 tty.lines)"; fi
if grep -q $'\033' tty.out; then fail "convert -p on a terminal wrote an escape sequence"; else pass; fi
if tail -1 tty.lines | grep -q '(100.00/100%)'; then pass
else fail "convert -p on a terminal does not end at 100.00: $(tail -1 tty.lines)"; fi
[ -f t.qcow2 ] && pass || fail "convert -p on a terminal made no image"

finish
