-- moongate.jwk: the keys moongate.jwt verifies with (src/crypto.c through
-- the FFI), made from HMAC secrets, PEM public keys or certificates, JWKs
-- (RFC 7517) and JWK sets.
--
-- A key is { handle = <mg_crypto_key_t *, freed by ffi.gc>, kid = string
-- or nil, algs = { [alg id] = true }, type = "oct" | "RSA" | "RSA-PSS" |
-- "EC" | "OKP", bits = n, source = "secret" | "pem" | "jwk" }. The C key
-- pins the algorithms it may verify (an HMAC secret only HS*, an RSA key
-- RS*/PS*, an EC key the ES* of its curve, an Ed25519 key EdDSA); a JWK's
-- "alg" and a config's `algorithms` list narrow that further, in C.
--
-- Constructors return the key, or nil and a reason fit for a config error.
-- Keys are built while a config loads, never per request.

local ffi = require "ffi"
local bit = require "bit"
local cjson = require("cjson.safe").new()

local type, pairs, ipairs, tostring, concat, sort, fmt =
    type, pairs, ipairs, tostring, table.concat, table.sort, string.format
local ffi_new, ffi_string, ffi_gc = ffi.new, ffi.string, ffi.gc

cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(32)

-- The crypto section of src/mg_ffi.h (spec/unit/cdefs_spec.lua checks the
-- two agree).
ffi.cdef [[
typedef struct mg_crypto_key_s mg_crypto_key_t;
mg_crypto_key_t *mg_ffi_crypto_key_secret(const unsigned char *secret, size_t len,
                                          const char **err);
mg_crypto_key_t *mg_ffi_crypto_key_pem(const char *pem, size_t len, const char **err);
mg_crypto_key_t *mg_ffi_crypto_key_rsa(const unsigned char *n, size_t nlen,
                                       const unsigned char *e, size_t elen,
                                       const char **err);
mg_crypto_key_t *mg_ffi_crypto_key_ec(const char *crv, const unsigned char *x, size_t xlen,
                                      const unsigned char *y, size_t ylen, const char **err);
mg_crypto_key_t *mg_ffi_crypto_key_okp(const char *crv, const unsigned char *x, size_t xlen,
                                       const char **err);
void mg_ffi_crypto_key_free(mg_crypto_key_t *k);
unsigned mg_ffi_crypto_key_algs(const mg_crypto_key_t *k);
unsigned mg_ffi_crypto_key_restrict(mg_crypto_key_t *k, unsigned algs);
const char *mg_ffi_crypto_key_type(const mg_crypto_key_t *k, int *bits);
int mg_ffi_crypto_verify(const mg_crypto_key_t *k, int alg, const unsigned char *in,
                         size_t len, const unsigned char *sig, size_t slen);
int mg_ffi_jws_verify(const mg_crypto_key_t *k, int alg, const char *token, size_t len,
                      size_t dot1, size_t dot2, unsigned char *payload, size_t *plen);
int mg_ffi_crypto_hmac(const mg_crypto_key_t *k, int alg, const unsigned char *in, size_t len,
                       unsigned char *mac, size_t *maclen);
int mg_ffi_b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);
size_t mg_ffi_b64url_encode(const unsigned char *in, size_t len, char *out);
typedef struct mg_json_tok_s {
    double num;
    uint32_t key_off, key_len, val_off, val_len;
    uint8_t type, key_esc, val_esc, pad;
} mg_json_tok_t;
int mg_ffi_json_flat_object(const char *text, size_t len, mg_json_tok_t *toks, int max,
                            char *sbuf, size_t scap);
]]

local _M = {}

-- The running binary exports the symbols (-Wl,-E); specs and scripts load
-- the test library instead.
local C = require("moongate.clib").require("mg_ffi_jws_verify")
_M.C = C

-- Algorithms: the ids of src/mg_ffi.h (MG_JWS_*).
local ALG_ID = {
    HS256 = 1, HS384 = 2, HS512 = 3,
    RS256 = 4, RS384 = 5, RS512 = 6,
    PS256 = 7, PS384 = 8, PS512 = 9,
    ES256 = 10, ES384 = 11, ES512 = 12,
    EdDSA = 13, Ed25519 = 14, Ed448 = 15,
}
local ALG_NAME = {}
for name, id in pairs(ALG_ID) do ALG_NAME[id] = name end
_M.ALG_ID, _M.ALG_NAME = ALG_ID, ALG_NAME

-- Error codes of the verify functions (MG_JWS_E*).
_M.EALG, _M.ESIG64, _M.EPAYLOAD64 = -20, -21, -22
_M.ESPACE, _M.ESHAPE, _M.EINTERNAL = -23, -24, -25

