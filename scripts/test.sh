#!/usr/bin/env bash
# Installs what is missing, then runs the test stages, each under CTest:
#   normal  build/: every test (unit, CLI, interop, fuzz regression replays) but the iotests
#   iotests build/: QEMU's qcow2 iotests with qdedup standing in for qemu-img
#           (tests/iotests/run.sh; CTest label iotests)
#   asan    build-asan/ (g++ with ASan + UBSan, -O1): the same tests
#   fuzz    build-fuzz/ (clang++, libFuzzer): every fuzz target for
#           QDEDUP_FUZZ_SECONDS (default 60) on its seeds and regression inputs
# Every stage runs even when an earlier one failed; exits 0 only if all passed (else with
# the first failing CTest status, or 1 when a build failed). Non-interactive (CI=true).
# Usage: bash scripts/test.sh [extra ctest arguments, e.g. -R cli]
#   QDEDUP_TEST_STAGES="normal asan"   runs only the stages named (default: all four)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stages=${QDEDUP_TEST_STAGES:-normal iotests asan fuzz}
# --timeout: a limit for the tests that set none (the unit tests), so that a hang fails
# the run instead of stalling CI.
ctest_args=(--output-on-failure --timeout "${QDEDUP_TEST_TIMEOUT:-600}")

install_packages

status=0
summary=()
# run_stage NAME FUNCTION: runs FUNCTION (in a subshell, so that a failed build, which
# exits, ends only its stage), times it and records the outcome.
run_stage() {
  local name=$1 fn=$2 start rc=0
  [[ " $stages " == *" $name "* ]] || return 0
  log "stage $name"
  start=$(date +%s)
  ("$fn" "${@:3}") || rc=$?
  local took=$(($(date +%s) - start))
  local line
  line=$(printf 'stage %-7s %s in %dm%02ds' "$name" "$([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)")" \
    $((took / 60)) $((took % 60)))
  summary+=("$line")
  log "$line"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

stage_normal() {
  build_project
  log "ctest (build)"
  ctest --test-dir "$QDEDUP_BUILD" "${ctest_args[@]}" -j2 -LE iotests "$@"
}

stage_iotests() {
  build_project
  log "ctest (build, label iotests)"
  ctest --test-dir "$QDEDUP_BUILD" "${ctest_args[@]}" -L iotests "$@"
}

stage_asan() {
  build_asan
  export_sanitizer_options
  log "ctest (build-asan; ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS)"
  ctest --test-dir "$QDEDUP_BUILD_ASAN" "${ctest_args[@]}" -j2 -LE iotests "$@"
}

stage_fuzz() {
  if ! have_fuzz_toolchain; then
    log "fuzz: skipped, clang++ cannot link libFuzzer targets"
    return 0
  fi
  bash "$QDEDUP_ROOT/scripts/fuzz.sh" --ci "${QDEDUP_FUZZ_SECONDS:-60}" "$@"
}

run_stage normal stage_normal "$@"
run_stage iotests stage_iotests "$@"
run_stage asan stage_asan "$@"
run_stage fuzz stage_fuzz "$@"

printf '%s\n' "${summary[@]}"
exit "$status"
