-- /metrics per upstream and per target: real upstream servers answer a
-- known set of requests through the gateway, and the admin API's /metrics
-- must count exactly those attempts, by status class and latency bucket,
-- and pass `promtool check metrics` (Debian's prometheus package).
local h = require "spec.support.helpers"

local H = "moongate_upstream_request_duration_seconds"
local R = "moongate_upstream_responses_total"

-- The value of one exact series ("name{labels}") in the text, or nil.
local function value(text, series)
    for line in text:gmatch("[^\n]+") do
        local s, v = line:match("^(.-) (%S+)$")
        if s == series then return tonumber(v) end
    end
end

local function labels(up, target, extra)
    return ('{upstream="%s",target="%s"%s}'):format(up, target, extra or "")
end

describe("per-target metrics", function()
    local gw, ups, admin, dead

    local function metrics()
        local res = h.admin(admin, { path = "/metrics" })
        assert.equal(200, res.status)
        return res.body
    end

    setup(function()
        ups = h.start_upstreams { "a", "b" }
        admin = h.free_port()
        dead = h.dead_addr()
        gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "{{B}}" })
gw.upstream("gone", { "{{DEAD}}" })
gw.route { path = "/svc/**", upstream = "svc" }
gw.route { path = "/gone/**", upstream = "gone" }
-- retries and outlier detection: their series are in the promtool check too
gw.upstream("tried", { "{{A}}", "{{DEAD}}" }, {
    retries = { attempts = 2, on = { "connect" } },
    outlier = { consecutive_gateway_failures = 3 },
})
gw.route { path = "/tried/**", upstream = "tried" }
]]):format(admin), { vars = { A = ups.a, B = ups.b, DEAD = dead }, workers = 1 })
    end)

    teardown(h.cleanup)

    it("counts every attempt by target, status class and latency bucket", function()
        -- which target answered each request: the expected counts
        local want = { a = {}, b = {} }
        local function get(query)
            local res = h.http(gw.port, { path = "/svc/x" .. query })
            local name = res.headers["x-upstream-name"]
            assert.truthy(want[name], "answered by " .. tostring(name))
            local cls = math.floor(res.status / 100) .. "xx"
            want[name][cls] = (want[name][cls] or 0) + 1
            want[name].n = (want[name].n or 0) + 1
            return name
        end
        for _ = 1, 5 do get("") end
        for _ = 1, 3 do get("?status=404") end
        for _ = 1, 2 do get("?status=503") end
        local slow = get("?delay=1.1") -- past the le="1" bucket
        local t = metrics()
        for name, w in pairs(want) do
            local addr = ups[name].addr
            for _, cls in ipairs { "2xx", "4xx", "5xx" } do
                assert.equal(w[cls], value(t, R .. labels("svc", addr, (',code_class="%s"'):format(cls))),
                    name .. " " .. cls)
            end
            assert.is_nil(value(t, R .. labels("svc", addr, ',code_class="error"')))
            assert.equal(w.n, value(t, H .. "_count" .. labels("svc", addr)))
            assert.equal(w.n, value(t, H .. "_bucket" .. labels("svc", addr, ',le="+Inf"')))
            -- every fast answer is within a second, the slow one is not
            local fast = w.n - (name == slow and 1 or 0)
            assert.equal(fast, value(t, H .. "_bucket" .. labels("svc", addr, ',le="1"')), name)
            local sum = value(t, H .. "_sum" .. labels("svc", addr))
            if name == slow then assert.truthy(sum >= 1.1, sum) end
        end
        -- 11 requests, none to "gone": no series for its target yet
        assert.equal(11, want.a.n + want.b.n)
        assert.is_nil(value(t, R .. labels("gone", dead, ',code_class="error"')))
    end)

    it("counts attempts that got no answer as errors, untimed", function()
        local res = h.http(gw.port, { path = "/gone/x" })
        assert.equal(502, res.status)
        local t = metrics()
        -- a refused connect is retried once on the only target: two attempts
        assert.equal(2, value(t, R .. labels("gone", dead, ',code_class="error"')))
        assert.equal(0, value(t, H .. "_count" .. labels("gone", dead)))
    end)

    it("is scraped by a real prometheus server, which answers a query for a new series", function()
        local web = h.start_prometheus(admin)
        local series = R .. labels("svc", ups.a.addr, ',code_class="2xx"')
        local want = value(metrics(), series)
        assert.truthy(want and want > 0)
        local query = ('/api/v1/query?query=moongate_upstream_responses_total%%7Bupstream%%3D%%22svc'
            .. '%%22%%2Ctarget%%3D%%22%s%%22%%2Ccode_class%%3D%%222xx%%22%%7D'):format(ups.a.addr)
        local got
        local deadline = h.now() + 30 * h.SLOW
        while h.now() < deadline do
            local ok, res = pcall(h.http, web, { path = query })
            if ok and res.status == 200 then
                local r = h.json(res.body).data.result
                if r[1] then got = tonumber(r[1].value[2]) break end
            end
            h.sleep(0.2)
        end
        assert.equal(want, got)
    end)

    it("passes promtool check metrics", function()
        for _ = 1, 4 do assert.equal(200, h.http(gw.port, { path = "/tried/x" }).status) end
        local text = metrics()
        assert.truthy(text:find("moongate_upstream_retries_total", 1, true))
        -- a try refused by the dead target is retried on a: all four end there
        assert.equal(4, value(text, R .. labels("tried", ups.a.addr, ',code_class="2xx"')))
        local f = h.tmpfile("metrics.txt", text)
        local out = h.sh("promtool check metrics < " .. h.shq(f) .. " 2>&1; echo rc=$?")
        assert.equal("rc=0\n", out)
    end)
