#!/usr/bin/env bash
# Runs the libFuzzer targets of spec/fuzz (docs/fuzzing.md), built by
# `make fuzz-build` into build/fuzz/<target>.
#
#   fuzz.sh run SECONDS [TARGET...]    `make fuzz`: fuzz each for SECONDS;
#       new inputs go to build/fuzz/corpus/<target> (spec/fuzz/corpus/<target>
#       is read, never written), crashes to build/fuzz/crashes/<target>/.
#   fuzz.sh check SECONDS [TARGET...]  `make test`: each runs its whole corpus
#       (every crash found so far), then fuzzes for the rest of SECONDS;
#       only a crash is kept (build/fuzz/crashes/<target>/).
#
# Prints one line per target (executions per second, coverage: cov = code
# edges, ft = features) and exits non-zero when any target failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: fuzz.sh run|check SECONDS [TARGET...]}
secs=${2:?usage: fuzz.sh run|check SECONDS [TARGET...]}
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in spec/fuzz/*.c; do
        t=$(basename "$f" .c)
        [ "$t" = harness ] || targets+=("$t")
    done
fi
# leaks are bugs; a sanitizer report ends the run with a crash file
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/spec/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
bad=0
for t in "${targets[@]}"; do
    bin=build/fuzz/$t
    log=build/fuzz/$t.log
    if [ ! -x "$bin" ]; then
        echo "fuzz $t: FAILED (not built: make fuzz-build)"
        bad=$((bad + 1))
        continue
    fi
    crashes=build/fuzz/crashes/$t
    if [ "$mode" = run ]; then
        work=build/fuzz/corpus/$t
    else
        work=$(mktemp -d)
    fi
    mkdir -p "$work" "$crashes"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or
    # a runaway allocation is a failure too
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$work" "spec/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    last=$(grep -aE '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -nE 's/.* cov: ([0-9]+).*/\1/p')
    ft=$(echo "$last" | sed -nE 's/.* ft: ([0-9]+).*/\1/p')
    if [ $rc -eq 0 ]; then
        echo "fuzz $t: ok (${execs:-?} runs, ${rate:-?}/s, cov ${cov:-?}, ft ${ft:-?})"
    else
        bad=$((bad + 1))
        echo "fuzz $t: FAILED (exit $rc; log $log)"
        # where it failed: the sanitizer's or the check's first lines
        grep -aE '^(==[0-9]+==ERROR|SUMMARY|[a-z_]+: |    #[0-3] )|Test unit written|runtime error' \
            "$log" | head -n 12 | sed 's/^/    /'
        ls "$crashes"/* 2>/dev/null | sed 's/^/    input: /'
    fi
    [ "$mode" = run ] || rm -rf "$work"
done
[ "$bad" -eq 0 ]
