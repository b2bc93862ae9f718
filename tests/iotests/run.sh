#!/usr/bin/env bash
# QEMU's own qcow2 tests (qemu-iotests) with qdedup standing in for qemu-img.
#
# The tests come from Debian's source package of the installed QEMU, so that they match
# the binaries: `apt-get source --download-only qemu=VERSION` (a deb-src entry for
# bookworm is added when there is none), unpacked with dpkg-source (Debian's patches
# applied) into the cache directory. Nothing of QEMU is kept in this repository.
#
# The runner wants a system emulator and a storage daemon to start; stubs answer
# `-machine help`, and the tests that need a real guest are not in the list.
#
#   run.sh [--jobs N] [TEST...]   runs the tests of pass-with-qemu-img.txt (or those
#                                 named) with tests/iotests/standin/qemu-img as
#                                 qemu-img; exits non-zero when one that passes with
#                                 stock qemu-img fails with qdedup and is not listed in
#                                 differences.txt, or when a listed one passes
#   run.sh --baseline             runs every qcow2 test with stock qemu-img and rewrites
#                                 pass-with-qemu-img.txt with those that pass
#
# Environment: QDEDUP (the binary; default build/qdedup), QDEDUP_IOTESTS_CACHE (where
# the source goes; default build/iotests).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
QDEDUP=${QDEDUP:-$root/build/qdedup}
cache=${QDEDUP_IOTESTS_CACHE:-$root/build/iotests}
baseline_list=$here/pass-with-qemu-img.txt
differences=$here/differences.txt
jobs=2
mode=standin
tests=()
while [ $# -gt 0 ]; do
  case $1 in
    --baseline) mode=baseline ;;
    --jobs) jobs=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) tests+=("$1") ;;
  esac
  shift
done

say() { printf 'iotests: %s\n' "$*"; }
die() { printf 'iotests: error: %s\n' "$*" >&2; exit 1; }

# --- the source of the installed QEMU --------------------------------------------------
version=$(dpkg-query -W -f='${source:Version}' qemu-utils 2>/dev/null) ||
  die "qemu-utils is not installed"
