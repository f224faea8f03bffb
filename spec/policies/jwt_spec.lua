-- spec/policies/jwt_spec.lua: the bundled `jwt` policy in the real binary
-- (MG_BIN, default build/moongate) against a real upstream
-- (spec/support/upstream.py) and a real JWKS endpoint
-- (spec/fixtures/jwt/jwks_server.py) whose keys rotate during the test.
--
--   luajit /usr/bin/busted spec/policies/jwt_spec.lua
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path

local h = require "spec.support.helpers"
local jwt = require "moongate.jwt"
local jwk = require "moongate.jwk"
local ossl = require "fixtures.jwt.openssl"
local cjson = require "cjson"

local fmt = string.format

local SECRET = "policy-spec-secret-0123456789abcdefghij"

local CONFIG = [[
local gw = require "moongate"
local jwt = require "moongate.jwt"
gw.settings { timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("orders", { "{{UP}}" })

-- after jwt: the claims are in req.ctx.jwt
local copy_sub = { on_request = function(req)
    local claims = req.ctx.jwt
    if claims then
        req:set_header("X-Jwt-Sub", claims.sub)
    else
        req:remove_header("X-Jwt-Sub")
    end
end }

local secret = "{{SECRET}}"
gw.route { path = "/orders/**", upstream = "orders", policies = {
    jwt.policy { secret = secret, issuer = "spec-idp", audience = "orders",
                 scopes = { "orders:read" }, realm = "orders" },
    copy_sub } }
gw.route { path = "/admin/**", upstream = "orders", policies = {
    jwt.policy { secret = secret, roles = { "admin" } }, copy_sub } }
gw.route { path = "/open/**", upstream = "orders", policies = {
    jwt.policy { secret = secret, optional = true }, copy_sub } }
gw.route { path = "/rs/**", upstream = "orders", policies = {
    jwt.policy { jwks_url = "http://127.0.0.1:{{JWKS}}/jwks", jwks_min_refresh = 0.5,
                 jwks_refresh = 3600, jwks_timeout = 2 },
    copy_sub } }
local function file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end
gw.route { path = "/pem/**", upstream = "orders", policies = {
    jwt.policy { keys = { { pem = file("{{EC_PEM}}"), kid = "ec" },
                          { pem = file("{{ED_PEM}}"), kid = "ed" } } },
    copy_sub } }
gw.route { path = "/down/**", upstream = "orders", policies = {
    jwt.policy { jwks_url = "http://{{DEAD}}/jwks", jwks_timeout = 0.5 }, copy_sub } }
-- a global hook sees the claims too, after the route's policies (on_response)
function gw.on_response(req, res)
    if req.ctx.jwt then res:set_header("X-Seen-Sub", req.ctx.jwt.sub) end
end
]]

local function hs(claims, opts)
    opts = opts or {}
    local now = os.time()
    local c = { sub = "alice", iss = "spec-idp", aud = "orders", scope = "orders:read",
                iat = now, exp = now + 300 }
    for k, v in pairs(claims or {}) do c[k] = v end
    for k, v in pairs(opts.drop or {}) do c[v] = nil end
    return jwt.sign(c, { secret = opts.secret or SECRET, alg = opts.alg, kid = opts.kid })
end

-- the public JWK of an RSA key made by ossl.genkey
local function rsa_jwk(k)
    local out = ossl.sh(fmt("openssl pkey -pubin -in %s.pub -noout -text", k.base))
    local hex = out:match("Modulus:%s*(.-)Exponent"):gsub("[%s:]", ""):gsub("^00", "")
    local n = hex:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)
    return { kty = "RSA", kid = k.kid, use = "sig", alg = "RS256",
             n = jwk.b64url_encode(n), e = "AQAB" }
end

