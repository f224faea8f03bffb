#!/usr/bin/env bash
# `make bench`: moongate beside nginx, nginx+lua (and the other peers) on the
# workloads of ../shared/bench (peers.sh), then reloads under load, cache
# hits beside nginx's proxy_cache and the idle-connection memory figure.
# A benchmark owns the machine: run nothing else meanwhile.
#   PEERS="nginx nginx-lua" QUICK=1 make bench    # faster, rougher
set -uo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH_DIR_OVERRIDE:-../shared/bench}
if [ ! -x "$BENCH/peers.sh" ] && [ ! -f "$BENCH/peers.sh" ]; then
    echo "bench: $BENCH/peers.sh not found (the shared bench harness sits beside the repo)" >&2
    exit 1
fi
args=()
[ "${QUICK:-0}" = 1 ] && args+=(--quick)
export PEERS=${PEERS:-"nginx nginx-lua haproxy"}
export GW_NAME=moongate
export GW_WORKLOADS=${GW_WORKLOADS:-"W1 W2 W3 W4"}
export GW_CMD="exec $PWD/build/moongate run -c $PWD/scripts/bench-gateway.lua"
echo "bench: peers.sh with PEERS='$PEERS' GW_WORKLOADS='$GW_WORKLOADS'"
bash "$BENCH/peers.sh" "${args[@]}"
rc=$?
echo
echo "bench: reloading every 100 ms"
bash scripts/bench-reload.sh || rc=1
echo
echo "bench: response cache hits beside nginx proxy_cache"
bash scripts/bench-cache.sh || rc=1
echo
echo "bench: idle keep-alive connections (memory)"
python3 scripts/bench-idle.py --bin build/moongate --conns "${IDLE_CONNS:-10000}" || rc=1
exit $rc
