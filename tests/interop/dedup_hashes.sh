#!/usr/bin/env bash
# Every dedup hash round-trips through convert; xxh3 only with dedup_verify=on; an image
# whose dedup extension names an unknown hash algorithm is refused by name.
source "$(dirname "$0")/../lib/interop.bash"

python3 - <<'PY'
import random
rnd = random.Random(3)
blocks = [rnd.randbytes(4096) for _ in range(40)]
with open("in.raw", "wb") as f:
    for _ in range(600):
        f.write(bytes(4096) if rnd.randrange(5) == 0 else blocks[rnd.randrange(40)])
PY

for spec in sha256 skein blake2b "xxh3,dedup_verify=on" "sha256,dedup_verify=on"; do
  algo=${spec%%,*}
  run "$QDEDUP" convert -O qcow2 -o "dedup=$spec" --stats --output=json in.raw "$algo.qcow2"
  expect_status 0 "convert dedup=$spec"
  expect_eq "$(jq '.["clusters-written"]' "$out")" "40" "dedup=$spec: 40 distinct clusters stored"
  expect_check_clean "$algo.qcow2" "dedup=$spec"
  run qemu-img compare -f raw -F qcow2 in.raw "$algo.qcow2"
  expect_status 0 "dedup=$spec: qemu-img compare"
  run "$QDEDUP" info --output=json "$algo.qcow2"
  expect_eq "$(jq -r '.qdedup.hash' "$out")" "$algo" "dedup=$spec: info names the hash"
  # ... and through check: clean, the index valid, every indexed cluster rehashed.
  run "$QDEDUP" check --verify-hashes --output=json "$algo.qcow2"
  expect_status 0 "dedup=$spec: qdedup check --verify-hashes"
  expect_eq "valid $algo 40 40 0" \
    "$(jq -r '.dedup | "\(.index) \(.hash) \(.entries) \(."verified-clusters") \(."hash-mismatches")"' "$out")" \
    "dedup=$spec: check's dedup object"
  qemu-io -c 'write -P 0x5a 0 4k' "$algo.qcow2" >/dev/null
  run "$QDEDUP" check -r all "$algo.qcow2"
  expect_status 0 "dedup=$spec: check -r all after a stock write"
  run "$QDEDUP" check --verify-hashes --output=json "$algo.qcow2"
  expect_eq "0 valid $algo" "$(jq -r '"\(.corruptions // 0) \(.dedup.index) \(.dedup.hash)"' "$out")" \
    "dedup=$spec: index rebuilt with the same hash"
done

run "$QDEDUP" convert -O qcow2 -o dedup=xxh3 in.raw x.qcow2
expect_error "xxh3 without dedup_verify"
expect_err_has "dedup_verify=on" "the error says what xxh3 needs"
run "$QDEDUP" create -f qcow2 -o dedup=xxh3 x.qcow2 1M
# The value is judged after the Formatting line, as qemu-img judges values.
expect_eq "Formatting 'x.qcow2', fmt=qcow2 cluster_size=4096 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=off refcount_bits=16 dedup=xxh3" \
  "$(cat "$out")" "create with xxh3 without dedup_verify: the Formatting line first"
: >"$out"
expect_error "create with xxh3 without dedup_verify"
expect_err_has "x.qcow2: dedup=xxh3 is not collision resistant" "create names the file and the reason"

# Patch the algorithm id (offset 4 of the extension's data) to 99.
cp sha256.qcow2 unknown.qcow2
python3 - <<'PY'
import struct
with open("unknown.qcow2", "r+b") as f:
    head = f.read(4096)
    at = head.find(struct.pack(">I", 0x51444450))
    assert at > 0
    f.seek(at + 8 + 4)
    f.write(struct.pack(">I", 99))
PY
before=$(sha256sum unknown.qcow2)
run "$QDEDUP" convert -n -O qcow2 in.raw unknown.qcow2
expect_error "convert -n into an image with an unknown hash id"
expect_err_has "algorithm id 99" "the error names the unknown id"
expect_eq "$(sha256sum unknown.qcow2)" "$before" "the image is not written"
for repair in "" "-r all"; do
  # shellcheck disable=SC2086
  run "$QDEDUP" check $repair unknown.qcow2
  expect_status 1 "check $repair: an unknown hash id means the check cannot complete"
  expect_err_has "algorithm id 99" "check $repair names the unknown id"
  expect_eq "$(sha256sum unknown.qcow2)" "$before" "check $repair leaves the image alone"
done
run "$QDEDUP" info --output=json unknown.qcow2
expect_status 0 "info still describes the image"
expect_eq "$(jq -r '.qdedup.error' "$out" | grep -c 'algorithm id 99')" "1" "info reports the unknown id"

finish
