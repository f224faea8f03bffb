-- gRPC's rules in the gateway (issue #16, src/grpc.c), seen by HTTP/1.1
-- clients with gRPC's content type in front of a real HTTP/2 upstream
-- (spec/support/h2_upstream.py): the answers the gateway makes itself are
-- gRPC answers (200, grpc-status and grpc-message, no body) by one table,
-- routes match a gRPC service and method, hooks read req.grpc, JWT and
-- rate limits apply per method, grpc-timeout caps the request's deadline.
-- (gRPC clients need HTTP/2 to the gateway: spec/integration/grpc_spec.lua.)
local h = require "spec.support.helpers"

local fmt = string.format
local PY = "/usr/bin/python3"
local SECRET = "grpc-spec-secret-0123456789abcdef"

local CONFIG = [[
local gw = require "moongate"
local jwt = require "moongate.jwt"
local limit = require "moongate.ratelimit"
gw.settings { timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "127.0.0.1:{{H2}}" }, { protocol = "grpc" })
gw.upstream("gone", { "{{DEAD}}" }, { protocol = "grpc", max_fails = 0 })

-- one method behind a JWT, the service's others open; a limit per method
gw.route { grpc = { service = "demo.Echo", method = "Secret" }, upstream = "svc",
           policies = { jwt.policy { secret = "{{SECRET}}" } } }
gw.route { grpc = { service = "demo.Echo" }, upstream = "svc", policies = {
    limit.policy { rate = 3, per = 60, key = function(req)
        return req.grpc.service .. "/" .. req.grpc.method
    end },
    function(req)
        if req.grpc.method == "Forbidden" then return gw.respond(403) end
        req:set_header("x-grpc-method", req.grpc.method)
    end,
} }
gw.route { grpc = { service = "demo.Gone" }, upstream = "gone" }
-- a plain route at the same path takes what is not gRPC
gw.route { path = "/demo.Echo/**", upstream = "svc" }
gw.route { path = "/plain/**", upstream = "svc", strip_prefix = "/plain" }
]]

local function token(sub) return h.hs256(SECRET, sub) end

