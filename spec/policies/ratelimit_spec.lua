-- spec/policies/ratelimit_spec.lua: limit.policy on the real binary, with
-- real upstreams and a real redis-server (spec/support/redis.lua), driven
-- by a paced load generator (spec/support/load.py).
--
-- Accuracy: 100 req/s limits offered ~1,000 req/s for 5 s must admit
-- 500 +-2% in local mode across the workers of one gateway, and 500 +-5%
-- across two gateways sharing Redis. Failure: Redis killed mid-run, then
-- restarted; Redis stopped (SIGSTOP) then continued.
local h = require "spec.support.helpers"
local redis = require "spec.support.redis"
local cjson = require "cjson"

local fmt = string.format

local load_start = h.load_start

local function load(o)
    return load_start(o)()
end

local window = h.load_window

local function within(n, ideal, pct)
    return math.abs(n - ideal) <= ideal * pct / 100
end


describe("limit.policy (local mode)", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway([[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.settings { access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/hdr/**", upstream = "up", policies = {
    limit.policy { rate = 3, per = 10, key = limit.key.header("X-Key") } } }
gw.route { path = "/gcra/**", upstream = "up", policies = {
    limit.policy { rate = 1, per = 10, algorithm = "gcra", burst = 2,
                   key = limit.key.header("X-Key") } } }
gw.route { path = "/two/**", upstream = "up", policies = {
    limit.policy { rate = 5, per = 10, key = limit.key.header("X-Key") },
    limit.policy { rate = 2, per = 10, key = limit.key.header("X-Key") } } }
gw.route { path = "/acc/**", handler = function(req)
    return 200, "ok", { ["X-Worker"] = gw.worker_id() }
end, policies = { limit.policy { rate = 100, per = 1,
                                 key = limit.key.header("X-Key") } } }
gw.route { path = "/gacc/**", handler = function(req)
    return 200, "ok", { ["X-Worker"] = gw.worker_id() }
end, policies = { limit.policy { rate = 100, per = 1, algorithm = "gcra",
                                 burst = 5, key = limit.key.header("X-Key") } } }
]], { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    local function get(path, key)
        return h.http(gw.port, { path = path, headers = { ["X-Key"] = key } })
    end

    it("admitted answers carry RateLimit-Limit, -Remaining and -Reset", function()
        for i = 1, 3 do
            local res = get("/hdr/a", "hdr-1")
            assert.equal(200, res.status)
            assert.equal("3", res.headers["ratelimit-limit"])
            assert.equal(tostring(3 - i), res.headers["ratelimit-remaining"])
            local reset = tonumber(res.headers["ratelimit-reset"])
            assert.is_true(reset >= 9 and reset <= 10, "reset " .. tostring(reset))
        end
    end)

    it("refuses with 429, Retry-After and the RateLimit headers", function()
        for _ = 1, 3 do assert.equal(200, get("/hdr/b", "hdr-2").status) end
        local res = get("/hdr/b", "hdr-2")
        assert.equal(429, res.status)
        local retry = tonumber(res.headers["retry-after"])
        -- 3 per 10 s, all at once: the window must end and 1/3 of the
        -- next fade before one more fits
        assert.is_true(retry >= 13 and retry <= 14, "retry-after " .. tostring(retry))
        assert.equal("3", res.headers["ratelimit-limit"])
        assert.equal("0", res.headers["ratelimit-remaining"])
        local body = h.json(res.body)
        assert.equal("too many requests", body.error)
        assert.equal(429, body.status)
        assert.equal(res.headers["x-request-id"], body.request_id)
    end)

    it("keeps one count per key", function()
        for _ = 1, 3 do assert.equal(200, get("/hdr/c", "hdr-3").status) end
        assert.equal(429, get("/hdr/c", "hdr-3").status)
        assert.equal(200, get("/hdr/c", "hdr-4").status)
    end)

    it("gcra admits its burst, then one per interval", function()
        local a = get("/gcra/x", "g-1")
        assert.equal(200, a.status)
        assert.equal("2", a.headers["ratelimit-limit"])
        assert.equal("1", a.headers["ratelimit-remaining"])
        assert.equal(200, get("/gcra/x", "g-1").status)
        local res = get("/gcra/x", "g-1")
        assert.equal(429, res.status)
        local retry = tonumber(res.headers["retry-after"])
        assert.is_true(retry >= 9 and retry <= 10, "retry-after " .. tostring(retry))
    end)

    it("with two limits, the headers show the most restrictive", function()
        local res = get("/two/x", "two-1")
        assert.equal(200, res.status)
        assert.equal("2", res.headers["ratelimit-limit"])
        assert.equal("1", res.headers["ratelimit-remaining"])
        assert.equal(200, get("/two/x", "two-1").status)
        assert.equal(429, get("/two/x", "two-1").status)
    end)

    it("is exact across workers: 100/s offered 1,000/s for 5 s admits 500 +-2%", function()
        local r = load { ports = { gw.port }, paths = { "/acc/1" },
                         headers = { "X-Key: acc-" .. h.now() },
                         rate = 1000, duration = 5, conns = 20,
                         count_header = "X-Worker" }
        local ok, limited = r.status["200"] or 0, r.status["429"] or 0
        print(fmt("\n  local sliding: %d admitted of %d (ideal 500, %.2f%%), " ..
                  "by worker %s, max latency %.1f ms, %.2f s",
                  ok, r.sent, (ok - 500) / 5, cjson.encode(r.header),
                  r.max_latency * 1000, r.elapsed))
        assert.equal(0, r.errors)
        assert.equal(r.sent, ok + limited)
        assert.is_true(within(ok, 500, 2), "admitted " .. ok)
        -- the admitted requests were spread over both workers
        local n = 0
        for _, c in pairs(r.header) do if c > 20 then n = n + 1 end end
        assert.equal(2, n)
    end)

    -- gcra admits burst - 1 + rate x time; a burst of 5 (40 ms of
    -- tolerance) absorbs the jitter of arrivals and of a busy machine (with
    -- burst 1 every late arrival pushes the next slot back: ~5% less)
    it("gcra (burst 5) is exact too: 504 +-2%", function()
        local r = load { ports = { gw.port }, paths = { "/gacc/1" },
                         headers = { "X-Key: gacc-" .. h.now() },
                         rate = 1000, duration = 5, conns = 20 }
        local ok = r.status["200"] or 0
        print(fmt("\n  local gcra: %d admitted of %d (ideal 504, %.2f%%)", ok, r.sent,
                  (ok - 504) / 5.04))
        assert.equal(0, r.errors)
        assert.is_true(within(ok, 504, 2), "admitted " .. ok)
    end)
end)


local CLUSTER = [[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.settings { access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
local redis = { host = "127.0.0.1", port = {{REDIS}}, timeout = 0.2 }
gw.route { path = "/hdr/**", upstream = "up", policies = {
    limit.policy { rate = 3, per = 10, key = limit.key.header("X-Key"),
                   redis = redis } } }
gw.route { path = "/acc/**", handler = function(req) return 200, "ok" end,
    policies = { limit.policy { rate = 100, per = 1, redis = redis,
                                key = limit.key.header("X-Key") } } }
gw.route { path = "/gacc/**", handler = function(req) return 200, "ok" end,
    policies = { limit.policy { rate = 100, per = 1, redis = redis,
                                algorithm = "gcra", burst = 5,
                                key = limit.key.header("X-Key") } } }
]]

describe("limit.policy (cluster mode, two gateways, one Redis)", function()
    local gw1, gw2, up, rd

    setup(function()
        rd = redis.start()
        up = h.start_upstream { name = "up" }
        gw1 = h.start_gateway(CLUSTER, { vars = { UP = up, REDIS = rd.port } })
        gw2 = h.start_gateway(CLUSTER, { vars = { UP = up, REDIS = rd.port } })
    end)

    teardown(h.cleanup)

    it("the count is shared: 3 per 10 s over both gateways", function()
        local key = { ["X-Key"] = "shared-1" }
        local a = h.http(gw1.port, { path = "/hdr/x", headers = key })
        local b = h.http(gw2.port, { path = "/hdr/x", headers = key })
        local c = h.http(gw1.port, { path = "/hdr/x", headers = key })
        local d = h.http(gw2.port, { path = "/hdr/x", headers = key })
        assert.same({ 200, 200, 200, 429 }, { a.status, b.status, c.status, d.status })
        assert.same({ "2", "1", "0" }, { a.headers["ratelimit-remaining"],
            b.headers["ratelimit-remaining"], c.headers["ratelimit-remaining"] })
        assert.is_true(tonumber(d.headers["retry-after"]) >= 13)
        -- the state lives in Redis under the limit's namespace
        assert.equal("1", rd:cli("EXISTS", "moongate:rl:s3/10:shared-1"))
    end)

    it("Redis forgetting the script (SCRIPT FLUSH) costs nothing", function()
        local key = { ["X-Key"] = "flush-1" }
        assert.equal(200, h.http(gw1.port, { path = "/hdr/x", headers = key }).status)
        assert.equal("OK", rd:cli("SCRIPT", "FLUSH"))
        local b = h.http(gw1.port, { path = "/hdr/x", headers = key })
        local c = h.http(gw2.port, { path = "/hdr/x", headers = key })
        assert.same({ 200, "1", 200, "0" }, { b.status, b.headers["ratelimit-remaining"],
                                               c.status, c.headers["ratelimit-remaining"] })
        assert.equal(429, h.http(gw2.port, { path = "/hdr/x", headers = key }).status)
    end)

    it("100/s offered 1,000/s for 5 s over both admits 500 +-5%", function()
        local r = load { ports = { gw1.port, gw2.port }, paths = { "/acc/1" },
                         headers = { "X-Key: cacc-" .. h.now() },
                         rate = 1000, duration = 5, conns = 20 }
        local ok, limited = r.status["200"] or 0, r.status["429"] or 0
        print(fmt("\n  cluster sliding: %d admitted of %d (ideal 500, %.2f%%), " ..
                  "p50 %.2f ms, max latency %.1f ms", ok, r.sent, (ok - 500) / 5,
                  r.p50 * 1000, r.max_latency * 1000))
        assert.equal(0, r.errors)
        assert.equal(r.sent, ok + limited)
        assert.is_true(within(ok, 500, 5), "admitted " .. ok)
    end)

    it("gcra (burst 5) over both admits 504 +-5%", function()
        local r = load { ports = { gw1.port, gw2.port }, paths = { "/gacc/1" },
                         headers = { "X-Key: cgacc-" .. h.now() },
                         rate = 1000, duration = 5, conns = 20 }
        local ok = r.status["200"] or 0
        print(fmt("\n  cluster gcra: %d admitted of %d (ideal 504, %.2f%%)", ok, r.sent,
                  (ok - 504) / 5.04))
        assert.equal(0, r.errors)
        assert.is_true(within(ok, 504, 5), "admitted " .. ok)
    end)
end)


describe("limit.policy when Redis fails", function()
    local gw, rd

    setup(function()
        rd = redis.start()
        gw = h.start_gateway([[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.settings { access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
local redis = { host = "127.0.0.1", port = {{REDIS}}, timeout = 0.1,
                connect_timeout = 0.2 }
local function ok() return 200, "ok" end
local key = limit.key.header("X-Key")
gw.route { path = "/open", handler = ok, policies = {
    limit.policy { rate = 100, per = 1, key = key, redis = redis,
                   on_redis_error = "allow" } } }
gw.route { path = "/closed", handler = ok, policies = {
    limit.policy { rate = 100, per = 1, key = key, redis = redis,
                   on_redis_error = "deny" } } }
gw.route { path = "/fallback", handler = ok, policies = {
    limit.policy { rate = 100, per = 1, key = key, redis = redis,
                   fallback = { rate = 20, per = 1 } } } }
]], { vars = { REDIS = rd.port } })
    end)

    teardown(h.cleanup)

    local function count(c, s) return c[s] or 0 end

    it("killed: allow/deny/fallback hold, nothing hangs, limits resume on restart",
       function()
        local done = load_start { ports = { gw.port },
            paths = { "/open", "/closed", "/fallback" },
            headers = { "X-Key: kill-" .. h.now() },
            rate = 900, duration = 6.5, conns = 24, timeline = true }
        h.sleep(2)
        local killed = h.now()
        rd:kill()
        h.sleep(2)
        local restarted = h.now()
        rd = rd:restart()
        local r = done()
        print(fmt("\n  redis killed: %d requests, statuses %s, max latency %.1f ms, " ..
                  "p99 %.1f ms", r.sent, cjson.encode(r.status), r.max_latency * 1000,
                  r.p99 * 1000))
        assert.equal(0, r.errors)
        assert.equal(r.sent, count(r.status, "200") + count(r.status, "429"))
        -- nothing waits for a dead server
        assert.is_true(r.max_latency < 0.5 * h.SLOW, "max latency " .. r.max_latency)

        -- before: limited (300/s offered per path)
        for pi = 0, 2 do
            local before = window(r, pi, r.t0, 0.5, 2)
            assert.is_true(count(before, "429") > 100, "path " .. pi)
        end
        -- while down (after 0.2 s for the requests in flight)
        local open = window(r, 0, killed, 0.2, restarted - killed)
        local closed = window(r, 1, killed, 0.2, restarted - killed)
        local fb = window(r, 2, killed, 0.2, restarted - killed)
        print(fmt("  while down: open %s, closed %s, fallback %s", cjson.encode(open),
                  cjson.encode(closed), cjson.encode(fb)))
        assert.equal(0, count(open, "429"))
        assert.is_true(count(open, "200") > 300)
        assert.equal(0, count(closed, "200"))
        assert.is_true(count(closed, "429") > 300)
        -- the local backstop: 20/s (its first window admits 20 at once,
        -- at the kill, before this window)
        local secs = restarted - killed - 0.2
        assert.is_true(count(fb, "200") >= 10 and count(fb, "200") <= 20 * secs + 25,
                       "fallback admitted " .. count(fb, "200"))
        assert.is_true(count(fb, "429") > 200)
        -- after the restart (reconnection backs off up to 1 s): limited again
        for pi = 0, 2 do
            local after = window(r, pi, restarted, 1.2, 2.6)
            print(fmt("  after restart, path %d: %s", pi, cjson.encode(after)))
            assert.is_true(count(after, "429") > 100, "path " .. pi)
            assert.is_true(count(after, "200") <= 100 * 1.4 + 100, "path " .. pi)
        end
    end)

    it("a request that dies while it waits for Redis leaves nothing behind", function()
        local function send_and_drop(n)
            local conns = {}
            for i = 1, n do
                local c = h.connect(gw.port)
                c:send("GET /open HTTP/1.1\r\nHost: x\r\nX-Key: gone-" .. i ..
                       "\r\n\r\n")
                conns[i] = c
            end
            h.sleep(0.03)
            for _, c in ipairs(conns) do c:close() end
        end
        rd:pause()
        send_and_drop(6)
        rd:resume()             -- the replies come for requests that are gone
        h.sleep(0.3)
        rd:pause()
        send_and_drop(6)
        h.sleep(0.3)            -- the timeout fires for requests that are gone
        rd:resume()
        h.sleep(1.5)            -- reconnected in the background
        local res = h.http(gw.port, { path = "/open", headers = { ["X-Key"] = "after" } })
        assert.equal(200, res.status)
        assert.equal("1", rd:cli("EXISTS", "moongate:rl:s100/1:after")) -- counted
        gw:assert_alive()
    end)

    it("stuck (SIGSTOP): requests wait at most the timeout, then fail open", function()
        local done = load_start { ports = { gw.port }, paths = { "/open" },
            headers = { "X-Key: stop-" .. h.now() },
            rate = 300, duration = 5, conns = 24, timeline = true }
        h.sleep(1)
        local stopped = h.now()
        rd:pause()
        h.sleep(1.5)
        local continued = h.now()
        rd:resume()
        local r = done()
        print(fmt("\n  redis stopped: %d requests, statuses %s, max latency %.1f ms",
                  r.sent, cjson.encode(r.status), r.max_latency * 1000))
        assert.equal(0, r.errors)
        assert.equal(r.sent, count(r.status, "200") + count(r.status, "429"))
        -- timeout 0.1 s: nothing waits much longer
        assert.is_true(r.max_latency < 0.1 + 0.25 * h.SLOW, "max latency " .. r.max_latency)
        local during = window(r, 0, stopped, 0.3, continued - stopped)
        assert.equal(0, count(during, "429"))
        -- a reconnection sees PING answered only once Redis runs again
        local after = window(r, 0, continued, 1.2, 2.5)
        assert.is_true(count(after, "429") > 0, cjson.encode(after))
    end)
end)


describe("limit.policy options", function()
    teardown(h.cleanup)

    it("are checked by moongate check, with the config line", function()
        local path = h.tmpfile("bad.lua", [[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.listen { port = 8080 }
gw.route { path = "/x", handler = function() return 200 end, policies = {
    limit.policy { rate = "100" } } }
]])
        local code, out = h.run_bin("check -c " .. h.shq(path))
        assert.equal(1, code)
        assert.matches("bad.lua:5: limit.policy.rate must be a number > 0", out, 1, true)
    end)
end)
