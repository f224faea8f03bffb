-- The admin API of the real binary against what a web page in the
-- operator's browser can make it do (cross-site requests, DNS rebinding),
-- and the command line that talks to it: `moongate reload -c FILE` reaches
-- FILE's gateway or says why not; admin problems stop `check` and `run`.
local h = require "spec.support.helpers"

local fmt = string.format

-- Files of our own (marks, other configs) live apart from the gateways'
-- configs: a .lua file written next to one makes that gateway reload.
local AUX = h.sh("mktemp -d"):gsub("%s+$", "")
local function aux_file(name, text)
    local path = AUX .. "/" .. name
    if text then h.write_file(path, text) end
    return path
end
teardown(function() os.execute("rm -rf " .. h.shq(AUX)) end)

-- A config whose admin API is on {{ADMIN}}; `extra` goes into settings.admin.
local function config(extra, port_var)
    return fmt([[
local gw = require "moongate"
gw.settings { access_log = "off", admin = { port = {{ADMIN}}%s } }
gw.listen { port = {{%s}}, host = "127.0.0.1" }
gw.route { path = "/x", handler = function() return 200, { ok = true } end }
]], extra or "", port_var or "PORT")
end

-- curl as the browser would send it: `args` are extra curl arguments.
-- Returns status, body.
local function curl(args)
    local out = h.tmpfile("curl.out")
    local code = h.sh(fmt("curl -s -o %s -w '%%{http_code}' %s", h.shq(out), args))
    return tonumber(code), h.read_file(out) or ""
end

-- Lua that leaves a mark when it runs in the gateway.
local function marker_code(path)
    return fmt('local f = io.open(%q, "w"); f:write("ran"); f:close(); return "ran"', path)
end

describe("admin API against web pages", function()
    local gw, admin, mark

    setup(function()
        admin = h.free_port()
        gw = h.start_gateway(config(), { vars = { ADMIN = admin } })
        mark = aux_file("lua-ran")
    end)
    teardown(h.cleanup)
    before_each(function() os.remove(mark) end)

    it("refuses a cross-site text/plain POST /repl (no preflight) and runs no Lua", function()
        h.write_file(mark .. ".lua", marker_code(mark))
        -- what fetch(url, { method: "POST", mode: "no-cors", body }) sends
        local status, body = curl(fmt("-X POST --data-binary @%s " ..
            "-H 'Content-Type: text/plain;charset=UTF-8' -H 'Origin: http://evil.example' " ..
            "-H 'Sec-Fetch-Site: cross-site' -H 'Sec-Fetch-Mode: no-cors' " ..
            "http://127.0.0.1:%d/repl", h.shq(mark .. ".lua"), admin))
        assert.equal(403, status, body)
        assert.truthy(h.json(body).error:find("cross-origin request refused", 1, true), body)
        -- an older browser, or a form, sends neither Origin nor Sec-Fetch-*
        status, body = curl(fmt("-X POST --data-binary @%s -H 'Content-Type: text/plain' " ..
            "http://127.0.0.1:%d/repl", h.shq(mark .. ".lua"), admin))
        assert.equal(415, status, body)
        assert.truthy(h.json(body).error:find("needs Content-Type: text/x-lua", 1, true), body)
        assert.is_nil(h.read_file(mark), "the Lua ran")
        -- the same code from moongate's own client does run (this test can fail)
        local rc, out = h.run_bin(fmt("repl --attach 127.0.0.1:%d < %s", admin,
            h.shq(mark .. ".lua")))
        assert.equal(0, rc, out)
        assert.equal("ran", h.read_file(mark))
    end)

    it("refuses a form's POST /reload and DELETE /cache, reloading nothing", function()
        local before = h.json(h.admin(admin, { path = "/status" }).body).generation.number
        local status = curl(fmt("-X POST -H 'Content-Type: application/x-www-form-urlencoded' " ..
            "--data 'a=1' http://127.0.0.1:%d/reload", admin))
        assert.equal(415, status)
        status = curl(fmt("-X DELETE -H 'Sec-Fetch-Site: same-site' " ..
            "-H 'Origin: http://localhost:8080' http://localhost:%d/cache", admin))
        assert.equal(403, status)
        assert.equal(before, h.json(h.admin(admin, { path = "/status" }).body).generation.number)
        status = curl(fmt("-X POST -H 'Content-Type: application/json' " ..
            "http://127.0.0.1:%d/reload", admin))
        assert.equal(200, status)
    end)

    it("refuses a Host that is not its address (DNS rebinding) and leaks nothing", function()
        -- the page's name now resolves to 127.0.0.1: the browser sends its Host
        local status, body = curl(fmt("-H 'Host: rebind.evil.example:%d' " ..
            "http://127.0.0.1:%d/status", admin, admin))
        assert.equal(403, status)
        assert.falsy(body:find("generation", 1, true), body)
        assert.truthy(h.json(body).error:find("is not this admin API", 1, true), body)
        status = curl(fmt("-H 'Host: rebind.evil.example:%d' http://127.0.0.1:%d/metrics",
            admin, admin))
        assert.equal(403, status)
    end)

    it("answers curl as people type it: localhost, 127.0.0.1 and [::1] with the port", function()
        assert.equal(200, (curl(fmt("http://localhost:%d/status", admin))))
        assert.equal(200, (curl(fmt("http://127.0.0.1:%d/routes", admin))))
        assert.equal(200, (curl(fmt("-H 'Host: [::1]:%d' http://127.0.0.1:%d/status",
            admin, admin))))
    end)

    it("answers its configured names", function()
        local port = h.free_port()
        local g2 = h.start_gateway(config(', names = { "gw1.internal" }', "PORT"),
            { vars = { ADMIN = port } })
        assert.equal(200, (curl(fmt("-H 'Host: gw1.internal:%d' http://127.0.0.1:%d/status",
            port, port))))
        assert.equal(403, (curl(fmt("-H 'Host: gw2.internal:%d' http://127.0.0.1:%d/status",
            port, port))))
        h.cleanup(g2)
    end)
end)

