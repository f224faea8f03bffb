#!/usr/bin/env bash
# The benchmark's own Debian packages (`make bench`, `make bench-counts`):
# the peer gateways (nginx, nginx + lua-nginx-module, HAProxy), the load
# generators (wrk; h2load from nghttp2-client for scripts/bench-h2.sh and
# bench-grpc.sh, with nghttpd from nghttp2-server as bench-grpc.sh's gRPC
# backend), strace and valgrind for the counts. Kept apart from
# scripts/deps.sh so that `make test` never pulls in the peers. Does nothing
# when everything is present.
set -euo pipefail
exec bash "$(dirname "$0")/../deps.sh" nginx libnginx-mod-http-lua lua-resty-core \
    lua-resty-lrucache haproxy wrk strace valgrind curl openssl python3 util-linux iproute2 \
    procps nghttp2-client nghttp2-server
