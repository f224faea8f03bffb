-- `moongate check -c FILE` validates without serving and reports every
-- mistake as file:line: reason; `moongate version`; `moongate run` refuses
-- a bad config.
local h = require "spec.support.helpers"

local FIX = "spec/fixtures/integration/"

-- lines of `out` that look like "<file>:<line>: reason", by line number
local function reports(out, file)
    local by_line, n = {}, 0
    local pat = "^" .. file:gsub("%p", "%%%0") .. ":(%d+):%s*(.+)$"
    for line in out:gmatch("[^\n]+") do
        local ln, reason = line:match(pat)
        if ln then
            ln = tonumber(ln)
            by_line[ln] = (by_line[ln] and (by_line[ln] .. "\n") or "") .. reason
            n = n + 1
        end
    end
    return by_line, n
end

describe("moongate check", function()
    it("accepts a good config with exit code 0", function()
        local code, out = h.run_bin("check -c " .. FIX .. "good.lua")
        assert.equal(0, code, out)
    end)

    it("reports all three mistakes of a bad config as file:line: reason, exit 1", function()
        local file = FIX .. "bad.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line = reports(out, file)
        assert.truthy(by_line[5], "bad address (line 5) not reported:\n" .. out)
        assert.truthy(by_line[5]:find("99999", 1, true), by_line[5])
        assert.truthy(by_line[6], "unknown upstream (line 6) not reported:\n" .. out)
        assert.truthy(by_line[6]:find("ordres", 1, true), by_line[6])
        assert.truthy(by_line[7], "unknown key (line 7) not reported:\n" .. out)
        assert.truthy(by_line[7]:find("methds", 1, true), by_line[7])
    end)

    it("suggests the close name of an unknown upstream", function()
        local file = FIX .. "bad.lua"
        local _, out = h.run_bin("check -c " .. file)
        local by_line = reports(out, file)
        assert.truthy((by_line[6] or ""):find("orders", 1, true), out)
    end)

    it("reports a Lua syntax error with its line", function()
        local file = FIX .. "syntax.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line = reports(out, file)
        assert.truthy(by_line[4], "syntax error (line 4) not reported:\n" .. out)
    end)

    it("reports a wrong type with the key and the bad value", function()
        local file = FIX .. "types.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line = reports(out, file)
        assert.truthy(by_line[3], "wrong type (line 3) not reported:\n" .. out)
        assert.truthy(by_line[3]:find("port", 1, true), by_line[3])
    end)

    it("reports every mistake inside jwt.policy and limit.policy at once", function()
        local file = "spec/fixtures/config/policy_errors.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line, n = reports(out, file)
        assert.equal(7, n, out)
        assert.truthy(by_line[5]:find("unknown key 'secrte' in jwt.policy (did you mean 'secret'?",
                                      1, true), out)
        assert.truthy(by_line[6]:find("unknown key 'pre' in limit.policy (did you mean 'per'?",
                                      1, true), out)
        assert.truthy(by_line[8]:find("limit.policy.status must be an integer 400-599", 1, true),
                      out)
        assert.truthy(by_line[10]:find("jwt: optional must be a boolean", 1, true), out)
        assert.truthy(by_line[11]:find('route.upstream "uu" is not declared', 1, true), out)
    end)

    it("reports every split, canary and mirror mistake at its line", function()
        local file = "spec/fixtures/config/split_errors.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line, n = reports(out, file)
        local want = {
            [5] = "route.split[1].weight must be an integer 0-1000000, got number 1.5",
            [6] = 'route.split[2].upstream "v3" is not declared (did you mean',
            [7] = "route.split's weights add up to 0: give at least one entry a weight",
            [8] = "unknown key 'wieght' in route.split[1] (did you mean 'weight'?",
            [9] = 'route.split must be a list like { { upstream = "v1", weight = 90 }, ' ..
                  '{ upstream = "v2", weight = 10 } }, got string "v1"',
            [10] = 'route.split.key.header must be a header name, got string "X User"',
            [11] = "route.canary needs exactly one of header or cookie (what marks a canary " ..
                   "request), got both",
            [12] = 'route.canary.upstream "v9" is not declared',
            [13] = "route.canary.value must be a string, got number 1",
            [14] = "route.mirror.body must be a size",
            [15] = "route.mirror.timeout must be",
            [16] = "route.mirror.upstream must be an upstream name (string), got nil",
            [17] = "route.canary and route.mirror need an upstream: a handler route's " ..
                   "answers are made by Lua",
            [18] = "route needs exactly one of upstream, split or handler, got split and handler",
            [19] = 'route.mirror.upstream "v1" is an upstream the route sends its requests to',
            [20] = "route.split[1].weight must be an integer 0-1000000, got number 1000001",
        }
        for line, reason in pairs(want) do
            assert.truthy(by_line[line], "line " .. line .. " not reported:\n" .. out)
            assert.truthy(by_line[line]:find(reason, 1, true),
                          "line " .. line .. ": " .. by_line[line])
        end
        assert.equal(16, n, out) -- one reason each, nothing else
    end)

    it("returns at once instead of serving", function()
        local code = h.run_bin("check -c " .. FIX .. "good.lua", 5)
        assert.are_not.equal(124, code, "still running after 5 s")
        assert.equal(0, code)
    end)
end)

