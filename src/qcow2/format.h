// Constants of the qcow2 format. Section numbers refer to QEMU's
// docs/interop/qcow2.txt; values are stored on disk: never renumber.
#pragma once

#include <cstdint>

namespace qdedup::qcow2 {

// "Header" section.
inline constexpr uint32_t kMagic = 0x514649FB;  // "QFI\xfb"
inline constexpr uint32_t kHeaderV2Length = 72;
inline constexpr uint32_t kHeaderV3MinLength = 104;
inline constexpr uint32_t kHeaderV3Length = 112;  // what QEMU writes
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
inline constexpr uint32_t kMaxRefcountOrder = 6;
inline constexpr uint32_t kMaxBackingFileSize = 1023;

// Field offsets in the header.
inline constexpr uint32_t kOffMagic = 0;
inline constexpr uint32_t kOffVersion = 4;
inline constexpr uint32_t kOffBackingFileOffset = 8;
inline constexpr uint32_t kOffBackingFileSize = 16;
inline constexpr uint32_t kOffClusterBits = 20;
inline constexpr uint32_t kOffSize = 24;
inline constexpr uint32_t kOffCryptMethod = 32;
inline constexpr uint32_t kOffL1Size = 36;
inline constexpr uint32_t kOffL1TableOffset = 40;
inline constexpr uint32_t kOffRefcountTableOffset = 48;
inline constexpr uint32_t kOffRefcountTableClusters = 56;
inline constexpr uint32_t kOffNbSnapshots = 60;
inline constexpr uint32_t kOffSnapshotsOffset = 64;
inline constexpr uint32_t kOffIncompatibleFeatures = 72;
inline constexpr uint32_t kOffCompatibleFeatures = 80;
inline constexpr uint32_t kOffAutoclearFeatures = 88;
inline constexpr uint32_t kOffRefcountOrder = 96;
inline constexpr uint32_t kOffHeaderLength = 100;
inline constexpr uint32_t kOffCompressionType = 104;

// Incompatible feature bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatDataFile = 1ull << 2;
inline constexpr uint64_t kIncompatCompression = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
inline constexpr uint64_t kIncompatKnownMask = 0x1F;
// Compatible feature bits.
inline constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;
// Autoclear feature bits (QEMU's; qdedup's own live in dedup/format.h).
inline constexpr uint64_t kAutoclearBitmaps = 1ull << 0;
inline constexpr uint64_t kAutoclearDataFileRaw = 1ull << 1;

// Compression types (header byte 104).
inline constexpr uint8_t kCompressionZlib = 0;
inline constexpr uint8_t kCompressionZstd = 1;

// "Header extensions" section.
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xE2792ACA;
inline constexpr uint32_t kExtFeatureTable = 0x6803F857;
inline constexpr uint32_t kExtBitmaps = 0x23852875;
inline constexpr uint32_t kExtCrypto = 0x0537BE77;
inline constexpr uint32_t kExtDataFile = 0x44415441;
inline constexpr uint32_t kFeatureNameEntrySize = 48;
inline constexpr uint32_t kFeatureNameLength = 46;

// "Cluster mapping" section: L1 and L2 entries.
inline constexpr uint64_t kOflagCopied = 1ull << 63;
inline constexpr uint64_t kOflagCompressed = 1ull << 62;
inline constexpr uint64_t kOflagZero = 1ull << 0;
inline constexpr uint64_t kL1eOffsetMask = 0x00fffffffffffe00ull;
inline constexpr uint64_t kL1eReservedMask = 0x7f000000000001ffull;
inline constexpr uint64_t kL2eOffsetMask = 0x00fffffffffffe00ull;
inline constexpr uint64_t kL2eStdReservedMask = 0x3f000000000001feull;
inline constexpr uint32_t kSubclustersPerCluster = 32;

// "Host cluster management": refcount table entries.
inline constexpr uint64_t kReftOffsetMask = 0xfffffffffffffe00ull;
inline constexpr uint64_t kReftReservedMask = 0x1ffull;

// QEMU's limits (block/qcow2.h); qdedup enforces the same.
inline constexpr uint64_t kMaxL1Entries = 32ull * 1024 * 1024 / 8;   // QCOW_MAX_L1_SIZE
inline constexpr uint64_t kMaxReftableBytes = 8ull * 1024 * 1024;    // QCOW_MAX_REFTABLE_SIZE
inline constexpr uint32_t kMaxSnapshots = 65536;                     // QCOW_MAX_SNAPSHOTS
inline constexpr uint64_t kMaxSnapshotsTableBytes = 64ull * 1024 * 1024;
inline constexpr uint32_t kMaxSnapshotExtraData = 1024;
// "Snapshots" section: the fixed part of a snapshot table entry
// (QEMU's sizeof(QCowSnapshotHeader)).
inline constexpr uint64_t kSnapshotHeaderBytes = 40;
inline constexpr uint64_t kMaxClusterOffset = (1ull << 56) - 1;
inline constexpr uint64_t kMaxFileOffset = static_cast<uint64_t>(INT64_MAX);

}  // namespace qdedup::qcow2
