#!/usr/bin/env bash
# -p as qemu-img prints it: when stderr is not a terminal, "    (NN.NN/100%)" records ended by
# \r, from 0.00 to 100.00, one each time the figure moved by more than one point, and no
# escape sequence; on a terminal (script(1) gives one) the same figure with the rate and ETA.
# shellcheck source=../lib/common.bash
source "$QDEDUP_TESTS/lib/common.bash"
require_cmd qemu-img script

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
  # Each record but those at 100 moves more than one point past the one before, so at
  # most 101 differ; never backwards.
  local bad
  bad=$(sed 's/^    (//; s|/100%)$||' "$file.lines" | awk '
    NR > 1 && $1 < prev { print "went back from " prev " to " $1; exit }
    NR > 1 && $1 != 100 && $1 <= prev + 1 { print "moved only from " prev " to " $1; exit }
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

run "$QDEDUP" check --verify-hashes -p d.qcow2
expect_status 0 "check --verify-hashes -p"
cp "$err" check.err
check_plain_progress check.err "check --verify-hashes -p"

cp q.qcow2 o.qcow2
run "$QDEDUP" dedup-offline -p o.qcow2
expect_status 0 "dedup-offline -p"
# dedup-offline prints its notes on stderr too: keep the progress records only.
grep -ao $'    ([0-9.]*/100%)\r' "$err" | tr -d '\n' >offline.err || true
printf '\n' >>offline.err
if grep -q $'\033' "$err"; then fail "dedup-offline -p: an escape sequence on a pipe"; else pass; fi
check_plain_progress offline.err "dedup-offline -p"

# -q silences -p.
run "$QDEDUP" -q convert -p -O qcow2 disk.raw quiet.qcow2
expect_status 0 "-q convert -p"
if [ -s "$err" ]; then fail "-q convert -p wrote on stderr: $(head -c 200 "$err" | od -c | head -3)"; else pass; fi

# On a terminal: redrawn in place with the rate and the time left, ending at 100.00.
rm -f t.qcow2
script -qec "$QDEDUP convert -p -O qcow2 -o dedup=sha256 disk.raw t.qcow2" /dev/null >tty.out </dev/null
tr '\r' '\n' <tty.out | sed '/^ *$/d' >tty.lines
if grep -qE '^    \([0-9]+\.[0-9]{2}/100%\) +[0-9.]+ [KMGT]?i?B/s ETA ([0-9]{2}:[0-9]{2}|--:--)' tty.lines; then pass
else fail "convert -p on a terminal: no record with rate and ETA: $(head -3 tty.lines)"; fi
if tail -1 tty.lines | grep -q '(100.00/100%)'; then pass
else fail "convert -p on a terminal does not end at 100.00: $(tail -1 tty.lines)"; fi
[ -f t.qcow2 ] && pass || fail "convert -p on a terminal made no image"

finish
