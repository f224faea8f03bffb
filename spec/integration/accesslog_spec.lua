-- access_log = "<file>": one JSON line per request with time, request_id,
-- trace_id, span_id,
-- client, method, path, status, bytes, route, upstream (its name), target
-- (the instance), upstream_time, cache, total_time. The gw.test examples
-- run at start and reload are not traffic: their on_log hooks do not run.
local h = require "spec.support.helpers"
local cjson = require "cjson"

local CONFIG = [[
local gw = require "moongate"
gw.settings { access_log = "{{LOG}}", timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { name = "api", path = "/api/**", upstream = "up" }
gw.route { name = "cached", path = "/cached/**", upstream = "up", cache = { ttl = 60 } }
gw.route { name = "hello", path = "/hello", handler = function(req)
  return 200, { hello = "world" }
end }
]]

describe("access log", function()
    local gw, up, log

    setup(function()
        up = h.start_upstream { name = "up" }
        log = h.tmpfile("access.log")
        gw = h.start_gateway(CONFIG, { vars = { UP = up, LOG = log } })
    end)

    teardown(h.cleanup)

    local function lines()
        local out = {}
        for l in (h.read_file(log) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
        return out
    end

    -- waits until the log has `n` lines (it may be written asynchronously)
    local function wait_lines(n)
        local deadline = h.now() + 3 * h.SLOW
        local ls = lines()
        while #ls < n and h.now() < deadline do
            h.sleep(0.02)
            ls = lines()
        end
        return ls
    end

    -- the decoded entry whose request_id is `id`
    local function entry(id)
        local deadline = h.now() + 3 * h.SLOW
        repeat
            for _, l in ipairs(lines()) do
                local ok, e = pcall(cjson.decode, l)
                if ok and type(e) == "table" and e.request_id == id then return e end
            end
            h.sleep(0.02)
        until h.now() > deadline
        error("no access log line for request id " .. id .. " in:\n" ..
              (h.read_file(log) or "(no file)"))
    end

    it("every line is a JSON object", function()
        h.http(gw.port, { path = "/api/json" })
        local ls = wait_lines(1)
        assert.is_true(#ls >= 1)
        for _, l in ipairs(ls) do
            local ok, e = pcall(cjson.decode, l)
            assert.is_true(ok and type(e) == "table", "not a JSON object: " .. l)
        end
    end)

    it("logs a proxied request with all fields", function()
        local res = h.http(gw.port, { path = "/api/orders?x=1&delay=0.2" })
        assert.equal(200, res.status)
        local e = entry(res.headers["x-request-id"])
        assert.is_not_nil(e.time)
        assert.is_true(type(e.time) == "string" or type(e.time) == "number")
        assert.truthy(tostring(e.client):find("127.0.0.1", 1, true))
        assert.equal("GET", e.method)
        assert.truthy(e.path == "/api/orders" or e.path == "/api/orders?x=1&delay=0.2",
            tostring(e.path))
        assert.equal(200, e.status)
        assert.is_number(e.bytes)
        assert.is_true(e.bytes >= #res.body)
        assert.equal("api", e.route)
        assert.equal("up", e.upstream)
        assert.equal(up.addr, e.target)
        assert.equal(cjson.null, e.cache)
        assert.is_number(e.upstream_time)
        assert.is_number(e.total_time)
        assert.is_true(e.upstream_time >= 0.19, "upstream_time " .. e.upstream_time)
        assert.is_true(e.total_time >= e.upstream_time)
    end)

    it("logs what the cache did: miss, then hit without a target", function()
        local first = h.http(gw.port, { path = "/cached/one" })
        assert.equal(200, first.status)
        local e = entry(first.headers["x-request-id"])
        assert.equal("miss", e.cache)
        assert.equal("up", e.upstream)
        assert.equal(up.addr, e.target)
        local second = h.http(gw.port, { path = "/cached/one" })
        assert.equal(200, second.status)
        e = entry(second.headers["x-request-id"])
        assert.equal("hit", e.cache)
        assert.equal("up", e.upstream)
        assert.equal(cjson.null, e.target)
        assert.equal(cjson.null, e.upstream_time)
    end)

    it("logs the request id the client sent", function()
        h.http(gw.port, { path = "/api/rid", headers = { ["X-Request-Id"] = "log-me-1" } })
        local e = entry("log-me-1")
        assert.equal(200, e.status)
    end)

    it("logs an error answer with its status and no upstream", function()
        local res = h.http(gw.port, { path = "/nowhere" })
        assert.equal(404, res.status)
        local e = entry(res.headers["x-request-id"])
        assert.equal(404, e.status)
        assert.equal("GET", e.method)
        assert.equal(cjson.null, e.upstream)
        assert.equal(cjson.null, e.target)
        assert.equal(cjson.null, e.cache)
    end)

    it("logs a Lua handler request with its route", function()
        local res = h.http(gw.port, { path = "/hello" })
        local e = entry(res.headers["x-request-id"])
        assert.equal(200, e.status)
        assert.equal("hello", e.route)
    end)

    it("writes exactly one line per request, keep-alive included", function()
        local before = #wait_lines(0)
        local c = h.connect(gw.port)
        local ids = {}
        for i = 1, 5 do
            local res = c:request { method = i % 2 == 0 and "POST" or "GET",
                                    path = "/api/n/" .. i, body = i % 2 == 0 and "b" or nil }
            ids[i] = res.headers["x-request-id"]
        end
        c:close()
        for i = 1, 5 do
            local e = entry(ids[i])
            assert.equal(i % 2 == 0 and "POST" or "GET", e.method)
        end
        h.sleep(0.1)
        assert.equal(before + 5, #lines())
    end)
end)

describe("gw.test examples at start and reload", function()
    teardown(h.cleanup)

    it("are not logged as traffic: the on_log hooks run for real requests only", function()
        local up = h.start_upstream { name = "up" }
        local text = [[
local gw = require "moongate"
gw.settings { access_log = "off", timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { name = "api", path = "/api/**", upstream = "up" }
function gw.on_log(req, res)
    gw.log("info", "on_log ran for " .. req.path)
end
gw.test { request = { path = "/api/selftest-%d" }, expect = { status = 200 } }
]]
        local gw = h.start_gateway(text:format(1), { vars = { UP = up } })
        local res = h.http(gw.port, { path = "/api/real" })
        assert.equal(200, res.status)
        local deadline = h.now() + 5 * h.SLOW
        while not (gw:log() or ""):find("on_log ran for /api/real", 1, true)
            and h.now() < deadline do
            h.sleep(0.02)
        end
        local log = gw:log() or ""
        assert.truthy(log:find("on_log ran for /api/real", 1, true), log)
        assert.falsy(log:find("selftest", 1, true), log)
    end)
end)
