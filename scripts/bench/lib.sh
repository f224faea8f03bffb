# Sourced by scripts/bench/peers.sh and counts.sh: the run directory, ports,
# the processes they start (each its own session and process group, pinned
# to a CPU, stopped by that group id and never by name), config rendering,
# the two origins, and starting the gateways.
#
# Gateways are started with the environment that scripts/bench-gateway.lua
# (and any other gateway under test) reads:
#   GW_PORT (= GW_W1_PORT), GW_W2_PORT .. GW_W6_PORT
#       listen ports on 127.0.0.1, empty for a workload not served
#   BENCH_UPSTREAM_A, BENCH_UPSTREAM_B   the origins, host:port
#   BENCH_UPSTREAM_A_TLS   origin A over TLS (W5), host:port; its certificate
#       names BENCH_TLS_NAME and is signed by the CA in BENCH_TLS_CA
#   BENCH_JWT_SECRET, BENCH_W2_LIMIT, BENCH_W3_LIMIT, BENCH_TMP (scratch dir)
#   BENCH_API_KEY, BENCH_W6_CIDRS (W6's key, and its allow-list: a file of
#       10,000 CIDR ranges, one a line)
#   BENCH_UNDER_VALGRIND=1 when it runs under callgrind (~50x slower: time
#       limits of its own, such as moongate's hook budget, must allow for it)
# Callers set GW_CPU, LOAD_CPU, W2_LIMIT, W3_LIMIT before bench_setup.

BENCH_HERE=$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
BENCH_ROOT=$(dirname "$(dirname "$BENCH_HERE")")     # the repository
: "${BENCH_JWT_SECRET:=moongate-bench-secret-0123456789abcdef}"
: "${BENCH_API_KEY:=moongate-bench-api-key-0123456789}"
export BENCH_JWT_SECRET BENCH_API_KEY

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
tool() { python3 "$BENCH_HERE/tool.py" "$@"; }

# GW_VARIANTS: more gateways under test, each "NAME:VAR=VALUE[,VAR=VALUE]":
# GW_CMD again with that environment, on the workloads GW_VARIANT_WORKLOADS
# (default W1); e.g. moongate's balancers (scripts/bench.sh,
# scripts/bench-gateway.lua's BENCH_BALANCER)
: "${GW_VARIANTS=}" "${GW_VARIANT_WORKLOADS:=W1}"
variant_env() { # NAME -> its VAR=VALUE words; fails for a name that is no variant
    local v
    for v in $GW_VARIANTS; do
        [ "${v%%:*}" = "$1" ] && { tr ',' ' ' <<<"${v#*:}"; return 0; }
    done
    return 1
}
gw_variants() { [ -n "${GW_CMD:-}" ] && for v in $GW_VARIANTS; do echo "${v%%:*}"; done; }

# the peers each workload has (moongate serves all four; a variant its own)
peer_workloads() {
    variant_env "$1" >/dev/null && { echo "$GW_VARIANT_WORKLOADS"; return; }
    case "$1" in
        nginx) echo "W1 W4 W5 W7" ;;
        nginx-lua) echo "W1 W2 W3 W4 W6" ;;
        haproxy) echo "W1 W2 W3 W4" ;;
        *) echo "W1 W2 W3 W4 W5 W7" ;;
    esac
}

bench_need() { # tools...
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 ||
            die "missing $t: run \`bash scripts/bench/deps.sh\` (make bench does it)"
    done
}

# ---------------------------------------------------------------- processes
BENCH_PGS=()    # process groups we started (pgid == the pid we keep)
bench_cleanup() {
    local pg i alive
    for pg in "${BENCH_PGS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null; done
    for i in $(seq 50); do
        alive=0
        for pg in "${BENCH_PGS[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pg in "${BENCH_PGS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
    wait 2>/dev/null
    if [ -n "${RUN:-}" ] && [ "${KEEP_RUN:-0}" != 1 ]; then rm -rf "$RUN"; fi
    [ -n "${RUN:-}" ] && [ "${KEEP_RUN:-0}" = 1 ] && log "run directory kept: $RUN"
}

# spawn VAR CPU DIR CMD... : CMD pinned to CPU, in its own session (its pid
# is its process group), output appended to $RUN/$SPAWN_LOG.log (default
# VAR.log); pid in $VAR
spawn() {
    local var=$1 cpu=$2 dir=$3
    shift 3
    ( cd "$dir" && exec taskset -c "$cpu" setsid "$@" ) >>"$RUN/${SPAWN_LOG:-$var}.log" 2>&1 </dev/null &
    BENCH_PGS+=("$!")
    printf -v "$var" '%s' "$!"
}

# stop PGID : TERM the group, KILL what is left after 5 s
stop() {
    local i
    kill -TERM -- "-$1" 2>/dev/null
    for i in $(seq 50); do kill -0 -- "-$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

# wait_listen PORT PGID SECONDS : until PORT accepts, or the group is gone
wait_listen() {
    local i
    for i in $(seq $(($3 * 10))); do
        ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# pids of a process group, and its user+system CPU ticks
# (through cat: a process that exits meanwhile must not stop the reading)
group_pids() {
    cat /proc/[0-9]*/stat 2>/dev/null |
        awk -v pg="$1" '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[3] == pg) print $1 }'
}
group_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v pg="$1" '
        { s = $0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[3] == pg) t += f[12] + f[13] }
        END { print t + 0 }'
}
# busy ticks of one CPU (all but idle and iowait), to see what else ran there
cpu_busy_ticks() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# ---------------------------------------------------------------- ports
# Listen ports come from below the kernel's ephemeral range, where no pooled
# upstream connection's local port can take them.
BENCH_PORTS=" "
free_port() { # VAR
    local lo p
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
    [ "$lo" -gt 11000 ] || lo=32768
    while :; do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
        case "$BENCH_PORTS" in *" $p "*) continue ;; esac
        ss -Hatn "sport = :$p" 2>/dev/null | grep -q . && continue
        BENCH_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
}

