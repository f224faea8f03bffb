#!/usr/bin/env bash
# peers.sh: moongate beside nginx, nginx + lua and HAProxy on one box, timed
# with wrk; prints req/s, p50/p99, the gateway's CPU per request and the
# ratios to nginx-lua, then the W3 rate-limit accuracy table.
#
#   bash scripts/bench/peers.sh            3 reps x (3 s warm-up + 8 s) per cell
#   QUICK=1 bash scripts/bench/peers.sh    1 rep x (1 s + 2 s): a rough look
#   PEERS="nginx-lua" ...                  fewer peers (default: nginx nginx-lua haproxy)
#   GW_CMD=... GW_NAME=... GW_WORKLOADS=...  another gateway under test
#   GW_VARIANTS="NAME:VAR=VALUE ..."        GW_CMD again per variant, with that
#                                          environment, on GW_VARIANT_WORKLOADS (W1)
#
# The workloads (scripts/bench/README.md has the contract each gateway keeps):
#   W0 wrk straight to origin A: the ceiling of the box
#   W1 GET /orders/123 proxied to A through a keep-alive pool
#   W2 JWT HS256 + a per-sub rate limit that never triggers + prefix routing
#      + round robin over A and B + X-Request-Id
#   W3 the W2 chain at 100/s per consumer, offered ~1000/s: 200s vs ideal
#   W4 W1 + a request hook (reads 2 headers, sets 1, per-request context) and
#      a response hook (adds 1 header from that context)
#   W5 W1 to A over TLS (verified, pooled: keep-alive TLS connections); its
#      ratios are to plain nginx with proxy_ssl (nginx-lua does not serve it)
#   W6 the W2 chain behind CORS, an allow-list of 10,000 CIDR ranges and an
#      API key (moongate: cors, ip and key_auth policies)
#   W7 W1 for 8 KiB of JSON, compressed with gzip level 1 (moongate's
#      compression policy; nginx gzip on, gzip_comp_level 1); ratios to nginx
# Layout: each gateway has one worker on CPU GW_CPU (0); wrk and both origins
# on LOAD_CPU (1). Cells (gateway x workload) are visited in a rotated order
# every rep, so a slow drift of the machine spreads over all of them; the
# table shows medians over reps.
# Knobs: REPS WARMUP DURATION CONNS W3_SECONDS W3_RPS W3_CONNS W2_LIMIT
#   W3_LIMIT GW_CPU LOAD_CPU KEEP_RUN=1 (keep the run directory) OUT=file
# Exit: 0; 1 when a gateway did not start or failed its smoke test (the
# reason is printed under the tables) or setup failed.
set -uo pipefail
set +m    # children are not group leaders, so setsid gives each its own group
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

if [ "${QUICK:-0}" = 1 ]; then
    : "${REPS:=1}" "${WARMUP:=1}" "${DURATION:=2}" "${W3_SECONDS:=2}"
else
    : "${REPS:=3}" "${WARMUP:=3}" "${DURATION:=8}" "${W3_SECONDS:=5}"
fi
: "${CONNS:=64}" "${W3_RPS:=1000}" "${W3_CONNS:=10}"
: "${W2_LIMIT:=1000000000}" "${W3_LIMIT:=100}" "${GW_CPU:=0}" "${LOAD_CPU:=1}"
: "${PEERS=nginx nginx-lua haproxy}"
: "${GW_NAME:=moongate}" "${GW_WORKLOADS:=W1 W2 W3 W4 W5 W6 W7}"
: "${GW_CMD=exec ./build/moongate run -c scripts/bench-gateway.lua}"

bench_need nginx haproxy wrk curl python3 taskset setsid ss
bench_setup
CLK=$(getconf CLK_TCK)
RAW=$RUN/timing.tsv     # gw wl rep rps p50_us p99_us cpu% us/req errors upconn other%
RAW3=$RUN/w3.tsv        # gw rep requests seconds s200 s429 sother
: >"$RAW"; : >"$RAW3"
PROBLEMS=()

# ---------------------------------------------------------------- gateways
CELLS=("origin W0 $UP_A_PORT $UPSTREAM_a")   # gw wl port pgid
W3CELLS=()
GWS=()
for p in $PEERS; do GWS+=("$p"); done
[ -n "$GW_CMD" ] && GWS+=("$GW_NAME")
for v in $(gw_variants); do GWS+=("$v"); done
for gw in "${GWS[@]}"; do
    if [ "$gw" = "$GW_NAME" ] && [ -n "$GW_CMD" ]; then wls=$GW_WORKLOADS; else wls=$(peer_workloads "$gw"); fi
    if ! start_gateway "$gw" timing "$wls"; then PROBLEMS+=("$gw: did not start (see above)"); continue; fi
    for wl in $wls; do
        p=PORT_$wl
        if ! bad=$(BENCH_W3_LIMIT=$W3_LIMIT tool smoke "$wl" "${!p}"); then
            PROBLEMS+=("$gw $wl smoke test: ${bad//$'\n'/; }")
            continue
        fi
        if [ "$wl" = W3 ]; then W3CELLS+=("$gw ${!p}"); else CELLS+=("$gw $wl ${!p} $GWPG"); fi
    done
