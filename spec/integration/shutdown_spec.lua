-- Graceful shutdown on SIGTERM: in-flight requests finish, new connections
-- are refused, idle connections do not hold the exit, the deadline holds.
-- Each test starts (and ends) its own gateway.
local h = require "spec.support.helpers"

local function config(shutdown)
    return [[
local gw = require "moongate"
gw.settings { timeouts = { shutdown = ]] .. shutdown .. [[ } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/**", upstream = "up" }
]]
end

describe("graceful shutdown", function()
    local up

    setup(function()
        up = h.start_upstream { name = "up" }
    end)

    teardown(h.cleanup)

    it("an in-flight request completes, new connections are refused, exit 0", function()
        local gw = h.start_gateway(config(5), { vars = { UP = up } })
        local c = h.connect(gw.port)
        c:send(h.request_text { path = "/inflight?delay=1" })
        h.sleep(0.2)
        local t0 = h.now()
        gw:signal("TERM")

        local refused = false
        while h.now() - t0 < 0.7 do
            local c2 = h.try_connect(gw.port, { connect_timeout = 0.2 })
            if not c2 then
                refused = true
                break
            end
            c2:close()
            h.sleep(0.02)
        end
        assert.is_true(refused, "still accepting connections 0.7 s after SIGTERM")

        local res, err = c:read_response { timeout = 5 }
        assert(res, "in-flight request lost: " .. tostring(err))
        assert.equal(200, res.status)
        assert.equal("/inflight?delay=1", h.json(res.body).path)

        local code = gw:wait_exit(5)
        assert.equal(0, code, "exit code")
        assert.is_true(h.now() - t0 < 3 * h.SLOW, "exit took " .. (h.now() - t0) .. " s")
        h.cleanup(gw)
    end)

    it("idle keep-alive connections are closed and do not delay the exit", function()
        local gw = h.start_gateway(config(5), { vars = { UP = up } })
        local c = h.connect(gw.port)
        assert.equal(200, c:request { path = "/idle" }.status)
        local t0 = h.now()
        gw:signal("TERM")
        local code = gw:wait_exit(5)
        assert.equal(0, code)
        assert.is_true(h.now() - t0 < 1.5 * h.SLOW, "exit took " .. (h.now() - t0) .. " s")
        assert.is_true(c:closed(1))
        h.cleanup(gw)
    end)

    it("a request outliving timeouts.shutdown does not hold the exit", function()
        local gw = h.start_gateway(config(1), { vars = { UP = up } })
        local c = h.connect(gw.port)
        c:send(h.request_text { path = "/forever?delay=10" })
        h.sleep(0.2)
        local t0 = h.now()
        gw:signal("TERM")
        local code = gw:wait_exit(5)
        assert.is_number(code, "still running 5 s after SIGTERM")
        assert.is_true(h.now() - t0 < 2.5 * h.SLOW, "exit took " .. (h.now() - t0) .. " s")
        assert.is_true(c:closed(1))
        h.cleanup(gw)
    end)

    it("an idle gateway exits 0 promptly on SIGTERM", function()
        local gw = h.start_gateway(config(5), { vars = { UP = up } })
        local t0 = h.now()
        gw:signal("TERM")
        assert.equal(0, gw:wait_exit(5))
        assert.is_true(h.now() - t0 < 1 * h.SLOW)
        h.cleanup(gw)
    end)
end)
