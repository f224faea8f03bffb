#!/usr/bin/env bash
# Throughput and p99 of moongate (1 worker, W1-style proxy with a policy)
# while its config is reloaded every 100 ms, beside the same run without
# reloads. Gateway on CPU 0; wrk and the nginx upstream on CPU 1.
set -uo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); ADMIN=$(port)
cat > "$tmp/nginx.conf" <<NGX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 120s;
  server { listen 127.0.0.1:$UP; location / { return 200 '{"upstream":"a"}'; } } }
NGX
taskset -c 1 nginx -c "$tmp/nginx.conf"
cat > "$tmp/gw.lua" <<CFG
local gw = require "moongate"
gw.settings { workers = 1, access_log = "off", admin = { port = $ADMIN } }
gw.listen { port = $GW, host = "127.0.0.1" }
gw.upstream("a", { "127.0.0.1:$UP" }, { keepalive = 256 })
gw.route { path = "/**", upstream = "a", policies = { function(req)
    req:set_header("x-policy", "v1")
end } }
gw.test { request = { path = "/t" }, expect = { upstream = "a" } }
CFG
taskset -c 0 build/moongate run -c "$tmp/gw.lua" 2>"$tmp/gw.log" &
for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$GW/" && break; sleep 0.05; done
run() { taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$GW/orders/1"; }
parse() { awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /Non-2xx|Socket errors/ {err=err" "$0} END {printf "%s %s%s\n", rps, p99, err}'; }
taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$GW/" >/dev/null
base=$(run | parse)
( n=0; while :; do curl -s -o /dev/null -X POST "127.0.0.1:$ADMIN/reload"; n=$((n+1)); echo $n > "$tmp/reloads"; sleep 0.1; done ) &
loader=$!
reload=$(run | parse)
kill $loader 2>/dev/null; wait $loader 2>/dev/null
n=$(cat "$tmp/reloads" 2>/dev/null || echo 0)
echo "reload bench: ${DURATION}s each, wrk -c64, 1 worker"
printf "  %-22s req/s %-10s p99 %s\n" "no reloads" $base
printf "  %-22s req/s %-10s p99 %s\n" "reload every 100 ms" $reload
echo "  reloads done during the run: $n"
awk -v a="${base%% *}" -v b="${reload%% *}" 'BEGIN { if (a > 0) printf "  throughput ratio (reloading / not): %.2f\n", b / a }'