done
log "smoke tests passed for $((${#CELLS[@]} - 1)) gateway cells and ${#W3CELLS[@]} W3 cells"

# ---------------------------------------------------------------- measuring
wrk_run() { # SECONDS CONNS URL [env...] -> the RESULT line
    local s=$1 c=$2 url=$3
    shift 3
    env "$@" taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"${s}s" --timeout 5s \
        -s "$BENCH_HERE/load.lua" "$url" 2>&1 | grep '^RESULT '
}

cell() { # rep gw wl port pgid
    local rep=$1 gw=$2 wl=$3 port=$4 pg=$5 tok="" url="http://127.0.0.1:$4/orders/123"
    case $wl in W2|W6) tok=$(tool jwt "consumer-$rep" 3600); url="http://127.0.0.1:$port" ;;
                W7) url="http://127.0.0.1:$port/text/orders" ;; esac
    [ "$WARMUP" -gt 0 ] && wrk_run "$WARMUP" "$CONNS" "$url" BENCH_WL="$wl" BENCH_JWT="$tok" >/dev/null
    local a0 t0 c0 w0 a1 t1 c1 w1 line
    a0=$(upstream_accepts); t0=$(group_ticks "$pg"); c0=$(cpu_busy_ticks "$GW_CPU"); w0=$(date +%s%N)
    line=$(wrk_run "$DURATION" "$CONNS" "$url" BENCH_WL="$wl" BENCH_JWT="$tok")
    w1=$(date +%s%N); t1=$(group_ticks "$pg"); c1=$(cpu_busy_ticks "$GW_CPU"); a1=$(upstream_accepts)
    [ -n "$line" ] || { log "rep $rep $gw $wl: wrk gave no result"; return; }
    # other% = what ran on the gateway's CPU besides the gateway (W0: the
    # origin is on LOAD_CPU, so this is all of CPU 0)
    awk -v gw="$gw" -v wl="$wl" -v rep="$rep" -v dt=$((t1 - t0)) -v dc=$((c1 - c0)) \
        -v hz="$CLK" -v up=$((a1 - a0 - 2)) -v wall=$(((w1 - w0) / 1000)) '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END {
            cpu = dt / hz; s = v["seconds"]; other = (dc - (wl == "W0" ? 0 : dt)) / hz
            printf "%s\t%s\t%d\t%.1f\t%d\t%d\t%.1f\t%.2f\t%d\t%d\t%.1f\n", gw, wl, rep, v["rps"],
                v["p50_us"], v["p99_us"], 100 * cpu / s, (v["requests"] ? 1e6 * cpu / v["requests"] : 0),
                v["errors"], up, (other > 0 ? 100 * other / (wall / 1e6) : 0)
        }' <<<"$line" >>"$RAW"
    log "$(tail -1 "$RAW" | awk -F'\t' '{ printf "rep %s %-9s %s %8.0f req/s p99 %5.2f ms %6.2f us/req errors %d upconn %d other %.1f%%", $3, $1, $2, $4, $6 / 1000, $8, $9, $10, $11 }')"
}

w3_cell() { # rep gw port
    local rep=$1 gw=$2 port=$3 tok line
    tok=$(tool jwt "w3-$rep-$RANDOM$RANDOM" 3600)
    line=$(wrk_run "$W3_SECONDS" "$W3_CONNS" "http://127.0.0.1:$port/orders/123" BENCH_WL=W3 \
        BENCH_JWT="$tok" BENCH_DELAY_MS=$((W3_CONNS * 1000 / W3_RPS)))
    [ -n "$line" ] || { log "rep $rep $gw W3: wrk gave no result"; return; }
    awk -v gw="$gw" -v rep="$rep" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { printf "%s\t%d\t%d\t%s\t%d\t%d\t%d\n", gw, rep, v["requests"], v["seconds"], v["s200"], v["s429"], v["sother"] }' \
        <<<"$line" >>"$RAW3"
    log "$(tail -1 "$RAW3" | awk -F'\t' '{ printf "rep %s %-9s W3 %5d sent: 200 %d, 429 %d, other %d", $2, $1, $3, $5, $6, $7 }')"
}

