#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) into build-fuzz with clang++, ASan and UBSan
# if needed, makes the seed corpora if missing (scripts/fuzz-corpus.sh), and fuzzes.
#
# Usage:
#   bash scripts/fuzz.sh TARGET SECONDS   fuzz one target (header, info, check, dedup, decompress)
#   bash scripts/fuzz.sh --ci [SECONDS]   every target for SECONDS (default 60) one after
#                                         the other, as the CTest tests "fuzz: TARGET" of
#                                         build-fuzz (what scripts/test.sh runs)
#   bash scripts/fuzz.sh --list           the targets
#
# Each run reads the seeds (build-fuzz/corpus/seeds/TARGET), the committed regression
# inputs (tests/fuzz/regressions/TARGET) and the working corpus (build-fuzz/corpus/work/
# TARGET, where new inputs go); prints libFuzzer's final "cov: N ft: M"; on a crash, leak,
# timeout or out-of-memory saves the input under build-fuzz/crashes/TARGET/, prints it and
# exits 1. A crash input belongs in tests/fuzz/regressions/TARGET/ once the bug is fixed:
# the normal build replays that directory (CTest "fuzz-replay: TARGET").
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

read -ra targets < <(fuzz_targets)
case "${1:-}" in
  --list)
    printf '%s\n' "${targets[@]}"
    ;;
  --ci)
    seconds=${2:-60}
    [[ $seconds =~ ^[0-9]+$ ]] || usage
    build_fuzz "-DQDEDUP_FUZZ_SECONDS=$seconds"
    ensure_fuzz_seeds
    log "fuzzing each of ${targets[*]} for ${seconds}s (ctest in $QDEDUP_BUILD_FUZZ)"
    status=0
    ctest --test-dir "$QDEDUP_BUILD_FUZZ" --output-on-failure -j1 "${@:3}" || status=$?
    for t in "${targets[@]}"; do
      cat "$QDEDUP_BUILD_FUZZ/logs/$t.summary" 2>/dev/null || true
    done
    exit "$status"
    ;;
  "" | -*)
    usage
    ;;
  *)
    target=$1 seconds=${2:-}
    [[ " ${targets[*]} " == *" $target "* ]] || die "unknown fuzz target '$target' (--list)"
    [[ $seconds =~ ^[0-9]+$ ]] || usage
    build_fuzz
    ensure_fuzz_seeds
    exec bash "$QDEDUP_ROOT/tests/fuzz/run.sh" "$QDEDUP_BUILD_FUZZ/tests/fuzz/qdedup-fuzz-$target" \
      "$target" "$seconds" "$QDEDUP_BUILD_FUZZ"
    ;;
esac
