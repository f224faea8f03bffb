-- Retries, outlier detection and route timeouts (docs/traffic.md) with
-- real upstream processes: killed with SIGKILL and restarted under load,
-- failing all at once, or too slow.
local h = require "spec.support.helpers"
local socket = require "socket"

-- Polls until f() is true (or fails after `seconds`, scaled under ASan).
local function eventually(seconds, f, what)
    local deadline = h.now() + seconds * h.SLOW
    while h.now() < deadline do
        if f() then return end
        h.sleep(0.02)
    end
    error("not within " .. seconds * h.SLOW .. " s: " .. what, 2)
end

-- The admin API's /metrics as { ["name{labels}"] = value }.
local function metrics(admin)
    local res = h.admin(admin, { path = "/metrics" })
    assert.equal(200, res.status)
    local out = {}
    for name, v in res.body:gmatch("\n([%w_]+{[^}]*}) ([%d%.e+-]+)") do
        out[name] = tonumber(v)
    end
    return out
end

local function target_metric(m, family, up, target)
    return m[('%s{upstream="%s",target="%s"}'):format(family, up, target)] or 0
end

-- Lines of the gateway's log that contain every string of `wants`.
local function log_lines(gw, wants)
    local out = {}
    for line in gw:log():gmatch("[^\n]+") do
        local all = true
        for _, w in ipairs(wants) do
            if not line:find(w, 1, true) then all = false end
        end
        if all then out[#out + 1] = line end
    end
    return out
end

-- Three upstream processes (a, b, c), each writing the request ids it sees
-- to its own file (kept across a restart: the file is appended to).
local function three_upstreams()
    local ups = {}
    for _, n in ipairs { "a", "b", "c" } do
        local ids = h.tmpfile("ids-" .. n, "")
        ups[n] = h.start_upstream { name = n, ids = ids }
        ups[n].ids = ids
    end
    return ups
end

local function restart(up)
    local again = h.start_upstream { name = up.name, port = up.port, ids = up.ids }
    again.ids = up.ids
    return again
end

-- A gateway over a, b and c with retries and outlier detection; the
-- per-worker max_fails is off, so that the ejections seen are the shared
-- ones.
local function gateway(ups, admin, retries)
    return h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d }, access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "{{B}}", "{{C}}" }, {
    max_fails = 0,
    retries = %s,
    outlier = { consecutive_gateway_failures = 3, base_ejection_time = 1,
                max_ejection_time = 10, max_ejection_percent = 34 },
})
gw.route { path = "/svc/**", upstream = "svc" }
]]):format(admin, retries), { vars = { A = ups.a, B = ups.b, C = ups.c } })
end

-- Under ASan the gateway does about a third of the work per second: the
-- rate is scaled so that the machine, not the gateway, stays the same.
local RATE = h.SLOW > 1 and 400 or 1000

