#!/usr/bin/env bash
# qdedup metrics beside `qemu-img check` (also a pass over the metadata) and `qdedup check`,
# on the same images in the same run. Prints a Markdown table (docs/benchmarks.md holds a run).
#
#   scripts/bench-metrics.sh [--build DIR] [--dir DIR] [--gib N] [--big-gib N] [--runs N]
#
# Images (in a scratch directory under DIR, default /tmp; removed at the end):
#   mix        N GiB (default 4) written by stock qemu-img convert from raw, 64 KiB clusters,
#              50% duplicates, 10% zeros, then deduplicated by qdedup dedup-offline (sharing
#              and an index to report).
#   prealloc   --big-gib GiB (default 64), `qemu-img create -o preallocation=metadata`, 64 KiB
#              clusters: every guest cluster mapped (zero flag), all L2 tables present.
#   prealloc4k the same at 4 KiB clusters (16 entries more per MiB: the heaviest walk).
# Each command runs once as a warm-up (page cache warm), then --runs times (default 3);
# medians. Peak RSS from GNU time. Slowness never fails the script; a failed run does.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
base_dir=/tmp
gib=4
big_gib=64
runs=3
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift ;;
    --dir) base_dir=$2; shift ;;
    --gib) gib=$2; shift ;;
    --big-gib) big_gib=$2; shift ;;
    --runs) runs=$2; shift ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
qdedup="$build/qdedup"
[ -x "$qdedup" ] || { echo "bench-metrics: no $qdedup; build first" >&2; exit 2; }
for c in qemu-img python3 /usr/bin/time; do
  command -v "$c" >/dev/null || { echo "bench-metrics: $c is missing" >&2; exit 2; }
done
scratch=$(mktemp -d "$base_dir/qdedup-bench-metrics.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# seconds CMD...: wall time of one run; peak RSS in KiB in $scratch/last.rss. qemu-img
# check exits 0 here (clean images); any other status is a failure.
seconds() {
  local t0 t1 rc
  t0=$(date +%s.%N)
  set +e
  /usr/bin/time -f %M -o "$scratch/last.rss" "$@" >/dev/null 2>"$scratch/last.err"
  rc=$?
  set -e
  t1=$(date +%s.%N)
  if [ "$rc" != 0 ]; then
    echo "bench-metrics: $* exited $rc: $(head -c 300 "$scratch/last.err")" >&2
    exit 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
time_median() {
  local ts=() i
  for ((i = 0; i <= runs; i++)); do
    t=$(seconds "$@")
    [ "$i" -gt 0 ] && ts+=("$t")
  done
  median "${ts[@]}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }

python3 - mix.raw "$((gib * 1024))" <<'EOF'
import hashlib, os, sys
path, mib = sys.argv[1], int(sys.argv[2])
cs = 65536
popular = [os.urandom(cs) for _ in range(2048)]
zero = bytes(cs)
with open(path, "wb") as f:
    for i in range(mib * 16):
        r = int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8).digest(), "little")
        k = r % 10
        f.write(zero if k == 0 else popular[(r >> 8) % len(popular)] if k <= 5 else os.urandom(cs))
EOF
qemu-img convert -f raw -O qcow2 mix.raw mix.qcow2
rm mix.raw
"$qdedup" -q dedup-offline mix.qcow2
qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 "${big_gib}G"
qemu-img create -q -f qcow2 -o preallocation=metadata,cluster_size=4096 prealloc4k.qcow2 "${big_gib}G"

echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
  "$(nproc) CPUs; $(qemu-img --version | head -1); $("$qdedup" --version | head -1);" \
  "load $(cut -d' ' -f1-3 /proc/loadavg). Median of $runs runs after a warm-up, page cache warm."
echo
echo "| image | virtual | mapped clusters | qemu-img check s | qdedup check s | qdedup metrics s | metrics RSS MiB | metrics / qemu-img check |"
echo "|---|---|---|---|---|---|---|---|"
for img in mix prealloc prealloc4k; do
  virtual=$(qemu-img info --output=json "$img.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"] >> 30)')
  mapped=$("$qdedup" metrics --json "$img.qcow2" |
    python3 -c 'import json,sys; i=json.load(sys.stdin)["images"][0]; print(i["data-clusters"] + i["compressed-clusters"] + i["zero-clusters"])')
  q=$(time_median qemu-img check "$img.qcow2")
  c=$(time_median "$qdedup" check "$img.qcow2")
  m=$(time_median "$qdedup" metrics "$img.qcow2")
  rss=$(($(tail -n1 "$scratch/last.rss") / 1024))
  echo "| $img | $virtual GiB | $mapped | $q | $c | $m | $rss | **$(ratio "$m" "$q")** |"
done
