-- The hot path's syscalls, counted exactly: strace -c on the worker thread
-- over a fixed window of N keep-alive requests from one client. A proxied
-- request is 4 data syscalls (read the client, write the upstream, read
-- its answer, write the client), a cache hit and an answer made by a
-- policy 2, and nothing else but the event loop's epoll_wait (one per
-- wake: 2 per proxied request, 1 otherwise, with one client in turn).
-- A change that adds a syscall per request fails here, whatever the clock.
local h = require "spec.support.helpers"

local SANITIZED = os.getenv("MG_SANITIZED") == "1"
local HAVE_STRACE = h.sh("command -v strace"):find("strace", 1, true) ~= nil
-- the sanitizers' allocator maps memory by itself: count the plain build
local it_counts = (HAVE_STRACE and not SANITIZED) and it or pending

local N, WARM = 1000, 2000
local DATA = { read = true, write = true, readv = true, writev = true, recvfrom = true,
               sendto = true, recvmsg = true, sendmsg = true }
local LOOP = { epoll_wait = true, epoll_pwait = true }

local FIXED_PY = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") ..
    "/../support/fixed_upstream.py"

describe("syscalls per request", function()
    local gw, tid

    setup(function()
        if not (HAVE_STRACE and not SANITIZED) then return end
        local port = h.free_port()
        local up = h.spawn(("exec python3 -u %s --port %d"):format(h.shq(FIXED_PY), port),
                           "fixed-upstream")
        local deadline = h.now() + 10
        while not h.can_connect(port) do
            assert(h.now() < deadline, "fixed upstream did not start: " .. up:log_tail(10))
            h.sleep(0.02)
        end
        gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { access_log = "off", admin = false }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/up/**", upstream = "up" }
gw.route { path = "/c/**", upstream = "up", cache = { ttl = 600 } }
gw.route { path = "/p/**", upstream = "up",
           policies = { function(req) return gw.respond(200, "by policy") end } }
]], { vars = { UP = "127.0.0.1:" .. port }, workers = 1 })
        for task in h.sh("ls /proc/" .. gw.pid .. "/task"):gmatch("%d+") do
            if (h.read_file("/proc/" .. gw.pid .. "/task/" .. task .. "/comm") or "")
                :match("^mg%-worker%-0") then
                tid = task
            end
        end
        assert(tid, "no mg-worker-0 thread in " .. gw.pid)
    end)

    teardown(h.cleanup)

    -- N requests for path on one keep-alive connection (warmed up first:
    -- the upstream connection, the cache, the JIT's traces) under strace;
    -- returns { syscall = calls }
    local function count(path)
        local c = h.connect(gw.port)
        local function one()
            c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(200, res.status)
        end
        for _ = 1, WARM do one() end
        local out = h.tmpfile("strace.txt")
        local st = h.spawn(("exec strace -p %s -o %s"):format(tid, h.shq(out)), "strace")
        local deadline = h.now() + 10
        while not (h.read_file(st.log_path) or ""):find("attached", 1, true) do
            assert(h.now() < deadline, "strace did not attach: " .. (h.read_file(st.log_path) or ""))
            h.sleep(0.01)
        end
        for _ = 1, N do one() end
        st:kill("INT")
        st:wait_exit(10)
        c:close()
        h.sleep(0.5)
        local calls, unusual = {}, {}
        for line in (h.read_file(out) or ""):gmatch("[^\n]+") do
            local name = line:match("^([%w_]+)%(")
            if name then
                calls[name] = (calls[name] or 0) + 1
                if not DATA[name] and not LOOP[name] then unusual[#unusual + 1] = line end
            end
        end
        calls.unusual = unusual
        return calls
    end

    local function check(path, data_per_request, loop_per_request)
        local calls = count(path)
        local data, loop, other = 0, 0, {}
        local unusual = calls.unusual
        calls.unusual = nil
        for name, n in pairs(calls) do
            if DATA[name] then
                data = data + n
            elseif LOOP[name] then
                loop = loop + n
            else
                other[#other + 1] = name .. "=" .. n
            end
        end
        local seen = h.lua_value(calls) .. "\n" .. table.concat(unusual, "\n")
        assert.equal(data_per_request * N, data, seen)
        assert.same({}, other, seen)
        -- at most one wake per event (fewer when an answer is already there);
        -- a timer firing in the window could add one
        assert.is_true(loop <= loop_per_request * N + 5, seen)
    end

    it_counts("a proxied keep-alive request: 4 data syscalls, nothing else", function()
        check("/up/x", 4, 2)
    end)

    it_counts("a response cache hit: 2", function()
        check("/c/x", 2, 1)
    end)

    it_counts("an answer made by a policy: 2", function()
        check("/p/x", 2, 1)
    end)
end)