describe("retries with a target killed (SIGKILL) and restarted under load", function()
    teardown(h.cleanup)

    it("GET: 0 failed requests, and the dead target gets only a few tries while ejected", function()
        local ups = three_upstreams()
        local admin = h.free_port()
        local gw = gateway(ups, admin, [[{ attempts = 3, on = { "connect", "reset", "503" },
        backoff = { base = 0.005, max = 0.05 }, budget = 0.5, min_retries = 10 }]])
        local wait = h.load_start { ports = { gw.port }, paths = { "/svc/x" }, rate = RATE,
                                    duration = 10, conns = 40, timeout = 10 }
        h.sleep(3)
        local before = metrics(admin)
        ups.c:kill("KILL")
        local killed_at = h.now()
        h.sleep(3)
        local dead = metrics(admin)
        local c2 = restart(ups.c)
        local back_at = h.now()
        local r = wait()
        local after = metrics(admin)
        gw:assert_alive()

        -- no client saw a failure
        assert.equal(0, r.errors, "socket errors: " .. require("cjson").encode(r.error_kinds))
        assert.same({ ["200"] = r.sent }, r.status)
        assert.truthy(r.sent >= RATE * 10)
        -- while dead, c got a few tries only: those in flight at the kill
        -- (at most one per connection) and 3 failures in a row before each
        -- ejection (for 1 s, then 2 s), never one while ejected with others
        -- up; round robin alone would have sent it a third of the traffic
        local tries = target_metric(dead, "moongate_upstream_target_attempts_total", "svc", ups.c.addr)
            - target_metric(before, "moongate_upstream_target_attempts_total", "svc", ups.c.addr)
        local share = (h.now() - killed_at) * RATE / 3 -- what round robin would have sent it
        print(("dead target: %d tries in %.1f s (round robin alone: ~%d)"):format(
            tries, back_at - killed_at, math.floor(share)))
        assert.truthy(tries <= 40 + 20, "tries on the dead target: " .. tries .. "\n" ..
            table.concat(log_lines(gw, { ups.c.addr }), "\n"))
        assert.truthy(target_metric(dead, "moongate_upstream_target_ejections_total", "svc", ups.c.addr) >= 1)
        assert.equal(0, target_metric(after, "moongate_upstream_target_attempts_ejected_total", "svc",
                                      ups.c.addr))
        -- the failures were retried elsewhere, and said so in the log
        assert.truthy(#log_lines(gw, { "retrying after try", "target " .. ups.c.addr }) >= 3)
        assert.truthy(#log_lines(gw, { "ejected for", ups.c.addr }) >= 1)
        -- and once restarted, c serves again
        assert.truthy(c2:stats().requests > 0)
    end)

    it("POST: only requests in flight on the killed target fail, none reaches an upstream twice", function()
        local ups = three_upstreams()
        local admin = h.free_port()
        local gw = gateway(ups, admin, [[{ attempts = 3, backoff = { base = 0.005 },
        budget = 0.5, min_retries = 10 }]])
        local conns = 20
        local wait = h.load_start { ports = { gw.port }, paths = { "/svc/p" }, rate = RATE / 2,
                                    duration = 6, conns = conns, method = "POST",
                                    body_size = 200, timeline = true, timeout = 10 }
        h.sleep(2)
        ups.c:kill("KILL")
        local killed_wall = socket.gettime()
        h.sleep(2)
        restart(ups.c)
        local r = wait()
        gw:assert_alive()

        local failed = 0
        for code, n in pairs(r.status) do
            assert.truthy(code == "200" or code == "502", "status " .. code)
            if code ~= "200" then failed = failed + n end
        end
        -- an answer the dead target had begun is cut short: the client's
        -- connection closes (a socket error to the client, a 502 line in the
        -- log as for the others)
        failed = failed + r.errors
        -- a failure is a request the dead target had (its 502 log line names
        -- it), begun before the kill was seen, so at most one per connection
        local lines = log_lines(gw, { "502: route /svc/**" })
        assert.equal(failed, #lines)
        for _, line in ipairs(lines) do
            assert.truthy(line:find("target " .. ups.c.addr, 1, true), line)
        end
        assert.truthy(failed <= conns, failed .. " failed")
        local kill_t = killed_wall - r.t0
        for _, e in ipairs(r.timeline) do
            if e[3] ~= 200 then
                assert.truthy(e[1] <= kill_t + 0.5 * h.SLOW,
                              ("a request begun %.3f s after the kill failed"):format(e[1] - kill_t))
            end
        end
        -- no request id reached the upstreams twice (c's file kept what c
        -- saw before it was killed)
        local seen, total = {}, 0
        for _, n in ipairs { "a", "b", "c" } do
            local f = assert(io.open(ups[n].ids))
            for id in f:lines() do
                assert.is_nil(seen[id], "request " .. id .. " sent twice")
                seen[id] = n
                total = total + 1
            end
            f:close()
        end
        assert.truthy(total >= r.sent - failed)
        assert.truthy(#log_lines(gw, { "retrying after try", "refused the connection" }) >= 1)
    end)
end)

describe("the retry budget", function()
    teardown(h.cleanup)

    it("with every target failing, retries stay within budget * requests in flight", function()
        local ups = three_upstreams()
        local admin = h.free_port()
        local gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d }, access_log = "off", log_level = "warn" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
local targets = { "{{A}}", "{{B}}", "{{C}}" }
-- the same three targets twice: the budget is counted per upstream
gw.upstream("capped", targets, { retries = { attempts = 3, on = { "503" },
    backoff = { base = 0 }, budget = 0.2, min_retries = 0 } })
gw.upstream("open", targets, { retries = { attempts = 3, on = { "503" },
    backoff = { base = 0 }, budget = 1, min_retries = 0 } })
gw.route { path = "/capped/**", upstream = "capped" }
gw.route { path = "/open/**", upstream = "open" }
]]):format(admin), { vars = { A = ups.a, B = ups.b, C = ups.c } })
        -- each try takes 20 ms: a few dozen requests are in flight
        local function run(path)
            local r = h.load_start { ports = { gw.port }, paths = { path .. "&delay=0.02" },
                                     rate = RATE / 2, duration = 3, conns = 60 } ()
            assert.same({ ["503"] = r.sent }, r.status)
            return r.sent
        end
        local received = function()
            local n = 0
            for _, u in pairs { ups.a, ups.b, ups.c } do n = n + u:stats().requests end
            return n
        end
        local sent_open = run("/open/x?status=503")
        local m = metrics(admin)
        local open = m['moongate_upstream_retries_total{upstream="open"}']
        local got_open = received()
        local sent = run("/capped/x?status=503")
        m = metrics(admin)
        local capped = m['moongate_upstream_retries_total{upstream="capped"}']
        local refused = m['moongate_upstream_retries_budget_refused_total{upstream="capped"}']
        print(("retries per request: %.3f with budget 1, %.3f with budget 0.2 (%d refused)"):format(
            open / sent_open, capped / sent, refused))
        -- without a cap every request is tried three times ...
        assert.equal(2 * sent_open, open)
        -- ... with it, a request retries only while fewer than a fifth of
        -- the requests in flight do: at most 2 * 0.2 / (1 + 2 * 0.2) = 0.29
        -- of requests retry (each retrying one holds its place for two
        -- tries), i.e. under 0.29 retries per request; 0.35 leaves room for
        -- the count of requests in flight moving under a worker
        assert.truthy(capped / sent <= 0.35, "retries per request " .. capped / sent)
        assert.truthy(refused > 0)
        -- every retry counted reached an upstream, no more
        assert.equal(sent + capped, received() - got_open)
        -- and none is in flight afterwards
        eventually(2, function()
            local m2 = metrics(admin)
            return m2['moongate_upstream_requests_active{upstream="capped"}'] == 0 and
                   m2['moongate_upstream_retries_active{upstream="capped"}'] == 0
        end, "no request in flight")
    end)
