#!/usr/bin/env bash
# Runs every spec with LuaJIT's busted: unit specs, C units through FFI, and
# the integration specs against the real binary; then the integration specs
# again against the AddressSanitizer + UBSan build; then the fuzz targets
# (spec/fuzz) over their corpora. Ends with the line "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;./spec/?.lua;;"
busted=(luajit /usr/bin/busted --output=plainTerminal)
passed=0
failed=0
log=$(mktemp)
failures=$(mktemp)
trap 'rm -f "$log" "$failures"' EXIT

run() { # run LABEL ENV... -- PATHS...
    local label=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    echo "== $label"
    env "${envs[@]}" "${busted[@]}" "$@" 2>&1 | tee "$log"
    # keep each failure's head (where, which test, the first lines of why)
    # so the end of the run names them even when only its tail is read
    awk -v label="$label" '/^(Failure|Error) -> /{n=6; print "[" label "]"} n>0{print; n--}' \
        "$log" >>"$failures"
    local line
    line=$(grep -aE '^[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "test.sh: $label did not finish (no busted summary)"
        failed=$((failed + 1))
        return
    fi
    local s f e
    read -r s f e < <(echo "$line" | sed -E 's#^([0-9]+) successes? / ([0-9]+) failures? / ([0-9]+) errors?.*#\1 \2 \3#')
    passed=$((passed + s))
    failed=$((failed + f + e))
}

run "unit and C specs" MG_TEST_LIB=build/libmgtest.so -- spec/unit spec/c
run "integration specs" MG_BIN=build/moongate -- spec/integration spec/policies
if [ "${MG_SKIP_ASAN:-0}" != 1 ]; then
    # detect_leaks: every worker frees what it owns at exit
    run "integration specs under ASan+UBSan" MG_BIN=build/moongate-asan MG_SANITIZED=1 \
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 -- spec/integration spec/policies
fi
# The libFuzzer targets (spec/fuzz): each replays its corpus (every crash
# found so far) and fuzzes a few seconds; one pass or one fail per target.
# MG_FUZZ_SECONDS sets the time, MG_SKIP_FUZZ=1 leaves them out.
fuzz_step() {
    local secs=${MG_FUZZ_SECONDS:-4} targets=() f t
    for f in spec/fuzz/*.c; do
        t=$(basename "$f" .c)
        [ "$t" = harness ] || targets+=("$t")
    done
    echo "== fuzz targets (${#targets[@]}, ${secs} s each)"
    if ! make --no-print-directory -s fuzz-build >"$log" 2>&1; then
        cat "$log"
        echo "test.sh: the fuzz targets did not build (make fuzz-build)"
        { echo "[fuzz targets]"; tail -n 6 "$log"; } >>"$failures"
        failed=$((failed + ${#targets[@]}))
        return
    fi
    bash scripts/fuzz.sh check "$secs" "${targets[@]}" 2>&1 | tee "$log"
    local ok bad
    ok=$(grep -c ': ok (' "$log")
    bad=$(grep -c ': FAILED' "$log")
    passed=$((passed + ok))
    failed=$((failed + bad))
    awk '/: FAILED/{n=8; print "[fuzz targets]"} n>0{print; n--}' "$log" >>"$failures"
}
[ "${MG_SKIP_FUZZ:-0}" = 1 ] || fuzz_step

if [ -s "$failures" ]; then
    echo
    echo "== what failed"
    cat "$failures"
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
