-- Route traffic split and canaries (src/split.c, docs/traffic.md) through
-- the real binary, two workers, and real upstreams (spec/support/upstream.py):
--   split 90/10   2,000 requests at 500/s over 8 connections: v1 gets
--                 90 % within 3 points (the rotation is exact per worker)
--   canary        a header (with its value) and a cookie send a request to
--                 v2, everything else goes by the split or the route's upstream
--   key           split.key: one cookie value, one upstream, every time; 1,000
--                 keys spread as the weights (within 5 points)
--   access log    "upstream" is the one that served, "split" how it was chosen
--   hooks         on_route sees the choice in req.upstream; req:set_upstream wins
--   the kit       moongate.testing chooses as the gateway does (the same C):
--                 the same upstream for every sticky key and canary request
local h = require "spec.support.helpers"
local cjson = require "cjson"
local t = require "moongate.testing"

local fmt = string.format

teardown(h.cleanup)

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local KEYS_PY = here .. "/../support/keys.py"

local CONFIG = [[
local gw = require "moongate"
gw.settings { access_log = "{{LOG}}", admin = { port = {{PORT2}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("v1", { "{{V1}}" })
gw.upstream("v2", { "{{V2}}" })
gw.route { name = "split", path = "/s/**",
           split = { { upstream = "v1", weight = 90 }, { upstream = "v2", weight = 10 } },
           canary = { header = "X-Canary", value = "1", upstream = "v2" } }
gw.route { name = "beta", path = "/b/**", upstream = "v1",
           canary = { cookie = "beta", upstream = "v2" } }
gw.route { name = "sticky", path = "/k/**",
           split = { { upstream = "v1", weight = 70 }, { upstream = "v2", weight = 30 },
                     key = { cookie = "sid" } } }
gw.route { name = "hooked", path = "/hk/**",
           split = { { upstream = "v1", weight = 1 }, { upstream = "v2", weight = 1 } } }
gw.on_route = function(req, route)
    if route and route.name == "hooked" then
        req:set_header("X-Seen-Upstream", req.upstream)
        if req:header("x-force") then req:set_upstream(req:header("x-force")) end
    end
end
]]

-- upstream.py's JSON echo of the request as it arrived
local function echo(res)
    return cjson.decode(res.body)
end

describe("route split and canary", function()
    local v1, v2, gw, log

    setup(function()
        local ups = h.start_upstreams { "v1", "v2" }
        v1, v2 = ups.v1, ups.v2
        log = h.tmpfile("access.log")
        gw = h.start_gateway(CONFIG, { vars = { V1 = v1, V2 = v2, LOG = log }, ports = 2 })
    end)

    local function served(req)
        local res = h.http(gw.port, req)
        assert.equal(200, res.status)
        return res.headers["x-upstream-name"], res
    end

    it("shares 2,000 requests 90/10 within 3 points", function()
        local report = h.load_start { ports = { gw.port }, paths = { "/s/x" }, rate = 500,
                                      duration = 4, conns = 8,
                                      count_header = "x-upstream-name" }()
        assert.same({ ["200"] = 2000 }, report.status)
        local n1, n2 = report.header.v1 or 0, report.header.v2 or 0
        print(fmt("\n  split 90/10 over %d requests: v1 %d (%.1f %%), v2 %d (%.1f %%)",
                  n1 + n2, n1, 100 * n1 / (n1 + n2), n2, 100 * n2 / (n1 + n2)))
        assert.equal(2000, n1 + n2)
        assert.is_true(math.abs(n1 / 2000 - 0.9) <= 0.03, "v1 share " .. n1 / 2000)
    end)

    it("sends the canary header's requests to v2, other values by the split", function()
        for _ = 1, 20 do
            assert.equal("v2", served { path = "/s/c", headers = { ["X-Canary"] = "1" } })
        end
        local other = {}
        for _ = 1, 40 do
            local n = served { path = "/s/c", headers = { ["X-Canary"] = "yes" } }
            other[n] = (other[n] or 0) + 1
        end
        assert.is_true((other.v1 or 0) >= 30, "a canary header of another value is split")
    end)

    it("sends the canary cookie's requests to v2 and the others to v1", function()
        for _ = 1, 10 do
            assert.equal("v2", served { path = "/b/x", headers = { Cookie = "theme=dark; beta=1" } })
            assert.equal("v2", served { path = "/b/x", headers = { Cookie = "beta=anything" } })
            assert.equal("v1", served { path = "/b/x", headers = { Cookie = "theme=dark" } })
            assert.equal("v1", served { path = "/b/x" })
            assert.equal("v1", served { path = "/b/x", headers = { ["X-Beta"] = "1" } })
        end
    end)

    it("keeps a key on one upstream and spreads keys by weight", function()
        local function names()
            local p = assert(io.popen(fmt("python3 %s --port %d --count 1000 --cookie sid --at /k/x",
                                          KEYS_PY, gw.port)))
            local r = cjson.decode(p:read("*a"))
            p:close()
            assert.same({ ["200"] = 1000 }, r.statuses)
            return r.names
        end
        local a, b = names(), names()
        assert.same(a, b)
        local n1 = 0
        for _, n in ipairs(a) do n1 = n1 + (n == "v1" and 1 or 0) end
        print(fmt("\n  split 70/30 by cookie over 1000 keys: v1 %d, v2 %d", n1, 1000 - n1))
        assert.is_true(math.abs(n1 / 1000 - 0.7) <= 0.05, "v1 share " .. n1 / 1000)
        -- without the cookie: the rotation
        local c = {}
        for _ = 1, 20 do
            local n = served { path = "/k/none" }
            c[n] = (c[n] or 0) + 1
        end
        assert.is_true((c.v1 or 0) > 0 and (c.v2 or 0) > 0)
    end)

    it("logs the upstream that served and how the split chose it", function()
        local _, res = served { path = "/s/logged", headers = { ["X-Canary"] = "1" } }
        local _, res2 = served { path = "/k/logged", headers = { Cookie = "sid=user-7" } }
        local _, res3 = served { path = "/b/logged" }
        local want = { [res.headers["x-request-id"]] = { "v2", "canary" },
                       [res2.headers["x-request-id"]] = { echo(res2).name, "key" },
                       [res3.headers["x-request-id"]] = { "v1", nil } }
        local found = {}
        h.eventually(3, function()
            for l in (h.read_file(log) or ""):gmatch("[^\n]+") do
                local e = cjson.decode(l)
                if want[e.request_id] then found[e.request_id] = e end
            end
            return found[res.headers["x-request-id"]] and found[res2.headers["x-request-id"]]
                and found[res3.headers["x-request-id"]]
        end, "the three access log lines")
        for id, w in pairs(want) do
            assert.equal(w[1], found[id].upstream)
            assert.equal(w[2], found[id].split)
        end
    end)

    it("shows the choice to on_route, and req:set_upstream overrides it", function()
        for _ = 1, 6 do
            local name, res = served { path = "/hk/x" }
            assert.equal(name, echo(res).headers["x-seen-upstream"])
        end
        local forced = {}
        for _ = 1, 6 do
            local name, res = served { path = "/hk/x", headers = { ["X-Force"] = "v2" } }
            assert.equal("v2", name)
            assert.is_not_nil(echo(res).headers["x-seen-upstream"])
            forced[res.headers["x-request-id"]] = true
        end
        -- the access log: the hook chose, not the split
        local n = 0
        h.eventually(3, function()
            n = 0
            for l in (h.read_file(log) or ""):gmatch("[^\n]+") do
                local e = cjson.decode(l)
                if forced[e.request_id] then
                    assert.equal("v2", e.upstream)
                    assert.is_nil(e.split)
                    n = n + 1
                end
            end
            return n == 6
        end, "the six forced requests' log lines")
    end)

    it("lists the split and the canary in the admin API's /routes", function()
        local routes = {}
        for _, r in ipairs(h.json(h.admin(gw.ports[2], { path = "/routes" }).body).routes) do
            routes[r.name] = r
        end
        assert.same({ { upstream = "v1", weight = 90 }, { upstream = "v2", weight = 10 } },
                    routes.split.split)
        assert.equal(cjson.null, routes.split.upstream)
        assert.same({ header = "x-canary", upstream = "v2" }, routes.split.canary)
        assert.same({ cookie = "beta", upstream = "v2" }, routes.beta.canary)
        assert.equal("v1", routes.beta.upstream)
        assert.is_nil(routes.beta.split)
    end)

    it("refuses a reload with a bad split at its line; the running split serves on", function()
        local good = h.read_file(gw.config_path)
        local bad, n = good:gsub('{ upstream = "v2", weight = 10 } },',
                                 '{ upstream = "v2", weight = 10 }, { upstream = "v3" } },', 1)
        assert.equal(1, n)
        local line = 0
        for l in good:gmatch("([^\n]*)\n") do
            line = line + 1
            if l:find('name = "split"', 1, true) then break end
        end
        local f = assert(io.open(gw.config_path, "w"))
        f:write(bad)
        f:close()
        local rc, out = h.run_bin("reload --admin 127.0.0.1:" .. gw.ports[2])
        assert.equal(1, rc, out)
        local reason = fmt('%s:%d: route.split[3].upstream "v3" is not declared',
                           gw.config_path, line)
        assert.truthy(out:find(reason, 1, true), out)
        -- the running generation's split and canary, as before
        assert.equal("v2", served { path = "/s/r", headers = { ["X-Canary"] = "1" } })
        local c = {}
        for _ = 1, 20 do
            local name = served { path = "/s/r" }
            c[name] = (c[name] or 0) + 1
        end
        assert.is_nil(c.v3)
        assert.is_true((c.v1 or 0) >= 14, "v1 " .. tostring(c.v1))
        f = assert(io.open(gw.config_path, "w"))
        f:write(good)
        f:close()
        rc, out = h.run_bin("reload --admin 127.0.0.1:" .. gw.ports[2])
        assert.equal(0, rc, out)
    end)

    it("chooses in the testing kit as in the gateway (the same C)", function()
        local gwt = assert(t.load(gw.config_path))
        for i = 1, 200 do
            local sid = "user-" .. i
            local d = gwt:request { path = "/k/x", headers = { Cookie = "sid=" .. sid } }
            assert.equal("key", d.split)
            assert.equal(served { path = "/k/x", headers = { Cookie = "sid=" .. sid } },
                         d.upstream, sid)
        end
        local d = gwt:request { path = "/s/x", headers = { ["X-Canary"] = "1" } }
        assert.same({ "v2", "canary" }, { d.upstream, d.split })
        d = gwt:request { path = "/b/x", headers = { Cookie = "beta=1" } }
        assert.same({ "v2", "canary" }, { d.upstream, d.split })
        d = gwt:request { path = "/b/x" }
        assert.same({ "v1" }, { d.upstream, d.split })
        -- the kit's own rotation is a worker's: 90/10 exactly over 100
        local n = {}
        for _ = 1, 100 do
            local u = gwt:request({ path = "/s/x" }).upstream
            n[u] = (n[u] or 0) + 1
        end
        assert.same({ v1 = 90, v2 = 10 }, n)
    end)
end)
