#!/usr/bin/env bash
# --help, --version, and a missing or unknown subcommand.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1

run "$QDEDUP" --help
expect_status 0 "qdedup --help"
for cmd in create info; do
  if grep -qE "^ +$cmd +[A-Z]" "$out"; then pass; else fail "qdedup --help does not list $cmd"; fi
done

for cmd in create info; do
  run "$QDEDUP" "$cmd" --help
  expect_status 0 "qdedup $cmd --help"
  expect_out_has "Usage: qdedup $cmd" "qdedup $cmd --help"
  expect_out_has "Example:" "qdedup $cmd --help"
  expect_out_has "qdedup $cmd " "qdedup $cmd --help: the example"
  expect_out_has "-f " "qdedup $cmd --help: options"
done
run "$QDEDUP" create --help
for opt in "-o " "-b " "-F " FILE SIZE; do expect_out_has "$opt" "qdedup create --help"; done
run "$QDEDUP" info --help
for opt in --output --backing-chain -U FILE; do expect_out_has "$opt" "qdedup info --help"; done

run "$QDEDUP" --version
expect_status 0 "qdedup --version"
if grep -qxE 'qdedup [0-9]+\.[0-9]+\.[0-9]+' "$out" && [ "$(wc -l <"$out")" -eq 1 ]; then
  pass
else
  fail "qdedup --version printed: $(head -c 200 "$out")"
fi

run "$QDEDUP"
expect_error "qdedup without a subcommand"

run "$QDEDUP" frobnicate
expect_error "qdedup frobnicate"
expect_err_has "frobnicate" "qdedup frobnicate: the error names the unknown command"

# An unknown command stays an error with --help after it: scripts probe for commands
# with `qdedup COMMAND --help`, and must not be told that one exists.
run "$QDEDUP" frobnicate --help
if [ "$rc" -ne 0 ]; then pass; else fail "qdedup frobnicate --help: exit status 0"; fi

# A subcommand's errors name the subcommand's problem in one line.
run "$QDEDUP" info
expect_error "qdedup info without FILE"
expect_err_has "FILE" "qdedup info without FILE"
run "$QDEDUP" info --output=xml x
expect_error "qdedup info --output=xml"

finish
