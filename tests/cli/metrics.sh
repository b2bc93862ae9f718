#!/usr/bin/env bash
# `qdedup metrics` from the command line: exact figures on a converted image of known
# content (JSON), the same figures in human and Prometheus form, Prometheus output that
# `promtool check metrics` accepts for one and for several images (one named with quotes
# and backslashes), bad files answered with one line; and the command-line forms users
# type: `check --repair` (= -r all), `check --repair=leaks` (= -r leaks), `info --json`
# and `check --json` (= --output=json).
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img qemu-io jq python3 promtool

# 16 clusters of 64 KiB: A x4, B x2, C x1, then zeros (unallocated after convert).
python3 - src.raw <<'EOF'
import hashlib, sys
cs = 65536
def block(tag):
    return b"".join(hashlib.sha256(tag + i.to_bytes(4, "big")).digest() for i in range(cs // 32))
a, b, c = block(b"a"), block(b"b"), block(b"c")
with open(sys.argv[1], "wb") as f:
    for x in [a, b, a, c, a, b, a]:
        f.write(x)
    f.truncate(16 * cs)
EOF
"$QDEDUP" convert -q -f raw -O qcow2 -o dedup=sha256,cluster_size=64k src.raw d.qcow2 ||
  fail "convert failed"
qemu-img convert -f raw -O qcow2 src.raw plain.qcow2

run "$QDEDUP" metrics --json d.qcow2
expect_status 0 "metrics --json"
j() { jq -c "$1" "$out"; }
expect_eq 1 "$(j '.images | length')" "one image"
expect_eq 458752 "$(j '.images[0]."guest-bytes-allocated"')" "guest bytes: 7 clusters"
expect_eq 7 "$(j '.images[0]."data-clusters"')" "data clusters"
expect_eq 3 "$(j '.images[0]."host-data-clusters"')" "host data clusters: A, B, C"
expect_eq "2.33" "$(jq -r '.images[0]."dedup-ratio" * 100 | round / 100' "$out")" "dedup ratio 7/3"
expect_eq 262144 "$(j '.images[0]."bytes-saved"')" "bytes saved: 4 clusters"
expect_eq '[1,1,1]' "$(j '[.images[0].sharing.histogram[0:3][].clusters]')" "histogram: C, B, A"
expect_eq 2 "$(j '.images[0].sharing."shared-clusters"')" "shared clusters"
expect_eq '[4,2]' "$(j '[.images[0].sharing."most-shared"[].references]')" "most shared"
expect_eq '"valid"' "$(j '.images[0].index.state')" "index state"
expect_eq 3 "$(j '.images[0].index.entries')" "index entries"
expect_eq 4 "$(j '.images[0].counters."clusters-deduplicated"')" "counter: deduplicated"
expect_eq 3 "$(j '.images[0].counters."clusters-stored-unique"')" "counter: stored unique"
expect_eq 1 "$(j '.images[0].counters.runs')" "counter: runs"
expect_eq "\"$("$QDEDUP" --version | head -1 | cut -d' ' -f2)\"" "$(j '.images[0].counters."last-run-version"')" \
  "last run version"
stamp=$(j '.images[0].counters."last-run-time"')
if [ "$stamp" -le "$(date +%s)" ] && [ "$stamp" -gt $(($(date +%s) - 600)) ]; then pass; else
  fail "last run time $stamp is not within the last 10 minutes"; fi
expect_eq "$(stat -c %s d.qcow2)" "$(j '.images[0]."file-size"')" "file size"
expect_eq "$(($(stat -c %b d.qcow2) * $(stat -c %B d.qcow2)))" "$(j '.images[0]."allocated-size"')" \
  "allocated size = du"
# qemu-img check counts the guest clusters the active tables map: data + compressed.
qemu-img check --output=json d.qcow2 >q.json
expect_eq "$(jq '."allocated-clusters"' q.json)" \
  "$(j '.images[0]."data-clusters" + .images[0]."compressed-clusters"')" \
  "mapped clusters = qemu-img check's allocated clusters"
cp "$out" one.json

# A stock image: no extension, no index, no counters; nothing shared.
run "$QDEDUP" metrics --output=json plain.qcow2
expect_status 0 "metrics of a stock image"
expect_eq '"absent"' "$(j '.images[0].index.state')" "stock image: index absent"
expect_eq null "$(j '.images[0].counters')" "stock image: no counters"
expect_eq 7 "$(j '.images[0]."host-data-clusters"')" "stock image: 7 host data clusters"
expect_eq 1 "$(j '.images[0]."dedup-ratio"')" "stock image: ratio 1"

# Human: the same figures.
run "$QDEDUP" metrics d.qcow2
expect_status 0 "metrics (human)"
expect_out_has "dedup ratio                2.33" "human: ratio"
expect_out_has "256 KiB (262144 bytes)" "human: bytes saved"
expect_out_has "valid (sha256, 3 entries)" "human: index"
run "$QDEDUP" -q metrics d.qcow2
expect_eq "" "$(cat "$out")" "-q: nothing on stdout"

# Prometheus: one image, then several (one named with quotes and a backslash).
run "$QDEDUP" metrics --output=prometheus d.qcow2
expect_status 0 "prometheus, one image"
if promtool check metrics <"$out" >promtool.out 2>&1; then pass; else fail "promtool: $(cat promtool.out)"; fi
expect_out_has 'qdedup_saved_bytes{image="d.qcow2"} 262144' "prometheus: saved bytes"
expect_out_has 'qdedup_cluster_references_bucket{image="d.qcow2",le="+Inf"} 3' "prometheus: histogram count"
expect_out_has 'qdedup_clusters_deduplicated_total{image="d.qcow2"} 4' "prometheus: counter"
expect_out_has 'qdedup_index_state{image="d.qcow2",state="valid"} 1' "prometheus: index state"
expect_out_has 'qdedup_runs_total{image="d.qcow2"} 1' "prometheus: runs"
expect_out_has "qdedup_last_run_timestamp_seconds{image=\"d.qcow2\"} $stamp" "prometheus: last run time"
weird='we"ird\name.qcow2'
cp d.qcow2 "$weird"
run "$QDEDUP" metrics --output=prometheus d.qcow2 plain.qcow2 "$weird"
expect_status 0 "prometheus, three images"
if promtool check metrics <"$out" >promtool.out 2>&1; then pass; else fail "promtool (3): $(cat promtool.out)"; fi
expect_out_has 'qdedup_saved_bytes{image="we\"ird\\name.qcow2"} 262144' "prometheus: label escaped"
expect_eq 1 "$(grep -c '^# TYPE qdedup_saved_bytes gauge' "$out")" "prometheus: one TYPE line per family"
# Counters only for images with the extension.
expect_eq 0 "$(grep -c 'clusters_deduplicated_total{image="plain.qcow2"}' "$out")" \
  "prometheus: no counters for a stock image"

# Several images: a total.
run "$QDEDUP" metrics --json d.qcow2 plain.qcow2
expect_eq 2 "$(j '.total.images')" "total: images"
expect_eq 917504 "$(j '.total."guest-bytes-allocated"')" "total: guest bytes"
expect_eq 262144 "$(j '.total."bytes-saved"')" "total: bytes saved"

# Bad input: one line each, exit 1, the good images still measured.
run "$QDEDUP" metrics missing.qcow2
expect_error "missing file"
head -c 1M /dev/zero >raw.img
run "$QDEDUP" metrics raw.img
expect_error "raw file"
expect_err_has "raw.img: not a qcow2 image" "raw file: message"
before=$(sha256sum d.qcow2)
run "$QDEDUP" metrics --json d.qcow2 missing.qcow2
expect_status 1 "one bad of two"
expect_eq 1 "$(wc -l <"$err")" "one bad of two: one stderr line"
expect_eq 1 "$(j '.total.failed')" "one bad of two: failed count"
expect_eq "$(jq -c '.images[0]' one.json)" "$(j '.images[0]')" "one bad of two: the good one measured"
expect_eq "$before" "$(sha256sum d.qcow2)" "metrics does not write"
run "$QDEDUP" metrics --output=yaml d.qcow2
expect_error "unknown output format"

# A locked image (qemu-io holds it): refused, unless -U.
qemu-io -c 'sleep 3000' d.qcow2 >/dev/null 2>&1 &
holder=$!
for _ in $(seq 50); do grep -q "$(stat -c %i d.qcow2)" /proc/locks && break; sleep 0.1; done
run "$QDEDUP" metrics d.qcow2
expect_error "locked image"
run "$QDEDUP" metrics -U --json d.qcow2
expect_status 0 "locked image with -U"
wait "$holder"

# check --repair and info --json, as users type them.
make_leaky() {
  cp plain.qcow2 "$1"
  python3 - "$1" <<'EOF'
import struct, sys
path = sys.argv[1]
cs = 65536
with open(path, "r+b") as f:
    f.seek(0, 2); end = f.tell()
    cluster = (end + cs - 1) // cs
    f.truncate((cluster + 1) * cs)
    f.seek(48); reftable = struct.unpack(">Q", f.read(8))[0]
    f.seek(reftable); block = struct.unpack(">Q", f.read(8))[0] & ~0x1ff
    f.seek(block + 2 * cluster); f.write(struct.pack(">H", 1))
EOF
}
for form in "-r all|--repair" "-r leaks|--repair=leaks" "-r all|--repair=all"; do
  short=${form%%|*}
  long=${form#*|}
  make_leaky a.qcow2
  make_leaky b.qcow2
  # shellcheck disable=SC2086  # $short is two words
  "$QDEDUP" check $short a.qcow2 >a.out 2>a.err
  arc=$?
  run "$QDEDUP" check "$long" b.qcow2
  expect_eq "$arc" "$rc" "check $long: exit status as $short"
  expect_eq "$(cat a.out)" "$(sed 's/b\.qcow2/a.qcow2/g' "$out")" "check $long: output as $short"
  expect_eq "$(sha256sum <a.qcow2)" "$(sha256sum <b.qcow2)" "check $long: same image as $short"
  expect_out_has "1 leaked clusters" "check $long: the leak repaired"
done
run "$QDEDUP" check --repair=some a.qcow2
expect_error "check --repair=some"
for cmd in "info" "check"; do
  "$QDEDUP" $cmd --output=json d.qcow2 >long.json 2>/dev/null
  run "$QDEDUP" $cmd --json d.qcow2
  expect_eq "$(jq -S 'del(."actual-size")' long.json)" "$(jq -S 'del(."actual-size")' "$out")" \
    "$cmd --json = --output=json"
done

finish
