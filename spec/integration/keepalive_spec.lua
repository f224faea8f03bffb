-- Persistent connections on both sides, HTTP/1.0, Connection: close,
-- pipelining, idle timeout. One worker, so that upstream connection reuse
-- is observable through the upstream's per-connection id.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { keepalive = 1, shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" }, { keepalive = 8 })
gw.route { path = "/**", upstream = "up" }
]]

describe("keep-alive", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up }, workers = 1 })
    end)

    teardown(h.cleanup)

    it("serves many requests on one client connection", function()
        local c = h.connect(gw.port)
        for i = 1, 20 do
            local res = c:request { path = "/seq/" .. i }
            assert.equal(200, res.status)
            assert.equal("/seq/" .. i, h.json(res.body).path)
        end
        c:close()
    end)

    it("reuses the upstream connection for sequential requests", function()
        local c = h.connect(gw.port)
        local conns = {}
        for i = 1, 5 do
            local seen = h.json(c:request { path = "/reuse/" .. i }.body)
            conns[i] = seen.conn
        end
        c:close()
        for i = 2, 5 do assert.equal(conns[1], conns[i]) end
    end)

    it("reuses upstream connections across client connections", function()
        local a = h.json(h.http(gw.port, { path = "/reuse-a" }).body)
        local b = h.json(h.http(gw.port, { path = "/reuse-b" }).body)
        assert.equal(a.conn, b.conn)
        assert.is_true(b.conn_requests > a.conn_requests)
    end)

    it("does not reuse an upstream connection the upstream closed", function()
        local first = h.json(h.http(gw.port, { path = "/c1?close=1" }).body)
        local res = h.http(gw.port, { path = "/c2" })
        assert.equal(200, res.status)
        assert.are_not.equal(first.conn, h.json(res.body).conn)
    end)

    it("recovers when the upstream restarts (stale pooled connection)", function()
        assert.equal(200, h.http(gw.port, { path = "/before-restart" }).status)
        local port = up.port
        h.cleanup(up)
        up = h.start_upstream { name = "up", port = port }
        h.sleep(0.1)
        local res = h.http(gw.port, { path = "/after-restart" })
        assert.equal(200, res.status)
        assert.equal("/after-restart", h.json(res.body).path)
    end)

    it("HTTP/1.0 without keep-alive gets its answer, then the connection closes", function()
        local c = h.connect(gw.port)
        c:send("GET /ten HTTP/1.0\r\nHost: localhost\r\n\r\n")
        local res = assert(c:read_response())
        assert.equal(200, res.status)
        assert.equal("/ten", h.json(res.body).path)
        assert.is_true(c:closed(2))
    end)

    it("HTTP/1.0 with Connection: keep-alive stays open", function()
        local c = h.connect(gw.port)
        for i = 1, 3 do
            c:send("GET /ten-ka/" .. i .. " HTTP/1.0\r\nHost: localhost\r\n" ..
                   "Connection: keep-alive\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(200, res.status)
            assert.equal("/ten-ka/" .. i, h.json(res.body).path)
            assert.are_not.equal("close", res.framing)
        end
        assert.is_false(c:closed(0.2))
        c:close()
    end)

    it("Connection: close from the client closes after the response", function()
        local c = h.connect(gw.port)
        c:send("GET /bye HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        local res = assert(c:read_response())
        assert.equal(200, res.status)
        assert.is_true(c:closed(2))
    end)

    it("answers pipelined requests in order", function()
        local c = h.connect(gw.port)
        c:send(h.request_text { path = "/p1?delay=0.3" } ..
               h.request_text { path = "/p2?delay=0.1" } ..
               h.request_text { path = "/p3" })
        for _, p in ipairs { "/p1?delay=0.3", "/p2?delay=0.1", "/p3" } do
            local res = assert(c:read_response())
            assert.equal(200, res.status)
            assert.equal(p, h.json(res.body).path)
        end
        c:close()
    end)

    it("answers pipelined requests with bodies in order", function()
        local c = h.connect(gw.port)
        c:send(h.request_text { method = "POST", path = "/b1", body = "first" } ..
               h.request_text { method = "POST", path = "/b2",
                                headers = { ["Transfer-Encoding"] = "chunked" },
                                body = "7\r\nsecond!\r\n0\r\n\r\n" } ..
               h.request_text { path = "/b3" })
        local want = { { "/b1", 5 }, { "/b2", 7 }, { "/b3", 0 } }
        for _, w in ipairs(want) do
            local seen = h.json(assert(c:read_response()).body)
            assert.equal(w[1], seen.path)
            assert.equal(w[2], seen.body_len)
        end
        c:close()
    end)

    it("closes an idle keep-alive connection after timeouts.keepalive", function()
        local c = h.connect(gw.port)
        assert.equal(200, c:request { path = "/idle" }.status)
        local t0 = h.now()
        assert.is_true(c:closed(4 * h.SLOW))
        local idle = h.now() - t0
        assert.is_true(idle > 0.7, "closed too early: " .. idle)
    end)

    it("keeps a connection that is used more often than the idle timeout", function()
        local c = h.connect(gw.port)
        for i = 1, 4 do
            assert.equal(200, c:request { path = "/busy/" .. i }.status)
            h.sleep(0.4)
        end
        c:close()
    end)
end)
