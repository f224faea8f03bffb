-- Load balancing over targets and what happens when targets are down, slow,
-- reset the connection or die mid-response.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("rr", { "{{A}}", "{{B}}" })
gw.upstream("weighted", { { "{{A}}", weight = 2 }, "{{B}}" })
gw.upstream("mixed", { "{{DEAD1}}", "{{A}}" }, { connect_timeout = 1 })
gw.upstream("dead", { "{{DEAD2}}", "{{DEAD3}}" }, { connect_timeout = 1 })
gw.upstream("slow", { "{{A}}" }, { read_timeout = 0.5 })
gw.route { path = "/rr/**", upstream = "rr" }
gw.route { path = "/weighted/**", upstream = "weighted" }
gw.route { path = "/mixed/**", upstream = "mixed" }
gw.route { path = "/dead/**", upstream = "dead" }
gw.route { path = "/slow/**", upstream = "slow" }
]]

describe("upstreams", function()
    local gw, ups

    setup(function()
        ups = h.start_upstreams { "a", "b" }
        gw = h.start_gateway(CONFIG, { vars = {
            A = ups.a, B = ups.b,
            DEAD1 = h.dead_addr(), DEAD2 = h.dead_addr(), DEAD3 = h.dead_addr(),
        } })
    end)

    teardown(h.cleanup)

    -- n requests on one connection (one worker: one balancer state);
    -- returns the list of upstream names
    local function names(path, n)
        local c = h.connect(gw.port)
        local list = {}
        for i = 1, n do
            local res = c:request { path = path .. "/" .. i }
            assert.equal(200, res.status)
            list[i] = res.headers["x-upstream-name"]
        end
        c:close()
        return list
    end

    describe("balancing", function()
        it("round robin alternates between two targets", function()
            local list = names("/rr", 10)
            for i = 2, #list do
                assert.are_not.equal(list[i - 1], list[i],
                    "not alternating: " .. table.concat(list, " "))
            end
        end)

        it("weights are respected (2:1 over 30 requests)", function()
            local count = { a = 0, b = 0 }
            for _, n in ipairs(names("/weighted", 30)) do count[n] = count[n] + 1 end
            assert.is_true(count.a >= 18 and count.a <= 22,
                string.format("a=%d b=%d", count.a, count.b))
            assert.equal(30, count.a + count.b)
        end)

        it("a dead target is skipped: every request succeeds", function()
            local t0 = h.now()
            for _, n in ipairs(names("/mixed", 10)) do assert.equal("a", n) end
            assert.is_true(h.now() - t0 < 5 * h.SLOW)
        end)
    end)

    describe("failures", function()
        it("all targets dead is a 502", function()
            local res = h.http(gw.port, { path = "/dead/x" })
            h.assert_error(res, 502)
        end)

        it("an upstream slower than read_timeout is a 504", function()
            local t0 = h.now()
            local res = h.http(gw.port, { path = "/slow/x?delay=2" })
            local elapsed = h.now() - t0
            h.assert_error(res, 504)
            assert.is_true(elapsed < 1.8 * h.SLOW, "504 after " .. elapsed .. " s")
        end)

        it("an upstream that resets the connection is a 502", function()
            local res = h.http(gw.port, { path = "/rr/x?reset=1" })
            h.assert_error(res, 502)
        end)

        it("an upstream that closes before answering is a 502", function()
            local res = h.http(gw.port, { path = "/rr/x?drop=1" })
            h.assert_error(res, 502)
        end)

        it("an upstream closing mid-body (Content-Length) ends the client response", function()
            local c = h.connect(gw.port)
            local t0 = h.now()
            c:send(h.request_text { path = "/rr/x?size=100000&abort=1000" })
            local res, err = c:read_response { timeout = 4 }
            assert.is_nil(res, "a truncated response looked complete")
            assert.is_true(h.now() - t0 < 3 * h.SLOW, "hung: " .. tostring(err))
            assert.is_true(c:closed(1))
        end)

        it("an upstream closing mid-body (chunked) ends the client response", function()
            local c = h.connect(gw.port)
            local t0 = h.now()
            c:send(h.request_text { path = "/rr/x?size=100000&chunked=1&chunk=1000&abort=5000" })
            local res, err = c:read_response { timeout = 4 }
            assert.is_nil(res, "a truncated response looked complete")
            assert.is_true(h.now() - t0 < 3 * h.SLOW, "hung: " .. tostring(err))
            assert.is_true(c:closed(1))
        end)

        it("the gateway keeps serving after upstream failures", function()
            local res = h.http(gw.port, { path = "/rr/after" })
            assert.equal(200, res.status)
        end)
    end)
end)
