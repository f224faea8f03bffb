-- Route mirrors (src/mirror.c, docs/traffic.md "Mirroring") through the
-- real binary, two workers, and real upstreams (spec/support/upstream.py):
--   copies       the shadow gets a copy of each request, the same method,
--                path, request id and body digest as the route's upstream
--                got; a body over mirror.body or chunked is not copied
--                (counted); mirror.percent copies that share
--   slow shadow  one that takes 2 s to answer leaves the client's p99 as it
--                is without a mirror (5 alternating rounds of 300 requests
--                each at 200/s over 8 connections; the median of each round's
--                p99 against the plain round before it; the figures are
--                printed), and so does one that is down (tried once, then
--                skipped while it is out: counted as shadow_down)
--   the bound    mirror.concurrency copies per worker at most: the others
--                are dropped and counted, and never sent later
--   the answer   a shadow answering 503 changes nothing for the client and
--                spends none of the route's retries or retry budget
--   reload       copies in flight keep their generation; nothing leaks
--                (ASan, at exit)
--   stop         copies in flight are cut: the gateway exits at once, clean
local h = require "spec.support.helpers"
local cjson = require "cjson"

local fmt = string.format

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
gw.upstream("slow", { "{{SLOW}}" })
gw.upstream("slow2", { "{{SLOW2}}" })
gw.upstream("down", { "{{DEAD}}" })
gw.upstream("flaky", { "{{MAIN}}" }, { retries = { attempts = 3, on = { "503" } } })
gw.route { name = "copy", path = "/copy/**", upstream = "main",
           mirror = { upstream = "shadow", body = "1k" } }
gw.route { name = "half", path = "/half/**", upstream = "main",
           mirror = { upstream = "shadow", percent = 50 } }
gw.route { name = "plain", path = "/plain/**", upstream = "main" }
gw.route { name = "slow", path = "/slow/**", upstream = "main", mirror = "slow" }
gw.route { name = "bound", path = "/bound/**", upstream = "main",
           mirror = { upstream = "slow2", concurrency = 3 } }
gw.route { name = "down", path = "/down/**", upstream = "main", mirror = "down" }
gw.route { name = "err", path = "/err/**", upstream = "flaky", mirror = "shadow" }
]]

