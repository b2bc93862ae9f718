#!/usr/bin/env bash
# dedup-offline over images written by stock qemu-img/qemu-io with known content: v2 and
# v3; 512 B, 4 KiB, 64 KiB and 2 MiB clusters; refcount_bits 2, 16 and 64; extended L2;
# two internal snapshots whose L2 tables are shared with the active state and with each
# other; written zeros and zero clusters; compressed clusters. After each run: qemu-img
# check is clean, qemu-img compare says the active state is identical to a copy taken
# before, every snapshot reads back unchanged (qemu-img convert -l), the number of data
# clusters (counted by an independent walker, tests/lib/qcow2_data_clusters.py) equals the
# number of distinct non-zero contents (at the refcount cap: plus the copies the cap
# forces), the dry run's figures are the run's, `du` shrank, and stock qemu-io writing into
# shared clusters afterwards changes only what it writes. Then --against-backing
# over a backing file (v2 and v3), a persistent bitmap
# read back through qemu-nbd, a batch with a corrupt and a locked image, SIGINT and
# SIGKILL in the middle of a run.
source "$(dirname "$0")/../lib/interop.bash"

COUNT="python3 $(cd "$(dirname "$0")/../lib" && pwd)/qcow2_data_clusters.py"

allocated() { echo $(($(stat -c %b "$1") * 512)); }
data_clusters() { $COUNT "$1" | cut -d' ' -f1; }
compressed_clusters() { $COUNT "$1" | cut -d' ' -f2; }

# fill IMG C SPAN SNAPSHOTS: guest clusters of C bytes; SPAN is the guest bytes one L2
# table maps, so that writes at SPAN land in a second table. Distinct non-zero contents:
# 0x11, 0x22, 0x33, 0x55 (4) first met uncompressed, so kept so; 0x44, first met
# compressed (twice, then once uncompressed), so kept compressed (1); a compressed copy of
# 0x11 after its uncompressed keeper.
fill() {
  local img=$1 c=$2 span=$3 snaps=$4 cmds=() i b
  for i in $(seq 0 11); do
    b=$(((i % 3 + 1) * 0x11))
    cmds+=("write -P $b $((i * c)) $c")
  done
  cmds+=("write -P 0 $((12 * c)) $((2 * c))" "write -z $((14 * c)) $c"
    "write -c -P 0x44 $((15 * c)) $c" "write -c -P 0x44 $((16 * c)) $c"
    "write -P 0x44 $((17 * c)) $c" "write -c -P 0x11 $((18 * c)) $c"
    "write -P 0x22 $span $c" "write -P 0x11 $((span + c)) $c")
  qio "$img" "${cmds[@]}"
  [ "$snaps" = snap ] || return 0
  run qemu-img snapshot -c s1 "$img"
  expect_status 0 "snapshot s1"
  qio "$img" "write -P 0x55 0 $c"            # the active state copies the first table
  run qemu-img snapshot -c s2 "$img"         # the second table: active, s1 and s2
  expect_status 0 "snapshot s2"
  qio "$img" "write -P 0x11 $c $c"           # the first table's copy: s2 only now
}

# expect_snapshots_same ORIG IMG WHAT: every snapshot of ORIG reads the same in IMG.
expect_snapshots_same() {
  local orig=$1 img=$2 what=$3 s
  for s in s1 s2; do
    run qemu-img convert -l "snapshot.name=$s" -O qcow2 "$orig" "snap-$s-orig.qcow2"
    expect_status 0 "$what: read snapshot $s before"
    run qemu-img convert -l "snapshot.name=$s" -O qcow2 "$img" "snap-$s-new.qcow2"
    expect_status 0 "$what: read snapshot $s after"
    run qemu-img compare "snap-$s-orig.qcow2" "snap-$s-new.qcow2"
    expect_status 0 "$what: snapshot $s unchanged"
    rm -f "snap-$s-orig.qcow2" "snap-$s-new.qcow2"
  done
}

