#!/usr/bin/env bash
# bench-h2.sh: HTTP/2 from clients, moongate beside nginx and HAProxy.
# h2load (nghttp2-client) opens 8 connections with 100 streams each (h2c,
# prior knowledge) and sends GET /orders/123, which every gateway proxies
# over HTTP/1.1 to the same origin A through a keep-alive pool (nginx:
# `listen ... http2`, conf/nginx-h2.conf; HAProxy: `bind ... proto h2`,
# conf/haproxy-h2.cfg; moongate: scripts/bench-gateway.lua's H2 listener,
# `http2 = true`). One worker each, on GW_CPU; h2load and the origins on
# LOAD_CPU. Prints req/s, the gateway's CPU per request and the ratios to
# nginx (medians over interleaved reps).
#
#   bash scripts/bench-h2.sh            3 reps x (2 s warm-up + 8 s) per gateway
#   QUICK=1 bash scripts/bench-h2.sh    1 rep x (1 s + 3 s)
#   PEERS="nginx" ...                   fewer peers (default: nginx haproxy)
#   GW_CMD=... GW_NAME=...              another gateway under test (it gets
#                                       GW_H2_PORT and the usual BENCH_* env)
# Knobs: REPS WARMUP DURATION H2_CONNS (8) H2_STREAMS (100) GW_CPU LOAD_CPU
#   KEEP_RUN=1 OUT=file
# Exit: 0; 1 when a gateway did not start, failed its smoke test, or a
# measured window had failed requests.
set -uo pipefail
set +m
source "$(dirname -- "${BASH_SOURCE[0]}")/bench/lib.sh"

if [ "${QUICK:-0}" = 1 ]; then
    : "${REPS:=1}" "${WARMUP:=1}" "${DURATION:=3}"
else
    : "${REPS:=3}" "${WARMUP:=2}" "${DURATION:=8}"
fi
: "${H2_CONNS:=8}" "${H2_STREAMS:=100}" "${GW_CPU:=0}" "${LOAD_CPU:=1}"
: "${W2_LIMIT:=1000000000}" "${W3_LIMIT:=100}"
: "${PEERS=nginx haproxy}"
: "${GW_NAME:=moongate}"
: "${GW_CMD=exec ./build/moongate run -c scripts/bench-gateway.lua}"

bench_need nginx haproxy h2load curl python3 taskset setsid ss
bench_setup
CLK=$(getconf CLK_TCK)
RAW=$RUN/h2.tsv     # gw rep rps us/req failed
: >"$RAW"
PROBLEMS=()
CELLS=()

# start_h2 NAME : the gateway serving H2 on a fresh port; sets GWPG, H2PORT
start_h2() {
    local gw=$1
    free_port H2PORT
    case "$gw" in
    nginx)
        bench_render "$BENCH_HERE/conf/nginx-h2.conf" "$RUN/nginx-h2.conf" "H2=$H2PORT" || return 1
        SPAWN_LOG=$gw spawn GWPG "$GW_CPU" "$RUN" nginx -p "$RUN" -e "$RUN/nginx-h2.err" \
            -c "$RUN/nginx-h2.conf" -g 'daemon off;' ;;
    haproxy)
        bench_render "$BENCH_HERE/conf/haproxy-h2.cfg" "$RUN/haproxy-h2.cfg" "H2=$H2PORT" || return 1
        SPAWN_LOG=$gw spawn GWPG "$GW_CPU" "$RUN" haproxy -db -f "$RUN/haproxy-h2.cfg" ;;
    *)
        mkdir -p "$RUN/$gw"
        GW_H2_PORT=$H2PORT GW_PORT= GW_W1_PORT= BENCH_TMP="$RUN/$gw" \
            SPAWN_LOG=$gw spawn GWPG "$GW_CPU" "$BENCH_ROOT" bash -c "$GW_CMD" ;;
    esac
    wait_listen "$H2PORT" "$GWPG" 10 ||
        { log "$gw did not listen on $H2PORT: $(tail -3 "$RUN/$gw.log" | tr '\n' ' ')"; return 1; }
}

GWS=()
for p in $PEERS; do GWS+=("$p"); done
[ -n "$GW_CMD" ] && GWS+=("$GW_NAME")
for gw in "${GWS[@]}"; do
    if ! start_h2 "$gw"; then PROBLEMS+=("$gw: did not start (see above)"); continue; fi
    # smoke: an HTTP/2 answer with the origin's body
    out=$(curl -s --max-time 5 --http2-prior-knowledge -w '\n%{http_version} %{http_code}' \
        "http://127.0.0.1:$H2PORT/orders/123")
    case "$out" in
    *'"upstream"'*$'\n2 200') CELLS+=("$gw $H2PORT $GWPG") ;;
    *) PROBLEMS+=("$gw smoke test: ${out//$'\n'/ }") ;;
    esac
