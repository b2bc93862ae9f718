#!/usr/bin/env bash
# qdedup dedup-offline beside what a user would run instead, on the same images in the
# same run: `qemu-img convert -O qcow2` (rewriting the image, today's alternative) and
# `duperemove` hashing the same file (Debian's duperemove 0.11: block size = cluster size,
# --dedupe-options=partial so that it hashes blocks rather than whole extents, no -d: it
# finds but does not dedupe; its hash is murmur3, not collision resistant, as it leaves the
# byte comparison to the kernel). Prints Markdown tables (docs/benchmarks.md holds a run).
#
#   scripts/bench-dedup-offline.sh [--build DIR] [--dir DIR] [--gib N] [--runs N] [--keep]
#
# Images (in a scratch directory under DIR, default /tmp; removed at the end):
#   mix-64k    N GiB (default 4) written by stock qemu-img convert from raw, 64 KiB
#              clusters: 50% duplicates (of 2048 popular clusters), 10% zeros, 40% unique.
#   tree-4k    an ext4 file system (mke2fs -d) holding /usr/share twice, 4 KiB clusters.
#   batch      8 images of 512 MiB like mix-64k: dedup-offline -j default (2) against -j 1.
# Each timed command runs once as a warm-up (page cache warm), then --runs times (default
# 3); medians are reported. The real runs work on a fresh copy each time (the copy is not
# timed); every timed run starts after a sync, so that no write-back of a copy or of an
# earlier output runs during it. Rates are GB/s of allocated guest data (qemu-img check's
# allocated clusters x cluster size). Peak RSS from GNU time. Slowness never fails the script; a failed run does.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
base_dir=/tmp
gib=4
runs=3
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
[ -x "$qdedup" ] || { echo "bench-dedup-offline: no $qdedup; build first" >&2; exit 2; }
for c in qemu-img duperemove mke2fs /usr/bin/time python3 jq; do
  command -v "$c" >/dev/null || { echo "bench-dedup-offline: $c is missing" >&2; exit 2; }
done

scratch=$(mktemp -d "$base_dir/qdedup-bench-dedup-offline.XXXXXX")
[ "$keep" = 1 ] || trap 'rm -rf "$scratch"' EXIT
failed=0

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# seconds CMD...: wall time of one run (peak RSS in KiB: $scratch/last.rss); must exit 0
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  set +e
  /usr/bin/time -f %M -o "$scratch/last.rss" "$@" >"$scratch/last.out" 2>"$scratch/last.err"
  local rc=$?
  set -e
  t1=$(date +%s.%N)
  if [ "$rc" != 0 ]; then
    echo "FAIL: $* exited $rc: $(head -c 300 "$scratch/last.err")" >&2
    failed=1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
# time_median [--fresh IMG COPY] CMD...: median over $runs runs after a warm-up; with
# --fresh, COPY is made from IMG before every run (untimed).
time_median() {
  local ts=() i t img="" copy=""
  if [ "$1" = --fresh ]; then img=$2; copy=$3; shift 3; fi
  for ((i = 0; i <= runs; i++)); do
    if [ -n "$img" ]; then cp --sparse=always "$img" "$copy"; cat "$copy" >/dev/null; fi
    sync  # no write-back of an earlier copy or output runs during the timed one
    t=$(seconds "$@")
    [ "$i" -gt 0 ] && ts+=("$t")
  done
  median "${ts[@]}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", (s > 0) ? b / s / 1e9 : 0 }'; }
allocated_bytes() {
  qemu-img check --output=json "$1" | jq '."allocated-clusters"' | awk -v cs="$2" '{ printf "%.0f\n", $1 * cs }'
}

# mix RAW MIB: the mixed raw image (which clusters are zero, popular or unique is fixed).
mix() {
  python3 - "$1" "$2" <<'EOF'
import hashlib, os, sys
path, mib = sys.argv[1], int(sys.argv[2])
cs = 65536
popular = [os.urandom(cs) for _ in range(2048)]
zero = bytes(cs)
with open(path, "wb") as f:
    for i in range(mib * 16):
        r = int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8).digest(), "little")
        k = r % 10
        if k == 0:
            f.write(zero)
        elif k <= 5:
            f.write(popular[(r >> 8) % len(popular)])
        else:
            f.write(os.urandom(cs))
