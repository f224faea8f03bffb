#!/usr/bin/env bash
# `make run`: prints what to try, then runs the demo gateway in the foreground.
cd "$(dirname "$0")/.."
cat <<'TXT'
moongate demo: gateway on http://127.0.0.1:8080 (Ctrl-C stops it)

  curl -i localhost:8080/orders/42          # round robin over two orders instances
  curl -i localhost:8080/orders/42          # ... the other instance answers
  curl -i -X POST localhost:8080/payments   # payments service (/payments/**)
  curl -i localhost:8080/payments/123       # ... and everything below it
  curl -i -X DELETE localhost:8080/payments # 405: method not allowed on this route
  curl -i localhost:8080/delivery/7         # rewritten to /shipments/7 upstream
  curl -i localhost:8080/delivery/7         # again: from the cache (Cache-Status: hit)
  curl -i localhost:8080/nope               # 404 with a JSON body and request id
  curl -i --path-as-is localhost:8080/orders/../payments # normalised: routed as /payments

The config is examples/msa/gateway.lua; check one with:
  build/moongate check -c examples/msa/gateway.lua

TXT
exec ./build/moongate run -c examples/msa/gateway.lua "$@"
