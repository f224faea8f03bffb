#!/usr/bin/env bash
# A stand-in identity provider for examples/jwt (openssl only): an Ed25519
# signing key, its JWK set, and EdDSA tokens.
#
#   examples/jwt/idp.sh token [sub] [ttl]   mint an EdDSA token (makes a key first if none)
#   examples/jwt/idp.sh rotate              new key + kid; the JWKS now holds only it
#   examples/jwt/idp.sh jwks                print the JWK set
#
# Keys live in examples/jwt/.idp/ (not for production: a real identity
# provider keeps its private keys to itself). The gateway example serves
# .idp/jwks.json on :8082 and verifies /rs/** tokens against it.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/.idp"
mkdir -p "$dir"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

newkey() {
    local kid="ed-$(date +%s)-$RANDOM"
    openssl genpkey -algorithm ED25519 -out "$dir/key.pem" 2>/dev/null
    echo "$kid" >"$dir/kid"
    # the raw public key is the last 32 bytes of its DER SubjectPublicKeyInfo
    local x
    x=$(openssl pkey -in "$dir/key.pem" -pubout -outform DER | tail -c 32 | b64url)
    printf '{"keys":[{"kty":"OKP","crv":"Ed25519","use":"sig","alg":"EdDSA","kid":"%s","x":"%s"}]}\n' \
        "$kid" "$x" >"$dir/jwks.json"
}

cmd=${1:-token}
case "$cmd" in
token)
    [ -f "$dir/key.pem" ] || newkey
    sub=${2:-alice}
    ttl=${3:-3600}
    now=$(date +%s)
    header=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"%s"}' "$(cat "$dir/kid")" | b64url)
    payload=$(printf '{"sub":"%s","iss":"example-idp","iat":%d,"exp":%d}' \
        "$sub" "$now" "$((now + ttl))" | b64url)
    printf '%s.%s' "$header" "$payload" >"$dir/in"
    sig=$(openssl pkeyutl -sign -rawin -inkey "$dir/key.pem" -in "$dir/in" | b64url)
    printf '%s.%s.%s\n' "$header" "$payload" "$sig"
    ;;
rotate) newkey; echo "new kid: $(cat "$dir/kid")" ;;
jwks) [ -f "$dir/jwks.json" ] || newkey; cat "$dir/jwks.json" ;;
*) echo "usage: $0 token [sub] [ttl] | rotate | jwks" >&2; exit 2 ;;
esac
