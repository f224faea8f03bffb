#!/usr/bin/env bash
# counts.sh: what one request costs, counted rather than timed, for moongate
# beside nginx, nginx + lua and HAProxy on W1 (proxy), W2 (JWT + rate limit +
# balancing), W4 (hooks) and W6 (W2 behind CORS, a 10,000-range allow-list
# and an API key). Counts repeat from run to run where req/s on a
# shared 2-CPU VM moves by 10-15 %.
#
#   syscalls/req  after WARM requests, `strace -f -c` is attached to every
#                 thread of the gateway for exactly N_SYS requests, then
#                 detached; the per-name table is divided by N_SYS.
#   Ir/req        user-space instructions, every thread: the gateway runs
#                 under callgrind; after WARM requests its counters are
#                 zeroed, N_CG requests are sent and dumped (A), zeroed again,
#                 2 x N_CG sent and dumped (B): Ir/req = (B - A) / N_CG, so
#                 start-up, JIT warm-up, connection set-up and the cost of
#                 the dump itself cancel out.
# The client (tool.py client) keeps CONNS keep-alive connections with one
# request in flight on each and sends exactly the requests asked for; it and
# the origins run on LOAD_CPU, the gateway on GW_CPU. nginx runs as one
# process (master_process off), HAProxy with one thread, moongate with one
# worker (scripts/bench-gateway.lua).
#
#   bash scripts/bench/counts.sh                 all of it (make bench-counts)
#   MODES=strace bash scripts/bench/counts.sh    syscalls only (seconds)
#   PEERS="nginx" WORKLOADS="W1" ...             less of it
#   GW_VARIANTS="NAME:VAR=VALUE ..."             GW_CMD again per variant, with
#                                                that environment (lib.sh); each
#                                                is shown against GW_NAME too
#   SAME_IR="A=B ..."                            variants whose Ir/req must agree
#                                                within SAME_IR_TOL % (0.5), else
#                                                FAILED (make bench: split and
#                                                mirror on another route cost W1
#                                                nothing)
# Knobs: REPS (1) WORKLOADS ("W1 W2 W4 W6") MODES ("strace callgrind") N_SYS
#   (20000) N_CG (10000) WARM (2000) CONNS (16) PEERS GW_NAME GW_CMD GW_CPU
#   LOAD_CPU KEEP_RUN=1 (keep the run directory: strace tables, callgrind
#   dumps for callgrind_annotate) OUT=file (a copy of the table)
# Exit: 0, or 1 if a gateway did not start, failed its smoke test,
# answered a counted request with other than 2xx/3xx, or a SAME_IR pair
# disagreed (listed as FAILED).
set -uo pipefail
set +m
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

: "${REPS:=1}" "${WORKLOADS:=W1 W2 W4 W6}" "${MODES:=strace callgrind}"
: "${N_SYS:=20000}" "${N_CG:=10000}" "${WARM:=2000}" "${CONNS:=16}"
: "${W2_LIMIT:=1000000000}" "${W3_LIMIT:=100}" "${GW_CPU:=0}" "${LOAD_CPU:=1}"
: "${PEERS=nginx nginx-lua haproxy}" "${SAME_IR=}" "${SAME_IR_TOL:=0.5}"
: "${GW_NAME:=moongate}" "${GW_WORKLOADS:=W1 W2 W4 W6}"
: "${GW_CMD=exec ./build/moongate run -c scripts/bench-gateway.lua}"

bench_need nginx haproxy curl python3 taskset setsid ss
case " $MODES " in *" strace "*) bench_need strace ;; esac
case " $MODES " in *" callgrind "*) bench_need valgrind callgrind_control ;; esac
bench_setup
RAW=$RUN/counts.tsv     # gw wl rep key value   (key: sys_<name>, sys_total, ir)
: >"$RAW"
PROBLEMS=()
export BENCH_JWT
BENCH_JWT=$(tool jwt consumer-count 36000)

