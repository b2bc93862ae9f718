#!/usr/bin/env python3
"""Counts the distinct host clusters that hold guest data in a qcow2 image: standard
(uncompressed) clusters referenced by an L2 entry of the active L1 table or of any
internal snapshot's L1 table. Written from docs/interop/qcow2.txt, independently of
qdedup's code, for the interop tests. Prints: data compressed zero_entries."""
import struct
import sys


def main(path):
    with open(path, "rb") as f:
        img = f.read()
    (magic, version) = struct.unpack_from(">4sI", img, 0)
    assert magic == b"QFI\xfb", "not qcow2"
    cluster_bits = struct.unpack_from(">I", img, 20)[0]
    l1_size, l1_offset = struct.unpack_from(">IQ", img, 36)
    nb_snapshots, snapshots_offset = struct.unpack_from(">IQ", img, 60)
    incompat = struct.unpack_from(">Q", img, 72)[0] if version >= 3 else 0
    extended = bool(incompat & (1 << 4))
    cs = 1 << cluster_bits
    entry = 16 if extended else 8
    l1s = [(l1_offset, l1_size)]
    off = snapshots_offset
    for _ in range(nb_snapshots):
        s_l1_offset, s_l1_size, id_len, name_len, _d, _dn, _vm, _vs, extra = struct.unpack_from(
            ">QIHHIIQII", img, off)
        l1s.append((s_l1_offset, s_l1_size))
        off += 40 + extra + id_len + name_len
        off = (off + 7) & ~7
    data, compressed, zeros = set(), set(), 0
    for (l1o, l1n) in l1s:
        for i in range(l1n):
            l2 = struct.unpack_from(">Q", img, l1o + 8 * i)[0] & 0x00FFFFFFFFFFFE00
            if l2 == 0:
                continue
            for k in range(cs // entry):
                e = struct.unpack_from(">Q", img, l2 + k * entry)[0]
                if e & (1 << 62):
                    compressed.add(e & ((1 << (62 - (cluster_bits - 8))) - 1))
                    continue
                host = e & 0x00FFFFFFFFFFFE00
                if extended:
                    bitmap = struct.unpack_from(">Q", img, l2 + k * entry + 8)[0]
                    if host and (bitmap & 0xFFFFFFFF):
                        data.add(host)
                    elif not host and bitmap >> 32 == 0xFFFFFFFF:
                        zeros += 1
                elif e & 1:
                    zeros += 1
                elif host:
                    data.add(host)
    print(len(data), len(compressed), zeros)


main(sys.argv[1])
