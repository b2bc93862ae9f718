# shellcheck shell=bash
# Shared helpers for the shell tests (tests/cli/*.sh, tests/interop/*.sh).
# Sourced, not run. CTest sets QDEDUP (the binary), QDEDUP_TESTTOOL and QDEDUP_TESTS
# (the tests/ directory). A test script calls `finish` last; it exits 0 if every check
# passed, 1 if one failed, and 77 (skipped) from `skip`.
#
# Checks do not stop the script: every failure is printed, then `finish` fails.
#
#   run CMD...            run CMD (stdin /dev/null); sets $rc, $out, $err (file paths)
#   run_limited CMD...    the same under `ulimit -v 262144` (256 MiB) and `timeout 10`
#   expect_status N WHAT  $rc == N
#   expect_error WHAT     $rc == 1, nothing on stdout, exactly one stderr line "qdedup: ..."
#   expect_err_has S WHAT / expect_out_has S WHAT / expect_err_lacks S WHAT
#   expect_eq A B WHAT    strings A and B are equal (shows a diff otherwise)
#   expect_empty_dir D WHAT
#   json_sans_actual_size FILE   prints FILE's JSON sorted, without "actual-size"
set -uo pipefail

: "${QDEDUP:?QDEDUP must name the qdedup binary (run the tests through ctest)}"
: "${QDEDUP_TESTS:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# The tests run in a temporary directory: make the binaries' paths absolute first.
for _v in QDEDUP QDEDUP_TESTTOOL; do
  if [ -n "${!_v:-}" ] && [[ ${!_v} != /* ]]; then printf -v "$_v" '%s' "$PWD/${!_v}"; fi
done
unset _v

TEST_NAME=$(basename "$0" .sh)
TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/qdedup-$TEST_NAME.XXXXXX")
trap 'rm -rf "$TEST_TMP"' EXIT
cd "$TEST_TMP" || exit 1

failures=0
checks=0
out="$TEST_TMP/.stdout"
err="$TEST_TMP/.stderr"
rc=0
last_cmd=""

skip() {
  echo "SKIP: $*"
  exit 77
}

require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
  done
}

fail() {
  failures=$((failures + 1))
  echo "FAIL: $*"
  if [ -n "$last_cmd" ]; then
    echo "  command: $last_cmd (exit $rc)"
    if [ -s "$err" ]; then
      echo "  stderr:"
      head -c 2000 "$err" | sed 's/^/    /'
    fi
  fi
}

pass() { checks=$((checks + 1)); }

run() {
  last_cmd="$*"
  "$@" </dev/null >"$out" 2>"$err"
  rc=$?
}

# A run that must stay within bounded memory and time: a hostile image may claim
# gigabytes of tables, and the answer must come from checking, not from trying.
run_limited() {
  last_cmd="$*"
  local vlimit="ulimit -v 262144;"
  # AddressSanitizer reserves terabytes of address space: no -v limit under it. The
  # binary run is checked (not $QDEDUP), from ldd's whole output: `ldd | grep -q` under
  # pipefail fails whenever grep exits before ldd has written everything.
  if [[ $(ldd "$1" 2>/dev/null) == *libasan* ]]; then vlimit=""; fi
  bash -c "$vlimit"' exec timeout 10 "$@"' limited "$@" </dev/null >"$out" 2>"$err"
  rc=$?
}

expect_status() {
  local want=$1 what=$2
  if [ "$rc" -eq "$want" ]; then pass; else fail "$what: exit status $rc, expected $want"; fi
}

# The error contract of every command: status 1, no result on stdout, and one line on
# stderr that starts with "qdedup: ".
expect_error() {
  local what=$1 lines
  lines=$(wc -l <"$err")
  if [ "$rc" -eq 124 ]; then
    fail "$what: timed out (hang?)"
  elif [ "$rc" -gt 128 ]; then
    fail "$what: killed by signal $((rc - 128)) (crash?)"
  elif [ "$rc" -ne 1 ]; then
    fail "$what: exit status $rc, expected 1"
  elif [ "$lines" -ne 1 ] || ! head -n1 "$err" | grep -q '^qdedup: '; then
    fail "$what: expected exactly one stderr line starting with 'qdedup: ', got $lines line(s)"
  elif [ -s "$out" ]; then
    fail "$what: an error printed on stdout: $(head -c 200 "$out")"
  else
    pass
  fi
}

expect_err_has() {
  if grep -qF -- "$1" "$err"; then pass; else fail "$2: stderr lacks '$1'"; fi
}

expect_err_lacks() {
  if grep -qF -- "$1" "$err"; then fail "$2: stderr contains '$1'"; else pass; fi
}

expect_out_has() {
  if grep -qF -- "$1" "$out"; then pass; else fail "$2: stdout lacks '$1'"; fi
}

expect_eq() {
  if [ "$1" == "$2" ]; then
    pass
  else
    fail "$3: values differ"
    diff <(printf '%s\n' "$1") <(printf '%s\n' "$2") | head -n 40 | sed 's/^/    /'
  fi
}

expect_empty_dir() {
  local left
  left=$(ls -A "$1")
  if [ -z "$left" ]; then pass; else fail "$2: left behind in $1: $left"; fi
}

json_sans_actual_size() {
  jq -S 'if type == "array" then map(del(.["actual-size"])) else del(.["actual-size"]) end' "$1"
}

finish() {
  if [ "$failures" -gt 0 ]; then
    echo "$TEST_NAME: $failures check(s) failed, $checks passed"
    exit 1
  fi
  if [ "$checks" -eq 0 ]; then
    echo "$TEST_NAME: no checks ran"
    exit 1
  fi
  echo "$TEST_NAME: all $checks checks passed"
  exit 0
}
