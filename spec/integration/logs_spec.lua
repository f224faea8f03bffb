-- Log files in production: the error log's lines (timestamp, level, the
-- log_level filter, error_log files), reopening after a rotation (SIGUSR1,
-- POST /logs/reopen) without losing or splitting a line, and access-log
-- lines that stay bounded and valid whatever a hook wrote into a field.
local h = require "spec.support.helpers"
local cjson = require "cjson"

local SANITIZED = os.getenv("MG_SANITIZED") == "1"

local function lines_of(path)
    local out = {}
    for l in (h.read_file(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
    return out
end

-- polls until cond() is true (a generous deadline: logs are flushed
-- asynchronously, at most every 200 ms)
local function eventually(cond, what, seconds)
    local deadline = h.now() + (seconds or 5) * h.SLOW
    while not cond() do
        if h.now() > deadline then error("timed out waiting for " .. what, 2) end
        h.sleep(0.05)
    end
end

describe("the access log", function()
    teardown(h.cleanup)

    it("keeps every request in exactly one file across a rotation under load (SIGUSR1)", function()
        local log = h.tmpdir() .. "/rot-access.log"
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { access_log = "{{LOG}}", admin = false }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.route { path = "/r/**", handler = function(req) return 200, "ok" end }
]], { vars = { LOG = log } })
        local total = 10000
        local rate = SANITIZED and 1000 or 2500
        local duration = total / rate
        local wait = h.load_start { ports = { gw.port }, paths = { "/r/a", "/r/b?x=1" },
                                    rate = rate, duration = duration, conns = 16 }
        h.sleep(duration / 2)
        assert(os.rename(log, log .. ".1"))
        gw:signal("USR1")
        local report = wait()
        local answered = 0
        for status, n in pairs(report.status or {}) do
            assert.equal("200", tostring(status))
            answered = answered + n
        end
        assert.equal(total, answered, cjson.encode(report))
        local old, new
        local ok = pcall(eventually, function()
            old, new = lines_of(log .. ".1"), lines_of(log)
            return #old + #new >= total
        end, "10,000 access-log lines", 10)
        assert(ok, ("%d + %d lines of %d; error log: %s"):format(#old, #new, total,
                                                                gw:log_tail(5)))
        h.sleep(0.5) -- nothing more may come
        old, new = lines_of(log .. ".1"), lines_of(log)
        assert.equal(total, #old + #new)
        assert.is_true(#old > 0 and #new > 0, ("old %d, new %d lines"):format(#old, #new))
        local ids = {}
        for _, set in ipairs({ old, new }) do
            for _, l in ipairs(set) do
                local ok, e = pcall(cjson.decode, l)
                assert(ok and type(e) == "table", "not one JSON object: " .. l)
                assert.equal(200, e.status)
                assert.is_nil(ids[e.request_id], "logged twice: " .. tostring(e.request_id))
                ids[e.request_id] = true
            end
        end
        gw:stop()
    end)

    it("bounds every field by what is written, whoever set it (a 40 KB hook-set path)", function()
        local log = h.tmpdir() .. "/big-access.log"
        local up = h.start_upstream { name = "big" }
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { access_log = "{{LOG}}", admin = false,
              limits = { header_size = "128k", request_line = "64k" } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
local function rewrite(req)
    local p = req:header("x-new-path")
    if p then req:set_path("/e/" .. p) end
    local q = req:header("x-new-query")
    if q then req:set_query("q=" .. q) end
end
gw.route { path = "/**", upstream = "up", policies = { rewrite } }
]], { vars = { LOG = log, UP = up } })
        local long = string.rep("a", 40 * 1024)
        local quoted = string.rep('"\\', 20 * 1024) -- escapes to 4 bytes each
        local n = 0
        for _, hdrs in ipairs({
            { ["x-new-path"] = long },
            { ["x-new-path"] = long, ["x-new-query"] = long },
            { ["x-new-query"] = quoted },
            { ["x-new-path"] = "ok" },
        }) do
            for _ = 1, 5 do
                local res = h.http(gw.port, { path = "/x", headers = hdrs })
                assert(res and res.status, "no answer")
                n = n + 1
            end
        end
        local ls
        eventually(function() ls = lines_of(log); return #ls >= n end, n .. " lines")
        local cut = 0
        for _, l in ipairs(ls) do
            local ok, e = pcall(cjson.decode, l)
            assert(ok and type(e) == "table", "not one JSON object: " .. l:sub(1, 200))
            assert.is_true(#l < 20 * 1024, "line of " .. #l .. " bytes")
            if e.path:find("%.%.%.$") or e.query:find("%.%.%.$") then cut = cut + 1 end
        end
        assert.equal(15, cut) -- the three kinds of long values, 5 each
        gw:assert_alive()
        gw:stop()
    end)
end)

describe("the error log", function()
    teardown(h.cleanup)

    it("writes timestamped lines with their level, and drops those below log_level", function()
        local errlog = h.tmpdir() .. "/lvl-error.log"
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { error_log = "{{ERR}}", log_level = "notice",
              admin = { port = {{PORT2}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.route { path = "/say", handler = function(req)
    gw.log("debug", "quiet-debug")
    gw.log("info", "quiet-info")
    gw.log("notice", "loud-notice")
    gw.log("err", "loud-err")   -- nginx's name for error
    return 200, "said"
end }
]], { ports = 2, vars = { ERR = errlog } })
        assert.equal(200, h.http(gw.port, { path = "/say" }).status)
        eventually(function() return (h.read_file(errlog) or ""):find("loud-err", 1, true) end,
                   "the error line")
        local text = h.read_file(errlog)
        assert.is_nil(text:find("quiet-", 1, true), text)
        local ts = "%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ"
        assert.truthy(text:find("\n?" .. ts .. " %[notice%] worker %d+: loud%-notice\n"), text)
        assert.truthy(text:find(ts .. " %[error%] worker %d+: loud%-err\n"), text)
        -- reopened through the admin API after a rotation
        assert(os.rename(errlog, errlog .. ".1"))
        local res = h.admin(gw.ports[2], { method = "POST", path = "/logs/reopen" })
        assert.equal(200, res.status, res.body)
        assert.equal(200, h.http(gw.port, { path = "/say" }).status)
        eventually(function() return (h.read_file(errlog) or ""):find("loud-err", 1, true) end,
                   "a line in the new error log")
        assert.truthy(h.read_file(errlog):find("[notice] log files reopened", 1, true))
        gw:stop()
        -- what the sanitizers would have said went to the error log file
        local all = (h.read_file(errlog .. ".1") or "") .. (h.read_file(errlog) or "")
        assert.is_nil(all:find("Sanitizer", 1, true), all)
    end)

    it('error_log = "stdout" writes to standard output, not to a file named stdout', function()
        os.remove("stdout")
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { error_log = "stdout", admin = false }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.route { path = "/say", handler = function(req)
    gw.log("err", "to-stdout-line")
    return 200, "said"
end }
]])
        assert.equal(200, h.http(gw.port, { path = "/say" }).status)
        eventually(function() return gw:log():find("to-stdout-line", 1, true) end,
                   "the error line on the gateway's output")
        gw:stop()
        assert.is_nil(io.open("stdout"), "a file named stdout was created")
    end)

    it("refuses an unknown log_level with file:line", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.settings { log_level = "verbose" }
gw.listen { port = 8080 }
]])
        assert.equal(1, code)
        assert.truthy(out:find(":2: settings.log_level must be one of debug, info, notice, " ..
                               "warn, error, crit", 1, true), out)
    end)
end)
