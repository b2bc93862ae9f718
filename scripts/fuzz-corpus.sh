#!/usr/bin/env bash
# Makes the seed corpora of the fuzz targets (tests/fuzz/) from small images written by
# qemu-img/qemu-io and by qdedup: cluster sizes 512 B to 2 MiB, compat 0.10 and 1.1,
# refcount widths 1 to 64 bits, lazy refcounts, extended L2 entries, zlib and zstd
# compressed clusters, zero and discarded clusters, internal snapshots, a backing file,
# persistent bitmaps, and deduplicating images (every hash, valid and stale index); for
# check also the corruption corpus of tests/corpus/make-corpus.sh.
#
# Usage: bash scripts/fuzz-corpus.sh [OUTDIR]
#   OUTDIR (default build-fuzz/corpus/seeds, outside git) gets one directory per target:
#   info/, check/ and dedup/ whole images (at most 1 MiB); header/ their first cluster, cut after
#   the header extensions and backing name; dedup/ also the dedup extensions' payloads;
#   decompress/ every compressed cluster's stream, prefixed with the target's mode and
#   cluster size bytes (tests/fuzz/decompress_fuzzer.cpp), plus round-trip inputs.
# Needs qemu-img, qemu-io, python3 and a built build/qdedup (scripts/setup.sh). Replaces
# OUTDIR's previous contents. Takes a few seconds.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=${1:-$QDEDUP_ROOT/build-fuzz/corpus/seeds}
qdedup=${QDEDUP_BIN:-$QDEDUP_BUILD/qdedup}
for tool in qemu-img qemu-io python3; do
  command -v "$tool" >/dev/null || die "fuzz-corpus.sh: $tool is not installed"
done
[ -x "$qdedup" ] || die "fuzz-corpus.sh: $qdedup not built (run scripts/setup.sh)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qdedup-fuzz-corpus.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
img=$tmp/img
mkdir -p "$img"

# io FILE CMD...: qemu-io commands on one image, quietly.
io() {
  local f=$1 args=()
  shift
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f qcow2 "${args[@]}" "$f" >/dev/null
}
create() { qemu-img create -q -f qcow2 "$@"; }

log "fuzz-corpus: qemu-img images"
# Plain images with data, zeros and a discard, one per cluster size and format variant.
for cs in 512 4k 64k; do
  create -o cluster_size=$cs "$img/plain-$cs.qcow2" 1M
  io "$img/plain-$cs.qcow2" "write -P 0x11 0 8k" "write -z 8k 4k" "write -P 0x22 200k 3k" \
    "discard 0 4k"
done
create -o cluster_size=2M "$img/plain-2M.qcow2" 4M
io "$img/plain-2M.qcow2" "write -P 0x33 0 4k"
create -o compat=0.10,cluster_size=4k "$img/v2-4k.qcow2" 1M
io "$img/v2-4k.qcow2" "write -P 0x44 0 12k" "write -z 64k 4k"
for rb in 1 8 64; do
  create -o cluster_size=4k,refcount_bits=$rb "$img/refcount$rb-4k.qcow2" 1M
  io "$img/refcount$rb-4k.qcow2" "write -P 0x55 4k 8k"
done
create -o cluster_size=4k,lazy_refcounts=on "$img/lazy-4k.qcow2" 1M
io "$img/lazy-4k.qcow2" "write -P 0x66 0 4k"
create -o cluster_size=16k,extended_l2=on "$img/extl2-16k.qcow2" 1M
io "$img/extl2-16k.qcow2" "write -P 0x77 512 1k" "write -z 4k 2k" "write -P 0x78 32k 16k"
create -o cluster_size=64k,extended_l2=on "$img/extl2-64k.qcow2" 1M
io "$img/extl2-64k.qcow2" "write -P 0x79 2k 2k"

# Compressed clusters: zlib and zstd, whole clusters written with -c.
for ct in zlib zstd; do
  for cs in 512 4k 64k; do
    f=$img/compressed-$ct-$cs.qcow2
    create -o cluster_size=$cs,compression_type=$ct "$f" 1M
    io "$f" "write -c -P 0x5a 0 $cs" "write -P 0x01 $cs $cs"
    python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 256)" >"$tmp/pattern.raw"
    qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=$cs,compression_type=$ct \
      "$tmp/pattern.raw" "$img/converted-$ct-$cs.qcow2"
  done
