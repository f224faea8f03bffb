-- Route mirrors (src/mirror.c, docs/traffic.md "Mirroring") through the
-- real binary, two workers, and real upstreams (spec/support/upstream.py):
--   copies       the shadow gets a copy of each request, the same method,
--                path, request id and body digest as the route's upstream
--                got; a body over mirror.body or chunked is not copied
--                (counted); mirror.percent copies that share
--   slow shadow  one that takes 2 s to answer leaves the client's p99 as it
--                is without a mirror: three gateways alike but for the
--                mirror (none, the 2 s shadow, a shadow that is down) under
--                one load run at once, 5 rounds of 400 requests to each at
--                200/s over 8 connections; the median of the rounds' p99
--                differences within max(5 ms, 20 %); the figures are
--                printed. A shadow that is down is tried once, then skipped
--                while it is out (counted as shadow_down)
--   the bound    mirror.concurrency copies per worker at most (a shadow
--                answering in 4 s): the others
--                are dropped and counted, and never sent later
--   the answer   a shadow answering 503 changes nothing for the client and
--                spends none of the route's retries or retry budget
--   reload       copies in flight keep their generation; nothing leaks
--                (ASan, at exit)
--   stop         copies in flight are cut: the gateway exits at once, clean
local h = require "spec.support.helpers"
local cjson = require "cjson"

local fmt = string.format

local SLOW2_DELAY = 4 -- s: slow2's answers (the concurrency bound's shadow)

teardown(h.cleanup)

-- The value of one exact series ("name{labels}") in the metrics text, or 0.
local function value(text, series)
    for line in text:gmatch("[^\n]+") do
        local s, v = line:match("^(.-) (%S+)$")
        if s == series then return tonumber(v) end
    end
    return 0
end

