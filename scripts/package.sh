#!/usr/bin/env bash
# Builds the Debian package of qdedup: installs what is missing, builds build/ and runs
# cpack -G DEB (CMakeLists.txt holds its settings). Prints the path of the .deb.
#   bash scripts/package.sh && apt-get install ./build/package/qdedup_*.deb
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
install_packages
build_project
log "packaging (cpack -G DEB)"
rm -f "$QDEDUP_BUILD"/package/qdedup_*.deb
(cd "$QDEDUP_BUILD" && cpack -G DEB >/dev/null) || die "cpack failed"
ls "$QDEDUP_BUILD"/package/qdedup_*.deb
