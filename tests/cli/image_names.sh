#!/usr/bin/env bash
# File names as qemu-img takes them, for `info` and `check`: a json:{...} name (double-
# or single-quoted strings, nested or dotted keys) and an --image-opts string that name a
# local file give what the plain path gives, and qemu-img's output for the same name;
# names qdedup does not open (another protocol, another option, bad JSON, --image-opts
# with -f) get one line and exit 1.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd qemu-img

qemu-img create -q -f qcow2 t.qcow2 64M
"$QDEDUP" info t.qcow2 >plain.txt
"$QDEDUP" info --output=json t.qcow2 >plain.json
"$QDEDUP" check t.qcow2 >check.txt

names=(
  "json:{\"driver\":\"qcow2\",\"file.filename\":\"t.qcow2\"}"
  "json:{'driver':'qcow2','file':{'driver':'file','filename':'t.qcow2'}}"
  "json:{ 'file': { 'filename': 't.qcow2' } }"
)
for name in "${names[@]}"; do
  run "$QDEDUP" info "$name"
  expect_status 0 "info $name"
  expect_eq "$(cat plain.txt)" "$(cat "$out")" "info $name: as the plain path"
  expect_eq "$(qemu-img info "$name")" "$(cat "$out")" "info $name: as qemu-img"
  run "$QDEDUP" info --output=json "$name"
  expect_eq "$(json_sans_actual_size plain.json)" "$(json_sans_actual_size "$out")" \
    "info --output=json $name: as the plain path"
  run "$QDEDUP" check "$name"
  expect_status 0 "check $name"
  expect_eq "$(cat check.txt)" "$(cat "$out")" "check $name: as the plain path"
done

for opts in "driver=qcow2,file.driver=file,file.filename=t.qcow2" "file.filename=t.qcow2"; do
  run "$QDEDUP" info --image-opts "$opts"
  expect_status 0 "info --image-opts $opts"
  expect_eq "$(qemu-img info --image-opts "$opts")" "$(cat "$out")" \
    "info --image-opts $opts: as qemu-img"
  run "$QDEDUP" check --image-opts "$opts"
  expect_status 0 "check --image-opts $opts"
  expect_eq "$(cat check.txt)" "$(cat "$out")" "check --image-opts $opts: as the plain path"
done
# A comma in the file name is doubled in QemuOpts.
cp t.qcow2 'a,b.qcow2'
run "$QDEDUP" info --image-opts "driver=qcow2,file.filename=a,,b.qcow2"
expect_status 0 "--image-opts with ',,'"
expect_out_has "image: a,b.qcow2" "--image-opts with ',,': the file named"

bad_name() {  # bad_name WHAT EXPECTED-TEXT ARGS...
  local what=$1 text=$2
  shift 2
  run "$QDEDUP" info "$@"
  expect_error "info $what"
  expect_err_has "$text" "info $what: the reason"
  run "$QDEDUP" check "$@"
  expect_error "check $what"
}
bad_name "another protocol" "protocol 'nbd' is not supported" \
  "json:{'driver':'qcow2','file':{'driver':'nbd','host':'x'}}"
bad_name "an option qdedup does not take" "option 'file.locking' is not supported" \
  "json:{'driver':'qcow2','file':{'filename':'t.qcow2','locking':'off'}}"
bad_name "a number" "option 'cache.direct' is not supported" \
  "json:{'driver':'qcow2','file.filename':'t.qcow2','cache':{'direct':true}}"
bad_name "bad JSON" "could not parse the JSON options" "json:{'driver':"
bad_name "no file" "name no file" "json:{'driver':'qcow2'}"
bad_name "--image-opts and -f" "--image-opts and --format are mutually exclusive" \
  --image-opts -f qcow2 "file.filename=t.qcow2"
bad_name "--image-opts without =" "needs a value" --image-opts "file.filename"
bad_name "another format" "unknown format 'vmdk'" \
  "json:{'driver':'vmdk','file.filename':'t.qcow2'}"

finish