done

# Snapshots (and data written after them: shared and copied clusters).
create -o cluster_size=4k "$img/snapshots-4k.qcow2" 1M
io "$img/snapshots-4k.qcow2" "write -P 0x12 0 16k"
qemu-img snapshot -c first "$img/snapshots-4k.qcow2"
io "$img/snapshots-4k.qcow2" "write -P 0x13 4k 4k"
qemu-img snapshot -c "second snapshot" "$img/snapshots-4k.qcow2"
create -o compat=0.10,cluster_size=512 "$img/snapshots-v2-512.qcow2" 64k
io "$img/snapshots-v2-512.qcow2" "write -P 0x14 0 1k"
qemu-img snapshot -c old "$img/snapshots-v2-512.qcow2"

# A backing file and an overlay naming it (relative name and backing format).
create -o cluster_size=4k "$img/base-4k.qcow2" 1M
io "$img/base-4k.qcow2" "write -P 0x21 0 64k"
(cd "$img" && create -o cluster_size=4k -b base-4k.qcow2 -F qcow2 overlay-4k.qcow2)
io "$img/overlay-4k.qcow2" "write -P 0x22 4k 4k"

# Persistent dirty bitmaps.
create -o cluster_size=4k "$img/bitmaps-4k.qcow2" 1M
qemu-img bitmap --add "$img/bitmaps-4k.qcow2" bm0 >/dev/null
qemu-img bitmap --add -g 64k "$img/bitmaps-4k.qcow2" "second bitmap" >/dev/null
io "$img/bitmaps-4k.qcow2" "write -P 0x31 0 8k"

log "fuzz-corpus: qdedup images"
# Raw data that repeats: 16 KiB blocks, some of them several times, and a partial tail.
python3 - "$tmp/dups.raw" <<'PY'
import hashlib, sys
blocks = [hashlib.sha256(bytes([i])).digest() * 512 for i in range(4)]
order = [0, 1, 0, 2, 1, 0, 3, 3]
with open(sys.argv[1], "wb") as f:
    for i in order:
        f.write(blocks[i])
    f.write(blocks[2][:1000])
PY
for hash in sha256 skein blake2b xxh3; do
  "$qdedup" -q create -f qcow2 -o dedup=$hash,dedup_verify=on "$img/dedup-empty-$hash.qcow2" 1M
  "$qdedup" -q convert -O qcow2 -o dedup=$hash,dedup_verify=on "$tmp/dups.raw" \
    "$img/dedup-$hash.qcow2"
done
"$qdedup" -q convert -O qcow2 -o dedup=sha256,cluster_size=512 "$tmp/dups.raw" \
  "$img/dedup-sha256-512.qcow2"
"$qdedup" -q convert -O qcow2 -o dedup=sha256,refcount_bits=8 "$tmp/dups.raw" \
  "$img/dedup-sha256-refcount8.qcow2"
"$qdedup" -q convert -O qcow2 -o dedup=sha256,compat=1.1,compression_type=zstd \
  "$tmp/dups.raw" "$img/dedup-sha256-zstd.qcow2"
# Written by stock QEMU afterwards: the index is stale (autoclear bit cleared).
cp "$img/dedup-sha256.qcow2" "$img/dedup-stale.qcow2"
io "$img/dedup-stale.qcow2" "write -P 0x41 0 4k"
"$qdedup" -q create -f qcow2 -o cluster_size=4k "$img/qdedup-plain-4k.qcow2" 1M
"$qdedup" -q convert -O qcow2 "$tmp/dups.raw" "$img/qdedup-converted.qcow2"

log "fuzz-corpus: seeds per target into $out"
rm -rf "$out"
mkdir -p "$out"/{header,info,check,dedup,decompress}
python3 - "$img" "$out" <<'PY'
import hashlib, os, struct, sys

img_dir, out = sys.argv[1], sys.argv[2]
MAX_IMAGE = 1 << 20
DEDUP_EXT = 0x51444450

def be32(b, o): return struct.unpack_from(">I", b, o)[0]
def be64(b, o): return struct.unpack_from(">Q", b, o)[0]

def put(target, name, data):
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)

