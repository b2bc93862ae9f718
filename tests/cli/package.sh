#!/usr/bin/env bash
# The Debian package (cpack -G DEB, as scripts/package.sh makes it): its control fields, its
# files (the binary, the manual page, the docs), a Depends line that names the package of
# every shared library the binary needs, and the unpacked binary runs.
# shellcheck source=../lib/common.bash
source "${QDEDUP_TESTS:?run the tests through ctest}/lib/common.bash" || exit 1
require_cmd cpack dpkg-deb dpkg-shlibdeps dpkg-query readelf groff zcat
: "${QDEDUP_BUILD:?QDEDUP_BUILD: the build directory (CTest sets it)}"
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
run cpack -G DEB --config "$QDEDUP_BUILD/CPackConfig.cmake" -B "$TEST_TMP/pkg"
expect_status 0 "cpack -G DEB"
deb=$(ls "$TEST_TMP"/pkg/qdedup_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { fail "cpack made no qdedup_*.deb in $TEST_TMP/pkg"; finish; }
version=$("$QDEDUP" --version | cut -d' ' -f2)
expect_eq "$(basename "$deb")" "qdedup_${version}_$(dpkg --print-architecture).deb" "the package's file name"

dpkg-deb -f "$deb" Package Version Section Architecture >"$TEST_TMP/fields"
expect_eq "$(cat "$TEST_TMP/fields")" "Package: qdedup
Version: $version
Section: utils
Architecture: $(dpkg --print-architecture)" "the control fields"
depends=$(dpkg-deb -f "$deb" Depends)

dpkg-deb -c "$deb" | awk '{print $6}' >"$TEST_TMP/files"
for f in ./usr/bin/qdedup ./usr/share/man/man1/qdedup.1.gz ./usr/share/doc/qdedup/README.md \
  ./usr/share/doc/qdedup/format.md ./usr/share/doc/qdedup/metrics.md; do
  if grep -qxF "$f" "$TEST_TMP/files"; then pass; else fail "the package lacks $f"; fi
done
if grep -vE '^\./usr(/|$)' "$TEST_TMP/files" | grep -q .; then
  fail "the package installs outside /usr: $(grep -vE '^\./usr(/|$)' "$TEST_TMP/files" | head -3)"
else
  pass
fi

dpkg-deb -x "$deb" "$TEST_TMP/root"
bin="$TEST_TMP/root/usr/bin/qdedup"
run "$bin" --version
expect_status 0 "the packaged qdedup --version"
expect_out_has "qdedup $version" "the packaged qdedup --version"
if zcat "$TEST_TMP/root/usr/share/man/man1/qdedup.1.gz" | groff -ww -man -Tutf8 -z 2>"$TEST_TMP/groff"; then
  if [ -s "$TEST_TMP/groff" ]; then fail "the packaged page warns: $(head -c 300 "$TEST_TMP/groff")"; else pass; fi
else
  fail "the packaged page does not render"
fi

# Every library the binary needs (NEEDED) comes from a package that Depends names.
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[ -n "$needed" ] || fail "readelf found no NEEDED entries in $bin"
for lib in $needed; do
  path=$("$ldconfig" -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
  [ -n "$path" ] || { fail "$lib is not in the linker cache"; continue; }
  owner=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
  [ -n "$owner" ] || owner=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
  [ -n "$owner" ] || { fail "no package owns $path"; continue; }
  # The package itself or a virtual package it provides (libspdlog1.10 provides libspdlog1.10-fmt9).
  provides=$(dpkg-query -W -f='${Provides}' "$owner" | tr ',' '\n' | sed 's/^ *//; s/ .*//')
  # shellcheck disable=SC2046,SC2086  # word splitting of the provided names is wanted
  if printf '%s\n' "$depends" | tr ',' '\n' | sed 's/^ *//; s/ .*//' |
    grep -qxF -e "$owner" ${provides:+$(printf -- '-e %s ' $provides)}; then
    pass
  else
    fail "$lib comes from $owner, which Depends does not name: $depends"
  fi
done

finish
