#!/usr/bin/env bash
# `qdedup check` against `qemu-img check` on the corruption corpus (issue 4).
#
# tests/corpus/make-corpus.sh builds the corpus into $TEST_TMP: images made by qemu-img,
# qemu-io and qdedup convert, then damaged at offsets read from the images, with a
# manifest (cases.tsv) of what qemu-img check reported for each, measured at build time.
# For every case:
#   1. qemu-img check still reports what the manifest says (the corpus is deterministic).
#   2. `qdedup check --output=json` agrees with qemu-img on the exit status and on the
#      corruptions and leaks counts (keys missing from the JSON count as 0); on a clean
#      image also on the statistics (clusters, image end offset). Cases of kind "dedup"
#      (the manifest's column), which qemu-img sees as clean, have qdedup's own
#      expectation instead: exit 2 with at least one corruption for real index damage,
#      exit 0 for data or hashes changed under the index, which only --verify-hashes
#      finds (exit 2). A stale index is kind qcow2: clean, and reported as stale. Kind
#      "both": qemu-img's leaks plus a dedup corruption.
#   3. The human output carries the same "Leaked cluster ...", "ERROR cluster ...",
#      "ERROR OFLAG_COPIED ..." and summary lines as qemu-img's (compared as sets).
#   4. `qdedup check -r all` on a copy (with --verify-hashes for the faults only it finds):
#      exit 0, then both `qdedup check` and `qemu-img check` report a clean image, the
#      dirty and corrupt bits are clear, a dedup image's index is valid again (and passes
#      --verify-hashes), and the guest data equals the pristine dump (outside the ranges
#      the damage destroyed, for the cases that list some). A case whose qdedup_repair
#      column says as-qemu need only end as qemu-img's own repair did.
#   5. Leak-only cases: `qdedup check -r leaks` and `qemu-img check -r leaks` end the same.
# CHECK_CORPUS_CASES=REGEX in the environment runs only the matching cases.
#
# qemu-img check -r all (7.2) for reference, measured by make-corpus.sh on a copy (the
# qemu_repair_* columns of cases.tsv; printed below as NOTE lines where qemu-img's repair
# falls short of what this test demands of qdedup's):
#   - l2-into-header-*: raises cluster 0's refcount to 2, keeps the misaligned L2 entry:
#     exit 2, 1 corruption left, and the guest data can no longer be read.
#   - truncated-*: repairs nothing (exit 2): the reference past the end of file remains.
#   - snapshot-l1-misaligned / snapshot-l1-too-large: frees the 7 "leaks" (the clusters
#     only the broken snapshot reaches) but keeps the broken snapshot entry: exit 2.
#   - reserved-l1-*, reserved-l2-*: not repaired (exit 2).
#   - l2-misaligned-64k: "Check failed" (exit 1), 2 corruptions left.
#   - refblock-misaligned-64k: exit 1 before and after (10 check errors: every refcount
#     read fails), no rebuild.
#   - overflow-refcount*: frees the leak, the overflow stays (exit 2).
#   - l2-into-l1, l1-same-l2, l1-l2-overlaps-data: raises the refcounts and calls the
#     image clean (exit 0), although guest clusters now alias metadata or each other.
#   - everything else: clean afterwards with the guest data unchanged.
source "$(dirname "$0")/../lib/interop.bash"

CORPUS="$TEST_TMP/corpus"
run env QDEDUP="$QDEDUP" bash "$QDEDUP_TESTS/corpus/make-corpus.sh" "$CORPUS"
expect_status 0 "make-corpus.sh builds the corpus"
if [ "$rc" -ne 0 ]; then
  finish
fi
MANIFEST="$CORPUS/cases.tsv"


FINDING_RE='^(Leaked cluster [0-9]+ refcount=[0-9]+ reference=[0-9]+|ERROR cluster [0-9]+ refcount=[0-9]+ reference=[0-9]+|ERROR OFLAG_COPIED (data|L2) cluster: .*)$'
SUMMARY_RE='^(No errors were found on the image\.|[0-9]+ errors were found on the image\.|[0-9]+ leaked clusters were found on the image\.|[0-9]+ internal errors have occurred during the check\.)$'
STAT_KEYS=(total-clusters allocated-clusters fragmented-clusters compressed-clusters image-end-offset)

# jnum FILE KEY: a top-level number of an ImageCheck JSON, 0 when absent.
jnum() { jq -r --arg k "$2" '.[$k] // 0' "$1"; }

