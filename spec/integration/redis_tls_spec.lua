-- Redis over TLS (rediss://), as managed Redis services want it: a real
-- redis-server listening with TLS only (--port 0 --tls-port), requiring a
-- client certificate (--tls-auth-clients yes) and an ACL user (the default
-- user off), with certificates from a CA made in the spec; two gateway
-- processes of two workers each share rate limits and the response cache
-- through it.
local h = require "spec.support.helpers"
local pki = require "spec.support.pki"
local redis = require "spec.support.redis"
local cjson = require "cjson"

local fmt = string.format

local CONFIG = [[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.settings { access_log = "off", admin = { port = {{ADMIN}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
local URL = "rediss://limiter:s3cret%40x@127.0.0.1:{{R}}/0"
local TLS = { ca = "{{CA}}", cert = "{{CERT}}", key = "{{KEY}}" }
local key = limit.key.header("X-Key")
local function served() return 200, "ok", { ["X-Served"] = "{{NAME}}." .. gw.worker_id() } end
gw.route { path = "/limited", handler = served, policies = {
    limit.policy { rate = 40, per = 60, key = key, on_redis_error = "deny",
                   redis = { url = URL, tls = TLS, timeout = 1 } } } }
gw.route { path = "/load", handler = served, policies = {
    limit.policy { rate = 1000000, per = 60, key = key, on_redis_error = "deny",
                   redis = { url = URL, tls = TLS, timeout = 1, connect_timeout = 2 } } } }
gw.route { path = "/cached/**", upstream = "up",
           cache = { ttl = 30, redis = { url = URL, tls = TLS, timeout = 1 } } }
-- the same server and user, but TLS that must fail
gw.route { path = "/stranger", handler = served, policies = {
    limit.policy { rate = 5, per = 60, key = key, on_redis_error = "deny",
                   redis = { url = URL, tls = { ca = "{{OTHER_CA}}", cert = "{{CERT}}",
                                                key = "{{KEY}}" } } } } }
gw.route { path = "/nocert", handler = served, policies = {
    limit.policy { rate = 5, per = 60, key = key, on_redis_error = "allow",
                   redis = { url = URL, tls = { ca = "{{CA}}" } } } } }
gw.route { path = "/stranger-cache/**", upstream = "up",
           cache = { ttl = 30, redis = { url = URL, tls = { ca = "{{OTHER_CA}}",
                                         cert = "{{CERT}}", key = "{{KEY}}" } } } }
]]

describe("Redis over TLS", function()
    local ca, other, crt, srv_key, cli_crt, cli_key
    local rd, up, gw1, gw2, admin1

    local function get(gw, path, k)
        return h.http(gw.port, { path = path, headers = { ["X-Key"] = k } })
    end

    local function log_has(gw, text, seconds)
        local found = false
        pcall(h.eventually, seconds or 10, function()
            found = gw:log():find(text, 1, true) ~= nil
            return found
        end, text)
        return found
    end

    local function handshakes(result)
        local res = h.admin(admin1, { path = "/metrics" })
        local n = res.body:match(fmt('moongate_upstream_tls_handshakes_total{upstream="redis ' ..
                                     '127.0.0.1:%d",result="%s"} (%%d+)', rd.port, result))
        return tonumber(n) or 0
    end

    setup(function()
        ca = pki.ca("redis")
        other = pki.ca("other")
        crt, srv_key = ca:issue("redis", { "localhost", "127.0.0.1" })
        cli_crt, cli_key = ca:issue("gateway", { "gateway" }, { client = true })
        rd = redis.start {
            tls = { cert = crt, key = srv_key, ca = ca.crt, auth_clients = "yes",
                    client_cert = cli_crt, client_key = cli_key },
            acl = "user limiter on >s3cret@x ~* &* +@all\nuser default off\n",
            user = "limiter", pass = "s3cret@x",
        }
        -- TLS only, a client certificate and the ACL user required
        assert.truthy(h.sh(fmt("redis-cli -p %d PING 2>&1", rd.port)):find("PONG", 1, true)
                      == nil)
        assert.truthy(h.sh(fmt("redis-cli -p %d --tls --cacert %s --user limiter --pass " ..
                               "s3cret@x --no-auth-warning PING 2>&1", rd.port,
                               h.shq(ca.crt))):find("PONG", 1, true) == nil)
        assert.equal("PONG", rd:cli("PING"))
        up = h.start_upstream { name = "up" }
        local function vars(name)
            return { UP = up.addr, R = rd.port, CA = ca.crt, CERT = cli_crt, KEY = cli_key,
                     OTHER_CA = other.crt, NAME = name, ADMIN = h.free_port() }
        end
        local v1 = vars("a")
        admin1 = v1.ADMIN
        gw1 = h.start_gateway(CONFIG, { vars = v1, workers = 2 })
        gw2 = h.start_gateway(CONFIG, { vars = vars("b"), workers = 2 })
    end)

    teardown(h.cleanup)

    it("limits exactly across two gateways of two workers each", function()
        local k = "exact-" .. h.now()
        local r = h.load_start { ports = { gw1.port, gw2.port }, paths = { "/limited" },
                                 headers = { "X-Key: " .. k }, rate = 150, duration = 1.2,
                                 conns = 8, count_header = "X-Served" }()
        print(fmt("\n  rediss limit 40: %d sent, statuses %s, served by %s", r.sent,
                  cjson.encode(r.status), cjson.encode(r.header)))
        assert.equal(0, r.errors)
        assert.equal(40, r.status["200"])
        assert.equal(r.sent - 40, r.status["429"])
        -- the count lives in Redis, reached over TLS as the ACL user
        local keys = rd:cli("--scan", "--pattern", "*" .. k .. "*")
        assert.truthy(keys:find(k, 1, true), keys)
        -- both gateways admitted some (X-Served: gateway.worker)
        local servers = {}
        for served in pairs(r.header) do servers[served:sub(1, 1)] = true end
        assert.truthy(servers.a and servers.b, cjson.encode(r.header))
    end)

    it("keeps the response cache for both gateways", function()
        local before = up:stats().requests
        local a = get(gw1, "/cached/one")
        assert.equal("moongate; fwd=uri-miss; stored", a.headers["cache-status"])
        h.eventually(5, function()
            return rd:cli("--scan", "--pattern", "mgcache:*/cached/one*"):find("mgcache:", 1,
                                                                                true) ~= nil
        end, "the answer never reached Redis")
        local b = get(gw2, "/cached/one")
        assert.truthy(b.headers["cache-status"]:find("^moongate; hit"), b.headers["cache-status"])
        assert.equal(a.body, b.body)
        assert.equal(1, up:stats().requests - before)
    end)

    it("refuses a server whose CA it does not trust, with the reason in the log", function()
        -- on_redis_error = "deny": as when Redis is down
        assert.equal(429, get(gw1, "/stranger", "s").status)
        -- (OpenSSL's words: the server sends its CA too, which is not ours)
        assert.truthy(log_has(gw1, fmt("redis 127.0.0.1:%d unavailable (TLS certificate verify " ..
                                       "failed: self-signed certificate in certificate chain " ..
                                       "(127.0.0.1:%d))", rd.port, rd.port)), gw1:log())
        local m = h.admin(admin1, { path = "/metrics" }).body
        assert.truthy(m:find(fmt('moongate_upstream_tls_failures_total{upstream="redis ' ..
                                 '127.0.0.1:%d",reason="unknown_ca"} ', rd.port), 1, true), m)
        assert.equal(429, get(gw1, "/stranger", "s").status)
        -- the cache: a miss, answered by the upstream each time
        local before = up:stats().requests
        assert.equal(200, get(gw1, "/stranger-cache/x").status)
        assert.equal(200, get(gw1, "/stranger-cache/x").status)
        assert.equal(2, up:stats().requests - before)
        -- the password is never logged
        assert.is_nil(gw1:log():find("s3cret", 1, true))
    end)

    it("without a client certificate the server refuses it; the limit fails open", function()
        assert.equal(200, get(gw2, "/nocert", "n").status)
        assert.truthy(log_has(gw2, fmt("redis 127.0.0.1:%d unavailable (", rd.port)))
        -- the server's alert, or the reset that lost it (when AUTH, written
        -- behind the handshake, reached the server first)
        local log = gw2:log()
        assert.truthy(log:find("alert certificate required", 1, true) or
                      log:find("right after the TLS handshake (does the server want a " ..
                               "client certificate? tls.cert and tls.key)", 1, true), log)
    end)

    it("new connections to the same server resume the TLS session", function()
        assert.equal(200, get(gw1, "/limited", "resume-1").status)
        local resumed = handshakes("resumed")
        -- the server drops every client: each worker connects again
        assert.truthy(rd:cli("CLIENT", "KILL", "TYPE", "normal"):match("^%d+$"))
        h.eventually(10, function()
            get(gw1, "/limited", "resume-2")
            return handshakes("resumed") > resumed
        end, "no resumed handshake after the reconnection")
    end)

    it("reconnects when Redis restarts under load", function()
        local k = "restart-" .. h.now()
        local done = h.load_start { ports = { gw1.port, gw2.port }, paths = { "/load" },
                                    headers = { "X-Key: " .. k }, rate = 200, duration = 6,
                                    conns = 8, timeline = true }
        -- the load runs (load.py may take a while to start on a busy box)
        h.eventually(10, function()
            return rd:cli("--scan", "--pattern", "*" .. k .. "*"):find(k, 1, true) ~= nil
        end, "the load did not start")
        h.sleep(0.5)
        local killed = h.now()
        rd:kill()
        h.sleep(1)
        local restarted = h.now()
        rd = rd:restart()
        local r = done()
        local before = h.load_window(r, 0, killed, -0.5, -0.1)
        local after = h.load_window(r, 0, restarted, 2, 3)
        local report = fmt("statuses %s; 0.5 s before the kill %s, 2-3 s after the restart %s",
                           cjson.encode(r.status), cjson.encode(before), cjson.encode(after))
        print("\n  redis restarted: " .. report)
        assert.equal(0, r.errors)
        assert.is_nil(before["429"], report)
        assert.truthy((before["200"] or 0) > 40, report)
        assert.truthy((r.status["429"] or 0) > 0, "the outage was not seen")
        assert.is_nil(after["429"], report .. "\n" .. gw1:log_tail(10) .. gw2:log_tail(10))
        assert.truthy((after["200"] or 0) > 100, report)
        -- counted in the new server
        assert.truthy(rd:cli("--scan", "--pattern", "*" .. k .. "*"):find(k, 1, true))
        assert.truthy(log_has(gw1, fmt("redis 127.0.0.1:%d answers again", rd.port)))
    end)
end)

describe("moongate check and Redis TLS options", function()
    teardown(h.cleanup)

    -- moongate check on a config whose routes (line 4 on) are `routes`
    local function check(routes)
        return h.check_config([[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.listen { port = 8080 }
]] .. routes)
    end

    it("warns about tls.verify = false", function()
        local code, out = check([[
gw.route { path = "/", handler = function() return 200 end, policies = {
    limit.policy { rate = 1, redis = { url = "rediss://redis.example.com:6380",
                                       tls = { verify = false } } } } }
]])
        assert.equal(0, code, out)
        assert.truthy(out:find("check.lua:5: warning: limit.policy.redis: tls.verify = false: " ..
                               "its certificates are not checked", 1, true), out)
    end)

    it("refuses a missing CA file at the user's line", function()
        local code, out = check([[
gw.route { path = "/", handler = function() return 200 end, policies = {
    limit.policy { rate = 1, redis = { url = "rediss://127.0.0.1:6380",
                                       tls = { ca = "no-such-ca.pem" } } } } }
]])
        assert.equal(1, code, out)
        assert.truthy(out:find("check.lua:5: limit.policy.redis.tls: cannot load the CA bundle",
                               1, true), out)
        assert.truthy(out:find("no-such-ca.pem", 1, true), out)
    end)

    it("refuses tls with a redis:// url, a url beside host, a broken url", function()
        local _, out = check([[
gw.route { path = "/", handler = function() return 200 end, policies = {
    limit.policy { rate = 1, redis = { url = "redis://127.0.0.1", tls = true } } } }
gw.route { path = "/b", handler = function() return 200 end, policies = {
    limit.policy { rate = 1, redis = { url = "redis://127.0.0.1", host = "x" } } } }
gw.route { path = "/c", handler = function() return 200 end, policies = {
    limit.policy { rate = 1, redis = "rediss://:top-secret@" } } }
]])
        assert.truthy(out:find("check.lua:5: limit.policy.redis.tls needs a rediss:// url", 1,
                               true), out)
        assert.truthy(out:find("check.lua:7: limit.policy.redis: give url or host, not both", 1,
                               true), out)
        assert.truthy(out:find('check.lua:9: limit.policy.redis.url must be a URL like', 1,
                               true), out)
        assert.is_nil(out:find("top-secret", 1, true), out)
    end)

    it("route.cache.redis takes a rediss:// url", function()
        local code, out = check([[
gw.upstream("up", { "127.0.0.1:9" })
gw.route { path = "/", upstream = "up",
           cache = { redis = "rediss://u:p@127.0.0.1:6380/2" } }
gw.route { path = "/x", upstream = "up",
           cache = { redis = { url = "rediss://127.0.0.1:6380", tls = { verify = false } } } }
]])
        assert.equal(0, code, out)
        assert.truthy(out:find("check.lua:7: warning: route.cache.redis: tls.verify = false", 1,
                               true), out)
    end)
end)
