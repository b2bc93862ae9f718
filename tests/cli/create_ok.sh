#!/usr/bin/env bash
# `qdedup create` with valid options makes images that stock qemu-img accepts and
# describes exactly as `qdedup info` does, and as it describes the image qemu-img itself
# creates with the same options.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img jq

# Creates FILE with qdedup and with qemu-img (as ref-FILE), then checks both.
#   creates_valid FILE [create args...]   (args end with SIZE if there is one)
creates_valid() {
  local file=$1
  shift
  local what="create $* $file"
  # Put FILE before SIZE: the last argument is SIZE when it starts with a digit.
  local args=("$@") size=()
  if [ ${#args[@]} -gt 0 ] && [[ ${args[-1]} =~ ^[0-9] ]]; then
    size=("${args[-1]}")
    unset 'args[-1]'
  fi
  run "$QDEDUP" create "${args[@]}" "$file" "${size[@]}"
  expect_status 0 "$what"
  [ "$rc" -eq 0 ] || return
  if [[ " $* " != *" -f raw "* ]]; then  # qemu-img checks qcow2 only
    run qemu-img check "$file"
    expect_status 0 "$what: qemu-img check"
  fi

  run qemu-img info --output=json "$file"
  local theirs
  theirs=$(json_sans_actual_size "$out")
  run "$QDEDUP" info --output=json "$file"
  expect_status 0 "$what: qdedup info"
  expect_eq "$theirs" "$(json_sans_actual_size "$out")" "$what: qemu-img info vs qdedup info"

  # qemu-img's own image with the same options has the same description.
  run qemu-img create -q "${args[@]}" "ref-$file" "${size[@]}"
  expect_status 0 "$what: qemu-img create (reference)"
  run qemu-img info --output=json "ref-$file"
  local ref
  ref=$(json_sans_actual_size "$out" | jq -S '.filename = "X"')
  expect_eq "$ref" "$(jq -S '.filename = "X"' <<<"$theirs")" "$what: same as qemu-img's image"
  rm -f "$file" "ref-$file"
}

# Cluster sizes, refcount widths, compat levels and features.
creates_valid cs512.qcow2 -f qcow2 -o cluster_size=512 64M
creates_valid cs4k.qcow2 -f qcow2 -o cluster_size=4k 1G
creates_valid cs64k.qcow2 -f qcow2 -o cluster_size=64k 1G
creates_valid cs2m.qcow2 -f qcow2 -o cluster_size=2M 1G
creates_valid rc1.qcow2 -f qcow2 -o refcount_bits=1 1G
creates_valid rc16.qcow2 -f qcow2 -o refcount_bits=16 1G
creates_valid rc64.qcow2 -f qcow2 -o refcount_bits=64 1G
creates_valid rc64cs512.qcow2 -f qcow2 -o refcount_bits=64,cluster_size=512 16M
creates_valid v2.qcow2 -f qcow2 -o compat=0.10 1G
creates_valid v3.qcow2 -f qcow2 -o compat=1.1 1G
creates_valid lazy.qcow2 -f qcow2 -o lazy_refcounts=on 1G
creates_valid ext.qcow2 -f qcow2 -o extended_l2=on 1G
creates_valid ext16k.qcow2 -f qcow2 -o extended_l2=on,cluster_size=16k 1G
creates_valid zstd.qcow2 -f qcow2 -o compression_type=zstd 1G
creates_valid all.qcow2 -f qcow2 -o cluster_size=2M,refcount_bits=64,lazy_refcounts=on \
  -o extended_l2=on,compression_type=zstd 100G
creates_valid osize.qcow2 -f qcow2 -o size=3M
# Sizes, with the default cluster size.
creates_valid s0.qcow2 -f qcow2 0
creates_valid s1000.qcow2 -f qcow2 1000
creates_valid s1g.qcow2 -f qcow2 1G
creates_valid s2047t.qcow2 -f qcow2 2047T
creates_valid raw.img -f raw 1000
# A raw image has its first block allocated (zeros), as qemu-img's has: the same
# allocation map (qemu-img map) at 0, under 4 KiB, 4 KiB and above.
for size in 0 1000 4096 1G; do
  "$QDEDUP" create -q -f raw "map-q.raw" "$size"
  qemu-img create -q -f raw "map-r.raw" "$size"
  expect_eq "$(qemu-img map --output=json map-r.raw)" "$(qemu-img map --output=json map-q.raw)" \
    "create -f raw $size: allocation map as qemu-img's"
  expect_eq "$(stat -c %s map-r.raw)" "$(stat -c %s map-q.raw)" "create -f raw $size: file size"
  rm -f map-q.raw map-r.raw
done
# Backing files, with and without SIZE (then the backing file's size).
qemu-img create -q -f qcow2 base.qcow2 5M
qemu-img create -q -f raw base.raw 7M
creates_valid ov.qcow2 -f qcow2 -b base.qcow2 -F qcow2
creates_valid ov-size.qcow2 -f qcow2 -b base.qcow2 -F qcow2 1G
creates_valid ov-raw.qcow2 -f qcow2 -b base.raw -F raw
creates_valid ov-o.qcow2 -f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2
run "$QDEDUP" create -f qcow2 -b base.raw -F raw sized.qcow2
expect_status 0 "overlay of a raw file without SIZE"
expect_eq 7340032 "$(qemu-img info --output=json sized.qcow2 | jq '.["virtual-size"]')" \
  "overlay without SIZE takes the backing file's size"
rm -f sized.qcow2

# A deduplicating image: stock qemu-img accepts it, and sees what qdedup sees apart from
# qdedup's own "qdedup" object.
run "$QDEDUP" create -f qcow2 -o dedup=sha256 dedup.qcow2 1G
expect_status 0 "create -o dedup=sha256"
run qemu-img check dedup.qcow2
expect_status 0 "create -o dedup=sha256: qemu-img check"
run qemu-img info --output=json dedup.qcow2
theirs=$(json_sans_actual_size "$out")
run "$QDEDUP" info --output=json dedup.qcow2
expect_eq "$theirs" "$(json_sans_actual_size "$out" | jq -S 'del(.qdedup)')" \
  "create -o dedup=sha256: qemu-img info vs qdedup info"
expect_eq sha256 "$(jq -r '.qdedup.hash' "$out")" "create -o dedup=sha256: the hash in info"
rm -f dedup.qcow2

# Lists the directory (sorted, one line), without the helpers' .stdout and .stderr.
listing() {
  find . -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -v -x -e .stdout -e .stderr | sort |
    tr '\n' ' ' | sed 's/ $//'
}

# No temporary files are left after successful creates.
expect_eq "base.qcow2 base.raw" "$(listing)" "directory after the creates"

# -o help lists the options and creates nothing.
run "$QDEDUP" create -f qcow2 -o help
expect_status 0 "create -o help"
for key in cluster_size refcount_bits compat lazy_refcounts extended_l2 compression_type \
  backing_file backing_fmt size; do
  expect_out_has "$key" "create -o help"
done
run "$QDEDUP" create -f qcow2 -o help x.qcow2 1G
expect_status 0 "create -o help FILE SIZE"
if [ -e x.qcow2 ]; then fail "create -o help FILE SIZE created FILE"; else pass; fi

# Without -q, one "Formatting" line; with -q (before or after the subcommand), nothing.
run "$QDEDUP" create -f qcow2 loud.qcow2 1M
expect_status 0 "create without -q"
expect_out_has "Formatting 'loud.qcow2', fmt=qcow2" "create without -q"
for q in "-q create" "create -q"; do
  # shellcheck disable=SC2086  # $q is two words on purpose
  run "$QDEDUP" $q -f qcow2 quiet.qcow2 1M
  expect_status 0 "qdedup $q"
  if [ -s "$out" ]; then fail "qdedup $q printed on stdout: $(head -c 200 "$out")"; else pass; fi
  if [ -f quiet.qcow2 ]; then pass; else fail "qdedup $q did not create the image"; fi
  rm -f quiet.qcow2
done

# Creating over an existing file replaces it: over an image, and over other data.
"$QDEDUP" -q create -f qcow2 -o cluster_size=4k over.qcow2 1G
run "$QDEDUP" create -f qcow2 over.qcow2 2G
expect_status 0 "create over an existing image"
run qemu-img info --output=json over.qcow2
expect_eq "2147483648 65536" "$(jq -r '"\(.["virtual-size"]) \(.["cluster-size"])"' "$out")" \
  "create over an existing image: new size and cluster size"
head -c 300000 /dev/urandom >junk.qcow2
run "$QDEDUP" create -f qcow2 junk.qcow2 1M
expect_status 0 "create over a file of random bytes"
run qemu-img check junk.qcow2
expect_status 0 "create over a file of random bytes: qemu-img check"
expect_eq "base.qcow2 base.raw junk.qcow2 loud.qcow2 over.qcow2" "$(listing)" \
  "directory after replacing files"

finish