# qd_json WHAT ARGS...: runs qdedup check --output=json ARGS; the JSON in $TEST_TMP/.qd.json.
# Returns 1 (after a failure) when the output is not a JSON object.
qd_json() {
  local what=$1
  shift
  run "$QDEDUP" check --output=json "$@"
  if jq -e 'type == "object"' "$out" >/dev/null 2>&1; then
    cp "$out" "$TEST_TMP/.qd.json"
    return 0
  fi
  fail "$what: qdedup check --output=json $* (exit $rc) printed no JSON object: $(head -c 200 "$out")"
  return 1
}

# mask_lost FILE LOST: zeroes the "OFF+LEN,..." ranges in the raw file FILE.
mask_lost() {
  local r
  [ "$2" = "-" ] && return 0
  for r in ${2//,/ }; do
    head -c "${r#*+}" /dev/zero |
      dd of="$1" bs=64k seek="${r%+*}" oflag=seek_bytes conv=notrunc status=none
  done
}

# The finding and summary lines of a check's output (stdout + stderr), sorted, unique.
lines_of() { cat "$@" | grep -E "$FINDING_RE|$SUMMARY_RE" | sort -u; }

# CHECK_CORPUS_CASES=REGEX (environment) runs only the cases whose names match.
cases=0
while IFS=$'\t' read -r -u 3 name _cs dedup_image kind recoverable lost q_exit q_corr \
  q_leaks _q_errs qd_exit qd_vexit qd_index qd_repair qr_exit qr_state qr_data desc; do
  if [ -n "${CHECK_CORPUS_CASES:-}" ] && ! [[ $name =~ $CHECK_CORPUS_CASES ]]; then continue; fi
  cases=$((cases + 1))
  img="$CORPUS/$name.qcow2"
  pristine="$CORPUS/$name.pristine.raw"
  W="$TEST_TMP/work/$name"
  mkdir -p "$W"
  what="$name ($desc)"

  # 1. qemu-img still sees what the manifest recorded.
  run qemu-img check --output=json -f qcow2 "$img"
  got="$rc/$(jnum "$out" corruptions)/$(jnum "$out" leaks)"
  expect_eq "$got" "$q_exit/$q_corr/$q_leaks" "$name: qemu-img check exit/corruptions/leaks as measured"
  cp "$out" "$W/qemu.json"
  # 2. qdedup check --output=json.
  qd_summary="no JSON"
  if qd_json "$what" "$img"; then
    qrc=$rc
    qc=$(jnum "$TEST_TMP/.qd.json" corruptions)
    ql=$(jnum "$TEST_TMP/.qd.json" leaks)
    qd_summary="exit $qrc, $qc corruptions, $ql leaks"
    expect_eq "$(jq -r .format "$TEST_TMP/.qd.json")" qcow2 "$name: JSON format"
    expect_eq "$(jq -r .filename "$TEST_TMP/.qd.json")" "$img" "$name: JSON filename"
    case $kind in
      qcow2)
        expect_eq "$qrc/$qc/$ql" "$q_exit/$q_corr/$q_leaks" \
          "$what: qdedup check exit/corruptions/leaks == qemu-img check"
        if [ "$q_exit" = 0 ]; then
          for k in "${STAT_KEYS[@]}"; do
            expect_eq "$(jnum "$TEST_TMP/.qd.json" "$k")" "$(jnum "$W/qemu.json" "$k")" \
              "$name: JSON $k == qemu-img's"
          done
        fi
        ;;
      dedup)
        # qemu-img sees a clean image: no leaks; corruptions only for index damage.
        expect_eq "$qrc/$ql" "$qd_exit/0" "$what: qdedup check exit/leaks"
        if [ "$qd_exit" = 2 ]; then
          if [ "$qc" -ge 1 ]; then pass; else fail "$what: exit 2 but corruptions=$qc"; fi
        else
          expect_eq "$qc" 0 "$what: no corruptions"
        fi
        ;;
      both)
        expect_eq "$qrc/$ql" "$qd_exit/$q_leaks" "$what: qdedup check exit/leaks (leaks == qemu-img's)"
        if [ "$qc" -gt "$q_corr" ]; then pass; else
          fail "$what: corruptions=$qc, expected more than qemu-img's $q_corr (a dedup finding)"
        fi
        ;;
      *) fail "$name: unknown kind '$kind' in the manifest" ;;
    esac
    if [ "$qd_index" != "-" ]; then
      idx=$(jq -r '.dedup.index // empty' "$TEST_TMP/.qd.json")
      if [ -n "$idx" ]; then
        expect_eq "$idx" "$qd_index" "$name: dedup.index"
      else
        echo "NOTE: $name: qdedup check JSON has no dedup.index (expected \"$qd_index\")"
      fi
    fi
  fi
  if [ "$dedup_image" = 1 ] || [ "$qd_vexit" != "$qd_exit" ]; then
    if qd_json "$what --verify-hashes" --verify-hashes "$img"; then
      expect_eq "$rc" "$qd_vexit" "$what: qdedup check --verify-hashes exit status"
      if [ "$qd_vexit" = 2 ]; then
        qc=$(jnum "$TEST_TMP/.qd.json" corruptions)
        if [ "$qc" -ge 1 ]; then pass; else fail "$what: --verify-hashes exit 2 but corruptions=$qc"; fi
      fi
    fi
  fi

  # 3. Human output: the same finding and summary lines (kind both: qemu-img's finding
  #    lines are among qdedup's).
  if [ "$kind" != dedup ]; then
    run qemu-img check -f qcow2 "$img"
    cp "$out" "$W/qemu.out"
    cp "$err" "$W/qemu.err"
    run "$QDEDUP" check "$img"
    expect_eq "$rc" "$qd_exit" "$name: qdedup check (human) exit status"
    cp "$out" "$W/qd.out"
    cp "$err" "$W/qd.err"
    if [ "$kind" = qcow2 ]; then
      expect_eq "$(lines_of "$W/qd.out" "$W/qd.err")" "$(lines_of "$W/qemu.out" "$W/qemu.err")" \
        "$name: Leaked/ERROR cluster/OFLAG_COPIED and summary lines (- qdedup, + qemu-img)"
    else
      missing=$(comm -13 <(lines_of "$W/qd.out" "$W/qd.err" | grep -E "$FINDING_RE") \
        <(lines_of "$W/qemu.out" "$W/qemu.err" | grep -E "$FINDING_RE"))
      expect_eq "$missing" "" "$name: qemu-img's finding lines missing from qdedup's output"
    fi
    # Other diagnostics (kind qcow2): qemu-img's wording is the model, only reported here.
    if [ "$kind" = qcow2 ]; then
      other_q=$(cat "$W/qemu.out" "$W/qemu.err" | grep -E '^(ERROR|Leaked|Warning)' | grep -vE "$FINDING_RE" | sort -u)
      other_d=$(cat "$W/qd.out" "$W/qd.err" | grep -E '^(ERROR|Leaked|Warning)' | grep -vE "$FINDING_RE" | sort -u)
      if [ "$other_q" != "$other_d" ]; then
        echo "NOTE: $name: other diagnostic lines differ (- qdedup, + qemu-img):"
        diff <(printf '%s\n' "$other_d") <(printf '%s\n' "$other_q") | grep '^[<>]' | head -n 8 |
          sed 's/^</    -/; s/^>/    +/'
      fi
    fi
  fi

  # 4. qdedup check -r all repairs the image completely, without losing guest data.
  #    A fault only --verify-hashes finds is repaired with --verify-hashes. A case marked
  #    as-qemu (qdedup_repair) need only end as qemu-img's own repair does.
  if [ "$qd_repair" = as-qemu ]; then
    rep="$W/repaired.qcow2"
    cp "$img" "$rep"
    run "$QDEDUP" check -r all "$rep"
    repair_rc=$rc
    run qemu-img check --output=json -f qcow2 "$rep"
    expect_eq "$rc/$(jnum "$out" corruptions)/$(jnum "$out" leaks)" "$qr_state" \
      "$name: qemu-img check after qdedup check -r all == after qemu-img check -r all"
    printf '%-32s qemu-img: exit %s, %s corruptions, %s leaks | qdedup: %s | repair: exit %s, as qemu-img: %s\n' \
      "$name" "$q_exit" "$q_corr" "$q_leaks" "$qd_summary" "$repair_rc" "$qr_state"
    continue
  fi
  rep="$W/repaired.qcow2"
  cp "$img" "$rep"
  verify=()
  [ "$qd_vexit" != "$qd_exit" ] && verify=(--verify-hashes)
  run "$QDEDUP" check -r all "${verify[@]}" "$rep"
  repair_rc=$rc
  expect_status 0 "$what: qdedup check -r all${verify[*]:+ ${verify[*]}}"
  cp "$out" "$W/repair.out"
  cp "$err" "$W/repair.err"
  repaired="not clean"
  if qd_json "$name after qdedup's repair" "$rep"; then
    expect_eq "$rc/$(jnum "$TEST_TMP/.qd.json" corruptions)/$(jnum "$TEST_TMP/.qd.json" leaks)" \
      "0/0/0" "$name: qdedup check after qdedup check -r all: exit/corruptions/leaks"
    if [ "$dedup_image" = 1 ]; then
      run "$QDEDUP" check --verify-hashes "$rep"
      expect_status 0 "$name: qdedup check --verify-hashes after the repair"
    fi
  fi
  if expect_check_clean "$rep" "$name: qemu-img check after qdedup check -r all"; then
    repaired=clean
  fi
  run qemu-img info --output=json -f qcow2 "$rep"
  expect_eq "$(jq -c '[.["dirty-flag"], .["format-specific"].data.corrupt]' "$out")" \
    "[false,false]" "$name: dirty and corrupt bits clear after the repair"
  if [ "$dedup_image" = 1 ]; then
    run "$QDEDUP" info --output=json "$rep"
    expect_eq "$(jq '.qdedup["index-valid"]' "$out" 2>/dev/null)" true \
      "$name: dedup index valid (rebuilt) after the repair"
  fi
  data="-"
  if [ "$recoverable" = 1 ]; then
    run qemu-img compare -f raw -F qcow2 "$pristine" "$rep"
    expect_status 0 "$what: guest data after the repair == pristine (qemu-img compare)"
    [ "$rc" -eq 0 ] && data=same || data=differs
  else
    run qemu-img convert -f qcow2 -O raw "$rep" "$W/repaired.raw"
    if [ "$rc" -ne 0 ]; then
      fail "$what: qemu-img convert of the repaired image"
      data=unreadable
    else
      cp "$pristine" "$W/pristine.raw"
      mask_lost "$W/pristine.raw" "$lost"
      mask_lost "$W/repaired.raw" "$lost"
      run cmp "$W/pristine.raw" "$W/repaired.raw"
      expect_status 0 "$what: guest data after the repair == pristine outside $lost"
      [ "$rc" -eq 0 ] && data=same || data=differs
    fi
  fi
  if [ "$repaired" = clean ] && [ "$repair_rc" = 0 ] && [ "$qr_state" != "0/0/0" ]; then
    echo "NOTE: $name: qemu-img check -r all left exit/corruptions/leaks $qr_state" \
      "(its exit $qr_exit, data $qr_data); qdedup's repair left a clean image"
  fi

  # 5. Leak-only images: -r leaks ends as qemu-img's does.
  if [ "$q_exit" = 3 ]; then
    cp "$img" "$W/leaks-qd.qcow2"
    cp "$img" "$W/leaks-qemu.qcow2"
    run "$QDEDUP" check -r leaks "$W/leaks-qd.qcow2"
    qd_rl=$rc
    run qemu-img check -r leaks -f qcow2 "$W/leaks-qemu.qcow2"
    expect_eq "$qd_rl" "$rc" "$name: qdedup check -r leaks exit == qemu-img's"
    expect_check_clean "$W/leaks-qd.qcow2" "$name: qemu-img check after qdedup check -r leaks"
  fi

  printf '%-32s qemu-img: exit %s, %s corruptions, %s leaks | qdedup: %s | repair: exit %s, %s, data %s\n' \
    "$name" "$q_exit" "$q_corr" "$q_leaks" "$qd_summary" "$repair_rc" "$repaired" "$data"
done 3< <(tail -n +2 "$MANIFEST")

if [ -n "${CHECK_CORPUS_CASES:-}" ] || [ "$cases" -ge 40 ]; then pass; else
  fail "the manifest lists only $cases cases"
fi

# A raw image has no checks: exit 63, as qemu-img.
run qemu-img check -f raw "$CORPUS/clean-64k.pristine.raw"
expect_status 63 "qemu-img check -f raw"
run "$QDEDUP" check -f raw "$CORPUS/clean-64k.pristine.raw"
expect_status 63 "qdedup check -f raw (no checks for raw, as qemu-img)"

finish
