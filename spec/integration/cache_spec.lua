-- The response cache (route option `cache`): a real upstream counts what
-- reaches it while the specs send requests through the gateway.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { admin = { port = {{ADMIN}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" }, { read_timeout = 1 })
gw.upstream("gone", { "{{DEAD}}" }, { connect_timeout = 0.5 })

local consumer = {
    on_request = function(req)
        local who = req:header("x-consumer")
        if who then req:cache_key(who) end
        if req:header("x-no-cache") then req:skip_cache() end
    end,
    on_response = function(req, res)
        res:set_header("x-hook", req.id)
        res:set_header("x-seen-type", res:header("content-type") or "none")
        res:set_header("x-seen-status", res.status)
        if req:header("x-teapot") then res:set_status(418) end
    end,
    on_log = function(req)
        if req.path == "/c/logged" then
            gw.shared("seen"):set("cache", req.cache or "none")
        end
    end,
}
gw.shared_dict("seen", { size = "64k" })
gw.shared_dict("small", { size = "1m" })

gw.route { path = "/c/**", upstream = "up", policies = { consumer },
           cache = { ttl = 30, max_body = "64k" } }
gw.route { path = "/short/**", upstream = "up", cache = { ttl = 0.3 } }
gw.route { path = "/vary/**", upstream = "up", cache = { vary = { "Accept" } } }
gw.route { path = "/auth/**", upstream = "up", cache = { authorized = true } }
gw.route { path = "/only200/**", upstream = "up", cache = { statuses = { 200 } } }
gw.route { path = "/stale/**", upstream = "up", cache = { ttl = 0.3, stale = 30 } }
gw.route { path = "/nostale/**", upstream = "up", cache = { ttl = 0.3 } }
gw.route { path = "/own/**", upstream = "up", cache = { dict = "small" } }
gw.route { path = "/plain/**", upstream = "up" }
gw.route { path = "/herd/**", upstream = "up", cache = { ttl = 30 } }
gw.route { path = "/rv/**", upstream = "up", cache = { ttl = 0.3, stale = 30 } }
gw.route { path = "/nolock/**", upstream = "up", cache = { ttl = 30, lock = 0 } }
gw.route { path = "/upd/**", upstream = "up", cache = { ttl = 0.3, stale = 30 },
           policies = { function(req) req:set_query("delay=0.9") end } }
gw.route { path = "/log", upstream = "up" }
gw.route { path = "/seen", handler = function()
    return 200, { cache = gw.shared("seen"):get("cache") }
end }
]]

describe("response cache", function()
    local gw, up, admin

    -- requests that reached the upstream so far
    local function fetched()
        return up:stats().requests
    end

    local function get(path, headers, method)
        return h.http(gw.port, { path = path, headers = headers, method = method })
    end

    setup(function()
        up = h.start_upstream { name = "up" }
        admin = h.free_port()
        gw = h.start_gateway(CONFIG, { workers = 2,
            vars = { U = up.addr, ADMIN = admin, DEAD = h.dead_addr() } })
    end)

    teardown(h.cleanup)

    it("answers the second request from the cache, with Age and Cache-Status", function()
        local before = fetched()
        local a = get("/c/one?x=1")
        assert.equal(200, a.status)
        assert.equal("moongate; fwd=uri-miss; stored", a.headers["cache-status"])
        assert.is_nil(a.headers["age"])
        local b = get("/c/one?x=1")
        assert.equal(200, b.status)
        assert.equal(a.body, b.body) -- the same conn/conn_requests: not fetched again
        assert.truthy(b.headers["cache-status"]:find("^moongate; hit; ttl=%d+$"))
        assert.truthy(tonumber(b.headers["age"]) >= 0)
        assert.equal(tostring(#b.body), b.headers["content-length"])
        assert.equal("application/json", b.headers["content-type"])
        assert.equal("up", b.headers["x-upstream-name"])
        -- each answer has its own request id
        assert.are_not.equal(a.headers["x-request-id"], b.headers["x-request-id"])
        assert.equal(1, fetched() - before)
    end)

    it("is shared by every worker", function()
        local before = fetched()
        local first = get("/c/workers").body
        for _ = 1, 20 do
            assert.equal(first, get("/c/workers").body)
        end
        assert.equal(1, fetched() - before)
    end)

    it("keys on the query, the host and the path", function()
        local before = fetched()
        get("/c/k?a=1"); get("/c/k?a=2"); get("/c/k")
        get("/c/k", { Host = "other.example" })
        get("/c/k?a=1"); get("/c/k?a=2"); get("/c/k")
        get("/c/k", { Host = "OTHER.example" }) -- host names are case-insensitive
        assert.equal(4, fetched() - before)
    end)

    it("fetches again once the route's ttl is over", function()
        local before = fetched()
        assert.equal("moongate; fwd=uri-miss; stored", get("/short/a").headers["cache-status"])
        assert.truthy(get("/short/a").headers["cache-status"]:find("hit", 1, true))
        h.sleep(0.45)
        -- gone with its freshness (the route keeps nothing stale)
        local res = get("/short/a")
        assert.equal("moongate; fwd=uri-miss; stored", res.headers["cache-status"])
        assert.equal(2, fetched() - before)
    end)

    it("follows the upstream's max-age and s-maxage over the route's ttl", function()
        local before = fetched()
        local p = "/c/maxage?hdr=Cache-Control:max-age=1"
        get(p)
        assert.truthy(get(p).headers["cache-status"]:find("hit", 1, true))
        local s = "/c/smaxage?hdr=Cache-Control:max-age=100,%20s-maxage=1"
        get(s)
        h.sleep(1.2)
        assert.equal("moongate; fwd=uri-miss; stored", get(p).headers["cache-status"])
        assert.equal("moongate; fwd=uri-miss; stored", get(s).headers["cache-status"])
        assert.equal(4, fetched() - before)
    end)

    it("keeps nothing the upstream marks private, no-store or no-cache, nor Set-Cookie", function()
        for i, hdr in ipairs({ "Cache-Control:no-store", "Cache-Control:private,%20max-age=60",
                              "Cache-Control:no-cache", "Set-Cookie:sid=1", "Vary:*",
                              "Expires:Thu,%2001%20Jan%201970%2000:00:00%20GMT",
                              "Cache-Control:max-age=0" }) do
            local path = "/c/never" .. i .. "?hdr=" .. hdr
            local before = fetched()
            assert.equal("moongate; fwd=uri-miss", get(path).headers["cache-status"], hdr)
            assert.equal("moongate; fwd=uri-miss", get(path).headers["cache-status"], hdr)
            assert.equal(2, fetched() - before, hdr)
        end
    end)

    it("keeps answers whose Vary names only headers the route varies on", function()
        local before = fetched()
        local p = "/vary/x?hdr=Vary:Accept"
        local json = get(p, { Accept = "application/json" })
        local xml = get(p, { Accept = "application/xml" })
        assert.are_not.equal(json.body, xml.body)
        assert.equal(json.body, get(p, { Accept = "application/json" }).body)
        assert.equal(xml.body, get(p, { Accept = "application/xml" }).body)
        assert.equal(2, fetched() - before)
        -- a Vary on a header the route does not key on: not kept
        local q = "/c/vary?hdr=Vary:Accept-Language"
        get(q); get(q)
        assert.equal(4, fetched() - before)
    end)

    it("passes requests with credentials or Range by, unless the route says so", function()
        local before = fetched()
        local auth = { Authorization = "Bearer abc" }
        get("/c/auth") -- kept, but not handed to requests with credentials
        assert.equal("moongate; fwd=bypass", get("/c/auth", auth).headers["cache-status"])
        assert.equal("moongate; fwd=bypass", get("/c/auth", { Cookie = "sid=1" }).headers["cache-status"])
        assert.equal(3, fetched() - before)
        before = before + 1
        get("/c/range"); get("/c/range")
        local r = get("/c/range", { Range = "bytes=0-3" })
        assert.equal("moongate; fwd=bypass", r.headers["cache-status"])
        assert.equal(4, fetched() - before)
        -- authorized = true: kept and served to authorized requests too
        get("/auth/a", auth)
        assert.truthy(get("/auth/a", auth).headers["cache-status"]:find("hit", 1, true))
        assert.equal(5, fetched() - before)
    end)

    it("lets hooks skip the cache or add to its key", function()
        local before = fetched()
        get("/c/hooks")
        local skipped = get("/c/hooks", { ["X-No-Cache"] = "1" })
        assert.equal("moongate; fwd=bypass", skipped.headers["cache-status"])
        assert.equal(2, fetched() - before)
        local alice = get("/c/hooks", { ["X-Consumer"] = "alice" })
        local bob = get("/c/hooks", { ["X-Consumer"] = "bob" })
        assert.are_not.equal(alice.body, bob.body)
        assert.equal(alice.body, get("/c/hooks", { ["X-Consumer"] = "alice" }).body)
        assert.equal(4, fetched() - before)
    end)

    it("runs on_response hooks on every answer, from the cache too", function()
        local a = get("/c/hooked")
        local b = get("/c/hooked")
        assert.truthy(b.headers["cache-status"]:find("hit", 1, true))
        assert.equal(a.headers["x-request-id"], a.headers["x-hook"])
        assert.equal(b.headers["x-request-id"], b.headers["x-hook"])
        assert.equal("application/json", b.headers["x-seen-type"])
        assert.equal("200", b.headers["x-seen-status"])
        -- what is kept is the upstream's answer, not the hook's changes
        local t = get("/c/hooked", { ["X-Teapot"] = "1" })
        assert.equal(418, t.status)
        assert.equal(200, get("/c/hooked").status)
    end)

    it("tells on_log what it did (req.cache)", function()
        -- on_log runs after the answer went out: ask until it has run
        local function seen(want)
            local got
            local deadline = h.now() + 5 * h.SLOW
            repeat
                got = h.json(get("/seen").body).cache
                if got ~= want then h.sleep(0.02) end
            until got == want or h.now() > deadline
            return got
        end
        get("/c/logged")
        assert.equal("miss", seen("miss"))
        get("/c/logged")
        assert.equal("hit", seen("hit"))
    end)

    it("keeps the statuses of its list only", function()
        local before = fetched()
        get("/c/missing?status=404"); get("/c/missing?status=404")
        assert.equal(1, fetched() - before)
        get("/c/broken?status=500"); get("/c/broken?status=500")
        assert.equal(3, fetched() - before)
        get("/only200/missing?status=404"); get("/only200/missing?status=404")
        assert.equal(5, fetched() - before)
    end)

    it("keeps a chunked answer and serves it with Content-Length", function()
        local before = fetched()
        local p = "/c/chunked?size=30000&chunked=1&chunk=7000"
        local a = get(p)
        assert.equal("chunked", a.headers["transfer-encoding"])
        local b = get(p)
        assert.equal("30000", b.headers["content-length"])
        assert.is_nil(b.headers["transfer-encoding"])
        assert.equal(a.body, b.body)
        assert.equal(30000, #b.body)
        assert.equal(1, fetched() - before)
    end)

    it("passes answers bigger than max_body on whole, without keeping them", function()
        local before = fetched()
        for _, p in ipairs({ "/c/big?size=100000", "/c/bigc?size=100000&chunked=1" }) do
            local a = get(p)
            assert.equal(100000, #a.body)
            local b = get(p)
            assert.equal(a.body, b.body)
            assert.is_nil(b.headers["cache-status"]:find("hit", 1, true))
        end
        assert.equal(4, fetched() - before)
    end)

    it("answers HEAD from a kept GET answer", function()
        local g = get("/c/head")
        local res = h.http(gw.port, { method = "HEAD", path = "/c/head" })
        assert.equal(200, res.status)
        assert.equal("", res.body or "")
        assert.equal(tostring(#g.body), res.headers["content-length"])
        assert.truthy(res.headers["cache-status"]:find("hit", 1, true))
    end)

    it("answers a matching If-None-Match or If-Modified-Since with 304", function()
        local lm = "Wed,%2021%20Oct%202015%2007:28:00%20GMT"
        local p = '/c/etag?hdr=ETag:"v1"&hdr=Last-Modified:' .. lm
        get(p)
        local res = get(p, { ["If-None-Match"] = 'W/"v0", "v1"' })
        assert.equal(304, res.status)
        assert.equal("", res.body or "")
        assert.equal('"v1"', res.headers["etag"])
        assert.equal(200, get(p, { ["If-None-Match"] = '"v2"' }).status)
        assert.equal(304, get(p, { ["If-Modified-Since"] = "Wed, 21 Oct 2015 07:28:00 GMT" }).status)
        assert.equal(200, get(p, { ["If-Modified-Since"] = "Thu, 22 Oct 2015 07:28:00 GMT" }).status)
    end)

    it("fetches whole answers to keep, whatever the client's conditions", function()
        local before = fetched()
        local res = get("/c/cond?etag=x1", { ["If-None-Match"] = '"x1"' })
        assert.equal(200, res.status) -- the upstream was not asked the client's question
        assert.equal("moongate; fwd=uri-miss; stored", res.headers["cache-status"])
        local last = up:stats().last
        assert.is_nil(last[#last].headers["if-none-match"])
        -- the next one is answered from the cache
        assert.equal(304, get("/c/cond?etag=x1", { ["If-None-Match"] = '"x1"' }).status)
        assert.equal(1, fetched() - before)
        -- requests the cache passes by, and HEADs (never kept), keep theirs
        get("/c/cond?etag=x1", { ["If-None-Match"] = '"x1"', ["X-No-Cache"] = "1" })
        last = up:stats().last
        assert.equal('"x1"', last[#last].headers["if-none-match"])
        local head = h.http(gw.port, { method = "HEAD", path = "/c/condhead?etag=y1",
                                       headers = { ["If-None-Match"] = '"y1"' } })
        assert.equal(304, head.status)
    end)

    it("drops the kept answer when an unsafe method succeeds on the same URL", function()
        local before = fetched()
        get("/c/item"); get("/c/item")
        assert.equal(1, fetched() - before)
        assert.equal(200, get("/c/item", nil, "DELETE").status)
        assert.equal("moongate; fwd=uri-miss; stored", get("/c/item").headers["cache-status"])
        assert.equal(3, fetched() - before)
        -- a failed one changes nothing
        get("/c/item?status=404", nil, "POST")
        assert.truthy(get("/c/item").headers["cache-status"]:find("hit", 1, true))
    end)

    it("serves an expired answer when the upstream fails, within `stale`", function()
        local fresh = get("/stale/x")
        get("/nostale/x")
        h.sleep(0.45)
        up:stop()
        local ok, err = pcall(function()
            local s = get("/stale/x")
            assert.equal(200, s.status)
            assert.truthy(s.headers["cache-status"]:find(
                "^moongate; hit; ttl=%-%d+; detail=stale%-if%-error$"), s.headers["cache-status"])
            assert.equal(fresh.body, s.body)
            -- without `stale` the failure shows
            h.assert_error(get("/nostale/x"), 502)
        end)
        up = h.start_upstream { name = "up", port = up.port }
        assert(ok, err)
        -- once the upstream is back, the answer is fetched and kept again
        assert.equal("moongate; fwd=stale; stored", get("/stale/x").headers["cache-status"])
    end)

    it("keeps its answers across a reload", function()
        local before = fetched()
        local a = get("/c/reload")
        assert.equal(200, h.admin(admin, { method = "POST", path = "/reload" }).status)
        local b = get("/c/reload")
        assert.equal(a.body, b.body)
        assert.equal(1, fetched() - before)
    end)

    it("uses the dictionary the route names", function()
        local before = fetched()
        get("/own/x"); get("/own/x")
        assert.equal(1, fetched() - before)
    end)

    it("does nothing on routes without a cache", function()
        local before = fetched()
        local a = get("/plain/x"); get("/plain/x")
        assert.is_nil(a.headers["cache-status"])
        assert.equal(2, fetched() - before)
    end)

    -- sends n requests for path on n connections at once; returns the
    -- answers and how long the slowest took
    local function together(n, path)
        local conns, res = {}, {}
        local t0 = h.now()
        for i = 1, n do
            conns[i] = h.connect(gw.port)
            conns[i]:send(h.request_text({ path = path, headers = { Connection = "close" } }))
        end
        for i = 1, n do
            res[i] = assert(conns[i]:read_response({ timeout = 10 }))
            conns[i]:close()
        end
        return res, h.now() - t0
    end

    it("fetches a missing answer once for many requests at the same time", function()
        local before = fetched()
        local res = together(30, "/herd/x?delay=0.3")
        for i = 1, 30 do
            assert.equal(200, res[i].status)
            assert.equal(res[1].body, res[i].body)
        end
        assert.equal(1, fetched() - before)
        -- lock = 0: each miss fetches
        local before2 = fetched()
        together(5, "/nolock/x?delay=0.3")
        assert.equal(5, fetched() - before2)
    end)

    it("does not queue requests for answers it cannot keep", function()
        local before = fetched()
        local res, took = together(6, "/herd/cookie?delay=0.3&hdr=Set-Cookie:a=1")
        for i = 1, 6 do assert.equal(200, res[i].status) end
        assert.equal(6, fetched() - before)
        -- one after the other would take 6 x 0.3 s
        assert.truthy(took < 1.2 * h.SLOW, "took " .. took)
    end)

    it("serves the expired answer while one request fetches the new one", function()
        get("/upd/x") -- 0.9 s (read_timeout 1), kept for 0.3 s, then stale for 30 s
        h.sleep(0.4)
        local c = h.connect(gw.port)
        c:send(h.request_text({ path = "/upd/x", headers = { Connection = "close" } }))
        h.sleep(0.1) -- that one is fetching now
        local t0 = h.now()
        local res = get("/upd/x")
        -- the stale answer comes at once; waiting for the fetch would take
        -- 0.8 s more, so 0.5 s tells them apart even on a busy machine
        assert.truthy(h.now() - t0 < 0.5, "took " .. (h.now() - t0))
        assert.truthy(res.headers["cache-status"]:find("^moongate; hit; ttl=%-%d+; detail=updating$"),
                      res.headers["cache-status"])
        local fetcher = assert(c:read_response({ timeout = 5 }))
        c:close()
        assert.equal("moongate; fwd=stale; stored", fetcher.headers["cache-status"])
        assert.truthy(get("/upd/x").headers["cache-status"]:find("^moongate; hit; ttl=%d+$"))
    end)

    it("revalidates an expired answer with the upstream (If-None-Match, 304)", function()
        local before = fetched()
        local first = get("/rv/x?etag=@")
        assert.equal('"e1"', first.headers["etag"])
        h.sleep(0.4)
        local again = get("/rv/x?etag=@")
        assert.equal(200, again.status)
        assert.equal("moongate; fwd=stale; fwd-status=304; ttl=0", again.headers["cache-status"])
        assert.equal(first.body, again.body) -- the kept body, not a new one
        assert.equal(2, fetched() - before)
        local last = up:stats().last
        assert.equal('"e1"', last[#last].headers["if-none-match"])
        -- kept fresh again
        assert.truthy(get("/rv/x?etag=@").headers["cache-status"]:find("^moongate; hit"))
        assert.equal(2, fetched() - before)
        -- the client's own condition is answered by the gateway
        h.sleep(0.4)
        local cond = get("/rv/x?etag=@", { ["If-None-Match"] = '"e1"' })
        assert.equal(304, cond.status)
        -- a changed resource: a whole new answer, kept
        h.http(up.port, { path = "/__etag?value=e2" })
        h.sleep(0.4)
        local changed = get("/rv/x?etag=@")
        assert.equal('"e2"', changed.headers["etag"])
        assert.equal("moongate; fwd=stale; stored", changed.headers["cache-status"])
        assert.are_not.equal(first.body, changed.body)
        assert.equal(changed.body, get("/rv/x?etag=@").body)
    end)

    it("counts what it did in /metrics", function()
        local m = h.admin(admin, { path = "/metrics" }).body
        local function count(result)
            return tonumber(m:match('moongate_cache_requests_total{result="' .. result .. '"} (%d+)'))
        end
        assert.truthy(count("hit") > 10)
        assert.truthy(count("miss") > 10)
        assert.truthy(count("bypass") >= 3)
        assert.truthy(count("stale") >= 1)
        assert.truthy(count("revalidated") >= 1)
        assert.truthy(tonumber(m:match("moongate_cache_stored_total (%d+)")) > 10)
    end)

    it("DELETE /cache on the admin API removes kept answers: a route's, or all", function()
        local before = fetched()
        get("/c/purge"); get("/own/purge"); get("/c/purge"); get("/own/purge")
        assert.equal(2, fetched() - before)
        local res = h.admin(admin, { method = "DELETE", path = "/cache?route=%2Fown%2F%2A%2A" })
        assert.equal(200, res.status)
        local j = h.json(res.body)
        assert.same({ "small" }, j.dicts)
        assert.truthy(j.removed >= 1)
        get("/c/purge"); get("/own/purge")
        assert.equal(3, fetched() - before) -- only the /own/** answer went
        res = h.admin(admin, { method = "DELETE", path = "/cache" })
        assert.equal(200, res.status)
        assert.same({ "cache", "small" }, h.json(res.body).dicts)
        get("/c/purge")
        assert.equal(4, fetched() - before)
        res = h.admin(admin, { method = "DELETE", path = "/cache?route=nope" })
        assert.equal(404, res.status)
        assert.truthy(res.body:find("no route with a cache is called", 1, true))
    end)
end)

-- What the key holds and who may share an answer (RFC 9111 3.5 and 4.1).
local KEY_CONFIG = [[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" })
gw.upstream("legacy", { "{{U}}" }, { override_headers = true })

-- a policy that turns the client's credentials into a header of its own
local function to_user(req)
    local a = req:header("authorization")
    if a then
        req:set_header("x-user", a)
        req:remove_header("authorization")
    end
    if req:header("cookie") then
        req:set_header("x-user", req:header("cookie"))
        req:remove_header("cookie")
    end
end

gw.route { path = "/user/**", upstream = "up", policies = { to_user },
           cache = { ttl = 30 } }
gw.route { path = "/shared/**", upstream = "up", policies = { to_user },
           cache = { ttl = 30, authorized = true } }
gw.route { path = "/vary/**", upstream = "up", cache = { ttl = 30, vary = { "Accept" } } }
gw.route { path = "/ovr/**", upstream = "up", cache = { ttl = 30 } }
gw.route { path = "/legacy/**", upstream = "legacy", cache = { ttl = 30 } }
]]

describe("response cache key", function()
    local gw, up

    local function fetched() return up:stats().requests end

    local function get(path, headers)
        return h.http(gw.port, { path = path, headers = headers })
    end

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(KEY_CONFIG, { vars = { U = up.addr } })
    end)

    teardown(h.cleanup)

    it("passes by a request whose Authorization a policy removed: answers stay per user", function()
        local before = fetched()
        local alice = get("/user/me", { Authorization = "Bearer alice" })
        local bob = get("/user/me", { Authorization = "Bearer bob" })
        assert.equal("moongate; fwd=bypass", alice.headers["cache-status"])
        assert.equal("moongate; fwd=bypass", bob.headers["cache-status"])
        assert.equal("Bearer alice", h.json(alice.body).headers["x-user"])
        assert.equal("Bearer bob", h.json(bob.body).headers["x-user"])
        assert.is_nil(h.json(bob.body).headers["authorization"])
        assert.equal(2, fetched() - before)
    end)

    it("passes by a request whose Cookie a policy removed", function()
        local before = fetched()
        get("/user/c", { Cookie = "sid=a" })
        local b = get("/user/c", { Cookie = "sid=b" })
        assert.equal("moongate; fwd=bypass", b.headers["cache-status"])
        assert.equal("sid=b", h.json(b.body).headers["x-user"])
        assert.equal(2, fetched() - before)
    end)

    it("still shares them on a route with authorized = true (its choice)", function()
        local before = fetched()
        get("/shared/me", { Authorization = "Bearer alice" })
        local b = get("/shared/me", { Authorization = "Bearer bob" })
        assert.truthy(b.headers["cache-status"]:find("hit", 1, true))
        assert.equal(1, fetched() - before)
    end)

    it("keeps answers without credentials even when a policy adds some", function()
        local before = fetched()
        get("/user/anon"); local b = get("/user/anon")
        assert.truthy(b.headers["cache-status"]:find("hit", 1, true))
        assert.equal(1, fetched() - before)
    end)

    it("keys on every field line of a vary header, joined with \", \"", function()
        local before = fetched()
        local two = get("/vary/m", { { "Accept", "text/a" }, { "Accept", "text/b" } })
        assert.equal("moongate; fwd=uri-miss; stored", two.headers["cache-status"])
        -- only the first line: another key
        local first = get("/vary/m", { Accept = "text/a" })
        assert.equal("moongate; fwd=uri-miss; stored", first.headers["cache-status"])
        assert.equal(2, fetched() - before)
        -- the combined value on one line: the same key as the two lines
        local one = get("/vary/m", { Accept = "text/a, text/b" })
        assert.truthy(one.headers["cache-status"]:find("hit", 1, true))
        assert.equal(two.body, one.body)
        assert.equal(first.body, get("/vary/m", { Accept = "text/a" }).body)
        assert.equal(2, fetched() - before)
    end)

    it("tells an empty vary header from an absent one", function()
        local before = fetched()
        local absent = get("/vary/e")
        local empty = get("/vary/e", { { "Accept", "" } })
        assert.equal("moongate; fwd=uri-miss; stored", absent.headers["cache-status"])
        assert.equal("moongate; fwd=uri-miss; stored", empty.headers["cache-status"])
        assert.equal("", h.json(empty.body).headers["accept"])
        assert.is_nil(h.json(absent.body).headers["accept"])
        assert.truthy(get("/vary/e").headers["cache-status"]:find("hit", 1, true))
        assert.truthy(get("/vary/e", { { "Accept", "" } }).headers["cache-status"]
            :find("hit", 1, true))
        assert.equal(2, fetched() - before)
    end)

    it("does not forward the client's URL/method overrides, so one answer fits all", function()
        local before = fetched()
        local a = get("/ovr/x", { ["X-Original-URL"] = "/admin",
                                  ["X-HTTP-Method-Override"] = "DELETE" })
        assert.is_nil(h.json(a.body).headers["x-original-url"])
        assert.is_nil(h.json(a.body).headers["x-http-method-override"])
        local b = get("/ovr/x")
        assert.truthy(b.headers["cache-status"]:find("hit", 1, true))
        assert.equal(1, fetched() - before)
    end)

    it("keys on the overrides when the upstream gets them (override_headers = true)", function()
        local before = fetched()
        local plain = get("/legacy/x")
        local admin = get("/legacy/x", { ["X-Rewrite-URL"] = "/admin" })
        local empty = get("/legacy/x", { { "X-Rewrite-URL", "" } })
        local del = get("/legacy/x", { ["X-HTTP-Method-Override"] = "DELETE" })
        for _, r in ipairs { plain, admin, empty, del } do
            assert.equal("moongate; fwd=uri-miss; stored", r.headers["cache-status"])
        end
        assert.equal("/admin", h.json(admin.body).headers["x-rewrite-url"])
        assert.equal(4, fetched() - before)
        assert.equal(plain.body, get("/legacy/x").body)
        assert.equal(admin.body, get("/legacy/x", { ["X-Rewrite-URL"] = "/admin" }).body)
        assert.equal(4, fetched() - before)
    end)
end)

describe("response cache config", function()
    local function check(route)
        return h.check_config(([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
%s
]]):format(route))
    end

    it("reports bad options with file:line and what is expected", function()
        local cases = {
            { 'gw.route { path = "/a", upstream = "up", cache = { ttl = -1 } }',
              ":4: route.cache.ttl must be a positive number of seconds" },
            { 'gw.route { path = "/a", upstream = "up", cache = { tll = 1 } }',
              ":4: unknown key 'tll' in route.cache %(did you mean 'ttl'?" },
            { 'gw.route { path = "/a", upstream = "up", cache = { dict = "nope" } }',
              ':4: route.cache.dict "nope" is not declared' },
            { 'gw.route { path = "/a", upstream = "up", cache = { statuses = { 99 } } }',
              ":4: route.cache.statuses%[1%] must be a status 200%-599" },
            { 'gw.route { path = "/a", upstream = "up", cache = { vary = { "a b" } } }',
              ":4: route.cache.vary%[1%] must be a header name" },
            { 'gw.route { path = "/a", upstream = "up", cache = "yes" }',
              ":4: route.cache must be true or a table" },
            { 'gw.route { path = "/a", handler = function() end, cache = true }',
              ":4: route.cache needs an upstream" },
        }
        for _, c in ipairs(cases) do
            local code, out = check(c[1])
            assert.equal(1, code, out)
            assert.truthy(out:find(c[2]), out .. "\nexpected: " .. c[2])
        end
    end)

    it("accepts cache = true and declares the default dictionary", function()
        local code, out = check('gw.route { path = "/a", upstream = "up", cache = true }')
        assert.equal(0, code, out)
    end)
end)
