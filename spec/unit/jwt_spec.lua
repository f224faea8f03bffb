-- spec/unit/jwt_spec.lua: moongate.jwt and moongate.jwk (src/crypto.c
-- through the FFI, from build/libmgtest.so): the published RFC vectors,
-- every algorithm with keys from the openssl CLI, the attack cases, the
-- claims, the options checked at load, and JWKS URLs with a fetch
-- function injected in place of the HTTP client.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path

local jwt = require "moongate.jwt"
local jwk = require "moongate.jwk"
local cjson = require "cjson"
local V = require "fixtures.jwt.vectors"
local ossl = require "fixtures.jwt.openssl"

local fmt = string.format
local seg = ossl.segment

local NOW = 1700000000
local function clock() return NOW end

local SECRET = "moongate-test-secret-0123456789abcdef"   -- 37 bytes

local function hs(claims, header, secret, alg)
    alg = alg or "HS256"
    return jwt.sign(claims, { secret = secret or SECRET, alg = alg, header = header })
end

local function verifier(opts)
    opts.clock = opts.clock or clock
    return jwt.new(opts)
end

-- verify and expect failure; returns err, code
local function refused(v, token)
    local claims, err, code = v:verify(token)
    assert.is_nil(claims, "token was accepted")
    assert.is_string(err)
    return err, code
end

teardown(function() ossl.cleanup() end)

describe("RFC test vectors", function()
    for _, vec in ipairs(V.vectors) do
        it(vec.name .. " verifies and gives the payload", function()
            local v = jwt.new { jwk = vec.key, required = {} }
            local payload, hdr = v:verify_jws(vec.token)
            assert.equal(vec.payload, payload)
            assert.equal(vec.alg, hdr.alg)
        end)

        it(vec.name .. " fails with one signature bit flipped", function()
            local v = jwt.new { jwk = vec.key, required = {} }
            local d2 = vec.token:find("%.[^.]*$")
            local sig = jwk.b64url_decode(vec.token:sub(d2 + 1))
            local bad = string.char(bit.bxor(sig:byte(1), 1)) .. sig:sub(2)
            local payload, err = v:verify_jws(vec.token:sub(1, d2) .. jwk.b64url_encode(bad))
            assert.is_nil(payload)
            assert.equal("signature mismatch", err)
        end)

        it(vec.name .. " fails with the payload changed", function()
            local v = jwt.new { jwk = vec.key, required = {} }
            local h, p, s = vec.token:match("^([^.]*)%.([^.]*)%.([^.]*)$")
            local other = seg(jwk.b64url_decode(p) .. " ")
            local payload, err = v:verify_jws(h .. "." .. other .. "." .. s)
            assert.is_nil(payload)
            assert.equal("signature mismatch", err)
        end)
    end

    it("RFC 7515 A.1 as a JWT: claims before exp, expired after", function()
        local v = jwt.new { jwk = V.keys.rfc7515_oct, clock = function() return V.JOE_EXP - 1 end }
        local claims = assert(v:verify(V.vectors[1].token))
        assert.equal("joe", claims.iss)
        assert.is_true(claims["http://example.com/is_root"])
        local late = jwt.new { jwk = V.keys.rfc7515_oct, clock = function() return V.JOE_EXP end }
        local _, err = late:verify(V.vectors[1].token)
        assert.equal("expired", err)
    end)

    it("RFC 7515 A.2 and A.3 as JWTs", function()
        for i = 2, 3 do
            local v = jwt.new { jwk = V.vectors[i].key, clock = function() return V.JOE_EXP - 60 end }
            assert.equal("joe", assert(v:verify(V.vectors[i].token)).iss)
        end
    end)

    it("RFC 7520's RSA and EC keys share a kid: refused in one JWKS", function()
        local ok, err = pcall(jwt.new, { required = {}, jwks = { keys = {
            V.keys.rfc7520_rsa, V.keys.rfc7520_p521, V.keys.rfc7520_oct } } })
        assert.is_false(ok)
        assert.matches('duplicate kid "bilbo.baggins@hobbiton.example"', err)
    end)

    it("RFC 7520 §4 vectors against a JWKS with distinct kids", function()
        local rsa = {}
        for k, x in pairs(V.keys.rfc7520_rsa) do rsa[k] = x end
        local ec = {}
        for k, x in pairs(V.keys.rfc7520_p521) do ec[k] = x end
        ec.kid = "ec"
        local v = jwt.new { required = {}, jwks = { keys = { rsa, ec, V.keys.rfc7520_oct } } }
        for i = 5, 8 do
            local payload, err = v:verify_jws(V.vectors[i].token)
            if V.vectors[i].alg == "ES512" then
                -- the token names the RSA key's kid: the EC key is not tried
                assert.is_nil(payload)
                assert.matches("not allowed for key", err)
            else
                assert.equal(V.FRODO_TEXT, payload, V.vectors[i].name .. ": " .. tostring(err))
            end
        end
    end)

    it("the openssl CLI signs the RFC 8037 A.4 signature from the A.1 private key", function()
        -- PKCS#8 for an Ed25519 private key: fixed prefix + 32 bytes
        local d = jwk.b64url_decode(V.RFC8037_D)
        local der = "\48\46\2\1\0\48\5\6\3\43\101\112\4\34\4\32" .. d
        local path = ossl.dir() .. "/rfc8037.der"
        ossl.write(path, der)
        ossl.sh(fmt("openssl pkey -inform DER -in %s -out %s.pem", path, path))
        local key = { priv = path .. ".pem", base = path }
        local vec = V.vectors[9]
        local input = vec.token:match("^[^.]*%.[^.]*")
        local sig = ossl.sign("EdDSA", key, input)
        assert.equal(vec.token, input .. "." .. jwk.b64url_encode(sig))
    end)
end)