end)

describe("retried bodies", function()
    local ups, gw
    setup(function()
        ups = { a = h.start_upstream { name = "a" }, b = h.start_upstream { name = "b" } }
        gw = h.start_gateway([[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "{{B}}" }, { retries = { attempts = 2, body = "4k" } })
gw.route { path = "/svc/**", upstream = "svc" }
gw.route { path = "/any/**", upstream = "svc",
           retries = { attempts = 2, body = "4k", non_idempotent = true } }
]], { vars = { A = ups.a, B = ups.b }, workers = 1 })
    end)
    teardown(h.cleanup)

    local function send(method, path, n)
        local statuses = {}
        for _ = 1, 6 do
            local res = h.http(gw.port, { method = method, path = path .. "?fail_on=a",
                                          body = ("x"):rep(n) })
            statuses[#statuses + 1] = res.status
            if res.status == 200 then
                local j = h.json(res.body)
                assert.equal("b", j.name)
                assert.equal(n, j.body_len)
            end
        end
        return table.concat(statuses, " ")
    end

    it("a PUT body buffered whole is sent again to the next target", function()
        local before = ups.a:stats().requests
        assert.equal("200 200 200 200 200 200", send("PUT", "/svc/put", 3000))
        assert.truthy(ups.a:stats().requests - before >= 2) -- a answered 503 to some
    end)

    it("a body over the limit streams and is not replayed", function()
        assert.truthy(send("PUT", "/svc/big", 6000):find("503", 1, true))
    end)

    it("a POST is not retried once sent, unless the route says non_idempotent", function()
        assert.truthy(send("POST", "/svc/post", 100):find("503", 1, true))
        assert.equal("200 200 200 200 200 200", send("POST", "/any/post", 100))
    end)
end)

