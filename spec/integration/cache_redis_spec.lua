-- The response cache kept in Redis (route cache.redis): two gateway
-- processes share one real redis-server and one real upstream.
local h = require "spec.support.helpers"
local redis = require "spec.support.redis"

local CONFIG = [[
local gw = require "moongate"
gw.settings { workers = 1 }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" })
gw.route { path = "/r/**", upstream = "up",
           cache = { ttl = 30, redis = { port = {{R}}, timeout = 0.3 } } }
gw.route { path = "/s/**", upstream = "up",
           cache = { ttl = 0.3, stale = 30, redis = "127.0.0.1:{{R}}" } }
]]

describe("response cache in Redis", function()
    local up, red, gw1, gw2

    local function fetched() return up:stats().requests end
    -- the gateway does not wait for its SET or DEL to Redis: poll for it
    -- (generous deadline) instead of sleeping a fixed time
    local function stored(path)
        return red:cli("--scan", "--pattern", "mgcache:*" .. path .. "*"):find("mgcache:", 1, true)
            ~= nil
    end
    local function eventually(cond, what)
        local deadline = h.now() + 5 * h.SLOW
        while not cond() do
            assert(h.now() < deadline, what)
            h.sleep(0.02)
        end
    end
    local function get(gw, path, method)
        return h.http(gw.port, { path = path, method = method })
    end

    setup(function()
        up = h.start_upstream { name = "up" }
        red = redis.start()
        local vars = { U = up.addr, R = red.port }
        gw1 = h.start_gateway(CONFIG, { vars = vars })
        gw2 = h.start_gateway(CONFIG, { vars = vars })
    end)

    teardown(h.cleanup)

    it("is shared by gateway instances", function()
        local before = fetched()
        local a = get(gw1, "/r/shared")
        assert.equal("moongate; fwd=uri-miss; stored", a.headers["cache-status"])
        eventually(function() return stored("/r/shared") end, "the answer never reached Redis")
        local b = get(gw2, "/r/shared")
        assert.truthy(b.headers["cache-status"]:find("^moongate; hit; ttl=%d+$"))
        assert.equal(a.body, b.body)
        assert.equal(a.headers["content-type"], b.headers["content-type"])
        assert.equal(1, fetched() - before)
        -- stored under "mgcache:" with a time to live
        local keys = red:cli("--scan", "--pattern", "mgcache:*")
        assert.truthy(keys:find("mgcache:", 1, true))
    end)

    it("drops the answer on a successful unsafe method, for every instance", function()
        local before = fetched()
        get(gw1, "/r/item")
        eventually(function() return stored("/r/item") end, "the answer never reached Redis")
        assert.truthy(get(gw2, "/r/item").headers["cache-status"]:find("hit", 1, true))
        assert.equal(200, get(gw2, "/r/item", "PUT").status)
        eventually(function() return not stored("/r/item") end, "the answer stayed in Redis")
        assert.equal("moongate; fwd=uri-miss; stored", get(gw1, "/r/item").headers["cache-status"])
        assert.equal(3, fetched() - before)
    end)

    it("answers from the upstream when Redis is down or stuck, and recovers", function()
        red:pause() -- stuck: each GET times out (0.3 s)
        local t0 = h.now()
        local res = get(gw1, "/r/stuck")
        assert.equal(200, res.status)
        assert.equal("moongate; fwd=uri-miss; stored", res.headers["cache-status"])
        assert.truthy(h.now() - t0 < 1.5 * h.SLOW)
        red:resume()
        red:kill()
        for _ = 1, 5 do
            assert.equal(200, get(gw1, "/r/down").status)
        end
        red = red:restart()
        local ok
        for _ = 1, 50 do -- the client reconnects in the background
            get(gw1, "/r/back")
            if get(gw2, "/r/back").headers["cache-status"]:find("hit", 1, true) then
                ok = true
                break
            end
            h.sleep(0.1)
        end
        assert.truthy(ok, "no hit once Redis was back")
    end)

    it("serves an expired answer kept in Redis when the upstream fails", function()
        local fresh = get(gw1, "/s/x")
        eventually(function() return stored("/s/x") end, "the answer never reached Redis")
        h.sleep(0.45) -- past its ttl (0.3 s): the answer kept is stale now
        up:stop()
        local ok, err = pcall(function()
            local s = get(gw2, "/s/x")
            assert.equal(200, s.status)
            assert.truthy(s.headers["cache-status"]:find("detail=stale%-if%-error"))
            assert.equal(fresh.body, s.body)
        end)
        up = h.start_upstream { name = "up", port = up.port }
        assert(ok, err)
    end)
end)

describe("response cache in Redis config", function()
    it("reports bad redis options at the route's line", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
gw.route { path = "/a", upstream = "up", cache = { redis = { port = 99999 } } }
]])
        assert.equal(1, code, out)
        assert.truthy(out:find(":4: route.cache.redis.port", 1, true), out)
    end)
end)
