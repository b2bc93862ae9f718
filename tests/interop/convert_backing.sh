#!/usr/bin/env bash
# `qdedup convert -B BACKING -F FMT` (and -o backing_file=...,backing_fmt=...): the
# target gets a backing file, and what the source's top image does not allocate is left
# unallocated in it, as qemu-img convert -B does. Each case runs qemu-img convert and
# qdedup convert on the same source and requires:
#   - the same allocation map (qemu-img map, host offsets left out);
#   - the same guest data as qemu-img's target (qemu-img compare), and as the source
#     when the backing file is the source's own;
#   - qemu-img check clean; and, where qdedup writes what qemu-img writes, the same file
#     byte for byte.
# Cases: 64k source clusters into targets of 512 bytes to 256 KiB clusters, extended L2,
# compat=0.10 (no zero clusters: zeros are written, but not past the end of the backing
# file), -S 0, -S 1M, -c, -c -S 0, a backing file other than the source's (clusters
# partly left to it take the rest from it), a raw backing file, a raw source, -n -B,
# dedup, and -p's progress records. Refusals: a raw target, several sources, no backing
# format, an empty name, a backing file that does not open (no target is left behind).
source "${QDEDUP_TESTS:?set QDEDUP_TESTS to the tests directory}/lib/interop.bash" || exit 1

# same_as_qemu WHAT BYTES SOURCE ARGS...: runs `convert ARGS SOURCE TARGET` with both
# tools and compares the targets. BYTES: "bytes" when the files must be identical,
# "nomap" when only the data is compared (extended L2 targets: qemu-img leaves the
# subclusters it does not write unallocated, qdedup writes whole clusters).
same_as_qemu() {
  local what=$1 bytes=$2 src=$3
  shift 3
  rm -f want.qcow2 got.qcow2
  run qemu-img convert -O qcow2 "$@" "$src" want.qcow2
  expect_status 0 "qemu-img convert $what"
  run "$QDEDUP" convert -O qcow2 "$@" "$src" got.qcow2
  expect_status 0 "convert $what" || return
  expect_check_clean got.qcow2 "convert $what"
  if [ "$bytes" != nomap ]; then
    expect_eq "$(alloc_map want.qcow2)" "$(alloc_map got.qcow2)" "convert $what: allocation map"
  fi
  run qemu-img compare want.qcow2 got.qcow2
  expect_status 0 "convert $what: the guest data of qemu-img's target"
  expect_eq "$(qemu-img info --output=json want.qcow2 | jq -c '[.["backing-filename"], .["backing-filename-format"]]')" \
    "$(qemu-img info --output=json got.qcow2 | jq -c '[.["backing-filename"], .["backing-filename-format"]]')" \
    "convert $what: the backing file"
  if [ "$bytes" = bytes ]; then
    if cmp -s want.qcow2 got.qcow2; then pass; else
      fail "convert $what: not qemu-img's file ($(cmp want.qcow2 got.qcow2 2>&1 | head -1))"
    fi
  fi
}

# base (4 MiB): data in [0, 2M), a zero cluster at 3M. top (6 MiB, over base): data,
# a zero cluster, written zeros, a partly written cluster, data past the base's end.
make_image base.qcow2 cluster_size=64k 4M
qio base.qcow2 "write -P 0x11 0 2M" "write -z 3M 64k"
run qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 6M
qio top.qcow2 "write -P 0x22 64k 128k" "write -z 1M 64k" "write -P 0 2M 64k" \
  "write -P 0x33 2200k 8k" "write -P 0x44 5M 64k" "write -z 5248k 64k"

for opts in cluster_size=64k cluster_size=4k compat=0.10 cluster_size=512; do
  # Below 4 KiB clusters qdedup places refcount blocks elsewhere (as without -B).
  same_as_qemu "-B base.qcow2 -F qcow2 -o $opts" "$([ "$opts" = cluster_size=512 ] || echo bytes)" \
    top.qcow2 -B base.qcow2 -F qcow2 -o "$opts"
  run qemu-img compare top.qcow2 got.qcow2
  expect_status 0 "convert -B -o $opts: the source's data"
done
# Extended L2: qemu-img writes the zero runs inside a data cluster as zero subclusters,
# qdedup the whole cluster (as without -B): only what is left to the backing file and
# the data are compared.
run "$QDEDUP" convert -O qcow2 -B base.qcow2 -F qcow2 -o extended_l2=on top.qcow2 got.qcow2
expect_status 0 "convert -B -o extended_l2=on"
expect_check_clean got.qcow2 "convert -B -o extended_l2=on"
run qemu-img compare top.qcow2 got.qcow2
expect_status 0 "convert -B -o extended_l2=on: the source's data"
expect_eq "$(alloc_map top.qcow2 | awk '$6 == 1 {print $1, $2}')" \
  "$(alloc_map got.qcow2 | awk '$6 == 1 {print $1, $2}')" \
  "convert -B -o extended_l2=on: left to the backing file where the source is"
