-- Answers made or reshaped by hooks (gw.respond, handlers, res:set_status)
-- follow the framing rules of upstream answers (RFC 9110 6.4.1, 8.6, 15):
-- 204 and 304 have no body and no Content-Length, a HEAD answer no body,
-- and 1xx are refused (the 1xx a client gets are the gateway's own).
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" })

local function answer(status, body, headers)
    return function() return gw.respond(status, body, headers) end
end

gw.route { path = "/r204", upstream = "up", policies = { answer(204, "x") } }
gw.route { path = "/r204h", upstream = "up",
           policies = { answer(204, "x", { ["X-Kept"] = "yes" }) } }
gw.route { path = "/r304", upstream = "up", policies = {
    answer(304, "not sent", { ETag = '"v1"', ["Cache-Control"] = "max-age=5" }) } }
gw.route { path = "/r200", upstream = "up", policies = { answer(200, "hello") } }
gw.route { path = "/r101", upstream = "up", policies = { function(req)
    return gw.respond(101)  -- refused: names this line
end } }
gw.route { path = "/r100", upstream = "up", policies = { answer(100, "x") } }
gw.route { path = "/h204", handler = function() return 204, "x" end }
gw.route { path = "/h101", handler = function() return 101 end }

-- on_response changes of a proxied answer
gw.route { path = "/set/**", upstream = "up", policies = { {
    on_response = function(req, res)
        local want = req:header("x-set-status")
        if want then res:set_status(tonumber(want)) end
        local body = req:header("x-respond")
        if body then return gw.respond(tonumber(body), "replaced") end
    end } } }
gw.route { path = "/**", upstream = "up" }
gw.route { path = "/cached/**", upstream = "up", cache = { ttl = 30 }, policies = { {
    on_response = function(req, res)
        local want = req:header("x-set-status")
        if want then res:set_status(tonumber(want)) end
    end } } }
]]

