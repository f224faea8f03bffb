-- gRPC end to end (issue #16): a real gRPC client and server from Debian's
-- python3-grpcio (spec/support/grpc_client.py, grpc_server.py: a service
-- without protoc, bytes in and out) with the gateway between them, HTTP/2
-- on both sides (h2c with prior knowledge: src/h2_conn.c to the client,
-- src/h2_upstream.c to the server). Unary, server, client and
-- bidirectional streaming, a deadline, a cancellation, a 4 MiB message,
-- status codes, metadata and trailers; a JWT policy and a rate limit on
-- single methods (route.grpc), and the gateway's own gRPC answers.
local h = require "spec.support.helpers"

local fmt = string.format
local PY = "/usr/bin/python3"
local SECRET = "grpc-e2e-secret-0123456789abcdef"

local CONFIG = [[
local gw = require "moongate"
local jwt = require "moongate.jwt"
local limit = require "moongate.ratelimit"
gw.settings { timeouts = { shutdown = 2 }, limits = { body = "64m" } }
gw.listen { port = {{PORT}}, host = "127.0.0.1", http2 = true }
gw.upstream("grpc", { "127.0.0.1:{{GRPC}}" }, { protocol = "grpc" })
gw.upstream("gone", { "{{DEAD}}" }, { protocol = "grpc", max_fails = 0 })
gw.route { grpc = { service = "demo.Echo", method = "Secret" }, upstream = "grpc",
           policies = { jwt.policy { secret = "{{SECRET}}" } } }
gw.route { grpc = { service = "demo.Echo", method = "Limited" }, upstream = "grpc",
           policies = { limit.policy { rate = 3, per = 60,
                                       key = function(req) return req.grpc.method end } } }
gw.route { grpc = { service = "demo.Echo" }, upstream = "grpc" }
gw.route { grpc = { service = "demo.Gone" }, upstream = "gone" }
]]

local function token(sub) return h.hs256(SECRET, sub) end

describe("gRPC through the gateway (python3-grpcio both ends)", function()
    local gw, server

    local function client(scenario, args)
        local out = h.sh(fmt("timeout %d %s spec/support/grpc_client.py --port %d %s %s 2>&1",
                             math.floor(60 * h.SLOW), PY, gw.port, h.shq(scenario), args or ""))
        local ok, r = pcall(h.json, out)
        assert(ok and type(r) == "table", "grpc_client.py said: " .. out)
        return r
    end

    setup(function()
        local port = h.free_port()
        server = h.spawn(fmt("exec %s -u spec/support/grpc_server.py --port %d", PY, port),
                         "grpc-server")
        h.eventually(15, function() return server:log():find("ready", 1, true) end,
                     "the gRPC server")
        gw = h.start_gateway(CONFIG, { workers = 1, vars = {
            GRPC = port, DEAD = h.dead_addr(), SECRET = SECRET } })
    end)

    teardown(h.cleanup)

    it("unary, with metadata both ways and trailers", function()
        local r = client("unary")
        assert.is_true(r.ok, require("cjson").encode(r))
        assert.equal("hello", r.body)
        assert.equal("OK", r.code)
        assert.equal("e1", r.initial["x-echo"])
        assert.equal("t1", r.trailing["x-trailer"])
    end)

    it("server streaming: 200 messages", function()
        local r = client("server_stream")
        assert.same({ ok = true, count = 200, good = true }, r)
    end)

    it("client streaming: 50 messages of 10,000 bytes", function()
        assert.same({ ok = true, total = 500000 }, client("client_stream"))
    end)

    it("bidirectional streaming, one message at a time", function()
        assert.same({ ok = true, got = { "ALPHA", "BETA", "GAMMA" } }, client("bidi"))
    end)

    it("a 4 MiB message both ways", function()
        assert.same({ ok = true, len = 4 * 1024 * 1024, same = true }, client("big"))
    end)

    it("the server's status codes and messages reach the client", function()
        local r = client("fail:NOT_FOUND:no such thing")
        assert.equal("NOT_FOUND", r.code)
        assert.equal("no such thing", r.details)
        r = client("fail:PERMISSION_DENIED:nope")
        assert.equal("PERMISSION_DENIED", r.code)
    end)

    it("a deadline: DEADLINE_EXCEEDED, not a wait for the server", function()
        local r = client("deadline")
        assert.equal("DEADLINE_EXCEEDED", r.code)
        assert.is_true(r.took < 2.5, "took " .. tostring(r.took))
        gw:assert_alive()
    end)

    it("a cancellation reaches the server", function()
        local before = client("stats").stats.cancelled
        local r = client("cancel")
        assert.is_true(r.cancelled)
        h.eventually(5, function() return client("stats").stats.cancelled > before end,
                     "the server to see the cancellation")
    end)

    it("a JWT policy on one method: UNAUTHENTICATED without a token", function()
        local r = client("secret")
        assert.equal("UNAUTHENTICATED", r.code)
        r = client("secret", "--token " .. token("alice"))
        assert.is_true(r.ok)
        assert.equal("s", r.body)
        assert.is_true(client("unary").ok) -- the service's other methods are open
    end)

    it("a rate limit on one method: RESOURCE_EXHAUSTED past it", function()
        local r = client("repeat", "--method Limited --count 5")
        assert.same({ "OK", "OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED" }, r.codes)
        r = client("repeat", "--method Unary --count 5")
        assert.same({ "OK", "OK", "OK", "OK", "OK" }, r.codes)
    end)

    it("the gateway's own answers are gRPC statuses", function()
        local r = client("repeat", "--service other.Service --count 1")
        assert.same({ "UNIMPLEMENTED" }, r.codes) -- no route
        r = client("repeat", "--service demo.Gone --count 1")
        assert.same({ "UNAVAILABLE" }, r.codes) -- its upstream is down
        gw:assert_alive()
    end)
end)
