#!/usr/bin/env bash
# Hash throughput of every dedup algorithm, beside `openssl speed -evp sha256`
# measured in the same run, as Markdown (docs/hash-benchmarks.md holds a run).
#
#   scripts/bench-hash.sh [--build DIR] [qdedup-bench-hash options...]
#
# DIR is a CMake build directory with the qdedup-bench-hash target built
# (default: build-hash, else build). Build it in Release mode:
#   cmake -S . -B build-hash -DCMAKE_BUILD_TYPE=Release && make -C build-hash qdedup-bench-hash
# Takes about a minute; run it on an otherwise idle machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=""
if [[ ${1:-} == --build ]]; then
  build=$2
  shift 2
fi
if [[ -z $build ]]; then
  for candidate in "$root/build-hash" "$root/build"; do
    if [[ -x $candidate/tests/qdedup-bench-hash ]]; then
      build=$candidate
      break
    fi
  done
fi
bench=${build:+$build/tests/qdedup-bench-hash}
if [[ -z $bench || ! -x $bench ]]; then
  echo "bench-hash.sh: qdedup-bench-hash not found; build it first (see the header)" >&2
  exit 1
fi

# openssl speed's machine-readable "+F:...:sha256:BYTES_PER_SECOND" line; by
# default the rate is per second of user CPU time, as the one-thread figures
# of qdedup-bench-hash are.
openssl_mbps() {
  openssl speed -mr -evp sha256 -bytes "$1" -seconds 3 2>/dev/null |
    awk -F: '/^\+F:/ { printf "%.1f", $NF / 1e6 }'
}

echo "measuring openssl speed -evp sha256 -bytes 4096 -seconds 3..." >&2
ssl_4k=$(openssl_mbps 4096)
echo "measuring openssl speed -evp sha256 -bytes 65536 -seconds 3..." >&2
ssl_64k=$(openssl_mbps 65536)
if [[ -z $ssl_4k || -z $ssl_64k ]]; then
  echo "bench-hash.sh: could not parse openssl speed's output" >&2
  exit 1
fi

echo "Run $(date -u +%Y-%m-%dT%H:%MZ) with $(openssl version);" \
  "openssl speed -evp sha256: ${ssl_4k} MB/s at 4096 bytes, ${ssl_64k} MB/s at 65536 bytes" \
  "(user CPU time, -seconds 3)."
echo
"$bench" --openssl-sha256 "4096:$ssl_4k" --openssl-sha256 "65536:$ssl_64k" "$@"
