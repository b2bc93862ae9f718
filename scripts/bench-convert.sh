#!/usr/bin/env bash
# qdedup convert -o dedup=sha256 against qemu-img convert -O qcow2, on inputs
# this script makes itself, at cluster_size 64 KiB and 4 KiB. Prints Markdown
# tables (docs/benchmarks.md holds a run).
#
#   scripts/bench-convert.sh [--quick] [--dir DIR] [--build DIR] [--synthetic-mib N]
#                            [--ext4-mib N] [--runs N] [--max-load L [--max-wait S]] [--keep]
#
# Inputs (made in a scratch directory under DIR, default /tmp; removed at the end):
#   synthetic   raw image (4 GiB; --quick 512 MiB) of 64 KiB blocks: all zero,
#               fresh random, copies of earlier blocks, and mosaics of 4 KiB
#               blocks (fresh, zero, or copies of earlier 4 KiB blocks). The
#               generator prints the exact number of unique non-zero clusters
#               at 4 KiB and at 64 KiB.
#   ext4        ext4 image built with `mke2fs -d` from a copy of files under
#               /usr/share and /usr/lib (about 1 GiB of files; --quick 256 MiB).
#   ext4-twice  the same tree twice, in two directories of one ext4 image.
#
# For each input and cluster size, two pairs of equal durability:
#   `qemu-img convert -O qcow2 -o cluster_size=X` (its default cache mode,
#   unsafe: no sync) against `qdedup convert -t unsafe -O qcow2
#   -o dedup=sha256,cluster_size=X`;
#   `qemu-img convert -t writeback ...` (syncs at the end) against qdedup's
#   default (one fdatasync before the rename).
# Interleaved: one untimed round to warm the page cache, then --runs rounds
# (default 3); medians are reported, with the CPU seconds (user + system) of
# the unsynced pair.
# The output of the last run is checked with `qemu-img compare` and
# `qemu-img check`; on the synthetic input the clusters written must equal the
# generator's count. Failed checks are reported loudly and make the exit
# status 1; slowness never does.
#
# --max-load L waits (up to S seconds per case, default 600) for the 1-minute
# load average to drop below L before each case, for machines shared with
# other work. The load at the start and end of each case is in the table.
#
# Build qdedup in Release mode first, e.g.
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release && make -C build-bench qdedup
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
base_dir=/tmp
build=""
synthetic_mib=""
ext4_mib=""
runs=3
max_load=""
max_wait=600
keep=0

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --dir) base_dir=$2; shift ;;
    --build) build=$2; shift ;;
    --synthetic-mib) synthetic_mib=$2; shift ;;
    --ext4-mib) ext4_mib=$2; shift ;;
    --runs) runs=$2; shift ;;
    --max-load) max_load=$2; shift ;;
    --max-wait) max_wait=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) usage ;;
    *) echo "bench-convert.sh: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
if [[ -z $synthetic_mib ]]; then
  synthetic_mib=$((quick ? 512 : 4096))
fi
if [[ -z $ext4_mib ]]; then
  ext4_mib=$((quick ? 256 : 1024))
fi
if (( synthetic_mib % 64 != 0 )); then
  echo "bench-convert.sh: --synthetic-mib must be a multiple of 64" >&2
  exit 2
fi

# ---- Tools ----
if [[ -z $build ]]; then
  for candidate in "$root/build-bench" "$root/build"; do
    if [[ -x $candidate/qdedup ]]; then
      build=$candidate
      break
    fi
  done
fi
qdedup=${build:+$build/qdedup}
if [[ -z $qdedup || ! -x $qdedup ]]; then
  echo "bench-convert.sh: qdedup not found; build it first (see the header)" >&2
  exit 1
fi
for tool in qemu-img mke2fs python3 jq /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-convert.sh: $tool not found" >&2; exit 1; }
done

# ---- Scratch space ----
# Worst case at once: the inputs (synthetic + ext4 + twice the ext4, ext4
# images a quarter larger than their files), the staging trees (3x the files)
# and three outputs of the largest input.
need_mib=$(( synthetic_mib * 4 + ext4_mib * 9 + 2048 ))
avail_mib=$(df -Pm "$base_dir" | awk 'NR == 2 { print $4 }')
if (( avail_mib < need_mib )); then
  echo "bench-convert.sh: $base_dir has ${avail_mib} MiB free, needs about ${need_mib} MiB" \
       "(use --dir, --quick or smaller --synthetic-mib/--ext4-mib)" >&2
  exit 1
