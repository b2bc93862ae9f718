#!/usr/bin/env bash
# `qdedup create` with bad input: one "qdedup: ..." line on stderr, exit 1, and nothing
# left behind (neither the image nor a temporary file), nor an existing file modified.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1

qemu_ok=1
command -v qemu-img >/dev/null 2>&1 || qemu_ok=0

# Runs `qdedup create ARGS...` in a fresh empty directory and checks the error contract;
# KEY must appear in the message so that the test knows *why* create failed. Like
# qemu-img, create prints its "Formatting" line before the errors it finds in the
# option values (and not before errors of syntax, type or the backing file): stdout
# must be what `qemu-img create ARGS...` prints, where qemu-img knows every option;
# with qdedup's own options or formats it does not write, nothing or one "Formatting"
# line.
case_no=0
create_fails() {
  local key=$1
  shift
  case_no=$((case_no + 1))
  local dir="$TEST_TMP/case$case_no"
  mkdir "$dir"
  cd "$dir" || exit 1
  run "$QDEDUP" create "$@"
  local got
  got=$(cat "$out")
  : >"$out"
  local want="" compare=0
  if [ "$qemu_ok" = 1 ] && [[ "$*" != *dedup* && "$*" != *vmdk* ]]; then
    compare=1
    mkdir "$dir.qemu"
    want=$(cd "$dir.qemu" && qemu-img create "$@" 2>/dev/null)
    rm -rf "$dir.qemu"
  fi
  cd "$TEST_TMP" || exit 1
  local what="create $*"
  expect_error "$what"
  expect_err_has "$key" "$what"
  expect_empty_dir "$dir" "$what"
  if [ "$compare" = 1 ]; then
    expect_eq "$want" "$got" "$what: stdout as qemu-img's"
  elif [ -n "$got" ] && ! [[ "$got" == "Formatting '"* && "$got" != *$'\n'* ]]; then
    fail "$what: stdout is neither empty nor one Formatting line: $got"
  else
    pass
  fi
  rm -rf "$dir"
}

# Sizes.
create_fails "invalid size '-1'" -f qcow2 a.qcow2 -1
create_fails "invalid size '1X'" -f qcow2 a.qcow2 1X
create_fails "invalid size 'abc'" -f qcow2 a.qcow2 abc
create_fails "invalid size '99999999999E'" -f qcow2 a.qcow2 99999999999E
create_fails "invalid size" -f raw a.raw 1X
create_fails "size" -f qcow2 a.qcow2
create_fails "too large" -f qcow2 -o cluster_size=512 a.qcow2 1T

