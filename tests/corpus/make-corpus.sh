#!/usr/bin/env bash
# make-corpus.sh OUTDIR: builds the corruption corpus for `qdedup check` (issue 4).
#
# Every case starts from an image made by `qemu-img create` + `qemu-io` (or, for the dedup
# cases, by `$QDEDUP convert -O qcow2 -o dedup=sha256` of a raw file with duplicate
# clusters) and is then damaged at offsets read from the image itself (header, L1, L2,
# refcount table and blocks, snapshot table, dedup extension and index), never hard-coded.
#
# OUTDIR receives, per case NAME:
#   NAME.qcow2          the damaged image
#   NAME.pristine.raw   the guest data before the damage (qemu-img convert -O raw)
#   NAME.qemu-check.txt what `qemu-img check` (human) printed, stdout then stderr
# and cases.tsv, the manifest: one header line, then one line per case with these
# tab-separated columns:
#   case                      the case name (NAME)
#   cluster_size              bytes
#   dedup_image               1: the image has the dedup extension (made by qdedup convert)
#   kind                      qcow2: `qdedup check` must report what qemu-img check does
#                             (exit status, corruptions, leaks, the finding lines);
#                             dedup: a fault of the dedup index only, which qemu-img check
#                             does not see (its image checks clean);
#                             both: qemu-img's findings plus a dedup one: qdedup reports
#                             qemu-img's leaks and finding lines, and more corruptions
#   recoverable               1: after a repair all guest data must equal the pristine dump
#   lost                      guest byte ranges whose data the damage destroyed, "OFF+LEN"
#                             comma separated, or "-"; the rest must equal the pristine dump
#   qemu_exit, qemu_corruptions, qemu_leaks, qemu_check_errors
#                             what `qemu-img check --output=json` reported, measured here
#   qdedup_exit               the exit status expected of `qdedup check`: qemu_exit for
#                             kind qcow2, qdedup's own expectation (docs/format.md, section
#                             6) for kinds dedup and both
#   qdedup_verify_exit        the same for `qdedup check --verify-hashes`
#   qdedup_index              the dedup index state `qdedup check` is expected to report
#                             (valid, stale), or "-": no expectation (no extension, or a
#                             damaged index whose wording is qdedup's to choose)
#   qdedup_repair             what `qdedup check -r all` must leave: clean (both checkers
#                             find nothing), or as-qemu (what qemu-img's repair leaves:
#                             qemu_repaired)
#   qemu_repair_exit          exit of `qemu-img check -r all` on a copy (reference only)
#   qemu_repaired             "EXIT/CORRUPTIONS/LEAKS" of a plain `qemu-img check` after it
#   qemu_repaired_data        same | differs | failed: guest data after qemu-img's repair
#                             against the pristine dump, outside the lost ranges
#   description               what was damaged
#
# Each case also states the finding it is built for (qemu-img's exit status and a line
# of its stderr); the build fails when qemu-img does not report it, so a corpus that
# was built is a corpus whose every image carries its intended fault.
#
# Needs qemu-img, qemu-io, python3, jq, and for the dedup cases QDEDUP (the qdedup
# binary; default: build/qdedup of this tree).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${QDEDUP:=$HERE/../../build/qdedup}"
for c in qemu-img qemu-io python3 jq; do
  command -v "$c" >/dev/null || { echo "make-corpus: $c is not installed" >&2; exit 2; }
