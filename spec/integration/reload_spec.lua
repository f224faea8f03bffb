-- Hot reload: generations switch without a dropped request; refused
-- versions keep the running one serving and say why on every channel;
-- many reloads leak nothing and keep tunnels open.
local h = require "spec.support.helpers"

local SANITIZED = os.getenv("MG_SANITIZED") == "1"

-- The config, in one of two versions ("a" and "b") that answer with
-- different headers, or broken in one of several ways.
local function config(version, broken)
    local lines = {
        'local gw = require "moongate"',
        'gw.settings { workers = 2, access_log = "off",',
        -- load: a broken version that loops is refused after 0.5 s of CPU
        '              admin = { port = {{ADMIN}} }, timeouts = { shutdown = 2, load = 0.5 } }',
        'gw.listen { port = {{PORT1}}, host = "127.0.0.1" }',
        'gw.upstream("up", { "{{U}}" })',
        'gw.route { path = "/**", upstream = "up", policies = { function(req)',
        '    req:set_header("x-policy", "' .. version .. '")',
        'end } }',
        'function gw.on_response(req, res)',
        '    res:set_header("x-version", "' .. version .. '")',
        'end',
        'gw.test { request = { path = "/t" }, expect = { status = 200,',
        '          upstream = "up", upstream_headers = { ["x-policy"] = "' .. version .. '" } } }',
    }
    if broken == "syntax" then
        lines[#lines + 1] = "gw.route { path = "
    elseif broken == "throws" then
        lines[#lines + 1] = 'error("refusing to load")'
    elseif broken == "upstream" then
        lines[#lines + 1] = 'gw.route { path = "/missing", upstream = "nowhere" }'
    elseif broken == "test" then
        lines[#lines + 1] = 'gw.test { request = { path = "/t" }, expect = { status = 418 } }'
    elseif broken == "loop" then
        lines[#lines + 1] = 'while true do pcall(function() while true do end end) end'
    elseif broken == "loop_test" then
        lines[#lines + 1] = 'gw.route { path = "/spin", upstream = "up", policies = { function(req)'
        lines[#lines + 1] = '    while true do end'
        lines[#lines + 1] = 'end } }'
        lines[#lines + 1] = 'gw.test { request = { path = "/spin" }, expect = { status = 200 } }'
    end
    return table.concat(lines, "\n") .. "\n"
end

describe("hot reload", function()
    local gw, up, admin

    setup(function()
        up = h.start_upstream { name = "up" }
        admin = h.free_port()
        gw = h.start_gateway(config("a"), { vars = { U = up, ADMIN = admin } })
    end)

    teardown(h.cleanup)

    local function write(version, broken)
        local text = config(version, broken):gsub("{{(%w+)}}", function(k)
            return tostring(gw.vars[k] and (type(gw.vars[k]) == "table" and gw.vars[k].addr
                                            or gw.vars[k]) or "")
        end)
        -- write then rename, as editors do
        h.write_file(gw.config_path .. ".tmp", text)
        assert(os.rename(gw.config_path .. ".tmp", gw.config_path))
    end

    local function status()
        return h.json(h.admin(admin, { path = "/status" }).body)
    end

    local function version_of(res)
        return res.headers["x-version"]
    end

    it("switches under steady load with no failed request, each answer from one version", function()
        local conns = {}
        for i = 1, 4 do conns[i] = h.connect(gw.port) end
        local writes, seen = {}, {}
        local t0 = h.now()
        local next_write, version, nwrites = t0 + 0.1, "a", 0
        local total, bad = 0, {}
        local nwant = SANITIZED and 25 or 50
        local gap = (SANITIZED and 7 or 14) / nwant
        -- A write is made only once the previous one has been seen, so a
        -- slow reload (a loaded machine) delays the next write instead of
        -- hiding the previous one; the deadline only stops a broken gateway.
        local deadline = t0 + 120
        local current_seen = true
        local i = 0
        while h.now() < deadline and not (nwrites == nwant and current_seen) do
            local now = h.now()
            if current_seen and now >= next_write and nwrites < nwant then
                version = version == "a" and "b" or "a"
                write(version)
                nwrites = nwrites + 1
                writes[nwrites] = { at = h.now(), version = version }
                current_seen = false
                next_write = now + gap
            end
            i = i % #conns + 1
            local c = conns[i]
            c:send("GET /load HTTP/1.1\r\nHost: x\r\n\r\n")
            local res, err = c:read_response()
            total = total + 1
            if not res then
                bad[#bad + 1] = "no response: " .. tostring(err)
                conns[i] = h.connect(gw.port)
            elseif res.status ~= 200 then
                bad[#bad + 1] = "status " .. res.status
            else
                local v = version_of(res)
                local pv = h.json(res.body).headers["x-policy"]
                if (v ~= "a" and v ~= "b") or v ~= pv then
                    bad[#bad + 1] = ("mixed versions: response %s, policy %s")
                        :format(tostring(v), tostring(pv))
                end
                seen[#seen + 1] = { at = h.now(), version = v }
                if v == version and nwrites > 0 then current_seen = true end
            end
        end
        assert.equal(nwant, nwrites)
        assert.same({}, bad)
        assert.is_true(total > 1000, "only " .. total .. " requests")
        -- every write became visible; the bound is loose on purpose (a
        -- debounce of 150 ms plus a reload, on a machine that may be busy)
        for k, w in ipairs(writes) do
            local until_t = writes[k + 1] and writes[k + 1].at or math.huge
            local first
            for _, s in ipairs(seen) do
                if s.at >= w.at and s.at < until_t and s.version == w.version then
                    first = s.at
                    break
                end
            end
            assert.is_truthy(first, "write " .. k .. " (" .. w.version .. ") never seen")
            assert.is_true(first - w.at < 10.0, ("write %d seen after %.3f s"):format(k, first - w.at))
        end
        for _, c in ipairs(conns) do c:close() end
    end)

    for _, case in ipairs {
        { "syntax", "a syntax error", "unexpected symbol" },
        { "throws", "an error thrown while loading", "refusing to load" },
        { "upstream", "a route to a missing upstream", 'route.upstream "nowhere" is not declared' },
        { "test", "a failing gw.test", "expected status 418, got 200" },
    } do
        local kind, what, reason = case[1], case[2], case[3]
        it("refuses " .. what .. ": the old version serves, the reason is on all channels", function()
            write("a")
            local rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
            assert.equal(0, rc, out)
            local before = status().generation.number
            -- the file watcher sees it, the log and /status say why
            write("b", kind)
            h.sleep(0.6)
            local st = status()
            assert.equal(before, st.generation.number)
            assert.is_false(st.last_reload.ok)
            assert.truthy(st.last_reload.message:find(reason, 1, true), st.last_reload.message)
            assert.truthy(st.last_reload.message:find(":%d+:"), "no file:line in " .. st.last_reload.message)
            assert.truthy(h.read_file(gw.log_path):find(reason, 1, true))
            -- the command line caller gets it too, with a non-zero exit
            rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
            assert.equal(1, rc)
            assert.truthy(out:find(reason, 1, true), out)
            -- and version a still answers
            local res = h.http(gw.port, { path = "/still" })
            assert.equal(200, res.status)
            assert.equal("a", version_of(res))
        end)
    end

    -- every worker has evaluated the file (the admin API starts before the
    -- workers): only then may a spec rewrite it
    local function started(g)
        local deadline = h.now() + 10 * h.SLOW
        while not g:log():find("listening on", 1, true) do
            assert(h.now() < deadline, "the gateway never said it was listening")
            h.sleep(0.05)
        end
    end

    -- a config that never finishes loading is stopped by the load budget
    -- (timeouts.load, here 0.5 s of CPU) or its hook by the hook budget
    for _, case in ipairs {
        { "loop", "a loop at the top level",
          "loading took longer than 0.5 s (a loop at the top level?" },
        { "loop_test", "a gw.test whose hook loops", "hook exceeded its time budget of 100 ms" },
    } do
        local kind, what, reason = case[1], case[2], case[3]
        it("refuses " .. what .. " within the budget; /status answers; the fix reloads", function()
            write("a")
            local rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
            assert.equal(0, rc, out)
            local before = status().generation.number
            local t0 = h.now()
            write("b", kind)           -- the file watcher starts a reload
            -- /status answers (the control thread is not stuck) and says why;
            -- generous deadline: CPU time on a shared 2-core machine
            local st
            local deadline = t0 + 20 * h.SLOW
            repeat
                h.sleep(0.1)
                local ok, res = pcall(h.admin, admin, { path = "/status" })
                st = ok and res and res.status == 200 and h.json(res.body) or nil
            until (st and st.last_reload and st.last_reload.ok == false) or h.now() > deadline
            assert.truthy(st, "/status did not answer")
            assert.equal(before, st.generation.number)
            assert.is_false(st.last_reload.ok)
            assert.truthy(st.last_reload.message:find(reason, 1, true), st.last_reload.message)
            assert.truthy(st.last_reload.message:find(":%d+:"), st.last_reload.message)
            -- `moongate reload` returns with the reason, exit 1
            rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin, 30)
            assert.equal(1, rc, out)
            assert.truthy(out:find(reason, 1, true), out)
            assert.equal("a", version_of(h.http(gw.port, { path = "/still" })))
            -- the fixed file reloads
            write("b")
            rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
            assert.equal(0, rc, out)
            assert.equal("b", version_of(h.http(gw.port, { path = "/fixed" })))
            assert.is_true(status().generation.number > before)
        end)
    end

    it("SIGTERM stops a gateway that is loading a looping config", function()
        local admin2 = h.free_port()
        local g2 = h.start_gateway(config("a"), { vars = { U = up, ADMIN = admin2 } })
        started(g2)
        local text = config("b", "loop"):gsub("{{(%w+)}}", function(k)
            local v = g2.vars[k]
            return tostring(v and (type(v) == "table" and v.addr or v) or "")
        end)
        h.write_file(g2.config_path, text)
        -- the watcher's reload starts 150 ms after the write
        h.sleep(0.5)
        local t0 = h.now()
        assert.equal(0, g2:stop("TERM", 20 * h.SLOW))
        -- within the load budget (0.5 s of CPU) plus the shutdown (2 s);
        -- generous: CPU time on a shared machine
        assert.is_true(h.now() - t0 < 15 * h.SLOW)
    end)

    it("a hook that loops while a reload keeps the control thread busy is stopped, " ..
       "not taken for stuck", function()
        -- the watchdog runs on the control thread: while it loads a version
        -- (here one that loops for its whole 2 s budget) it does not look,
        -- and the hook runs past its budget plus one second meanwhile
        local admin3 = h.free_port()
        local text = table.concat({
            'local gw = require "moongate"',
            'gw.settings { workers = 1, access_log = "off", admin = { port = {{ADMIN}} },',
            '              timeouts = { shutdown = 2 } }',
            'gw.listen { port = {{PORT1}}, host = "127.0.0.1" }',
            'gw.upstream("up", { "{{U}}" })',
            'gw.route { path = "/spin", upstream = "up", policies = { function(req)',
            '    while true do end',
            'end } }',
            'gw.route { path = "/**", upstream = "up" }',
        }, "\n") .. "\n"
        local g3 = h.start_gateway(text, { workers = 1, vars = { U = up, ADMIN = admin3 } })
        started(g3)
        local function subst(t)
            return (t:gsub("{{(%w+)}}", function(k)
                local v = g3.vars[k]
                return tostring(v and (type(v) == "table" and v.addr or v) or "")
            end))
        end
        h.write_file(g3.config_path, subst(text .. "while true do end\n"))
        h.sleep(0.4)                    -- the reload is under way
        local res = h.http(g3.port, { path = "/spin", timeout = 30 * h.SLOW })
        h.assert_error(res, 500)
        local st = h.json(h.admin(admin3, { path = "/status" }).body)
        assert.same({}, st.workers_stuck)
        assert.is_false(st.last_reload.ok)
        assert.truthy(st.last_reload.message:find("loading took longer than 2 s", 1, true))
        assert.equal(200, h.http(g3.port, { path = "/after" }).status)
        assert.equal(0, g3:stop("TERM", 20 * h.SLOW))
    end)

    it("SIGHUP reloads", function()
        write("b")
        h.sleep(0.4)
        write("a")
        local before = status().generation.number
        gw:signal("HUP")
        h.sleep(0.3)
        assert.is_true(status().generation.number > before)
    end)

    it("many reloads leave memory where it was and an open WebSocket echoing", function()
        write("a")
        h.sleep(0.4)
        local ws = h.connect(gw.port)
        ws:send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert.equal(101, assert(ws:read_response()).status)
        -- warm up: the first reloads grow caches that then stay
        for _ = 1, 20 do
            assert.equal(200, h.admin(admin, { method = "POST", path = "/reload" }).status)
        end
        local rss0 = gw:rss()
        local n = SANITIZED and 100 or 1000
        local c = h.connect(admin)
        for _ = 1, n do
            c:send(h.request_text { method = "POST", path = "/reload", body = "",
                                    headers = h.admin_headers(admin, "POST", "/reload") })
            assert.equal(200, assert(c:read_response({ timeout = 20 })).status)
        end
        c:close()
        h.sleep(0.3)
        local rss1 = gw:rss()
        if not SANITIZED then
            assert.is_true(rss1 - rss0 < 5 * 1024,
                ("RSS grew by %d KiB over %d reloads"):format(rss1 - rss0, n))
        end
        io.stderr:write(("\n[reload] %d reloads: RSS %d KiB -> %d KiB (%+d KiB)\n")
            :format(n, rss0, rss1, rss1 - rss0))
        ws:send(h.ws_frame(0x1, "after reloads"))
        assert.equal("after reloads", assert(ws:read_ws_frame()).payload)
        ws:close()
        assert.equal(200, h.http(gw.port, { path = "/after" }).status)
    end)
end)

-- Every file a config read is watched: modules it requires from
-- subdirectories (the layout of docs/testing.md) and files it runs with
-- dofile, not only the config file's own directory.
describe("hot reload of the files a config reads", function()
    local gw, mods

    -- write then rename, as editors do
    local function write(path, text)
        h.write_file(path .. ".tmp", text)
        assert(os.rename(path .. ".tmp", path))
    end

    local function tag_module(tag)
        -- dofile's relative path is taken from the config's directory
        return ('return %q .. dofile("reloaddata/suffix.lua")\n'):format(tag)
    end

    -- polls until the answer is `want` (a reload is debounced and
    -- checked whole first: allow it a generous while)
    local function wait_tag(want)
        local deadline, got = h.now() + 10 * h.SLOW, nil
        repeat
            got = h.http(gw.port, { path = "/t" }).body
            if got == want then return got end
            h.sleep(0.05)
        until h.now() > deadline
        return got
    end

    setup(function()
        local tmp = h.tmpdir()
        mods = tmp .. "/reloadmods"
        assert(os.execute("mkdir -p " .. h.shq(mods) .. " " .. h.shq(tmp .. "/reloaddata")) == 0)
        h.write_file(mods .. "/tag.lua", tag_module("a"))
        h.write_file(tmp .. "/reloaddata/suffix.lua", 'return "1"\n')
        gw = h.start_gateway([[
local gw = require "moongate"
local tag = require "reloadmods.tag"
gw.settings { workers = 2, access_log = "off", admin = false, timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT1}}, host = "127.0.0.1" }
gw.route { path = "/t", handler = function() return 200, tag end }
]])
        assert.equal("a1", wait_tag("a1"))
        -- the watches are set once the control thread has loaded the config
        -- too: main logs "listening on" after that
        local deadline = h.now() + 10 * h.SLOW
        while not gw:log():find("listening on", 1, true) and h.now() < deadline do
            h.sleep(0.02)
        end
    end)

    teardown(h.cleanup)

    it("reloads when a required module in a subdirectory changes", function()
        write(mods .. "/tag.lua", tag_module("b"))
        assert.equal("b1", wait_tag("b1"))
    end)

    it("reloads when a file run with dofile changes", function()
        write(h.tmpdir() .. "/reloaddata/suffix.lua", 'return "2"\n')
        assert.equal("b2", wait_tag("b2"))
    end)

    it("after a refused edit of a module, fixing that module reloads", function()
        write(mods .. "/tag.lua", "return function(req, res\n")     -- syntax error
        local deadline = h.now() + 10 * h.SLOW
        while not gw:log():find("reload refused", 1, true) and h.now() < deadline do
            h.sleep(0.05)
        end
        assert.truthy(gw:log():find("reload refused", 1, true), gw:log())
        assert.equal("b2", h.http(gw.port, { path = "/t" }).body)
        write(mods .. "/tag.lua", tag_module("c"))
        assert.equal("c2", wait_tag("c2"))
    end)
end)