GWS=()
for p in $PEERS; do GWS+=("$p"); done
[ -n "$GW_CMD" ] && GWS+=("$GW_NAME")
for v in $(gw_variants); do GWS+=("$v"); done
served() { # GW -> its workloads among WORKLOADS
    local all w out=""
    if [ "$1" = "$GW_NAME" ] && [ -n "$GW_CMD" ]; then all=$GW_WORKLOADS; else all=$(peer_workloads "$1"); fi
    for w in $WORKLOADS; do case " $all " in *" $w "*) out+="$w " ;; esac; done
    echo "$out"
}

# ---------------------------------------------------------------- the client
client_open() { # PORT WL
    coproc CLIENT { exec taskset -c "$LOAD_CPU" python3 "$BENCH_HERE/tool.py" client "$1" "$CONNS" "$2"; }
    local l
    read -r -t 120 -u "${CLIENT[0]}" l && [ "$l" = READY ] || { log "the client did not connect"; return 1; }
}
client_send() { # N : exactly N requests; fails on a non-2xx/3xx answer
    local l
    echo "RUN $1" >&"${CLIENT[1]}"
    read -r -t 900 -u "${CLIENT[0]}" l || { log "the client did not finish $1 requests"; return 1; }
    set -- $l
    [ "${1:-}" = DONE ] && [ "${3:-1}" = 0 ] || { log "client: $l (DONE ok bad status:count)"; return 1; }
}
client_close() {
    [ -n "${CLIENT_PID:-}" ] || return 0
    echo QUIT >&"${CLIENT[1]}" 2>/dev/null
    wait "$CLIENT_PID" 2>/dev/null
}

# ---------------------------------------------------------------- strace
TRACER=""
stop_tracer() { [ -n "$TRACER" ] && { kill -INT "$TRACER" 2>/dev/null; wait "$TRACER" 2>/dev/null; }; TRACER=""; }
trap 'stop_tracer; bench_cleanup' EXIT

