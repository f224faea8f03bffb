-- Slow clients and long uploads: a request body that stalls (timeouts.body,
-- an idle timeout) or crawls (limits.min_body_rate, averaged over
-- timeouts.body_rate_window once timeouts.body_grace is over) is answered
-- 408 and closed, and the upstream connection it had opened is closed too;
-- an upload that keeps going is never cut by the upstream's read_timeout,
-- which starts once the whole request is sent; a head trickled byte by byte
-- gets its 408 at timeouts.header counted from the accept.
--
-- Timings: the limits are 1 s so the tests stay short. Lower bounds are
-- loose (0.7 s for a 1 s timer: the timer is never early, but the clock of
-- this process and the gateway's differ by the time a send takes); upper
-- bounds are several times the timeout (times h.SLOW under ASan) because a
-- loaded 2-core machine delays timers, never shortens them.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings {
  limits = { body = "2g", min_body_rate = "1k" },
  timeouts = { header = 1, keepalive = 5, body = 1, body_grace = 1,
               body_rate_window = 1, shutdown = 2 },
}
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" }, { read_timeout = 1 })
gw.upstream("up3", { "{{UP}}" }, { read_timeout = 3 })
gw.upstream("lazy", { "{{LAZY}}" }, { read_timeout = 1 })
gw.route { path = "/rt3/**", upstream = "up3" }
gw.route { path = "/lazy/**", upstream = "lazy" }
gw.route { path = "/readbody/**", upstream = "up", policies = { function(req)
    req:set_header("x-body-len", #req:body())
end } }
gw.route { path = "/**", upstream = "up" }
]]

local rep = string.rep
local KIB = 1024

-- An upstream that reads a request head, then takes nothing for 2.5 s (its
-- receive buffer is small: the gateway has to hold the client back), then
-- reads the whole body and answers with the number of bytes it got.
local function start_lazy_reader()
    local port = h.free_port()
    local p = h.spawn(("python3 -c %s"):format(h.shq(([[
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.bind(("127.0.0.1", %d)); s.listen(64); print("ready", flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    time.sleep(2.5)
    got = len(rest)
    while got < n:
        d = c.recv(1 << 20)
        if not d:
            break
        got += len(d)
    body = str(got).encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %%d\r\nConnection: close\r\n\r\n"
              %% len(body) + body)
    c.close()
]]):format(port))), "lazy")
    local deadline = h.now() + 5
    while not p:log():find("ready", 1, true) and h.now() < deadline do h.sleep(0.02) end
    return "127.0.0.1:" .. port
end