describe("jwt policy", function()
    local gw, up, jwks, jwks_path, k1, k2, ec, ed

    local function get(path, token, headers)
        headers = headers or {}
        if token then headers.Authorization = "Bearer " .. token end
        return h.http(gw.port, { path = path, headers = headers })
    end

    local function seen(res)
        assert.equal(200, res.status, res.body)
        return h.json(res.body)
    end

    local function jwks_count()
        return tonumber(h.http(jwks.port, { path = "/__count" }).body)
    end

    local function rs_token(k, sub)
        return ossl.token("RS256", k, { alg = "RS256", kid = k.kid, typ = "JWT" },
                          { sub = sub, exp = os.time() + 300 })
    end

    setup(function()
        k1 = ossl.genkey("rsa2048")
        k1.kid = "key-1"
        k2 = ossl.genkey("rsa2048")
        k2.kid = "key-2"
        jwks_path = h.tmpfile("jwks.json", cjson.encode { keys = { rsa_jwk(k1) } })
        local port = h.free_port()
        jwks = h.spawn(fmt("exec python3 -u spec/fixtures/jwt/jwks_server.py --port %d --file %s",
                           port, h.shq(jwks_path)), "jwks")
        jwks.port = port
        local deadline = h.now() + 10
        while not jwks:log():find("ready", 1, true) and h.now() < deadline do h.sleep(0.02) end
        up = h.start_upstream { name = "orders" }
        ec = ossl.genkey("p256")
        ec.kid = "ec"
        ed = ossl.genkey("ed25519")
        ed.kid = "ed"
        gw = h.start_gateway(CONFIG, { workers = 1, vars = {
            UP = up, SECRET = SECRET, JWKS = port, DEAD = h.dead_addr(),
            EC_PEM = ec.base .. ".pub", ED_PEM = ed.base .. ".pub" } })
    end)

    teardown(function()
        h.cleanup()
        ossl.cleanup()
    end)

    it("a valid token passes and its claims reach the next policy and hooks", function()
        local res = get("/orders/1", hs())
        local body = seen(res)
        assert.equal("alice", body.headers["x-jwt-sub"])
        assert.equal("alice", res.headers["x-seen-sub"])
        assert.equal("orders", res.headers["x-upstream-name"])
    end)

    it("no token: 401 with a bare Bearer challenge (RFC 6750 §3.1)", function()
        local res = get("/orders/1")
        assert.equal(401, res.status)
        assert.equal('Bearer realm="orders"', res.headers["www-authenticate"])
        assert.same({ error = "missing_token" }, h.json(res.body))
        assert.is_nil(res.headers["x-upstream-name"])
    end)

    it("a token under another scheme is no token", function()
        local res = h.http(gw.port, { path = "/orders/1",
                                      headers = { Authorization = "Basic " .. hs() } })
        assert.equal(401, res.status)
    end)

    local function assert_invalid(res, reason)
        assert.equal(401, res.status, res.body)
        assert.equal('Bearer realm="orders", error="invalid_token"',
                     res.headers["www-authenticate"])
        assert.same({ error = "invalid_token" }, h.json(res.body))
        assert.is_nil(res.headers["x-upstream-name"])
        -- terse to the client, the reason in the log
        assert.is_nil(res.body:find(reason, 1, true))
        local rid = res.headers["x-request-id"]
        local deadline = h.now() + 2
        local pat = fmt("jwt: request %s refused (401): %s", rid, reason)
        while not gw:log():find(pat, 1, true) and h.now() < deadline do h.sleep(0.02) end
        assert.truthy(gw:log():find(pat, 1, true), "log has no line: " .. pat)
    end

    it("invalid tokens: 401 invalid_token, the reason logged", function()
        assert_invalid(get("/orders/1", hs({ exp = os.time() - 60 })), "expired")
        assert_invalid(get("/orders/1", hs(nil, { secret = SECRET .. "x" })), "signature mismatch")
        assert_invalid(get("/orders/1", hs({ iss = "evil" })), "issuer not allowed")
        assert_invalid(get("/orders/1", hs({ aud = "payments" })), "audience not allowed")
        assert_invalid(get("/orders/1", hs({ nbf = os.time() + 120 })), "not yet valid")
        local none = jwk.b64url_encode('{"alg":"none"}') .. "." ..
            jwk.b64url_encode('{"sub":"x"}') .. "."
        assert_invalid(get("/orders/1", none), "alg none refused")
        local tok = hs()
        assert_invalid(get("/orders/1", tok .. ".x"), "malformed token (more than three segments)")
        assert_invalid(get("/orders/1", tok:sub(1, -3)), "malformed signature")
    end)

    it("the RSA public key as an HMAC secret does not pass an RS route", function()
        local tok = ossl.token("HS256", k1.pem, { alg = "HS256", kid = "key-1" },
                               { sub = "mallory", exp = os.time() + 60 })
        local res = get("/rs/1", tok)
        assert.equal(401, res.status)
    end)

    it("missing scope: 403 insufficient_scope with the scope wanted", function()
        local res = get("/orders/1", hs({ scope = "orders:write" }))
        assert.equal(403, res.status)
        assert.equal('Bearer realm="orders", error="insufficient_scope", scope="orders:read"',
                     res.headers["www-authenticate"])
        assert.same({ error = "insufficient_scope" }, h.json(res.body))
    end)

    it("roles: 403 without, 200 with", function()
        assert.equal(403, get("/admin/x", hs({ roles = { "dev" } })).status)
        assert.equal("bob", seen(get("/admin/x", hs({ sub = "bob", roles = { "admin" } })))
            .headers["x-jwt-sub"])
    end)

    it("optional: no token passes without claims; a bad one is still 401", function()
        local body = seen(get("/open/x", nil, { ["X-Jwt-Sub"] = "forged" }))
        assert.is_nil(body.headers["x-jwt-sub"])
        assert.equal("carol", seen(get("/open/x", hs({ sub = "carol" }))).headers["x-jwt-sub"])
        assert.equal(401, get("/open/x", hs({ exp = os.time() - 5 })).status)
    end)

    it("claims do not leak from one request to the next on a connection", function()
        local c = h.connect(gw.port)
        local r1 = c:request { path = "/open/1",
                               headers = { Authorization = "Bearer " .. hs({ sub = "dave" }) } }
        assert.equal("dave", h.json(r1.body).headers["x-jwt-sub"])
        local r2 = c:request { path = "/open/2" }
        assert.is_nil(h.json(r2.body).headers["x-jwt-sub"])
        assert.is_nil(r2.headers["x-seen-sub"])
        c:close()
    end)

    it("PEM keys: ES256 and EdDSA, each by its kid", function()
        local t1 = ossl.token("ES256", ec, { alg = "ES256", kid = "ec" },
                              { sub = "gina", exp = os.time() + 60 })
        assert.equal("gina", seen(get("/pem/1", t1)).headers["x-jwt-sub"])
        local t2 = ossl.token("EdDSA", ed, { alg = "EdDSA", kid = "ed" },
                              { sub = "hank", exp = os.time() + 60 })
        assert.equal("hank", seen(get("/pem/1", t2)).headers["x-jwt-sub"])
        -- the Ed25519 signature under the EC key's kid
        local t3 = ossl.token("EdDSA", ed, { alg = "EdDSA", kid = "ec" },
                              { sub = "hank", exp = os.time() + 60 })
        assert.equal(401, get("/pem/1", t3).status)
    end)

    describe("JWKS URL", function()
        -- the gateway fetches with moongate.http (lua/moongate/http.lua)
        if not pcall(require, "moongate.http") then
            pending("moongate.http is missing: no JWKS URL tests")
            return
        end

        it("verifies with the fetched keys", function()
            assert.equal("erin", seen(get("/rs/1", rs_token(k1, "erin"))).headers["x-jwt-sub"])
        end)

        it("follows a key rotation: the new kid triggers a refetch", function()
            assert.equal(200, get("/rs/1", rs_token(k1, "erin")).status)
            -- the identity provider rotates: only key-2 now
            h.write_file(jwks_path, cjson.encode { keys = { rsa_jwk(k2) } })
            h.sleep(0.6 * h.SLOW)        -- past jwks_min_refresh
            local before = jwks_count()
            assert.equal("frank", seen(get("/rs/1", rs_token(k2, "frank"))).headers["x-jwt-sub"])
            assert.equal(before + 1, jwks_count())
            -- key-1 is gone: refused (one refetch at most, then min_refresh applies)
            h.sleep(0.6 * h.SLOW)
            assert.equal(401, get("/rs/1", rs_token(k1, "erin")).status)
            assert.equal(401, get("/rs/1", rs_token(k1, "erin")).status)
            assert.equal(401, get("/rs/1", rs_token(k1, "erin")).status)
            assert.is_true(jwks_count() <= before + 2)
        end)

        it("unknown kids do not hammer the identity provider", function()
            local before = jwks_count()
            local k3 = { priv = k2.priv, base = k2.base, kid = "nope" }
            for _ = 1, 20 do
                assert.equal(401, get("/rs/1", rs_token(k3, "x")).status)
            end
            assert.is_true(jwks_count() - before <= 2, "fetched " .. (jwks_count() - before))
        end)

        it("answers 503 while a JWKS URL has given no key", function()
            local res = get("/down/1", rs_token(k1, "x"))
            assert.equal(503, res.status)
            assert.same({ error = "temporarily_unavailable" }, h.json(res.body))
            assert.equal("1", res.headers["retry-after"])
        end)
    end)

    it("the gateway is still healthy", function()
        gw:assert_alive()
    end)
end)
