-- Request limits (414, 431, 413), client timeouts (408) and
-- Expect: 100-continue, with small limits so the tests stay fast.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings {
  limits = { request_line = 1024, header_size = "4k", header_count = 20, body = "64k" },
  timeouts = { header = 1, keepalive = 5, body = 1, shutdown = 2 },
}
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/small/**", upstream = "up", max_body = 100 }
gw.route { path = "/**", upstream = "up" }
]]

local rep = string.rep

describe("limits", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    -- sends raw bytes on a new connection, returns the response and conn
    local function raw(data, opts)
        local c = h.connect(gw.port)
        c:send(data)
        local res, err = c:read_response(opts)
        assert(res, "no response: " .. tostring(err))
        return res, c
    end

    local function requests()
        return up:stats().requests
    end

    describe("request line", function()
        it("longer than limits.request_line is a 414 and the connection closes", function()
            local res, c = raw(h.request_text { path = "/" .. rep("a", 1100) })
            h.assert_error(res, 414)
            assert.is_true(c:closed(2))
        end)

        it("within limits.request_line is served", function()
            local res = h.http(gw.port, { path = "/" .. rep("a", 900) })
            assert.equal(200, res.status)
        end)
    end)

    describe("headers", function()
        it("a header block larger than limits.header_size is a 431", function()
            local res, c = raw(h.request_text { path = "/big",
                headers = { ["X-Big"] = rep("b", 5000) } })
            h.assert_error(res, 431)
            assert.is_true(c:closed(2))
        end)

        it("many headers adding up to more than limits.header_size is a 431", function()
            local hs = {}
            for i = 1, 15 do hs[i] = { "X-H" .. i, rep("v", 300) } end
            local res = raw(h.request_text { path = "/big", headers = hs })
            h.assert_error(res, 431)
        end)

        it("more than limits.header_count fields is a 431", function()
            local hs = {}
            for i = 1, 25 do hs[i] = { "X-H" .. i, "v" } end
            local res = raw(h.request_text { path = "/many", headers = hs })
            h.assert_error(res, 431)
        end)

        it("exactly limits.header_count fields is served", function()
            local hs = { { "Host", "localhost" } }
            for i = 1, 19 do hs[#hs + 1] = { "X-H" .. i, "v" } end
            local res = raw(h.request_text { path = "/count", headers = hs })
            assert.equal(200, res.status)
        end)
    end)

    describe("body", function()
        it("Content-Length above limits.body is a 413 before the body is sent", function()
            local before = requests()
            local res = raw("POST /big HTTP/1.1\r\nHost: localhost\r\n" ..
                            "Content-Length: 100000\r\n\r\n")
            h.assert_error(res, 413)
            assert.equal(before, requests())
        end)

        it("a body of exactly limits.body is served", function()
            local body = rep("x", 65536)
            local res = h.http(gw.port, { method = "POST", path = "/exact", body = body })
            assert.equal(200, res.status)
            assert.equal(65536, h.json(res.body).body_len)
        end)

        it("a route's max_body overrides limits.body", function()
            local before = requests()
            local res = raw("POST /small/x HTTP/1.1\r\nHost: localhost\r\n" ..
                            "Content-Length: 200\r\n\r\n")
            h.assert_error(res, 413)
            assert.equal(before, requests())
            res = h.http(gw.port, { method = "POST", path = "/other", body = rep("y", 200) })
            assert.equal(200, res.status)
        end)

        it("a chunked body growing past the limit is a 413", function()
            local chunk = rep("z", 40000)
            local data = "POST /chunky HTTP/1.1\r\nHost: localhost\r\n" ..
                         "Transfer-Encoding: chunked\r\n\r\n" ..
                         "9c40\r\n" .. chunk .. "\r\n" .. "9c40\r\n" .. chunk .. "\r\n"
            local res = raw(data)
            h.assert_error(res, 413)
        end)

        it("a chunked body within the limit is served", function()
            local chunk = rep("z", 30000)
            local res = raw("POST /chunky HTTP/1.1\r\nHost: localhost\r\n" ..
                            "Transfer-Encoding: chunked\r\n\r\n" ..
                            "7530\r\n" .. chunk .. "\r\n7530\r\n" .. chunk .. "\r\n0\r\n\r\n")
            assert.equal(200, res.status)
            assert.equal(60000, h.json(res.body).body_len)
        end)
    end)

    describe("timeouts", function()
        it("an incomplete head is a 408 after timeouts.header, then close", function()
            local c = h.connect(gw.port)
            local t0 = h.now()
            c:send("GET /slow HTTP/1.1\r\nHost: localhost\r\n")
            local res, err = c:read_response { timeout = 4 * h.SLOW }
            local elapsed = h.now() - t0
            assert(res, "no response: " .. tostring(err))
            h.assert_error(res, 408)
            assert.is_true(elapsed > 0.7, "408 too early: " .. elapsed)
            assert.is_true(elapsed < 3 * h.SLOW, "408 too late: " .. elapsed)
            assert.is_true(c:closed(2))
        end)

        it("a head trickled byte by byte still gets 408 at the deadline", function()
            local c = h.connect(gw.port)
            local t0 = h.now()
            c:send("GET /slowloris HTTP/1.1\r\nHost: localhost\r\n")
            local line = "X-Slow: " .. rep("a", 40) .. "\r\n"
            local i, got = 1, false
            while h.now() - t0 < 6 * h.SLOW do
                c:send(line:sub(i, i))
                i = i % #line + 1
                local ok, err = c:fill(h.now() + 0.1)
                if ok or err == "closed" then
                    got = true
                    break
                end
            end
            local elapsed = h.now() - t0
            assert.is_true(got, "connection still open after " .. elapsed .. " s")
            assert.is_true(elapsed < 2.5 * h.SLOW, "408 too late: " .. elapsed)
            local res = assert(c:read_response())
            h.assert_error(res, 408)
        end)

        it("a connection that sends nothing is closed after timeouts.header", function()
            local c = h.connect(gw.port)
            local t0 = h.now()
            local _, err = c:read_until_close(t0 + 4 * h.SLOW)
            assert.is_nil(err)
            assert.is_true(h.now() - t0 > 0.7)
        end)

        it("a stalled request body is given up after timeouts.body", function()
            local c = h.connect(gw.port)
            c:send("POST /stall HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n" ..
                   rep("s", 10))
            local t0 = h.now()
            local _, err = c:read_until_close(t0 + 5 * h.SLOW)
            assert.is_nil(err, "connection not closed")
            assert.is_true(h.now() - t0 > 0.7)
        end)
    end)

    describe("Expect: 100-continue", function()
        it("the client gets 100 Continue before sending the body, then the answer", function()
            local c = h.connect(gw.port)
            c:send("POST /expect HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n" ..
                   "Expect: 100-continue\r\n\r\n")
            local interim = assert(c:read_head { timeout = 2 })
            assert.equal(100, interim.status)
            c:send("hello world")
            local res = assert(c:read_response())
            assert.equal(200, res.status)
            assert.equal(11, h.json(res.body).body_len)
            c:close()
        end)

        it("a too large Content-Length gets 413 directly, without 100", function()
            local before = requests()
            local c = h.connect(gw.port)
            c:send("POST /expect HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n" ..
                   "Expect: 100-continue\r\n\r\n")
            local res = assert(c:read_response { timeout = 2 })
            assert.same({}, res.interim)
            h.assert_error(res, 413)
            assert.equal(before, requests())
        end)
    end)
end)