# Options, in qemu-img's order: -o before FILE and SIZE.
create_fails "foo" -f qcow2 -o foo=bar a.qcow2 1G
create_fails "Cluster size" -f qcow2 -o cluster_size=1000 a.qcow2 1G
create_fails "Cluster size" -f qcow2 -o cluster_size=4M a.qcow2 1G
create_fails "refcount" -f qcow2 -o refcount_bits=3 a.qcow2 1G
create_fails "refcount" -f qcow2 -o refcount_bits=128 a.qcow2 1G
create_fails "16384" -f qcow2 -o extended_l2=on,cluster_size=4k a.qcow2 1G
create_fails "refcount" -f qcow2 -o compat=0.10,refcount_bits=8 a.qcow2 1G
# Numbers as QemuOpts reads them (strtoull, base 0): "-1" wraps (and is printed -1), no
# suffix, no octal 8.
create_fails "refcount width" -f qcow2 -o refcount_bits=-1 a.qcow2 1G
create_fails "refcount width" -f qcow2 -o refcount_bits=-0 a.qcow2 1G
create_fails "'1k' is not a number" -f qcow2 -o refcount_bits=1k a.qcow2 1G
create_fails "'08' is not a number" -f qcow2 -o refcount_bits=08 a.qcow2 1G
create_fails "'99999999999999999999' is not a number" -f qcow2 -o refcount_bits=99999999999999999999 a.qcow2 1G
# bdrv_img_create's order: the size given twice, the backing file's name, whether it
# opens, then its format.
create_fails "specified only once" -f qcow2 -o size=10M a.qcow2 20M
create_fails "got empty string" -f qcow2 -b "" a.qcow2 1M
create_fails "same filename as the backing file" -f qcow2 -b a.qcow2 -F qcow2 a.qcow2 1M
create_fails "could not open the backing image: missing.qcow2: No such file" -f qcow2 -b missing.qcow2 a.qcow2 1M
create_fails "lazy refcounts" -f qcow2 -o compat=0.10,lazy_refcounts=on a.qcow2 1G
create_fails "compression" -f qcow2 -o compat=0.10,compression_type=zstd a.qcow2 1G
create_fails "extended L2" -f qcow2 -o compat=0.10,extended_l2=on a.qcow2 1G
create_fails "md5" -f qcow2 -o dedup=md5 a.qcow2 1G
create_fails "dedup_verify" -f qcow2 -o dedup=sha256,dedup_verify=maybe a.qcow2 1G
create_fails "lazy_refcounts" -f qcow2 -o lazy_refcounts=maybe a.qcow2 1G
create_fails "compat" -f qcow2 -o compat=2.0 a.qcow2 1G
create_fails "compression" -f qcow2 -o compression_type=lz4 a.qcow2 1G
create_fails "cluster_size" -f qcow2 -o cluster_size a.qcow2 1G
# The same mistakes with -o after the positionals.
create_fails "Cluster size" -f qcow2 a.qcow2 1G -o cluster_size=1000
create_fails "16384" -f qcow2 a.qcow2 1G -o extended_l2=on,cluster_size=4k

# Formats and backing files.
create_fails "vmdk" -f vmdk a.vmdk 1G
create_fails "could not open the backing image" -f qcow2 -b base.qcow2 a.qcow2 1G
create_fails "missing.qcow2" -f qcow2 -b missing.qcow2 -F qcow2 a.qcow2

# A backing file that opens, without -F: refused (qemu-img refuses it too), nothing made.
mkdir nofmt
"$QDEDUP" create -q -f qcow2 nofmt/base.qcow2 1M
run "$QDEDUP" create -f qcow2 -b base.qcow2 nofmt/a.qcow2 1G
expect_error "create -b without -F"
expect_err_has "backing file specified without backing format" "create -b without -F"
expect_eq "base.qcow2" "$(ls -A nofmt)" "create -b without -F: nothing made"

# A failed create leaves an existing file at the target name untouched.
mkdir keep
printf 'precious data\n' >keep/a.qcow2
before=$(sha256sum keep/a.qcow2)
for bad in "-o cluster_size=1000" "-o refcount_bits=3" "-o dedup=md5" "-f vmdk"; do
  # shellcheck disable=SC2086  # $bad is two words on purpose
  run "$QDEDUP" create $bad keep/a.qcow2 1G
  : >"$out"  # the Formatting line: create_fails checks it
  expect_error "create $bad over an existing file"
  expect_eq "$before" "$(sha256sum keep/a.qcow2)" "create $bad over an existing file: content"
  expect_eq "a.qcow2" "$(ls -A keep)" "create $bad over an existing file: directory"
done
run "$QDEDUP" create -f qcow2 keep/a.qcow2 1X
expect_error "create with a bad size over an existing file"
expect_eq "$before" "$(sha256sum keep/a.qcow2)" "create with a bad size over an existing file"
if [ "$qemu_ok" = 1 ]; then
  # The same for an existing qcow2 image.
  qemu-img create -q -f qcow2 keep/b.qcow2 1M
  before=$(sha256sum keep/b.qcow2)
  run "$QDEDUP" create -f qcow2 -o refcount_bits=3 keep/b.qcow2 1G
  : >"$out"  # the Formatting line: create_fails checks it
  expect_error "create over an existing qcow2 with a bad option"
  expect_eq "$before" "$(sha256sum keep/b.qcow2)" "existing qcow2 after a failed create"
fi

finish