describe("slow request bodies", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        -- one worker: one pool, so a reused upstream connection is seen
        gw = h.start_gateway(CONFIG, { vars = { UP = up, LAZY = start_lazy_reader() },
                                       workers = 1 })
    end)

    teardown(h.cleanup)

    -- the gateway's 408, then the close; returns the seconds it took
    local function assert_408_and_close(c, t0)
        local res, err = c:read_response { timeout = 6 * h.SLOW }
        local elapsed = h.now() - t0
        assert(res, "no response after " .. elapsed .. " s: " .. tostring(err))
        h.assert_error(res, 408)
        assert.equal("close", res.headers["connection"])
        assert.is_true(c:closed(2 * h.SLOW), "connection left open after the 408")
        return elapsed
    end

    local function post_head(path, len)
        return "POST " .. path .. " HTTP/1.1\r\nHost: localhost\r\nContent-Length: " ..
               len .. "\r\n\r\n"
    end

    describe("timeouts.body (idle)", function()
        it("a body that stalls after a few bytes is a 408 after it, then close", function()
            local c = h.connect(gw.port)
            c:send(post_head("/stall", 100) .. rep("s", 10))
            local t0 = h.now()
            local elapsed = assert_408_and_close(c, t0)
            assert.is_true(elapsed > 0.7, "408 too early: " .. elapsed)
            assert.is_true(elapsed < 4 * h.SLOW, "408 too late: " .. elapsed)
        end)

        it("a declared 1 GiB chunk that sends 1 KiB is a 408, then close", function()
            local c = h.connect(gw.port)
            c:send("POST /chunk HTTP/1.1\r\nHost: localhost\r\n" ..
                   "Transfer-Encoding: chunked\r\n\r\n40000000\r\n" .. rep("c", KIB))
            local t0 = h.now()
            local elapsed = assert_408_and_close(c, t0)
            assert.is_true(elapsed < 4 * h.SLOW, "408 too late: " .. elapsed)
        end)

        it("a body a policy reads with req:body() that stalls is a 408 too", function()
            local c = h.connect(gw.port)
            c:send(post_head("/readbody/stall", 100) .. rep("s", 10))
            local elapsed = assert_408_and_close(c, h.now())
            assert.is_true(elapsed < 4 * h.SLOW, "408 too late: " .. elapsed)
        end)

        it("the upstream connection the stalled body had taken is closed, not pooled",
           function()
            -- a pooled connection first, then the stalled body takes it
            local first = h.json(assert(h.http(gw.port, { path = "/first" })).body)
            local bad = up:stats().bad
            local c = h.connect(gw.port)
            c:send(post_head("/stall-pooled", 100) .. rep("s", 10))
            assert_408_and_close(c, h.now())
            -- the upstream saw its request end mid-body (it counts that as bad)
            local deadline = h.now() + 5 * h.SLOW
            while up:stats().bad == bad and h.now() < deadline do h.sleep(0.05) end
            assert.is_true(up:stats().bad > bad, "the upstream connection was not closed")
            local after = h.json(assert(h.http(gw.port, { path = "/after" })).body)
            assert.not_equal(first.conn, after.conn)
            assert.equal(1, after.conn_requests)
        end)
    end)

    describe("limits.min_body_rate", function()
        it("a body trickled a byte at a time (below the rate) is a 408, then close",
           function()
            -- every gap (0.1 s) is far below timeouts.body: only the rate
            -- can stop it; it would take 1000 s to send
            local c = h.connect(gw.port)
            c:send(post_head("/trickle", 10000))
            local t0, answered = h.now(), false
            while h.now() - t0 < 8 * h.SLOW do
                c:send("t")
                local ok, err = c:fill(h.now() + 0.1)
                if ok or err == "closed" then
                    answered = true
                    break
                end
            end
            assert.is_true(answered, "still reading a 10 B/s body after " ..
                           (h.now() - t0) .. " s")
            assert_408_and_close(c, t0)
        end)

        it("a steady upload above the rate goes through", function()
            local block = h.block():sub(1, 32 * KIB)
            local c = h.connect(gw.port)
            c:send(post_head("/steady", 16 * #block))
            for _ = 1, 16 do
                c:send(block)
                h.sleep(0.1) -- 1.6 s in all: several rate windows
            end
            local res = assert(c:read_response())
            assert.equal(200, res.status)
            assert.equal(16 * #block, h.json(res.body).body_len)
            c:close()
        end)
    end)

    describe("a client held back by a slow upstream", function()
        it("is not the slow one: 2.5 s without reading is no 408 (nor 504)", function()
            -- 32 MiB: more than every socket buffer on the way holds, so the
            -- gateway must stop reading the client for the 2.5 s
            local block, n = h.block(), 512
            local c = h.connect(gw.port, { timeout = 10 * h.SLOW })
            c:send(post_head("/lazy/up", n * #block))
            for _ = 1, n do
                if not c:send(block) then break end
            end
            local res = assert(c:read_response { timeout = 10 * h.SLOW })
            assert.equal(200, res.status, res.body)
            assert.equal(tostring(n * #block), res.body)
            c:close()
        end)
    end)

    describe("the upstream's read_timeout", function()
        it("starts only once the whole body is sent: a 2.4 s upload with read_timeout 1",
           function()
            local block = h.block()
            local c = h.connect(gw.port)
            c:send(post_head("/upload", 16 * #block))
            for _ = 1, 16 do
                c:send(block)
                h.sleep(0.15)
            end
            local res = assert(c:read_response { timeout = 5 * h.SLOW })
            assert.equal(200, res.status, res.body)
            assert.equal(16 * #block, h.json(res.body).body_len)
            c:close()
        end)

        it("3 MiB sent steadily over 5 s with read_timeout 3 is a 200 (the #10 example)",
           function()
            local block = h.block()
            local c = h.connect(gw.port)
            c:send(post_head("/rt3/upload", 48 * #block))
            for _ = 1, 48 do
                c:send(block)
                h.sleep(5 / 48)
            end
            local res = assert(c:read_response { timeout = 5 * h.SLOW })
            assert.equal(200, res.status, res.body)
            assert.equal(3 * 1024 * KIB, h.json(res.body).body_len)
            c:close()
        end)

        it("still times the wait for the answer once the body is sent", function()
            local t0 = h.now()
            local res = h.http(gw.port, { method = "POST", path = "/late?delay=3",
                                          body = "small" })
            h.assert_error(res, 504)
            assert.is_true(h.now() - t0 < 2.8, "no 504 before the answer came")
        end)
    end)
end)

describe("slow request heads", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway((CONFIG:gsub("header = 1,", "header = 2,")),
                             { vars = { UP = up, LAZY = h.dead_addr() } })
    end)

    teardown(h.cleanup)

    -- trickles a head (one byte every 0.1 s) after `wait` seconds; returns
    -- the response and the seconds from the connect to it
    local function slowloris(wait)
        local c = h.connect(gw.port)
        local t0 = h.now()
        h.sleep(wait)
        local head = "GET /slowloris HTTP/1.1\r\nHost: localhost\r\n" ..
                     rep("X-Slow: " .. rep("a", 40) .. "\r\n", 100)
        for i = 1, #head do
            c:send(head:sub(i, i))
            local ok, err = c:fill(h.now() + 0.1)
            if ok or err == "closed" then break end
            if h.now() - t0 > 10 * h.SLOW then break end
        end
        local elapsed = h.now() - t0
        return c:read_response(), elapsed
    end

    it("a head trickled byte by byte gets a 408 at timeouts.header", function()
        local res, elapsed = slowloris(0)
        h.assert_error(res, 408)
        assert.is_true(elapsed > 1.5, "408 too early: " .. elapsed)
        assert.is_true(elapsed < 5 * h.SLOW, "408 too late: " .. elapsed)
    end)

    it("a first byte sent late buys no time: the wait began at the accept", function()
        -- the first byte comes at 1.5 s: the 408 is due at 2 s, not 3.5 s
        -- (1 s of slack for a loaded machine still tells the two apart)
        local res, elapsed = slowloris(1.5)
        h.assert_error(res, 408)
        assert.is_true(elapsed < 3.0, "408 only after " .. elapsed .. " s")
    end)
end)