local errp = ffi_new("const char *[1]")
local bitsp = ffi_new("int[1]")
local lenp = ffi_new("size_t[1]")

--- jwk.b64url_decode(s) -> the bytes, or nil when s is not strict
-- base64url (padding, other characters, non-canonical last character).
function _M.b64url_decode(s)
    local cap = #s * 3 / 4 + 3
    local buf = ffi_new("unsigned char[?]", cap)
    lenp[0] = cap
    if C.mg_ffi_b64url_decode(s, #s, buf, lenp) ~= 0 then return nil end
    return ffi_string(buf, lenp[0])
end

--- jwk.b64url_encode(s) -> unpadded base64url of s.
function _M.b64url_encode(s)
    local buf = ffi_new("char[?]", (#s + 2) / 3 * 4 + 4)
    local n = C.mg_ffi_b64url_encode(s, #s, buf)
    return ffi_string(buf, n)
end

local function alg_list(mask)
    local t = {}
    for id = 1, 15 do
        if bit.band(mask, bit.lshift(1, id)) ~= 0 then
            t[#t + 1] = ALG_NAME[id]
        end
    end
    return t
end
_M.alg_list = alg_list

-- Wraps a C key: Lua owns it from here (ffi.gc frees it with the table).
local function wrap(handle, source, kid)
    local ty = ffi_string(C.mg_ffi_crypto_key_type(handle, bitsp))
    local key = {
        handle = ffi_gc(handle, C.mg_ffi_crypto_key_free),
        kid = kid, type = ty, bits = bitsp[0], source = source,
    }
    key.mask = C.mg_ffi_crypto_key_algs(handle)
    key.algs = {}
    for _, name in ipairs(alg_list(key.mask)) do
        key.algs[ALG_ID[name]] = true
    end
    return key
end

local function made(handle, source, kid)
    if handle == nil then return nil, ffi_string(errp[0]) end
    return wrap(handle, source, kid)
end

--- jwk.restrict(key, names) -> key, or nil and an error when none of the
-- algorithm names is one the key may verify. Narrows the key in C.
function _M.restrict(key, names)
    local mask = 0
    for _, name in ipairs(names) do
        local id = ALG_ID[name]
        if not id then
            return nil, fmt("unknown algorithm %q", tostring(name))
        end
        mask = bit.bor(mask, bit.lshift(1, id))
    end
    local left = C.mg_ffi_crypto_key_restrict(key.handle, mask)
    if left == 0 then
        return nil, fmt("a %s key cannot verify %s (it can: %s)", key.type,
                        concat(names, ", "), concat(alg_list(key.mask), ", "))
    end
    key.mask = left
    key.algs = {}
    for _, name in ipairs(alg_list(left)) do key.algs[ALG_ID[name]] = true end
    return key
end

--- jwk.secret(bytes [, kid]) -> an HMAC key (HS256; HS384 from 48 bytes,
-- HS512 from 64), or nil, err.
function _M.secret(s, kid)
    if type(s) ~= "string" then
        return nil, "secret must be a string, got " .. type(s)
    end
    return made(C.mg_ffi_crypto_key_secret(s, #s, errp), "secret", kid)
end

--- jwk.pem(text [, kid]) -> a key from a PEM public key ("PUBLIC KEY",
-- "RSA PUBLIC KEY") or certificate, or nil, err.
function _M.pem(text, kid)
    if type(text) ~= "string" then
        return nil, "pem must be a string, got " .. type(text)
    end
    return made(C.mg_ffi_crypto_key_pem(text, #text, errp), "pem", kid)
end

local PRIVATE = {
    RSA = { "d", "p", "q", "dp", "dq", "qi", "oth" },
    EC = { "d" }, OKP = { "d" },
}

local function member(t, name, what)
    local v = t[name]
    if type(v) ~= "string" or v == "" then
        return nil, fmt("%s key without %q", what, name)
    end
    local bytes = _M.b64url_decode(v)
    if not bytes then
        return nil, fmt("%s key member %q is not base64url", what, name)
    end
    return bytes
end

--- jwk.from_jwk(t) -> a key from a JWK (a table, or its JSON text), or nil,
-- err. Only public keys and "oct" secrets; "use" must be "sig" and
-- "key_ops" include "verify" when present; "alg" narrows the key.
function _M.from_jwk(t)
    if type(t) == "string" then
        local v = cjson.decode(t)
        if type(v) ~= "table" then return nil, "jwk is not a JSON object" end
        t = v
    end
    if type(t) ~= "table" then
        return nil, "jwk must be a table, got " .. type(t)
    end
    local kty, kid = t.kty, t.kid
    if kid ~= nil and type(kid) ~= "string" then
        return nil, "jwk kid must be a string"
    end
    if t.use ~= nil and t.use ~= "sig" then
        return nil, fmt("jwk use is %q, not \"sig\"", tostring(t.use))
    end
    if t.key_ops ~= nil then
        local ok = false
        if type(t.key_ops) == "table" then
            for _, op in ipairs(t.key_ops) do
                if op == "verify" then ok = true end
            end
        end
        if not ok then return nil, "jwk key_ops does not include \"verify\"" end
    end
    for _, m in ipairs(PRIVATE[kty] or {}) do
        if t[m] ~= nil then
            return nil, fmt("jwk holds a private key (member %q): give " ..
                            "only its public part", m)
        end
    end
    local key, err
    if kty == "oct" then
        local k
        k, err = member(t, "k", "oct")
        if k then key, err = _M.secret(k, kid) end
        if key then key.source = "jwk" end
    elseif kty == "RSA" then
        local n, e
        n, err = member(t, "n", "RSA")
        if n then e, err = member(t, "e", "RSA") end
        if e then
            key, err = made(C.mg_ffi_crypto_key_rsa(n, #n, e, #e, errp),
                            "jwk", kid)
        end
    elseif kty == "EC" then
        local x, y
        if type(t.crv) ~= "string" then return nil, "EC key without \"crv\"" end
        x, err = member(t, "x", "EC")
        if x then y, err = member(t, "y", "EC") end
        if y then
            key, err = made(C.mg_ffi_crypto_key_ec(t.crv, x, #x, y, #y, errp),
                            "jwk", kid)
        end
    elseif kty == "OKP" then
        local x
        if type(t.crv) ~= "string" then
            return nil, "OKP key without \"crv\""
        end
        x, err = member(t, "x", "OKP")
        if x then
            key, err = made(C.mg_ffi_crypto_key_okp(t.crv, x, #x, errp),
                            "jwk", kid)
        end
    elseif kty == nil then
        return nil, "jwk without \"kty\""
    else
        return nil, fmt("unsupported jwk kty %q (oct, RSA, EC and OKP are)",
                        tostring(kty))
    end
    if not key then return nil, err end
    if t.alg ~= nil then
        if type(t.alg) ~= "string" or not ALG_ID[t.alg] then
            return nil, fmt("jwk alg %q is not a JWS signature algorithm",
                            tostring(t.alg))
        end
        key, err = _M.restrict(key, { t.alg })
        if not key then return nil, "jwk alg: " .. err end
    end
    return key
end

--- jwk.from_jwks(set [, lenient]) -> list of keys, or nil, err. SET is a
-- JWK set ({ keys = { ... } }) or its JSON text. Strict (config files):
-- the first bad key is an error. Lenient (a JWKS fetched from a URL): bad
-- or unsupported keys are skipped and their reasons returned as a second
-- value; an empty result is still an error.
function _M.from_jwks(set, lenient)
    if type(set) == "string" then
        local v = cjson.decode(set)
        if type(v) ~= "table" then return nil, "JWKS is not a JSON object" end
        set = v
    end
    if type(set) ~= "table" or type(set.keys) ~= "table" then
        return nil, "JWKS must be an object with a \"keys\" list"
    end
    local keys, skipped, kids = {}, {}, {}
    for i, t in ipairs(set.keys) do
        local key, err = _M.from_jwk(t)
        if key and key.kid and kids[key.kid] then
            key, err = nil, fmt("duplicate kid %q", key.kid)
        end
        if key then
            if key.kid then kids[key.kid] = true end
            keys[#keys + 1] = key
        elseif lenient then
            skipped[#skipped + 1] = fmt("key %d%s: %s", i,
                type(t) == "table" and type(t.kid) == "string" and
                    fmt(" (kid %q)", t.kid) or "", err)
        else
            return nil, fmt("JWKS key %d: %s", i, err)
        end
    end
    if #keys == 0 then
        if #skipped > 0 then
            return nil, "JWKS has no usable key: " .. concat(skipped, "; ")
        end
        return nil, "JWKS has no keys"
    end
    return keys, skipped
end

--- jwk.describe(key) -> "RSA 2048 (kid \"x\"; RS256, ...)" for messages.
function _M.describe(key)
    local algs = alg_list(key.mask)
    sort(algs)
    return fmt("%s %d%s (%s)", key.type, key.bits,
               key.kid and fmt(" kid %q", key.kid) or "", concat(algs, ", "))
end

return _M