describe("base64url", function()
    it("round-trips every length", function()
        for n = 0, 40 do
            local s = ""
            for i = 1, n do s = s .. string.char((i * 37 + n) % 256) end
            assert.equal(s, jwk.b64url_decode(jwk.b64url_encode(s)))
        end
    end)

    it("uses - and _ and no padding", function()
        assert.equal("-_8", jwk.b64url_encode("\251\255"))
        assert.equal("QQ", jwk.b64url_encode("A"))
    end)

    it("refuses padding, other alphabets, white space and 4n+1 lengths", function()
        for _, s in ipairs { "QQ==", "QQ=", "+/8", "ab/c", "QUJD\n", " QUJD", "QUJDR",
                             "QU!D", "QUJ\0" } do
            assert.is_nil(jwk.b64url_decode(s), s)
        end
    end)

    it("refuses non-canonical trailing bits", function()
        assert.equal("A", jwk.b64url_decode("QQ"))
        assert.is_nil(jwk.b64url_decode("QR"))
        assert.equal("AB", jwk.b64url_decode("QUI"))
        assert.is_nil(jwk.b64url_decode("QUJ"))
    end)
end)

describe("algorithms (keys and signatures from the openssl CLI)", function()
    local cases = {
        { "RS256", "rsa2048" }, { "RS384", "rsa2048" }, { "RS512", "rsa3072" },
        { "PS256", "rsa2048" }, { "PS384", "rsa2048" }, { "PS512", "rsa2048" },
        { "ES256", "p256" }, { "ES384", "p384" }, { "ES512", "p521" },
        { "EdDSA", "ed25519" }, { "EdDSA", "ed448" },
    }
    local keys = {}
    local function key(kind)
        keys[kind] = keys[kind] or ossl.genkey(kind)
        return keys[kind]
    end

    for _, c in ipairs(cases) do
        local alg, kind = c[1], c[2]
        it(alg .. " with a " .. kind .. " PEM key", function()
            local k = key(kind)
            local v = verifier { pem = k.pem }
            local tok = ossl.token(alg, k, { alg = alg, typ = "JWT" },
                                   { sub = "u1", exp = NOW + 60 })
            local claims, err = v:verify(tok)
            assert.is_table(claims, err)
            assert.equal("u1", claims.sub)
        end)
    end

    for _, alg in ipairs { "HS256", "HS384", "HS512" } do
        it(alg .. " agrees with openssl's HMAC", function()
            local secret = string.rep("k", 64)
            local tok = ossl.token(alg, secret, { alg = alg }, { sub = "u1", exp = NOW + 60 })
            local claims, err = verifier({ secret = secret }):verify(tok)
            assert.is_table(claims, err)
            local mine = jwt.sign({ sub = "u1" }, { secret = secret, alg = alg })
            local input = mine:match("^[^.]*%.[^.]*")
            assert.equal(jwk.b64url_encode(ossl.hmac(alg, secret, input)),
                         mine:match("[^.]*$"))
        end)
    end

    it("HMAC with a secret longer than the hash block", function()
        local secret = string.rep("s", 200)
        for _, alg in ipairs { "HS256", "HS384", "HS512" } do
            local tok = ossl.token(alg, secret, { alg = alg }, { exp = NOW + 1 })
            assert.is_table(verifier({ secret = secret }):verify(tok), alg)
        end
    end)

    it("a certificate PEM gives its public key", function()
        local k = key("p256")
        local v = verifier { pem = ossl.cert(k) }
        local tok = ossl.token("ES256", k, nil, { exp = NOW + 1 })
        assert.is_table(v:verify(tok))
    end)

    it("a PKCS#1 RSA PUBLIC KEY PEM works", function()
        local k = key("rsa2048")
        local v = verifier { pem = ossl.rsa_pkcs1(k) }
        assert.is_table(v:verify(ossl.token("RS256", k, nil, { exp = NOW + 1 })))
    end)

    it("the fully specified Ed25519 name is accepted for an Ed25519 key only", function()
        local k = key("ed25519")
        local tok = ossl.token("EdDSA", k, { alg = "Ed25519" }, { exp = NOW + 1 })
        assert.is_table(verifier({ pem = k.pem }):verify(tok))
        local k448 = key("ed448")
        local tok448 = ossl.token("EdDSA", k448, { alg = "Ed25519" }, { exp = NOW + 1 })
        local err = refused(verifier({ pem = k448.pem }), tok448)
        assert.matches("not allowed", err)
    end)
end)