# ---------------------------------------------------------------- configs
# bench_render TEMPLATE OUT KEY=VALUE... : {{KEY}} replaced, plus the
# run-wide keys (RUN HERE NGX_MODULES UP_A UP_B UP_A_TLS TLS_CA TLS_NAME
# SECRET W2_LIMIT W3_LIMIT API_KEY_SHA256)
bench_render() {
    local tpl=$1 out=$2
    shift 2
    python3 - "$tpl" "$out" "RUN=$RUN" "HERE=$BENCH_HERE" "NGX_MODULES=$NGX_MODULES" \
        "UP_A=$BENCH_UPSTREAM_A" "UP_B=$BENCH_UPSTREAM_B" "UP_A_TLS=$BENCH_UPSTREAM_A_TLS" \
        "TLS_CA=$BENCH_TLS_CA" "TLS_NAME=$BENCH_TLS_NAME" "SECRET=$BENCH_JWT_SECRET" \
        "W2_LIMIT=$W2_LIMIT" "W3_LIMIT=$W3_LIMIT" \
        "API_KEY_SHA256=$(printf %s "$BENCH_API_KEY" | sha256sum | cut -d' ' -f1)" "$@" <<'PY'
import re, sys
tpl, out, pairs = sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
text = open(tpl).read()
missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(pairs))
if missing:
    sys.exit("%s: no value for %s" % (tpl, ", ".join(missing)))
open(out, "w").write(re.sub(r"\{\{(\w+)\}\}", lambda m: pairs[m.group(1)], text))
PY
}

# ---------------------------------------------------------------- set-up
# bench_tls DIR : a CA and the origins' certificate (for BENCH_TLS_NAME)
bench_tls() {
    local d=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    mkdir -p "$d"
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=moongate bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
        -keyout "$d/ca.key" -out "$d/ca.crt" >"$d/openssl.log" 2>&1 &&
    openssl req -new "${ec[@]}" -subj "/CN=$BENCH_TLS_NAME" \
        -addext "subjectAltName=DNS:$BENCH_TLS_NAME" -keyout "$d/origin.key" \
        -out "$d/origin.csr" >>"$d/openssl.log" 2>&1 &&
    openssl x509 -req -in "$d/origin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -copy_extensions copy -out "$d/origin.crt" >>"$d/openssl.log" 2>&1
}

# bench_setup : run directory, the origins A and B on LOAD_CPU
bench_setup() {
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/mgbench.XXXXXX") || die "mktemp -d failed"
    chmod 755 "$RUN"      # nginx's workers run as another user
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    # W6's allow-list, the same 10,000 ranges for every gateway
    export BENCH_W6_CIDRS=$RUN/w6-cidrs.txt
    tool cidrs "$BENCH_W6_CIDRS" "$RUN/w6-geo.conf" || die "cannot write the W6 allow-list"
    # W7's origin answer (upstream.conf serves $RUN/w7 as its root)
    tool w7body "$RUN/w7/text/orders" || die "cannot write the W7 answer"
    NGX_MODULES=$(nginx -V 2>&1 | tr ' ' '\n' | sed -n 's/^--modules-path=//p' | head -1)
    : "${NGX_MODULES:=/usr/lib/nginx/modules}"
    local name port admin tls
    free_port UP_A_PORT; free_port UP_B_PORT; free_port UP_A_ADMIN; free_port UP_B_ADMIN
    free_port UP_A_TLS_PORT; free_port UP_B_TLS_PORT
    export BENCH_UPSTREAM_A=127.0.0.1:$UP_A_PORT BENCH_UPSTREAM_B=127.0.0.1:$UP_B_PORT
    export BENCH_UPSTREAM_A_TLS=127.0.0.1:$UP_A_TLS_PORT BENCH_TLS_NAME=origin.bench.test
    export BENCH_TLS_CA=$RUN/tls/ca.crt
    bench_tls "$RUN/tls" || die "cannot make the origins' certificate: $(tail -3 "$RUN/tls/openssl.log")"
    for name in a b; do
        if [ $name = a ]; then port=$UP_A_PORT admin=$UP_A_ADMIN tls=$UP_A_TLS_PORT
        else port=$UP_B_PORT admin=$UP_B_ADMIN tls=$UP_B_TLS_PORT; fi
        bench_render "$BENCH_HERE/conf/upstream.conf" "$RUN/upstream-$name.conf" \
            NAME=$name PORT=$port ADMIN=$admin TLS_PORT=$tls || die "cannot render the upstream config"
        spawn "UPSTREAM_$name" "$LOAD_CPU" "$RUN" nginx -p "$RUN" -e "$RUN/upstream-$name.err" \
            -c "$RUN/upstream-$name.conf" -g 'daemon off;'
        local v=UPSTREAM_$name
        wait_listen "$port" "${!v}" 10 || die "origin $name did not start: $(tail -3 "$RUN/UPSTREAM_$name.log")"
    done
}