describe("route mirror", function()
    local gw, admin, main, shadow, slow, slow2
    local main_bodies, shadow_bodies

    setup(function()
        main_bodies, shadow_bodies = h.tmpfile("main.txt", ""), h.tmpfile("shadow.txt", "")
        main = h.start_upstream { name = "main", bodies = main_bodies }
        shadow = h.start_upstream { name = "shadow", bodies = shadow_bodies }
        slow = h.start_upstream { name = "slow", delay = 2 }
        slow2 = h.start_upstream { name = "slow2", delay = 2 }
        admin = h.free_port()
        gw = h.start_gateway(CONFIG, { vars = { ADMIN = admin, MAIN = main, SHADOW = shadow,
                                                SLOW = slow, SLOW2 = slow2,
                                                DEAD = h.dead_addr() } })
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
        -- 40 requests within the 2 s the shadow takes: 3 per worker in flight
        for i = 1, 40 do
            assert.equal(200, h.http(gw.port, { path = "/bound/" .. i }).status)
        end
        local sent, dropped = mirror_count("bound", "sent"), mirror_count("bound", "dropped")
        print(fmt("\n  mirror.concurrency = 3 (2 workers): %d copies sent, %d dropped", sent,
                  dropped))
        assert.equal(40, sent + dropped)
        assert.is_true(sent >= 3 and sent <= 6, "sent " .. sent)
        h.eventually(5, function() return answers("bound", "2xx") == sent end,
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
        local function round(path)
            return h.load_start { ports = { gw.port }, paths = { path }, rate = 200,
                                  duration = 1.5, conns = 8 }()
        end
        local p99 = { plain = {}, slow = {}, down = {} }
        local started = h.now()
        for _ = 1, 5 do
            for _, name in ipairs { "plain", "down", "slow" } do
                local r = round("/" .. name .. "/x")
                assert.same({ ["200"] = 300 }, r.status)
                local t = p99[name]
                t[#t + 1] = r.p99 * 1000
            end
            -- the next plain round without copies in flight
            h.eventually(10, function()
                return answers("slow", "2xx") + answers("slow", "error") ==
                    mirror_count("slow", "sent")
            end, "the slow shadow's copies answered")
        end
        -- each round's mirror p99 against the plain round just before it
        -- (the machine's load drifts: paired, it cancels), then the median
        local function median_diff(name)
            local d = {}
            for i = 1, 5 do d[i] = p99[name][i] - p99.plain[i] end
            table.sort(d)
            return d[3]
        end
        local function median(t)
            local c = { unpack(t) }
            table.sort(c)
            return c[3]
        end
        local plain = median(p99.plain)
        local bound = math.max(5 * h.SLOW, 0.2 * plain)
        local dslow, ddown = median_diff("slow"), median_diff("down")
        local function list(t)
            local o = {}
            for i, v in ipairs(t) do o[i] = fmt("%.1f", v) end
            return table.concat(o, " ")
        end
        print(fmt("\n  client p99, 5 rounds of 300 requests at 200/s over 8 connections (ms):" ..
                  "\n    no mirror                %s (median %.2f)" ..
                  "\n    shadow answering in 2 s  %s (median %+.2f against no mirror)" ..
                  "\n    shadow down              %s (median %+.2f)" ..
                  "\n    bound +%.2f ms; copies to the slow shadow: %d sent, %d dropped",
                  list(p99.plain), plain, list(p99.slow), dslow, list(p99.down), ddown, bound,
                  mirror_count("slow", "sent"), mirror_count("slow", "dropped")))
        assert.is_true(dslow <= bound, fmt("slow shadow: p99 %+.2f ms", dslow))
        assert.is_true(ddown <= bound, fmt("shadow down: p99 %+.2f ms", ddown))
        assert.is_true(mirror_count("slow", "dropped") > 0)
        -- the down shadow: refused once per worker, then skipped while its
        -- target is out (max_fails 1, fail_timeout 10 s), tried again after
        local sent, down = mirror_count("down", "sent"), mirror_count("down", "shadow_down")
        print(fmt("  copies to the down shadow: %d tried, %d not (shadow down)", sent, down))
        assert.equal(1500, sent + down)
        -- a try per worker per fail_timeout (10 s), a few more racing it
        local windows = math.ceil((h.now() - started) / 10)
        assert.is_true(sent >= 2 and sent <= 2 * windows * 3, "tried " .. sent)
        h.eventually(3, function() return answers("down", "error") == sent end,
                     "the tried copies counted as errors")
    end)

    it("keeps copies in flight across a reload", function()
        for i = 1, 4 do
            assert.equal(200, h.http(gw.port, { path = "/bound/r" .. i }).status)
        end
        local before = answers("bound", "2xx")
        gw:signal("HUP")
        h.eventually(5, function()
            return answers("bound", "2xx") + answers("bound", "error") >=
                mirror_count("bound", "sent")
        end, "the copies sent before the reload ended")
        assert.is_true(answers("bound", "2xx") >= before)
        assert.equal(200, h.http(gw.port, { path = "/copy/after-reload" }).status)
    end)

    it("stops at once with copies in flight (they are cut, not waited for)", function()
        h.eventually(5, function()
            return answers("bound", "2xx") + answers("bound", "error") ==
                mirror_count("bound", "sent")
        end, "no copy of /bound in flight")
        for i = 1, 3 do
            assert.equal(200, h.http(gw.port, { path = "/bound/s" .. i }).status)
        end
        local t0 = h.now()
        assert.equal(0, gw:stop()) -- exit 0, no sanitizer report (leaks included)
        assert.is_true(h.now() - t0 < 1.8 * h.SLOW, "stopped in " .. (h.now() - t0) .. " s")
    end)
end)
