#!/usr/bin/env bash
# Installs the Debian packages moongate needs to build, run and test
# (DESIGN.md section 4). Does nothing when they are all present.
set -euo pipefail
pkgs=(build-essential pkg-config libluajit2-5.1-dev luajit2 libuv1-dev node-llhttp
      libssl-dev lua-cjson lua-busted lua-socket libhiredis-dev redis-server
      libedit-dev python3 curl openssl)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || echo "deps: apt-get update failed, trying the install anyway" >&2
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
