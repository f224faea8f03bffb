#!/usr/bin/env bash
# examples/tls/run.sh: makes a self-signed certificate, starts the gateway
# with HTTPS on PORT (8443) in front of two service instances, shows the
# balancing, takes instance 2 out through its health check and back, then
# stops. Needs openssl and curl.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
[ -x $root/build/moongate ] || make -C $root all >/dev/null
export PORT=${PORT:-8443} SERVICE_PORT=${SERVICE_PORT:-8081}
mkdir -p certs
[ -f certs/localhost.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout certs/localhost.key -out certs/localhost.pem 2>/dev/null
rm -f down.flag

$root/build/moongate run -c gateway.lua &
gw=$!
trap 'rm -f down.flag; kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null || true' EXIT
base=https://localhost:$PORT
for _ in $(seq 50); do
    curl -s -o /dev/null --cacert certs/localhost.pem "$base/orders/1" 2>/dev/null && break
    sleep 0.1
done

get() { curl -s --cacert certs/localhost.pem -D - "$base/orders/$1" | tr -d '\r' |
        awk 'tolower($0) ~ /^x-tls:/ { tls = $0 } /^{/ { body = $0 } END { print body "   " tls }'; }

echo "== HTTPS, balanced over two instances"
for i in 1 2 3 4; do get "$i"; done
echo; echo "== plain HTTP on the TLS port"
curl -s "http://localhost:$PORT/orders/1"; echo
echo; echo "== instance 2 fails its health check (503) twice: taken out"
touch down.flag
sleep 1.5
for i in 5 6 7 8; do get "$i"; done
curl -s "http://127.0.0.1:$((PORT + 1000))/metrics" | grep moongate_upstream_target_up
echo; echo "== instance 2 healthy again: back after two good checks"
rm -f down.flag
sleep 1.5
for i in 9 10 11 12; do get "$i"; done
