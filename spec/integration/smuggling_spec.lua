-- Request smuggling and malformed framing: every ambiguous or malformed
-- request is a 400, the connection is closed (so nothing that follows is
-- parsed as a request), and the upstream sees nothing at all.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { header = 2, shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/**", upstream = "up" }
]]

-- a request a desync would make the gateway forward
local SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"

local CASES = {
    { "Content-Length together with Transfer-Encoding",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n" ..
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" .. SMUGGLED },
    { "Transfer-Encoding together with Content-Length (TE first)",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n" ..
      "Content-Length: 44\r\n\r\n0\r\n\r\n" .. SMUGGLED },
    { "two differing Content-Length fields",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n" ..
      "Content-Length: 44\r\n\r\nhello" .. SMUGGLED },
    { "Content-Length: 1, 2",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1, 2\r\n\r\nxy" .. SMUGGLED },
    { "a non-numeric Content-Length",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello" .. SMUGGLED },
    { "Transfer-Encoding: chunked, identity",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n" ..
      "0\r\n\r\n" .. SMUGGLED },
    { "an unknown Transfer-Encoding",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: foo\r\n\r\n" ..
      "0\r\n\r\n" .. SMUGGLED },
    { "Transfer-Encoding: identity",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: identity\r\n\r\n" ..
      SMUGGLED },
    { "an invalid chunk size (zz)",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "zz\r\nhello\r\n0\r\n\r\n" .. SMUGGLED },
    { "a negative chunk size",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "-1\r\nhello\r\n0\r\n\r\n" .. SMUGGLED },
    { "an overflowing chunk size",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "1ffffffffffffffff0\r\nhello\r\n0\r\n\r\n" .. SMUGGLED },
    { "an obs-fold header continuation line",
      "GET /a HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n folded\r\n\r\n" .. SMUGGLED },
    { "an obs-fold continuation of Transfer-Encoding",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n chunked\r\n" ..
      "Content-Length: 3\r\n\r\n0\r\n\r\n" .. SMUGGLED },
    { "bare LF line endings",
      "GET /a HTTP/1.1\nHost: localhost\n\n" .. SMUGGLED },
    { "a bare LF in one header line",
      "GET /a HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n" .. SMUGGLED },
    { "a space before the colon of a header name",
      "GET /a HTTP/1.1\r\nHost: localhost\r\nX-A : b\r\n\r\n" .. SMUGGLED },
    { "a space before the colon of Content-Length",
      "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\nhello" .. SMUGGLED },
    { "a missing Host in HTTP/1.1",
      "GET /a HTTP/1.1\r\nX-A: b\r\n\r\n" .. SMUGGLED },
    { "a NUL byte in a header value",
      "GET /a HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n" .. SMUGGLED },
}

describe("smuggling", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    for _, case in ipairs(CASES) do
        local what, data = case[1], case[2]
        it(what .. ": 400, close, nothing upstream", function()
            local before = up:stats()
            local c = h.connect(gw.port)
            c:send(data)
            local res, err = c:read_response()
            assert(res, "no response: " .. tostring(err))
            h.assert_error(res, 400)
            assert.is_true(c:closed(2), "connection not closed after the 400")
            assert.equal("", c.buf, "bytes after the 400: " .. c.buf)
            h.sleep(0.05) -- let a late forward show up in the counts
            local after = up:stats()
            assert.equal(before.requests, after.requests, "the upstream got a request")
        end)
    end

    it("a well-formed chunked request with a pipelined follow-up is two requests", function()
        local c = h.connect(gw.port)
        c:send("POST /ok HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n" ..
               "5\r\nhello\r\n0\r\n\r\n" .. "GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        local a = h.json(assert(c:read_response()).body)
        local b = h.json(assert(c:read_response()).body)
        assert.equal("/ok", a.path)
        assert.equal(5, a.body_len)
        assert.equal("/next", b.path)
        c:close()
    end)

    it("Content-Length with two equal values in one field is not a desync", function()
        -- RFC 9112 6.3 allows accepting "5, 5"; rejecting is also fine: what
        -- matters is that the body is exactly 5 bytes either way
        local c = h.connect(gw.port)
        c:send("POST /same HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 5\r\n\r\nhello" ..
               SMUGGLED)
        local res = assert(c:read_response())
        if res.status == 400 then
            h.assert_error(res, 400)
            assert.is_true(c:closed(2))
        else
            assert.equal(5, h.json(res.body).body_len)
            assert.equal("/smuggled", h.json(assert(c:read_response()).body).path)
        end
        c:close()
    end)
end)
