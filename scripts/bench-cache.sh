#!/usr/bin/env bash
# Response cache hits: moongate (1 worker, route `cache`) beside nginx
# (1 worker, proxy_cache) answering the same kept 1 KiB answer, 3
# interleaved reps, median shown. Both on CPU 0; wrk and the upstream (an
# nginx that is only asked once per gateway) on CPU 1.
set -uo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-6}
REPS=${REPS:-3}
tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx's workers (another user) keep their cache in it
trap 'kill $(jobs -p) 2>/dev/null; for p in "$tmp"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); NGX=$(port)
body=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > "$tmp/up.conf" <<NGX
worker_processes 1;
pid $tmp/up.pid;
error_log $tmp/up.err warn;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:$UP; location / { default_type text/plain; return 200 '$body'; } } }
NGX
cat > "$tmp/cache.conf" <<NGX
worker_processes 1;
pid $tmp/cache.pid;
error_log $tmp/cache.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 120s;
  proxy_cache_path $tmp/ncache levels=1:2 keys_zone=c:10m max_size=100m inactive=60m use_temp_path=off;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_cache c; proxy_cache_valid 200 10m; proxy_cache_lock on; } } }
NGX
cat > "$tmp/gw.lua" <<CFG
local gw = require "moongate"
gw.settings { workers = 1, access_log = "off", admin = false }
gw.listen { port = $GW, host = "127.0.0.1" }
gw.upstream("up", { "127.0.0.1:$UP" })
gw.route { path = "/**", upstream = "up", cache = { ttl = 600 } }
CFG
taskset -c 1 nginx -c "$tmp/up.conf"
taskset -c 0 nginx -c "$tmp/cache.conf"
taskset -c 0 build/moongate run -c "$tmp/gw.lua" 2>"$tmp/gw.log" &
for p in $GW $NGX; do
    for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$p/item" && break; sleep 0.05; done
done
for p in $GW $NGX; do # each keeps the answer now; check it is a hit
    curl -s -D - -o /dev/null "127.0.0.1:$p/item" | tr -d '\r' | grep -qi '^cache-status: .*hit\|^content-length: 1024' ||
        echo "bench-cache: no cached answer on port $p" >&2
done
rps() { taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$1/item" | awk '/Requests\/sec/ {print $2}'; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
mg=(); ng=()
for i in $(seq "$REPS"); do
    mg+=("$(rps $GW)"); ng+=("$(rps $NGX)")
    echo "  rep $i: moongate ${mg[-1]}  nginx proxy_cache ${ng[-1]}"
done
m=$(printf '%s\n' "${mg[@]}" | median); n=$(printf '%s\n' "${ng[@]}" | median)
echo "cache hits (1 KiB answer, 1 worker, wrk -c64, median of $REPS x ${DURATION}s):"
printf "  %-20s req/s %s\n" "moongate" "$m" "nginx proxy_cache" "$n"
awk -v a="$m" -v b="$n" 'BEGIN { if (b > 0) printf "  ratio moongate / nginx: %.2fx\n", a / b }'