describe("admin API with a token", function()
    local TOKEN = "admin-spec-token-0123456789"
    local gw, admin, mark

    setup(function()
        admin = h.free_port()
        gw = h.start_gateway(config(fmt(", token = %q", TOKEN)), { vars = { ADMIN = admin } })
        mark = aux_file("token-ran")
    end)
    teardown(h.cleanup)

    it("runs a POST /repl that carries the token, whatever its type", function()
        h.write_file(mark .. ".lua", marker_code(mark))
        local status = curl(fmt("-X POST --data-binary @%s -H 'Content-Type: text/plain' " ..
            "http://127.0.0.1:%d/repl", h.shq(mark .. ".lua"), admin))
        assert.equal(401, status)
        assert.is_nil(h.read_file(mark))
        local body
        status, body = curl(fmt("-X POST --data-binary @%s -H 'Content-Type: text/plain' " ..
            "-H 'Authorization: Bearer %s' http://127.0.0.1:%d/repl",
            h.shq(mark .. ".lua"), TOKEN, admin))
        assert.equal(200, status, body)
        assert.equal("ran", h.read_file(mark))
    end)

    it("still refuses a foreign Origin with the token", function()
        local status = curl(fmt("-X POST -H 'Authorization: Bearer %s' " ..
            "-H 'Content-Type: application/json' -H 'Origin: http://evil.example' " ..
            "http://127.0.0.1:%d/reload", TOKEN, admin))
        assert.equal(403, status)
    end)

    it("moongate reload -c FILE takes the token from FILE", function()
        local rc, out = h.run_bin("reload -c " .. h.shq(gw.config_path))
        assert.equal(0, rc, out)
        assert.truthy(out:find("^reloaded .*: generation %d+ %(1 route, 0 upstreams%)\n$"), out)
    end)
end)

