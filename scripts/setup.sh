#!/usr/bin/env bash
# Sets qdedup up on Debian 12 (bookworm): installs the missing packages, builds into
# build/, then runs qdedup on a sample disk it makes in build/demo/.
# Idempotent; quick when everything is installed and built already.
# Usage (as root, or with sudo available): bash scripts/setup.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$QDEDUP_ROOT"

# Step 1: packages and build.
install_packages
build_project

# Step 2: a 64 MiB sample raw disk: 4 MiB of one 64 KiB block repeated (duplicates),
# 4 MiB of data that does not repeat, and zeros around them (sparse).
qdedup=build/qdedup
demo=build/demo
mkdir -p "$demo"
log "making the sample disk $demo/sample.raw"
python3 - "$demo/sample.raw" <<'PY'
import hashlib, sys
MiB = 1 << 20
with open(sys.argv[1], "wb") as f:
    f.truncate(64 * MiB)
    block = (b"qdedup demo: the same block again. " * 2000)[: 64 * 1024]
    f.seek(8 * MiB)
    f.write(block * 64)
    f.seek(32 * MiB)
    f.write(b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(4 * MiB // 32)))
PY

# Step 3: the sample converted into a deduplicating image, then a copy made by stock
# qemu-img deduplicated in place.
log "qdedup convert -f raw -O qcow2 -o dedup=sha256 --stats $demo/sample.raw $demo/demo.qcow2"
"$qdedup" convert -f raw -O qcow2 -o dedup=sha256 --stats "$demo/sample.raw" "$demo/demo.qcow2"
log "qemu-img convert -f raw -O qcow2 $demo/sample.raw $demo/stock.qcow2"
qemu-img convert -f raw -O qcow2 "$demo/sample.raw" "$demo/stock.qcow2"
log "qdedup dedup-offline $demo/stock.qcow2"
"$qdedup" dedup-offline "$demo/stock.qcow2"

# Step 4: what qdedup and qemu-img see.
log "qdedup info $demo/demo.qcow2"
"$qdedup" info "$demo/demo.qcow2"
log "qdedup metrics $demo/stock.qcow2"
"$qdedup" metrics "$demo/stock.qcow2"
log "qemu-img check $demo/demo.qcow2"
qemu-img check "$demo/demo.qcow2"
log "qemu-img check $demo/stock.qcow2"
qemu-img check "$demo/stock.qcow2"
log "setup done; run the tests with: bash scripts/test.sh"