describe("attacks", function()
    local v
    before_each(function()
        v = verifier { secret = SECRET }
    end)

    it("alg none is refused (RFC 7515 A.5), whatever its case", function()
        local ver = jwt.new { jwk = V.keys.rfc7515_oct, clock = function() return V.JOE_EXP - 1 end }
        assert.equal("alg none refused", refused(ver, V.UNSECURED))
        for _, alg in ipairs { "none", "None", "NONE", "nOnE" } do
            local tok = seg({ alg = alg }) .. "." .. seg({ exp = NOW + 1 }) .. "."
            assert.equal("alg none refused", refused(v, tok))
            -- even with a signature present
            assert.equal("alg none refused", refused(v, tok .. "c2ln"))
        end
    end)

    it("a missing or non-string alg is refused", function()
        local tok = hs({ exp = NOW + 1 })
        local _, p, s = tok:match("^([^.]*)%.([^.]*)%.([^.]*)$")
        assert.equal("missing alg", refused(v, seg({ typ = "JWT" }) .. "." .. p .. "." .. s))
        assert.equal("alg is not a string", refused(v, seg('{"alg":256}') .. "." .. p .. "." .. s))
        assert.matches("unsupported alg", refused(v, seg({ alg = "HS257" }) .. "." .. p .. "." .. s))
    end)

    it("an empty signature is refused", function()
        local tok = hs({ exp = NOW + 1 })
        assert.equal("unsigned token (empty signature)", refused(v, tok:match("^.*%.")))
    end)

    it("HS256 signed with the RSA public key PEM as the secret is refused", function()
        local k = ossl.genkey("rsa2048")
        local rv = verifier { pem = k.pem }
        local tok = ossl.token("HS256", k.pem, { alg = "HS256" }, { exp = NOW + 1 })
        local err = refused(rv, tok)
        assert.matches("alg HS256 not allowed", err)
        -- and the same with a JWKS-style key list
        local rv2 = verifier { keys = { { pem = k.pem, kid = "r1" } } }
        local tok2 = ossl.token("HS256", k.pem, { alg = "HS256", kid = "r1" }, { exp = NOW + 1 })
        assert.matches("alg HS256 not allowed for key", refused(rv2, tok2))
    end)

    it("an RS256 token is refused by an HMAC secret", function()
        local k = ossl.genkey("rsa2048")
        local tok = ossl.token("RS256", k, nil, { exp = NOW + 1 })
        assert.matches("alg RS256 not allowed", refused(v, tok))
    end)

    it("an EC key verifies only its own curve's algorithm", function()
        local k = ossl.genkey("p256")
        local ev = verifier { pem = k.pem }
        local tok = ossl.token("ES256", k, { alg = "ES384" }, { exp = NOW + 1 })
        assert.matches("alg ES384 not allowed", refused(ev, tok))
    end)

    it("an ECDSA signature in DER form is refused", function()
        local k = ossl.genkey("p256")
        local input = seg({ alg = "ES256" }) .. "." .. seg({ exp = NOW + 1 })
        local der = ossl.sign("ES256", k, input, true)
        local tok = input .. "." .. jwk.b64url_encode(der)
        assert.equal("signature mismatch", refused(verifier({ pem = k.pem }), tok))
    end)

    it("a JWK's alg narrows its key", function()
        local k = ossl.genkey("rsa2048")
        local tok = ossl.token("PS256", k, nil, { exp = NOW + 1 })
        assert.is_table(verifier({ pem = k.pem }):verify(tok))
        local nv = verifier { pem = k.pem, algorithms = { "RS256" } }
        assert.matches("alg PS256 not allowed", refused(nv, tok))
    end)

    it("a wrong key gives signature mismatch", function()
        local tok = hs({ exp = NOW + 1 }, nil, "another-secret-another-secret-0123456")
        assert.equal("signature mismatch", refused(v, tok))
    end)

    it("the W2 smoke tokens: HS512 header over an HS256 MAC, truncated token", function()
        local tok = hs({ sub = "x", exp = NOW + 60 })
        local h512 = seg({ alg = "HS512", typ = "JWT" }) .. tok:match("%..*$")
        assert.matches("alg HS512 not allowed", refused(v, h512))
        local err = refused(v, tok:sub(1, -2))
        assert.is_truthy(err == "signature mismatch" or err:find("not base64url"))
    end)

    it("an unknown crit header is refused", function()
        local tok = hs({ exp = NOW + 1 }, { crit = { "exp" }, exp = NOW })
        assert.matches("unknown crit", refused(v, tok))
        assert.matches("unknown crit", refused(v, hs({ exp = NOW + 1 }, { crit = {} })))
        assert.matches("unknown crit", refused(v, hs({ exp = NOW + 1 }, { crit = "b64" })))
    end)

    it("malformed base64url anywhere is refused", function()
        local tok = hs({ exp = NOW + 1 })
        local h, p, s = tok:match("^([^.]*)%.([^.]*)%.([^.]*)$")
        assert.matches("not base64url", refused(v, h .. "=." .. p .. "." .. s))
        assert.matches("not base64url", refused(v, h .. "." .. p .. "." .. s .. "="))
        assert.matches("not base64url", refused(v, h .. "." .. p .. "." .. s:gsub("_", "/")
            :gsub("-", "+") .. (s:find("[-_]") and "" or "+")))
        assert.matches("not base64url", refused(v, h .. "." .. p .. "." .. s:sub(1, 10) .. "!" ..
            s:sub(12)))
        -- a payload with padding: the signature covers it, so the MAC matches
        local padded = hs(string.rep("x", 5))
        local ph, pp = padded:match("^([^.]*)%.([^.]*)")
        local input = ph .. "." .. pp .. "="
        local mac = ossl.hmac("HS256", SECRET, input)
        local err = refused(v, input .. "." .. jwk.b64url_encode(mac))
        assert.matches("payload", err)
    end)

    it("wrong numbers of segments are refused", function()
        local tok = hs({ exp = NOW + 1 })
        assert.matches("not three segments", refused(v, tok:match("^[^.]*%.[^.]*")))
        assert.matches("not three segments", refused(v, "abc"))
        assert.matches("more than three", refused(v, tok .. ".x"))
        assert.matches("more than three", refused(v, tok .. ".x.y"))
        assert.matches("more than three", refused(v, tok .. "."))
    end)

    it("an oversized token is refused before any work", function()
        local big = hs({ exp = NOW + 1, pad = string.rep("p", 9000) })
        assert.equal("token too large", refused(v, big))
        local v2 = verifier { secret = SECRET, max_token_size = 16384 }
        assert.is_table(v2:verify(big))
    end)

    it("a header or payload that is not a JSON object is refused", function()
        local tok = hs({ exp = NOW + 1 })
        local _, p, s = tok:match("^([^.]*)%.([^.]*)%.([^.]*)$")
        assert.equal("header is not a JSON object", refused(v, seg("not json") .. "." .. p .. "." .. s))
        assert.equal("header is not a JSON object", refused(v, seg('["HS256"]') .. "." .. p .. "." .. s))
        assert.equal("header is not a JSON object", refused(v, seg('{"alg":"HS256"') .. "." .. p .. "." .. s))
        assert.equal("payload is not a JSON object", refused(v, hs("[1,2]")))
        assert.equal("payload is not a JSON object", refused(v, hs("hello")))
        assert.equal("payload is not a JSON object", refused(v, hs("")))
        assert.equal("payload is not a JSON object", refused(v, hs('{"exp":NaN}')))
    end)

    it("keys named by the token (jwk, jku, x5u headers) are ignored", function()
        local k = ossl.genkey("p256")
        local tok = ossl.token("ES256", k, { alg = "ES256", jku = "http://evil/jwks",
            jwk = { kty = "EC", crv = "P-256" } }, { exp = NOW + 1 })
        assert.matches("alg ES256 not allowed", refused(v, tok))
    end)

    it("a non-token is refused", function()
        assert.equal("no token", refused(v, nil))
        assert.equal("no token", refused(v, 42))
        assert.matches("not three segments", refused(v, ""))
    end)
end)