describe("gRPC rules", function()
    local gw, up

    local function call(path, headers)
        local hs = { ["Content-Type"] = "application/grpc", TE = "trailers" }
        for k, v in pairs(headers or {}) do hs[k] = v end
        return h.http(gw.port, { method = "POST", path = path, headers = hs, body = "" })
    end

    local function grpc_answer(res, code)
        assert.equal(200, res.status)
        assert.equal("application/grpc", res.headers["content-type"])
        assert.equal(tostring(code), res.headers["grpc-status"])
        assert.equal("", res.body)
    end

    setup(function()
        local port, control = h.free_port(), h.free_port()
        up = h.spawn(fmt("exec %s -u spec/support/h2_upstream.py --port %d --control-port %d",
                         PY, port, control), "h2-svc")
        up.port = port
        h.eventually(10, function() return up:log():find("ready", 1, true) end, "upstream")
        gw = h.start_gateway(CONFIG, { workers = 1, vars = {
            H2 = port, DEAD = h.dead_addr(), SECRET = SECRET } })
    end)

    teardown(h.cleanup)

    it("routes a gRPC method to its service's route, with req.grpc for hooks", function()
        local res = call("/demo.Echo/Say")
        assert.equal(200, res.status)
        local seen = h.json(res.body) -- the upstream's echo
        assert.equal("/demo.Echo/Say", seen.path)
        assert.same({ "Say" }, seen.headers["x-grpc-method"])
        assert.same({ "trailers" }, seen.headers.te) -- gRPC needs it upstream
    end)

    it("routes a request that is not gRPC to the plain route", function()
        local res = h.http(gw.port, { method = "POST", path = "/demo.Echo/Say", body = "" })
        assert.equal(200, res.status)
        assert.is_nil(h.json(res.body).headers["x-grpc-method"])
    end)

    it("answers no route with 12 UNIMPLEMENTED", function()
        local res = call("/other.Service/Method")
        grpc_answer(res, 12)
        assert.equal("no route", res.headers["grpc-message"])
        -- and the same request without gRPC's type gets the JSON 404
        local plain = h.http(gw.port, { method = "POST", path = "/other.Service/Method", body = "" })
        assert.equal(404, plain.status)
    end)

    it("answers a JWT policy's 401 with 16 UNAUTHENTICATED, per method", function()
        grpc_answer(call("/demo.Echo/Secret"), 16)
        local res = call("/demo.Echo/Secret", { Authorization = "Bearer " .. token("alice") })
        assert.equal(200, res.status)
        assert.equal("/demo.Echo/Secret", h.json(res.body).path)
        assert.equal(200, call("/demo.Echo/Open").status) -- another method: no token needed
    end)

    it("answers a hook's 403 with 7 PERMISSION_DENIED", function()
        grpc_answer(call("/demo.Echo/Forbidden"), 7)
    end)

    it("answers the rate limit's 429 with 8 RESOURCE_EXHAUSTED, counted per method", function()
        local codes = {}
        for i = 1, 4 do codes[i] = call("/demo.Echo/Limited").headers["grpc-status"] end
        assert.same({ nil, nil, nil, "8" }, codes) -- three pass, the fourth is refused
        local again = call("/demo.Echo/Limited")
        grpc_answer(again, 8)
        assert.truthy(again.headers["retry-after"]) -- the policy's own field stays
        assert.equal(200, call("/demo.Echo/Other").status) -- another method's count
    end)

    it("answers an upstream that is down with 14 UNAVAILABLE", function()
        local res = call("/demo.Gone/Any")
        grpc_answer(res, 14)
        assert.equal("upstream refused the connection", res.headers["grpc-message"])
    end)

    it("honours grpc-timeout: 4 DEADLINE_EXCEEDED when it passes", function()
        -- the upstream's /slow answers after 2 s: a 300 ms deadline ends it
        local t0 = h.now()
        local res = h.http(gw.port, { method = "POST", path = "/plain/slow?ms=2000", headers = {
            ["Content-Type"] = "application/grpc", ["grpc-timeout"] = "300m" }, body = "" })
        local took = h.now() - t0
        grpc_answer(res, 4)
        assert.is_true(took < 1.8 * h.SLOW, "took " .. took .. " s")
        -- a malformed grpc-timeout is ignored (gRPC servers do the same)
        res = h.http(gw.port, { method = "POST", path = "/plain/slow?ms=100", headers = {
            ["Content-Type"] = "application/grpc", ["grpc-timeout"] = "soon" }, body = "" })
        assert.equal(200, res.status)
        assert.equal("slow", res.body)
    end)

    it("refuses route.grpc mistakes at load, with their line", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.listen { port = 1 }
gw.upstream("u", { "127.0.0.1:1" }, { protocol = "h3" })
gw.route { grpc = { service = "9bad" }, upstream = "u" }
gw.route { grpc = { service = "a.B", method = "x.y" }, upstream = "u" }
gw.route { grpc = { method = "M" }, upstream = "u" }
gw.route { grpc = { service = "a.B" }, path = "/x", upstream = "u" }
]], "grpc_bad.lua")
        assert.equal(1, code)
        assert.truthy(out:find(':3: upstream.protocol must be "h1", "h2" or "grpc"', 1, true), out)
        assert.truthy(out:find(":4: route.grpc.service must be a gRPC service name", 1, true), out)
        assert.truthy(out:find(":5: route.grpc.method must be a gRPC method name", 1, true), out)
        assert.truthy(out:find(":6: route.grpc.service must be a gRPC service name", 1, true), out)
        assert.truthy(out:find(":7: route.grpc gives the route its path", 1, true), out)
    end)
end)
