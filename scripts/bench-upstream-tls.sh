#!/usr/bin/env bash
# bench-upstream-tls.sh: how many new TLS connections per second moongate
# opens to an upstream, with session resumption (the default) and without
# (upstream.tls.session_reuse = false). W5 of scripts/bench/peers.sh with
# keepalive = 0, so every request is a new TCP connection and a new TLS
# handshake to origin A (nginx, TLS 1.3, a P-256 certificate); the gateway
# has one worker on GW_CPU, wrk and the origin run on LOAD_CPU.
#   bash scripts/bench-upstream-tls.sh        DURATION (5) s per mode, CONNS (16)
# Prints per mode: requests/s (= new upstream TLS connections/s), the
# gateway's CPU time per connection, and the connections the origin counted.
set -uo pipefail
set +m
source "$(dirname -- "${BASH_SOURCE[0]}")/bench/lib.sh"
: "${DURATION:=5}" "${CONNS:=16}" "${GW_CPU:=0}" "${LOAD_CPU:=1}" "${W2_LIMIT:=1}" "${W3_LIMIT:=1}"
GW_CMD="exec $BENCH_ROOT/build/moongate run -c $BENCH_ROOT/scripts/bench-gateway.lua"
bench_need nginx wrk curl python3 taskset setsid ss openssl
bench_setup
CLK=$(getconf CLK_TCK)
printf '%-8s %9s %12s %9s\n' mode "conns/s" "us/conn(gw)" upconn
for mode in resumed full; do
    export BENCH_W5_KEEPALIVE=0 BENCH_W5_SESSION_REUSE=$([ $mode = resumed ] && echo 1 || echo 0)
    start_gateway moongate timing W5 || die "moongate did not start: $(tail -3 "$RUN/moongate.log")"
    bad=$(tool smoke W5 "$PORT_W5") || die "smoke test: $bad"
    t0=$(group_ticks "$GWPG"); a0=$(upstream_accepts)
    line=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s \
        -s "$BENCH_HERE/load.lua" "http://127.0.0.1:$PORT_W5/orders/123" 2>&1 | grep '^RESULT ')
    t1=$(group_ticks "$GWPG"); a1=$(upstream_accepts)
    stop "$GWPG"
    [ -n "$line" ] || die "$mode: wrk gave no result"
    awk -v mode=$mode -v dt=$((t1 - t0)) -v hz="$CLK" -v up=$((a1 - a0 - 2)) '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { printf "%-8s %9.0f %12.1f %9d\n", mode, v["rps"],
                  v["requests"] ? 1e6 * dt / hz / v["requests"] : 0, up }' <<<"$line"
done
