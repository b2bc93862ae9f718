#!/usr/bin/env bash
# RAM per entry and insert/lookup rates of the in-RAM dedup index
# (dedup::DedupIndex) at 16 M and 256 M entries (--quick: 1 M and 16 M), as a
# Markdown table (docs/benchmarks.md holds a run).
#
#   scripts/bench-index.sh [--quick] [--dir DIR] [--build DIR] [--entries N]...
#
# Each size runs in its own process (qdedup-bench-index), so the peak RSS is
# that size's alone. The index keeps its full hashes in a record store file
# (48 bytes a record with SHA-256) made in DIR (default /tmp): 256 M entries
# need 12 GiB there, and the sizes that do not fit in DIR's free space are
# skipped with a message. The RAM check is the same: a size whose table would
# not fit in the available memory is skipped.
#
# Build the tool in Release mode first, e.g.
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release && make -C build-bench qdedup-bench-index
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp
build=""
sizes=()
quick=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --dir) dir=$2; shift ;;
    --build) build=$2; shift ;;
    --entries) sizes+=("$2"); shift ;;
    *) echo "usage: bench-index.sh [--quick] [--dir DIR] [--build DIR] [--entries N]..." >&2; exit 2 ;;
  esac
  shift
done
if [[ ${#sizes[@]} -eq 0 ]]; then
  if (( quick )); then
    sizes=($((1 << 20)) $((16 << 20)))
  else
    sizes=($((16 << 20)) $((256 << 20)))
  fi
fi

if [[ -z $build ]]; then
  for candidate in "$root/build-bench" "$root/build"; do
    if [[ -x $candidate/tests/qdedup-bench-index ]]; then
      build=$candidate
      break
    fi
  done
fi
bench=${build:+$build/tests/qdedup-bench-index}
if [[ -z $bench || ! -x $bench ]]; then
  echo "bench-index.sh: qdedup-bench-index not found; build it first (see the header)" >&2
  exit 1
fi

record_bytes=48    # SHA-256 record: 32-byte hash, host offset, owner cluster
peak_ram_bytes=40  # generous: the slot arrays while the table grows
echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
  "$(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM; record store in $dir;" \
  "load $(cut -d' ' -f1-3 /proc/loadavg) at the start."
echo
# The tool's table, with the load average at the start and end of each size added.
"$bench" --header | sed -e '1s/$/ load (1 min) |/' -e '2s/$/---|/'
status=0
for n in "${sizes[@]}"; do
  avail_disk=$(( $(df -Pk "$dir" | awk 'NR == 2 { print $4 }') * 1024 ))
  avail_ram=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) * 1024 ))
  if (( n * record_bytes > avail_disk * 9 / 10 )); then
    echo "bench-index.sh: skipping $n entries: the record store needs $(( n * record_bytes >> 30 )) GiB," \
         "$dir has $(( avail_disk >> 30 )) GiB free" >&2
    continue
  fi
  if (( n * peak_ram_bytes > avail_ram )); then
    echo "bench-index.sh: skipping $n entries: needs about $(( n * peak_ram_bytes >> 30 )) GiB of RAM," \
         "$(( avail_ram >> 30 )) GiB available" >&2
    continue
  fi
  load_start=$(cut -d' ' -f1 /proc/loadavg)
  echo "bench-index.sh: $n entries (load $load_start)" >&2
  if row=$("$bench" --entries "$n" --dir "$dir"); then
    echo "$row $load_start→$(cut -d' ' -f1 /proc/loadavg) |"
  else
    echo "bench-index.sh: FAILED at $n entries" >&2
    [[ -n $row ]] && echo "$row FAILED |"
    status=1
  fi
done
exit $status
