-- spec/policies/bundled_spec.lua: the bundled policies (key_auth,
-- basic_auth, acl, cors, ip, headers, redirect, maintenance) on the real
-- binary, in front of a real upstream (spec/support/upstream.py), with a
-- real redis-server for key_auth's Redis keys; htpasswd hashes made by
-- Python's crypt (bcrypt) and openssl (SHA-crypt). Bad inputs: a
-- malformed Origin, a key in two places, an invalid CIDR and a broken
-- htpasswd line at load (moongate check, and a reload refused).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
local h = require "spec.support.helpers"
local redis = require "spec.support.redis"

local fmt = string.format

local function sha256(s)
    return h.sh("printf %s " .. h.shq(s) .. " | sha256sum"):match("^(%x+)")
end

local function bcrypt(pw)
    return h.sh(fmt([[python3 -W ignore -c "import crypt; print(crypt.crypt('%s', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"]],
                    pw)):match("%S+")
end

local function basic(user_pw)
    return "Basic " .. h.sh("printf %s " .. h.shq(user_pw) .. " | base64 -w0")
end

describe("bundled policies through the gateway", function()
    local gw, up, rd, dir

    setup(function()
        up = h.start_upstream { name = "up" }
        rd = redis.start()
        rd:cli("HSET", "moongate:key:" .. sha256("k-redis"), "consumer", "fromredis",
               "groups", "partners,beta")
        dir = h.tmpdir()
        h.write_file(dir .. "/users.htpasswd", "alice:" .. bcrypt("pw-alice") .. "\n" ..
                     "bob:" .. h.sh("openssl passwd -6 pw-bob"):match("%S+") .. "\n")
        gw = h.start_gateway(fmt([[
local gw = require "moongate"
local key_auth = require "moongate.key_auth"
local basic_auth = require "moongate.basic_auth"
local acl = require "moongate.acl"
local cors = require "moongate.cors"
local ip = require "moongate.ip"
local headers = require "moongate.headers"
local redirect = require "moongate.redirect"
local maintenance = require "moongate.maintenance"
gw.settings { access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
local keys = key_auth.policy { query = "apikey", redis = { port = %d },
    consumers = { { name = "shop", groups = { "partners" }, keys = { %q } } } }
gw.route { path = "/api/**", upstream = "up", policies = {
    cors.policy { origins = { "https://app.example.com", "https://*.example.org" },
                  credentials = true, max_age = 600, expose_headers = { "X-Request-Id" } },
    ip.policy { allow = { "127.0.0.0/8", "::1" }, deny = { "10.0.0.0/8" } },
    keys,
    acl.policy { allow = { "partners" } },
    headers.policy { request = { set = { ["X-Consumer"] = "${ctx.consumer.name}" },
                                 remove = { "X-Debug" } },
                     response = { set = { ["X-Seen-By"] = "moongate ${status}" } } } } }
gw.route { path = "/beta/**", upstream = "up", policies = { keys, acl.policy { allow = { "beta" } } } }
gw.route { path = "/admin/**", upstream = "up", policies = {
    basic_auth.policy { file = "%s/users.htpasswd", realm = "ops" } } }
gw.route { path = "/blocked/**", upstream = "up", policies = {
    ip.policy { deny = { "127.0.0.1" } } } }
gw.route { path = "/old/**", upstream = "up", policies = { redirect.policy { https = true, status = 308 } } }
gw.route { path = "/shop/**", upstream = "up", policies = {
    maintenance.policy { retry_after = 120, allow = { "10.0.0.0/8" } } } }
]], rd.port, sha256("k-shop"), dir), { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    local function get(path, headers, method)
        return h.http(gw.port, { method = method, path = path, headers = headers or {} })
    end

    it("key_auth: a key in the header or the query; the consumer goes upstream, the key does not", function()
        local res = get("/api/a", { ["X-Api-Key"] = "k-shop", ["X-Debug"] = "1" })
        assert.equal(200, res.status, res.body)
        local seen = h.json(res.body)
        assert.equal("shop", seen.headers["x-consumer"])
        assert.is_nil(seen.headers["x-api-key"])
        assert.is_nil(seen.headers["x-debug"])
        assert.equal("moongate 200", res.headers["x-seen-by"])
        res = get("/api/a?x=1&apikey=k-shop")
        assert.equal(200, res.status)
        assert.equal("/api/a?x=1", h.json(res.body).path)
    end)

    it("key_auth: a key stored in Redis, with its groups", function()
        local res = get("/beta/a", { ["X-Api-Key"] = "k-redis" })
        assert.equal(200, res.status, res.body)
        assert.equal(403, get("/beta/a", { ["X-Api-Key"] = "k-shop" }).status)
    end)

    it("key_auth: 401 without a key or with an unknown one; 400 for a key in two places", function()
        local res = get("/api/a")
        assert.equal(401, res.status)
        assert.equal("ApiKey", res.headers["www-authenticate"])
        assert.equal(401, get("/api/a", { ["X-Api-Key"] = "k-nope" }).status)
        res = get("/api/a?apikey=k-shop", { ["X-Api-Key"] = "k-shop" })
        assert.equal(400, res.status)
        assert.matches("the X%-Api%-Key header or the apikey query argument", h.json(res.body).hint)
        assert.equal(400, get("/api/a?apikey=k-shop&apikey=k-shop").status)
        assert.equal(400, get("/api/a", { { "X-Api-Key", "k-shop" }, { "X-Api-Key", "k-x" } }).status)
    end)

    it("cors: answers a preflight itself, before the key is asked for", function()
        local res = get("/api/a", { Origin = "https://app.example.com",
                                    ["Access-Control-Request-Method"] = "PUT",
                                    ["Access-Control-Request-Headers"] = "x-api-key" }, "OPTIONS")
        assert.equal(204, res.status)
        assert.equal("https://app.example.com", res.headers["access-control-allow-origin"])
        assert.equal("true", res.headers["access-control-allow-credentials"])
        assert.equal("600", res.headers["access-control-max-age"])
        assert.equal("x-api-key", res.headers["access-control-allow-headers"])
        assert.is_nil(res.headers["x-upstream-name"])
        res = get("/api/a", { Origin = "https://evil.example",
                              ["Access-Control-Request-Method"] = "PUT" }, "OPTIONS")
        assert.equal(403, res.status)
        assert.is_nil(res.headers["access-control-allow-origin"])
    end)

    it("cors: an allowed origin's answer has Allow-Origin and Vary: Origin; a malformed one nothing", function()
        local res = get("/api/a", { ["X-Api-Key"] = "k-shop", Origin = "https://x.y.example.org" })
        assert.equal(200, res.status)
        assert.equal("https://x.y.example.org", res.headers["access-control-allow-origin"])
        assert.equal("X-Request-Id", res.headers["access-control-expose-headers"])
        assert.equal("Origin", res.headers.vary)
        for _, o in ipairs { "https://app.example.com/path", "https://app.example.com https://a.example.org",
                             "null", "https://evil.com/.example.org", "javascript:alert(1)" } do
            res = get("/api/a", { ["X-Api-Key"] = "k-shop", Origin = o })
            assert.equal(200, res.status, o)
            assert.is_nil(res.headers["access-control-allow-origin"], o)
            assert.equal("Origin", res.headers.vary)
            res = get("/api/a", { Origin = o, ["Access-Control-Request-Method"] = "GET" }, "OPTIONS")
            assert.equal(403, res.status, o)
        end
    end)

    it("ip: a client in the deny list gets 403 and the upstream never sees it", function()
        local res = get("/blocked/a")
        assert.equal(403, res.status)
        assert.is_nil(res.headers["x-upstream-name"])
        assert.equal("forbidden", h.json(res.body).error)
    end)

    it("basic_auth: bcrypt and SHA-512 users; 401 with WWW-Authenticate otherwise", function()
        local res = get("/admin/a", { Authorization = basic("alice:pw-alice") })
        assert.equal(200, res.status)
        assert.is_nil(h.json(res.body).headers.authorization)
        assert.equal(200, get("/admin/a", { Authorization = basic("bob:pw-bob") }).status)
        for _, a in ipairs { basic("alice:pw-bob"), basic("eve:x"), "Basic %%%", "Digest x" } do
            res = get("/admin/a", { Authorization = a })
            assert.equal(401, res.status, a)
            assert.equal('Basic realm="ops", charset="UTF-8"', res.headers["www-authenticate"])
        end
        assert.equal(401, get("/admin/a").status)
    end)

    it("redirect: plain HTTP to HTTPS with the status asked", function()
        local res = get("/old/x?y=1", { Host = "shop.example:8080" })
        assert.equal(308, res.status)
        assert.equal("https://shop.example/old/x?y=1", res.headers.location)
    end)

    it("maintenance: 503 with Retry-After", function()
        local res = get("/shop/x")
        assert.equal(503, res.status)
        assert.equal("120", res.headers["retry-after"])
        assert.is_nil(res.headers["x-upstream-name"])
    end)

    it("key_auth: Redis down is 503 for keys only Redis knows; the config's keys still pass", function()
        rd:kill()
        local res = get("/api/a", { ["X-Api-Key"] = "k-never-seen" })
        assert.equal(503, res.status, res.body)
        assert.equal("1", res.headers["retry-after"])
        assert.equal(200, get("/api/a", { ["X-Api-Key"] = "k-shop" }).status)
        rd = rd:restart()
        rd:cli("HSET", "moongate:key:" .. sha256("k-redis"), "consumer", "fromredis",
               "groups", "partners,beta")
        local deadline, status = h.now() + 10 * h.SLOW, nil
        repeat
            status = get("/api/a", { ["X-Api-Key"] = "k-redis" }).status
            if status ~= 200 then h.sleep(0.1) end
        until status == 200 or h.now() > deadline
        assert.equal(200, status)
    end)

    it("basic_auth: a changed htpasswd file reloads; a broken line is refused and the old one serves", function()
        local path = dir .. "/users.htpasswd"
        local before = h.read_file(path)
        h.write_file(path, before .. "carol:" .. h.sh("openssl passwd -5 pw-carol"):match("%S+") .. "\n")
        local deadline = h.now() + 15 * h.SLOW
        local status
        repeat
            status = get("/admin/a", { Authorization = basic("carol:pw-carol") }).status
            if status ~= 200 then h.sleep(0.1) end
        until status == 200 or h.now() > deadline
        assert.equal(200, status, gw:log_tail(20))
        -- a broken line: the reload is refused with the file's line, carol stays
        h.write_file(path, before .. "carol-without-a-hash\n")
        deadline = h.now() + 15 * h.SLOW
        local log
        repeat
            h.sleep(0.1)
            log = h.read_file(gw.log_path) or ""
        until log:find("users.htpasswd:3: a line is", 1, true) or h.now() > deadline
        assert.truthy(log:find("users.htpasswd:3: a line is", 1, true), gw:log_tail(20))
        assert.equal(200, get("/admin/a", { Authorization = basic("carol:pw-carol") }).status)
        gw:assert_alive()
    end)
end)

describe("bundled policies' bad options, by moongate check", function()
    teardown(h.cleanup)

    it("an invalid CIDR is file:line with the reason", function()
        local code, out = h.check_config([[
local gw = require "moongate"
local ip = require "moongate.ip"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
gw.route { path = "/", upstream = "up", policies = {
    ip.policy { allow = { "10.0.0.0/8", "192.168.1.1/16" } } } }
]])
        assert.equal(1, code, out)
        assert.matches('check%.lua:6: ip%.policy%.allow%[2%]: "192%.168%.1%.1/16": bits set after ' ..
                       'the prefix length: did you mean 192%.168%.0%.0/16%?', out)
    end)

    it("a broken htpasswd line names the file and its line", function()
        local dir = h.tmpdir()
        h.write_file(dir .. "/h", "ok:" .. h.sh("openssl passwd -6 x"):match("%S+") ..
                     "\nmd5:$apr1$abcdefgh$ijklmnopqrstuvwxyz0123\n")
        local code, out = h.check_config(fmt([[
local gw = require "moongate"
local basic_auth = require "moongate.basic_auth"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
gw.route { path = "/", upstream = "up", policies = {
    basic_auth.policy { file = %q } } }
]], dir .. "/h"))
        assert.equal(1, code, out)
        assert.matches('check%.lua:6: basic_auth%.policy%.file: .*/h:2: user "md5": MD5 hashes are refused', out)
    end)

    it("a plain API key in the config is refused: only digests", function()
        local code, out = h.check_config([[
local gw = require "moongate"
local key_auth = require "moongate.key_auth"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
gw.route { path = "/", upstream = "up", policies = {
    key_auth.policy { consumers = { { name = "a", keys = { "my-secret-key" } } } } } }
]])
        assert.equal(1, code, out)
        assert.matches("check%.lua:6: key_auth%.policy%.consumers%[1%]%.keys%[1%] must be the SHA%-256", out)
    end)
end)

-- ip and maintenance judge req.client: behind a trusted proxy, the client
-- the proxy names (settings.trusted_proxies, X-Forwarded-For), not the
-- proxy's own address.
describe("ip behind a trusted proxy", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway([[
local gw = require "moongate"
local ip = require "moongate.ip"
gw.settings { access_log = "off", trusted_proxies = { "127.0.0.1" },
              real_ip_header = "X-Forwarded-For" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/**", upstream = "up", policies = {
    ip.policy { allow = { "127.0.0.1", "192.0.2.0/24" }, deny = { "192.0.2.66" } } } }
]], { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    it("allows and denies the real client, not the proxy", function()
        local function status(xff)
            return h.http(gw.port, { path = "/x", headers = { ["X-Forwarded-For"] = xff } }).status
        end
        assert.equal(200, status(nil))                  -- the proxy itself
        assert.equal(200, status("192.0.2.7"))
        assert.equal(403, status("192.0.2.66"))
        assert.equal(403, status("198.51.100.1"))
        assert.equal(403, status("192.0.2.7, 198.51.100.1"))  -- the nearest hop counts
    end)
end)

-- A chain of five policies (the bench's W6: cors, ip with 10,000 ranges,
-- key_auth, jwt, limit) must stay JIT-compiled: LuaJIT counts a trace's
-- tail calls against its loop unroll limit, and such a chain once aborted
-- its trace on every request ("loop unroll limit reached") and ran in the
-- interpreter. Run under jit.v, no trace through the chain may abort but
-- for the harmless reasons jit_spec also allows.
describe("a chain of five bundled policies under jit.v", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(fmt([[
local gw = require "moongate"
require("jit.v").start("{{TMP}}/jit.log")
local jwt, limit = require "moongate.jwt", require "moongate.ratelimit"
local cors, ip, key_auth = require "moongate.cors", require "moongate.ip", require "moongate.key_auth"
-- (the first requests record traces with jit.v writing its log)
gw.settings { workers = 1, access_log = "off", admin = false, timeouts = { hook = 5 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
local ranges = { "127.0.0.0/8" }
for i = 0, 9999 do ranges[#ranges + 1] = string.format("10.%%d.%%d.0/25", math.floor(i / 256), i %% 256) end
gw.route { path = "/**", upstream = "up", policies = {
    cors.policy { origins = { "https://app.example.com" }, credentials = true },
    ip.policy { allow = ranges },
    key_auth.policy { consumers = { { name = "c", keys = { %q } } } },
    jwt.policy { secret = "0123456789abcdef0123456789abcdef" },
    limit.policy { rate = 1e9, per = 1, key = limit.key.jwt_sub, headers = false } } }
]], sha256("k")), { workers = 1, vars = { UP = up } })
    end)

    teardown(h.cleanup)

    it("keeps the chain compiled (no trace aborts in it)", function()
        local jwt = require "moongate.jwt"
        local tok = jwt.sign({ sub = "u", exp = os.time() + 3600 },
                             { secret = "0123456789abcdef0123456789abcdef" })
        local c = h.connect(gw.port)
        for i = 1, 400 do
            c:send(h.request_text { path = "/x/" .. i, headers = {
                Authorization = "Bearer " .. tok, ["X-Api-Key"] = "k",
                Origin = "https://app.example.com" } })
            local res = assert(c:read_response { timeout = 5 * h.SLOW })
            assert.equal(200, res.status, res.body)
        end
        c:close()
        local log = h.read_file(gw.vars.TMP .. "/jit.log") or ""
        local bad = h.trace_aborts(log, { "runtime%.lua", "cors%.lua", "ip%.lua",
                                          "key_auth%.lua" })
        assert.same({}, bad)
    end)
end)
