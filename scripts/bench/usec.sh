#!/usr/bin/env bash
# usec.sh: what a request costs the gateway in user-space CPU time, to turn
# counts.sh's instructions into microseconds on this machine (the issue's
# goals are in µs; the VM has no performance counters, so its instructions
# per µs are measured this way: Ir/req from counts.sh over user µs/req
# from here, for the same workload).
#
# The gateway (one worker, on GW_CPU) serves WORKLOADS natively; the user
# and system CPU ticks of its process group are read (/proc/PID/stat)
# before and after a run:
#   user µs/req = user ticks x 10^6 / CLK_TCK / requests   (and with sys)
# Ticks are 10 ms: with 100,000 requests a request of 20 µs spends 200.
# Two clients, two regimes:
#   CLIENT=exact (default): counts.sh's client, WARM then exactly N
#     requests, one in flight on each of CONNS connections: the gateway
#     waits between requests (the regime counts.sh counts in);
#   CLIENT=wrk: wrk -t1 -cCONNS for SECONDS (scripts/bench/load.lua, as
#     peers.sh runs it): the gateway's CPU busy, its caches warm.
#
#   bash scripts/bench/usec.sh                       W1 and W6
#   WORKLOADS="W1 W4 W6" N=200000 REPS=3 bash scripts/bench/usec.sh
#   CLIENT=wrk SECONDS_=10 bash scripts/bench/usec.sh
set -uo pipefail
set +m
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

: "${WORKLOADS:=W1 W6}" "${N:=100000}" "${WARM:=5000}" "${CONNS:=16}" "${REPS:=1}"
: "${CLIENT:=exact}" "${SECONDS_:=10}"
: "${W2_LIMIT:=1000000000}" "${W3_LIMIT:=100}" "${GW_CPU:=0}" "${LOAD_CPU:=1}"
: "${GW_CMD=exec ./build/moongate run -c scripts/bench-gateway.lua}"

bench_need python3 taskset setsid ss
[ "$CLIENT" = wrk ] && bench_need wrk
bench_setup
export BENCH_JWT
BENCH_JWT=$(tool jwt consumer-count 36000)
HZ=$(getconf CLK_TCK)

# user and system ticks of a process group
group_user_sys() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v pg="$1" '
        { s = $0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[3] == pg) { u += f[12]; k += f[13] } }
        END { print u + 0, k + 0 }'
}

client_open() { # PORT WL
    coproc CLIENT { exec taskset -c "$LOAD_CPU" python3 "$BENCH_HERE/tool.py" client "$1" "$CONNS" "$2"; }
    local l
    read -r -t 120 -u "${CLIENT[0]}" l && [ "$l" = READY ] || { log "the client did not connect"; return 1; }
}
client_send() { # N
    local l
    echo "RUN $1" >&"${CLIENT[1]}"
    read -r -t 900 -u "${CLIENT[0]}" l || { log "the client did not finish $1 requests"; return 1; }
    set -- $l
    [ "${1:-}" = DONE ] && [ "${3:-1}" = 0 ] || { log "client: $l"; return 1; }
}
client_close() {
    [ -n "${CLIENT_PID:-}" ] || return 0
    echo QUIT >&"${CLIENT[1]}" 2>/dev/null
    wait "$CLIENT_PID" 2>/dev/null
}

start_gateway moongate count "$WORKLOADS" || die "the gateway did not start"
printf '%-3s %4s %12s %12s %9s\n' wl rep "user us/req" "u+s us/req" requests
wrk_run() { # SECONDS PORT WL -> requests served
    local url="http://127.0.0.1:$2" tok=""
    case $3 in W2|W6) tok=$BENCH_JWT ;; *) url="$url/orders/123" ;; esac
    BENCH_WL=$3 BENCH_JWT=$tok taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$1s" --timeout 5s \
        -s "$BENCH_HERE/load.lua" "$url" 2>&1 | sed -n 's/^RESULT requests=\([0-9]*\).*errors=0.*/\1/p'
}

for rep in $(seq "$REPS"); do
    for wl in $WORKLOADS; do
        p=PORT_$wl
        if [ "$CLIENT" = wrk ]; then
            wrk_run 2 "${!p}" "$wl" >/dev/null
            read -r u0 k0 < <(group_user_sys "$GWPG")
            n=$(wrk_run "$SECONDS_" "${!p}" "$wl")
            read -r u1 k1 < <(group_user_sys "$GWPG")
            [ -n "$n" ] && [ "$n" -gt 0 ] || die "$wl: wrk gave no result (or errors)"
        else
            client_open "${!p}" "$wl" && client_send "$WARM" || { client_close; die "$wl: warm-up failed"; }
            read -r u0 k0 < <(group_user_sys "$GWPG")
            client_send "$N" || { client_close; die "$wl: run failed"; }
            read -r u1 k1 < <(group_user_sys "$GWPG")
            client_close
            n=$N
        fi
        awk -v w="$wl" -v r="$rep" -v u=$((u1 - u0)) -v k=$((k1 - k0)) -v n="$n" -v hz="$HZ" \
            'BEGIN { printf "%-3s %4d %12.2f %12.2f %9d\n", w, r, u * 1e6 / hz / n, (u + k) * 1e6 / hz / n, n }'
    done
done
stop "$GWPG"