for extra in "-S 0" "-S 1M" "-c" "-c -S 0" "-S 0 -o compat=0.10"; do
  # shellcheck disable=SC2086 # $extra is several options
  same_as_qemu "-B base.qcow2 -F qcow2 $extra" bytes top.qcow2 -B base.qcow2 -F qcow2 $extra
  run qemu-img compare top.qcow2 got.qcow2
  expect_status 0 "convert -B $extra: the source's data"
done
# 256 KiB target clusters over 64 KiB source clusters: clusters partly left to the
# backing file (the zeros at 2M become a zero cluster, as the base reads zeros there).
same_as_qemu "-B -o cluster_size=256k" bytes top.qcow2 -B base.qcow2 -F qcow2 -o cluster_size=256k
same_as_qemu "-B -o cluster_size=256k,compat=0.10" bytes top.qcow2 -B base.qcow2 -F qcow2 \
  -o cluster_size=256k,compat=0.10
# The -o form, as iotest 019 uses it.
same_as_qemu "-o backing_file=base.qcow2,backing_fmt=qcow2" bytes top.qcow2 \
  -o backing_file=base.qcow2,backing_fmt=qcow2
same_as_qemu "-B and -o backing_fmt" bytes top.qcow2 -B base.qcow2 -o backing_fmt=qcow2

# Another backing file: what the top leaves shows it, in clusters partly left too.
make_image other.qcow2 cluster_size=64k 8M
qio other.qcow2 "write -P 0x55 0 8M"
for opts in cluster_size=64k cluster_size=256k cluster_size=256k,compat=0.10 cluster_size=4k; do
  same_as_qemu "-B other.qcow2 -o $opts" bytes top.qcow2 -B other.qcow2 -F qcow2 -o "$opts"
done
same_as_qemu "-B other.qcow2 -c -o cluster_size=256k" bytes top.qcow2 -B other.qcow2 -F qcow2 \
  -c -o cluster_size=256k

# A raw backing file (holes read as zeros), and a raw source (nothing is left to the
# backing file: its zeros are written).
qemu-img convert -O raw base.qcow2 base.raw
same_as_qemu "-B base.raw -F raw -o cluster_size=256k" bytes top.qcow2 -B base.raw -F raw \
  -o cluster_size=256k
qemu-img convert -O raw top.qcow2 top.raw
for opts in compat=1.1 compat=0.10; do
  same_as_qemu "raw source -B base.qcow2 -o $opts" bytes top.raw -B base.qcow2 -F qcow2 -o "$opts"
done

# An extended L2 source: its unallocated subclusters are left to the backing file, even
# inside a cluster that has data (found by a review: read through the source's own
# backing file, they showed its bytes instead of the -B file's).
qemu-img create -q -f raw fill-aa.raw 1M
qemu-io -f raw -c "write -P 0xaa 0 1M" fill-aa.raw >/dev/null
qemu-img create -q -f raw fill-bb.raw 1M
qemu-io -f raw -c "write -P 0xbb 0 1M" fill-bb.raw >/dev/null
run qemu-img create -q -f qcow2 -o extended_l2=on -b fill-aa.raw -F raw ext.qcow2 1M
qio ext.qcow2 "write -P 0x11 0 4k" "write -z 96k 8k" "write -P 0x12 200k 70k"
same_as_qemu "extended L2 source, -B fill-bb.raw -o extended_l2=on" nomap ext.qcow2 \
  -B fill-bb.raw -F raw -o extended_l2=on
for opts in extended_l2=off cluster_size=4k; do
  same_as_qemu "extended L2 source, -B fill-bb.raw -o $opts" "" ext.qcow2 -B fill-bb.raw -F raw \
    -o "$opts"
done
# A -B file whose end is not a multiple of the source's cluster size: qemu-img asks again
# from the last whole cluster before it, where the source's own backing file has ended.
qemu-img create -q -f raw b1m.raw 1M
qemu-io -f raw -c "write -P 0x11 0 1M" b1m.raw >/dev/null
run qemu-img create -q -f qcow2 -b b1m.raw -F raw over.qcow2 2M
qemu-img create -q -f raw odd.raw 1056k
qemu-io -f raw -c "write -P 0xdd 0 1056k" odd.raw >/dev/null
for opts in compat=1.1 compat=0.10 cluster_size=4k; do
  same_as_qemu "-B odd.raw (not cluster aligned) -o $opts" bytes over.qcow2 -B odd.raw -F raw \
    -o "$opts"
done

