-- Connection upgrades are tunnelled: WebSocket frames and raw bytes of a
-- custom protocol flow both ways after the 101. Only the protocols a route
-- allows (route.upgrades, default { "websocket" }) are: any other Upgrade
-- (h2c always, any upgrade in HTTP/1.0) is removed and the request goes
-- upstream as an ordinary one; policies decide before any tunnel opens.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { header = 1, keepalive = 1, shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/echo", upstream = "up", upgrades = { "websocket", "echo" } }
gw.route { path = "/foo/**", upstream = "up", upgrades = { "websocket", "foo" } }
gw.route { path = "/none/**", upstream = "up", upgrades = {} }
gw.route { path = "/guarded/**", upstream = "up", upgrades = { "echo" },
           policies = { function(req)
    if req:header("x-key") ~= "k" then
        return gw.respond(401, "no key")
    end
end } }
gw.route { path = "/**", upstream = "up" }

function gw.on_request(req)
    if req.path == "/ws-denied" then
        return gw.respond(401, "denied before any tunnel")
    end
end
]]

-- RFC 6455 section 1.3 example
local KEY, ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

describe("upgrade", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    local function websocket(path)
        local c = h.connect(gw.port)
        c:send("GET " .. (path or "/ws") .. " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n" ..
               "Connection: Upgrade\r\nSec-WebSocket-Key: " .. KEY .. "\r\n" ..
               "Sec-WebSocket-Version: 13\r\n\r\n")
        local res = assert(c:read_response())
        return c, res
    end

    describe("WebSocket", function()
        it("the handshake gets 101 with the upstream's Sec-WebSocket-Accept", function()
            local c, res = websocket()
            assert.equal(101, res.status)
            assert.equal("websocket", (res.headers["upgrade"] or ""):lower())
            assert.equal(ACCEPT, res.headers["sec-websocket-accept"])
            assert.equal("up", res.headers["x-upstream-name"])
            c:close()
        end)

        it("a masked text frame is echoed back", function()
            local c = websocket()
            c:send(h.ws_frame(0x1, "hello through the gateway"))
            local f = assert(c:read_ws_frame())
            assert.equal(0x1, f.opcode)
            assert.equal("hello through the gateway", f.payload)
            assert.is_false(f.masked)
            c:close()
        end)

        it("several frames both ways, including a 70000-byte binary frame", function()
            local c = websocket()
            for i = 1, 5 do
                c:send(h.ws_frame(0x1, "msg " .. i))
                assert.equal("msg " .. i, assert(c:read_ws_frame()).payload)
            end
            local big = string.rep("\0\1\2\255", 17500)
            c:send(h.ws_frame(0x2, big))
            local f = assert(c:read_ws_frame())
            assert.equal(0x2, f.opcode)
            assert.equal(big, f.payload)
            c:close()
        end)

        it("a close frame is answered and the connection closes", function()
            local c = websocket()
            c:send(h.ws_frame(0x8, "\3\232"))
            local f = assert(c:read_ws_frame())
            assert.equal(0x8, f.opcode)
            assert.is_true(c:closed(3))
        end)

        it("an idle tunnel is not closed by the keep-alive or header timeouts", function()
            local c = websocket()
            h.sleep(1.5)
            c:send(h.ws_frame(0x1, "still here"))
            assert.equal("still here", assert(c:read_ws_frame()).payload)
            c:close()
        end)
    end)

    describe("Upgrade: echo", function()
        it("tunnels raw bytes both ways", function()
            local c = h.connect(gw.port)
            c:send("GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\n" ..
                   "Connection: Upgrade\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(101, res.status)
            for _, msg in ipairs { "raw bytes\0\1\2", "GET / HTTP/1.1\r\n\r\n",
                                   string.rep("x", 100000) } do
                c:send(msg)
                assert.equal(msg, assert(c:read_exact(#msg)))
            end
            c:close()
        end)

        it("bytes sent together with the upgrade request reach the upstream", function()
            local c = h.connect(gw.port)
            c:send("GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\n" ..
                   "Connection: Upgrade\r\n\r\nearly bytes")
            local res = assert(c:read_response())
            assert.equal(101, res.status)
            assert.equal("early bytes", assert(c:read_exact(11)))
            c:close()
        end)

        it("the client closing the tunnel does not disturb the gateway", function()
            local c = h.connect(gw.port)
            c:send("GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\n" ..
                   "Connection: Upgrade\r\n\r\n")
            assert.equal(101, assert(c:read_response()).status)
            c:send("half")
            c:close()
            h.sleep(0.1)
            assert.equal(200, h.http(gw.port, { path = "/after-tunnel" }).status)
            gw:assert_alive()
        end)
    end)

    -- sends an upgrade request for `proto` on a new connection; returns the
    -- connection and the response (the upstream's JSON view when the
    -- upgrade was removed)
    local function ask(path, proto, extra, version)
        local c = h.connect(gw.port)
        c:send("GET " .. path .. " HTTP/" .. (version or "1.1") .. "\r\n" ..
               "Host: localhost\r\nUpgrade: " .. proto .. "\r\n" ..
               "Connection: Upgrade" .. (extra or "") .. "\r\n\r\n")
        return c, assert(c:read_response())
    end

    -- the upstream saw an ordinary request: no Upgrade, no upgrade token
    local function assert_plain(res)
        assert.equal(200, res.status)
        local seen = h.json(res.body).headers
        assert.is_nil(seen["upgrade"])
        assert.is_nil(seen["http2-settings"])
        assert.is_falsy((seen["connection"] or ""):lower():find("upgrade"))
    end

    describe("route.upgrades", function()
        it('{ "websocket", "foo" } tunnels Upgrade: foo', function()
            local c, res = ask("/foo/x", "foo")
            assert.equal(101, res.status)
            assert.equal("foo", res.headers["upgrade"])
            c:send("foo bytes")
            assert.equal("foo bytes", assert(c:read_exact(9)))
            c:close()
        end)

        it("a protocol offered several times is forwarded once", function()
            local c, res = ask("/foo/x", "foo, FOO, foo/2, h2c, foo")
            assert.equal(101, res.status)
            -- the test upstream answers with the Upgrade value it got
            assert.equal("foo", res.headers["upgrade"])
            c:close()
        end)

        it('{ "websocket", "foo" } still tunnels websocket', function()
            local c, res = websocket("/foo/ws")
            assert.equal(101, res.status)
            c:send(h.ws_frame(0x1, "hi"))
            assert.equal("hi", assert(c:read_ws_frame()).payload)
            c:close()
        end)

        it("an upstream that refuses the upgrade: its answer, then the close", function()
            -- no Sec-WebSocket-Key: the test upstream answers 400
            local c, res = ask("/ws", "websocket")
            assert.equal(400, res.status)
            assert.equal("up", res.headers["x-upstream-name"])
            assert.equal("close", res.headers["connection"])
            assert.is_true(c:closed(0.5))
        end)

        it("Upgrade: foo where only websocket is allowed (the default) goes up plain",
           function()
            local c, res = ask("/plain", "foo")
            assert_plain(res)
            c:close()
        end)
    end)

    describe("upgrades a route does not allow", function()
        it("Upgrade: echo on a route with the default list goes up as a plain request",
           function()
            local c, res = ask("/plain", "echo")
            assert_plain(res)
            -- and the connection is an HTTP/1.1 one still
            c:send("GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
            local res2 = assert(c:read_response())
            assert.equal(200, res2.status)
            assert.equal("/after", h.json(res2.body).path)
            c:close()
        end)

        it("h2c is always removed, with HTTP2-Settings, even where others are allowed",
           function()
            for _, path in ipairs { "/plain", "/echo" } do
                local c, res = ask(path, "h2c", ", HTTP2-Settings\r\n" ..
                                   "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")
                assert_plain(res)
                c:close()
            end
        end)

        it("HTTP2-Settings alone is not forwarded either", function()
            local res = h.http(gw.port, { path = "/plain", headers = {
                ["HTTP2-Settings"] = "AAMAAABkAARAAAAAAAIAAAAA" } })
            assert.equal(200, res.status)
            assert.is_nil(h.json(res.body).headers["http2-settings"])
        end)

        it("of several offered protocols only the allowed ones go upstream", function()
            -- the test upstream switches to what it is offered: "echo" only
            local c, res = ask("/echo", "h2c, echo")
            assert.equal(101, res.status)
            assert.equal("echo", res.headers["upgrade"])
            c:send("through")
            assert.equal("through", assert(c:read_exact(7)))
            c:close()
        end)

        it("upgrades = {} allows none, not even websocket", function()
            local c, res = ask("/none/ws", "websocket",
                               "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" ..
                               "Sec-WebSocket-Version: 13")
            assert_plain(res)
            c:close()
        end)

        it("an HTTP/1.0 request's Upgrade is ignored (RFC 9110 section 7.8)", function()
            local c, res = ask("/echo", "echo", nil, "1.0")
            assert_plain(res)
            assert.equal("HTTP/1.1", h.json(res.body).version)
            c:close()
        end)

        it("a 101 for a request whose Upgrade was removed is a 502, no tunnel", function()
            local q = "?status=101&hdr=Upgrade:h2c&hdr=Connection:upgrade"
            local c, res = ask("/plain" .. q, "h2c")
            h.assert_error(res, 502)
            -- the connection is still plain HTTP/1.1
            c:send("GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert.equal(200, assert(c:read_response()).status)
            c:close()
            -- a 101 nobody asked for at all
            res = h.http(gw.port, { path = "/plain?status=101&hdr=Upgrade:echo" ..
                                           "&hdr=Connection:upgrade" })
            h.assert_error(res, 502)
        end)

        it("CONNECT is refused (405), never a tunnel", function()
            for _, target in ipairs { "localhost:80", "/" } do
                local c = h.connect(gw.port)
                c:send("CONNECT " .. target .. " HTTP/1.1\r\nHost: localhost:80\r\n\r\n")
                local res = assert(c:read_response())
                assert.is_true(res.status == 405 or res.status == 400, res.status)
                assert.equal("close", res.headers["connection"])
                c:close()
            end
        end)
    end)

    describe("policies decide before any upgrade", function()
        it("an on_request hook answering 401 prevents the tunnel", function()
            local before = up:stats().requests
            local c, res = websocket("/ws-denied")
            assert.equal(401, res.status)
            -- no tunnel: the gateway closes at once rather than read the
            -- protocol (0.5 s: far below the 1 s keep-alive timeout, far
            -- above the few ms the close takes)
            assert.equal("close", res.headers["connection"])
            c:send(h.ws_frame(0x1, "hello?"))
            assert.is_true(c:closed(0.5))
            assert.equal(before, up:stats().requests)
        end)

        it("a route policy answering 401 prevents the tunnel", function()
            local before = up:stats().requests
            local c, res = ask("/guarded/x", "echo")
            assert.equal(401, res.status)
            assert.equal("close", res.headers["connection"])
            c:send("raw bytes for a tunnel")
            assert.is_true(c:closed(0.5))
            assert.equal(before, up:stats().requests)
        end)

        it("the same request with what the policy wants is tunnelled", function()
            local c, res = ask("/guarded/x", "echo", "\r\nX-Key: k")
            assert.equal(101, res.status)
            c:send("ok")
            assert.equal("ok", assert(c:read_exact(2)))
            c:close()
        end)
    end)

    describe("route.upgrades in the config", function()
        local function refused(list, want)
            local code, out, path = h.check_config(
                'local gw = require "moongate"\n' ..
                'gw.upstream("up", { "127.0.0.1:9" })\n' ..
                'gw.route { path = "/", upstream = "up", upgrades = ' .. list .. ' }\n')
            assert.not_equal(0, code)
            assert.truthy(out:find(path .. ":3: ", 1, true), out)
            assert.truthy(out:find(want, 1, true), out)
        end

        it("a list in any case, with repeats, loads (names are case-insensitive)", function()
            local code, out = h.check_config(
                'local gw = require "moongate"\n' ..
                'gw.listen { port = 8080 }\n' ..
                'gw.upstream("up", { "127.0.0.1:9" })\n' ..
                'gw.route { path = "/", upstream = "up", upgrades = { "WebSocket", "Foo", "foo" } }\n' ..
                'gw.route { path = "/none", upstream = "up", upgrades = {} }\n')
            assert.equal(0, code, out)
        end)

        it("h2c cannot be allowed", function()
            refused('{ "websocket", "h2c" }', 'route.upgrades[2] "h2c" cannot be allowed')
        end)

        it("a list of protocol tokens is required", function()
            refused('"websocket"', "route.upgrades must be a list")
            refused('{ "web socket" }', "route.upgrades[1] must be a protocol name")
            refused('{ "websocket/13" }', "route.upgrades[1] must be a protocol name")
        end)

        it("a handler route cannot list upgrades", function()
            local code, out = h.check_config(
                'local gw = require "moongate"\n' ..
                'gw.route { path = "/", handler = function() return 200 end,\n' ..
                '           upgrades = { "websocket" } }\n')
            assert.not_equal(0, code)
            assert.truthy(out:find("route.upgrades needs an upstream", 1, true), out)
        end)
    end)
end)
