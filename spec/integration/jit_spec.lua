-- The request API's hot accessors must stay JIT-compiled: a hook that
-- calls them in a loop is run under LuaJIT's jit.v, and no trace through
-- them may abort; so must the user metrics' methods (gw.metrics).
local h = require "spec.support.helpers"

local CONFIG = [[
package.path = "spec/fixtures/jit/?.lua;" .. package.path
local gw = require "moongate"
-- the first request records and compiles traces with jit.v writing its
-- log: under load that can outrun the default 100 ms hook budget, which
-- this spec does not test (watchdog_spec does)
gw.settings { workers = 1, access_log = "off", admin = false, timeouts = { hook = 5 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" })
local hot = require "hot"
hot.log_to("{{TMP}}/jit.log")
gw.route { path = "/**", upstream = "up", policies = { hot } }
]]

describe("JIT", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { workers = 1, vars = { U = up } })
    end)

    teardown(h.cleanup)

    it("keeps the hot accessors compiled (no trace aborts in them)", function()
        for _ = 1, 30 do
            local res = h.http(gw.port, { path = "/x", headers = { ["x-a"] = "1", ["x-b"] = "22" } })
            assert.equal(200, res.status, (res.body or "") .. "\n" .. gw:log_tail(40))
        end
        h.sleep(0.2)
        local log = h.read_file(gw.vars.TMP .. "/jit.log") or ""
        -- both hot loops were compiled as looping traces, through the
        -- accessors they call
        assert.truthy(log:find("%[TRACE +%d+ hot%.lua:2[89] loop%]"), log)
        assert.truthy(log:find("%[TRACE +%d+ hot%.lua:4[56] loop%]"), log)
        -- an abort in the policy's loops or in the accessors it calls
        local bad = h.trace_aborts(log, { "hot%.lua", "runtime%.lua:%d+ %-%- ",
                                          "metrics%.lua:%d+ %-%- " })
        assert.same({}, bad)
    end)
end)