cases=(
  # name | create options | cluster size | L2 entry bytes | layout | expected data clusters
  "v3-64k|compat=1.1|65536|8|snap|4"
  "zstd|compat=1.1,compression_type=zstd|65536|8|snap|4"
  "v2-64k|compat=0.10|65536|8|snap|4"
  "v3-512|compat=1.1,cluster_size=512|512|8|snap|4"
  "v3-4k|compat=1.1,cluster_size=4k|4096|8|snap|4"
  "v3-2m|compat=1.1,cluster_size=2M|2097152|8|snap|4"
  "xl2|compat=1.1,extended_l2=on|65536|16|snap|4"
  "rc64|compat=1.1,refcount_bits=64,cluster_size=4k|4096|8|snap|4"
  "rc2|compat=1.1,refcount_bits=2,cluster_size=4k|4096|8|cap|"
)
for t in "${cases[@]}"; do
  IFS='|' read -r name opts c entry layout want <<<"$t"
  img=$name.qcow2
  span=$((c * c / entry))
  make_image "$img" "$opts" $((4 * span))
  if [ "$layout" = cap ]; then
    # Ten copies of one cluster at refcount_bits=2 (a cluster holds 3 references):
    # keepers of 3, 3, 3 and 1 references.
    cmds=()
    for i in $(seq 0 9); do cmds+=("write -P 0x66 $((i * c)) $c"); done
    qio "$img" "${cmds[@]}"
    want=4 want_compressed=0
  else
    fill "$img" "$c" "$span" "$layout"
    want_compressed=1
  fi
  cp "$img" "$name-orig.qcow2"
  before_alloc=$(allocated "$img")

  run "$QDEDUP" dedup-offline --dry-run --json "$img"
  expect_status 0 "$name: dry run"
  cp "$out" dry.json
  if cmp -s "$img" "$name-orig.qcow2"; then pass; else fail "$name: the dry run wrote"; fi

  run "$QDEDUP" dedup-offline --json "$img"
  expect_status 0 "$name: dedup-offline"
  cp "$out" run.json
  expect_check_clean "$img" "$name: after dedup-offline"
  run qemu-img compare "$name-orig.qcow2" "$img"
  expect_status 0 "$name: active state identical (qemu-img compare)"
  [ "$layout" = snap ] && expect_snapshots_same "$name-orig.qcow2" "$img" "$name"

  expect_eq "$(data_clusters "$img")" "$want" "$name: data clusters after"
  expect_eq "$(compressed_clusters "$img")" "$want_compressed" "$name: compressed clusters after"
  expect_eq "$(jq '.images[0]."data-clusters-after"' run.json)" $((want + want_compressed)) \
    "$name: reported data clusters (compressed ones included)"
  for k in duplicate-clusters zero-clusters bytes-freed data-clusters-before; do
    expect_eq "$(jq ".images[0].\"$k\"" dry.json)" "$(jq ".images[0].\"$k\"" run.json)" \
      "$name: dry run's $k equals the run's"
  done
  if [ "$layout" = cap ]; then
    expect_eq "$(jq '.images[0]."refcount-cap-overflows"' run.json)" 3 "$name: copies forced by the cap"
  fi
  # The dry run's estimates at smaller cluster sizes: every cluster is one byte repeated,
  # so each size has as many distinct pieces as contents.
  n_est=0
  for gr in 4096 16384 65536; do [ "$gr" -lt "$c" ] && n_est=$((n_est + 1)); done
  expect_eq "$(jq '[.images[0]."at-other-cluster-sizes"[]?] | length' dry.json)" "$n_est" \
    "$name: one estimate per smaller cluster size"
  if [ "$n_est" -gt 0 ]; then
    expect_eq "$(jq -c '[.images[0]."at-other-cluster-sizes"[] | ."distinct-chunks"] | unique' dry.json)" \
      "[$((want + want_compressed))]" "$name: estimates at smaller clusters"
  fi
  after_alloc=$(allocated "$img")
  freed=$(jq '.images[0]."bytes-freed"' run.json)
  if [ "$after_alloc" -lt "$before_alloc" ]; then pass; else
    fail "$name: du did not shrink ($before_alloc -> $after_alloc)"
  fi
  # The freed clusters are punched; the new index (at the end of the file) and the file
  # system's own extent blocks (a punched file has more extents) take a little back.
  index_bytes=$(($(jq '.images[0]."index-entries"' run.json) * 48 + 4095 & ~4095))
  slack=$((index_bytes + 8192))
  if [ "$c" -ge 4096 ] && [ $((before_alloc - after_alloc + slack)) -lt "$freed" ]; then
    fail "$name: du shrank by $((before_alloc - after_alloc)), less than the $freed bytes freed"
  else
    pass
  fi

  run "$QDEDUP" dedup-offline --json "$img"
  expect_status 0 "$name: second run"
  expect_eq "$(jq '.images[0]."bytes-freed"' "$out")" 0 "$name: a second run frees nothing"
  run qemu-img compare "$name-orig.qcow2" "$img"
  expect_status 0 "$name: identical after the second run"

  # Stock QEMU writes into a cluster whose content is shared (copy on write, the other
  # references keep theirs): the same writes on the original give the same disk, and
  # qemu-img check stays clean (the sharing does not end: the keeper has more references).
  # The same into the kept compressed 0x44 cluster (three entries map it now), partly.
  for f in "$name-orig.qcow2" "$img"; do
    qio "$f" "write -P 0x77 $((3 * c)) $c" "write -P 0x78 $((c / 2)) 512"
    [ "$layout" = cap ] || qio "$f" "write -P 0x79 $((16 * c + c / 2)) 512" "write -P 0x7a $((17 * c)) $c"
  done
  run qemu-img compare "$name-orig.qcow2" "$img"
  expect_status 0 "$name: identical after qemu-io wrote into shared clusters"
  [ "$layout" = snap ] && expect_snapshots_same "$name-orig.qcow2" "$img" "$name after qemu-io"
  expect_check_clean "$img" "$name: after qemu-io wrote into shared clusters"
  rm -f "$name-orig.qcow2" "$img"
