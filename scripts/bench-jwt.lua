-- scripts/bench-jwt.lua: nanoseconds per JWT verification, measured in
-- this LuaJIT process against build/libmgtest.so (the same C and Lua code
-- the gateway runs, without sockets).
--
--   luajit scripts/bench-jwt.lua [iterations]       (from the repo root)
--
-- Prints one line per case: HS256 as in workload W2 (a token shaped like
-- scripts/bench/tool.py jwt's: verify + cjson payload + exp), its parts
-- (signature only, the C call alone), the policy's per-request path, the
-- one-call jwt.verify() with an options table made per call, and the
-- asymmetric algorithms with keys made by the openssl CLI. The machine's
-- own `openssl speed ecdsap256 ed25519 rsa2048` bounds the latter.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local ffi = require "ffi"
local jwt = require "moongate.jwt"
local jwk = require "moongate.jwk"

local N = tonumber(arg[1]) or 1000000
local C = jwk.C

ffi.cdef [[
typedef struct { long s, ns; } bench_timespec;
int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function clock()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.s) + tonumber(ts.ns) * 1e-9
end

local function bench(label, n, fn)
    for _ = 1, math.min(n, 10000) do fn() end   -- warm up: let the JIT trace
    local t0 = clock()
    for _ = 1, n do fn() end
    local ns = (clock() - t0) / n * 1e9
    print(string.format("%-44s %9.0f ns/verify  (%d runs)", label, ns, n))
end

local function sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    return out
end

-- HS256, the W2 token shape
local secret = os.getenv("BENCH_JWT_SECRET")
    or "moongate-bench-secret-0123456789abcdef"
local now = os.time()
local token = jwt.sign({ sub = "consumer-1", iat = now, exp = now + 3600 },
                       { secret = secret })
local v = jwt.new { secret = secret }
assert(v:verify(token), "HS256 token does not verify")
bench("HS256 verifier:verify (sig+payload+claims)", N, function()
    local claims = v:verify(token)
    if claims.sub == nil then error("no sub") end
end)
bench("HS256 verifier:verify_jws (signature only)", N, function()
    assert(v:verify_jws(token))
end)
local key = v.keys[1]
local d1 = token:find(".", 1, true)
local d2 = token:find(".", d1 + 1, true)
bench("HS256 mg_ffi_jws_verify (C only)", N, function()
    C.mg_ffi_jws_verify(key.handle, 1, token, #token, d1 - 1, d2 - 1, nil, nil)
end)
-- what the policy does per request, with a Lua stand-in for the request
local auth = "Bearer " .. token
local fake_req = { header = function() return auth end }
bench("HS256 policy path: jwt.bearer + verify", N, function()
    local claims = v:verify(jwt.bearer(fake_req))
    if claims.sub == nil then error("no sub") end
end)
-- the Lua-pattern parse of lua/moongate/runtime.lua's req:bearer(), for
-- comparison (patterns are not JIT-compiled)
local find, sub = string.find, string.sub
bench("Bearer parse with Lua patterns (req:bearer)", math.floor(N / 4),
      function()
    local s, e = find(auth, "^[Bb][Ee][Aa][Rr][Ee][Rr] +")
    local tok = sub(auth, e + 1)
    if not s or tok == "" or find(tok, "[ \t]") then error("no token") end
end)
bench("HS256 jwt.verify(token, { secret = ... })", math.floor(N / 4), function()
    assert(jwt.verify(token, { secret = secret }))
end)

-- asymmetric: keys and signatures made by the openssl CLI
local dir = sh("mktemp -d"):gsub("%s+$", "")
local COORD = { ES256 = 32, ES384 = 48, ES512 = 66 }

local function unhex(hex)
    return (hex:gsub("%x%x", function(b)
        return string.char(tonumber(b, 16))
    end))
end

-- signs SIGNING_INPUT with dir/k.pem; returns the JWS signature bytes
local function openssl_sign(alg, signing_input, dgst)
    local f = assert(io.open(dir .. "/in", "wb"))
    f:write(signing_input)
    f:close()
    if alg == "EdDSA" then
        return sh(string.format(
            "openssl pkeyutl -sign -rawin -inkey %s/k.pem -in %s/in", dir, dir))
    end
    local cmd = string.format("openssl dgst %s -sign %s/k.pem %s/in",
                              dgst, dir, dir)
    if not COORD[alg] then return sh(cmd) end
    -- ECDSA: DER ECDSA-Sig-Value -> r || s
    local sig = ""
    local der = sh(cmd .. " | openssl asn1parse -inform DER")
    for hex in der:gmatch("INTEGER%s*:(%x+)") do
        sig = sig .. unhex(string.rep("0", COORD[alg] * 2 - #hex) .. hex)
    end
    return sig
end

local function asym(label, alg, genkey, dgst, n)
    sh(string.format("cd %s && %s >/dev/null 2>&1 && " ..
                     "openssl pkey -in k.pem -pubout -out p.pem 2>/dev/null",
                     dir, genkey))
    local pem = assert(io.open(dir .. "/p.pem")):read("*a")
    local av = jwt.new { pem = pem }
    local header = '{"alg":"' .. alg .. '","typ":"JWT"}'
    local claims = string.format('{"sub":"consumer-1","exp":%d}', now + 3600)
    local input = jwk.b64url_encode(header) .. "." .. jwk.b64url_encode(claims)
    local sig = openssl_sign(alg, input, dgst)
    local signed = input .. "." .. jwk.b64url_encode(sig)
    assert(av:verify(signed), label .. ": does not verify")
    bench(label, n, function()
        assert(av:verify(signed))
    end)
end

local M = math.max(1000, math.floor(N / 100))
asym("RS256 (RSA 2048) verify", "RS256",
     "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out k.pem",
     "-sha256", M)
asym("PS256 (RSA 2048) verify", "PS256",
     "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out k.pem",
     "-sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest", M)
asym("ES256 (P-256) verify", "ES256",
     "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out k.pem",
     "-sha256", M)
asym("EdDSA (Ed25519) verify", "EdDSA",
     "openssl genpkey -algorithm ED25519 -out k.pem", "", M)
os.execute("rm -rf " .. dir)