describe("gateway-made answers", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { U = up.addr } })
    end)

    teardown(h.cleanup)

    -- the raw bytes of one answer on a fresh connection that closes after it
    local function raw(req)
        req.headers = req.headers or {}
        req.headers.Connection = "close"
        local c = h.connect(gw.port)
        c:send(h.request_text(req))
        local bytes = assert(c:read_until_close())
        c:close()
        return bytes
    end

    -- polls the gateway's log for a plain string (the log is written by
    -- another process: no fixed sleep)
    local function log_has(text)
        local deadline = h.now() + 5 * h.SLOW
        repeat
            if h.read_file(gw.log_path):find(text, 1, true) then return true end
            h.sleep(0.02)
        until h.now() > deadline
        return false
    end

    describe("gw.respond(204, body)", function()
        it("sends no body, Content-Length or Content-Type", function()
            local bytes = raw { path = "/r204" }
            local head, rest = bytes:match("^(.-\r\n)\r\n(.*)$")
            assert.matches("^HTTP/1.1 204 No Content\r\n", head)
            assert.equal("", rest)
            assert.is_nil(head:lower():find("content-length", 1, true))
            assert.is_nil(head:lower():find("content-type", 1, true))
            assert.truthy(head:find("\r\nX-Request-Id: ", 1, true))
        end)

        it("keeps the hook's own headers", function()
            local res = h.http(gw.port, { path = "/r204h" })
            assert.equal(204, res.status)
            assert.equal("yes", res.headers["x-kept"])
        end)

        it("lets the next pipelined request get its own, correct answer", function()
            local c = h.connect(gw.port)
            c:send(h.request_text { path = "/r204" } .. h.request_text { path = "/after" })
            local first = assert(c:read_response())
            assert.equal(204, first.status)
            local second = assert(c:read_response())
            assert.equal(200, second.status)
            assert.equal("/after", h.json(second.body).path)
            assert.equal("", c:read_available(0.1)) -- nothing stray after it
            c:close()
        end)
    end)

    it("gw.respond(304) keeps the validators, sends no body or Content-Length", function()
        local bytes = raw { path = "/r304" }
        local head, rest = bytes:match("^(.-\r\n)\r\n(.*)$")
        assert.matches("^HTTP/1.1 304 Not Modified\r\n", head)
        assert.truthy(head:find('\r\nETag: "v1"\r\n', 1, true))
        assert.truthy(head:find("\r\nCache-Control: max-age=5\r\n", 1, true))
        assert.is_nil(head:lower():find("content-length", 1, true))
        assert.equal("", rest)
    end)

    it("a HEAD request gets the Content-Length of the answer, not its body", function()
        local c = h.connect(gw.port)
        c:send(h.request_text { method = "HEAD", path = "/r200" } ..
               h.request_text { path = "/after-head" })
        local res = assert(c:read_response { method = "HEAD" })
        assert.equal(200, res.status)
        assert.equal("5", res.headers["content-length"])
        local nxt = assert(c:read_response())
        assert.equal("/after-head", h.json(nxt.body).path)
        c:close()
    end)

    describe("a 1xx from a hook", function()
        it("gw.respond(101) is refused: 500 with the request id, the hook named in the log", function()
            local c = h.connect(gw.port)
            local res = c:request { path = "/r101" }
            local body = h.assert_error(res, 500)
            assert.truthy(log_has("gw.respond: status must be an integer 200-599"))
            local log = h.read_file(gw.log_path)
            assert.truthy(log:find("gateway.lua:%d+: gw.respond: status must be"), log)
            assert.truthy(body.request_id)
            -- and the connection goes on answering
            local nxt = c:request { path = "/after-101" }
            assert.equal("/after-101", h.json(nxt.body).path)
            c:close()
        end)

        it("gw.respond(100) is refused the same way", function()
            h.assert_error(h.http(gw.port, { path = "/r100" }), 500)
        end)

        it("a handler's 101 is refused (500)", function()
            h.assert_error(h.http(gw.port, { path = "/h101" }), 500)
            assert.truthy(log_has("handler: status must be an integer 200-599"))
        end)

        it("res:set_status(101) in on_response is refused (500), the hook named", function()
            local res = h.http(gw.port, { path = "/set/a", headers = { ["X-Set-Status"] = "101" } })
            h.assert_error(res, 500)
            assert.truthy(log_has("res:set_status: status must be an integer 200-599"))
            local log = h.read_file(gw.log_path)
            assert.truthy(log:find("gateway.lua:%d+: res:set_status: status must be"), log)
        end)
    end)

    it("a handler's 204 sends no body either", function()
        local bytes = raw { path = "/h204" }
        assert.matches("^HTTP/1.1 204 No Content\r\n", bytes)
        assert.equal("\r\n\r\n", bytes:sub(-4))
        assert.is_nil(bytes:lower():find("content-length", 1, true))
    end)

    describe("an on_response hook's status reframes the upstream's answer", function()
        it("200 -> 204: the upstream's body is dropped, no Content-Length", function()
            local c = h.connect(gw.port)
            c:send(h.request_text { path = "/set/b", headers = { ["X-Set-Status"] = "204" } } ..
                   h.request_text { path = "/set/after" })
            local res = assert(c:read_response())
            assert.equal(204, res.status)
            assert.is_nil(res.headers["content-length"])
            assert.is_nil(res.headers["transfer-encoding"])
            local nxt = assert(c:read_response())
            assert.equal("/set/after", h.json(nxt.body).path)
            c:close()
        end)

        it("200 chunked -> 304: no body, no framing headers", function()
            local bytes = raw { path = "/set/c?chunked=1", headers = { ["X-Set-Status"] = "304" } }
            local head, rest = bytes:match("^(.-\r\n)\r\n(.*)$")
            assert.matches("^HTTP/1.1 304 ", head)
            assert.is_nil(head:lower():find("content-length", 1, true))
            assert.is_nil(head:lower():find("transfer-encoding", 1, true))
            assert.equal("", rest)
        end)

        it("204 -> 200: says Content-Length: 0 (the answer is not left unframed)", function()
            local c = h.connect(gw.port)
            local res = c:request { path = "/set/d?status=204", headers = { ["X-Set-Status"] = "200" } }
            assert.equal(200, res.status)
            assert.equal("0", res.headers["content-length"])
            assert.equal("", res.body)
            local nxt = c:request { path = "/set/after2" }
            assert.equal("/set/after2", h.json(nxt.body).path)
            c:close()
        end)

        it("gw.respond(204, body) in on_response sends no body", function()
            local c = h.connect(gw.port)
            c:send(h.request_text { path = "/set/e", headers = { ["X-Respond"] = "204" } } ..
                   h.request_text { path = "/set/after3" })
            local res = assert(c:read_response())
            assert.equal(204, res.status)
            assert.is_nil(res.headers["content-length"])
            local nxt = assert(c:read_response())
            assert.equal("/set/after3", h.json(nxt.body).path)
            c:close()
        end)

        it("on an answer from the cache too", function()
            h.http(gw.port, { path = "/cached/x" }) -- kept
            local c = h.connect(gw.port)
            c:send(h.request_text { path = "/cached/x", headers = { ["X-Set-Status"] = "204" } } ..
                   h.request_text { path = "/set/after4" })
            local res = assert(c:read_response())
            assert.equal(204, res.status)
            assert.truthy(res.headers["cache-status"]:find("hit", 1, true))
            assert.is_nil(res.headers["content-length"])
            local nxt = assert(c:read_response())
            assert.equal("/set/after4", h.json(nxt.body).path)
            c:close()
        end)
    end)
end)
