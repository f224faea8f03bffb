-- Errors are answers: a short JSON body {"error", "status", "request_id"}
-- with Content-Type: application/json and X-Request-Id equal to the body's
-- request_id. (413/414/431/408 are in limits_spec, 502/504 in
-- upstreams_spec, all checked with the same h.assert_error.)
local h = require "spec.support.helpers"

-- (written as a table: exercises h.config_text)
local CONFIG = {
    settings = { timeouts = { shutdown = 2 } },
    upstreams = {
        { "up", { "{{UP}}" } },
        { "down", { "{{DEAD}}" }, { connect_timeout = 1 } },
    },
    routes = {
        { path = "/api/**", upstream = "up", methods = { "GET", "POST" } },
        { path = "/down", upstream = "down" },
        { path = "/boom", handler = h.raw('function(req) error("boom") end') },
    },
}

describe("error answers", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up, DEAD = h.dead_addr() } })
    end)

    teardown(h.cleanup)

    it("no route: 404 {error = 'no route'}", function()
        local body = h.assert_error(h.http(gw.port, { path = "/nope" }), 404)
        assert.equal("no route", body.error)
    end)

    it("the error's request_id is the client's valid X-Request-Id", function()
        local res = h.http(gw.port, { path = "/nope", headers = { ["X-Request-Id"] = "req-42" } })
        local body = h.assert_error(res, 404)
        assert.equal("req-42", body.request_id)
    end)

    it("generated request ids differ between errors", function()
        local a = h.assert_error(h.http(gw.port, { path = "/nope" }), 404)
        local b = h.assert_error(h.http(gw.port, { path = "/nope" }), 404)
        assert.are_not.equal(a.request_id, b.request_id)
    end)

    it("method not allowed: 405", function()
        h.assert_error(h.http(gw.port, { method = "DELETE", path = "/api/x" }), 405)
    end)

    it("a malformed request line: 400 and close", function()
        local c = h.connect(gw.port)
        c:send("GARBAGE\r\n\r\n")
        h.assert_error(assert(c:read_response()), 400)
        assert.is_true(c:closed(2))
    end)

    it("an unsupported HTTP version: 400 or 505, and close", function()
        local c = h.connect(gw.port)
        c:send("GET /api/x HTTP/9.9\r\nHost: localhost\r\n\r\n")
        local res = assert(c:read_response())
        assert.is_true(res.status == 400 or res.status == 505, tostring(res.status))
        h.assert_error(res, res.status)
        assert.is_true(c:closed(2))
    end)

    it("a request-target that is not origin-form: 400", function()
        local c = h.connect(gw.port)
        c:send("GET api/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        h.assert_error(assert(c:read_response()), 400)
    end)

    it("a refused upstream: 502", function()
        h.assert_error(h.http(gw.port, { path = "/down" }), 502)
    end)

    it("a Lua handler that raises: 500, and the gateway keeps serving", function()
        h.assert_error(h.http(gw.port, { path = "/boom" }), 500)
        assert.equal(200, h.http(gw.port, { path = "/api/ok" }).status)
        gw:assert_alive()
    end)

    it("an error keeps the connection usable when the request was well-formed", function()
        local c = h.connect(gw.port)
        h.assert_error(c:request { path = "/nope" }, 404)
        local res = c:request { path = "/api/after-404" }
        assert.equal(200, res.status)
        c:close()
    end)
end)

-- A 502 or 504 is the gateway's own answer: its error log says why, with
-- the route, the upstream, the target and the request id.
describe("502 and 504 in the error log", function()
    local gw, up, dead
    local CONF = [[
local gw = require "moongate"
gw.settings { access_log = "off", timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("live", { "{{UP}}" }, { read_timeout = 0.3 })
gw.upstream("gone", { "{{DEAD}}" })
gw.route { name = "api", path = "/api/**", upstream = "live" }
gw.route { name = "down", path = "/down", upstream = "gone" }
]]

    setup(function()
        up = h.start_upstream { name = "live" }
        dead = h.dead_addr()
        gw = h.start_gateway(CONF, { vars = { UP = up, DEAD = dead } })
    end)

    teardown(h.cleanup)

    -- waits for the error-log line of request `id`; returns it
    local function log_line(id)
        local deadline = h.now() + 5 * h.SLOW
        repeat
            for line in (gw:log() or ""):gmatch("[^\n]+") do
                if line:find("(request " .. id .. ")", 1, true) then
                    return line
                end
            end
            h.sleep(0.02)
        until h.now() > deadline
        error("no error-log line for request " .. id .. " in:\n" .. (gw:log() or ""))
    end

    local function check(path, status, upstream, target, why)
        local res = h.http(gw.port, { path = path })
        assert.equal(status, res.status)
        local line = log_line(res.headers["x-request-id"])
        local route = path == "/down" and "down" or "api"
        for _, want in ipairs {
            "[error]", status .. ": route " .. route, "upstream " .. upstream,
            "target " .. target, why,
        } do
            assert.truthy(line:find(want, 1, true),
                          string.format("expected %q in %q", want, line))
        end
    end

    it("connect refused: 502", function()
        check("/down", 502, "gone", dead, "upstream refused the connection (ECONNREFUSED)")
    end)

    it("timeout: 504", function()
        check("/api/slow?delay=2", 504, "live", up.addr, "upstream timed out")
    end)

    it("reset: 502", function()
        check("/api/r?reset=1", 502, "live", up.addr, "upstream reset the connection (ECONNRESET)")
    end)

    it("bad response: 502 with llhttp's reason", function()
        check("/api/b?hdr=bad%20name:v", 502, "live", up.addr, "invalid upstream response: ")
    end)

    it("a good answer writes no error line", function()
        local res = h.http(gw.port, { path = "/api/ok" })
        assert.equal(200, res.status)
        h.sleep(0.1)
        assert.falsy((gw:log() or ""):find(res.headers["x-request-id"], 1, true))
    end)
end)