def extensions(b, start, end):
    """Yields (type, payload) of the header extensions in b[start:end]."""
    off = start
    while off + 8 <= end:
        t, n = be32(b, off), be32(b, off + 4)
        if t == 0 or off + 8 + n > end:
            return
        yield t, b[off + 8: off + 8 + n]
        off += 8 + (n + 7) // 8 * 8

def compressed_streams(b, cluster_bits, l1_off, l1_size, extended):
    cs = 1 << cluster_bits
    entry = 16 if extended else 8
    shift = 62 - (cluster_bits - 8)
    mask = (1 << (cluster_bits - 8)) - 1
    for i in range(l1_size):
        l2 = be64(b, l1_off + 8 * i) & 0x00fffffffffffe00
        if l2 == 0 or l2 + cs > len(b):
            continue
        for j in range(cs // entry):
            e = be64(b, l2 + j * entry)
            if not e & (1 << 62):
                continue
            off = e & ((1 << shift) - 1)
            sectors = ((e >> shift) & mask) + 1
            length = sectors * 512 - (off & 511)
            yield b[off: off + length]

for name in sorted(os.listdir(img_dir)):
    b = open(os.path.join(img_dir, name), "rb").read()
    stem = name[:-len(".qcow2")]
    version, cluster_bits = be32(b, 4), be32(b, 20)
    cs = 1 << cluster_bits
    header_length = be32(b, 100) if version >= 3 else 72
    backing_off, backing_size = be64(b, 8), be32(b, 16)
    ext_end = backing_off if backing_off else cs
    exts = list(extensions(b, header_length, min(ext_end, len(b))))
    is_dedup = any(t == DEDUP_EXT for t, _ in exts)
    # header: cluster 0 up to the end marker after the extensions (and the name).
    end = header_length + sum(8 + (len(p) + 7) // 8 * 8 for _, p in exts) + 8
    if backing_off:
        end = max(end, backing_off + backing_size)
    put("header", stem, b[:min(cs, len(b), end)])
    if len(b) <= MAX_IMAGE:
        put("info", stem, b)
        put("check", stem, b)
        if is_dedup:
            put("dedup", stem, b)
    for t, p in exts:
        if t == DEDUP_EXT:
            put("dedup", stem + ".ext", p)
    # decompress: every compressed cluster of the image, as the target reads it.
    compression_type = b[104] if version >= 3 and header_length > 104 else 0
    extended = version >= 3 and bool(be64(b, 72) & (1 << 4))
    seen = set()
    for stream in compressed_streams(b, cluster_bits, be64(b, 40), be32(b, 36), extended):
        h = hashlib.sha256(stream).hexdigest()[:12]
        if h in seen or len(stream) > 65536:
            continue
        seen.add(h)
        put("decompress", f"{stem}-{h}", bytes([compression_type, cluster_bits - 9]) + stream)

# decompress: round-trip inputs (mode bit 1) for both types and a few cluster sizes.
for t in (0, 1):
    for bits in (9, 12, 16):
        put("decompress", f"roundtrip-{t}-{bits}",
            bytes([t | 2, bits - 9]) + b"qdedup round trip " + bytes(range(64)))
# A dedup extension payload with an index that lies outside any file.
ext = bytearray(144)
struct.pack_into(">IIIIQQQQ", ext, 0, 1, 1, 0, 32, 1 << 40, 48, 1, 0xffff)
put("dedup", "ext-index-far", bytes(ext))
PY
# check: also the corruption corpus of the check tests (tests/corpus/make-corpus.sh),
# images damaged in every way qemu-img check knows.
log "fuzz-corpus: the corruption corpus for check"
QDEDUP="$qdedup" bash "$QDEDUP_ROOT/tests/corpus/make-corpus.sh" "$tmp/corrupt" >/dev/null ||
  die "fuzz-corpus.sh: tests/corpus/make-corpus.sh failed"
for f in "$tmp/corrupt"/*.qcow2; do
  [ "$(stat -c %s "$f")" -le $((1 << 20)) ] && cp "$f" "$out/check/corrupt-$(basename "$f" .qcow2)"
done
for t in header info check dedup decompress; do
  log "fuzz-corpus: $t: $(find "$out/$t" -type f | wc -l) seeds"
done