describe("claims", function()
    it("exp: refused at and after exp, leeway tolerated", function()
        local v = verifier { secret = SECRET }
        assert.is_table(v:verify(hs({ exp = NOW + 1 })))
        assert.equal("expired", refused(v, hs({ exp = NOW })))
        assert.equal("expired", refused(v, hs({ exp = NOW - 60 })))
        local lv = verifier { secret = SECRET, leeway = 30 }
        assert.is_table(lv:verify(hs({ exp = NOW - 29 })))
        assert.equal("expired", refused(lv, hs({ exp = NOW - 30 })))
    end)

    it("exp is required by default; required = {} lifts that", function()
        assert.equal("missing claim exp", refused(verifier { secret = SECRET }, hs({ sub = "x" })))
        assert.is_table(verifier({ secret = SECRET, required = {} }):verify(hs({ sub = "x" })))
    end)

    it("exp, nbf and iat must be numbers", function()
        local v = verifier { secret = SECRET }
        assert.equal("exp is not a number", refused(v, hs({ exp = "2030" })))
        assert.equal("exp is not a number", refused(v, hs('{"exp":null}')))
        assert.equal("nbf is not a number", refused(v, hs({ exp = NOW + 1, nbf = true })))
        assert.equal("iat is not a number", refused(v, hs({ exp = NOW + 1, iat = {} })))
    end)

    it("nbf in the future is refused, within the leeway accepted", function()
        local v = verifier { secret = SECRET }
        assert.equal("not yet valid (nbf)", refused(v, hs({ exp = NOW + 99, nbf = NOW + 10 })))
        assert.is_table(v:verify(hs({ exp = NOW + 99, nbf = NOW })))
        local lv = verifier { secret = SECRET, leeway = 10 }
        assert.is_table(lv:verify(hs({ exp = NOW + 99, nbf = NOW + 10 })))
    end)

    it("iat in the future is refused; max_age bounds its age", function()
        local v = verifier { secret = SECRET }
        assert.equal("issued in the future (iat)", refused(v, hs({ exp = NOW + 99, iat = NOW + 5 })))
        local mv = verifier { secret = SECRET, max_age = 300 }
        assert.is_table(mv:verify(hs({ exp = NOW + 99, iat = NOW - 300 })))
        assert.equal("too old (iat + max_age)", refused(mv, hs({ exp = NOW + 99, iat = NOW - 301 })))
        assert.equal("missing claim iat", refused(mv, hs({ exp = NOW + 99 })))
    end)

    it("iss: one or a list of allowed issuers", function()
        local v = verifier { secret = SECRET, issuer = "https://idp.example" }
        assert.is_table(v:verify(hs({ exp = NOW + 1, iss = "https://idp.example" })))
        assert.matches("issuer not allowed", refused(v, hs({ exp = NOW + 1, iss = "https://evil" })))
        assert.matches("issuer not allowed", refused(v, hs({ exp = NOW + 1 })))
        assert.matches("issuer not allowed",
            refused(v, hs({ exp = NOW + 1, iss = { "https://idp.example" } })))
        local lv = verifier { secret = SECRET, issuer = { "a", "b" } }
        assert.is_table(lv:verify(hs({ exp = NOW + 1, iss = "b" })))
    end)

    it("aud: a string or a list in the token, one must be allowed", function()
        local v = verifier { secret = SECRET, audience = { "orders", "payments" } }
        assert.is_table(v:verify(hs({ exp = NOW + 1, aud = "orders" })))
        assert.is_table(v:verify(hs({ exp = NOW + 1, aud = { "x", "payments" } })))
        assert.equal("audience not allowed", refused(v, hs({ exp = NOW + 1, aud = "x" })))
        assert.equal("audience not allowed", refused(v, hs({ exp = NOW + 1, aud = { "x", "y" } })))
        assert.equal("audience not allowed", refused(v, hs({ exp = NOW + 1 })))
    end)

    it("required claims must be present and not null", function()
        local v = verifier { secret = SECRET, required = { "exp", "sub", "tenant" } }
        assert.is_table(v:verify(hs({ exp = NOW + 1, sub = "a", tenant = "t" })))
        assert.equal("missing claim tenant", refused(v, hs({ exp = NOW + 1, sub = "a" })))
        assert.equal("missing claim sub",
            refused(v, hs('{"exp":' .. (NOW + 1) .. ',"sub":null,"tenant":"t"}')))
    end)

    it("typ, when configured, must match (case-insensitive)", function()
        local v = verifier { secret = SECRET, typ = "at+jwt" }
        assert.is_table(v:verify(hs({ exp = NOW + 1 }, { typ = "AT+JWT" })))
        assert.matches("typ", refused(v, hs({ exp = NOW + 1 })))
    end)

    it("scopes: all required, from scope (string), scp or scopes (lists)", function()
        local v = verifier { secret = SECRET, scopes = { "orders:read", "orders:write" } }
        assert.is_table(v:verify(hs({ exp = NOW + 1, scope = "a orders:write orders:read" })))
        assert.is_table(v:verify(hs({ exp = NOW + 1, scp = { "orders:read", "orders:write" } })))
        assert.is_table(v:verify(hs({ exp = NOW + 1, scopes = { "orders:write", "orders:read" } })))
        local err, code = refused(v, hs({ exp = NOW + 1, scope = "orders:read" }))
        assert.equal('missing scope "orders:write"', err)
        assert.equal("insufficient_scope", code)
        -- whole words only
        assert.equal("insufficient_scope",
            select(2, refused(v, hs({ exp = NOW + 1, scope = "orders:reader orders:writes" }))))
        assert.equal("insufficient_scope", select(2, refused(v, hs({ exp = NOW + 1 }))))
    end)

    it("scope_claim picks the claim", function()
        local v = verifier { secret = SECRET, scopes = "admin", scope_claim = "perms" }
        assert.is_table(v:verify(hs({ exp = NOW + 1, perms = { "admin" } })))
        assert.equal("insufficient_scope", select(2, refused(v, hs({ exp = NOW + 1, scope = "admin" }))))
    end)

    it("roles: any one suffices, from a nested claim", function()
        local v = verifier { secret = SECRET, roles = { "admin", "ops" },
                             roles_claim = "realm_access.roles" }
        assert.is_table(v:verify(hs({ exp = NOW + 1, realm_access = { roles = { "ops" } } })))
        local err, code = refused(v, hs({ exp = NOW + 1, realm_access = { roles = { "dev" } } }))
        assert.equal("insufficient_scope", code)
        assert.matches("none of the roles", err)
        assert.equal("insufficient_scope", select(2, refused(v, hs({ exp = NOW + 1, realm_access = 1 }))))
    end)

    it("invalid tokens report invalid_token even when scopes are configured", function()
        local v = verifier { secret = SECRET, scopes = { "a" } }
        assert.equal("invalid_token", select(2, refused(v, hs({ exp = NOW - 1, scope = "a" }))))
    end)
end)