fi
scratch=$(mktemp -d "$base_dir/qdedup-bench.XXXXXX")
cleanup() {
  if (( keep )); then
    echo "bench-convert.sh: kept $scratch" >&2
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
trap 'echo "bench-convert.sh: command failed at line $LINENO" >&2' ERR

log() { printf '==> %s\n' "$*" >&2; }
failures=0
fail() {
  printf '\n!!!!! FAILED: %s !!!!!\n\n' "$*" >&2
  failures=$((failures + 1))
  failed_checks+=("$*")
}
failed_checks=()
load1() { cut -d' ' -f1 /proc/loadavg; }

# ---- Helper programs (Python, written into the scratch directory) ----
cat > "$scratch/gen.py" <<'PY'
"""Synthetic raw image with an exactly known number of unique clusters.

The image is a sequence of 64 KiB blocks, each made of 16 pieces of 4 KiB.
A piece is zero, fresh (random bytes, never seen before) or a copy of an
earlier fresh piece. Each 64 KiB block is one of:
  zero      all 16 pieces zero
  fresh     each piece fresh, or zero with probability 1/8 (at least one fresh)
  copy      a copy of an earlier non-zero 64 KiB block
  mosaic    pieces zero (1/8), fresh (3/8) or copies of earlier pieces (1/2)
  reshuffle only copies of earlier pieces (and zeros): new at 64 KiB, nothing
            new at 4 KiB -- what a file system does with the same files
A block is described by its tuple of piece ids (0 = zero); distinct tuples of
random pieces are distinct contents, so the counts below are exact (up to a
collision of random 4 KiB strings, which does not happen).
Prints JSON: unique non-zero clusters at 4 KiB and 64 KiB, zero clusters.
"""
import json
import os
import random
import sys

path, size_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PIECE, PIECES = 4096, 16
BLOCK = PIECE * PIECES
SHARES = [("zero", 20), ("fresh", 30), ("copy", 25), ("mosaic", 15), ("reshuffle", 10)]

rng = random.Random(seed)
kinds = [k for k, w in SHARES for _ in range(w)]
zero_piece = bytes(PIECE)
piece_offset = []        # piece id - 1 -> file offset of its first copy
block_tuples = set()     # distinct non-zero 64 KiB contents
block_offsets = []       # file offset of one copy of each distinct block
zero_blocks = zero_pieces = 0
counts = {k: 0 for k, _ in SHARES}

fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
pos = 0


def old_piece():
    return rng.randrange(len(piece_offset)) + 1


for _ in range(size_mib * 1024 * 1024 // BLOCK):
    kind = rng.choice(kinds)
    if kind != "zero" and not piece_offset:
        kind = "fresh"
    if kind == "copy" and not block_offsets:
        kind = "fresh"
    counts[kind] += 1
    if kind == "zero":
        os.pwrite(fd, bytes(BLOCK), pos)  # written, not a hole: a real zero block
        zero_blocks += 1
        zero_pieces += PIECES
        pos += BLOCK
        continue
    if kind == "copy":
        os.pwrite(fd, os.pread(fd, BLOCK, rng.choice(block_offsets)), pos)
        pos += BLOCK
        continue
    while True:
        ids = []
        for _ in range(PIECES):
            r = rng.random()
            if kind == "fresh":
                ids.append(0 if r < 1 / 8 else -1)
            elif kind == "mosaic":
                ids.append(0 if r < 1 / 8 else -1 if r < 1 / 2 else old_piece())
            else:
                ids.append(0 if r < 1 / 8 else old_piece())
        if kind == "fresh" and -1 not in ids:
            continue
        if kind == "reshuffle" and (all(i == 0 for i in ids) or tuple(ids) in block_tuples):
            continue
        break
    parts = []
    for k, i in enumerate(ids):
        if i == -1:
            piece = rng.randbytes(PIECE)
            piece_offset.append(pos + k * PIECE)
            i = len(piece_offset)
        elif i == 0:
            piece = zero_piece
            zero_pieces += 1
        else:
            piece = os.pread(fd, PIECE, piece_offset[i - 1])
        ids[k] = i
        parts.append(piece)
    block_tuples.add(tuple(ids))
    block_offsets.append(pos)
    os.pwrite(fd, b"".join(parts), pos)
    pos += BLOCK
os.close(fd)
json.dump({"bytes": pos, "unique_4k": len(piece_offset), "unique_64k": len(block_tuples),
           "zero_4k": zero_pieces, "zero_64k": zero_blocks, "blocks": counts}, sys.stdout)
print()
PY

cat > "$scratch/count.py" <<'PY'
"""Unique non-zero clusters of a raw image at 4 KiB and 64 KiB, by SHA-256."""
import hashlib
import json
import sys

result = {}
with open(sys.argv[1], "rb", buffering=0) as f:
    seen = {4096: set(), 65536: set()}
    zero = {4096: hashlib.sha256(bytes(4096)).digest(),
            65536: hashlib.sha256(bytes(65536)).digest()}
    while True:
        buf = f.read(16 << 20)
        if not buf:
            break
        if len(buf) % 65536:
            buf += bytes(65536 - len(buf) % 65536)
        mv = memoryview(buf)
        for cs, s in seen.items():
            for off in range(0, len(buf), cs):
                s.add(hashlib.sha256(mv[off:off + cs]).digest())
    for cs, s in seen.items():
        s.discard(zero[cs])
    result = {"unique_4k": len(seen[4096]), "unique_64k": len(seen[65536])}
json.dump(result, sys.stdout)
print()
PY

# ---- Inputs ----
# Copies regular files of under 32 MiB into $1, half of $2 MiB from
# /usr/share and half from /usr/lib, in path order (the same machine gives the
# same tree). Hard links among them stay hard links, as in a real install.
stage_tree() {
  local dest=$1 half=$(( $2 * 1024 * 1024 / 2 ))
  local from
  mkdir -p "$dest"
  : > "$scratch/files.txt"
  for from in /usr/share /usr/lib; do
    # find fails on unreadable directories; what it lists is still good.
    find "$from" -xdev -type f -size -32M -readable -printf '%s %p\n' \
      > "$scratch/found.txt" 2>/dev/null || true
    sort -k2 "$scratch/found.txt" |
      awk -v budget="$half" '{ total += $1; if (total <= budget) print substr($0, index($0, " ") + 1) }' \
      >> "$scratch/files.txt"
  done
  # tar warns (and fails) on files that vanish meanwhile: the rest is copied.
  (tar -cf - --no-recursion -T "$scratch/files.txt" 2>/dev/null || true) | tar -xf - -C "$dest"
}

# mke2fs -d into an image sized for the tree plus a quarter free.
make_ext4() {
  local tree=$1 img=$2
  local used_kib
  used_kib=$(du -sk "$tree" | cut -f1)
  local size_mib=$(( used_kib * 5 / 4 / 1024 + 64 ))
  mke2fs -q -F -t ext4 -b 4096 -d "$tree" "$img" "${size_mib}M" >&2
}

log "generating synthetic input (${synthetic_mib} MiB)"
synthetic_json=$(python3 "$scratch/gen.py" "$scratch/synthetic.raw" "$synthetic_mib" 1)
log "synthetic: $synthetic_json"

log "staging about ${ext4_mib} MiB of files from /usr/share and /usr/lib"
stage_tree "$scratch/tree" "$ext4_mib"
mkdir -p "$scratch/tree2"
cp -a "$scratch/tree" "$scratch/tree2/a"
cp -a "$scratch/tree" "$scratch/tree2/b"
tree_files=$(wc -l < "$scratch/files.txt")
tree_kib=$(du -sk "$scratch/tree" | cut -f1)
log "staged $tree_files files, $tree_kib KiB"
make_ext4 "$scratch/tree" "$scratch/ext4.raw"
make_ext4 "$scratch/tree2" "$scratch/ext4-twice.raw"
rm -rf "$scratch/tree" "$scratch/tree2"

declare -A unique
unique[synthetic,4096]=$(jq .unique_4k <<<"$synthetic_json")
unique[synthetic,65536]=$(jq .unique_64k <<<"$synthetic_json")
for name in ext4 ext4-twice; do
  log "counting unique clusters of $name"
  counted=$(python3 "$scratch/count.py" "$scratch/$name.raw")
  unique[$name,4096]=$(jq .unique_4k <<<"$counted")
  unique[$name,65536]=$(jq .unique_64k <<<"$counted")
done

# ---- Runs ----
# Runs "$@" once, prints "WALL_SECONDS PEAK_RSS_KIB CPU_SECONDS" (user +
# system); its stdout goes to
# $scratch/last.out. A failing command ends the script (after cleanup).
timed() {
  /usr/bin/time -f "%e %M %U %S" -o "$scratch/time.txt" "$@" > "$scratch/last.out" 2> "$scratch/last.err" || {
    printf '\n!!!!! FAILED: %s\n' "$*" >&2
    cat "$scratch/last.err" >&2
    return 1
  }
  awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }' "$scratch/time.txt"
}
field() { cut -d' ' -f"$1" <<<"$2"; }

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

wait_for_load() {
  [[ -n $max_load ]] || return 0
  local waited=0
  while awk -v l="$(load1)" -v m="$max_load" 'BEGIN { exit !(l >= m) }'; do
    if (( waited >= max_wait )); then
      log "load still $(load1) after ${max_wait}s: measuring anyway"
      return 0
    fi
    sleep 15
    waited=$((waited + 15))
  done
}

size_mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# One case (input x cluster size). Four commands, in pairs of equal
# durability: qemu-img's default and qdedup -t unsafe (neither syncs), and
# qemu-img -t writeback and qdedup's default (both sync at the end). They run
# interleaved -- warm-up round, then $runs timed rounds -- so that a change of
# load on a shared machine affects them alike. Each output is deleted right
# after its run (before the kernel writes it back, so that no run's writeback
# lands in a later one) except in the last round, whose outputs are measured
# and checked; a sync precedes every run.
run_case() {
  local input=$1 cs=$2
  local in="$scratch/$input.raw" cs_name=$((cs / 1024))K
  local q_out="$scratch/out-qemu.qcow2" u_out="$scratch/out-unsafe.qcow2" d_out="$scratch/out-qdedup.qcow2"
  local w_out="$scratch/out-qemu-wb.qcow2"
  local -a q_cmd=(qemu-img convert -O qcow2 -o "cluster_size=$cs" "$in" "$q_out")
  local -a w_cmd=(qemu-img convert -t writeback -O qcow2 -o "cluster_size=$cs" "$in" "$w_out")
  local -a u_cmd=("$qdedup" convert -t unsafe -O qcow2 -o "dedup=sha256,cluster_size=$cs" "$in" "$u_out")
  local -a d_cmd=("$qdedup" convert -O qcow2 -o "dedup=sha256,cluster_size=$cs"
                  --stats --output=json "$in" "$d_out")
  local -a q_walls=() q_rsss=() q_cpus=() w_walls=() u_walls=() u_cpus=() d_walls=() d_rsss=()
  local r t last
  wait_for_load
  local load_start
  load_start=$(load1)
  log "$input, cluster_size $cs_name (load $load_start)"
  for ((r = 0; r <= runs; r++)); do
    last=$(( r == runs ))
    sync
    t=$(timed "${q_cmd[@]}")
    (( last )) || rm -f "$q_out"
    (( r > 0 )) && q_walls+=("$(field 1 "$t")") && q_rsss+=("$(field 2 "$t")") &&
      q_cpus+=("$(field 3 "$t")")
    sync
    t=$(timed "${u_cmd[@]}")
    rm -f "$u_out"
    (( r > 0 )) && u_walls+=("$(field 1 "$t")") && u_cpus+=("$(field 3 "$t")")
    sync
    t=$(timed "${w_cmd[@]}")
    rm -f "$w_out"
    (( r > 0 )) && w_walls+=("$(field 1 "$t")")
    sync
    t=$(timed "${d_cmd[@]}")
    (( last )) || rm -f "$d_out"
    (( r > 0 )) && d_walls+=("$(field 1 "$t")") && d_rsss+=("$(field 2 "$t")")
  done
  local load_end stats
  load_end=$(load1)
  stats=$(cat "$scratch/last.out")
  local q_wall u_wall w_wall d_wall q_cpu u_cpu
  q_wall=$(median "${q_walls[@]}")
  u_wall=$(median "${u_walls[@]}")
  w_wall=$(median "${w_walls[@]}")
  d_wall=$(median "${d_walls[@]}")
  q_cpu=$(median "${q_cpus[@]}")
  u_cpu=$(median "${u_cpus[@]}")
  local q_bytes q_kib d_bytes d_kib
  q_bytes=$(stat -c %s "$q_out"); q_kib=$(du -k "$q_out" | cut -f1)
  d_bytes=$(stat -c %s "$d_out"); d_kib=$(du -k "$d_out" | cut -f1)
  local written deduped hash_s
  written=$(jq '."clusters-written"' <<<"$stats")
  deduped=$(jq '."clusters-deduplicated"' <<<"$stats")
  hash_s=$(jq '."hash-seconds"' <<<"$stats")
  local index_bytes
  index_bytes=$("$qdedup" info --output=json "$d_out" | jq '.qdedup."index-size" // 0')

  # Correctness of the last qdedup output.
  if ! qemu-img compare -f raw -F qcow2 "$in" "$d_out" > "$scratch/cmp.txt" 2>&1; then
    fail "$input $cs_name: qemu-img compare: $(tr '\n' ' ' < "$scratch/cmp.txt")"
  fi
  if ! qemu-img check "$d_out" > "$scratch/chk.txt" 2>&1; then
    fail "$input $cs_name: qemu-img check: $(tr '\n' ' ' < "$scratch/chk.txt")"
  fi
  local expected=${unique[$input,$cs]}
  if [[ $written != "$expected" ]]; then
    if [[ $input == synthetic ]]; then
      fail "$input $cs_name: clusters-written $written, the generator expects $expected"
    else
      log "$input $cs_name: clusters-written $written, counted unique $expected" \
          "(differs: refcount cap overflows or a partial last cluster?)"
    fi
  fi
  rm -f "$q_out" "$d_out"

  local ideal=$((expected * cs))
  rows+=("$(printf '| %s | %s | %.2f | %.2f | **%s** | %.2f | %.2f | **%s** | %.2f / %.2f | %s / %s | %s / %s | %s | %s | %.4f | **%.4f** | %.0f / %.0f | %s→%s |' \
    "$input" "$cs_name" \
    "$q_wall" "$u_wall" "$(ratio "$u_wall" "$q_wall")" \
    "$w_wall" "$d_wall" "$(ratio "$d_wall" "$w_wall")" \
    "$q_cpu" "$u_cpu" \
    "$(size_mib "$q_bytes")" "$(size_mib $((q_kib * 1024)))" \
    "$(size_mib "$d_bytes")" "$(size_mib $((d_kib * 1024)))" \
    "$(size_mib "$ideal")" "$(size_mib "$index_bytes")" \
    "$(awk -v a="$d_bytes" -v b="$ideal" 'BEGIN { print (b ? a / b : 0) }')" \
    "$(awk -v a="$d_bytes" -v i="$index_bytes" -v b="$ideal" 'BEGIN { print (b ? (a - i) / b : 0) }')" \
    "$(awk -v k="$(median "${d_rsss[@]}")" 'BEGIN { print k / 1024 }')" \
    "$(awk -v k="$(median "${q_rsss[@]}")" 'BEGIN { print k / 1024 }')" \
    "$load_start" "$load_end")")
  detail+=("$(printf '| %s | %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %s |' \
    "$input" "$cs_name" "$(size_mib "$(stat -c %s "$in")")" "$expected" "$written" "$deduped" \
    "$hash_s" "${q_walls[*]}" "${u_walls[*]}" "${w_walls[*]}" "${d_walls[*]}")")
}

rows=()
detail=()
for input in synthetic ext4 ext4-twice; do
  cat "$scratch/$input.raw" > /dev/null
  for cs in 65536 4096; do
    run_case "$input" "$cs"
  done
done

# ---- Report ----
# The source tree the binary was configured from, and its commit if it is a checkout.
source_version() {
  local src
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null)
  echo "${src:-an unknown tree}$(git -C "${src:-/nonexistent}" describe --always --dirty 2>/dev/null |
    sed 's/^/ at /')"
}

echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
  "$(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; $(qemu-img --version | head -1);" \
  "$("$qdedup" --version 2>/dev/null | head -1) ($qdedup, built from $(source_version))."
echo "Inputs: synthetic ${synthetic_mib} MiB ($(jq -c .blocks <<<"$synthetic_json") blocks of 64 KiB);" \
  "ext4 from $tree_files files ($tree_kib KiB) of /usr/share and /usr/lib; ext4-twice the same tree twice."
echo "Median of $runs runs after one warm-up run, page cache warm; times in seconds; sizes in MiB."
echo
echo "| input | cluster | qemu-img s | qdedup -t unsafe s | unsafe / qemu-img | qemu-img -t writeback s | qdedup s | qdedup / qemu-img -t writeback | CPU s, qemu-img / qdedup -t unsafe | qemu-img size (ls / du) | qdedup size (ls / du) | ideal | qdedup index | qdedup ls / ideal | (qdedup ls - index) / ideal | qdedup / qemu-img peak RSS MiB | load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "| input | cluster | input MiB | unique non-zero clusters (expected) | clusters-written | clusters-deduplicated | hash-seconds (last run) | qemu-img runs s | qdedup -t unsafe runs s | qemu-img -t writeback runs s | qdedup runs s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${detail[@]}"

if (( failures )); then
  echo
  echo "**${failures} CHECK(S) FAILED:**"
  printf -- '- %s\n' "${failed_checks[@]}"
  exit 1
fi