end)

describe("hook metrics", function()
    local gw, up, admin

    local C = "moongate_hook_calls_total"
    local S = "moongate_hook_seconds_total"
    local function hl(phase, policy) return ('{phase="%s",policy="%s"}'):format(phase, policy) end

    setup(function()
        up = h.start_upstream { name = "a" }
        admin = h.free_port()
        gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}" })
-- 30 ms of Lua per call: the time counted is at least that. Wall time
-- (gw.now, whole ms), as the metric counts: os.clock is the process's CPU
-- time, which other threads (ASan's among them) advance too
local spin = { name = "spin", on_request = function()
    local t = gw.now()
    while gw.now() - t < 0.031 do end
end }
-- 300 ms asleep per call: left out of the time
local nap = { name = "nap", on_response = function() gw.sleep(0.3) end }
gw.route { path = "/svc/**", upstream = "svc", policies = { spin, nap, function() end } }
function gw.on_log() end
]]):format(admin), { vars = { A = up.addr }, workers = 1 })
    end)

    teardown(h.cleanup)

    it("counts calls and run time per phase and policy, waits left out", function()
        for _ = 1, 3 do assert.equal(200, h.http(gw.port, { path = "/svc/x" }).status) end
        local t
        -- on_log runs after the answer went out: poll for its third call
        local deadline = h.now() + 5 * h.SLOW
        repeat
            t = h.admin(admin, { path = "/metrics" }).body
            if value(t, C .. hl("on_log", "(global)")) == 3 then break end
            h.sleep(0.05)
        until h.now() > deadline
        assert.equal(3, value(t, C .. hl("on_request", "spin")))
        assert.equal(3, value(t, C .. hl("on_response", "nap")))
        assert.equal(3, value(t, C .. hl("on_request", "(unnamed)")))
        assert.equal(3, value(t, C .. hl("on_log", "(global)")))
        assert.is_nil(value(t, C .. hl("on_request", "(global)"))) -- no such hook
        assert.truthy(value(t, S .. hl("on_request", "spin")) >= 0.09, t)
        -- 0.9 s asleep in all: none of it counted
        assert.truthy(value(t, S .. hl("on_response", "nap")) < 0.3, t)
        local f = h.tmpfile("metrics.txt", t)
        assert.equal("rc=0\n", h.sh("promtool check metrics < " .. h.shq(f) .. " 2>&1; echo rc=$?"))
    end)
end)