done

# --against-backing, v3 and v2: overlay clusters equal to what the backing file holds at
# the same offset are dropped (reads fall through); the others are deduplicated.
for compat in 1.1 0.10; do
  name="backing-$compat"
  make_image "base-$compat.qcow2" "compat=$compat" 8M
  qio "base-$compat.qcow2" "write -P 0x11 0 1M" "write -P 0x22 2M 1M"
  make_image "ov-$compat.qcow2" "compat=$compat,backing_file=base-$compat.qcow2,backing_fmt=qcow2" 8M
  # 8 clusters as in the backing file, 8 copies of 0x33, 1 more as in the backing file,
  # 2 of 0x11 where the backing file has zeros: 9 dropped, 7 + 1 merged, 2 contents left.
  qio "ov-$compat.qcow2" "write -P 0x11 0 512k" "write -P 0x33 512k 512k" "write -P 0x22 2M 64k" \
    "write -P 0x11 4M 128k"
  cp "ov-$compat.qcow2" "$name-orig.qcow2"
  run "$QDEDUP" dedup-offline --against-backing --dry-run --json "ov-$compat.qcow2"
  expect_status 0 "$name: dry run"
  cp "$out" dry.json
  run "$QDEDUP" dedup-offline --against-backing --json "ov-$compat.qcow2"
  expect_status 0 "$name: dedup-offline --against-backing"
  expect_eq "$(jq -c '.images[0] | [."backing-clusters", ."duplicate-clusters"]' "$out")" "[9,8]" \
    "$name: clusters dropped and merged"
  expect_eq "$(jq '.images[0]."bytes-freed"' dry.json)" "$(jq '.images[0]."bytes-freed"' "$out")" \
    "$name: the dry run's figure"
  expect_check_clean "ov-$compat.qcow2" "$name"
  run qemu-img compare "$name-orig.qcow2" "ov-$compat.qcow2"
  expect_status 0 "$name: identical through the backing file"
  expect_eq "$(data_clusters "ov-$compat.qcow2")" 2 "$name: data clusters left"
  expect_eq "$(qemu-img map --output=json "ov-$compat.qcow2" | jq -c '[.[] | select(.start == 0)][0].depth')" 1 \
    "$name: the first cluster now reads from the backing file"