describe("moongate reload -c FILE", function()
    local gw, admin

    setup(function()
        admin = h.free_port()
        gw = h.start_gateway(config(), { vars = { ADMIN = admin } })
    end)
    teardown(h.cleanup)

    local function generation()
        return h.json(h.admin(admin, { path = "/status" }).body).generation.number
    end

    it("says what it reloaded, in one line; --json gives the answer for scripts", function()
        local before = generation()
        local rc, out = h.run_bin("reload -c " .. h.shq(gw.config_path))
        assert.equal(0, rc, out)
        assert.equal(fmt("reloaded %s: generation %d (1 route, 0 upstreams)\n",
            gw.config_path, before + 1), out)
        rc, out = h.run_bin("reload --json -c " .. h.shq(gw.config_path))
        assert.equal(0, rc, out)
        local answer = h.json(out)
        assert.is_true(answer.ok)
        assert.equal(before + 2, answer.generation)
        assert.equal(gw.config_path, answer.file)
    end)

    it("refuses the gateway of another config on FILE's admin address, and says so", function()
        local other = aux_file("other.lua", (config():gsub("{{ADMIN}}", tostring(admin))
            :gsub("{{PORT}}", tostring(h.free_port()))))
        local before = generation()
        local rc, out = h.run_bin("reload -c " .. h.shq(other))
        assert.equal(1, rc, out)
        assert.equal(fmt("moongate: the gateway on 127.0.0.1:%d runs %s, not %s: not " ..
            "reloading it (each gateway needs its own admin port)\n", admin, gw.config_path,
            other), out)
        assert.equal(before, generation())
        -- --admin gives the address; the file is still checked
        rc, out = h.run_bin(fmt("reload -c %s --admin 127.0.0.1:%d", h.shq(other), admin))
        assert.equal(1, rc, out)
        assert.equal(before, generation())
    end)

    it("refuses a config with admin = false and says how to reload it", function()
        local off = aux_file("off.lua", 'local gw = require "moongate"\n' ..
            'gw.settings { admin = false }\ngw.listen { port = 8080 }\n')
        local rc, out = h.run_bin("reload -c " .. h.shq(off))
        assert.equal(1, rc, out)
        assert.equal("moongate: " .. off .. " sets admin = false, so no admin API can " ..
            "reload it: reload its gateway with kill -HUP <its pid>, or save the file (it " ..
            "is watched)\n", out)
        -- with its gateway running, the pid is found
        local g = h.start_gateway('local gw = require "moongate"\n' ..
            'gw.settings { admin = false, access_log = "off" }\n' ..
            'gw.listen { port = {{PORT}}, host = "127.0.0.1" }\n', { workers = 1 })
        rc, out = h.run_bin("reload -c " .. h.shq(g.config_path))
        assert.equal(1, rc, out)
        assert.truthy(out:find("reload its gateway with kill -HUP " .. g.pid .. ",", 1, true),
            out)
        h.cleanup(g)
    end)

    it("says where it looked when no gateway answers", function()
        local port = h.free_port()
        local lonely = aux_file("lonely.lua", (config():gsub("{{ADMIN}}", tostring(port))
            :gsub("{{PORT}}", "8080")))
        local rc, out = h.run_bin("reload -c " .. h.shq(lonely))
        assert.equal(1, rc, out)
        assert.truthy(out:find(fmt("127.0.0.1:%d (%s's admin address): cannot connect",
            port, lonely), 1, true), out)
    end)

    it("reports every setting a reload cannot change, each at its line", function()
        local text = h.read_file(gw.config_path)
        local changed = text:gsub('access_log = "off"', 'access_log = "stderr", workers = 3')
            :gsub('host = "127.0.0.1" }', 'host = "0.0.0.0" }\ngw.listen { port = ' ..
                h.free_port() .. ' }')
        local before = generation()
        h.write_file(gw.config_path .. ".new", changed)
        assert(os.rename(gw.config_path .. ".new", gw.config_path))
        local rc, out = h.run_bin("reload -c " .. h.shq(gw.config_path))
        -- read before the file is put back: the gateway watches it, and
        -- putting it back is a change it may reload (a new generation)
        local after = generation()
        h.write_file(gw.config_path .. ".new", text)
        assert(os.rename(gw.config_path .. ".new", gw.config_path))
        assert.equal(1, rc, out)
        local p = gw.config_path
        assert.truthy(out:find(fmt("%s:3: listener 0.0.0.0:%d was 127.0.0.1:%d; restart " ..
            "moongate to change a listener's address", p, gw.port, gw.port), 1, true), out)
        assert.truthy(out:find(p:gsub("%p", "%%%0") .. ":4: listener 0.0.0.0:%d+ is new; " ..
            "restart moongate to " ..
            "add a listener"), out)
        assert.truthy(out:find(p .. ":2: settings.workers changed from 2 to 3", 1, true), out)
        assert.truthy(out:find(p .. ':2: settings.access_log changed from "off" to "stderr"',
            1, true), out)
        assert.equal(before, after)
        assert.equal(200, h.http(gw.port, { path = "/x" }).status)
    end)
end)

