-- What the fuzz targets (spec/fuzz, docs/fuzzing.md) found, end to end with
-- the real binary: each `it` is one bug, with the input that showed it.
local h = require "spec.support.helpers"
local redis = require "spec.support.redis"

-- An upstream that answers every request with the same bytes, then closes.
local function start_raw_upstream(answer)
    local port = h.free_port()
    local p = h.spawn(("python3 -c %s"):format(h.shq(([[
import socket, sys
answer = bytes.fromhex(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(64); print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(answer)
    c.close()
]]):format(port))) .. " " .. (answer:gsub(".", function(ch)
        return ("%02x"):format(ch:byte())
    end)), "raw upstream")
    local deadline = h.now() + 5
    while not p:log():find("ready", 1, true) and h.now() < deadline do h.sleep(0.02) end
    return "127.0.0.1:" .. port
end

describe("found by fuzzing", function()
    teardown(h.cleanup)

    -- spec/fuzz/corpus/upstream/crash-103-with-body
    it("an interim 1xx answer ends with its head: a body it announces is no answer",
       function()
        local up = start_raw_upstream("HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n" ..
                                      "helloHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("raw", { "{{U}}" })
gw.route { path = "/**", upstream = "raw" }
]], { vars = { U = up }, workers = 1 })
        -- before: the client got "hello" ahead of any status line
        local res = h.http(gw.port, { path = "/x" })
        h.assert_error(res, 502)
    end)

    it("an interim 1xx answer without a body is still dropped before the answer", function()
        local up = start_raw_upstream("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" ..
                                      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("raw", { "{{U}}" })
gw.route { path = "/**", upstream = "raw" }
]], { vars = { U = up }, workers = 1 })
        local res = h.http(gw.port, { path = "/x" })
        assert.equal(200, res.status)
        assert.equal("ok", res.body)
        assert.same({}, res.interim or {})
    end)

    -- spec/fuzz/corpus/cache/crash-blob-line-without-space
    it("a kept answer in Redis whose header line is not 'Name: value' is a miss", function()
        local up = h.start_upstream { name = "up" }
        local red = redis.start()
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { workers = 1 }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" })
gw.route { path = "/r/**", upstream = "up",
           cache = { ttl = 30, redis = { port = {{R}}, timeout = 1 } } }
function gw.on_response(req, res)
    res:set_header("x-seen", res:header("x-upstream-name") or "none")
end
]], { vars = { U = up.addr, R = red.port } })
        local first = h.http(gw.port, { path = "/r/a" })
        assert.equal("moongate; fwd=uri-miss; stored", first.headers["cache-status"])
        -- The field X-Upstream-Name says its value is 65535 bytes long
        -- (its two-byte length, after the name's, set to ff ff): the same
        -- number of bytes, so the blob's own lengths still agree, but the
        -- span runs past the blob (the kept form of a value span 2^32 - 1
        -- bytes long, read by res:header, that HTTP/1 lines once gave).
        -- (The key holds newlines: the script finds it itself.)
        local script = [[
local k = redis.call('KEYS', 'mgcache:*')[1]
if not k then return -1 end
local w, n = string.gsub(redis.call('GET', k), '(\15%z)..(X%-Upstream%-Name)', '%1\255\255%2', 1)
redis.call('SET', k, w, 'KEEPTTL')
return n]]
        local n
        local deadline = h.now() + 5 * h.SLOW
        repeat -- the SET is not awaited
            n = red:cli("EVAL", script, "0")
            if n ~= "1" then h.sleep(0.02) end
        until n == "1" or h.now() > deadline
        assert.equal("1", n)
        local res = h.http(gw.port, { path = "/r/a" })
        assert.equal(200, res.status)
        assert.equal("moongate; fwd=uri-miss; stored", res.headers["cache-status"])
        assert.equal("up", res.headers["x-seen"])
    end)

    -- spec/fuzz/corpus/http_conn/body-hook-answer-pipelined
    it("a policy that waited for the body and answered leaves the next pipelined request alone",
       function()
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.route { path = "/echo", handler = function() return 204 end, policies = {
    function(req) return gw.respond(200, { len = #req:body() }) end,
} }
gw.route { path = "/hello", handler = function() return 200, "hello\n" end }
]], { workers = 1 })
        local c = h.connect(gw.port)
        -- the body and the start of the next request in one write: the body
        -- wakes the policy after the next request's struct was reused
        c:send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" ..
               "GET /hello HTTP/1.1\r\nHo")
        local first = c:read_response()
        assert.equal(200, first.status)
        assert.equal(3, h.json(first.body).len)
        c:send("st: a\r\n\r\n")
        local second = c:read_response()
        assert.equal(200, second.status)
        assert.equal("hello\n", second.body)
        c:close()
        gw:assert_alive()
    end)
end)
