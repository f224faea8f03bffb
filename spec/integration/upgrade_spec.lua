-- Connection upgrades are tunnelled: WebSocket frames and raw bytes of a
-- custom protocol flow both ways after the 101.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { header = 1, keepalive = 1, shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/**", upstream = "up" }
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

    local function websocket()
        local c = h.connect(gw.port)
        c:send("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n" ..
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
end)