EOF
}

cd "$scratch"
mix mix.raw "$((gib * 1024))"
qemu-img convert -f raw -O qcow2 mix.raw mix-64k.qcow2
rm mix.raw
mkdir -p stage
cp -a /usr/share stage/a
cp -a /usr/share stage/b
tree_mib=$(du -sm stage | cut -f1)
truncate -s "$((tree_mib * 13 / 10 + 256))M" tree.raw
mke2fs -q -t ext4 -b 4096 -d stage tree.raw
rm -rf stage
qemu-img convert -f raw -O qcow2 -o cluster_size=4096 tree.raw tree-4k.qcow2
rm tree.raw

echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
  "$(nproc) CPUs; $(qemu-img --version | head -1); $(duperemove --version 2>&1 | head -1);" \
  "$("$qdedup" --version | head -1); load $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Median of $runs runs after one warm-up run, page cache warm; sha256 on all cores."
echo
echo "| image | allocated | dedup-offline --dry-run s | dedup-offline s | GB/s | peak RSS MiB | qemu-img convert s | duperemove (hash only) s | dedup-offline / qemu-img convert | dedup-offline / duperemove | freed |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for spec in "mix-64k 65536" "tree-4k 4096"; do
  read -r img cs <<<"$spec"
  bytes=$(allocated_bytes "$img.qcow2" "$cs")
  dry=$(time_median "$qdedup" dedup-offline --dry-run "$img.qcow2")
  real=$(time_median --fresh "$img.qcow2" work.qcow2 "$qdedup" dedup-offline --json work.qcow2)
  rss=$(($(tail -n1 "$scratch/last.rss") / 1024))
  freed=$(jq '.images[0]."bytes-freed"' "$scratch/last.out")
  conv=$(time_median qemu-img convert -O qcow2 -o cluster_size="$cs" "$img.qcow2" conv.qcow2)
  rm -f conv.qcow2
  dupe=$(time_median duperemove -q -b "$cs" --dedupe-options=partial --hashfile="$scratch/dupe.hash" "$img.qcow2")
  rm -f "$scratch/dupe.hash"
  echo "| $img | $((bytes / 1048576)) MiB | $dry | $real | $(gbps "$bytes" "$real") | $rss |" \
    "$conv | $dupe | **$(ratio "$real" "$conv")** | **$(ratio "$real" "$dupe")** |" \
    "$((freed / 1048576)) MiB |"
  rm -f work.qcow2
done
echo
echo "GB/s = allocated guest bytes / dedup-offline wall time (hash, plan, repoint, punch, index)."

# The batch: 8 images of 512 MiB.
mix one.raw 512
qemu-img convert -f raw -O qcow2 one.raw b0.qcow2
rm one.raw
copies() {
  local i
  for i in 1 2 3 4 5 6 7 8; do cp --sparse=always b0.qcow2 "w$i.qcow2"; cat "w$i.qcow2" >/dev/null; done
  sync
}
batch() {
  local j=$1 ts=() i t
  for ((i = 0; i <= runs; i++)); do
    copies
    t=$(seconds "$qdedup" dedup-offline "${@:2}" w1.qcow2 w2.qcow2 w3.qcow2 w4.qcow2 w5.qcow2 w6.qcow2 w7.qcow2 w8.qcow2)
    [ "$i" -gt 0 ] && ts+=("$t")
  done
  median "${ts[@]}"
}
seq_s=$(batch 1 -j 1)
par_s=$(batch 2)
echo
echo "| batch | -j 1 s | -j default (2) s | -j 1 / default |"
echo "|---|---|---|---|"
echo "| 8 x 512 MiB mix | $seq_s | $par_s | **$(ratio "$seq_s" "$par_s")** |"
exit "$failed"