# The epoch's colon would split PYTHONPATH, which the runner builds from this path.
src=$cache/qemu-${version//:/_}
iotests=$src/tests/qemu-iotests
if [ ! -x "$iotests/check" ]; then
  say "fetching Debian's source of qemu $version"
  mkdir -p "$cache"
  if ! apt-get source --download-only --print-uris "qemu=$version" >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "no deb-src entry for qemu; as root this script adds one"
    cat >/etc/apt/sources.list.d/qdedup-deb-src.sources <<'EOF'
# Added by qdedup's tests/iotests/run.sh: QEMU's source package, for its iotests.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq >/dev/null || die "apt-get update failed"
  fi
  dl=$(mktemp -d "$cache/download.XXXXXX")
  (cd "$dl" && apt-get source --download-only "qemu=$version" >/dev/null 2>&1) ||
    die "apt-get source --download-only qemu=$version failed"
  rm -rf "$src.tmp"
  dpkg-source --no-check -x "$dl"/qemu_*.dsc "$src.tmp" >/dev/null ||
    die "dpkg-source -x failed"
  # Keep what the tests need: the iotests, and the Python modules they import.
  mkdir -p "$src/tests"
  rm -rf "$iotests" "$src/python"
  mv "$src.tmp/tests/qemu-iotests" "$iotests"
  mv "$src.tmp/python" "$src/python"
  rm -rf "$src.tmp" "$dl" "$cache"/qemu_*  # dpkg-source links the tarballs next to it
fi

# --- stubs and the environment ---------------------------------------------------------
work=$cache/run-$mode
rm -rf "$work"
mkdir -p "$work/bin" "$work/scratch"
cat >"$work/bin/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# Stand-in for a system emulator: answers the iotests runner's `-machine help`.
if [ "$1" = "-machine" ] && [ "$2" = "help" ]; then
  echo "Supported machines are:"
  echo "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)"
  echo "pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)"
  exit 0
fi
echo "qemu-system-x86_64: not available in qdedup's iotests run" >&2
exit 1
EOF
cp "$work/bin/qemu-system-x86_64" "$work/bin/qemu-storage-daemon"
chmod +x "$work/bin/"*

export QEMU_PROG=$work/bin/qemu-system-x86_64
export QSD_PROG=$work/bin/qemu-storage-daemon
export QEMU_IO_PROG=/usr/bin/qemu-io
export QEMU_NBD_PROG=/usr/bin/qemu-nbd
# Some tests refuse a TEST_DIR with characters other than [-_a-zA-Z0-9/] (197, 215:
# blkdebug's configuration syntax), such as the dot of a mktemp clone: then the scratch
# directory goes to /tmp.
scratch=$work/scratch
if [[ $scratch == *[^-_a-zA-Z0-9/]* ]]; then
  scratch=$(mktemp -d /tmp/qdedup_iotests_XXXXXX)
  trap 'rm -rf "$scratch" "$scratch-stock"' EXIT
fi
export TEST_DIR=$scratch
export QDEDUP_IOTESTS_CALLS=$work/calls.log
: >"$QDEDUP_IOTESTS_CALLS"
if [ "$mode" = baseline ]; then
  export QEMU_IMG_PROG=/usr/bin/qemu-img
else
  [ -x "$QDEDUP" ] || die "no qdedup binary at $QDEDUP (build first)"
  export QDEDUP QDEDUP_REAL_QEMU_IMG=/usr/bin/qemu-img
  export QEMU_IMG_PROG=$here/standin/qemu-img
fi

# run_check OUT TEST...: runs the tests (all qcow2 tests when none), TAP on OUT.tap, the
# diffs of failing tests on OUT.diff; prints nothing.
run_check() {
  local out=$1
  shift
  (cd "$iotests" && ./check -qcow2 -j "$jobs" -tap "$@") >"$out.tap" 2>"$out.diff" || true
}
# tap_status TAP STATUS: the tests of TAP with STATUS (pass, fail, notrun), one a line.
tap_status() {
  case $2 in
    pass) grep '^ok qcow2 ' "$1" | grep -v '# SKIP' | awk '{print $3}' ;;
    notrun) grep '^ok qcow2 .*# SKIP' "$1" | awk '{print $3}' ;;
    fail) grep '^not ok qcow2 ' "$1" | awk '{print $4}' ;;
  esac | sort
}

if [ "$mode" = baseline ]; then
  say "running every qcow2 test with stock qemu-img ($version)"
  run_check "$work/result"
  {
    echo "# qcow2 iotests that pass with stock qemu-img, qemu-utils $version, on Debian 12"
    echo "# without a system emulator. Regenerate: bash tests/iotests/run.sh --baseline"
    tap_status "$work/result.tap" pass
  } >"$baseline_list"
  say "$(tap_status "$work/result.tap" pass | wc -l) pass," \
    "$(tap_status "$work/result.tap" fail | wc -l) fail," \
    "$(tap_status "$work/result.tap" notrun | wc -l) not run; wrote $baseline_list"
  exit 0
fi