describe("tokens seen before (the signature check and payload kept)", function()
    it("each verification gives its own claims table, arrays included", function()
        local v = verifier { secret = SECRET }
        local tok = hs({ sub = "c1", exp = NOW + 60, aud = { "a", "b" }, n = 7 })
        local first = assert(v:verify(tok))
        first.sub, first.aud[1], first.extra = "changed", "changed", true
        local again = assert(v:verify(tok))
        assert.same({ sub = "c1", exp = NOW + 60, aud = { "a", "b" }, n = 7 }, again)
        assert.are_not.equal(first, again)
        assert.are_not.equal(first.aud, again.aud)
        again.aud[2] = "changed"
        assert.same({ "a", "b" }, assert(v:verify(tok)).aud)
    end)

    it("the claim checks run on every verification of a kept token", function()
        local now = NOW
        local v = verifier { secret = SECRET, issuer = "idp",
                             clock = function() return now end }
        local tok = hs({ iss = "idp", exp = NOW + 10, nbf = NOW - 5 })
        assert.is_table(v:verify(tok))
        now = NOW + 10
        assert.equal("expired", refused(v, tok))
        now = NOW - 6
        assert.equal("not yet valid (nbf)", refused(v, tok))
        now = NOW
        assert.is_table(v:verify(tok))
        local other = verifier { secret = SECRET, issuer = "someone-else" }
        assert.is_table(v:verify(tok))
        assert.matches("issuer not allowed", refused(other, tok))
    end)

    it("is per verifier: another secret still refuses a token kept by one", function()
        local v = verifier { secret = SECRET }
        local w = verifier { secret = SECRET .. "-other" }
        local tok = hs({ exp = NOW + 60 })
        assert.is_table(v:verify(tok))
        assert.equal("signature mismatch", refused(w, tok))
        assert.is_table(v:verify(tok))
    end)

    it("refuses a changed token whose header and payload were kept", function()
        local v = verifier { secret = SECRET }
        local tok = hs({ exp = NOW + 60 })
        assert.is_table(v:verify(tok))
        local last = tok:sub(-1) == "A" and "B" or "A"
        assert.equal("signature mismatch", refused(v, tok:sub(1, -2) .. last))
        assert.is_table(v:verify(tok))
    end)

    it("nested claims are checked as before, every time", function()
        local v = verifier { secret = SECRET, roles = { "admin" },
                             roles_claim = "realm.roles" }
        local tok = hs({ exp = NOW + 60, realm = { roles = { "admin" } } })
        for _ = 1, 3 do
            assert.same({ roles = { "admin" } }, assert(v:verify(tok)).realm)
        end
    end)
end)

describe("keys", function()
    it("kid selects the key; an unknown kid is refused", function()
        local s1, s2 = string.rep("1", 32), string.rep("2", 32)
        local v = verifier { keys = { { secret = s1, kid = "one" }, { secret = s2, kid = "two" } } }
        assert.is_table(v:verify(hs({ exp = NOW + 1 }, { kid = "two" }, s2)))
        assert.equal("signature mismatch", refused(v, hs({ exp = NOW + 1 }, { kid = "one" }, s2)))
        assert.equal('unknown kid "three"', refused(v, hs({ exp = NOW + 1 }, { kid = "three" }, s2)))
        -- no kid in the token: every key that may verify the alg is tried
        assert.is_table(v:verify(hs({ exp = NOW + 1 }, nil, s2)))
    end)

    it("a key without kid is tried for a token with an unknown kid", function()
        local v = verifier { secret = SECRET }
        assert.is_table(v:verify(hs({ exp = NOW + 1 }, { kid = "whatever" })))
        local kv = verifier { secret = SECRET, kid = "k1" }
        assert.equal('unknown kid "whatever"', refused(kv, hs({ exp = NOW + 1 }, { kid = "whatever" })))
        assert.is_table(kv:verify(hs({ exp = NOW + 1 }, { kid = "k1" })))
    end)

    it("an HS secret pins HS256 below 48 bytes, HS384 below 64", function()
        local v = verifier { secret = SECRET }
        local t384 = ossl.token("HS384", SECRET, { alg = "HS384" }, { exp = NOW + 1 })
        assert.matches("alg HS384 not allowed", refused(v, t384))
        local s48 = string.rep("x", 48)
        local v48 = verifier { secret = s48 }
        assert.is_table(v48:verify(hs({ exp = NOW + 1 }, nil, s48, "HS384")))
        local t512 = ossl.token("HS512", s48, { alg = "HS512" }, { exp = NOW + 1 })
        assert.matches("alg HS512 not allowed", refused(v48, t512))
    end)

    it("a JWKS file", function()
        local path = ossl.dir() .. "/jwks.json"
        ossl.write(path, cjson.encode { keys = { V.keys.rfc7520_oct, V.keys.rfc7520_rsa } })
        local v = jwt.new { jwks_file = path, required = {} }
        assert.equal(V.FRODO_TEXT, v:verify_jws(V.vectors[8].token))
        assert.equal(V.FRODO_TEXT, v:verify_jws(V.vectors[5].token))
    end)

    it("describes keys for messages", function()
        local v = jwt.new { jwk = V.keys.rfc7520_rsa }
        assert.equal('RSA 2048 kid "bilbo.baggins@hobbiton.example" (PS256, PS384, PS512, ' ..
                     'RS256, RS384, RS512)', jwk.describe(v.keys[1]))
    end)
end)