done
[ -x "$QDEDUP" ] || { echo "make-corpus: QDEDUP=$QDEDUP is not executable" >&2; exit 2; }
[[ $QDEDUP == /* ]] || QDEDUP="$PWD/$QDEDUP"
mkdir -p "$OUT"
cd "$OUT"
OUT=$PWD

die() {
  echo "make-corpus: ${C:-}: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
# q2 CMD IMG ARGS...: reads and patches QCOW2 structures. Numbers in and out are decimal
# (input also 0x..., and k/M suffixes); "guest" is a guest byte offset, "host" a host byte
# offset.
#   hdr IMG                       header fields as JSON
#   get64 IMG OFF / put64 IMG OFF V / put32 / put8 / or64 IMG OFF MASK / andnot64
#   l1e IMG GUEST [L1OFF]         "<file offset> <value>" of the L1 entry mapping GUEST
#   l2e IMG GUEST [L1OFF]         "<file offset> <value>" of the L2 entry mapping GUEST
#   host IMG GUEST                host offset of GUEST's cluster (0 if none)
#   rc-get IMG HOST / rc-set IMG HOST V    stored refcount of HOST's cluster
#   rt-entry IMG I                "<file offset> <value>" of refcount table entry I
#   map IMG                       "guest host" per allocated active L2 entry
#   snapshots IMG                 the snapshot table as JSON
#   dedup IMG                     the dedup extension as JSON (with file offsets)
#   index IMG                     "k <file offset> <hash hex> <host> <owner> <refcount>"
#   index-set-host IMG K HOST / index-set-hash IMG K HEX / index-swap IMG J K
#   fix-checksum IMG              recompute the index checksum in the extension
#   flip IMG OFF                  xor the byte at OFF with 0xff
# ---------------------------------------------------------------------------------------
read -r -d '' Q2PY <<'PY' || true
import hashlib, json, struct, sys

OFF_MASK = 0x00fffffffffffe00
DEDUP_EXT = 0x51444450


class Img:
    def __init__(self, path, write):
        self.path = path
        self.f = open(path, "r+b" if write else "rb")
        h = self.rd(0, 112)
        if h[:4] != b"QFI\xfb":
            sys.exit("%s: not a qcow2 image" % path)
        self.version, = struct.unpack(">I", h[4:8])
        self.cluster_bits, = struct.unpack(">I", h[20:24])
        self.cs = 1 << self.cluster_bits
        self.size, = struct.unpack(">Q", h[24:32])
        (self.l1_size, self.l1_off, self.rt_off, self.rt_clusters, self.nb_snap,
         self.snap_off) = struct.unpack(">IQQIIQ", h[36:72])
        if self.version >= 3:
            self.incompat, self.compat, self.autoclear, self.order, self.hlen = \
                struct.unpack(">QQQII", h[72:104])
        else:
            self.incompat = self.compat = self.autoclear = 0
            self.order, self.hlen = 4, 72
        self.esize = 16 if self.incompat & 0x10 else 8
        self.l2_entries = self.cs // self.esize
        self.rc_bits = 1 << self.order
        self.rb_entries = self.cs * 8 // self.rc_bits

    def rd(self, off, n):
        self.f.seek(off)
        return self.f.read(n)

    def wr(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def get64(self, off):
        return struct.unpack(">Q", self.rd(off, 8))[0]

    def put64(self, off, v):
        self.wr(off, struct.pack(">Q", v))

    def l1e(self, guest, l1_off=None):
        l1_off = self.l1_off if l1_off is None else l1_off
        i = (guest >> self.cluster_bits) // self.l2_entries
        return l1_off + 8 * i, self.get64(l1_off + 8 * i)

    def l2e(self, guest, l1_off=None):
        _, l1v = self.l1e(guest, l1_off)
        if not l1v & OFF_MASK:
            sys.exit("guest offset %#x: no L2 table" % guest)
        i = (guest >> self.cluster_bits) % self.l2_entries
        loc = (l1v & OFF_MASK) + self.esize * i
        return loc, self.get64(loc)

    def rc_loc(self, c):
        rte = self.get64(self.rt_off + 8 * (c // self.rb_entries)) & ~0x1ff
        if not rte:
            sys.exit("cluster %d has no refcount block" % c)
        i, bits = c % self.rb_entries, self.rc_bits
        return rte + i * bits // 8, (i * bits % 8 if bits < 8 else 0), bits

    def rc_get(self, c):
        off, shift, bits = self.rc_loc(c)
        if bits < 8:
            return (self.rd(off, 1)[0] >> shift) & ((1 << bits) - 1)
        return int.from_bytes(self.rd(off, bits // 8), "big")

    def rc_set(self, c, v):
        off, shift, bits = self.rc_loc(c)
        if bits < 8:
            m = ((1 << bits) - 1) << shift
            self.wr(off, bytes([(self.rd(off, 1)[0] & ~m) | ((v << shift) & m)]))
        else:
            self.wr(off, v.to_bytes(bits // 8, "big"))

    def map(self):
        out = []
        for i in range(self.l1_size):
            l2 = self.get64(self.l1_off + 8 * i) & OFF_MASK
            if not l2:
                continue
            for j in range(self.l2_entries):
                e = self.get64(l2 + self.esize * j)
                if e & (1 << 62) or not e & OFF_MASK:
                    continue
                out.append(((i * self.l2_entries + j) << self.cluster_bits, e & OFF_MASK))
        return out

    def snapshots(self):
        out, off = [], self.snap_off
        for _ in range(self.nb_snap):
            l1o, l1s, idl, nl = struct.unpack(">QIHH", self.rd(off, 16))
            extra, = struct.unpack(">I", self.rd(off + 36, 4))
            sid = self.rd(off + 40 + extra, idl).decode()
            name = self.rd(off + 40 + extra + idl, nl).decode()
            out.append({"entry": off, "l1_offset": l1o, "l1_size": l1s, "id": sid,
                        "name": name})
            off += (40 + extra + idl + nl + 7) & ~7
        return out

    def dedup(self):
        off = self.hlen
        while off + 8 <= self.cs:
            t, n = struct.unpack(">II", self.rd(off, 8))
            if t == 0:
                break
            if t == DEDUP_EXT:
                d = self.rd(off + 8, 144)
                hs, = struct.unpack(">I", d[12:16])
                io, isz, ie, cap = struct.unpack(">QQQQ", d[16:48])
                return {"ext": off + 8, "hash_size": hs, "index_offset": io,
                        "index_size": isz, "index_entries": ie, "refcount_cap": cap,
                        "cap_at": off + 8 + 40, "checksum_at": off + 8 + 48,
                        "entry_size": hs + 16}
            off += 8 + ((n + 7) & ~7)
        sys.exit("%s: no dedup extension" % self.path)

    def index(self):
        d = self.dedup()
        hs, out = d["hash_size"], []
        for k in range(d["index_entries"]):
            at = d["index_offset"] + k * d["entry_size"]
            e = self.rd(at, d["entry_size"])
            host, owner = struct.unpack(">QQ", e[hs:hs + 16])
            out.append((k, at, e[:hs], host, owner))
        return d, out

    def fix_checksum(self):
        d = self.dedup()
        data = self.rd(d["index_offset"], d["index_size"])
        self.wr(d["checksum_at"], hashlib.sha256(data).digest())


def num(s):
    mult = {"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s and s[-1] in mult:
        return int(s[:-1], 0) * mult[s[-1]]
    return int(s, 0) & ((1 << 64) - 1)  # bash prints a set bit 63 as a negative number


def main():
    cmd, path, a = sys.argv[1], sys.argv[2], sys.argv[3:]
    writes = {"put64", "put32", "put8", "or64", "andnot64", "rc-set", "fix-checksum",
              "index-set-host", "index-set-hash", "index-swap", "flip"}
    im = Img(path, cmd in writes)
    if cmd == "hdr":
        print(json.dumps({k: getattr(im, k) for k in (
            "version", "cluster_bits", "cs", "size", "l1_size", "l1_off", "rt_off",
            "rt_clusters", "nb_snap", "snap_off", "incompat", "compat", "autoclear", "order",
            "hlen", "rb_entries", "l2_entries")}))
    elif cmd == "get64":
        print(im.get64(num(a[0])))
    elif cmd == "put64":
        im.put64(num(a[0]), num(a[1]))
    elif cmd == "put32":
        im.wr(num(a[0]), struct.pack(">I", num(a[1])))
    elif cmd == "put8":
        im.wr(num(a[0]), bytes([num(a[1])]))
    elif cmd == "flip":
        im.wr(num(a[0]), bytes([im.rd(num(a[0]), 1)[0] ^ 0xff]))
    elif cmd == "or64":
        im.put64(num(a[0]), im.get64(num(a[0])) | num(a[1]))
    elif cmd == "andnot64":
        im.put64(num(a[0]), im.get64(num(a[0])) & ~num(a[1]))
    elif cmd in ("l1e", "l2e"):
        f = im.l1e if cmd == "l1e" else im.l2e
        print(*f(num(a[0]), num(a[1]) if len(a) > 1 else None))
    elif cmd == "host":
        _, l1v = im.l1e(num(a[0]))
        print(im.l2e(num(a[0]))[1] & OFF_MASK if l1v & OFF_MASK else 0)
    elif cmd == "rc-get":
        print(im.rc_get(num(a[0]) >> im.cluster_bits))
    elif cmd == "rc-set":
        im.rc_set(num(a[0]) >> im.cluster_bits, num(a[1]))
    elif cmd == "rt-entry":
        loc = im.rt_off + 8 * num(a[0])
        print(loc, im.get64(loc))
    elif cmd == "map":
        for g, h in im.map():
            print(g, h)
    elif cmd == "snapshots":
        print(json.dumps(im.snapshots()))
    elif cmd == "dedup":
        print(json.dumps(im.dedup()))
    elif cmd == "index":
        _, entries = im.index()
        for k, at, h, host, owner in entries:
            print(k, at, h.hex(), host, owner, im.rc_get(host >> im.cluster_bits))
    elif cmd == "index-set-host":
        d, entries = im.index()
        im.put64(entries[num(a[0])][1] + d["hash_size"], num(a[1]))
    elif cmd == "index-set-hash":
        d, entries = im.index()
        im.wr(entries[num(a[0])][1], bytes.fromhex(a[1]))
    elif cmd == "index-swap":
        d, entries = im.index()
        j, k, n = num(a[0]), num(a[1]), d["entry_size"]
        ej, ek = im.rd(entries[j][1], n), im.rd(entries[k][1], n)
        im.wr(entries[j][1], ek)
        im.wr(entries[k][1], ej)
    elif cmd == "fix-checksum":
        im.fix_checksum()
    else:
        sys.exit("q2: unknown command " + cmd)


main()
PY

# The interpreter itself, not a version manager's shim (which costs 0.2 s a call).
PY=$(python3 -c 'import sys; print(sys.executable)')
q2() { "$PY" -S -c "$Q2PY" "$@"; }

BIT63=$((1 << 63))
hdr() { q2 hdr "$1" | jq -r ".$2"; }
# The two words of "loc value" output.
l1e() { read -r LOC VAL < <(q2 l1e "$@"); }
l2e() { read -r LOC VAL < <(q2 l2e "$@"); }
roundup() { echo $(( ($1 + $2 - 1) / $2 * $2 )); }
# sz BYTES: 65536 -> 64k, 4096 -> 4k, 512 -> 512 (for case names).
sz() { if [ $(($1 % 1024)) -eq 0 ]; then echo "$(($1 / 1024))k"; else echo "$1"; fi; }
MiB=$((1 << 20))

# ---------------------------------------------------------------------------------------
# Base images
# ---------------------------------------------------------------------------------------

# base_std IMG CLUSTER_SIZE [CREATE_OPTS]: 4 MiB, data at guest 0 (2 clusters), 1 MiB (2
# clusters) and 3 MiB (1 cluster), each cluster with its own pattern byte.
base_std() {
  local img=$1 cs=$2 opts=${3:-}
  rm -f "$img"
  qemu-img create -q -f qcow2 -o "cluster_size=$cs${opts:+,$opts}" "$img" 4M
  qemu-io -f qcow2 "$img" \
    -c "write -P 0x11 0 $cs" -c "write -P 0x12 $cs $cs" \
    -c "write -P 0x21 1M $cs" -c "write -P 0x22 $((1048576 + cs)) $cs" \
    -c "write -P 0x31 3M $cs" >/dev/null || die "qemu-io on $img failed"
}

# base_snap IMG CS: base_std plus an internal snapshot, so every cluster has refcount 2.
base_snap() {
  base_std "$1" "$2"
  qemu-img snapshot -c snap1 "$1"
}

# base_dedup IMG CS: qdedup convert of a raw disk whose clusters repeat: guest clusters
#   0..12 = b0 b1 b2 b0 b3 0 b1 b1 b4 b5 b0 0 b2, the rest zero. So b0 and b1 are stored
#   once with refcount 3, b2 with refcount 2, b3 b4 b5 with refcount 1.
base_dedup() {
  local img=$1 cs=$2 opts=dedup=sha256
  [ "$cs" -eq 4096 ] || opts="$opts,cluster_size=$cs"
  python3 - "$img.src.raw" "$cs" <<'EOF'
import random, sys
path, cs = sys.argv[1], int(sys.argv[2])
r = random.Random(cs)
blocks = [r.randbytes(cs) for _ in range(6)]
with open(path, "wb") as f:
    for k in [0, 1, 2, 0, 3, None, 1, 1, 4, 5, 0, None, 2]:
        f.write(bytes(cs) if k is None else blocks[k])
    f.truncate(4 << 20)
EOF
  rm -f "$img"
  "$QDEDUP" -q convert -O qcow2 -o "$opts" "$img.src.raw" "$img" || die "qdedup convert failed"
  rm -f "$img.src.raw"
  [ "$("$QDEDUP" info --output=json "$img" | jq '.qdedup["index-valid"]')" = true ] ||
    die "qdedup convert left no valid index in $img"
}

# Index entries of IMG whose cluster has refcount R: "k at hash host owner refcount" lines.
index_with_refcount() { q2 index "$1" | awk -v r="$2" '$6 == r'; }
# Guest offsets mapped to host offset HOST.
sharers() { q2 map "$1" | awk -v h="$2" '$2 == h { print $1 }'; }

# ---------------------------------------------------------------------------------------
# Case bookkeeping
# ---------------------------------------------------------------------------------------
C=""        # the case being built
IMG=""      # its image
LOST="-"    # guest ranges destroyed by the damage
REPAIR=clean  # what qdedup check -r all must leave
CS=0

begin() {
  C=$1
  IMG="$C.qcow2"
  LOST="-"
  REPAIR=clean
  rm -f "$IMG" "$C".*
}

pristine() {
  qemu-img convert -f qcow2 -O raw "$IMG" "$C.pristine.raw" || die "pristine dump failed"
  CS=$(hdr "$IMG" cs)
}

# lose GUEST_OFF LEN: the damage destroyed these guest bytes.
lose() {
  if [ "$LOST" = "-" ]; then LOST="$1+$2"; else LOST="$LOST,$1+$2"; fi
}

# mask_lost FILE: zeroes the lost ranges in FILE (a raw dump) in place.
mask_lost() {
  local r off len
  [ "$LOST" = "-" ] && return 0
  for r in ${LOST//,/ }; do
    off=${r%+*} len=${r#*+}
    head -c "$len" /dev/zero |
      dd of="$1" bs=64k seek="$off" oflag=seek_bytes conv=notrunc status=none
  done
}

# qemu_check IMG: sets QRC, QCORR, QLEAKS, QERRS from qemu-img check --output=json.
qemu_check() {
  local j
  QRC=0
  j=$(qemu-img check --output=json -f qcow2 "$1" 2>/dev/null) || QRC=$?
  if [ -n "$j" ]; then
    read -r QCORR QLEAKS QERRS < <(jq -r '"\(.corruptions // 0) \(.leaks // 0) \(.["check-errors"] // 0)"' <<<"$j")
  else
    QCORR=- QLEAKS=- QERRS=-
  fi
}

MANIFEST="$OUT/cases.tsv"
printf 'case\tcluster_size\tdedup_image\tkind\trecoverable\tlost\tqemu_exit\tqemu_corruptions\tqemu_leaks\tqemu_check_errors\tqdedup_exit\tqdedup_verify_exit\tqdedup_index\tqdedup_repair\tqemu_repair_exit\tqemu_repaired\tqemu_repaired_data\tdescription\n' >"$MANIFEST"

# record KIND WANT_QEMU_EXIT WANT_LINE QDEDUP_EXIT QDEDUP_VERIFY_EXIT QDEDUP_INDEX DESC
#   WANT_LINE: an extended regex that qemu-img check's stderr must match ("" for none).
#   QDEDUP_EXIT "=": the same as qemu-img's exit. $REPAIR: the qdedup_repair column.
record() {
  local kind=$1 want_exit=$2 want_line=$3 qd_exit=$4 qd_vexit=$5 qd_index=$6 desc=$7
  qemu-img check -f qcow2 "$IMG" >"$C.qemu-check.txt" 2>"$C.qemu-check.err" || true
  cat "$C.qemu-check.err" >>"$C.qemu-check.txt"
  qemu_check "$IMG"
  [ "$QRC" -eq "$want_exit" ] ||
    die "qemu-img check exit $QRC, the case is built for $want_exit: $(head -c 600 "$C.qemu-check.txt")"
  if [ -n "$want_line" ] && ! grep -qE -- "$want_line" "$C.qemu-check.err"; then
    die "qemu-img check does not report /$want_line/: $(head -c 600 "$C.qemu-check.err")"
  fi
  if [ "$kind" = dedup ] && [ "$QCORR$QLEAKS$QERRS" != 000 ]; then
    die "a dedup-only case must check clean with qemu-img: $QCORR/$QLEAKS/$QERRS"
  fi
  rm -f "$C.qemu-check.err"
  [ "$qd_exit" = "=" ] && qd_exit=$QRC
  [ "$qd_vexit" = "=" ] && qd_vexit=$qd_exit
  local recoverable=0
  [ "$LOST" = "-" ] && recoverable=1

  # qemu-img's own repair, on a copy, for reference.
  local rep="$C.qemu-repair.tmp" rrc=0 data=failed
  local save_rc=$QRC save_c=$QCORR save_l=$QLEAKS save_e=$QERRS
  cp "$IMG" "$rep"
  qemu-img check -q -r all -f qcow2 "$rep" >/dev/null 2>&1 || rrc=$?
  qemu_check "$rep"
  local repaired="$QRC/$QCORR/$QLEAKS"
  if qemu-img convert -f qcow2 -O raw "$rep" "$rep.raw" 2>/dev/null; then
    cp "$C.pristine.raw" "$rep.want"
    mask_lost "$rep.want"
    mask_lost "$rep.raw"
    if cmp -s "$rep.want" "$rep.raw"; then data=same; else data=differs; fi
  fi
  rm -f "$rep" "$rep.raw" "$rep.want"

  local dedup_image=0
  if q2 dedup "$IMG" >/dev/null 2>&1; then dedup_image=1; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$C" "$CS" "$dedup_image" "$kind" "$recoverable" "$LOST" "$save_rc" "$save_c" "$save_l" "$save_e" \
    "$qd_exit" "$qd_vexit" "$qd_index" "$REPAIR" "$rrc" "$repaired" "$data" "$desc" >>"$MANIFEST"
  printf '%-28s qemu-img check: exit %s, %s corruptions, %s leaks, %s check errors\n' \
    "$C" "$save_rc" "$save_c" "$save_l" "$save_e"
}

# The shorthand of the common record forms.
std_case() { record qcow2 "$1" "$2" = = - "$3"; }
dedup_std_case() { record qcow2 "$1" "$2" = = "$3" "$4"; }
dedup_only_case() { record dedup 0 "" "$1" "$2" "$3" "$4"; }

# ---------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------
L_LEAK='^Leaked cluster [0-9]+ refcount=[0-9]+ reference=[0-9]+$'
L_REF='^ERROR cluster [0-9]+ refcount=[0-9]+ reference=[0-9]+$'
L_COPIED='^ERROR OFLAG_COPIED data cluster: l2_entry=[0-9a-f]+ refcount=[0-9]+$'
L_COPIED_L2='^ERROR OFLAG_COPIED L2 cluster: l1_index=[0-9]+ l1_entry=[0-9a-f]+ refcount=[0-9]+$'

case_clean_64k() {
  begin clean-64k
  base_std "$IMG" 65536
  pristine
  std_case 0 "" "control: an undamaged image"
}

case_clean_snapshot() {
  begin clean-snapshot
  base_snap "$IMG" 65536
  pristine
  std_case 0 "" "control: an undamaged image with an internal snapshot (refcounts 2)"
}

case_clean_lazy_dirty() {
  begin clean-lazy-dirty-64k
  base_std "$IMG" 65536 lazy_refcounts=on
  pristine
  q2 or64 "$IMG" 72 1
  std_case 0 "" "dirty bit set by hand on a consistent lazy_refcounts image"
}

# Two clusters past the end of the image, refcount 1, referenced by nothing.
leak_grow() {
  local size end
  size=$(stat -c %s "$IMG")
  end=$(roundup "$size" "$CS")
  truncate -s $((end + 2 * CS)) "$IMG"
  q2 rc-set "$IMG" "$end" 1
  q2 rc-set "$IMG" $((end + CS)) 1
}

case_leak() {
  local cs=$1
  begin "leak-$(sz "$cs")"
  base_std "$IMG" "$cs"
  pristine
  leak_grow
  std_case 3 "$L_LEAK" "two clusters appended to the file with refcount 1 and no reference"
}

case_leak_shared() {
  begin leak-shared-snapshot
  base_snap "$IMG" 65536
  pristine
  local h
  h=$(q2 host "$IMG" 1M)
  q2 rc-set "$IMG" "$h" 3
  std_case 3 "$L_LEAK" "a data cluster shared by the active L2 and a snapshot: refcount 2 -> 3"
}

case_refcount_low() {
  begin refcount-low-snapshot
  base_snap "$IMG" 65536
  pristine
  local h
  h=$(q2 host "$IMG" 64k)
  [ "$(q2 rc-get "$IMG" "$h")" -eq 2 ] || die "snapshot did not share the cluster"
  q2 rc-set "$IMG" "$h" 1
  std_case 2 "$L_REF" "data cluster with 2 references (active + snapshot) stored refcount 1"
}

case_refcount_low_l2() {
  begin refcount-low-l2-snapshot
  base_snap "$IMG" 65536
  pristine
  l1e "$IMG" 0
  local l2=$((VAL & 0x00fffffffffffe00))
  q2 rc-set "$IMG" "$l2" 1
  std_case 2 "$L_COPIED_L2" "L2 table shared by the active L1 and a snapshot L1: refcount 2 -> 1"
}

case_refcount_zero() {
  local cs=$1 opts=${2:-} what=${3:-}
  begin "refcount-zero-data-$(sz "$cs")${what:+-$what}"
  base_std "$IMG" "$cs" "$opts"
  pristine
  q2 rc-set "$IMG" "$(q2 host "$IMG" 1M)" 0
  std_case 2 "$L_REF" "used data cluster (guest 1M) with refcount 0${opts:+ ($opts)}"
}

case_refcount_zero_l2() {
  begin refcount-zero-l2-4k
  base_std "$IMG" 4096
  pristine
  l1e "$IMG" 3M
  q2 rc-set "$IMG" $((VAL & 0x00fffffffffffe00)) 0
  std_case 2 "$L_REF" "L2 table (of guest 2M-4M) with refcount 0"
}

case_refcount_zero_refblock() {
  begin refcount-zero-refblock
  base_std "$IMG" 65536
  pristine
  read -r _ rb < <(q2 rt-entry "$IMG" 0)
  q2 rc-set "$IMG" "$rb" 0
  std_case 2 "$L_REF" "the refcount block's own refcount set to 0"
}

case_copied_shared() {
  begin copied-set-shared-snapshot
  base_snap "$IMG" 65536
  pristine
  l2e "$IMG" 64k
  q2 or64 "$IMG" "$LOC" "$BIT63"
  std_case 2 "$L_COPIED" "QCOW_OFLAG_COPIED set on an active L2 entry whose cluster has refcount 2"
}

case_copied_missing() {
  local cs=$1
  begin "copied-missing-$(sz "$cs")"
  base_std "$IMG" "$cs"
  pristine
  l2e "$IMG" 1M
  q2 andnot64 "$IMG" "$LOC" "$BIT63"
  std_case 2 "$L_COPIED" "QCOW_OFLAG_COPIED cleared on an L2 entry whose cluster has refcount 1"
}

case_copied_missing_l1() {
  begin copied-missing-l1-4k
  base_std "$IMG" 4096
  pristine
  l1e "$IMG" 0
  q2 andnot64 "$IMG" "$LOC" "$BIT63"
  std_case 2 "$L_COPIED_L2" "QCOW_OFLAG_COPIED cleared on an L1 entry whose L2 table has refcount 1"
}

case_l2_into_header() {
  local cs=$1
  begin "l2-into-header-$(sz "$cs")"
  base_std "$IMG" "$cs"
  pristine
  l2e "$IMG" "$cs"
  q2 put64 "$IMG" "$LOC" $((BIT63 | 0x200))
  lose "$CS" "$CS"
  std_case 2 'Data cluster is not properly aligned' \
    "L2 entry of guest cluster 1 pointing at offset 0x200 (inside the header cluster)"
}

case_l2_into_l1() {
  begin l2-into-l1-64k
  base_std "$IMG" 65536
  pristine
  l2e "$IMG" 64k
  q2 put64 "$IMG" "$LOC" $((BIT63 | $(hdr "$IMG" l1_off)))
  lose 65536 65536
  std_case 2 "$L_REF" "L2 entry of guest cluster 1 pointing at the active L1 table"
}

case_l1_same_l2() {
  begin l1-same-l2-4k
  base_std "$IMG" 4096
  pristine
  [ "$(hdr "$IMG" l1_size)" -ge 2 ] || die "needs two L1 entries"
  l1e "$IMG" 0
  local v=$VAL
  l1e "$IMG" 2M
  q2 put64 "$IMG" "$LOC" "$v"
  lose $((2 * MiB)) $((2 * MiB))
  std_case 2 "$L_REF" "L1 entries 0 and 1 pointing at the same L2 table"
}

case_l1_into_data() {
  begin l1-l2-overlaps-data-4k
  base_std "$IMG" 4096
  # A data cluster of zeros: as an L2 table it maps nothing.
  qemu-io -f qcow2 "$IMG" -c "write -P 0 $((1048576 + 8192)) 4k" >/dev/null
  pristine
  local h
  h=$(q2 host "$IMG" $((1048576 + 8192)))
  l1e "$IMG" 2M
  q2 put64 "$IMG" "$LOC" $((BIT63 | h))
  lose $((2 * MiB)) $((2 * MiB))
  std_case 2 "$L_REF" "L1 entry 1 pointing at a (zero-filled) data cluster: L2 table overlaps data"
}

case_truncated() {
  local cs=$1
  begin "truncated-$(sz "$cs")"
  base_std "$IMG" "$cs"
  pristine
  # Cut in the middle of the second highest data cluster.
  local cut hosts
  hosts=$(q2 map "$IMG" | awk '{ print $2 }' | sort -n)
  cut=$(( $(tail -n 2 <<<"$hosts" | head -n 1) + CS / 2 ))
  while read -r g h; do
    if [ $((h + CS)) -gt "$cut" ]; then lose "$g" "$CS"; fi
  done < <(q2 map "$IMG")
  truncate -s "$cut" "$IMG"
  std_case 2 'exceeding the end of the file' "file cut in the middle of its second last data cluster"
}

case_dirty_lazy() {
  begin dirty-lazy-killed-64k
  rm -f "$IMG"
  qemu-img create -q -f qcow2 -o lazy_refcounts=on "$IMG" 4M
  # qemu-io writes through its L2 cache but, with lazy refcounts, not its refcounts: a
  # SIGKILL leaves the dirty bit set and the new clusters with refcount 0.
  (qemu-io -f qcow2 "$IMG" -c 'write -P 0x11 0 64k' -c 'write -P 0x12 64k 64k' \
    -c 'write -P 0x21 1M 128k' -c 'sigraise 9' || true) >/dev/null 2>&1
  [ $(( $(hdr "$IMG" incompat) & 1 )) -eq 1 ] || die "qemu-io left no dirty bit"
  pristine
  std_case 2 "$L_REF" "lazy_refcounts image, qemu-io killed after writes: dirty bit, refcounts 0"
}

case_snapshot_misaligned() {
  begin snapshot-l1-misaligned
  base_snap "$IMG" 65536
  pristine
  local e
  e=$(q2 snapshots "$IMG" | jq '.[0].entry')
  q2 put64 "$IMG" "$e" $(( $(q2 get64 "$IMG" "$e") + 0x200 ))
  std_case 2 'L1 table is not cluster aligned; snapshot table entry corrupted' \
    "snapshot table entry: L1 table offset + 0x200"
}

case_snapshot_l1_size() {
  begin snapshot-l1-too-large
  base_snap "$IMG" 65536
  pristine
  local e
  e=$(q2 snapshots "$IMG" | jq '.[0].entry')
  q2 put32 "$IMG" $((e + 8)) 0x10000000
  std_case 2 'L1 table is too large; snapshot table entry corrupted' \
    "snapshot table entry: l1_size 0x10000000"
}

case_reserved_l1() {
  begin reserved-l1-64k
  base_std "$IMG" 65536
  pristine
  l1e "$IMG" 0
  q2 or64 "$IMG" "$LOC" $((1 << 56))
  std_case 2 'found L1 entry with reserved bits set' "L1 entry 0 with reserved bit 56 set"
}

case_reserved_l2() {
  local cs=$1 bit=$2
  begin "reserved-l2-bit$bit-$(sz "$cs")"
  base_std "$IMG" "$cs"
  pristine
  l2e "$IMG" 1M
  q2 or64 "$IMG" "$LOC" $((1 << bit))
  std_case 2 'found l2 entry with reserved bits set' "L2 entry of guest 1M with reserved bit $bit set"
}

case_l2_misaligned() {
  begin l2-misaligned-64k
  base_std "$IMG" 65536
  pristine
  l1e "$IMG" 0
  # 0x200 below the L2 table: the table read from there starts with 64 zero entries
  # (the end of the L1 cluster), so the shifted entries stay readable.
  q2 put64 "$IMG" "$LOC" $((VAL - 0x200))
  lose 0 $((4 * MiB))
  std_case 2 'Table is not cluster aligned; L1 entry corrupted' "L1 entry 0 = L2 table offset - 0x200"
}

case_refblock_misaligned() {
  begin refblock-misaligned-64k
  base_std "$IMG" 65536
  pristine
  read -r loc v < <(q2 rt-entry "$IMG" 0)
  q2 put64 "$IMG" "$loc" $((v + 0x200))
  std_case 1 'refcount block 0 is not cluster aligned' "refcount table entry 0 = refblock offset + 0x200"
}

case_refblock_outside() {
  begin refblock-outside-64k
  base_std "$IMG" 65536
  pristine
  local end
  end=$(roundup "$(stat -c %s "$IMG")" "$CS")
  read -r loc _ < <(q2 rt-entry "$IMG" 1)
  q2 put64 "$IMG" "$loc" $((end + 4 * CS))
  std_case 2 'refcount block 1 is outside image' "refcount table entry 1 pointing 4 clusters past the end"
}

case_overflow_rb1() {
  begin overflow-refcount1-64k
  base_std "$IMG" 65536 refcount_bits=1
  pristine
  l2e "$IMG" 0
  local v=$VAL
  l2e "$IMG" 64k
  q2 put64 "$IMG" "$LOC" "$v"
  lose 65536 65536
  std_case 2 'ERROR: overflow cluster offset=' \
    "refcount_bits=1: guest clusters 0 and 1 mapped to one host cluster (2 references > 1)"
}

case_overflow_rb2() {
  begin overflow-refcount2-512
  base_std "$IMG" 512 refcount_bits=2
  pristine
  l2e "$IMG" 0
  local v=$((VAL & ~BIT63)) g
  for g in 0 512 1024 1536; do
    l2e "$IMG" "$g"
    q2 put64 "$IMG" "$LOC" "$v"
  done
  q2 rc-set "$IMG" "$v" 3
  lose 512 1536
  std_case 2 'ERROR: overflow cluster offset=' \
    "refcount_bits=2: guest clusters 0-3 mapped to one host cluster (4 references > 3)"
}

# --- dedup images: faults qemu-img sees too ---

case_dedup_clean() {
  local cs=$1
  begin "dedup-clean-$(sz "$cs")"
  base_dedup "$IMG" "$cs"
  pristine
  dedup_std_case 0 "" valid "control: an undamaged deduplicated image"
}

case_dedup_copied_shared() {
  begin dedup-copied-set-shared
  base_dedup "$IMG" 4096
  pristine
  local g
  read -r _ _ _ h _ _ < <(index_with_refcount "$IMG" 2 | head -n 1)
  g=$(sharers "$IMG" "$h" | head -n 1)
  l2e "$IMG" "$g"
  q2 or64 "$IMG" "$LOC" "$BIT63"
  dedup_std_case 2 "$L_COPIED" - "QCOW_OFLAG_COPIED set on one of two L2 entries sharing a cluster"
}

case_dedup_refcount_low() {
  begin dedup-refcount-low
  base_dedup "$IMG" 4096
  pristine
  read -r _ _ _ h _ _ < <(index_with_refcount "$IMG" 3 | head -n 1)
  q2 rc-set "$IMG" "$h" 2
  dedup_std_case 2 "$L_REF" - "a cluster shared by 3 guest clusters with stored refcount 2"
}

case_dedup_qemu_cow() {
  begin dedup-qemu-cow
  base_dedup "$IMG" 4096
  read -r _ _ _ h _ _ < <(index_with_refcount "$IMG" 2 | head -n 1)
  local g
  g=$(sharers "$IMG" "$h" | head -n 1)
  # Stock QEMU writes into one of the two sharers: it copies, and leaves the other entry
  # without COPIED although its refcount is back to 1 (and clears the index-valid bit).
  qemu-io -f qcow2 "$IMG" -c "write -P 0x5a $g $(hdr "$IMG" cs)" >/dev/null
  pristine
  dedup_std_case 2 "$L_COPIED" stale "stock qemu-io write into a shared cluster: COPIED left off the other"
}

case_dedup_leak() {
  begin dedup-leak
  base_dedup "$IMG" 4096
  pristine
  leak_grow
  dedup_std_case 3 "$L_LEAK" - "two clusters appended after the index with refcount 1"
}

case_dedup_index_refcounted() {
  begin dedup-index-cluster-refcounted
  base_dedup "$IMG" 4096
  pristine
  q2 rc-set "$IMG" "$(q2 dedup "$IMG" | jq .index_offset)" 1
  # docs/format.md, section 6: an index cluster with a non-zero refcount is a corruption
  # of the index, beside the leak qemu-img reports.
  record both 3 "$L_LEAK" 2 2 - "the (unrefcounted) index cluster given refcount 1"
}

# --- dedup-only faults: qemu-img check sees a clean image ---

case_dedup_freed() {
  local cs=$1
  begin "dedup-index-freed-$(sz "$cs")"
  base_dedup "$IMG" "$cs"
  pristine
  local g h
  read -r _ _ _ h g _ < <(index_with_refcount "$IMG" 1 | head -n 1)
  [ "$(sharers "$IMG" "$h")" = $((g * CS)) ] || die "owner of $h is not its only sharer"
  l2e "$IMG" $((g * CS))
  q2 put64 "$IMG" "$LOC" 0
  q2 rc-set "$IMG" "$h" 0
  lose $((g * CS)) "$CS"
  dedup_only_case 2 2 - "the only L2 entry of an indexed cluster zeroed and its refcount set to 0"
}

case_dedup_free_offset() {
  begin dedup-index-at-free-cluster
  base_dedup "$IMG" 4096
  pristine
  local end k
  end=$(roundup "$(stat -c %s "$IMG")" "$CS")
  truncate -s $((end + CS)) "$IMG"
  read -r k _ < <(index_with_refcount "$IMG" 1 | head -n 1)
  q2 index-set-host "$IMG" "$k" "$end"
  q2 fix-checksum "$IMG"
  dedup_only_case 2 2 - "an index entry's host offset pointed at a free cluster (refcount 0), checksum fixed"
}

case_dedup_data_changed() {
  begin dedup-data-changed
  base_dedup "$IMG" 4096
  pristine
  local g h
  read -r _ _ _ h g _ < <(index_with_refcount "$IMG" 1 | head -n 1)
  q2 flip "$IMG" $((h + 100))
  lose $((g * CS)) "$CS"
  dedup_only_case 0 2 - "one byte of an indexed data cluster changed (only --verify-hashes sees it)"
}

case_dedup_hash_changed() {
  begin dedup-index-hash-changed
  base_dedup "$IMG" 4096
  pristine
  local k hash
  read -r k _ hash _ _ _ < <(index_with_refcount "$IMG" 1 | head -n 1)
  # The last byte changes: the order of the entries stays.
  hash="${hash:0:62}$(printf '%02x' $(( 0x${hash:62:2} ^ 1 )))"
  q2 index-set-hash "$IMG" "$k" "$hash"
  q2 fix-checksum "$IMG"
  python3 -c '
import sys
h = [l.split()[2] for l in sys.stdin]
sys.exit(0 if h == sorted(h) else 1)' < <(q2 index "$IMG") || die "index no longer sorted"
  dedup_only_case 0 2 - "one index entry's hash changed (last byte), checksum fixed (only --verify-hashes sees it)"
}

case_dedup_checksum() {
  begin dedup-index-checksum
  base_dedup "$IMG" 4096
  pristine
  q2 flip "$IMG" "$(q2 dedup "$IMG" | jq .checksum_at)"
  dedup_only_case 2 2 - "index checksum in the extension does not match the index"
}

case_dedup_dup_offset() {
  begin dedup-index-duplicate-cluster
  base_dedup "$IMG" 4096
  pristine
  local h
  h=$(q2 index "$IMG" | awk 'NR == 1 { print $4 }')
  q2 index-set-host "$IMG" 1 "$h"
  q2 fix-checksum "$IMG"
  dedup_only_case 2 2 - "index entries 0 and 1 with the same host cluster, checksum fixed"
}

case_dedup_unsorted() {
  begin dedup-index-unsorted
  base_dedup "$IMG" 4096
  pristine
  q2 index-swap "$IMG" 0 1
  q2 fix-checksum "$IMG"
  dedup_only_case 2 2 - "index entries 0 and 1 swapped (not sorted by hash), checksum fixed"
}

case_dedup_at_cap() {
  begin dedup-index-at-cap
  base_dedup "$IMG" 4096
  pristine
  [ -n "$(index_with_refcount "$IMG" 3)" ] || die "no cluster with refcount 3"
  q2 put64 "$IMG" "$(q2 dedup "$IMG" | jq .cap_at)" 3
  dedup_only_case 2 2 - "refcount_cap lowered to 3: indexed clusters with refcount 3 are at the cap"
}

case_dedup_overlap() {
  begin dedup-index-cluster-in-use
  base_dedup "$IMG" 4096
  pristine
  local io g=$((5 * CS))
  io=$(q2 dedup "$IMG" | jq .index_offset)
  [ "$(q2 host "$IMG" "$g")" -eq 0 ] || die "guest cluster 5 is allocated"
  l2e "$IMG" "$g"
  q2 put64 "$IMG" "$LOC" $((BIT63 | io))
  q2 rc-set "$IMG" "$io" 1
  lose "$g" "$CS"
  dedup_only_case 2 2 - "the index cluster mapped as guest cluster 5 (refcount 1): index space in use"
}

case_dedup_stale() {
  begin dedup-index-stale
  base_dedup "$IMG" 4096
  pristine
  q2 andnot64 "$IMG" 88 $((1 << 62))
  dedup_std_case 0 "" stale "autoclear bit 62 cleared: the index is stale, which is not a corruption"
}

ALL_CASES=(
  case_clean_64k case_clean_snapshot case_clean_lazy_dirty
  "case_leak 65536" "case_leak 512" case_leak_shared
  case_refcount_low case_refcount_low_l2
  "case_refcount_zero 65536" "case_refcount_zero 4096" "case_refcount_zero 65536 refcount_bits=2 rb2"
  case_refcount_zero_l2 case_refcount_zero_refblock
  case_copied_shared "case_copied_missing 65536" "case_copied_missing 512" case_copied_missing_l1
  "case_l2_into_header 65536" "case_l2_into_header 4096" case_l2_into_l1
  case_l1_same_l2 case_l1_into_data
  "case_truncated 65536" "case_truncated 4096"
  case_dirty_lazy
  case_snapshot_misaligned case_snapshot_l1_size
  case_reserved_l1 "case_reserved_l2 65536 1" "case_reserved_l2 4096 56"
  case_l2_misaligned case_refblock_misaligned case_refblock_outside
  case_overflow_rb1 case_overflow_rb2
  "case_dedup_clean 4096" "case_dedup_clean 65536"
  case_dedup_copied_shared case_dedup_refcount_low case_dedup_qemu_cow case_dedup_leak
  case_dedup_index_refcounted
  "case_dedup_freed 4096" "case_dedup_freed 65536" case_dedup_free_offset
  case_dedup_data_changed case_dedup_hash_changed case_dedup_checksum case_dedup_dup_offset
  case_dedup_unsorted case_dedup_at_cap case_dedup_overlap case_dedup_stale
)

for c in "${ALL_CASES[@]}"; do
  # shellcheck disable=SC2086
  $c
done

echo "make-corpus: $(($(wc -l <"$MANIFEST") - 1)) cases in $MANIFEST"