# --- qdedup standing in ------------------------------------------------------------------
mapfile -t expected < <(grep -v '^#' "$baseline_list" | sed '/^$/d')
full_run=0
if [ ${#tests[@]} -eq 0 ]; then
  tests=("${expected[@]}")
  full_run=1
fi
# differences.txt: "TEST  KIND  reason" (wording: only the text of error messages differs,
# checked below; deliberate: qdedup differs on purpose, README "Where qdedup differs from
# qemu-img"; open: a gap still to close).
declare -A listed=()
while read -r name kind reason; do
  [ -n "$name" ] && [ "${name:0:1}" != "#" ] || continue
  listed[$name]="$kind: $reason"
done <"$differences"

say "running ${#tests[@]} qcow2 tests with qdedup standing in for qemu-img ($version)"
run_check "$work/result" "${tests[@]}"
mapfile -t failed < <(tap_status "$work/result.tap" fail)
mapfile -t passed < <(tap_status "$work/result.tap" pass)
mapfile -t notrun < <(tap_status "$work/result.tap" notrun)

# A failure not listed, or a test that did not run, is run once more with stock
# qemu-img: if that does not pass either, this machine cannot run the test and it says
# nothing about qdedup.
unexpected=() env_failures=()
for t in "${failed[@]}" "${notrun[@]}"; do
  [ -z "${listed[$t]:-}" ] || continue
  unexpected+=("$t")
done
if [ ${#unexpected[@]} -gt 0 ]; then
  mkdir -p "$scratch-stock"
  QEMU_IMG_PROG=/usr/bin/qemu-img TEST_DIR=$scratch-stock run_check "$work/stock" \
    "${unexpected[@]}"
  mapfile -t stock_passed < <(tap_status "$work/stock.tap" pass)
  for t in "${unexpected[@]}"; do
    [[ " ${stock_passed[*]} " == *" $t "* ]] || env_failures+=("$t")
  done
fi
# A failure that stock qemu-img does not share is run once more with qdedup standing in,
# alone. One that passes then failed for a reason outside qdedup (QEMU's LUKS key
# benchmark, in calls qdedup hands to qemu-img, fails now and then on a loaded machine:
# "Unable to get accurate CPU usage"); it counts as passing and is reported as flaky, its
# first diff kept in result.diff.
retry=() flaky=()
for t in "${unexpected[@]}"; do
  [[ " ${env_failures[*]} " == *" $t "* ]] || retry+=("$t")
done
if [ ${#retry[@]} -gt 0 ]; then
  # (Its calls are not counted: the counts are of the first run.)
  QDEDUP_IOTESTS_CALLS=$work/rerun-calls.log jobs=1 run_check "$work/rerun" "${retry[@]}"
  mapfile -t flaky < <(tap_status "$work/rerun.tap" pass)
  for t in "${flaky[@]}"; do
    say "flaky $t: failed with qdedup standing in, passed when run again alone" \
      "(the first run's diff is in $work/result.diff)"
    passed+=("$t")
    mapfile -t failed < <(printf '%s\n' "${failed[@]}" | grep -vx -e "$t" -e "")
    mapfile -t notrun < <(printf '%s\n' "${notrun[@]}" | grep -vx -e "$t" -e "")
  done
fi

# wording_only TEST: true when TEST's output equals the reference once every error line
# (`qemu-img: ...`) on both sides is reduced to its place: the same errors at the same
# moments, only their text differs. Prints the error lines that differ.
wording_only() {
  local t=$1 ref bad
  ref=$(awk -v t="/$t.out" '/^--- / && index($2, t) { print $2; exit }' "$work/result.diff")
  [ -n "$ref" ] || ref=$(awk -v t="/$t.out." '/^--- / && index($2, t) { print $2; exit }' \
    "$work/result.diff")
  # (The runner gives each test a directory of its own only when it runs several at once.)
  bad=$scratch/$t/$(basename "$t").out.bad
  [ -f "$bad" ] || bad=$scratch/$(basename "$t").out.bad
  [ -f "$ref" ] && [ -f "$bad" ] || return 1
  # Lines that continue one of qemu-img's errors (its hints), where qdedup's errors are
  # one line: dropped on both sides.
  local hints='/^qemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes\.$/d
/^Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-$/d
/^and exabytes, respectively\.$/d
/^Could not open backing image\.$/d
/^You can force-remove .* with qemu-img check -r all$/d'
  # qemu-img's "Check failed: ..." after the finding that stopped its check (qdedup
  # reports the two in one line).
  local check_failed='prev ~ /^qemu-img: ERROR / && /^qemu-img: Check failed: / { prev = $0; next }
{ print; prev = $0 }'
  local norm='s/^qemu-img: .*/qemu-img: <error>/'
  cmp -s <(sed "$hints" "$ref" | awk "$check_failed" | sed "$norm") \
    <(sed "$hints" "$bad" | awk "$check_failed" | sed "$norm") || return 1
  paste -d '\n' <(sed "$hints" "$ref" | awk "$check_failed" | grep '^qemu-img: ') \
    <(sed "$hints" "$bad" | awk "$check_failed" | grep '^qemu-img: ') |
    awk 'NR % 2 { q = $0; next } q != $0 { sub(/^qemu-img: /, "", q); sub(/^qemu-img: /, "");
         print "      qemu-img: " q; print "      qdedup:   " $0 }'
}

status=0 wording=0
# Every test asked for must have run: one that is missing from the results (the runner
# stopped) or that skipped itself with qdedup standing in counts as failing.
for t in "${tests[@]}"; do
  name=$(basename "$t")
  if [[ " ${passed[*]} ${failed[*]} " != *" $name "* ]]; then
    if [[ " ${env_failures[*]} " == *" $name "* ]]; then
      say "skip $t: does not run here with stock qemu-img either (not counted)"
      continue
    elif [[ " ${notrun[*]} " == *" $name "* ]]; then
      say "FAIL $t: not run with qdedup standing in (it runs with stock qemu-img)"
    else
      say "FAIL $t: no result (did the runner stop? see $work/result.diff)"
    fi
    status=1
  fi
done
for t in "${failed[@]}"; do
  if [[ "${listed[$t]:-}" == wording:* ]]; then
    if lines=$(wording_only "$t"); then
      say "pass $t but for the wording of its errors (${listed[$t]#wording: }):"
      printf '%s\n' "$lines"
      wording=$((wording + 1))
    else
      say "FAIL $t: differs beyond the wording of its errors"
      status=1
    fi
  elif [ -n "${listed[$t]:-}" ]; then
    say "fail $t (listed, ${listed[$t]})"
  elif [[ " ${env_failures[*]} " == *" $t "* ]]; then
    say "fail $t (fails with stock qemu-img here too: not counted)"
  else
    say "FAIL $t: passes with stock qemu-img, not with qdedup"
    status=1
  fi
done
for t in "${passed[@]}"; do
  if [ -n "${listed[$t]:-}" ]; then
    say "STALE $t passes now: remove it from differences.txt (${listed[$t]})"
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  say "diffs of the failing tests (first 400 lines):"
  head -n 400 "$work/result.diff" | sed 's/^/    /'
fi

say "${#passed[@]}/${#tests[@]} iotests pass with qdedup standing in for qemu-img," \
  "$((${#passed[@]} + wording))/${#tests[@]} counting those that differ only in error wording"
say "calls served by qdedup, per subcommand (served/all):"
for sub in create check info convert; do
  served=$(grep -c "^served $sub\$" "$QDEDUP_IOTESTS_CALLS" || true)
  all=$(grep -c "^\(served\|passed\) $sub\b" "$QDEDUP_IOTESTS_CALLS" || true)
  pct=$(awk -v s="$served" -v a="$all" 'BEGIN { printf "%.1f", a ? 100 * s / a : 0 }')
  say "  $sub: $served/$all ($pct%)"
  # A whole run that qdedup served none of a subcommand's calls tested nothing of it.
  if [ "$full_run" = 1 ] && [ "$all" -gt 0 ] && [ "$served" -eq 0 ]; then
    say "FAIL qdedup served no $sub call: is the stand-in broken?"
    status=1
  fi
done
retried=$(grep -c '^retried ' "$QDEDUP_IOTESTS_CALLS" || true)
[ "$retried" -eq 0 ] ||
  say "$retried stock qemu-img calls run again after QEMU's LUKS benchmark failed (the stand-in)"
say "calls passed to qemu-img, by reason (top 12):"
{ grep '^passed ' "$QDEDUP_IOTESTS_CALLS" || true; } | sort | uniq -c | sort -rn | head -12 |
  sed 's/^/    /'
exit "$status"
