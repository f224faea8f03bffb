#!/usr/bin/env bash
# Installs the Debian packages moongate needs, with apt-get, and does nothing
# when they are all present. `make run`, `make test` and `make bench` call it
# before they build, `make deb` before it packages; `make deps` runs it alone.
# With package names as arguments it installs those instead.
# (luarocks, dpkg-dev, lintian and systemd: the packaging specs of `make test`;
# clang and libclang-rt-14-dev: the libFuzzer targets, spec/fuzz; haproxy and
# nginx: the proxies in front of the gateway in spec/integration/real_ip_spec.lua, and
# an HTTPS upstream in spec/integration/upstream_tls_spec.lua; prometheus: promtool and a
# prometheus server, which check /metrics in spec/integration/metrics_spec.lua;
# libnghttp2-dev: HTTP/2 (src/h2_conn.c, src/h2_upstream.c); nghttp2-client (nghttp, h2load)
# and python3-h2: the HTTP/2 clients, attackers and upstreams of spec/integration/h2_spec.lua,
# h2_attacks_spec.lua and h2_upstream_spec.lua; python3-grpcio and python3-protobuf: the gRPC
# server and client of spec/integration/grpc_spec.lua;
# zlib1g-dev and libbrotli-dev: the compression policy, src/compress.c; python3-brotli:
# decoding its answers in spec/integration/compression_spec.lua; redis-server (Debian's
# is built with TLS): rate limits and the cache, over TLS in spec/integration/redis_tls_spec.lua;
# dnsmasq-base: the DNS server (/usr/sbin/dnsmasq) of spec/integration/discovery_spec.lua.)
set -euo pipefail
if [ $# -gt 0 ]; then
    pkgs=("$@") # another list (scripts/bench/deps.sh)
else
    pkgs=(build-essential pkg-config libluajit2-5.1-dev luajit2 libuv1-dev node-llhttp
          libssl-dev libcrypt-dev lua-cjson lua-busted lua-socket libhiredis-dev redis-server
          libedit-dev python3 curl openssl ca-certificates luarocks liblua5.1-0-dev
          dpkg-dev lintian systemd strace clang libclang-rt-14-dev haproxy nginx prometheus
          libnghttp2-dev nghttp2-client python3-h2 python3-grpcio python3-protobuf
          zlib1g-dev libbrotli-dev python3-brotli
          dnsmasq-base)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]} (apt-get; this can take a minute)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || echo "deps: apt-get update failed, trying the install anyway" >&2
# apt's chatter only when it fails (debconf notes otherwise clutter the log)
log=$(mktemp)
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "deps: apt-get install failed (see above); install them by hand: ${missing[*]}" >&2
    exit 1
fi
rm -f "$log"
echo "deps: done"
