#!/usr/bin/env bash
# qdedup check against qemu-img check on the same images, in the same run, and
# qdedup check --verify-hashes against the machine's SHA-256 speed. Prints
# Markdown tables (docs/benchmarks.md holds a run).
#
#   scripts/bench-check.sh [--build DIR] [--dir DIR] [--gib N] [--runs N] [--keep]
#
# Images (made in a scratch directory under DIR, default /tmp; removed at the end):
#   full-64k    N GiB (default 4) qcow2, 64 KiB clusters, every cluster allocated
#               (qemu-img create -o preallocation=metadata: the metadata of a full
#               disk without writing its data; check reads only metadata).
#   snap-64k    the same with an internal snapshot (every cluster referenced twice,
#               COPIED checked against refcount 2).
#   full-4k     N/4 GiB at 4 KiB clusters (16 times the metadata per GiB).
#   dedup-64k   `qdedup convert -o dedup=sha256,cluster_size=64k` of 1 GiB holding
#               256 MiB of random data four times: 4096 indexed clusters. Timed
#               with --verify-hashes (reads and rehashes 256 MiB) beside
#               `openssl speed -evp sha256` at 16 KiB blocks on all cores.
# Each command runs once untimed (page cache warm), then --runs times (default 5);
# medians are reported. Both checks must report a clean image; anything else is a
# failure (exit 1). Slowness never fails the script.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
base_dir=/tmp
gib=4
runs=5
keep=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift ;;
    --dir) base_dir=$2; shift ;;
    --gib) gib=$2; shift ;;
    --runs) runs=$2; shift ;;
    --keep) keep=1 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
qdedup="$build/qdedup"
[ -x "$qdedup" ] || { echo "bench-check: no $qdedup; build first" >&2; exit 2; }
command -v qemu-img >/dev/null || { echo "bench-check: qemu-img is missing" >&2; exit 2; }

scratch=$(mktemp -d "$base_dir/qdedup-bench-check.XXXXXX")
[ "$keep" = 1 ] || trap 'rm -rf "$scratch"' EXIT
failed=0

# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# seconds CMD...: wall time of one run; stdout/stderr to $scratch/last.*; sets $last_rc
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  set +e
  "$@" >"$scratch/last.out" 2>"$scratch/last.err"
  last_rc=$?
  set -e
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
# time_median CMD...: median wall time over $runs runs after one warm-up; must exit 0
time_median() {
  local ts=() i
  seconds "$@" >/dev/null
  for ((i = 0; i < runs; i++)); do
    ts+=("$(seconds "$@")")
    if [ "$last_rc" != 0 ]; then
      echo "FAIL: $* exited $last_rc: $(head -c 300 "$scratch/last.err")" >&2
      failed=1
    fi
  done
  median "${ts[@]}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }

cd "$scratch"
qemu-img create -q -f qcow2 -o cluster_size=65536,preallocation=metadata full-64k.qcow2 "${gib}G"
cp --sparse=always full-64k.qcow2 snap-64k.qcow2
qemu-img snapshot -c s1 snap-64k.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096,preallocation=metadata full-4k.qcow2 \
  "$((gib * 256))M"
head -c 256M /dev/urandom >quarter.raw
cat quarter.raw quarter.raw quarter.raw quarter.raw >dup.raw
rm quarter.raw
"$qdedup" convert -O qcow2 -o dedup=sha256,cluster_size=65536 dup.raw dedup-64k.qcow2
rm dup.raw

echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
  "$(nproc) CPUs; $(qemu-img --version | head -1); $("$qdedup" --version | head -1)" \
  "($qdedup); load $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Median of $runs runs after one warm-up run, page cache warm; times in seconds."
echo
echo "| image | clusters | qemu-img check s | qdedup check s | qdedup / qemu-img |"
echo "|---|---|---|---|---|"
for img in full-64k snap-64k full-4k; do
  q=$(time_median qemu-img check "$img.qcow2")
  d=$(time_median "$qdedup" check "$img.qcow2")
  clusters=$("$qdedup" check --output=json "$img.qcow2" | jq '."allocated-clusters" // 0')
  echo "| $img | $clusters | $q | $d | **$(ratio "$d" "$q")** |"
done
echo

d=$(time_median "$qdedup" check --verify-hashes dedup-64k.qcow2)
plain=$(time_median "$qdedup" check dedup-64k.qcow2)
verified=$("$qdedup" check --verify-hashes --output=json dedup-64k.qcow2 | jq '.dedup."verified-clusters"')
mib=$((verified * 64 / 1024))
openssl_kbs=$(openssl speed -multi "$(nproc)" -seconds 2 -bytes 16384 -evp sha256 2>/dev/null |
  awk '/^sha256/ { v = $NF } END { sub(/k$/, "", v); print v }')
echo "| dedup image | verified clusters | check s | check --verify-hashes s | rehash MB/s | openssl speed sha256 MB/s (16 KiB, $(nproc) procs) | ratio |"
echo "|---|---|---|---|---|---|---|"
rate=$(awk -v m="$mib" -v a="$d" -v b="$plain" 'BEGIN { printf "%.0f", (a - b > 0) ? m * 1.048576 / (a - b) : 0 }')
ossl=$(awk -v k="$openssl_kbs" 'BEGIN { printf "%.0f", k / 1000 }')
echo "| dedup-64k | $verified ($mib MiB) | $plain | $d | $rate | $ossl | **$(ratio "$rate" "$ossl")** |"
echo
echo "rehash MB/s = verified bytes / (check --verify-hashes - check): the hashing part alone."
exit "$failed"