done

# A persistent dirty bitmap: same name, flags and granularity, check clean (its clusters
# counted, no leaks), and the same dirty ranges read back through qemu-nbd.
if command -v nbdinfo >/dev/null && command -v qemu-nbd >/dev/null; then
  make_image bm.qcow2 compat=1.1 64M
  qio bm.qcow2 "write -P 0x11 0 1M" "write -P 0x22 2M 256k"
  run qemu-img bitmap --add bm.qcow2 bm0
  expect_status 0 "bitmap --add"
  qio bm.qcow2 "write -P 0x11 4M 128k" "write -P 0x22 8M 64k" "write -P 0 12M 64k"
  dirty_map() {
    timeout 30 nbdinfo --map=qemu:dirty-bitmap:bm0 -- [ qemu-nbd -r -f qcow2 -B bm0 "$1" ]
  }
  map_before=$(dirty_map bm.qcow2)
  bitmaps_before=$(qemu-img info --output=json bm.qcow2 | jq -c '."format-specific".data.bitmaps')
  cp bm.qcow2 bm-orig.qcow2
  run "$QDEDUP" dedup-offline bm.qcow2
  expect_status 0 "bitmap image: dedup-offline"
  expect_check_clean bm.qcow2 "bitmap image"
  run qemu-img compare bm-orig.qcow2 bm.qcow2
  expect_status 0 "bitmap image: identical"
  expect_eq "$(qemu-img info --output=json bm.qcow2 | jq -c '."format-specific".data.bitmaps')" \
    "$bitmaps_before" "bitmap image: bitmaps listed the same (not in-use or inconsistent)"
  expect_eq "$(dirty_map bm.qcow2)" "$map_before" "bitmap image: same dirty ranges"
  if [ "$(data_clusters bm.qcow2)" -lt "$(data_clusters bm-orig.qcow2)" ]; then pass; else
    fail "bitmap image: nothing was deduplicated"
  fi
else
  echo "note: nbdinfo or qemu-nbd missing: the bitmap read-back is not checked"
fi

# A batch: two good images, one marked corrupt, one held by a running qemu-io. The bad
# ones get one line each and stay byte for byte as they were; the good ones are done.
for i in 1 2 3 4; do
  make_image "b$i.qcow2" compat=1.1,cluster_size=4k 8M
  qio "b$i.qcow2" "write -P 0x11 0 256k" "write -P 0x22 1M 64k"
