#!/usr/bin/env bash
# `make bench`: moongate beside nginx, nginx + lua and HAProxy on the
# workloads W0-W6 (scripts/bench/peers.sh: req/s, p99, CPU us per request,
# ratios), then the counted cost per request (scripts/bench/counts.sh:
# syscalls and user-space instructions), then throughput while reloading
# every 100 ms, response cache hits beside nginx's proxy_cache, HTTP/2 from
# clients beside nginx and HAProxy (scripts/bench-h2.sh: h2load), gRPC unary
# calls beside nginx grpc_pass (G1, scripts/bench-grpc.sh) and the memory of
# idle keep-alive connections, HTTP/1.1 and HTTP/2. Everything it needs is in
# this repository;
# the peers are installed by scripts/bench/deps.sh (`make bench-deps`).
# A benchmark owns the machine: run nothing else meanwhile.
#   QUICK=1 make bench                      one short rep, smaller count windows
#   PEERS="nginx nginx-lua" make bench      fewer peers
#   SKIP_COUNTS=1 make bench                no counts (they need valgrind, ~3 min)
#   GW_VARIANTS="" make bench               without the W1 variants
set -uo pipefail
cd "$(dirname "$0")/.."
export PEERS=${PEERS-"nginx nginx-lua haproxy"}
export GW_NAME=moongate
export GW_CMD="exec $PWD/build/moongate run -c $PWD/scripts/bench-gateway.lua"
# W1 again with each balancer over two targets (A and B): mg-rr2 round
# robin, mg-lc least_conn, mg-hash hash by path (scripts/bench-gateway.lua);
# the plain moongate row's W1 has one target, which no balancer is asked
# about. The counts add W1 beside a second route, plain (mg-2route) and
# with a split, a canary and a mirror (mg-2split): the two must count the
# same instructions (SAME_IR), what split and mirror cost a route without
# them being nothing.
BALANCERS="mg-rr2:BENCH_BALANCER=round_robin mg-lc:BENCH_BALANCER=least_conn mg-hash:BENCH_BALANCER=hash"
GW_VARIANTS=${GW_VARIANTS-"$BALANCERS mg-2route:BENCH_TRAFFIC=route mg-2split:BENCH_TRAFFIC=other"}
export SAME_IR=${SAME_IR-"mg-2split=mg-2route"}
rc=0
echo "bench: moongate beside peers ($PEERS), scripts/bench/peers.sh"
# timed: the balancers only (the traffic variants are for the counts)
peer_variants=""
for v in $GW_VARIANTS; do
    case "$v" in mg-2route:* | mg-2split:*) ;; *) peer_variants+="$v " ;; esac
done
GW_VARIANTS="$peer_variants" GW_WORKLOADS=${GW_WORKLOADS:-"W1 W2 W3 W4 W5 W6"} \
    bash scripts/bench/peers.sh || rc=1
export GW_VARIANTS
if [ "${SKIP_COUNTS:-0}" != 1 ]; then
    echo
    echo "bench: counted cost per request, scripts/bench/counts.sh"
    if [ "${QUICK:-0}" = 1 ]; then
        export N_SYS=${N_SYS:-5000} N_CG=${N_CG:-2000} WARM=${WARM:-1000}
    fi
    GW_WORKLOADS="W1 W2 W4 W6" WORKLOADS="W1 W2 W4 W6" bash scripts/bench/counts.sh || rc=1
fi
echo
echo "bench: reloading every 100 ms"
bash scripts/bench-reload.sh || rc=1
echo
echo "bench: response cache hits beside nginx proxy_cache"
bash scripts/bench-cache.sh || rc=1
echo
echo "bench: HTTP/2 from clients (h2load, 8 connections x 100 streams) beside nginx and HAProxy"
bash scripts/bench-h2.sh || rc=1
echo
echo "bench: gRPC unary calls beside nginx grpc_pass (G1)"
bash scripts/bench-grpc.sh || rc=1
echo
echo "bench: idle keep-alive connections (memory)"
python3 scripts/bench-idle.py --bin build/moongate --conns "${IDLE_CONNS:-10000}" || rc=1
echo
echo "bench: idle HTTP/2 connections (memory)"
python3 scripts/bench-idle.py --bin build/moongate --conns "${IDLE_CONNS:-10000}" --http2 || rc=1
exit $rc
