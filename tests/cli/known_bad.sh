#!/usr/bin/env bash
# The worst images the project knows, through the real binary under limits: every fuzz
# regression input that is a qcow2 file (tests/fuzz/regressions/*/), and every image of
# the corruption corpus (tests/corpus/make-corpus.sh). For each, `qdedup info`, `qdedup
# check` and `qdedup check -r all` (on a copy) run under `ulimit -v 262144` (256 MiB of
# address space) and a 10-second timeout, and must:
#   - end by themselves: no timeout, no signal;
#   - exit with a documented status: info 0 or 1; check 0, 1, 2 or 3;
#   - when info fails, fail with exactly one line starting with "qdedup: ";
#   - never write to the image unless repairing it (info and check leave it byte-identical);
#   - after `check -r all` exits 0, leave an image that `check` finds clean (exit 0).
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img qemu-io python3 cmp

is_qcow2() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' ')" = "514649fb" ]; }

# try IMAGE LABEL: the checks above on one image.
try() {
  local img=$1 label=$2 status
  cp "$img" work.qcow2
  run_limited "$QDEDUP" info work.qcow2
  case $rc in
    0) pass ;;
    1) expect_error "$label: info" ;;
    *) fail "$label: info exit $rc (timeout 124, signal above 128)" ;;
  esac
  if cmp -s "$img" work.qcow2; then pass; else fail "$label: info wrote to the image"; fi

  run_limited "$QDEDUP" check work.qcow2
  case $rc in
    0 | 1 | 2 | 3) pass ;;
    *) fail "$label: check exit $rc (timeout 124, signal above 128)" ;;
  esac
  if cmp -s "$img" work.qcow2; then pass; else fail "$label: check wrote to the image"; fi

  run_limited "$QDEDUP" check -r all work.qcow2
  status=$rc
  case $status in
    0 | 1 | 2 | 3) pass ;;
    *) fail "$label: check -r all exit $status (timeout 124, signal above 128)" ;;
  esac
  if [ "$status" -eq 0 ]; then
    run_limited "$QDEDUP" check work.qcow2
    expect_status 0 "$label: check after a successful check -r all"
  fi
}

count=0
for dir in "$QDEDUP_TESTS"/fuzz/regressions/*/; do
  for f in "$dir"*; do
    [ -f "$f" ] && is_qcow2 "$f" || continue
    try "$f" "regression $(basename "$dir")/$(basename "$f")"
    count=$((count + 1))
  done
done

run env QDEDUP="$QDEDUP" bash "$QDEDUP_TESTS/corpus/make-corpus.sh" corpus
expect_status 0 "make-corpus.sh builds the corruption corpus"
for f in corpus/*.qcow2; do
  [ -f "$f" ] || continue
  try "$f" "corpus $(basename "$f" .qcow2)"
  count=$((count + 1))
done
echo "known_bad: $count images"
[ "$count" -ge 50 ] || fail "only $count images were tried"
finish