count_syscalls() { # GW WL REP PORT
    local gw=$1 wl=$2 rep=$3 out="$RUN/strace.$1.$2.r$3.txt" pids args=() pid i all
    client_open "$4" "$wl" && client_send "$WARM" || { client_close; return 1; }
    pids=$(group_pids "$GWPG")
    [ -n "$pids" ] || { log "$gw: no process in group $GWPG"; client_close; return 1; }
    for pid in $pids; do args+=(-p "$pid"); done
    taskset -c "$GW_CPU" strace -f -qq -c -S calls -o "$out" "${args[@]}" &
    TRACER=$!
    for i in $(seq 200); do   # every thread traced before the window opens
        all=1
        for pid in $pids; do
            grep -h '^TracerPid:' /proc/"$pid"/task/*/status 2>/dev/null |
                grep -qv "[[:space:]]$TRACER\$" && all=0
        done
        [ $all = 1 ] && break
        sleep 0.05
    done
    client_send "$N_SYS"; local rc=$?
    stop_tracer
    client_close
    [ $rc = 0 ] || return 1
    # "% time  seconds  usecs/call  calls  [errors]  syscall": calls is the
    # 4th field, the name the last; the total line is named "total"
    awk -v g="$gw" -v w="$wl" -v r="$rep" -v n="$N_SYS" '
        $4 ~ /^[0-9]+$/ && $1 ~ /^[0-9.]+$/ { printf "%s\t%s\t%s\tsys_%s\t%.4f\n", g, w, r, $NF, $4 / n }' \
        "$out" >>"$RAW"
    log "$gw $wl rep $rep: $(awk -F'\t' -v g="$gw" -v w="$wl" -v r="$rep" '$1 == g && $2 == w && $3 == r && $4 == "sys_total" { print $5 }' "$RAW") syscalls/req"
}

# ---------------------------------------------------------------- callgrind
cg_all() { # z|d -> after d: the new dump files, one a line
    local pid f
    for pid in $(group_pids "$GWPG"); do
        [ -e "$CGDIR/cg.$pid" ] || continue
        callgrind_control "-$1" "$pid" >/dev/null 2>&1 || { log "callgrind_control -$1 $pid failed"; return 1; }
        if [ "$1" = d ]; then
            f=$(ls -t "$CGDIR/cg.$pid".* 2>/dev/null | head -1)
            [ -n "$f" ] && echo "$f"
        fi
    done
}
cg_ir() { # dump files -> their summed Ir
    awk 'FNR == 1 { got = 0 } /^summary:/ { s += $2; got = 1 } /^totals:/ && !got { t += $2 } END { print (s ? s : t) + 0 }' "$@"
}
count_instructions() { # GW WL REP PORT
    local gw=$1 wl=$2 rep=$3 a b
    client_open "$4" "$wl" && client_send "$WARM" && cg_all z >/dev/null &&
        client_send "$N_CG" && a=$(cg_all d) && cg_all z >/dev/null &&
        client_send $((2 * N_CG)) && b=$(cg_all d) || { client_close; return 1; }
    client_close
    [ -n "$a" ] && [ -n "$b" ] || { log "$gw $wl: no callgrind dump"; return 1; }
    local ia ib
    ia=$(cg_ir $a); ib=$(cg_ir $b)
    awk -v g="$gw" -v w="$wl" -v r="$rep" -v a="$ia" -v b="$ib" -v n="$N_CG" \
        'BEGIN { printf "%s\t%s\t%s\tir\t%.1f\n", g, w, r, (b - a) / n }' >>"$RAW"
    log "$gw $wl rep $rep: $(tail -1 "$RAW" | cut -f5) Ir/req"
}

# ---------------------------------------------------------------- run
VALGRIND=(valgrind --tool=callgrind -q --trace-children=yes --smc-check=all-non-file --vgdb=yes)
log "gateways: ${GWS[*]}; workloads: $WORKLOADS; $MODES; reps $REPS; $CONNS connections"
log "strace over $N_SYS requests; callgrind ($((2 * N_CG)) - $N_CG requests) / $N_CG; $WARM warm-up requests"
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        for gw in "${GWS[@]}"; do
            wls=$(served "$gw")
            [ -n "$wls" ] || continue
            wrap=()
            if [ "$mode" = callgrind ]; then
                CGDIR=$RUN/cg/$gw.r$rep
                mkdir -p "$CGDIR"
                wrap=("${VALGRIND[@]}" "--callgrind-out-file=$CGDIR/cg.%p")
            fi
            if ! start_gateway "$gw" count "$wls" "${wrap[@]}"; then
                PROBLEMS+=("$gw ($mode): did not start"); stop "$GWPG"; continue
            fi
            for wl in $wls; do
                p=PORT_$wl
                if [ "$mode" = strace ]; then
                    bad=$(tool smoke "$wl" "${!p}") || { PROBLEMS+=("$gw $wl smoke test: ${bad//$'\n'/; }"); continue; }
                    count_syscalls "$gw" "$wl" "$rep" "${!p}" || PROBLEMS+=("$gw $wl strace rep $rep: failed")
                else
                    count_instructions "$gw" "$wl" "$rep" "${!p}" || PROBLEMS+=("$gw $wl callgrind rep $rep: failed")
                fi
            done
            stop "$GWPG"
        done
    done
done

# ---------------------------------------------------------------- report
report() {
    echo "== scripts/bench/counts.sh | $(date -u +%FT%TZ) | $(nproc) CPU | $(uname -r) | $CONNS keep-alive connections, one request in flight each"
    echo "== sys/req: strace -f -c over $N_SYS requests, every thread; Ir/req: user-space instructions (callgrind), every thread, (($((2 * N_CG)) - $N_CG) requests) / $N_CG"
    echo "== ratios: this / nginx on the same workload (W2, W6: / nginx-lua, plain nginx has no JWT); below 1 = fewer; mean over $REPS rep(s)"
    echo "== syscalls by name: per request; epoll_wait depends on how many events one wait returns (batching), the others are exact"
    awk -F'\t' -v gws="${GWS[*]}" -v wls="$WORKLOADS" -v reps="$REPS" '
        { S[$1, $2, $4] += $5; C[$1, $2, $4]++; if ($4 == "ir") each[$1, $2] = each[$1, $2] sprintf(" %.0f", $5)
          if ($4 ~ /^sys_/ && $4 != "sys_total") { k = $1 SUBSEP $2; if (index(nm[k] " ", " " $4 " ") == 0) nm[k] = nm[k] " " $4 } }
        function m(g, w, k) { return ((g, w, k) in C) ? S[g, w, k] / C[g, w, k] : -1 }
        function ratio(x, b) { return (x > 0 && b > 0) ? sprintf("%.2fx", x / b) : "-" }
        END {
            ng = split(gws, G, " "); nw = split(wls, W, " ")
            printf "%-10s %-3s %8s %9s %9s %8s  %s\n", "gateway", "wl", "sys/req", "sys-ratio", "Ir/req", "Ir-ratio", "syscalls per request by name"
            for (w = 1; w <= nw; w++) for (g = 1; g <= ng; g++) {
                gw = G[g]; wl = W[w]; s = m(gw, wl, "sys_total"); ir = m(gw, wl, "ir")
                if (s < 0 && ir < 0) continue
                base = (wl == "W2" || wl == "W6") ? "nginx-lua" : "nginx"
                n = split(substr(nm[gw, wl], 2), L, " ")
                for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++)
                    if (m(gw, wl, L[b]) > m(gw, wl, L[a])) { t = L[a]; L[a] = L[b]; L[b] = t }
                names = ""
                for (a = 1; a <= n; a++) if (m(gw, wl, L[a]) >= 0.001) names = names sprintf(" %s %.3f", substr(L[a], 5), m(gw, wl, L[a]))
                printf "%-10s %-3s %8s %9s %9s %8s %s\n", gw, wl, (s < 0 ? "-" : sprintf("%.3f", s)),
                    ratio(s, m(base, wl, "sys_total")), (ir < 0 ? "-" : sprintf("%.0f", ir)),
                    ratio(ir, m(base, wl, "ir")), names
                if (reps > 1 && ir >= 0) printf "%-14s Ir/req per rep:%s\n", "", each[gw, wl]
            }
        }' "$RAW"
    variants_table
    cat "$RUN/same.txt"
    local p
    for p in "${PROBLEMS[@]}"; do echo "FAILED: $p"; done
}

# Ir/req of GW on WL (mean over reps), or nothing
ir_of() {
    awk -F'\t' -v g="$1" -v w="$2" '$1 == g && $2 == w && $4 == "ir" { s += $5; n++ }
        END { if (n) printf "%.1f", s / n }' "$RAW"
}

# Each variant beside GW_NAME on its workloads.
variants_table() {
    local v wl ia ib
    [ -n "$(gw_variants)" ] || return 0
    echo "== variants beside $GW_NAME (Ir/req; difference)"
    for v in $(gw_variants); do
        for wl in $GW_VARIANT_WORKLOADS; do
            ia=$(ir_of "$v" "$wl") ib=$(ir_of "$GW_NAME" "$wl")
            [ -n "$ia" ] && [ -n "$ib" ] || continue
            awk -v v="$v" -v w="$wl" -v a="$ia" -v b="$ib" -v g="$GW_NAME" 'BEGIN {
                printf "%-10s %-3s %9.0f  %+7.0f (%+.1f %%) against %s\n", v, w, a, a - b,
                    100 * (a - b) / b, g }'
        done
    done
}

# The SAME_IR checks: a line each; a failed one joins PROBLEMS (so: not in
# a subshell).
same_checks() {
    local a b wl ia ib pair
    for pair in $SAME_IR; do
        a=${pair%%=*} b=${pair#*=}
        for wl in $GW_VARIANT_WORKLOADS; do
            ia=$(ir_of "$a" "$wl") ib=$(ir_of "$b" "$wl")
            [ -n "$ia" ] && [ -n "$ib" ] || continue
            if awk -v a="$ia" -v b="$ib" -v t="$SAME_IR_TOL" 'BEGIN {
                d = a - b; if (d < 0) d = -d; exit !(100 * d / b <= t) }'; then
                echo "== same Ir/req: $a $wl $ia = $b $wl $ib within $SAME_IR_TOL %: ok"
            else
                echo "== same Ir/req: $a $wl $ia, $b $wl $ib: more than $SAME_IR_TOL % apart"
                PROBLEMS+=("$a $wl: Ir/req $ia, not within $SAME_IR_TOL % of $b's $ib")
            fi
        done
    done
}
same_checks >"$RUN/same.txt"
report | tee "$RUN/report.txt"
[ -n "${OUT:-}" ] && cp "$RUN/report.txt" "$OUT"
[ ${#PROBLEMS[@]} -eq 0 ]
