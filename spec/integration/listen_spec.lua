-- Listening addresses belong to one process: its workers share a port
-- (SO_REUSEPORT), nobody else joins them. A second gateway on a port that
-- one already serves fails to start with "Address already in use", like it
-- does on a port held by any other program.
local h = require "spec.support.helpers"

local function config(tag)
    return [[
local gw = require "moongate"
gw.settings { access_log = "off", admin = false, timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT1}}, host = "127.0.0.1" }
gw.listen { port = {{PORT2}}, host = "127.0.0.1" }
gw.route { path = "/who", handler = function() return 200, "]] .. tag .. [[" end }
]]
end

-- Runs `moongate run` on `text` to its end (it must not serve): code, log.
local function run_second(text, name)
    local path = h.tmpfile(name, text)
    return h.run_bin("run -c " .. h.shq(path) .. " --workers 2", 10 * h.SLOW)
end

describe("listening", function()
    teardown(h.cleanup)

    it("a second gateway on the ports of a running one fails to start", function()
        local gw = h.start_gateway(config("first"), { ports = 2 })
        local text = config("second"):gsub("{{PORT(%d)}}", function(i)
            return tostring(gw.ports[tonumber(i)])
        end)
        local code, out = run_second(text, "second.lua")
        assert.equal(1, code, out)
        assert.truthy(out:find(("listen 127.0.0.1:%d: Address already in use")
                                   :format(gw.ports[1]), 1, true), out)
        -- every request is still the first gateway's, on both ports
        for i = 1, 20 do
            local port = gw.ports[i % 2 + 1]
            local res = h.http(port, { path = "/who" })
            assert.equal("first", res.body)
        end
        gw:stop()
    end)

    it("of two gateways started at once on one port, exactly one serves", function()
        local port = h.free_port()
        local text = config("x"):gsub("{{PORT1}}", tostring(port))
            :gsub('gw.listen { port = {{PORT2}}, host = "127.0.0.1" }\n', "")
        local a = h.tmpfile("a.lua", text)
        local b = h.tmpfile("b.lua", text)
        local pa = h.spawn(("exec %s run -c %s --workers 2"):format(h.shq(h.MG_BIN), h.shq(a)), "a")
        local pb = h.spawn(("exec %s run -c %s --workers 2"):format(h.shq(h.MG_BIN), h.shq(b)), "b")
        -- one of them exits (with the error) while the other keeps serving
        local deadline = h.now() + 10 * h.SLOW
        while pa:alive() and pb:alive() and h.now() < deadline do h.sleep(0.02) end
        local loser, winner = pa, pb
        if pb:exit_code() then loser, winner = pb, pa end
        assert.equal(1, loser:exit_code(), loser:log())
        assert.truthy(loser:log():find("Address already in use", 1, true), loser:log())
        assert.truthy(winner:alive(), winner:log())
        assert.equal("x", h.http(port, { path = "/who" }).body)
        winner:kill("TERM", 5)
    end)

    it("a port another program listens on is the same error", function()
        local port = h.free_port()
        -- a plain listening socket held by python for the test's duration
        local holder = h.spawn(("exec python3 -c %s"):format(h.shq(([[
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", %d)); s.listen(); time.sleep(60)
]]):format(port))), "holder")
        local deadline = h.now() + 5
        while not h.can_connect(port) and h.now() < deadline do h.sleep(0.02) end
        local text = config("x"):gsub("{{PORT1}}", tostring(port))
            :gsub('gw.listen { port = {{PORT2}}, host = "127.0.0.1" }\n', "")
        local code, out = run_second(text, "held.lua")
        assert.equal(1, code, out)
        assert.truthy(out:find(("listen 127.0.0.1:%d: Address already in use"):format(port),
                               1, true), out)
        holder:kill("KILL", 3)
    end)
end)
