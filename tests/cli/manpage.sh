#!/usr/bin/env bash
# The manual page qdedup(1) (docs/qdedup.1.in, filled in by the build): it renders without
# a warning, documents every command of `qdedup --help` and, for each command, exactly the
# options its --help lists (no more, no fewer), so that it cannot drift from the command
# table. Then `cmake --install` puts the binary, the page and the docs in place.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd groff
require_cmd man
: "${QDEDUP_BUILD:?QDEDUP_BUILD: the build directory (CTest sets it)}"
page="$QDEDUP_BUILD/qdedup.1"
[ -f "$page" ] || { fail "no $page: the build makes it from docs/qdedup.1.in"; finish; }

# Renders with every groff warning on, and through man(1) as a user reads it.
run groff -ww -man -Tutf8 -z "$page"
expect_status 0 "groff -ww -man"
if [ -s "$err" ]; then fail "groff warns: $(head -c 500 "$err")"; else pass; fi
run env -u MAN_KEEP_FORMATTING MANWIDTH=80 man -l "$page"
expect_status 0 "man -l qdedup.1"
if [ -s "$err" ]; then fail "man -l writes to stderr: $(head -c 500 "$err")"; else pass; fi
grep -q "@" "$out" && fail "the rendered page has an unfilled @VARIABLE@: $(grep -m1 @ "$out")"
expect_out_has "qdedup $("$QDEDUP" --version | cut -d' ' -f2)" "the page names the version"
if grep -q $'\b' "$out"; then fail "man -l output has overstrikes (formatting kept)"; else pass; fi

# Options named by a --help text: the first word of each line of its "Options:" block.
help_options() {
  awk '/^Options:/ {on = 1; next} on && /^$/ {exit} on && /^  -/ {print $1}' |
    sed 's/\[=[^]]*\]//' | tr ',' '\n' | sort -u
}
# Options named by the man page in one section: the first line after each .TP that names
# an option. SECTION is a .SS name, or "" for the GLOBAL OPTIONS section.
man_options() {
  awk -v want="$1" '
    /^\.SH/ { global = ($0 ~ /GLOBAL OPTIONS/); sect = ""; next }
    /^\.SS/ { sect = $2; gsub(/\\-/, "-", sect); global = 0; next }
    /^\.TP/ { tp = 1; next }
    tp { tp = 0; if ((want == "" && global) || (want != "" && sect == want)) print }
  ' "$page" | sed 's/\\-/-/g' | grep -oE '(^| )--?[A-Za-z][A-Za-z-]*' | tr -d ' ' | sort -u
}
man_commands() {
  awk '/^\.SH COMMANDS/ {on = 1; next} /^\.SH/ {on = 0} on && /^\.SS/ {print $2}' "$page" |
    sed 's/\\-/-/g' | sort
}

"$QDEDUP" --help >"$TEST_TMP/help"
commands=$(awk '/^Subcommands:/ {on = 1; next} on && /^$/ {exit} on {print $1}' "$TEST_TMP/help" | sort)
[ -n "$commands" ] || fail "qdedup --help lists no commands"
expect_eq "$(man_commands)" "$commands" "the page's COMMANDS sections against qdedup --help"
expect_eq "$(man_options "")" "$(help_options <"$TEST_TMP/help")" "GLOBAL OPTIONS against qdedup --help"
for cmd in $commands; do
  "$QDEDUP" "$cmd" --help >"$TEST_TMP/help.$cmd"
  want=$(help_options <"$TEST_TMP/help.$cmd")
  [ -n "$want" ] || fail "qdedup $cmd --help lists no options"
  expect_eq "$(man_options "$cmd")" "$want" "the page's options of $cmd against qdedup $cmd --help"
  # The SYNOPSIS names every command too.
  if grep -qE "^\.B qdedup $(printf '%s' "$cmd" | sed 's/-/\\\\-/g')\$" "$page"; then pass
  else fail "SYNOPSIS has no line for $cmd"; fi
done

# cmake --install puts the binary, the gzipped page and the docs under the prefix.
run cmake --install "$QDEDUP_BUILD" --prefix "$TEST_TMP/prefix"
expect_status 0 "cmake --install"
for f in bin/qdedup share/man/man1/qdedup.1.gz share/doc/qdedup/README.md \
  share/doc/qdedup/format.md share/doc/qdedup/metrics.md; do
  if [ -s "$TEST_TMP/prefix/$f" ]; then pass; else fail "cmake --install did not install $f"; fi
done
run "$TEST_TMP/prefix/bin/qdedup" --version
expect_status 0 "the installed qdedup --version"
if zcat "$TEST_TMP/prefix/share/man/man1/qdedup.1.gz" | cmp -s - "$page"; then pass
else fail "the installed page is not the built one"; fi

finish