# An overlay larger than its backing file (iotest 122): past the backing file's end no
# zeros are written, even on compat=0.10.
make_image small.qcow2 cluster_size=64k 2M
qio small.qcow2 "write -P 0x11 1984k 64k"
run qemu-img create -q -f qcow2 -b small.qcow2 -F qcow2 big.qcow2 40M
qio big.qcow2 "write -P 0x22 30M 1M"
for opts in compat=0.10 compat=1.1; do
  same_as_qemu "larger than its backing, -o $opts" bytes big.qcow2 -B small.qcow2 -F qcow2 \
    -o "$opts"
done

# -n -B: what the top leaves is not written, whatever the target's backing file.
for tgt_backing in none base; do
  for tool in qemu-img "$QDEDUP"; do
    rm -f "n-$tgt_backing.qcow2"
    if [ $tool = qemu-img ]; then t=want.qcow2; else t=got.qcow2; fi
    if [ $tgt_backing = none ]; then
      qemu-img create -q -f qcow2 "$t" 6M
    else
      qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$t" 6M
    fi
    qio "$t" "write -P 0x66 0 6M"
    run $tool convert -n -O qcow2 -B base.qcow2 top.qcow2 "$t"
    expect_status 0 "$tool convert -n -B into a target with backing $tgt_backing"
  done
  expect_check_clean got.qcow2 "convert -n -B (target backing: $tgt_backing)"
  expect_eq "$(alloc_map want.qcow2)" "$(alloc_map got.qcow2)" \
    "convert -n -B (target backing: $tgt_backing): allocation map"
  run qemu-img compare want.qcow2 got.qcow2
  expect_status 0 "convert -n -B (target backing: $tgt_backing): qemu-img's data"
done

# Dedup: the top's clusters shared, the rest left to the backing file.
qio top.qcow2 "write -P 0x77 3M 256k" "write -P 0x77 4M 256k"
run "$QDEDUP" convert -O qcow2 -B base.qcow2 -F qcow2 -o dedup=sha256 top.qcow2 got.qcow2
expect_status 0 "convert -B -o dedup=sha256"
expect_check_clean got.qcow2 "convert -B -o dedup=sha256"
run qemu-img compare top.qcow2 got.qcow2
expect_status 0 "convert -B -o dedup=sha256: the source's data"
expect_eq "$(alloc_map top.qcow2 | awk '$6 == 1 {print $1, $2}')" \
  "$(alloc_map got.qcow2 | awk '$6 == 1 {print $1, $2}')" \
  "convert -B -o dedup=sha256: left to the backing file where the source is"
run "$QDEDUP" info --output=json got.qcow2
expect_eq yes "$(jq -r 'if .qdedup.counters["clusters-deduplicated"] >= 64 then "yes" else "no" end' \
  "$out" 2>/dev/null || echo "no JSON")" "convert -B -o dedup=sha256: clusters shared"

# -p: qemu-img's records (what is left to the backing file is not copied).
# (qemu-img writes them on stdout, qdedup on stderr.)
qemu-img convert -p -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 want.qcow2 >want.p 2>&1
"$QDEDUP" convert -p -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 got.qcow2 >got.p 2>&1
qemu-img convert -p -O qcow2 top.qcow2 want.qcow2 >want-full.p 2>&1
expect_eq "$(od -c want.p)" "$(od -c got.p)" "convert -p -B: progress records"
if ! cmp -s want.p want-full.p; then pass; else fail "convert -p -B: the case does not tell"; fi

# Refusals, each with one line and no target left behind.
refuse() {
  local what=$1 why=$2
  shift 2
  rm -f x.qcow2 x.raw
  run "$QDEDUP" convert "$@"
  expect_error "convert $what"
  expect_err_has "$why" "convert $what: the reason"
  if [ ! -e x.qcow2 ] && [ ! -e x.raw ]; then pass; else fail "convert $what: a target was left"; fi
}
refuse "-O raw -B" "Backing file not supported for file format 'raw'" \
  -O raw -B base.qcow2 -F qcow2 top.qcow2 x.raw
refuse "-B with two sources" "makes no sense when concatenating multiple input images" \
  -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 top.qcow2 x.qcow2
refuse "-B without -F" "Use of backing file requires explicit backing format" \
  -O qcow2 -B base.qcow2 top.qcow2 x.qcow2
refuse "-o backing_file without backing_fmt" "Use of backing file requires explicit backing format" \
  -O qcow2 -o backing_file=base.qcow2 top.qcow2 x.qcow2
refuse "-B ''" "expected backing file name" -O qcow2 -B "" -F qcow2 top.qcow2 x.qcow2
refuse "-B missing.qcow2" "missing.qcow2" -O qcow2 -B missing.qcow2 -F qcow2 top.qcow2 x.qcow2
refuse "-F without a backing file" "backing format" -O qcow2 -F qcow2 top.qcow2 x.qcow2
refuse "-B naming the target" "the target cannot be its own backing file" \
  -O qcow2 -B x.qcow2 -F qcow2 top.qcow2 x.qcow2

finish
