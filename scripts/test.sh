#!/usr/bin/env bash
# Installs what is missing, builds into build/ and runs every test under CTest (unit,
# CLI and interop tests). Exits with CTest's status. Non-interactive (fine under CI=true).
# Usage: bash scripts/test.sh [extra ctest arguments, e.g. -R cli]
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_packages
build_project

# --timeout: a limit for the tests that set none (the unit tests), so that a hang fails
# the run instead of stalling CI.
log "ctest"
status=0
ctest --test-dir "$QDEDUP_BUILD" --output-on-failure -j2 \
  --timeout "${QDEDUP_TEST_TIMEOUT:-600}" "$@" || status=$?
exit "$status"
