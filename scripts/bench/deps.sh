#!/usr/bin/env bash
# The benchmark's own Debian packages (`make bench`, `make bench-counts`):
# the peer gateways (nginx, nginx + lua-nginx-module, HAProxy), the load
# generator, strace and valgrind for the counts. Kept apart from
# scripts/deps.sh so that `make test` never pulls in the peers. Does nothing
# when everything is present.
set -euo pipefail
pkgs=(nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache haproxy wrk
      strace valgrind curl openssl python3 util-linux iproute2 procps)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "bench deps: installing ${missing[*]} (apt-get; this can take a minute)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || echo "bench deps: apt-get update failed, trying the install anyway" >&2
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "bench deps: done"