local function lines_of(path)
    local out = {}
    for l in (h.read_file(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
    return out
end

local CONFIG = [[
local gw = require "moongate"
gw.settings { access_log = "off", admin = { port = {{ADMIN}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("main", { "{{MAIN}}" })
gw.upstream("shadow", { "{{SHADOW}}" })
gw.upstream("slow2", { "{{SLOW2}}" })
gw.upstream("flaky", { "{{MAIN}}" }, { retries = { attempts = 3, on = { "503" } } })
gw.route { name = "copy", path = "/copy/**", upstream = "main",
           mirror = { upstream = "shadow", body = "1k" } }
gw.route { name = "half", path = "/half/**", upstream = "main",
           mirror = { upstream = "shadow", percent = 50 } }
gw.route { name = "plain", path = "/plain/**", upstream = "main" }
gw.route { name = "bound", path = "/bound/**", upstream = "main",
           mirror = { upstream = "slow2", concurrency = 3 } }
gw.route { name = "err", path = "/err/**", upstream = "flaky", mirror = "shadow" }
]]

describe("route mirror", function()
    local gw, admin, main, shadow, slow, slow2
    local main_bodies, shadow_bodies

    setup(function()
        main_bodies, shadow_bodies = h.tmpfile("main.txt", ""), h.tmpfile("shadow.txt", "")
        main = h.start_upstream { name = "main", bodies = main_bodies }
        shadow = h.start_upstream { name = "shadow", bodies = shadow_bodies }
        -- its own CPU (64 connections at once) is the machine's, not the
        -- gateway's: at the lowest priority it takes none from the rounds
        slow = h.start_upstream { name = "slow", delay = 2, nice = true }
        -- the bound's shadow: long enough that no copy of a burst ends
        -- within it, even under ASan on a loaded machine
        slow2 = h.start_upstream { name = "slow2", delay = SLOW2_DELAY }
        admin = h.free_port()
        gw = h.start_gateway(CONFIG, { vars = { ADMIN = admin, MAIN = main, SHADOW = shadow,
                                                SLOW2 = slow2 } })
    end)

    local function metrics()
        local res = h.admin(admin, { path = "/metrics" })
        assert.equal(200, res.status)
        return res.body
    end

    local function mirror_count(route, result)
        return value(metrics(), fmt('moongate_mirror_requests_total{route="%s",result="%s"}',
                                    route, result))
    end

    local function answers(route, class)
        return value(metrics(), fmt('moongate_mirror_responses_total{route="%s",code_class="%s"}',
                                    route, class))
    end

    it("sends the shadow a copy of each request: method, path, id and body", function()
        local ids = {}
        for i = 1, 120 do
            local req = { path = fmt("/copy/%d?q=%d", i, i) }
            if i % 3 == 0 then
                req.method, req.body = "POST", string.rep(string.char(65 + i % 26), i * 7)
            elseif i % 3 == 1 then
                req.method, req.body = "PUT", "" -- a body of no bytes
            end
            local res = h.http(gw.port, req)
            assert.equal(200, res.status)
            assert.equal("main", res.headers["x-upstream-name"])
            ids[res.headers["x-request-id"]] = true
        end
        h.eventually(5, function() return #lines_of(shadow_bodies) >= 120 end,
                     "120 copies at the shadow")
        -- what each got, keyed by request id
        local function by_id(path)
            local t = {}
            for _, l in ipairs(lines_of(path)) do
                local id = l:match("^(%S+)")
                if ids[id] then t[id] = l end
            end
            return t
        end
        local got_main, got_shadow = by_id(main_bodies), by_id(shadow_bodies)
        local n = 0
        for id in pairs(ids) do
            n = n + 1
            assert.equal(got_main[id], got_shadow[id])
        end
        assert.equal(120, n)
        assert.equal(120, mirror_count("copy", "sent"))
        h.eventually(3, function() return answers("copy", "2xx") == 120 end,
                     "120 answers to copies counted")
    end)

    it("copies a body sent after Expect: 100-continue", function()
        local body = string.rep("e", 700)
        local c = h.connect(gw.port)
        c:send("POST /copy/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 700\r\n" ..
               "Expect: 100-continue\r\n\r\n")
        assert.equal(100, assert(c:read_head()).status) -- asked for before any body
        c:send(body)
        local res = assert(c:read_response())
        c:close()
        assert.equal(200, res.status)
        assert.equal(700, cjson.decode(res.body).body_len)
        local id = res.headers["x-request-id"]
        h.eventually(3, function()
            return (h.read_file(shadow_bodies) or ""):find(id .. " POST /copy/expect 700 ", 1,
                                                          true) ~= nil
        end, "the copy with its 700 bytes")
    end)

    it("names the mirror in the admin API's /routes", function()
        local routes = {}
        for _, r in ipairs(h.json(h.admin(admin, { path = "/routes" }).body).routes) do
            routes[r.name] = r
        end
        assert.same({ "main", "shadow" }, { routes.copy.upstream, routes.copy.mirror })
        assert.is_nil(routes.plain.mirror)
    end)

    it("copies no body over mirror.body, nor a chunked one, and counts them", function()
        local big = h.http(gw.port, { method = "POST", path = "/copy/big",
                                      body = string.rep("b", 2048) })
        local chunked = h.http(gw.port, { method = "POST", path = "/copy/chunked",
                                          headers = { ["Transfer-Encoding"] = "chunked" },
                                          body = "5\r\nhello\r\n0\r\n\r\n" })
        assert.equal(200, big.status)
        assert.equal(200, chunked.status)
        assert.equal(2048, cjson.decode(big.body).body_len)
        assert.equal(5, cjson.decode(chunked.body).body_len)
        assert.equal(2, mirror_count("copy", "body_too_large"))
        local small = h.http(gw.port, { method = "POST", path = "/copy/after", body = "s" })
        local id = small.headers["x-request-id"]
        h.eventually(3, function()
            return (h.read_file(shadow_bodies) or ""):find(id, 1, true) ~= nil
        end, "the small body's copy")
        local text = h.read_file(shadow_bodies)
        assert.is_nil(text:find(big.headers["x-request-id"], 1, true))
        assert.is_nil(text:find(chunked.headers["x-request-id"], 1, true))
    end)

    it("copies about mirror.percent of the requests", function()
        for i = 1, 400 do
            assert.equal(200, h.http(gw.port, { path = "/half/" .. i }).status)
        end
        local sent = mirror_count("half", "sent")
        print(fmt("\n  mirror.percent = 50: %d of 400 requests copied", sent))
        assert.is_true(sent >= 140 and sent <= 260, "copied " .. sent)
    end)

    it("drops copies beyond mirror.concurrency, counted, never sent later", function()
        -- 40 requests, while the shadow takes SLOW2_DELAY s to answer: 3 per
        -- worker in flight, 6 in all; a slot is free again only once a copy
        -- has been answered, so a burst longer than that (a very loaded
        -- machine) may send 6 more per SLOW2_DELAY s
        local t0 = h.now()
        for i = 1, 40 do
            assert.equal(200, h.http(gw.port, { path = "/bound/" .. i }).status)
        end
        local took = h.now() - t0
        local sent, dropped = mirror_count("bound", "sent"), mirror_count("bound", "dropped")
        print(fmt("\n  mirror.concurrency = 3 (2 workers): %d copies sent, %d dropped " ..
                  "(40 requests in %.2f s)", sent, dropped, took))
        assert.equal(40, sent + dropped)
        local most = 6 * (1 + math.floor(took / SLOW2_DELAY))
        assert.is_true(sent >= 3 and sent <= most, fmt("sent %d (at most %d)", sent, most))
        h.eventually(2 * SLOW2_DELAY, function() return answers("bound", "2xx") == sent end,
                     "the copies answered")
        h.sleep(0.5) -- nothing was queued: the shadow saw only those
        assert.equal(sent, slow2:stats().requests)
    end)

    it("never changes the client's answer nor spends its retries", function()
        for i = 1, 30 do
            -- the shadow answers 503; main answers 200
            local res = h.http(gw.port, { path = "/err/" .. i .. "?fail_on=shadow" })
            assert.equal(200, res.status)
            assert.equal("main", res.headers["x-upstream-name"])
        end
        h.eventually(3, function() return answers("err", "5xx") == 30 end, "30 5xx copies")
        local m = metrics()
        assert.equal(0, value(m, 'moongate_upstream_retries_total{upstream="flaky"}'))
        assert.equal(0, value(m, 'moongate_upstream_retries_budget_refused_total{upstream="flaky"}'))
    end)

    it("leaves the client's p99 alone with a shadow that takes 2 s or is down", function()
        -- three gateways of one worker each, alike but for the route's
        -- mirror: none, the slow shadow, a shadow that is down. One load
        -- run spreads its connections over the three, so that each round
        -- meets the machine's load (other builds, suites) at the same
        -- moments on all of them; a round's p99s are compared within it.
        local TEXT = [[
local gw = require "moongate"
gw.settings { access_log = "off", admin = { port = {{PORT2}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("main", { "{{MAIN}}" })
gw.upstream("slow", { "{{SLOW}}" })
gw.upstream("down", { "{{DEAD}}" })
gw.route { name = "x", path = "/x/**", upstream = "main"%s }
]]
        local vars = { MAIN = main, SLOW = slow, DEAD = h.dead_addr() }
        local gws = {}
        for _, v in ipairs { { "plain", "" }, { "slow", ', mirror = "slow"' },
                             { "down", ', mirror = "down"' } } do
            gws[v[1]] = h.start_gateway(TEXT:format(v[2]), { vars = vars, ports = 2,
                                                            workers = 1 })
        end
        local function count(g, series)
            local res = h.admin(g.ports[2], { path = "/metrics" })
            return value(res.body, series)
        end
        local S = 'moongate_mirror_requests_total{route="x",result="%s"}'
        local A = 'moongate_mirror_responses_total{route="x",code_class="%s"}'
        local NAMES = { "plain", "slow", "down" }
        local p99 = { plain = {}, slow = {}, down = {} }
        local got = { plain = 0, slow = 0, down = 0 }
        local started = h.now()
        for _ = 1, 5 do
            local r = h.load_start { ports = { gws.plain.port, gws.slow.port, gws.down.port },
                                     paths = { "/x/y" }, rate = 600, duration = 2,
                                     conns = 24 }()
            assert.same({ ["200"] = 1200 }, r.status)
            for _, name in ipairs(NAMES) do
                local pr = r.ports[tostring(gws[name].port)]
                -- (a free connection takes the next request: about a third each)
                assert.is_true(pr.count >= 200, name .. ": " .. pr.count)
                got[name] = got[name] + pr.count
                local t = p99[name]
                t[#t + 1] = pr.p99 * 1000
            end
            -- each round starts without copies in flight
            h.eventually(10, function()
                return count(gws.slow, A:format("2xx")) + count(gws.slow, A:format("error")) ==
                    count(gws.slow, S:format("sent"))
            end, "the slow shadow's copies answered")
        end
        -- each round's difference to the gateway without a mirror, the median
        local function median_diff(name)
            local d = {}
            for i = 1, 5 do d[i] = p99[name][i] - p99.plain[i] end
            table.sort(d)
            return d[3]
        end
        local sorted = { unpack(p99.plain) }
        table.sort(sorted)
        local plain = sorted[3]
        local bound = math.max(5 * h.SLOW, 0.2 * plain)
        local dslow, ddown = median_diff("slow"), median_diff("down")
        local function list(t)
            local o = {}
            for i, v in ipairs(t) do o[i] = fmt("%.1f", v) end
            return table.concat(o, " ")
        end
        print(fmt("\n  client p99 in 5 rounds of 400 requests at 200/s over 8 connections to each " ..
                  "gateway at once (ms):" ..
                  "\n    no mirror                %s (median %.2f)" ..
                  "\n    shadow answering in 2 s  %s (median %+.2f against no mirror)" ..
                  "\n    shadow down              %s (median %+.2f)" ..
                  "\n    bound +%.2f ms; copies to the slow shadow: %d sent, %d dropped",
                  list(p99.plain), plain, list(p99.slow), dslow, list(p99.down), ddown, bound,
                  count(gws.slow, S:format("sent")), count(gws.slow, S:format("dropped"))))
        assert.is_true(dslow <= bound, fmt("slow shadow: p99 %+.2f ms", dslow))
        assert.is_true(ddown <= bound, fmt("shadow down: p99 %+.2f ms", ddown))
        assert.is_true(count(gws.slow, S:format("dropped")) > 0)
        -- the down shadow: refused once, then skipped while its target is
        -- out (max_fails 1, fail_timeout 10 s), tried again after
        local sent, down = count(gws.down, S:format("sent")), count(gws.down,
                                                                     S:format("shadow_down"))
        print(fmt("  copies to the down shadow: %d tried, %d not (shadow down)", sent, down))
        assert.equal(got.down, sent + down)
        local windows = math.ceil((h.now() - started) / 10)
        -- (the copies that came while the refused connect was on its way)
        assert.is_true(sent >= 1 and sent <= windows * 10, "tried " .. sent)
        h.eventually(3, function() return count(gws.down, A:format("error")) == sent end,
                     "the tried copies counted as errors")
        for _, name in ipairs(NAMES) do assert.equal(0, gws[name]:stop()) end
    end)

    it("keeps copies in flight across a reload", function()
        for i = 1, 4 do
            assert.equal(200, h.http(gw.port, { path = "/bound/r" .. i }).status)
        end
        local before = answers("bound", "2xx")
        gw:signal("HUP")
        h.eventually(2 * SLOW2_DELAY, function()
            return answers("bound", "2xx") + answers("bound", "error") >=
                mirror_count("bound", "sent")
        end, "the copies sent before the reload ended")
        assert.is_true(answers("bound", "2xx") >= before)
        assert.equal(200, h.http(gw.port, { path = "/copy/after-reload" }).status)
    end)

    it("stops at once with copies in flight (they are cut, not waited for)", function()
        h.eventually(2 * SLOW2_DELAY, function()
            return answers("bound", "2xx") + answers("bound", "error") ==
                mirror_count("bound", "sent")
        end, "no copy of /bound in flight")
        for i = 1, 3 do
            assert.equal(200, h.http(gw.port, { path = "/bound/s" .. i }).status)
        end
        local t0 = h.now()
        assert.equal(0, gw:stop()) -- exit 0, no sanitizer report (leaks included)
        -- (well before the copies' answers, SLOW2_DELAY s away)
        assert.is_true(h.now() - t0 < math.min(0.8 * SLOW2_DELAY, 1.8 * h.SLOW),
                       "stopped in " .. (h.now() - t0) .. " s")
    end)
end)