log "load $(cut -d' ' -f1-3 /proc/loadavg); $REPS reps x (${WARMUP}s + ${DURATION}s), wrk -t1 -c$CONNS"
n=${#CELLS[@]}
for rep in $(seq "$REPS"); do
    for k in $(seq 0 $((n - 1))); do
        read -r c_gw c_wl c_port c_pg <<<"${CELLS[$(( (k + rep - 1) % n ))]}"
        cell "$rep" "$c_gw" "$c_wl" "$c_port" "$c_pg"
    done
    for c in "${W3CELLS[@]}"; do w3_cell "$rep" $c; done
done

# ---------------------------------------------------------------- report
report() {
    echo "== scripts/bench/peers.sh$([ "${QUICK:-0}" = 1 ] && echo ' (QUICK)') | $(date -u +%FT%TZ) | $(nproc) CPU | $REPS reps x (${WARMUP}s + ${DURATION}s), wrk -t1 -c$CONNS, median shown"
    echo "== gateway (1 worker) on CPU $GW_CPU; wrk + origins on CPU $LOAD_CPU; us/req = the gateway's CPU time / requests (W0: -)"
    echo "== rps-ratio = req/s / nginx-lua's (W5: nginx's); cpu-ratio = nginx-lua's (W5: nginx's) us/req / this one's (> 1: cheaper per request)"
    echo "== upconn = new upstream connections in the window (~0: pooled); other% = CPU $GW_CPU busy with anything but the gateway (> 5: rerun)"
    awk -F'\t' '
        function med(s,   a, n, i, j, t) { n = split(s, a, " ")
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        function top(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
        { k = $1 SUBSEP $2; if (!(k in R)) key[++nk] = k
          R[k] = R[k] " " $4; P50[k] = P50[k] " " $5; P99[k] = P99[k] " " $6; C[k] = C[k] " " $7
          U[k] = U[k] " " $8; E[k] += $9; N[k] = N[k] " " $10; O[k] = O[k] " " $11 }
        END {
            for (i = 1; i <= nk; i++) { k = key[i]; rps[k] = med(R[k]); us[k] = med(U[k]) }
            printf "%-10s %-3s %9s %7s %7s %6s %7s %9s %9s %6s %6s %6s\n", "gateway", "wl", "req/s",
                "p50ms", "p99ms", "cpu%", "us/req", "rps-ratio", "cpu-ratio", "upconn", "other%", "errors"
            nw = split("W0 W1 W2 W4 W5 W6 W7", W, " ")
            for (w = 1; w <= nw; w++) for (i = 1; i <= nk; i++) {
                k = key[i]; split(k, g, SUBSEP); if (g[2] != W[w]) continue
                b = (g[2] == "W5" || g[2] == "W7" ? "nginx" : "nginx-lua") SUBSEP g[2]
                rr = (g[2] != "W0" && rps[b] > 0) ? sprintf("%.2fx", rps[k] / rps[b]) : "-"
                cr = (g[2] != "W0" && us[b] > 0 && us[k] > 0) ? sprintf("%.2fx", us[b] / us[k]) : "-"
                printf "%-10s %-3s %9.0f %7.3f %7.3f %6.1f %7s %9s %9s %6d %6.1f %6d\n", g[1], g[2], rps[k],
                    med(P50[k]) / 1000, med(P99[k]) / 1000, (g[2] == "W0" ? 0 : med(C[k])),
                    (g[2] == "W0" ? "-" : sprintf("%.2f", us[k])), rr, cr, med(N[k]), top(O[k]), E[k]
            }
            line = ""
            for (i = 1; i <= nk; i++) { k = key[i]; split(k, g, SUBSEP)
                if (g[2] == "W4" && ((g[1], "W1") in us)) line = line sprintf("  %s %+.2f", g[1], us[k] - us[g[1], "W1"]) }
            if (line != "") print "hooks (W4 - W1 us/req):" line
            line = ""
            for (i = 1; i <= nk; i++) { k = key[i]; split(k, g, SUBSEP)
                if (g[2] == "W6" && ((g[1], "W1") in us)) line = line sprintf("  %s %+.2f", g[1], us[k] - us[g[1], "W1"]) }
            if (line != "") print "chain (W6 - W1 us/req):" line
            line = ""
            for (i = 1; i <= nk; i++) { k = key[i]; split(k, g, SUBSEP)
                if (g[2] == "W6" && ((g[1], "W2") in us)) line = line sprintf("  %s %+.2f", g[1], us[k] - us[g[1], "W2"]) }
            if (line != "") print "cors + ip + key_auth (W6 - W2 us/req):" line
        }' "$RAW"
    if [ -s "$RAW3" ]; then
        echo
        echo "== W3: ${W3_LIMIT}/s per consumer, offered ~${W3_RPS}/s on $W3_CONNS connections for ${W3_SECONDS}s; ideal 200s = $((W3_LIMIT * W3_SECONDS)); means over reps"
        printf '%-10s %9s %7s %7s %6s %9s  %s\n' gateway offered/s 200 429 other 200/ideal "200s per rep"
        awk -F'\t' -v ideal=$((W3_LIMIT * W3_SECONDS)) '
            { if (!($1 in n)) key[++nk] = $1; n[$1]++; off[$1] += $3 / $4
              ok[$1] += $5; lim[$1] += $6; oth[$1] += $7; each[$1] = each[$1] " " $5 }
            END { for (i = 1; i <= nk; i++) { k = key[i]
                printf "%-10s %9.0f %7.0f %7.0f %6.0f %9.2f %s\n", k, off[k] / n[k], ok[k] / n[k],
                    lim[k] / n[k], oth[k] / n[k], ok[k] / n[k] / ideal, each[k] } }' "$RAW3"
    fi
    local p
    for p in "${PROBLEMS[@]}"; do echo "FAILED: $p"; done
}
report | tee "$RUN/report.txt"
[ -n "${OUT:-}" ] && cp "$RUN/report.txt" "$OUT"
[ ${#PROBLEMS[@]} -eq 0 ]
