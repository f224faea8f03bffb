-- /metrics per upstream and per target: real upstream servers answer a
-- known set of requests through the gateway, and the admin API's /metrics
-- must count exactly those attempts, by status class and latency bucket,
-- and pass `promtool check metrics` (Debian's prometheus package).
local h = require "spec.support.helpers"

local H = "moongate_upstream_request_duration_seconds"
local R = "moongate_upstream_responses_total"

-- The value of one exact series ("name{labels}") in the text, or nil.
local value = h.metric

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
        local query = ('moongate_upstream_responses_total%%7Bupstream%%3D%%22svc'
            .. '%%22%%2Ctarget%%3D%%22%s%%22%%2Ccode_class%%3D%%222xx%%22%%7D'):format(ups.a.addr)
        assert.equal(want, h.prometheus_value(web, query))
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

describe("user metrics (gw.metrics)", function()
    local gw, admin, path

    local CONFIG = [[
local gw = require "moongate"
gw.settings { admin = { port = {{ADMIN}} }, access_log = "off", timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
-- {{NOTE}}
local orders = gw.metrics.counter("shop_orders_total", "Orders placed, by tenant.",
                                  { "tenant", max_series = {{MAX}} })
local plain = gw.metrics.counter("shop_requests_total", "Requests seen.")
local busy = gw.metrics.gauge("shop_busy", "Requests being handled, by tenant.", { "tenant" })
local temp = gw.metrics.gauge("shop_temperature_celsius", "The last temperature set.")
local work = gw.metrics.histogram("shop_work_seconds", "Time of the work, by kind.",
                                  { "kind" }, { 0.1, 1 })
local odd = gw.metrics.counter("shop_odd_total", "Label values of any bytes.", { "v" })
local counted = { name = "counted",
    on_request = function(req)
        plain:inc()
        busy:inc(2, "t")
    end,
    on_log = function(req)
        busy:dec(1, "t")
    end }
gw.route { path = "/order/:tenant", policies = { counted }, handler = function(req)
    orders:inc(1, req.params.tenant)
    -- exact binary fractions: the sums add up exactly in any order
    local kind = req:arg("kind") or "fast"
    work:observe(kind == "fast" and 0.0625 or kind == "mid" and 0.5 or 4, kind)
    if req:arg("temp") then temp:set(tonumber(req:arg("temp"))) end
    return 200, { worker = gw.worker_id() }
end }
gw.route { path = "/odd", handler = function(req)
    odd:inc(1, req:arg("v"))
    return 200, "ok"
end }
]]

    local function config(vars)
        local text = CONFIG
        for k, v in pairs(vars) do text = text:gsub("{{" .. k .. "}}", v) end
        return text
    end

    local function metrics()
        local res = h.admin(admin, { path = "/metrics" })
        assert.equal(200, res.status)
        return res.body
    end

    local function promtool(text)
        local f = h.tmpfile("metrics.txt", text)
        return h.sh("promtool check metrics < " .. h.shq(f) .. " 2>&1; echo rc=$?")
    end

    setup(function()
        admin = h.free_port()
        gw = h.start_gateway(config { ADMIN = admin, MAX = 4, NOTE = "first" },
                             { workers = 2 })
        path = gw.config_path
    end)

    teardown(h.cleanup)

    it("adds up exactly what two workers counted", function()
        -- one connection per request: the kernel spreads them over both workers
        local workers = {}
        for i = 1, 60 do
            local kind = ({ "fast", "mid", "slow" })[i % 3 + 1]
            local res = h.http(gw.port, { path = "/order/" .. (i % 2 == 0 and "a" or "b") ..
                                          "?kind=" .. kind })
            assert.equal(200, res.status)
            workers[h.json(res.body).worker] = true
        end
        assert.truthy(workers[0] and workers[1], "both workers answered")
        local t
        h.eventually(5, function() -- on_log runs after the answer
            t = metrics()
            return value(t, 'shop_busy{tenant="t"}') == 60
        end, "every on_log ran")
        assert.equal(30, value(t, 'shop_orders_total{tenant="a"}'))
        assert.equal(30, value(t, 'shop_orders_total{tenant="b"}'))
        assert.equal(60, value(t, "shop_requests_total"))
        -- 20 of each kind: 0.0625, 0.5 and 4 seconds
        assert.equal(20, value(t, 'shop_work_seconds_bucket{kind="fast",le="0.1"}'))
        assert.equal(20, value(t, 'shop_work_seconds_bucket{kind="fast",le="+Inf"}'))
        assert.equal(20, value(t, 'shop_work_seconds_bucket{kind="mid",le="1"}'))
        assert.equal(0, value(t, 'shop_work_seconds_bucket{kind="slow",le="1"}'))
        assert.equal(20, value(t, 'shop_work_seconds_count{kind="slow"}'))
        assert.equal(20 * 4, value(t, 'shop_work_seconds_sum{kind="slow"}'))
        assert.equal(20 * 0.0625, value(t, 'shop_work_seconds_sum{kind="fast"}'))
        assert.equal(0, value(t, "shop_temperature_celsius"))
        h.http(gw.port, { path = "/order/a?temp=-3.25" })
        assert.equal(-3.25, value(metrics(), "shop_temperature_celsius"))
        assert.equal("rc=0\n", promtool(metrics()))
    end)

    it("bounds the label sets: past max_series one overflow series, counted", function()
        -- a and b exist; c and d fill max_series = 4; e, f, g overflow
        for _, t in ipairs { "c", "d", "e", "f", "g", "e" } do
            assert.equal(200, h.http(gw.port, { path = "/order/" .. t }).status)
        end
        local t = metrics()
        assert.equal(1, value(t, 'shop_orders_total{tenant="c"}'))
        assert.equal(1, value(t, 'shop_orders_total{tenant="d"}'))
        assert.is_nil(value(t, 'shop_orders_total{tenant="e"}'))
        assert.equal(4, value(t, 'shop_orders_total{tenant="(other)"}'))
        assert.equal(4, value(t, 'moongate_user_metric_overflow_total{metric="shop_orders_total"}'))
        local n = 0
        for _ in t:gmatch("\nshop_orders_total{") do n = n + 1 end
        assert.equal(5, n) -- four label sets and the overflow
        assert.equal("rc=0\n", promtool(t))
    end)

    it("writes label values of any bytes as valid, escaped, cut UTF-8", function()
        local function odd(v)
            local pct = v:gsub(".", function(c) return ("%%%02X"):format(c:byte()) end)
            assert.equal(200, h.http(gw.port, { path = "/odd?v=" .. pct }).status)
        end
        odd('a "quoted" \\ value')
        odd("line\nbreak\1")
        odd("\255\254 caf\195\169")
        odd(("x"):rep(300))
        local t = metrics()
        assert.equal(1, value(t, 'shop_odd_total{v="a \\"quoted\\" \\\\ value"}'))
        local R = "\239\191\189" -- U+FFFD
        assert.equal(1, value(t, 'shop_odd_total{v="line' .. R .. "break" .. R .. '"}'))
        assert.equal(1, value(t, 'shop_odd_total{v="' .. R .. R .. ' caf\195\169"}'))
        assert.equal(1, value(t, 'shop_odd_total{v="' .. ("x"):rep(128) .. '"}'))
        assert.equal("rc=0\n", promtool(t))
    end)

    it("is scraped by a real prometheus server, which answers a query for a user series", function()
        local web = h.start_prometheus(admin)
        local want = value(metrics(), 'shop_orders_total{tenant="a"}')
        assert.truthy(want and want > 0)
        assert.equal(want, h.prometheus_value(web, "shop_orders_total%7Btenant%3D%22a%22%7D"))
    end)

    it("keeps the values across a reload that declares them the same, resets a changed one",
       function()
        local before = metrics()
        local a = value(before, 'shop_orders_total{tenant="a"}')
        local plain = value(before, "shop_requests_total")
        assert.truthy(a and a > 0)
        -- the same declarations (another comment): every value stays
        h.write_file(path, config { ADMIN = admin, PORT = gw.port, MAX = 4, NOTE = "second" })
        local rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
        assert.equal(0, rc, out)
        local t = metrics()
        assert.equal(a, value(t, 'shop_orders_total{tenant="a"}'))
        assert.equal(plain, value(t, "shop_requests_total"))
        assert.equal(200, h.http(gw.port, { path = "/order/a" }).status)
        assert.equal(a + 1, value(metrics(), 'shop_orders_total{tenant="a"}'))
        -- another max_series: another metric, from zero; the others stay
        h.write_file(path, config { ADMIN = admin, PORT = gw.port, MAX = 10, NOTE = "third" })
        rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
        assert.equal(0, rc, out)
        t = metrics()
        assert.is_nil(value(t, 'shop_orders_total{tenant="a"}'))
        assert.equal(plain + 1, value(t, "shop_requests_total"))
        assert.equal(200, h.http(gw.port, { path = "/order/a" }).status)
        assert.equal(1, value(metrics(), 'shop_orders_total{tenant="a"}'))
        assert.equal("rc=0\n", promtool(metrics()))
    end)
end)
