-- The hook budget's watchdog (src/control.c, on the control thread): it
-- looks at the workers every 10 ms only while one runs Lua; otherwise
-- after the smallest budget (at most 1 s). So an idle gateway's control
-- thread seldom wakes, and a hook that starts after an idle spell is still
-- stopped at its budget.
local h = require "spec.support.helpers"

local HAVE_STRACE = h.sh("command -v strace"):find("strace", 1, true) ~= nil
local it_strace = HAVE_STRACE and it or pending

describe("hook budget watchdog", function()
    local gw

    setup(function()
        local up = h.start_upstream()
        gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { access_log = "off", admin = false, timeouts = { hook = 0.2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/ok", upstream = "up", policies = { function(req)
    req:set_header("x-seen", "1")
end } }
gw.route { path = "/spin", upstream = "up", policies = { function(req)
    -- pairs() keeps LuaJIT in its interpreter, where the budget can stop it
    local t = { a = 1 }
    while true do for _ in pairs(t) do end end
end } }
]], { vars = { UP = up.addr }, workers = 1 })
    end)

    teardown(h.cleanup)

    local function get(path)
        return h.http(gw.port, { path = path })
    end

    it_strace("an idle gateway's control thread wakes about once per budget, not every 10 ms",
        function()
        assert.equal(200, get("/ok").status)
        -- not beside the config: the gateway watches that folder, and each
        -- line strace writes there would wake it
        local out = os.tmpname()
        -- the control thread is the process's main thread
        local st = h.spawn(("exec strace -p %d -e trace=epoll_wait,epoll_pwait -o %s")
                           :format(gw.pid, h.shq(out)), "strace")
        local deadline = h.now() + 10
        while not (h.read_file(st.log_path) or ""):find("attached", 1, true) do
            assert(h.now() < deadline, "strace did not attach: " .. (h.read_file(st.log_path) or ""))
            h.sleep(0.01)
        end
        local t0 = h.now()
        h.sleep(2)                    -- the window: nothing is sent
        st:kill("INT")
        st:wait_exit(10)
        local window = h.now() - t0
        local wakes = 0
        for line in (h.read_file(out) or ""):gmatch("[^\n]+") do
            if line:match("^epoll_p?wait%(") then wakes = wakes + 1 end
        end
        os.remove(out)
        -- a 200 ms budget: the watchdog ~5 a second (it was 100), the
        -- health checker's tick 10 (src/health.c, even with no checks);
        -- the bound leaves room for a slow machine, which wakes less anyway
        assert.is_true(wakes <= 40 * window + 5,
                       ("%d wakes in %.1f s"):format(wakes, window))
    end)

    it("a hook that starts after an idle spell is stopped at its budget", function()
        assert.equal(200, get("/ok").status)
        h.sleep(1.2)                  -- longer than the watchdog's longest nap
        local t0 = h.now()
        h.assert_error(get("/spin"), 500)
        -- 200 ms of budget, at most one nap of 200 ms before the watchdog
        -- looks every 10 ms: well under a second
        assert.is_true(h.now() - t0 < 1 * h.SLOW, ("%.2f s"):format(h.now() - t0))
        assert.truthy(gw:log():find("hook exceeded its time budget", 1, true))
        assert.equal(200, get("/ok").status)
    end)
end)
