#!/bin/sh
# Runs each libFuzzer target for FUZZ_SECONDS (60) on a scratch copy of its
# seed corpus (fuzz/corpus/<target>, left as it is), prints what it did
# and found, and fails if a target found a crash, a leak or a hang.
# Usage: fuzz/run.sh BUILD_DIR target...   (make fuzz runs it)
# FUZZ_ARGS adds libFuzzer flags (e.g. -jobs=2); crashing inputs are kept
# in BUILD_DIR/artifacts/.
set -u
build=$1
shift
secs=${FUZZ_SECONDS:-60}
work=$(mktemp -d "${TMPDIR:-/tmp}/fdpass-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$build/artifacts"
status=0
for t in "$@"; do
  corpus="$work/$t"
  mkdir -p "$corpus"
  [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
  seeds=$(ls "$corpus" | wc -l)
  dict=""
  [ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
  log="$work/$t.log"
  echo "fuzz: $t for ${secs}s ($seeds seeds)"
  # shellcheck disable=SC2086
  "$build/$t" -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" $dict ${FUZZ_ARGS:-} "$corpus" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  found=$(sed -n 's/^.*Test unit written to //p' "$log")
  printf 'fuzz: %s: %s execs (%s/s), %s, corpus %s -> %s\n' "$t" "${execs:-?}" "${rate:-?}" \
    "${cov:-cov: ?}" "$seeds" "$(ls "$corpus" | wc -l)"
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $t FAILED (exit $rc); the end of its log:"
    grep -v -e '^#[0-9]' -e '^0x' -e '^Base64' -e '^INFO' "$log" | tail -40 | sed 's/^/  /'
    [ -n "$found" ] && echo "fuzz: $t: input kept in $found; replay: $build/$t $found"
  else
    echo "fuzz: $t: no findings"
  fi
done
exit $status
