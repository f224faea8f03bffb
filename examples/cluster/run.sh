#!/usr/bin/env bash
# examples/cluster/run.sh: Redis and two gateways on loopback sharing their
# rate limits; shows with curl that the count is shared, what happens while
# Redis is down, and that limiting resumes when it is back. Stops all three
# at the end.
#
#   REDIS_PORT (6390), GW1_PORT (8080), GW2_PORT (8090); each gateway also
#   uses PORT+1 (its service) and PORT+1821 (admin API).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x build/moongate ] || make all >/dev/null
command -v redis-server >/dev/null || { echo "needs redis-server (make deps)"; exit 1; }
REDIS_PORT=${REDIS_PORT:-6390} GW1_PORT=${GW1_PORT:-8080} GW2_PORT=${GW2_PORT:-8090}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$tmp" --loglevel warning >>"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    for _ in $(seq 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "redis did not start"; exit 1
}

start_gw() { # NAME PORT
    NAME=$1 PORT=$2 SERVICE_PORT=$(($2 + 1)) ADMIN_PORT=$(($2 + 1821)) \
        REDIS=127.0.0.1:$REDIS_PORT \
        build/moongate run -c examples/cluster/gateway.lua --workers 2 \
        >"$tmp/$1.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 50); do
        curl -s -o /dev/null "http://127.0.0.1:$2/" && return
        sleep 0.1
    done
    echo "gateway $1 did not start:"; cat "$tmp/$1.log"; exit 1
}

show() { # show LABEL PORT PATH [USER [HOST]]
    printf '%-26s ' "$1"
    curl -s -i -H "X-User: ${4:-alice}" ${5:+-H "Host: $5"} "http://127.0.0.1:$2$3" |
        tr -d '\r' |
        awk 'NR==1 { sub(/^HTTP\/[0-9.]+ /, ""); printf "%-22s", $0 }
             tolower($1) ~ /^ratelimit-remaining/ { printf "  remaining %s", $2 }
             tolower($1) ~ /^retry-after/ { printf "  retry-after %s", $2 }
             tolower($1) ~ /^cache-status/ { sub(/^[^:]*: /, ""); printf "  [%s]", $0 }
             /"instance"/ { match($0, /"instance":"[^"]*"/);
                            printf "  served by %s", substr($0, RSTART + 12, RLENGTH - 13) }
             END { print "" }'
}

start_redis
start_gw gw1 "$GW1_PORT"
start_gw gw2 "$GW2_PORT"
echo "redis :$REDIS_PORT, gw1 :$GW1_PORT, gw2 :$GW2_PORT"

echo; echo "== /api: 10 per 10 s per user, counted once across both gateways"
for i in $(seq 1 12); do
    port=$GW1_PORT; name=gw1
    if [ $((i % 2)) -eq 0 ]; then port=$GW2_PORT; name=gw2; fi
    show "alice via $name ($i)" "$port" /api/orders
done
show "bob via gw2" "$GW2_PORT" /api/orders bob
echo "(in Redis: $(redis-cli -p "$REDIS_PORT" --scan --pattern 'moongate:rl:*' | tr '\n' ' '))"

echo; echo "== /catalog: answers kept in Redis, shared by both gateways"
# one public name, as behind a load balancer (the Host is part of the key)
show "catalog via gw1" "$GW1_PORT" /catalog/books alice api.example
show "catalog via gw2" "$GW2_PORT" /catalog/books alice api.example
show "catalog via gw1 again" "$GW1_PORT" /catalog/books alice api.example
echo "(in Redis: $(redis-cli -p "$REDIS_PORT" --scan --pattern 'mgcache:*' | tr '\n' ' ' | cut -c1-60)...)"

echo; echo "== Redis down: /api falls back to 5 per 10 s per gateway, /strict denies"
kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
sleep 0.2
for i in 1 2 3 4 5 6; do show "carol via gw1 ($i)" "$GW1_PORT" /api/x carol; done
show "carol via gw2" "$GW2_PORT" /api/x carol
show "/strict via gw1" "$GW1_PORT" /strict/x

echo; echo "== Redis back (empty): shared limits again within a second"
start_redis
sleep 1.2
for i in 1 2 3; do show "/strict via gw$(( (i % 2) + 1 )) ($i)" \
    "$([ $((i % 2)) -eq 0 ] && echo "$GW1_PORT" || echo "$GW2_PORT")" /strict/x; done

echo; echo "gateway logs:"; cat "$tmp"/gw1.log "$tmp"/gw2.log | grep -i redis || true