done
log "smoke tests passed for ${#CELLS[@]} gateways"

h2load_run() { # SECONDS PORT -> "rps succeeded failed"
    taskset -c "$LOAD_CPU" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$1" \
        "http://127.0.0.1:$2/orders/123" 2>&1 | awk '
        /^finished in/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) rps = $i }
        /^requests:/ { ok = $8; failed = $10 }
        END { printf "%s %d %d\n", rps + 0, ok, failed }'
}

cell() { # rep gw port pgid
    local rep=$1 gw=$2 port=$3 pg=$4 t0 t1 r
    [ "$WARMUP" -gt 0 ] && h2load_run "$WARMUP" "$port" >/dev/null
    t0=$(group_ticks "$pg")
    r=$(h2load_run "$DURATION" "$port")
    t1=$(group_ticks "$pg")
    read -r rps ok failed <<<"$r"
    awk -v gw="$gw" -v rep="$rep" -v rps="$rps" -v ok="$ok" -v failed="$failed" \
        -v dt=$((t1 - t0)) -v hz="$CLK" 'BEGIN {
        printf "%s\t%d\t%.0f\t%.2f\t%d\n", gw, rep, rps, (ok ? 1e6 * dt / hz / ok : 0), failed }' >>"$RAW"
    log "$(tail -1 "$RAW" | awk -F'\t' '{ printf "rep %s %-9s %8.0f req/s %6.2f us/req failed %d", $2, $1, $3, $4, $5 }')"
    [ "$failed" = 0 ] || PROBLEMS+=("$gw rep $rep: $failed failed requests")
}

log "load $(cut -d' ' -f1-3 /proc/loadavg); $REPS reps x (${WARMUP}s + ${DURATION}s), h2load -t1 -c$H2_CONNS -m$H2_STREAMS"
n=${#CELLS[@]}
for rep in $(seq "$REPS"); do
    for k in $(seq 0 $((n - 1))); do
        read -r c_gw c_port c_pg <<<"${CELLS[$(( (k + rep - 1) % n ))]}"
        cell "$rep" "$c_gw" "$c_port" "$c_pg"
    done
done

report() {
    echo "== scripts/bench-h2.sh$([ "${QUICK:-0}" = 1 ] && echo ' (QUICK)') | $(date -u +%FT%TZ) | $(nproc) CPU | $REPS reps x (${WARMUP}s + ${DURATION}s), h2load -t1 -c$H2_CONNS -m$H2_STREAMS (h2c), GET /orders/123 proxied over HTTP/1.1 to one origin, median shown"
    echo "== gateway (1 worker) on CPU $GW_CPU; h2load + origin on CPU $LOAD_CPU; rps-ratio = req/s / nginx's; cpu-ratio = nginx's us/req / this one's (> 1: cheaper)"
    awk -F'\t' '
        function med(s,   a, n, i, j, t) { n = split(s, a, " ")
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        { if (!($1 in R)) key[++nk] = $1; R[$1] = R[$1] " " $3; U[$1] = U[$1] " " $4; F[$1] += $5 }
        END {
            printf "%-10s %9s %7s %9s %9s %6s\n", "gateway", "req/s", "us/req", "rps-ratio", "cpu-ratio", "failed"
            for (i = 1; i <= nk; i++) { k = key[i]; rps[k] = med(R[k]); us[k] = med(U[k]) }
            for (i = 1; i <= nk; i++) { k = key[i]
                rr = rps["nginx"] > 0 ? sprintf("%.2fx", rps[k] / rps["nginx"]) : "-"
                cr = us["nginx"] > 0 && us[k] > 0 ? sprintf("%.2fx", us["nginx"] / us[k]) : "-"
                printf "%-10s %9.0f %7.2f %9s %9s %6d\n", k, rps[k], us[k], rr, cr, F[k] }
        }' "$RAW"
    local p
    for p in "${PROBLEMS[@]}"; do echo "FAILED: $p"; done
}
report | tee "$RUN/report.txt"
[ -n "${OUT:-}" ] && cp "$RUN/report.txt" "$OUT"
[ ${#PROBLEMS[@]} -eq 0 ]
