// qemu-img/qemu-io scripts for testsupport::run_qemu_script that more than one
// test file uses.
#pragma once

namespace qdedup::testsupport {

// 4 MiB, 4 KiB clusters: two L2 tables. Two snapshots: s1 and s2 share the
// second table (the active state copied it when it wrote at 3M); written zeros
// and zero flags, two compressed clusters of 0x33 and an uncompressed one, a
// persistent bitmap dirtied by writes. Distinct non-zero contents: 0x11, 0x22,
// 0x33, 0x44, 0x55.
inline constexpr const char* kSnapshotsScript =
    "qemu-img create -q -f qcow2 -o cluster_size=4096 \"$IMG\" 4M\n"
    "qemu-io -c 'write -P 0x11 0 16k' -c 'write -P 0x11 2M 16k' -c 'write -P 0x22 64k 8k' "
    "-c 'write -z 128k 8k' -c 'write -P 0 192k 8k' -c 'write -c -P 0x33 256k 4k' "
    "-c 'write -c -P 0x33 260k 4k' -c 'write -P 0x33 264k 4k' -c 'write -P 0x22 2100k 8k' "
    "\"$IMG\" >/dev/null\n"
    "qemu-img snapshot -c s1 \"$IMG\"\n"
    "qemu-io -c 'write -P 0x44 0 4k' -c 'write -P 0x44 8k 4k' \"$IMG\" >/dev/null\n"
    "qemu-img snapshot -c s2 \"$IMG\"\n"
    "qemu-io -c 'write -P 0x22 3M 8k' -c 'write -P 0x11 1M 4k' \"$IMG\" >/dev/null\n"
    "qemu-img bitmap --add \"$IMG\" bm0\n"
    "qemu-io -c 'write -P 0x55 512k 4k' -c 'write -P 0x11 520k 4k' \"$IMG\" >/dev/null\n";

}  // namespace qdedup::testsupport