# connections both origins accepted so far (stub_status "accepts"; each
# call itself adds one per origin)
upstream_accepts() {
    local p n t=0
    for p in $UP_A_ADMIN $UP_B_ADMIN; do
        n=$(curl -s --max-time 2 "http://127.0.0.1:$p/" | awk 'NR == 3 { print $1 }')
        t=$((t + ${n:-0}))
    done
    echo $t
}

# start_gateway NAME MODE WORKLOADS [WRAPPER...] : starts a peer or the
# gateway under test (GW_CMD) serving WORKLOADS, on GW_CPU; sets GWPG (its
# process group) and PORT_W1..PORT_W7 (empty when not served).
# MODE "timing" runs nginx with its usual master; "count" runs it as one
# process (master_process off) so that strace and callgrind see one pid.
# WRAPPER (e.g. valgrind ...) goes in front of the gateway's command.
start_gateway() {
    local gw=$1 mode=$2 wls=" $3 " w
    shift 3
    local wrap=("$@") wait_s=10
    [ ${#wrap[@]} -gt 0 ] && wait_s=180
    # a peer's config listens for all its workloads (the ones not asked for
    # get a port too and stay idle); the gateway under test only for WORKLOADS
    local ports=() spare
    for w in W1 W2 W3 W4 W5 W6 W7; do
        case "$wls" in *" $w "*) free_port "PORT_$w" ;; *) printf -v "PORT_$w" '' ;; esac
        local v=PORT_$w
        if [ -n "${!v}" ]; then ports+=("$w=${!v}"); else free_port spare; ports+=("$w=$spare"); fi
    done
    local ngx_g='daemon off;'
    [ "$mode" = count ] && ngx_g='daemon off; master_process off;'
    case "$gw" in
    nginx|nginx-lua)
        bench_render "$BENCH_HERE/conf/$gw.conf" "$RUN/$gw.conf" "${ports[@]}" || return 1
        SPAWN_LOG=$gw spawn GWPG "$GW_CPU" "$RUN" "${wrap[@]}" nginx -p "$RUN" -e "$RUN/$gw.err" \
            -c "$RUN/$gw.conf" -g "$ngx_g" ;;
    haproxy)
        bench_render "$BENCH_HERE/conf/haproxy.cfg" "$RUN/haproxy.cfg" "${ports[@]}" || return 1
        haproxy -c -q -f "$RUN/haproxy.cfg" >>"$RUN/haproxy-check.log" 2>&1 ||
            { log "haproxy: config check failed: $(tail -3 "$RUN/haproxy-check.log")"; return 1; }
        SPAWN_LOG=$gw spawn GWPG "$GW_CPU" "$RUN" "${wrap[@]}" haproxy -db -f "$RUN/haproxy.cfg" ;;
    *)
        [ -n "${GW_CMD:-}" ] || { log "$gw: unknown peer and no GW_CMD"; return 1; }
        mkdir -p "$RUN/$gw"
        GW_PORT=$PORT_W1 GW_W1_PORT=$PORT_W1 GW_W2_PORT=$PORT_W2 GW_W3_PORT=$PORT_W3 \
        GW_W4_PORT=$PORT_W4 GW_W5_PORT=$PORT_W5 GW_W6_PORT=$PORT_W6 GW_W7_PORT=$PORT_W7 BENCH_TMP="$RUN/$gw" BENCH_W2_LIMIT=$W2_LIMIT BENCH_W3_LIMIT=$W3_LIMIT \
        BENCH_UNDER_VALGRIND=$([ ${#wrap[@]} -gt 0 ] && echo 1) \
            SPAWN_LOG=$gw spawn GWPG "$GW_CPU" "$BENCH_ROOT" env $(variant_env "$gw") \
            "${wrap[@]}" bash -c "$GW_CMD" ;;
    esac
    for w in W1 W2 W3 W4 W5 W6 W7; do
        local p=PORT_$w
        [ -n "${!p}" ] || continue
        wait_listen "${!p}" "$GWPG" "$wait_s" ||
            { log "$gw did not listen on ${!p} ($w): $(tail -3 "$RUN/$gw.log" | tr '\n' ' ')"; return 1; }
    done
}
