#!/usr/bin/env bash
# bench-grpc.sh (G1): gRPC unary calls per second through moongate beside
# nginx `grpc_pass`, HTTP/2 on both sides. The client is h2load (CONNS
# connections x STREAMS streams, a 5-byte gRPC message per call, te:
# trailers), the backend nghttpd (h2c: the same gRPC frame and a
# grpc-status: 0 trailer for every call), both on LOAD_CPU; each gateway has
# one worker on GW_CPU. moongate runs scripts/bench-gateway.lua's G1 part
# (a listener with http2, an upstream with protocol = "grpc", route.grpc).
#   bash scripts/bench-grpc.sh        REPS (3) x (WARMUP 2 s + DURATION 8 s)
#   QUICK=1 bash scripts/bench-grpc.sh    1 x (1 s + 2 s)
# Prints per gateway: calls/s (median), the gateway's CPU us per call, the
# ratios to nginx (floor 1.0x), and what h2load saw fail.
set -uo pipefail
set +m
source "$(dirname -- "${BASH_SOURCE[0]}")/bench/lib.sh"
if [ "${QUICK:-0}" = 1 ]; then : "${REPS:=1}" "${WARMUP:=1}" "${DURATION:=2}"; fi
: "${REPS:=3}" "${WARMUP:=2}" "${DURATION:=8}" "${CONNS:=8}" "${STREAMS:=100}"
: "${GW_CPU:=0}" "${LOAD_CPU:=1}"
bench_need nginx nghttpd nghttp h2load taskset setsid ss
RUN=$(mktemp -d "${TMPDIR:-/tmp}/mgbench-grpc.XXXXXX") || die "mktemp -d failed"
chmod 755 "$RUN"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
CLK=$(getconf CLK_TCK)
# (bench_render's run-wide keys: no origins here)
W2_LIMIT=1 W3_LIMIT=1 NGX_MODULES=/usr/lib/nginx/modules
BENCH_UPSTREAM_A= BENCH_UPSTREAM_B= BENCH_UPSTREAM_A_TLS= BENCH_TLS_CA= BENCH_TLS_NAME=

# the backend: every call answered with one 5-byte message and status 0
mkdir -p "$RUN/htdocs/demo.Echo"
printf '\0\0\0\0\5hello' >"$RUN/htdocs/demo.Echo/Unary"
cp "$RUN/htdocs/demo.Echo/Unary" "$RUN/call.bin"
free_port BACK_PORT
spawn BACKPG "$LOAD_CPU" "$RUN" nghttpd --no-tls -d "$RUN/htdocs" --trailer "grpc-status: 0" \
    "$BACK_PORT"
wait_listen "$BACK_PORT" "$BACKPG" 10 || die "nghttpd did not start: $(tail -3 "$RUN/BACKPG.log")"

free_port NGX_PORT
bench_render "$BENCH_HERE/conf/nginx-grpc.conf" "$RUN/nginx-grpc.conf" PORT="$NGX_PORT" \
    BACKEND="127.0.0.1:$BACK_PORT" || die "cannot render nginx-grpc.conf"
spawn NGXPG "$GW_CPU" "$RUN" nginx -p "$RUN" -e "$RUN/nginx-grpc.err" -c "$RUN/nginx-grpc.conf" \
    -g 'daemon off;'
wait_listen "$NGX_PORT" "$NGXPG" 10 || die "nginx did not start: $(tail -3 "$RUN/nginx-grpc.err")"

free_port MG_PORT
mkdir -p "$RUN/moongate"
GW_G1_PORT=$MG_PORT BENCH_GRPC_UPSTREAM=127.0.0.1:$BACK_PORT BENCH_TMP="$RUN/moongate" \
    spawn MGPG "$GW_CPU" "$BENCH_ROOT" build/moongate run -c scripts/bench-gateway.lua
wait_listen "$MG_PORT" "$MGPG" 10 || die "moongate did not start: $(tail -3 "$RUN/MGPG.log")"

h2l() { # PORT h2load-args... -> its output
    local port=$1
    shift
    taskset -c "$LOAD_CPU" h2load "$@" -c "$CONNS" -m "$STREAMS" -d "$RUN/call.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$port/demo.Echo/Unary" 2>&1
}

# smoke: both answer a call with the message and grpc-status 0 in trailers
for gw in nginx:$NGX_PORT moongate:$MG_PORT; do
    name=${gw%%:*} port=${gw#*:}
    # (nghttp -v shows the frames: curl does not print HTTP/2 trailers)
    nghttp -v -d "$RUN/call.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$port/demo.Echo/Unary" >"$RUN/smoke-$name.txt" 2>&1
    grep -aq 'recv (stream_id=[0-9]*) grpc-status: 0' "$RUN/smoke-$name.txt" &&
        grep -aq 'hello' "$RUN/smoke-$name.txt" ||
        die "$name smoke test: no message or no grpc-status 0 trailer (see $RUN/smoke-$name.txt)"
    h2l "$port" -n 1000 | grep -q '1000 succeeded' || die "$name smoke test: h2load calls failed"
done

RAW=$RUN/grpc.tsv # gw rep calls/s us/call failed
: >"$RAW"
log "G1: $REPS reps x (${WARMUP}s + ${DURATION}s), h2load -c$CONNS -m$STREAMS"
for rep in $(seq "$REPS"); do
    for gw in nginx:$NGX_PORT:$NGXPG moongate:$MG_PORT:$MGPG; do
        IFS=: read -r name port pg <<<"$gw"
        t0=$(group_ticks "$pg")
        out=$(h2l "$port" -D "$DURATION" --warm-up-time "$WARMUP")
        t1=$(group_ticks "$pg")
        # the warm-up's CPU is in the window too: spread over its calls
        awk -v gw="$name" -v rep="$rep" -v dt=$((t1 - t0)) -v hz="$CLK" \
            -v all="$((DURATION + WARMUP))" -v d="$DURATION" '
            /^finished in/ { rps = $4 + 0 }
            /^requests:/ { ok = $8; fail = $10 }
            END { calls = rps * all
                  printf "%s\t%d\t%.0f\t%.2f\t%d\n", gw, rep, rps,
                      calls ? 1e6 * dt / hz / calls : 0, fail }' <<<"$out" >>"$RAW"
        log "$(tail -1 "$RAW" | awk -F'\t' '{ printf "rep %s %-9s %8.0f calls/s %6.2f us/call failed %d", $2, $1, $3, $4, $5 }')"
    done
done
echo "== scripts/bench-grpc.sh (G1) | $(date -u +%FT%TZ) | gRPC unary over h2c, h2load -c$CONNS -m$STREAMS on CPU $LOAD_CPU with nghttpd; gateway (1 worker) on CPU $GW_CPU; medians of $REPS"
awk -F'\t' '
    function med(s,   a, n, i, j, t) { n = split(s, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    { if (!($1 in R)) key[++n] = $1; R[$1] = R[$1] " " $3; U[$1] = U[$1] " " $4; F[$1] += $5 }
    END { printf "%-10s %10s %8s %10s %10s %7s\n", "gateway", "calls/s", "us/call", "rps-ratio", "cpu-ratio", "failed"
          for (i = 1; i <= n; i++) { k = key[i]
              printf "%-10s %10.0f %8.2f %9.2fx %9.2fx %7d\n", k, med(R[k]), med(U[k]),
                  med(R[k]) / med(R["nginx"]), med(U["nginx"]) / med(U[k]), F[k] } }' "$RAW"
