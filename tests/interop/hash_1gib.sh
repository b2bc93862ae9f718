#!/usr/bin/env bash
# Issue 5's "a 1 GiB random buffer hashed in one piece and in pieces agrees": every
# algorithm hashes 1 GiB of random bytes as one message exactly as an independent tool
# does (sha256sum, b2sum -l 256, botan's Skein-512(256), xxhsum -H2), and hashing it in
# 4 KiB and 2 MiB pieces on all cores gives the digests of one thread, piece by
# piece. (Messages above 4 GiB are never hashed: clusters are at most 2 MiB.)
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd sha256sum b2sum botan xxhsum openssl
: "${QDEDUP_TESTTOOL:?}"

openssl rand -out big.bin $((1 << 30))
expect_eq "$((1 << 30))" "$(stat -c %s big.bin)" "1 GiB of random bytes"

digest_of() { "$QDEDUP_TESTTOOL" hash "$1" big.bin; }
expect_eq "$(sha256sum big.bin | cut -d' ' -f1)" "$(digest_of sha256)" "sha256 of 1 GiB in one piece"
expect_eq "$(b2sum -l 256 big.bin | cut -d' ' -f1)" "$(digest_of blake2b)" "blake2b of 1 GiB in one piece"
expect_eq "$(botan hash --algo='Skein-512(256)' big.bin | cut -d' ' -f1 | tr 'A-F' 'a-f')" \
  "$(digest_of skein)" "skein of 1 GiB in one piece"
expect_eq "$(xxhsum -H2 big.bin | cut -d' ' -f1)" "$(digest_of xxh3)" "xxh3 of 1 GiB in one piece"

for algo in sha256 skein blake2b xxh3; do
  for chunk in 4096 2097152; do
    run "$QDEDUP_TESTTOOL" hash-pieces "$algo" big.bin "$chunk"
    expect_status 0 "$algo in $chunk-byte pieces"
  done
done
finish
