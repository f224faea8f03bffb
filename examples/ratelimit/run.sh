#!/usr/bin/env bash
# examples/ratelimit/run.sh: starts the local-mode example gateway, shows
# each limit with curl, then stops it. Ports: PORT (8080), SERVICE_PORT (8081).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x build/moongate ] || make all >/dev/null
export PORT=${PORT:-8080} SERVICE_PORT=${SERVICE_PORT:-8081}
base=http://127.0.0.1:$PORT

build/moongate run -c examples/ratelimit/gateway.lua --workers 2 &
gw=$!
trap 'kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -s -o /dev/null "$base/" 2>/dev/null && break
    sleep 0.1
done

show() { # show LABEL CURL-ARGS...: status line and the rate-limit headers
    local label=$1; shift
    printf '%-28s ' "$label"
    curl -s -i "$@" | tr -d '\r' |
        awk 'NR==1 { sub(/^HTTP\/[0-9.]+ /, ""); printf "%s", $0 }
             tolower($1) ~ /^(ratelimit-|retry-after)/ { printf "  %s %s", $1, $2 }
             END { print "" }'
}

echo "== /api: 5 per 10 s per client (sliding window), over 2 workers"
for i in 1 2 3 4 5 6 7; do show "GET /api/orders ($i)" "$base/api/orders"; done

echo; echo "== /burst: token bucket, 3 at once then 1 per second"
for i in 1 2 3 4; do show "GET /burst/x ($i)" "$base/burst/x"; done
sleep 1.1
show "GET /burst/x (after 1 s)" "$base/burst/x"

echo; echo "== /login: 3 per minute per X-User"
for i in 1 2 3 4; do show "POST /login alice ($i)" -X POST -H "X-User: alice" "$base/login"; done
show "POST /login bob" -X POST -H "X-User: bob" "$base/login"

echo; echo "== /search: a limiter in a hook, weighted (deep=1 costs 5 of 20/min)"
for i in 1 2 3 4; do show "GET /search?deep=1 ($i)" "$base/search?deep=1"; done
curl -s "$base/search"; echo
show "GET /search (spent)" "$base/search"
