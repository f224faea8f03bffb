#!/usr/bin/env bash
# Mint an HS256 JWT with openssl (no other tools).
# usage: examples/jwt/mint.sh [sub] [scope] [ttl_seconds] [roles_json]
#   JWT_SECRET   the secret (default: the example config's)
#   ISS, AUD     issuer and audience (default: example-idp, orders-api)
# ttl may be negative (an expired token).
set -euo pipefail
sub=${1:-alice}
scope=${2:-orders:read}
ttl=${3:-3600}
roles=${4:-[]}
secret=${JWT_SECRET:-moongate-example-secret-change-me-0123456789}
iss=${ISS:-example-idp}
aud=${AUD:-orders-api}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","scope":"%s","roles":%s,"iss":"%s","aud":"%s","iat":%d,"exp":%d}' \
    "$sub" "$scope" "$roles" "$iss" "$aud" "$now" "$((now + ttl))" | b64url)
sig=$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig"