describe("moongate check: the load budget", function()
    local HEAD = 'local gw = require "moongate"\n' ..
        'gw.listen { port = 18080 }\n' ..
        'gw.upstream("up", { "127.0.0.1:9" })\n'

    -- a refusal within the budget: it counts CPU time, and on a shared
    -- 2-core machine the wall time can be several times longer (a load
    -- average of 10 gives this process a fifth of a core), hence the wide
    -- margins; a hang would be stopped by the 60 s timeout instead
    local function refused(text, reason, line, within)
        local t0 = h.now()
        local path = h.tmpfile("check.lua", HEAD .. text)
        local code, out = h.run_bin("check -c " .. h.shq(path), 60)
        assert.equal(1, code, out)
        assert.is_true(h.now() - t0 < within * h.SLOW, "took " .. (h.now() - t0) .. " s")
        local by_line = reports(out, path)
        if not line then         -- whichever example the budget stopped
            line = next(by_line)
        end
        assert.truthy(by_line[line], "line " .. tostring(line) .. " not reported:\n" .. out)
        assert.truthy(by_line[line]:find(reason, 1, true), out)
    end

    it("refuses a loop at the top level, with its line", function()
        refused("local n = 0\nwhile true do n = n + 1 end\n",
                "loading took longer than 2 s (a loop at the top level?", 5, 40)
    end)

    it("refuses a top-level loop that catches the budget's error", function()
        refused('gw.settings { timeouts = { load = 0.5 } }\n' ..
                "while true do\n    pcall(function() while true do end end)\nend\n",
                "loading took longer than 0.5 s", 6, 20)
    end)

    it("takes timeouts.load from the file's settings", function()
        refused('gw.settings { timeouts = { load = 0.3 } }\nwhile true do end\n',
                "loading took longer than 0.3 s", 5, 20)
    end)

    it("refuses a gw.test whose hook loops, within the hook budget", function()
        refused('gw.route { path = "/spin", upstream = "up", policies = { function(req)\n' ..
                '    xpcall(function() while true do end end, function() while true do end end)\n' ..
                'end } }\n' ..
                'gw.test { request = { path = "/spin" }, expect = { status = 200 } }\n',
                "expected status 200, got 500 (hook error: ", 7, 20)
    end)

    it("bounds the gw.test examples together (timeouts.load)", function()
        local tests = {}
        for _ = 1, 50 do
            tests[#tests + 1] = 'gw.test { request = { path = "/slow" }, expect = { status = 200 } }'
        end
        -- each example takes ~50 ms of CPU: under the hook budget, over the
        -- examples' 0.5 s together
        refused('gw.settings { timeouts = { load = 0.5, hook = 1 } }\n' ..
                'gw.route { path = "/slow", handler = function()\n' ..
                '    local t = os.clock() while os.clock() - t < 0.05 do end\n' ..
                '    return 200, "ok"\nend }\n' .. table.concat(tests, "\n") .. "\n",
                "the gw.test examples took longer than 0.5 s", nil, 20)
    end)

    it("refuses a config that allocates without end (limits.lua_memory)", function()
        refused('gw.settings { limits = { lua_memory = "64m" }, timeouts = { load = 30 } }\n' ..
                'local t = {}\nwhile true do t[#t + 1] = string.rep("x", 65536) .. #t end\n',
                "loading used more than 64 MB of memory", 6, 20)
    end)
end)

describe("moongate run with a bad config", function()
    it("refuses to start, exits non-zero and prints the errors", function()
        local file = FIX .. "bad.lua"
        local code, out = h.run_bin("run -c " .. file, 10)
        assert.are_not.equal(0, code, out)
        assert.are_not.equal(124, code, "still running after 10 s")
        local _, n = reports(out, file)
        assert.is_true(n >= 3, out)
    end)
end)

describe("moongate version", function()
    it("prints the versions of moongate, LuaJIT, libuv and llhttp", function()
        local code, out = h.run_bin("version")
        assert.equal(0, code, out)
        local lower = out:lower()
        for _, what in ipairs { "moongate", "luajit", "libuv", "llhttp" } do
            assert.truthy(lower:find(what, 1, true), what .. " missing from:\n" .. out)
        end
        assert.truthy(out:find("%d+%.%d+"), out)
    end)

    it("prints the OpenSSL version", function()
        local _, out = h.run_bin("version")
        assert.truthy(out:lower():find("openssl", 1, true), out)
    end)
end)

-- The documented project layout (docs/testing.md): the config requires its
-- policies from policies/ next to it. systemd starts services in /, so
-- modules must be found from the config's directory, not the current one.
describe("a config's own modules", function()
    local BIN = h.sh("realpath " .. h.shq(h.MG_BIN)):gsub("%s+$", "")
    local dir

    setup(function()
        dir = h.tmpfile("project")
        assert(os.execute("mkdir -p " .. h.shq(dir .. "/policies/lib")) == 0)
        h.write_file(dir .. "/policies/api_key.lua", [[
local keys = dofile("keys.lua")            -- relative: the config's directory
local util = require "policies.lib.util"   -- a module requiring another
return function(req)
    if not keys[util.trim(req:header("x-api-key") or "")] then
        return require("moongate").respond(401, { error = "no key" })
    end
end
]])
        h.write_file(dir .. "/policies/lib/util.lua",
                     'return { trim = function(s) return (s:gsub("^%s+", "")) end }\n')
        h.write_file(dir .. "/keys.lua", 'return { k1 = true }\n')
        h.write_file(dir .. "/gateway.lua", [[
local gw = require "moongate"
local api_key = require "policies.api_key"
gw.settings { access_log = "off", admin = false, timeouts = { shutdown = 2 } }
gw.listen { port = ]] .. h.free_port() .. [[, host = "127.0.0.1" }
gw.route { path = "/x", handler = function() return 200, "in" end, policies = { api_key } }
gw.test { request = { path = "/x" }, expect = { status = 401 } }
gw.test { request = { path = "/x", headers = { ["x-api-key"] = "k1" } },
          expect = { status = 200, body = "in" } }
]])
    end)

    teardown(h.cleanup)

    it("are found by check run from /", function()
        local out = h.sh("cd / && " .. h.shq(BIN) .. " check -c " ..
                         h.shq(dir .. "/gateway.lua") .. " 2>&1; echo rc=$?")
        assert.truthy(out:find("2 tests passed", 1, true), out)
        assert.truthy(out:find("rc=0", 1, true), out)
    end)

    it("are found by a gateway run from /, in its workers too", function()
        local port = tonumber(h.read_file(dir .. "/gateway.lua"):match("port = (%d+)"))
        local p = h.spawn("cd / && exec " .. h.shq(BIN) .. " run -c " ..
                          h.shq(dir .. "/gateway.lua") .. " --workers 2", "fromroot")
        local deadline = h.now() + 10 * h.SLOW
        while not h.can_connect(port) and p:alive() and h.now() < deadline do
            h.sleep(0.02)
        end
        assert.truthy(p:alive(), p:log())
        assert.equal(401, h.http(port, { path = "/x" }).status)
        assert.equal("in", h.http(port, { path = "/x", headers = { ["x-api-key"] = "k1" } }).body)
        p:kill("TERM", 10)
        assert.equal(0, p:exit_code(), p:log())
    end)
end)

-- Where the binary finds its Lua library: MOONGATE_LUA_DIR, <exe>/../lua,
-- <exe>/../share/moongate/lua (make install), then the Lua path.
describe("the Lua library", function()
    local BIN = h.sh("realpath " .. h.shq(h.MG_BIN)):gsub("%s+$", "")
    local LUA = h.sh("realpath lua"):gsub("%s+$", "")
    local good = "spec/fixtures/integration/good.lua"

    -- without LUA_PATH (the specs' own points at ./lua: step 4 would find it)
    local function check_with(bin, env)
        return h.sh("env -u LUA_PATH " .. (env or "") .. " " .. h.shq(bin) .. " check -c " ..
                    h.shq(good) .. " 2>&1; echo rc=$?")
    end

    it("is found under <prefix>/share/moongate/lua for <prefix>/bin/moongate", function()
        local pfx = h.tmpfile("prefix")
        assert(os.execute(("mkdir -p %s/bin %s/share/moongate && cp %s %s/bin/ && cp -r %s %s/share/moongate/lua")
            :format(h.shq(pfx), h.shq(pfx), h.shq(BIN), h.shq(pfx), h.shq(LUA), h.shq(pfx))) == 0)
        local out = check_with(pfx .. "/bin/" .. BIN:match("[^/]+$"))
        assert.truthy(out:find("rc=0", 1, true), out)
    end)

    it("missing, says where it looked and what to set; MOONGATE_LUA_DIR fixes it", function()
        local d = h.tmpfile("lonely")
        assert(os.execute(("mkdir -p %s && cp %s %s/"):format(h.shq(d), h.shq(BIN), h.shq(d))) == 0)
        local bin = d .. "/" .. BIN:match("[^/]+$")
        local out = check_with(bin)
        assert.truthy(out:find("rc=1", 1, true), out)
        assert.truthy(out:find("set MOONGATE_LUA_DIR", 1, true), out)
        assert.truthy(out:find(d .. "/../share/moongate/lua", 1, true), out)
        out = check_with(bin, "MOONGATE_LUA_DIR=" .. h.shq(LUA))
        assert.truthy(out:find("rc=0", 1, true), out)
    end)
end)

describe("argument mistakes", function()
    -- each answered with exit code 2 and the fix, before anything runs
    local cases = {
        { "check -c", "moongate check: -c needs a file (moongate check -c gateway.lua)" },
        { "check", "moongate check: needs a config file (moongate check -c gateway.lua)" },
        { "check gateway.lua", "a config file goes after -c: moongate check -c gateway.lua" },
        { "check -c a.lua -c b.lua", "moongate check: -c given twice" },
        { "check -c --workers 2", "moongate check: -c needs a file" },
        { "check --workers 2 -c x.lua", "--workers is not an option of check" },
        { "run --workers", "--workers needs a number from 1 to 1024 (moongate run --workers 4)" },
        { "run --workers many", "--workers takes a number from 1 to 1024, got 'many'" },
        { "run --workers 0", "--workers takes a number from 1 to 1024, got '0'" },
        { "reload --admin", "--admin needs HOST:PORT (moongate reload --admin 127.0.0.1:9901)" },
        { "reload --token", "--token needs the admin API's token" },
        { "repl --attach", "--attach needs HOST:PORT (moongate repl --attach 127.0.0.1:9901)" },
        { "repl -c a.lua --attach 127.0.0.1:1", "-c and --attach exclude each other" },
        { "repl --frob", "moongate repl: unknown argument '--frob' (usage: moongate repl" },
        { "version -c x.lua", "-c is not an option of version" },
        { "frob", "moongate: unknown command 'frob'" },
    }
    for _, case in ipairs(cases) do
        it("moongate " .. case[1], function()
            local code, out = h.run_bin(case[1], 5)
            assert.equal(2, code, out)
            assert.truthy(out:find(case[2], 1, true),
                          string.format("expected %q in:\n%s", case[2], out))
        end)
    end
end)

describe("moongate check: what config.lua normalises, C copies by the same schema", function()
    -- every value below goes through a module's check twice (config.lua,
    -- then src/config.c on the normalised table): a normalised value that
    -- the second check did not keep as is would be an "internal error"
    it("accepts nested tables, lists and checked strings of every object", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.settings { access_log = "logs/access.log", error_log = "stderr",
              admin = { host = "127.0.0.1", names = { "gw1.internal", "gw1.internal:9901" } },
              limits = { body = "1m" }, timeouts = { header = 5 } }
gw.listen { port = 8080, host = "[::1]" }
gw.listen { port = 8081, host = "localhost" }
gw.upstream("api", { "api_1.internal:80", { "[::1]:81", weight = 2 } },
            { health = { path = "/healthz", interval = 1 } })
gw.shared_dict("pages", { size = "1m" })
gw.route { name = "pages", path = "/p/**", upstream = "api", host = "*.Example.COM",
           methods = { "get", "HEAD", "GET" }, upgrades = { "WebSocket", "websocket" },
           headers = { ["X-Version"] = "2", ["x-tenant"] = "a" }, strip_prefix = "/p",
           cache = { dict = "pages", statuses = { 200, 404, 200 }, vary = { "Accept" } } }
gw.route { path = "/r/:id", upstream = "api", rewrite = "/v1/:id", host = "[::1]",
           cache = { redis = { host = "[::1]", port = 6379, password = "secret" } } }
]])
        assert.equal(0, code, out)
        assert.falsy(out:find("internal error", 1, true), out)
    end)
end)
