#!/usr/bin/env bash
# `qdedup convert -c -O qcow2`: data clusters compressed as qemu-img compresses them.
# On a source of random, compressible, repeated and zero clusters with a partial last
# cluster, for zlib and zstd, several cluster sizes and refcount widths (1 bit: every
# stream gets a cluster of its own):
#   - qemu-img check is clean and qemu-img compare finds the source's data;
#   - at 4 KiB and above the file is qemu-img convert -c's byte for byte (the same
#     streams, packed the same way; below that the refcount blocks of small clusters are
#     placed by qdedup's allocator, so only the data is compared);
#   - -S 0 compresses zero clusters too; a stock qemu-io write over a compressed cluster
#     and a read of every other one leave the image clean and right.
# -c without a qcow2 target, with -n or with dedup is refused with one line.
# shellcheck source=tests/lib/interop.bash
source "${QDEDUP_TESTS:-$(dirname "$0")/..}/lib/interop.bash"

python3 - src.raw <<'PY'
import hashlib, sys
cs = 65536
def noise(tag):
    return b"".join(hashlib.sha256(tag + i.to_bytes(4, "big")).digest() for i in range(cs // 32))
with open(sys.argv[1], "wb") as f:
    for i in range(40):
        k = i % 5
        if k == 0:
            f.write(bytes(cs))
        elif k == 1:
            f.write(noise(b"n%d" % i))
        elif k == 2:
            f.write(((b"line %d of a text file\n" % i) * 4000)[:cs])
        elif k == 3:
            f.write(bytes([i]) * cs)
        else:
            f.write(noise(b"half%d" % i)[:cs // 2] + bytes(cs // 2))
    f.write(b"the end" * 100)  # a partial last cluster
PY

for ct in zlib zstd; do
  for spec in 64k 4k 2M 64k,refcount_bits=1 16k,extended_l2=on 512 1k,refcount_bits=2; do
    o="compression_type=$ct,cluster_size=$spec"
    run "$QDEDUP" convert -f raw -O qcow2 -c -o "$o" src.raw d.qcow2
    expect_status 0 "convert -c -o $o"
    expect_check_clean d.qcow2 "convert -c -o $o"
    expect_eq "Images are identical." "$(qemu-img compare -f raw -F qcow2 src.raw d.qcow2)" \
      "convert -c -o $o: the data"
    qemu-img convert -f raw -O qcow2 -c -o "$o" src.raw q.qcow2
    case $spec in
      512|1k*)  # the same clusters compressed, wherever they lie
        expect_eq "$(qemu-img check q.qcow2 | grep -o '[0-9.]*% compressed')" \
          "$(qemu-img check d.qcow2 | grep -o '[0-9.]*% compressed')" \
          "convert -c -o $o: as many clusters compressed as by qemu-img" ;;
      *) if cmp -s q.qcow2 d.qcow2; then pass; else
           fail "convert -c -o $o: not qemu-img's file ($(cmp q.qcow2 d.qcow2 2>&1 | head -1))"
         fi ;;
    esac
  done
done

# Compressed indeed: the random clusters stay as they are, the rest shrinks.
"$QDEDUP" convert -f raw -O qcow2 src.raw plain.qcow2
"$QDEDUP" convert -f raw -O qcow2 -c src.raw c.qcow2
expect_eq yes "$( [ "$(stat -c %s c.qcow2)" -lt $(( $(stat -c %s plain.qcow2) * 2 / 3 )) ] &&
  echo yes)" "-c: the image is smaller ($(stat -c %s c.qcow2) vs $(stat -c %s plain.qcow2))"
expect_eq "$(qemu-img info --output=json c.qcow2 | jq -r '.["format-specific"].data["compression-type"]')" \
  zlib "-c: zlib by default"

# -S 0: zero clusters written, compressed too (as qemu-img).
"$QDEDUP" convert -f raw -O qcow2 -c -S 0 src.raw z.qcow2
qemu-img convert -f raw -O qcow2 -c -S 0 src.raw zq.qcow2
if cmp -s z.qcow2 zq.qcow2; then pass; else fail "convert -c -S 0: not qemu-img's file"; fi
expect_check_clean z.qcow2 "convert -c -S 0"

# Stock QEMU writes over a compressed cluster (copy on write to a new cluster).
qio c.qcow2 "write -q -P 0xab 70000 1000" "write -q -P 0xcd 131072 65536"
expect_check_clean c.qcow2 "-c, then qemu-io writes"
cp src.raw model.raw
truncate -s "$(qemu-img info --output=json c.qcow2 | jq '.["virtual-size"]')" model.raw
model_write model.raw 70000 1000 0xab
model_write model.raw 131072 65536 0xcd
expect_data_is c.qcow2 model.raw "-c, then qemu-io writes: every cluster"

run "$QDEDUP" convert -f raw -O raw -c src.raw x.raw
expect_error "-c -O raw"
expect_err_has "-c needs -O qcow2" "-c -O raw: the reason"
run "$QDEDUP" convert -f raw -O qcow2 -c -n src.raw c.qcow2
expect_error "-c -n"
expect_err_has "-c with -n is not supported" "-c -n: the reason"
run "$QDEDUP" convert -f raw -O qcow2 -c -o dedup=sha256 src.raw x.qcow2
expect_error "-c with dedup"
expect_err_has "-c with dedup is not supported" "-c with dedup: the reason"

finish
