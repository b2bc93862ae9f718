#!/usr/bin/env bash
# convert with inline deduplication, checked by qemu-img and qemu-io: round trips,
# exact stored-cluster counts, the refcount cap, QEMU writing into shared clusters,
# and failures that must leave no target behind.
source "$(dirname "$0")/../lib/interop.bash"

# make_input FILE CLUSTER NCLUSTERS UNIQUE ZERO_PERCENT SEED: a raw disk of NCLUSTERS
# chunks of CLUSTER bytes, each all-zero (ZERO_PERCENT %) or one of UNIQUE random blocks.
# Prints the number of distinct non-zero blocks actually used.
make_input() {
  python3 - "$@" <<'PY'
import os, random, sys
path, cs, n, uniq, zero, seed = sys.argv[1], *map(int, sys.argv[2:])
rnd = random.Random(seed)
blocks = [rnd.randbytes(cs) for _ in range(uniq)]
used = set()
with open(path, "wb") as f:
    for _ in range(n):
        if rnd.randrange(100) < zero:
            f.write(bytes(cs))
        else:
            k = rnd.randrange(uniq)
            used.add(k)
            f.write(blocks[k])
print(len(used))
PY
}

# Distinct host offsets of data clusters in IMG (per qemu-img map).
stored_clusters() {
  qemu-img map --output=json "$1" | python3 -c '
import json, sys
cs = int(sys.argv[1])
offs = set()
for e in json.load(sys.stdin):
    if e.get("data") and "offset" in e:
        for k in range(e["length"] // cs):
            offs.add(e["offset"] + k * cs)
print(len(offs))' "$2"
}

roundtrip() {
  local src=$1 dst=$2 what=$3
  run qemu-img compare -f raw -F qcow2 "$src" "$dst"
  expect_status 0 "$what: qemu-img compare"
  expect_check_clean "$dst" "$what"
  run "$QDEDUP" convert -O raw "$dst" back.raw
  expect_status 0 "$what: convert back to raw"
  if cmp -s "$src" back.raw; then pass; else fail "$what: raw round trip differs"; fi
  run qemu-img info "$dst"
  expect_status 0 "$what: qemu-img info"
}

# 1. Exact counts at 4 KiB (the dedup default) and 64 KiB clusters.
for cs in 4096 65536; do
  unique=$(make_input in.raw $cs 1024 50 25 $cs)
  opts=dedup=sha256
  [ $cs -ne 4096 ] && opts="$opts,cluster_size=$cs"
  run "$QDEDUP" convert -O qcow2 -o "$opts" --stats --output=json in.raw out.qcow2
  expect_status 0 "convert cs=$cs"
  cp "$out" stats.json
  roundtrip in.raw out.qcow2 "cs=$cs"
  expect_eq "$(jq '.["cluster-size"]' stats.json)" "$cs" "cs=$cs: cluster size"
  expect_eq "$(stored_clusters out.qcow2 $cs)" "$unique" "cs=$cs: stored data clusters"
  expect_eq "$(jq '.["clusters-written"]' stats.json)" "$unique" "cs=$cs: clusters-written"
  nonzero=$(python3 -c "
import sys; d=open('in.raw','rb').read(); cs=$cs
print(sum(1 for i in range(0,len(d),cs) if any(d[i:i+cs])))")
  expect_eq "$(jq '.["clusters-deduplicated"]' stats.json)" "$((nonzero - unique))" "cs=$cs: deduplicated"
  expect_eq "$(jq '.["zero-clusters"]' stats.json)" "$((1024 - nonzero))" "cs=$cs: zero clusters"
  run "$QDEDUP" info --output=json out.qcow2
  expect_eq "$(jq -c '[.qdedup.hash, .qdedup["index-valid"], .qdedup["index-entries"]]' "$out")" \
    "[\"sha256\",true,$unique]" "cs=$cs: info reports the index"
done

# 2. Several sources are concatenated; a partial last cluster is kept as is.
head -c 300000 /dev/urandom > a.raw
cp a.raw b.raw
run "$QDEDUP" convert -O qcow2 -o dedup=sha256 --stats --output=json a.raw b.raw ab.qcow2
expect_status 0 "convert two sources"
cp "$out" ab.json
# qemu-img (and qdedup) round each raw source up to 512 bytes: 300000 -> 300032.
cp a.raw a512.raw && truncate -s 300032 a512.raw
cat a512.raw a512.raw > ab.raw
roundtrip ab.raw ab.qcow2 "two sources"
# 600064 bytes: 146 whole clusters of 4 KiB, deduplicated among themselves, and a
# partial one that is stored as is, never shared.
expected=$(python3 -c '
d = open("ab.raw", "rb").read()
whole = [d[i:i + 4096] for i in range(0, len(d) - 4095, 4096)]
nz = [c for c in whole if any(c)]
print("[%d,%d]" % (len(set(nz)) + 1, len(nz) - len(set(nz))))')
expect_eq "$(jq -c '[.["clusters-written"], .["clusters-deduplicated"]]' ab.json)" "$expected" \
  "two sources: stored and shared clusters"

# 3. The refcount cap: with refcount_bits=2 a cluster is shared at most 3 times.
python3 -c "import sys; sys.stdout.buffer.write(bytes([7])*4096*10)" > same.raw
run "$QDEDUP" convert -O qcow2 -o dedup=sha256,refcount_bits=2 --stats --output=json same.raw cap.qcow2
expect_status 0 "convert with refcount_bits=2"
expect_eq "$(jq '.["refcount-cap-overflows"]' "$out")" "3" "refcount cap overflows"
expect_eq "$(stored_clusters cap.qcow2 4096)" "4" "refcount cap: stored clusters"
roundtrip same.raw cap.qcow2 "refcount cap"

# 4. Stock QEMU writes into one of two guest clusters that share a host cluster.
python3 - <<'PY'
import os
a, b = os.urandom(4096), os.urandom(4096)
with open("pair.raw", "wb") as f:
    f.write(a + b + a + bytes(4096) * 5)
PY
run "$QDEDUP" convert -O qcow2 -o dedup=sha256 pair.raw pair.qcow2
expect_status 0 "convert pair"
expect_check_clean pair.qcow2 "pair before the write"
qio pair.qcow2 "write -P 0xab 0 4096"
run qemu-io -f qcow2 -r pair.qcow2 -c "read -P 0xab 0 4096"
if grep -q "Pattern verification failed" "$out"; then fail "qemu-io wrote guest cluster 0"; else pass; fi
dd if=pair.raw of=pair2.raw bs=4096 skip=2 count=1 status=none
run "$QDEDUP" convert -O raw pair.qcow2 pair.back
dd if=pair.back of=c2.raw bs=4096 skip=2 count=1 status=none
if cmp -s pair2.raw c2.raw; then pass; else fail "the other sharer changed after QEMU's write"; fi
run "$QDEDUP" info --output=json pair.qcow2
expect_eq "$(jq '.qdedup["index-valid"]' "$out")" "false" "index stale after a stock write"
run qemu-img check pair.qcow2
expect_status 2 "QEMU leaves one OFLAG_COPIED finding"
expect_eq "$(grep -c '^ERROR' "$err")" "1" "exactly one ERROR line"
expect_err_has "ERROR OFLAG_COPIED data cluster" "the finding is OFLAG_COPIED"
# qdedup check sees the same single finding, and its -r all mends it and rebuilds the
# stale index: both checks are clean afterwards and the guest data is unchanged.
cp pair.qcow2 pair-qd.qcow2
run "$QDEDUP" check pair-qd.qcow2
expect_status 2 "qdedup check: QEMU's missing OFLAG_COPIED is a corruption"
expect_eq "$(grep -c '^ERROR' "$err")" "1" "qdedup check: exactly one ERROR line"
expect_err_has "ERROR OFLAG_COPIED data cluster" "qdedup check: the finding is OFLAG_COPIED"
expect_out_has "Dedup index: stale" "qdedup check: the index is stale"
run "$QDEDUP" check -r all --output=json pair-qd.qcow2
expect_status 0 "qdedup check -r all repairs it"
expect_eq "$(jq '.["corruptions-fixed"]' "$out")" "1" "qdedup check -r all: one fix"
expect_eq "$(jq '.dedup.rebuilt' "$out")" "true" "qdedup check -r all: index rebuilt"
expect_check_clean pair-qd.qcow2 "pair after qdedup check -r all"
run "$QDEDUP" check pair-qd.qcow2
expect_status 0 "qdedup check clean after its repair"
expect_out_has "Dedup index: valid" "qdedup check: index valid after the repair"
run qemu-img compare -f qcow2 -F qcow2 pair.qcow2 pair-qd.qcow2
expect_status 0 "qdedup check -r all keeps the guest data"
cp pair.qcow2 pair-qemu.qcow2
run qemu-img check -r all pair-qemu.qcow2
expect_status 0 "qemu-img check -r all repairs it"
expect_check_clean pair-qemu.qcow2 "pair after qemu-img's repair"
# The next qdedup write (here convert -n of guest cluster 0 only, which finds the index
# stale) mends it too, although it does not touch the cluster that lacks the flag.
run "$QDEDUP" convert -O raw pair.qcow2 pair-now.raw
expect_status 0 "read the pair back"
head -c 4096 pair-now.raw > head.raw
run "$QDEDUP" convert -n -O qcow2 head.raw pair.qcow2
expect_status 0 "convert -n into the pair"
expect_check_clean pair.qcow2 "pair after the next qdedup write"
run qemu-img compare -f raw -F qcow2 pair-now.raw pair.qcow2
expect_status 0 "pair data unchanged by the mend"

# 6. -n into a deduplicated image: its data is deduplicated against, through its index
# when valid, and after a stock write (stale index) through a rebuilt one.
run "$QDEDUP" convert -O qcow2 -o dedup=sha256 in.raw n.qcow2
expect_status 0 "convert for -n"
run "$QDEDUP" convert -n -O qcow2 --stats --output=json in.raw n.qcow2
expect_status 0 "convert -n with a valid index"
expect_eq "$(jq '.["clusters-written"]' "$out")" "0" "-n of the same data stores nothing new"
expect_check_clean n.qcow2 "-n with a valid index"
run qemu-img compare -f raw -F qcow2 in.raw n.qcow2
expect_status 0 "-n with a valid index: compare"
qio n.qcow2 "write -P 0x5c 0 8192"
run "$QDEDUP" info --output=json n.qcow2
expect_eq "$(jq '.qdedup["index-valid"]' "$out")" "false" "index stale after qemu-io"
# New content: the old data shifted by one cluster, plus the original.
python3 - <<'PY'
d = open("in.raw", "rb").read()
open("in2.raw", "wb").write(d[4096:] + d[:4096])
PY
run "$QDEDUP" convert -n -O qcow2 --stats --output=json in2.raw n.qcow2
expect_status 0 "convert -n with a stale index"
expect_err_has "rebuilding" "-n says it rebuilds the stale index"
expect_eq "$(jq '.["clusters-written"]' "$out")" "0" "-n of shifted data stores nothing new"
expect_check_clean n.qcow2 "-n with a stale index"
run qemu-img compare -f raw -F qcow2 in2.raw n.qcow2
expect_status 0 "-n with a stale index: compare"
run "$QDEDUP" info --output=json n.qcow2
expect_eq "$(jq '.qdedup["index-valid"]' "$out")" "true" "index valid again after -n"

# 5. Failures leave nothing behind and never damage an existing target.
mkdir fail && cd fail || exit 1
echo "keep me" > target.qcow2
sum=$(sha256sum target.qcow2)
run "$QDEDUP" convert -O qcow2 -o dedup=sha256 missing.raw target.qcow2
expect_error "missing source"
expect_eq "$(sha256sum target.qcow2)" "$sum" "existing target unchanged (missing source)"
printf 'QFI\xfb\0\0\0\3garbage' > bad.qcow2
run "$QDEDUP" convert -f qcow2 -O qcow2 bad.qcow2 target.qcow2
expect_error "corrupt qcow2 source"
expect_eq "$(sha256sum target.qcow2)" "$sum" "existing target unchanged (corrupt source)"
run "$QDEDUP" convert -O qcow2 -o dedup=nosuchhash ../in.raw target.qcow2
expect_error "unknown hash"
# A full disk: writes beyond 512 KiB fail (RLIMIT_FSIZE, EFBIG; SIGXFSZ ignored).
last_cmd="convert under ulimit -f 512"
bash -c 'trap "" XFSZ; ulimit -f 512; exec "$@"' full "$QDEDUP" convert -O qcow2 \
  -o dedup=sha256 ../in.raw target.qcow2 </dev/null >"$out" 2>"$err"
rc=$?
expect_error "target file system full"
expect_eq "$(sha256sum target.qcow2)" "$sum" "existing target unchanged (disk full)"
expect_eq "$(ls -A)" "$(printf 'bad.qcow2\ntarget.qcow2')" "no temporary file left behind"
cd .. || exit 1

finish
