#!/usr/bin/env bash
# Runs one libFuzzer target for a fixed time; used by scripts/fuzz.sh and by the CTest
# tests "fuzz: TARGET" of the fuzz build (tests/fuzz/CMakeLists.txt).
#
# Usage: run.sh BINARY TARGET SECONDS DIR
#   DIR/corpus/seeds/TARGET   seeds made by scripts/fuzz-corpus.sh (read if present)
#   DIR/corpus/work/TARGET    the working corpus: libFuzzer adds the inputs it finds here
#   DIR/crashes/TARGET        crash, timeout, leak and out-of-memory inputs (artifacts)
#   DIR/logs/TARGET.PID.log   libFuzzer's output of the run with process id PID (runs of
#                             one target at the same time keep their own logs; the 10
#                             newest are kept)
#   DIR/logs/TARGET.log       a link to the log of the run that ended last
#   DIR/logs/TARGET.summary   that run's one-line summary (seconds, cov/ft, executions, exit)
# The committed regression inputs (tests/fuzz/regressions/TARGET) are read too.
#
# Prints the final coverage ("cov: N ft: M") and exits 0 when the run ended without a
# crash; otherwise prints where the input was saved and the end of the log, and exits 1.
set -uo pipefail

[ $# -eq 4 ] || {
  echo "usage: $0 BINARY TARGET SECONDS DIR" >&2
  exit 2
}
binary=$1 target=$2 seconds=$3 dir=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Per target: the largest input worth trying (header: cluster 0 is read whole, but
# everything it describes lies in its first 64 KiB in practice).
case $target in
  header) max_len=65536 ;;
  decompress) max_len=$((65536 + 2)) ;;
  *) max_len=1048576 ;;
esac

work=$dir/corpus/work/$target
crashes=$dir/crashes/$target
log=$dir/logs/$target.$$.log
mkdir -p "$work" "$crashes" "$dir/logs" || exit 1
corpora=("$work")
for d in "$dir/corpus/seeds/$target" "$here/regressions/$target"; do
  [ -d "$d" ] && corpora+=("$d")
done

# -timeout: one input may take at most 10 s (a hang is a bug); -malloc_limit_mb: no
# input of at most 1 MiB may ask for 512 MiB at once; -rss_limit_mb: the process stays
# below 2 GiB (ASan's shadow memory and its quarantine, kept at 64 MiB, count there:
# one run of the check target measured 1.1 GiB of RSS with 51 MiB of live heap under
# ASan's default 256 MiB quarantine). Leaks are reported (LeakSanitizer) and fail the run.
echo "fuzz $target: ${seconds}s, corpus: ${corpora[*]}"
start=$(date +%s)
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=64} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
  "$binary" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
  -rss_limit_mb=2048 -malloc_limit_mb=512 -error_exitcode=1 -timeout_exitcode=1 \
  -print_final_stats=1 -artifact_prefix="$crashes/" "${corpora[@]}" >"$log" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))

# libFuzzer's last status line: "#N DONE cov: 123 ft: 456 corp: ..." (or the last
# "#N pulse/NEW/REDUCE ..." line when it stopped on a crash).
last=$(grep -E '^#[0-9]+[[:space:]].*cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1)
cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+).*/cov: \1 ft: \2/p' <<<"$last")
execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)
summary="fuzz $target: ${elapsed}s, ${cov:-no coverage line}, ${execs:-?} executions, exit $rc"
echo "$summary" | tee "$dir/logs/$target.summary"
ln -sfn "$(basename "$log")" "$dir/logs/$target.log"
# shellcheck disable=SC2012  # names are TARGET.PID.log: no odd characters
ls -t "$dir/logs/$target".[0-9]*.log 2>/dev/null | tail -n +11 | xargs -r rm -f
if [ "$rc" -ne 0 ]; then
  echo "fuzz $target: FAILED; the end of $log:"
  tail -n 60 "$log"
  saved=$(grep -oE "Test unit written to [^ ]+" "$log" | sed 's/Test unit written to //')
  echo "fuzz $target: input saved as: ${saved:-(none; see the log)}"
  echo "fuzz $target: reproduce with: $binary ${saved:-INPUT}"
  exit 1
fi
exit 0
