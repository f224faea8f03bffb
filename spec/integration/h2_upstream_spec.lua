-- HTTP/2 to upstreams (issue #16, src/h2_upstream.c): HTTP/1.1 clients
-- through the gateway to real HTTP/2 servers (spec/support/h2_upstream.py,
-- Debian's python3-h2): h2c with prior knowledge and h2 over TLS by ALPN,
-- many requests multiplexed on few connections (counted at the upstream),
-- SETTINGS_MAX_CONCURRENT_STREAMS honoured, a GOAWAY every few requests
-- under load with no client failing, trailers to a chunked HTTP/1.1 client
-- (curl), 4 MiB both ways and a slow reader at flat gateway memory, health
-- checks over HTTP/2; targets changed by the admin API under a stream in
-- flight (docs/discovery.md): removed and its slot taken by another, drained.
local h = require "spec.support.helpers"
local pki = require "spec.support.pki"

local fmt = string.format
local PY = "/usr/bin/python3" -- Debian's, with python3-h2
local H2PY = "spec/support/h2_upstream.py"

local CONFIG = [[
local gw = require "moongate"
gw.settings { limits = { body = "64m" }, timeouts = { shutdown = 2 },
              admin = { port = {{ADMIN}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("h2", { "127.0.0.1:{{H2}}" }, { protocol = "h2" })
gw.upstream("two", { "127.0.0.1:{{TWO}}" }, { protocol = "h2" })
gw.upstream("goaway", { "127.0.0.1:{{GOAWAY}}" }, { protocol = "h2" })
gw.upstream("tls", { "localhost:{{TLS}}" }, { protocol = "h2", tls = { ca = "{{CA}}" } })
gw.upstream("h1tls", { "localhost:{{H1TLS}}" },
    { protocol = "h2", max_fails = 0, tls = { ca = "{{CA}}" } })
gw.upstream("checked", { "127.0.0.1:{{GOOD}}", "127.0.0.1:{{SICK}}" }, { protocol = "h2",
    health = { path = "/health", interval = 0.2, fall = 1, rise = 1 } })
gw.upstream("down", { "{{DEAD}}" }, { protocol = "h2", max_fails = 0 })
-- one slot: a target added after a removal takes the removed one's
gw.upstream("single", { "127.0.0.1:{{MA}}" }, { protocol = "h2", max_targets = 1 })
-- retries and route timeouts over HTTP/2: a dead target beside a live one
gw.upstream("pair", { "{{DEAD}}", "127.0.0.1:{{PAIR}}" }, { protocol = "h2",
    retries = { attempts = 2, on = { "connect" } } })
gw.route { path = "/pair/**", upstream = "pair", strip_prefix = "/pair",
           timeouts = { first_byte = 0.4 } }
for _, name in ipairs { "h2", "two", "goaway", "tls", "h1tls", "checked", "down", "single" } do
    gw.route { path = "/" .. name .. "/**", upstream = name, strip_prefix = "/" .. name }
end
gw.route { path = "/hooked/**", upstream = "h2", strip_prefix = "/hooked", policies = {
    { on_response = function(req, res) res:set_header("x-seen-status", tostring(res.status)) end },
} }
]]

local function start_h2(opts)
    local port, control = h.free_port(), h.free_port()
    local cmd = fmt("exec %s -u %s --port %d --control-port %d --name %s", PY, H2PY, port,
                    control, opts.name)
    if opts.max_streams then cmd = cmd .. " --max-streams " .. opts.max_streams end
    if opts.goaway_after then cmd = cmd .. " --goaway-after " .. opts.goaway_after end
    if opts.unhealthy then cmd = cmd .. " --unhealthy" end
    if opts.tls then cmd = cmd .. fmt(" --tls-cert %s --tls-key %s", opts.tls.cert, opts.tls.key) end
    local p = h.spawn(cmd, "h2-" .. opts.name)
    p.port, p.control = port, control
    h.eventually(10, function() return p:log():find("ready", 1, true) end,
                 "h2 upstream " .. opts.name .. " ready:\n" .. p:log())
    function p.stats() return h.json(h.http(control, { path = "/stats" }).body) end
    return p
end

describe("HTTP/2 upstreams", function()
    local gw, up, two, goaway, tls, h1tls, good, sick, pair, admin, dead, ma, mb

    setup(function()
        local ca = pki.ca("h2")
        local crt, key = ca:issue("h2srv", { "localhost", "127.0.0.1" })
        up = start_h2 { name = "h2" }
        two = start_h2 { name = "two", max_streams = 2 }
        goaway = start_h2 { name = "goaway", goaway_after = 10 }
        tls = start_h2 { name = "tls", tls = { cert = crt, key = key } }
        good = start_h2 { name = "good" }
        pair = start_h2 { name = "pair" }
        ma = start_h2 { name = "ma" }
        mb = start_h2 { name = "mb" }
        admin, dead = h.free_port(), h.dead_addr()
        sick = start_h2 { name = "sick", unhealthy = true }
        h1tls = h.start_upstream { name = "h1tls", tls = { cert = crt, key = key } }
        gw = h.start_gateway(CONFIG, { workers = 1, vars = {
            H2 = up.port, TWO = two.port, GOAWAY = goaway.port, TLS = tls.port,
            H1TLS = h1tls.port, GOOD = good.port, SICK = sick.port, CA = ca.crt, DEAD = dead,
            PAIR = pair.port, ADMIN = admin, MA = ma.port, MB = mb.port } })
    end)

    teardown(h.cleanup)

    it("proxies a request as HTTP/2 with prior knowledge (h2c)", function()
        local res = h.http(gw.port, { path = "/h2/echo?x=1", headers = { ["X-Thing"] = "yes" } })
        assert.equal(200, res.status)
        local seen = h.json(res.body)
        assert.equal("GET", seen.method)
        assert.equal("/echo?x=1", seen.path)
        assert.equal("http", seen.scheme)
        assert.equal("localhost", seen.authority) -- Host became :authority
        assert.same({ "yes" }, seen.headers["x-thing"])
        assert.same({ "127.0.0.1" }, seen.headers["x-forwarded-for"])
        assert.is_nil(seen.headers.host)
        assert.is_nil(seen.headers.connection)
        assert.equal("application/json", res.headers["content-type"])
        gw:assert_alive()
    end)

    it("multiplexes concurrent requests on few upstream connections", function()
        local before = up.stats()
        local r = h.load_start { ports = { gw.port }, paths = { "/h2/slow?ms=100" },
                                 rate = 400, duration = 1.5, conns = 40 }()
        assert.equal(0, r.errors)
        assert.same({ ["200"] = r.sent }, r.status)
        local after = up.stats()
        -- one worker: 600 requests, 40 at a time, on one or two connections
        assert.is_true(after.connections - before.connections <= 2,
                       "new upstream connections: " .. after.connections - before.connections)
        assert.is_true(after.max_concurrent >= 20, "most streams at once: " .. after.max_concurrent)
    end)

    it("honours SETTINGS_MAX_CONCURRENT_STREAMS = 2 with more connections", function()
        local r = h.load_start { ports = { gw.port }, paths = { "/two/slow?ms=100" },
                                 rate = 200, duration = 1, conns = 20 }()
        assert.equal(0, r.errors)
        assert.same({ ["200"] = r.sent }, r.status)
        local st = two.stats()
        assert.equal(2, st.max_concurrent) -- never a third stream on one connection
        assert.is_true(st.connections >= 6, "connections: " .. st.connections)
    end)

    it("retries the streams a GOAWAY left unprocessed: no client fails", function()
        -- 20 in flight at 200 ms each: each connection's 10th stream is
        -- above the GOAWAY it gets (and those sent after it, when the
        -- gateway is slow to read it)
        local r = h.load_start { ports = { gw.port }, paths = { "/goaway/slow?ms=200" },
                                 rate = 100, duration = 2, conns = 20 }()
        assert.equal(0, r.errors)
        assert.same({ ["200"] = r.sent }, r.status)
        local st = goaway.stats()
        assert.is_true(st.refused > 0, "no stream was above a GOAWAY's last stream")
        assert.equal(r.sent, st.requests)
        assert.is_true(st.connections >= r.sent / 10)
        -- not processed is not failed: no error line for them
        assert.is_nil(gw:log():find("upstream refused the stream", 1, true))
    end)

    it("forwards response trailers to a chunked HTTP/1.1 client (curl)", function()
        local hdr = h.tmpfile("trailers.txt")
        local body = h.sh(fmt("curl -sS -D %s http://127.0.0.1:%d/h2/trailers", hdr, gw.port))
        assert.equal("with trailers", body)
        local dump = io.open(hdr):read("*a")
        assert.truthy(dump:find("Transfer-Encoding: chunked", 1, true), dump)
        -- curl puts the trailers after the head in its dump
        assert.truthy(dump:find("grpc-status: 0\r\n", 1, true), dump)
        assert.truthy(dump:find("grpc-message: all%20good\r\n", 1, true), dump)
        assert.truthy(dump:find("x-checksum: abc\r\n", 1, true), dump)
        local res = h.http(gw.port, { path = "/h2/trailers" })
        assert.same({ ["grpc-status"] = "0", ["grpc-message"] = "all%20good",
                      ["x-checksum"] = "abc" }, res.trailers)
    end)

    it("sends te: trailers upstream only when the client asked for them", function()
        local res = h.http(gw.port, { path = "/h2/echo", headers = { TE = "trailers" } })
        assert.same({ "trailers" }, h.json(res.body).headers.te)
        res = h.http(gw.port, { path = "/h2/echo" })
        assert.is_nil(h.json(res.body).headers.te)
    end)

    it("streams 4 MiB up and down, and a slow reader, at flat gateway memory", function()
        local MIB = 1024 * 1024
        local block = h.block()
        -- up: Content-Length and chunked
        for _, chunked in ipairs { false, true } do
            local c = h.connect(gw.port)
            c:send("POST /h2/echo HTTP/1.1\r\nHost: localhost\r\n" ..
                   (chunked and "Transfer-Encoding: chunked\r\n\r\n"
                            or "Content-Length: " .. 4 * MIB .. "\r\n\r\n"))
            for _ = 1, 64 do
                c:send(chunked and ("10000\r\n" .. block .. "\r\n") or block)
            end
            if chunked then c:send("0\r\n\r\n") end
            local res = assert(c:read_response { timeout = 30 * h.SLOW })
            assert.equal(200, res.status)
            local seen = h.json(res.body)
            assert.equal(4 * MIB, seen.body_len)
            assert.equal(h.upstream_sha256(4 * MIB), seen.sha256)
            c:close()
        end
        -- down
        local check, st = h.pattern_checker()
        local c = h.connect(gw.port)
        c:send(h.request_text { path = "/h2/big?n=" .. 4 * MIB })
        local res = assert(c:read_response { timeout = 30 * h.SLOW, sink = check })
        assert.equal(200, res.status)
        assert.equal(4 * MIB, st.len)
        assert.is_nil(st.bad_at)
        -- a client that stops reading: the stream's window holds the rest
        -- at the upstream (32 MiB there, never in the gateway)
        local base = gw:rss()
        local peak = base
        check, st = h.pattern_checker()
        local paused = false
        c:send(h.request_text { path = "/h2/big?n=" .. 32 * MIB })
        res = assert(c:read_response { timeout = 60 * h.SLOW, sink = function(p)
            check(p)
            if not paused and st.len >= MIB then
                paused = true
                for _ = 1, 10 do
                    h.sleep(0.1)
                    peak = math.max(peak, gw:rss())
                end
            end
            if st.len % (4 * MIB) < #p then peak = math.max(peak, gw:rss()) end
        end })
        assert.equal(32 * MIB, st.len)
        assert.is_nil(st.bad_at)
        c:close()
        assert.is_true(peak - base < 4096, fmt("gateway RSS grew by %d KiB (base %d KiB)",
                                                peak - base, base))
    end)

    it("speaks h2 over TLS by ALPN", function()
        local res = h.http(gw.port, { path = "/tls/echo" })
        assert.equal(200, res.status)
        local seen = h.json(res.body)
        assert.equal("https", seen.scheme)
        assert.equal("tls", seen.name)
        assert.equal(1, tls.stats().connections)
        res = h.http(gw.port, { path = "/tls/echo" })
        assert.equal(200, res.status)
        assert.equal(1, tls.stats().connections) -- the same connection, multiplexed
    end)

    it("refuses a TLS upstream that does not select h2 (502, logged)", function()
        local res = h.http(gw.port, { path = "/h1tls/echo" })
        assert.equal(502, res.status)
        h.eventually(5, function()
            return gw:log():find("did not agree to HTTP/2 by ALPN", 1, true)
        end, "the ALPN failure in the log")
    end)

    it("answers 502 for an h2 upstream that is down", function()
        local res = h.http(gw.port, { path = "/down/echo" })
        assert.equal(502, res.status)
    end)

    it("passes an upstream's status and a reset stream as 502", function()
        assert.equal(503, h.http(gw.port, { path = "/h2/status?code=503" }).status)
        assert.equal(404, h.http(gw.port, { path = "/h2/status?code=404" }).status)
        local res = h.http(gw.port, { path = "/h2/reset" })
        assert.equal(502, res.status)
        h.eventually(5, function()
            return gw:log():find("upstream reset the stream: INTERNAL_ERROR", 1, true)
        end, "the reset in the log")
    end)

    it("runs on_response hooks on an HTTP/2 answer", function()
        local res = h.http(gw.port, { path = "/hooked/echo" })
        assert.equal(200, res.status)
        assert.equal("200", res.headers["x-seen-status"])
    end)

    it("retries a dead target on the live one, times out per route, counts per target", function()
        for _ = 1, 10 do
            local res = h.http(gw.port, { path = "/pair/echo" })
            assert.equal(200, res.status)
            assert.equal("pair", h.json(res.body).name)
        end
        local t0 = h.now()
        local res = h.http(gw.port, { path = "/pair/slow?ms=3000" })
        assert.equal(504, res.status) -- timeouts.first_byte = 0.4
        assert.is_true(h.now() - t0 < 2.5 * h.SLOW)
        local m = h.admin(admin, { path = "/metrics" }).body
        local function series(target, class)
            return tonumber(m:match(('moongate_upstream_responses_total{upstream="pair",target="%s",' ..
                                     'code_class="%s"} (%%d+)'):format(target:gsub("%p", "%%%0"), class)))
        end
        assert.equal(10, series("127.0.0.1:" .. pair.port, "2xx"))
        assert.is_true((series(dead, "error") or 0) >= 1)
        -- and /upstreams says which protocol each upstream speaks
        local ups = h.json(h.admin(admin, { path = "/upstreams" }).body)
        local protocols = {}
        for _, u in ipairs(ups.upstreams or ups) do protocols[u.name] = u.protocol end
        assert.equal("h2", protocols.pair)
    end)

    it("finishes a stream on a target the admin API removed; its session closes, and " ..
       "the target that takes its slot gets the next requests", function()
        local function call(method, path, body)
            return h.admin(admin, { method = method, path = path, body = body }).status
        end
        local a, b = "127.0.0.1:" .. ma.port, "127.0.0.1:" .. mb.port
        local function in_flight(p)
            local st = p.stats()
            return st.received - st.requests
        end
        assert.equal("ma", h.json(h.http(gw.port, { path = "/single/echo" }).body).name)
        -- a stream in flight on ma, then ma removed
        local c = h.connect(gw.port)
        c:send(fmt("GET /single/slow?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n",
                   math.floor(1500 * h.SLOW)))
        h.eventually(5, function() return in_flight(ma) == 1 end, "the stream is at ma")
        assert.equal(200, call("DELETE", "/upstreams/single/targets/" .. a))
        -- its slot is not free while the stream (and its session) lives
        assert.equal(409, call("POST", "/upstreams/single/targets",
                               fmt('{"target":"%s"}', b)))
        h.eventually(5, function()
            return h.http(gw.port, { path = "/single/echo" }).status == 503
        end, "no target left")
        local res = assert(c:read_response { timeout = 10 * h.SLOW })
        assert.equal(200, res.status)
        assert.equal("slow", res.body)
        c:close()
        -- the removed target's session closes after its last stream: no
        -- idle session is kept for a target that left
        h.eventually(5, function() return ma.stats().open == 0 end, "ma's session closed")
        -- then the slot takes mb: every request goes to mb, none to ma
        h.eventually(5, function()
            return call("POST", "/upstreams/single/targets", fmt('{"target":"%s"}', b)) == 201
        end, "the slot is free again")
        local received = ma.stats().received
        h.eventually(5, function()
            return h.http(gw.port, { path = "/single/echo" }).status == 200
        end, "mb takes requests")
        for _ = 1, 10 do
            res = h.http(gw.port, { path = "/single/echo" })
            assert.equal(200, res.status)
            assert.equal("mb", h.json(res.body).name)
        end
        assert.equal(received, ma.stats().received)
        -- a drain: the stream in flight finishes, no new stream, the
        -- session closes; undrained, a new session takes requests
        c = h.connect(gw.port)
        c:send(fmt("GET /single/slow?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n",
                   math.floor(1500 * h.SLOW)))
        h.eventually(5, function() return in_flight(mb) == 1 end, "the stream is at mb")
        local conns = mb.stats().connections
        assert.equal(200, call("PUT", "/upstreams/single/targets/" .. b, '{"drain":true}'))
        h.eventually(5, function()
            return h.http(gw.port, { path = "/single/echo" }).status == 503
        end, "mb drains")
        local got = mb.stats().received
        res = assert(c:read_response { timeout = 10 * h.SLOW })
        assert.equal(200, res.status)
        assert.equal("slow", res.body)
        c:close()
        h.eventually(5, function() return mb.stats().open == 0 end, "mb's session closed")
        assert.equal(got, mb.stats().received)
        assert.equal(200, call("PUT", "/upstreams/single/targets/" .. b, '{"drain":false}'))
        h.eventually(5, function()
            return h.http(gw.port, { path = "/single/echo" }).status == 200
        end, "mb undrained")
        assert.equal(conns + 1, mb.stats().connections)
        gw:assert_alive()
    end)

    it("checks the health of h2 targets over HTTP/2", function()
        -- the sick target answers /health 503: it goes out, all go to the other
        h.eventually(10, function()
            local names = {}
            for _ = 1, 10 do
                local r = h.http(gw.port, { path = "/checked/echo" })
                names[h.json(r.body).name] = true
            end
            return names.good and not names.sick
        end, "the sick target taken out")
        gw:assert_alive()
    end)
end)