done
# Incompatible feature bit 1: corrupt (header bytes 72..79).
printf '\x02' | dd of=b2.qcow2 bs=1 seek=79 conv=notrunc status=none
cp b2.qcow2 b2-orig.qcow2
cp b3.qcow2 b3-orig.qcow2
bg_start holder qemu-io -f qcow2 -c "sleep 60000" b3.qcow2
# Waits on /proc/locks (byte 101: "has write"), not by probing, which would take locks too.
# shellcheck disable=SC2317  # called through wait_for's eval
write_locked() {
  awk -v ino=":$(stat -c %i "$1")" '
    $2 == "OFDLCK" && substr($6, length($6) - length(ino) + 1) == ino && $7 <= 101 && 101 <= $8 {
      found = 1
    }
    END { exit !found }' /proc/locks
}
wait_for "write_locked b3.qcow2" 20 || fail "qemu-io did not lock b3.qcow2: $(cat "$TEST_TMP/holder.err")"
run "$QDEDUP" dedup-offline --json b1.qcow2 b2.qcow2 b3.qcow2 b4.qcow2
expect_status 1 "batch with failures"
expect_eq "$(jq -c '[.images[].status]' "$out")" '["done","failed","failed","done"]' "batch outcomes"
expect_eq "$(grep -c '^qdedup: ' "$err")" 2 "one stderr line per failed image"
expect_err_has "qdedup: b2.qcow2: " "corrupt image named"
expect_err_has "marked corrupt" "corrupt image reason"
expect_err_has "qdedup: b3.qcow2: " "locked image named"
bg_stop "$holder"
if cmp -s b2.qcow2 b2-orig.qcow2 && cmp -s b3.qcow2 b3-orig.qcow2; then pass; else
  fail "a refused image was written"
fi
expect_eq "$(data_clusters b1.qcow2) $(data_clusters b4.qcow2)" "2 2" "good images deduplicated"
expect_check_clean b4.qcow2 "batch: a good image"
run "$QDEDUP" dedup-offline b2.qcow2
expect_error "corrupt image alone"

# Interrupted (SIGINT) and killed (SIGKILL) runs of the real binary, slowed by --max-rate
# so that the signals land in the middle: each leaves an image identical to the original;
# SIGINT's is consistent (not even leaky), exits 130 and records its progress, from which
# the killed runs and the last one resume; that last run completes the work.
make_image big.qcow2 compat=1.1,cluster_size=4k 64M
qio big.qcow2 "write -P 0x11 0 16M" "write -P 0x22 16M 16M" "write -P 0x33 40M 8M"
run qemu-img snapshot -c s1 big.qcow2
qio big.qcow2 "write -P 0x44 0 4M"
run qemu-img snapshot -c s2 big.qcow2
cp big.qcow2 big-orig.qcow2
bg_start runner "$QDEDUP" dedup-offline --max-rate 8M big.qcow2
sleep 1.5
kill -INT "$runner"
wait "$runner"
rc=$?
expect_eq "$rc" 130 "SIGINT: exit status says interrupted"
if grep -q interrupted "$TEST_TMP/runner.out"; then pass; else fail "SIGINT: the report does not say interrupted"; fi
expect_check_clean big.qcow2 "after SIGINT"
run qemu-img compare big-orig.qcow2 big.qcow2
expect_status 0 "after SIGINT: identical"
expect_snapshots_same big-orig.qcow2 big.qcow2 "after SIGINT"
for delay in 0.3 0.9 1.6; do
  bg_start runner "$QDEDUP" dedup-offline --max-rate 8M big.qcow2
  sleep "$delay"
  kill -KILL "$runner"
  wait "$runner" 2>/dev/null
  run qemu-img check big.qcow2
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then pass; else
    fail "after SIGKILL at ${delay}s: qemu-img check exit $rc (only leaks are allowed)"
    cat "$out"
  fi
  run qemu-img compare big-orig.qcow2 big.qcow2
  expect_status 0 "after SIGKILL at ${delay}s: identical"
done
expect_snapshots_same big-orig.qcow2 big.qcow2 "after SIGKILL"
run "$QDEDUP" dedup-offline --json big.qcow2
expect_status 0 "rerun after the kills"
expect_eq "$(jq '.images[0].resumed' "$out")" true "the rerun resumes from the progress record"
expect_check_clean big.qcow2 "after the rerun"
expect_eq "$(data_clusters big.qcow2)" 4 "rerun completes the deduplication"
run qemu-img compare big-orig.qcow2 big.qcow2
expect_status 0 "after the rerun: identical"
expect_snapshots_same big-orig.qcow2 big.qcow2 "after the rerun"

finish