describe("route timeouts", function()
    local up, gw, blackhole, fillers
    setup(function()
        up = h.start_upstream { name = "t" }
        -- a listener that never accepts, its queue full: a connect to it waits
        local bport = h.free_port()
        local script = h.tmpfile("blackhole.py", ([[
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", %d))
s.listen(0)
print("listening", flush=True)
time.sleep(600)
]]):format(bport))
        blackhole = h.spawn("exec python3 " .. script, "blackhole")
        eventually(5, function() return blackhole:log():find("^listening") end, "blackhole")
        fillers = {}
        for i = 1, 4 do
            local c = socket.tcp()
            c:settimeout(0)
            c:connect("127.0.0.1", bport)
            fillers[i] = c
        end
        h.sleep(0.2)
        gw = h.start_gateway(([[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{UP}}" }, { read_timeout = 30 })
gw.upstream("hole", { "127.0.0.1:%d" }, { connect_timeout = 30 })
gw.route { path = "/connect/**", upstream = "hole", timeouts = { connect = 0.3 } }
gw.route { path = "/first/**", upstream = "svc", timeouts = { first_byte = 0.3 } }
gw.route { path = "/idle/**", upstream = "svc", timeouts = { idle = 0.3 } }
gw.route { path = "/total/**", upstream = "svc", timeouts = { total = 0.6 },
           retries = { attempts = 5, on = { "timeout" }, per_try_timeout = 0.25,
                       backoff = { base = 0 } } }
]]):format(bport), { vars = { UP = up }, workers = 1 })
    end)
    teardown(function()
        for _, c in ipairs(fillers or {}) do c:close() end
        h.cleanup()
    end)

    local function timed(path)
        local t0 = h.now()
        local res = h.http(gw.port, { path = path, timeout = 20 })
        return res, h.now() - t0
    end

    local function logged(id, want)
        local lines = {}
        eventually(3, function()
            lines = log_lines(gw, { id })
            return #lines > 0
        end, "a log line for " .. id)
        assert.truthy(lines[#lines]:find(want, 1, true), lines[#lines])
    end

    it("connect: 504 after timeouts.connect", function()
        local res, dt = timed("/connect/x")
        assert.equal(504, res.status)
        assert.truthy(dt >= 0.25 and dt < 5 * h.SLOW, dt)
        logged(res.headers["x-request-id"], "504: route /connect/**, upstream hole")
        logged(res.headers["x-request-id"], "upstream connect timed out")
    end)

    it("first byte: 504 after timeouts.first_byte", function()
        local res, dt = timed("/first/x?delay=3")
        assert.equal(504, res.status)
        assert.truthy(dt >= 0.25 and dt < 2.5, dt)
        logged(res.headers["x-request-id"], "upstream timed out before the first byte")
    end)

    it("idle: an answer that stalls mid-body is cut after timeouts.idle", function()
        local t0 = h.now()
        -- the head (200) went out before the stall: the client's connection
        -- is closed, short of the announced body
        local ok, res = pcall(h.http, gw.port, { path = "/idle/x?size=200000&stall=3", timeout = 20 })
        local dt = h.now() - t0
        if ok then
            assert.equal(200, res.status)
            assert.truthy(#(res.body or "") < 200000)
        else
            assert.truthy(tostring(res):find("closed", 1, true), tostring(res))
        end
        assert.truthy(dt < 2.5, dt)
        eventually(3, function()
            return #log_lines(gw, { "504: route /idle/**", "upstream timed out between reads (idle)" }) == 1
        end, "the idle timeout's log line")
    end)

    it("total: the whole request, retries included, ends at timeouts.total with 504", function()
        local res, dt = timed("/total/x?delay=3")
        assert.equal(504, res.status)
        assert.truthy(dt >= 0.55 and dt < 2.5, dt)
        local id = res.headers["x-request-id"]
        logged(id, "request deadline passed (route timeouts.total)")
        -- two tries timed out by per_try_timeout and were retried first
        assert.equal(2, #log_lines(gw, { id, "retrying after try" }))
    end)
end)

describe("outlier detection", function()
    local ups, gw, admin
    setup(function()
        ups = { a = h.start_upstream { name = "a" }, b = h.start_upstream { name = "b" },
                c = h.start_upstream { name = "c" } }
        admin = h.free_port()
        gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
local targets = { "{{A}}", "{{B}}", "{{C}}" }
gw.upstream("five", targets, { max_fails = 0, outlier = { consecutive_5xx = 2,
    consecutive_gateway_failures = 0, base_ejection_time = 0.5, max_ejection_percent = 34 } })
gw.upstream("slow", targets, { max_fails = 0, outlier = { latency_factor = 5,
    consecutive_5xx = 0, base_ejection_time = 30 } })
gw.route { path = "/five/**", upstream = "five" }
gw.route { path = "/slow/**", upstream = "slow" }
]]):format(admin), { vars = { A = ups.a, B = ups.b, C = ups.c } })
    end)
    teardown(h.cleanup)

    local function outlier_of(up, target)
        for _, u in ipairs(h.json(h.admin(admin, { path = "/upstreams" }).body).upstreams) do
            if u.name == up then
                for _, t in ipairs(u.targets) do
                    if t.target == target then return t.outlier end
                end
            end
        end
    end

    it("5xx in a row eject a target, longer each time, never more than max_ejection_percent", function()
        local path = "/five/x?fail_on=a&fail_on=b"
        local statuses = {}
        eventually(10, function()
            local res = h.http(gw.port, { path = path })
            statuses[res.status] = true
            return #log_lines(gw, { "upstream five", "(ejection 2)" }) > 0
        end, "a second ejection")
        -- a and b answer 503, but only one of three may be out at a time
        local ejected = 0
        for _, n in ipairs { "a", "b", "c" } do
            if outlier_of("five", ups[n].addr).ejected then ejected = ejected + 1 end
        end
        assert.truthy(ejected <= 1)
        assert.is_false(outlier_of("five", ups.c.addr).ejected)
        assert.equal(0, outlier_of("five", ups.c.addr).ejected_total)
        assert.truthy(#log_lines(gw, { "upstream five", "ejected for 0.5 s: 2 5xx answers in a row (ejection 1)" }) >= 1)
        assert.truthy(#log_lines(gw, { "upstream five", "ejected for 1.0 s: 2 5xx answers in a row (ejection 2)" }) >= 1)
        local m = metrics(admin)
        assert.truthy(target_metric(m, "moongate_upstream_target_ejections_total", "five", ups.a.addr) +
                      target_metric(m, "moongate_upstream_target_ejections_total", "five", ups.b.addr) >= 2)
    end)

    it("a reload keeps the targets' ejections and counts", function()
        -- (once the last spec's ejection is over: one target at a time)
        eventually(5, function()
            h.http(gw.port, { path = "/five/r?fail_on=c" })
            return outlier_of("five", ups.c.addr).ejected
        end, "c ejected")
        local o = outlier_of("five", ups.c.addr)
        local base = o.ejected_total
        local res = h.admin(admin, { method = "POST", path = "/reload",
                                     headers = { ["Content-Type"] = "application/json" } })
        assert.equal(200, res.status, res.body)
        -- (whether it is still out depends on how long the reload took:
        -- its 0.5 s ejection may be over; the counts are not timed)
        local after = outlier_of("five", ups.c.addr)
        assert.equal(base, after.ejected_total)
        assert.equal(o.ejections, after.ejections)
        assert.equal(o.attempts, after.attempts)
    end)

    it("a target far slower than the others is ejected", function()
        local path = "/slow/x?delay_on=c:0.05"
        eventually(20, function()
            assert.equal(200, h.http(gw.port, { path = path }).status)
            return outlier_of("slow", ups.c.addr).ejected
        end, "c ejected for its latency")
        local o = outlier_of("slow", ups.c.addr)
        assert.truthy(o.reason:find("^latency"), o.reason)
        assert.is_false(outlier_of("slow", ups.a.addr).ejected)
        -- while it is out, the others answer everything
        local before = ups.c:stats().requests
        for _ = 1, 20 do assert.equal(200, h.http(gw.port, { path = path }).status) end
        assert.equal(before, ups.c:stats().requests)
    end)
end)

describe("outlier detection with active health checks", function()
    teardown(h.cleanup)

    it("an ejected target its checks see healthy comes back when its ejection ends", function()
        local ups = { a = h.start_upstream { name = "a" }, b = h.start_upstream { name = "b" } }
        local admin = h.free_port()
        local gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "{{B}}" }, { max_fails = 0,
    health = { path = "/health", interval = 0.1, timeout = 0.5, fall = 2, rise = 1 },
    outlier = { consecutive_5xx = 2, base_ejection_time = 1.5 } })
gw.route { path = "/svc/**", upstream = "svc" }
]]):format(admin), { vars = { A = ups.a, B = ups.b }, workers = 1 })
        local function a_state()
            for _, t in ipairs(h.json(h.admin(admin, { path = "/upstreams" }).body).upstreams[1].targets) do
                if t.target == ups.a.addr then return t end
            end
        end
        eventually(3, function() return a_state().checks.state == "up" end, "a checked up")
        -- a fails the service's requests, not its health checks
        for _ = 1, 4 do h.http(gw.port, { path = "/svc/x?fail_on=a" }) end
        local t = a_state()
        assert.is_true(t.outlier.ejected)
        local ejected_at = h.now()
        -- its checks keep saying up, and it stays out while ejected
        local before = ups.a:stats().requests
        while h.now() < ejected_at + 0.8 do
            assert.equal(200, h.http(gw.port, { path = "/svc/y" }).status)
            h.sleep(0.02)
        end
        t = a_state()
        assert.equal("up", t.checks.state)
        assert.is_true(t.outlier.ejected)
        assert.equal(before, ups.a:stats().requests)
        -- then it is back, without any check having changed
        eventually(3, function() return not a_state().outlier.ejected end, "the ejection to end")
        eventually(3, function()
            h.http(gw.port, { path = "/svc/z" })
            return ups.a:stats().requests > before
        end, "a to get traffic again")
        gw:assert_alive()
    end)
end)

describe("retries and outlier config", function()
    it("mistakes are file:line errors", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.upstream("a", { "127.0.0.1:1" }, { retries = { attempts = 0, on = { "500" } },
    outlier = { max_ejection_percent = 101, latency_factor = 1 } })
gw.route { path = "/x", upstream = "a", timeouts = { totl = 1 },
           retries = { budget = 1.5, backoff = { base = 1, max = 0.1 } } }
]], "bad.lua")
        assert.equal(1, code)
        for _, want in ipairs {
            "bad.lua:3: upstream.retries.attempts must be an integer 1-10",
            'bad.lua:3: upstream.retries.on must be a list of "connect", "reset", "timeout", "502", "503", "504"',
            "bad.lua:3: upstream.outlier.max_ejection_percent must be an integer 0-100",
            "bad.lua:3: upstream.outlier.latency_factor must be 0 (off) or above 1",
            "bad.lua:5: unknown key 'totl' in route.timeouts",
            "bad.lua:5: route.retries.budget must be a number 0-1",
            "bad.lua:5: route.retries.backoff.max must be at least backoff.base",
        } do
            assert.truthy(out:find(want, 1, true), "expected " .. want .. " in:\n" .. out)
        end
    end)
end)