describe("options are checked when the verifier is made", function()
    local function fails(opts, pattern)
        local ok, err = pcall(jwt.new, opts)
        assert.is_false(ok, "no error for " .. pattern)
        assert.matches(pattern, err, 1, true)
        return err
    end

    it("blames the caller's line", function()
        local ok, err = pcall(jwt.new, { secrte = SECRET })
        assert.is_false(ok)
        assert.matches("jwt_spec.lua:%d+: jwt: unknown key 'secrte' in jwt.new " ..
                       "%(did you mean 'secret'%? valid: algorithms, ", err)
    end)

    it("refuses a missing or bad key", function()
        fails({}, "no key: give secret, pem")
        fails({ secret = nil, issuer = "x" }, "no key")
        fails({ secret = "short" }, "secret: too short: HS256 needs a secret of at least 32 bytes")
        fails({ secret = 42 }, "secret must be a string")
        fails({ pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n" },
              "not a PEM public key or certificate")
        fails({ pem = ossl.genkey("p256").priv_pem }, "private key")
        fails({ pem = ossl.genkey("rsa1024").pem }, "RSA key too short")
        fails({ pem = ossl.genkey("secp256k1").pem }, "unsupported EC curve")
    end)

    it("refuses bad JWKs", function()
        fails({ jwk = { kty = "RSA", n = "AQAB" } }, 'RSA key without "e"')
        fails({ jwk = { kty = "oct", k = "a+b" } }, "not base64url")
        fails({ jwk = { kty = "EC", crv = "P-256", x = "AQAB", y = "AQAB" } }, "coordinate size")
        local bad_point = { kty = "EC", crv = "P-256",
                            x = V.keys.rfc7515_p256.x, y = V.keys.rfc7515_p256.x }
        fails({ jwk = bad_point }, "not on the curve")
        fails({ jwk = { kty = "OKP", crv = "X25519", x = V.keys.rfc8037_ed25519.x } },
              "unsupported OKP curve")
        fails({ jwk = { kty = "oct", k = V.keys.rfc7515_oct.k, use = "enc" } }, 'use is "enc"')
        fails({ jwk = { kty = "oct", k = V.keys.rfc7515_oct.k, key_ops = { "sign" } } },
              "key_ops")
        fails({ jwk = { kty = "oct", k = V.keys.rfc7515_oct.k, alg = "RS256" } },
              "cannot verify RS256")
        fails({ jwk = { kty = "oct", k = V.keys.rfc7515_oct.k, alg = "A128KW" } },
              "not a JWS signature algorithm")
        local priv = {}
        for k, x in pairs(V.keys.rfc7515_p256) do priv[k] = x end
        priv.d = "jpsQnnGQmL-YBIffH1136cLNpXW6pCyStikYjKIWI5a0"
        fails({ jwk = priv }, "private key")
        fails({ jwk = { kty = "foo" } }, "unsupported jwk kty")
        fails({ jwks = { keys = {} } }, "JWKS has no keys")
        fails({ jwks = "{" }, "JWKS is not a JSON object")
        fails({ jwks_file = "/nonexistent/jwks.json" }, "jwks_file: cannot open")
    end)

    it("refuses bad values", function()
        fails({ secret = SECRET, leeway = -1 }, "leeway must be a number 0-300")
        fails({ secret = SECRET, leeway = "5" }, "leeway must be a number")
        fails({ secret = SECRET, issuer = 5 }, "issuer must be a string or a list")
        fails({ secret = SECRET, audience = { "a", 5 } }, "audience[2] must be a non-empty string")
        fails({ secret = SECRET, required = "exp" }, "required must be a list")
        fails({ secret = SECRET, algorithms = { "HS256", "XX1" } }, 'unknown algorithm "XX1"')
        fails({ secret = SECRET, algorithms = { "RS256" } }, "cannot verify RS256")
        fails({ secret = SECRET, scopes = { "a b" } }, "contains a space")
        fails({ secret = SECRET, max_token_size = 10 }, "max_token_size")
        fails({ secret = SECRET, jwks_refresh = 5 }, "jwks_refresh needs jwks_url")
        fails({ jwks_url = "ftp://x" }, "jwks_url must be an http")
        fails({ secret = SECRET, keys = { { secret = SECRET, pem = "x" } } },
              "keys[1] needs exactly one of secret, pem, jwk")
        fails({ keys = { { secret = SECRET, kid = "a" }, { secret = SECRET, kid = "a" } } },
              'two keys with kid "a"')
        fails({ secret = SECRET, optional = true }, "unknown key 'optional' in jwt.new")
    end)
end)

describe("jwt.verify (one call, options inline)", function()
    it("verifies and keeps one verifier per options value", function()
        local tok = hs({ exp = os.time() + 60, sub = "s" })
        local claims = assert(jwt.verify(tok, { secret = SECRET }))
        assert.equal("s", claims.sub)
        local _, err = jwt.verify(tok, { secret = SECRET, issuer = "x" })
        assert.matches("issuer not allowed", err)
    end)

    it("raises on bad options at the caller", function()
        local ok, err = pcall(jwt.verify, "x", { secret = "short" })
        assert.is_false(ok)
        assert.matches("too short", err)
    end)
end)

describe("jwt.policy", function()
    it("makes a route policy; the module is callable as the same", function()
        for _, p in ipairs { jwt.policy { secret = SECRET }, jwt { secret = SECRET } } do
            assert.equal("jwt", p.name)
            assert.is_function(p.on_request)
            assert.is_table(p.verifier)
        end
    end)

    it("checks its options at the caller's line", function()
        local ok, err = pcall(function() return jwt { secret = SECRET, optional = "yes" } end)
        assert.is_false(ok)
        assert.matches("jwt_spec.lua:%d+: jwt: optional must be a boolean", err)
        ok, err = pcall(function() return jwt.policy { secret = SECRET, realm = 'a"b' } end)
        assert.is_false(ok)
        assert.matches("jwt_spec.lua:%d+: jwt: realm must be", err)
        ok, err = pcall(function() return jwt.policy { secret = SECRET, scope = "x" } end)
        assert.is_false(ok)
        assert.matches("jwt_spec.lua:%d+: unknown key 'scope' in jwt.policy " ..
                       "%(did you mean 'scopes'%?", err)
    end)
end)

describe("jwt.sign", function()
    it("makes tokens that verify", function()
        local tok = jwt.sign({ sub = "a", exp = NOW + 5 }, { secret = SECRET, kid = "k" })
        local v = verifier { secret = SECRET, kid = "k" }
        assert.equal("a", v:verify(tok).sub)
    end)

    it("refuses asymmetric algorithms and short secrets", function()
        assert.has_error(function() jwt.sign({}, { secret = SECRET, alg = "RS256" }) end)
        assert.has_error(function() jwt.sign({}, { secret = "x" }) end)
        assert.has_error(function() jwt.sign({}, { secret = SECRET, alg = "HS512" }) end)
    end)
end)

describe("JWKS URL", function()
    local rsa1, rsa2, t, served, fetches

    local function jwks_of(list)
        local keys = {}
        for _, k in ipairs(list) do
            -- the public JWK of a PEM key: through openssl text output
            local out = ossl.sh(fmt("openssl pkey -pubin -in %s.pub -noout -text", k.base))
            local hex = out:match("Modulus:%s*(.-)Exponent"):gsub("[%s:]", "")
            hex = hex:gsub("^00", "")
            local n = hex:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)
            keys[#keys + 1] = { kty = "RSA", kid = k.kid, n = jwk.b64url_encode(n), e = "AQAB",
                                alg = "RS256", use = "sig" }
        end
        return cjson.encode { keys = keys }
    end

    setup(function()
        rsa1 = ossl.genkey("rsa2048")
        rsa1.kid = "key-1"
        rsa2 = ossl.genkey("rsa2048")
        rsa2.kid = "key-2"
    end)

    before_each(function()
        t = 1000
        served = { status = 200, body = jwks_of { rsa1 } }
        fetches = 0
    end)

    local function fetch(url, timeout)
        fetches = fetches + 1
        assert.equal("http://idp.test/jwks", url)
        assert.is_number(timeout)
        if served.err then return nil, served.err end
        return served
    end

    local function new(opts)
        opts.jwks_url = "http://idp.test/jwks"
        opts.fetch = fetch
        opts.clock = function() return t end
        return jwt.new(opts)
    end

    local function token(k, exp)
        return ossl.token("RS256", k, { alg = "RS256", kid = k.kid }, { exp = exp or t + 3600 })
    end

    it("fetches on first use and caches", function()
        local v = new {}
        assert.equal(0, fetches)
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(1, fetches)
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(1, fetches)
    end)

    it("refetches on an unknown kid, at most once per jwks_min_refresh", function()
        local v = new { jwks_min_refresh = 30 }
        assert.is_table(v:verify(token(rsa1)))
        -- the identity provider rotates its keys
        served = { status = 200, body = jwks_of { rsa2 } }
        local tok2 = token(rsa2)
        t = t + 10
        local _, err = v:verify(tok2)
        assert.equal('unknown kid "key-2"', err)   -- too soon after the last fetch
        assert.equal(1, fetches)
        t = t + 25
        assert.is_table(v:verify(tok2))
        assert.equal(2, fetches)
        -- the old key is gone; asking again soon does not fetch
        assert.equal('unknown kid "key-1"', select(2, v:verify(token(rsa1))))
        assert.equal(2, fetches)
    end)

    it("refreshes when older than jwks_refresh", function()
        local v = new { jwks_refresh = 60 }
        assert.is_table(v:verify(token(rsa1)))
        t = t + 59
        v:verify(token(rsa1))
        assert.equal(1, fetches)
        t = t + 2
        served = { status = 200, body = jwks_of { rsa1, rsa2 } }
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(2, fetches)
        assert.is_table(v:verify(token(rsa2)))
        assert.equal(2, fetches)
    end)

    it("forgets the tokens it verified when the keys change", function()
        local v = new { jwks_refresh = 60, jwks_min_refresh = 1 }
        local tok = token(rsa1)
        assert.is_table(v:verify(tok))
        assert.is_table(v:verify(tok))
        assert.equal(1, fetches)
        -- the identity provider drops key-1; the next refresh is due
        served = { status = 200, body = jwks_of { rsa2 } }
        t = t + 61
        assert.equal('unknown kid "key-1"', select(2, v:verify(tok)))
        assert.equal(2, fetches)
        assert.is_table(v:verify(token(rsa2)))
    end)

    it("keeps the old keys when a refresh fails", function()
        local v = new { jwks_refresh = 60, jwks_min_refresh = 1 }
        assert.is_table(v:verify(token(rsa1)))
        served = { err = "connection refused" }
        t = t + 100
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(2, fetches)
        served = { status = 500, body = "oops" }
        t = t + 100
        assert.is_table(v:verify(token(rsa1)))
        served = { status = 200, body = '{"keys":[{"kty":"RSA","n":"AQAB"}]}' }
        t = t + 100
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(4, fetches)
    end)

    it("without any key answers unavailable, retried at most every second", function()
        served = { err = "timeout" }
        local v = new {}
        local _, err, code = v:verify(token(rsa1))
        assert.equal("unavailable", code)
        assert.matches("timeout", err)
        v:verify(token(rsa1))
        assert.equal(1, fetches)
        t = t + 1
        served = { status = 200, body = jwks_of { rsa1 } }
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(2, fetches)
    end)

    it("skips unusable keys of a fetched set", function()
        served = { status = 200, body = cjson.encode { keys = {
            { kty = "RSA", kid = "enc", use = "enc", n = "AQAB", e = "AQAB" },
            { kty = "foo", kid = "x" },
            cjson.decode(jwks_of { rsa1 }).keys[1],
        } } }
        local v = new {}
        assert.is_table(v:verify(token(rsa1)))
        assert.equal(1, #v.keys)
    end)

    it("algorithms narrow the fetched keys", function()
        local v = new { algorithms = { "ES256" } }
        local claims, err, code = v:verify(token(rsa1))
        assert.is_nil(claims)
        assert.equal("unavailable", code)
        assert.matches("JWKS", err)
    end)
end)

describe("FFI declarations", function()
    it("the algorithm ids match the header's enum", function()
        local f = assert(io.open("src/mg_ffi.h"))
        local h = f:read("*a")
        f:close()
        for name, id in pairs(jwk.ALG_ID) do
            local cname = "MG_JWS_" .. name:upper()
            assert.equal(id, tonumber(h:match(cname .. " = (%d+)")), cname)
        end
        for _, e in ipairs { "EALG", "ESIG64", "EPAYLOAD64", "ESPACE", "ESHAPE", "EINTERNAL" } do
            assert.equal(jwk[e], tonumber(h:match("MG_JWS_" .. e .. " = (%-%d+)")), e)
        end
    end)
end)

describe("hot path", function()
    -- run(n) verifies n tokens: after a warm-up (traces are recorded
    -- there), less than 10 % of the profile's samples may be interpreted
    local function assert_compiled(run)
        local profile = require "jit.profile"
        run(50000)
        local states, total = {}, 0
        profile.start("i1", function(_, samples, vmstate)
            states[vmstate] = (states[vmstate] or 0) + samples
            total = total + samples
        end)
        local t0 = os.clock()
        repeat run(20000) until os.clock() - t0 > 0.3
        profile.stop()
        -- N compiled, I interpreted, C C code, G GC, J compiler
        local share = (states.I or 0) / math.max(total, 1)
        assert(total >= 20, "too few profile samples: " .. total)
        assert(share < 0.1, fmt("%.0f%% of %d samples interpreted (N %d, C %d, G %d, J %d)",
            share * 100, total, states.N or 0, states.C or 0, states.G or 0, states.J or 0))
    end

    it("an HS256 verification runs JIT-compiled, not in the interpreter", function()
        local v = jwt.new { secret = SECRET }
        local tok = jwt.sign({ sub = "c1", iat = os.time(), exp = os.time() + 3600 },
                             { secret = SECRET })
        assert_compiled(function(n)
            for _ = 1, n do
                if not v:verify(tok) then error("token refused") end
            end
        end)
    end)

    it("so does the verification of tokens not seen before", function()
        local v = jwt.new { secret = SECRET }
        local toks = {}
        for i = 1, 3000 do       -- more than a verifier keeps: mostly unseen
            toks[i] = jwt.sign({ sub = "c" .. i, iat = os.time(), exp = os.time() + 3600 },
                               { secret = SECRET })
        end
        assert_compiled(function(n)
            for i = 1, n do
                if not v:verify(toks[i % #toks + 1]) then error("token refused") end
            end
        end)
    end)
end)

describe("jwt.bearer", function()
    local function req(v)
        return { header = function(_, name)
            assert.equal("authorization", name)
            return v
        end }
    end

    it("takes the token of a Bearer Authorization header", function()
        assert.equal("abc.def.ghi", jwt.bearer(req("Bearer abc.def.ghi")))
        assert.equal("abc", jwt.bearer(req("bearer abc")))
        assert.equal("abc", jwt.bearer(req("BEARER    abc")))
        assert.equal("a", jwt.bearer(req("Bearer a")))
    end)

    it("gives nil for anything else", function()
        for _, v in ipairs { false, "", "Bearer", "Bearer ", "Bearer    ", "Basic abcdef",
                             "Bearerx abc", "Bearer\tabc", "Bearer abc def", "Bearer abc\t",
                             "Bearer abc ", "Bearex abc", "Token abcdefgh" } do
            assert.is_nil(jwt.bearer(req(v or nil)), tostring(v))
        end
    end)
end)

describe("claims decoder (flat objects in C, the rest through cjson)", function()
    local decode = jwt._decode_claims

    local function same_as_cjson(text)
        local ok, want = pcall(cjson.decode, text)
        local got = decode(text)
        if ok and type(want) == "table" and text:match("^%s*{") then
            assert.same(want, got, text)
        else
            assert.is_nil(got, text)
        end
    end

    it("decodes typical claims", function()
        assert.same({ sub = "a", exp = 1700000000, iat = 1699999999, admin = true,
                      aud = { "x", "y" }, nbf = cjson.null, n = -12, f = 1.5,
                      big = 12345678901234567890, e = 1e-3, none = {} },
                    decode('{"sub":"a","exp":1700000000,"iat":1699999999,"admin":true,' ..
                           '"aud":["x","y"],"nbf":null,"n":-12,"f":1.5,' ..
                           '"big":12345678901234567890,"e":1E-3,"none":[]}'))
        assert.same({}, decode("{}"))
        assert.same({}, decode(" \r\n\t{ } \n"))
    end)

    it("unescapes strings like cjson", function()
        for _, text in ipairs {
            [[{"a\"b":"c\\d\/e\b\f\n\r\t"}]],
            [[{"u":"\u0041\u00e9\u20ac\ud83d\ude00","z":"\u0000x"}]],
            [[{"k\u0065y":["\u00e9",1,true,false,null,"x"]}]],
            '{"raw":"\226\130\172 UTF-8 as is"}',
        } do
            same_as_cjson(text)
        end
        assert.equal("\240\159\152\128", decode([[{"s":"\ud83d\ude00"}]]).s)
    end)

    it("leaves nested values to cjson", function()
        same_as_cjson('{"realm_access":{"roles":["a","b"]},"sub":"x"}')
        same_as_cjson('{"a":[[1],[2]]}')
        same_as_cjson('{"a":[{"b":1}]}')
        local many = {}
        for i = 1, 100 do many[#many + 1] = fmt('"k%d":%d', i, i) end
        same_as_cjson("{" .. table.concat(many, ",") .. "}")
    end)

    it("refuses what is not one JSON object", function()
        for _, text in ipairs {
            "", " ", "[]", "[1]", '"x"', "1", "null", "{", "}", '{"a"}', '{"a":}',
            '{"a":1,}', '{,"a":1}', '{"a":1 "b":2}', "{'a':1}", '{a:1}', '{"a":01}',
            '{"a":1.}', '{"a":.5}', '{"a":-}', '{"a":1e}', '{"a":+1}', '{"a":NaN}',
            '{"a":Infinity}', '{"a":tru}', '{"a":nul}', '{"a":"x\ny"}', '{"a":"\\x"}',
            '{"a":"\\u12"}', '{"a":"\\ud800"}', '{"a":"\\udc00"}', '{"a":"\\ud800\\u0041"}',
            '{"a":1}x', '{"a":1}{}', '{"a":[1,]}', '{"a":[,1]}', '{"a":[1 2]}',
            '{"a":"unterminated}', '{"a":1/*c*/}', '\0{"a":1}',
        } do
            assert.is_nil(decode(text), text)
        end
    end)

    it("agrees with cjson on random flat objects", function()
        math.randomseed(42)
        local pieces = { '"s"', '""', '"a\\"b"', '"\\u00fc"', '"\\ud834\\udd1e"', "0", "-0",
                         "7", "-42", "3.25", "1e10", "-2.5E-3", "123456789012345",
                         "1234567890123456", "99999999999999999999", "true", "false",
                         "null", "[]", '["x",1]', "[true,null,-1.5]" }
        local ws = { "", " ", "\n", "\t ", "\r\n" }
        for _ = 1, 500 do
            local parts = {}
            for k = 1, math.random(0, 8) do
                local w = ws[math.random(#ws)]
                parts[#parts + 1] = fmt('%s"k%d"%s:%s%s%s', w, math.random(1, 6), w, w,
                    pieces[math.random(#pieces)], w)
            end
            same_as_cjson("{" .. table.concat(parts, ",") .. "}")
        end
    end)
end)