describe("admin API problems stop check and run", function()
    it("check: a non-loopback admin address without a token, at its line", function()
        local code, out, path = h.check_config('local gw = require "moongate"\n' ..
            'gw.listen { port = 8080 }\n' ..
            'gw.settings { admin = { host = "0.0.0.0" } }\n')
        assert.equal(1, code, out)
        assert.truthy(out:find(path .. ":3: settings.admin: admin API on 0.0.0.0:9901 needs a " ..
            "token", 1, true), out)
        -- run refuses it the same way, before listening
        local rc, rout = h.run_bin("run -c " .. h.shq(path), 10)
        assert.equal(1, rc, rout)
        assert.truthy(rout:find(path .. ":3: settings.admin:", 1, true), rout)
    end)

    it("check: an admin host that is not an address, and bad names", function()
        local code, out, path = h.check_config('local gw = require "moongate"\n' ..
            'gw.settings { admin = { host = "admin.example", names = { "a b" } } }\n' ..
            'gw.listen { port = 8080 }\n')
        assert.equal(1, code, out)
        assert.truthy(out:find(path .. ":2: settings.admin: admin API address " ..
            "admin.example:9901: not a numeric", 1, true), out)
        code, out, path = h.check_config('local gw = require "moongate"\n' ..
            'gw.settings { admin = { names = { "a b" } } }\ngw.listen { port = 8080 }\n')
        assert.equal(1, code, out)
        assert.truthy(out:find(path .. ":2: settings.admin: admin API name 'a b' is not a host " ..
            "name", 1, true), out)
        code, out = h.check_config('local gw = require "moongate"\n' ..
            'gw.settings { admin = { names = "gw1" } }\ngw.listen { port = 8080 }\n')
        assert.equal(1, code, out)
        assert.truthy(out:find("settings.admin.names must be a list of host names", 1, true), out)
    end)

    it("run: a busy admin port refuses to start, before any listener", function()
        local admin = h.free_port()
        h.start_gateway(config(), { vars = { ADMIN = admin } })
        local port = h.free_port()
        local path = aux_file("second.lua", (config():gsub("{{ADMIN}}", tostring(admin))
            :gsub("{{PORT}}", tostring(port))))
        local rc, out = h.run_bin("run -c " .. h.shq(path), 10)
        assert.equal(1, rc, out)
        assert.truthy(out:find(fmt("not starting: %s: admin API cannot listen on " ..
            "127.0.0.1:%d: Address already in use", path, admin), 1, true), out)
        assert.truthy(out:find("(settings.admin at " .. path .. ":2)", 1, true), out)
        assert.falsy(out:find("listening on", 1, true), out)
        -- run --admin off (or another port) starts it
        local g = h.start_gateway(config(), { vars = { ADMIN = admin },
                                              args = "--workers 1 --admin off" })
        assert.falsy(g:log_tail(20):find("admin API on", 1, true))
        h.cleanup()
    end)
end)
