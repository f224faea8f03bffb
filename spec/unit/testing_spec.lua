-- Specs for lua/moongate/testing.lua (and lua/moongate/testing/*.lua): the
-- kit that runs a config's router and hooks without sockets. The router is
-- the C one (build/libmgtest.so, or MG_TEST_LIB). Run from the repository
-- root:
--   luajit /usr/bin/busted spec/unit/testing_spec.lua
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local t = require "moongate.testing"
local router = require "moongate.testing.router"
local gw = require "moongate"

local DIR = "spec/fixtures/testing/"

local function load(name, opts)
    return assert(t.load(DIR .. name .. ".lua", opts))
end

-- The hooks of a decision's trace, in order.
local function hooks_of(d)
    local out = {}
    for i, e in ipairs(d.trace) do
        out[i] = e.hook
    end
    return out
end

local function error_body(status, message, id)
    return string.format('{"error":"%s","status":%d,"request_id":"%s"}\n',
                         message, status, id)
end

describe("the gateway's own C checks with the config's limits", function()
    local g = load("limits")

    it("answers 414 and 431 past the config's limits", function()
        local d = g:request { path = "/x/" .. string.rep("a", 300) }
        assert.equal(414, d.status)
        assert.equal(error_body(414, "request line too long", d.id), d.body)
        d = g:request { path = "/x/1", headers = { ["X-Big"] = string.rep("b", 1100) } }
        assert.equal(error_body(431, "request header fields too large", d.id), d.body)
        local many = {}
        for i = 1, 9 do many[i] = { "X-N" .. i, "v" } end
        d = g:request { path = "/x/1", headers = many }
        assert.equal(error_body(431, "too many header fields", d.id), d.body)
        assert.equal(200, g:request { path = "/x/1" }.status)
    end)

    it("answers 400 to HTTP/0.9 and an obs-fold line as the live parser does", function()
        local d = g:request { path = "/x/1", http_version = "0.9" }
        assert.equal(error_body(400, "request line without an HTTP version (HTTP/0.9)", d.id),
                     d.body)
        d = g:request { path = "/x/1", headers = { { "X-Fold", "a\r\n b" } } }
        assert.equal(error_body(400, "obs-fold header continuation", d.id), d.body)
    end)

    it("takes set_upstream and set_target names from the config", function()
        local req = g:fake_request { path = "/x/1", phase = "on_route" }
        req:set_upstream("b")
        req:set_target("[::1]:9003")
        assert.equal("b", req.upstream)
        assert.has_error(function() req:set_target("127.0.0.1:9001") end,
                         "req:set_target: no such name")
        assert.has_error(function() req:set_upstream("c") end, "req:set_upstream: no such name")
        local res = t.fake_response({ status = 200 }, req)
        assert.has_error(function() req:set_upstream("a") end,
                         "req:set_upstream: not possible in this phase (the response has started)")
        assert.equal(200, res.status)
    end)

    it("gives a fake gRPC request req.grpc by the gateway's rule (src/grpc.c)", function()
        local req = t.fake_request { method = "POST", path = "/helloworld.Greeter/SayHello",
                                     headers = { ["content-type"] = "application/grpc+proto" } }
        assert.same({ service = "helloworld.Greeter", method = "SayHello" }, req.grpc)
        req = t.fake_request { method = "POST", path = "/helloworld.Greeter/SayHello",
                               headers = { ["content-type"] = "application/json" } }
        assert.is_nil(req.grpc)
        req = t.fake_request { method = "POST", path = "/not/a/grpc/path",
                               headers = { ["content-type"] = "application/grpc" } }
        assert.is_nil(req.grpc)
    end)

    it("refuses a fake request the gateway answers before any hook", function()
        assert.has_error(function() t.fake_request { path = "/a%2Fb" } end,
            "moongate.testing: the gateway answers this request 400 " ..
            "(escaped slash (%2F, %5C) in path)")
        assert.has_error(function() g:fake_request { path = "/x/" .. string.rep("a", 300) } end,
            "moongate.testing: the gateway answers this request 414 (request line too long)")
    end)
end)

describe("t.load", function()
    it("returns the config's errors as file:line: reason", function()
        local g, errs = t.load(DIR .. "bad.lua")
        assert.is_nil(g)
        assert.equal(1, #errs)
        assert.truthy(errs[1]:find("^spec/fixtures/testing/bad%.lua:6: " ..
                                   "route%.upstream \"ordrs\" is not declared"))
    end)

    it("reports a file it cannot read", function()
        local g, errs = t.load(DIR .. "missing.lua")
        assert.is_nil(g)
        assert.truthy(errs[1]:find("cannot read the config file", 1, true))
    end)

    it("keeps the normalised config", function()
        local g = load("routing")
        assert.equal(10, #g.cfg.routes)
        assert.equal(8080, g.cfg.listeners[1].port)
    end)
end)

describe("routing through the C router", function()
    local g = load("routing")

    it("matches an exact path and its methods", function()
        local d = g:request { method = "POST", path = "/payments", body = "{}" }
        assert.equal("payments", d.route)
        assert.equal("orders", d.upstream)
        assert.equal(200, d.status)
    end)

    it("answers 405 when only the method differs", function()
        local d = g:request { method = "GET", path = "/payments" }
        assert.equal(405, d.status)
        assert.is_nil(d.route)
        assert.equal(error_body(405, "method not allowed", d.id), d.body)
        assert.equal("application/json", d.headers["content-type"])
        assert.equal("POST", d.headers["allow"])  -- what the real core sends
        assert.equal("gateway", d.responded_by)
    end)

    it("answers 404 with the core's JSON body", function()
        local d = g:request { path = "/payments/" }
        assert.equal(404, d.status)
        assert.equal(error_body(404, "no route", d.id), d.body)
        assert.same({ error = "no route", status = 404, request_id = d.id },
                    d.json)
        assert.is_nil(d.upstream_request)
    end)

    it("captures params and expands the rewrite", function()
        local d = g:request { path = "/orders/42?x=1" }
        assert.equal("order", d.route)
        assert.same({ id = "42" }, d.params)
        assert.equal("/v1/orders/42", d.upstream_request.path)
        assert.equal("x=1", d.upstream_request.query)
        assert.equal("/v1/orders/42?x=1", d.upstream_request.uri)
    end)

    it("prefers a literal over a param over a rest", function()
        assert.equal("orders", g:request { path = "/orders" }.route)
        assert.equal("order", g:request { path = "/orders/7" }.route)
        assert.equal("orders", g:request { path = "/orders/7/items" }.route)
    end)

    it("prefers the route that also matches on headers", function()
        local d = g:request { path = "/orders/7/items",
                              headers = { ["x-version"] = "2" } }
        assert.equal("v2", d.route)
        assert.equal("v2", d.upstream)
        assert.equal("127.0.0.1:8084", d.target)
    end)

    it("strips a prefix at a segment boundary", function()
        local d = g:request { path = "/api/users/1" }
        assert.equal("api", d.route)
        assert.equal("/users/1", d.upstream_request.path)
        assert.equal(404, g:request { path = "/api" }.status)
    end)

    it("matches hosts, with a port and with a wildcard", function()
        local function route(host)
            local d = g:request { path = "/x", host = host }
            return d.route or d.status
        end
        assert.equal("admin", route("Admin.Example.com:8080"))
        assert.equal("tenant", route("a.b.tenants.example.com"))
        assert.equal(404, route("tenants.example.com"))
    end)

    it("matches listen routes only on their port", function()
        assert.equal("internal", g:request { path = "/internal/x",
                                             port = 9090 }.route)
        assert.equal(404, g:request { path = "/internal/x" }.status)
    end)

    it("routes the normalised path and forwards it", function()
        local d = g:request { path = "/api//a/%62/./c/../d%3a" }
        assert.equal("api", d.route)
        assert.equal("/a/b/d%3A", d.upstream_request.path)
    end)

    it("answers 400 to an escaped slash (escaped_slashes = reject)", function()
        local d = g:request { path = "/api/a%2f..%2Fb" }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "escaped slash (%2F, %5C) in path", d.id),
                     d.body)
    end)

    it("answers 400 to an invalid Host", function()
        local d = g:request { path = "/api/a", host = "a b/c@d" }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "invalid Host header", d.id), d.body)
    end)

    it("answers 400 to a second Authorization", function()
        local d = g:request { path = "/api/a", headers = {
            { "Authorization", "Bearer a" }, { "authorization", "Bearer b" } } }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "duplicate Authorization header", d.id),
                     d.body)
    end)

    -- the head goes through llhttp and the gateway's checks (C)
    it("answers 400 to a method llhttp does not know, as the gateway", function()
        local d = g:request { method = "get", path = "/api/a" }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "Invalid method encountered", d.id), d.body)
    end)

    it("answers 405 to CONNECT", function()
        local d = g:request { method = "CONNECT", path = "/api/a" }
        assert.equal(405, d.status)
        assert.equal(error_body(405, "CONNECT is not supported", d.id), d.body)
    end)

    it("answers 400 to a Transfer-Encoding other than chunked", function()
        local d = g:request { method = "POST", path = "/api/a", headers = {
            { "Transfer-Encoding", "gzip" } } }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "unsupported Transfer-Encoding", d.id),
                     d.body)
    end)

    it("answers a refused head with the X-Request-Id read before it", function()
        local d = g:request { path = "/api/a", headers = {
            { "X-Request-Id", "first" }, { "Host", "a" }, { "Host", "b" },
            { "X-Request-Id", "second" } } }
        assert.equal(400, d.status)
        assert.equal("first", d.id)
        assert.equal(error_body(400, "duplicate Host header", "first"), d.body)
        d = g:request { path = "/api/a", headers = {
            { "X-Request-Id", "first" }, { "Content-Length", "1x" } } }
        assert.equal(400, d.status)
        assert.are_not.equal("first", d.id) -- llhttp refused it mid-head
    end)

    it("answers 400 to a path the normaliser refuses", function()
        local d = g:request { path = "/../etc/passwd" }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "bad request target", d.id), d.body)
    end)

    it("answers 400 to HTTP/1.1 without Host", function()
        local d = g:request { path = "/orders/1", host = false }
        assert.equal(400, d.status)
        assert.equal(error_body(400, "missing Host header", d.id), d.body)
    end)

    it("sends the target as Host when an HTTP/1.0 client sent none", function()
        local d = g:request { path = "/orders/1", http_version = "1.0" }
        assert.equal("127.0.0.1:8081", d.upstream_request.headers.host)
        assert.is_nil(d.upstream_request.headers["x-forwarded-host"])
    end)

    it("answers 413 to a body over the route's max_body", function()
        local d = g:request { method = "POST", path = "/upload",
                              body = "12345678901" }
        assert.equal(413, d.status)
        assert.equal(error_body(413, "request body too large", d.id), d.body)
        assert.is_nil(d.upstream_request)
    end)

    it("forwards a body within max_body with its length", function()
        local d = g:request { method = "POST", path = "/upload",
                              body = "1234567890" }
        assert.equal(200, d.status)
        assert.equal("1234567890", d.upstream_request.body)
        assert.equal("10", d.upstream_request.headers["content-length"])
    end)

    it("answers from a Lua handler without an upstream", function()
        local d = g:request { path = "/hello/bob?x=1" }
        assert.equal(200, d.status)
        assert.equal("handler", d.responded_by)
        assert.same({ hello = "bob", q = "x=1" }, d.json)
        assert.equal("1", d.headers["x-demo"])
        assert.is_nil(d.upstream_request)
        assert.is_nil(d.upstream)
    end)
end)

describe("requests described as arriving over TLS", function()
    local g = load("tls")

    it("give hooks req.tls and req.scheme", function()
        local d = g:request { path = "/info", tls = { sni = "api.test", alpn = "http/1.1" } }
        assert.equal(200, d.status)
        assert.equal("https", d.json.scheme)
        assert.equal("TLSv1.3", d.json.tls.version)
        assert.equal("api.test", d.json.tls.sni)
        assert.equal("http/1.1", d.json.tls.alpn)
        assert.is_false(d.json.tls.resumed)
        d = g:request { path = "/info" }
        assert.equal("http", d.json.scheme)
        assert.is_false(d.json.tls)
    end)

    it("send X-Forwarded-Proto: https upstream", function()
        local d = g:request { path = "/x", tls = true }
        assert.equal("https", d.upstream_request.headers["x-forwarded-proto"])
        d = g:request { path = "/x" }
        assert.equal("http", d.upstream_request.headers["x-forwarded-proto"])
    end)

    it("sends the gateway's Forwarded instead of the client's", function()
        local d = g:request { path = "/x", host = "example.com:8080",
                              headers = { forwarded = "for=10.0.0.1" } }
        assert.equal('for=127.0.0.1;proto=http;host="example.com:8080"',
                     d.upstream_request.headers.forwarded)
        d = g:request { path = "/x", tls = true }
        assert.equal("for=127.0.0.1;proto=https;host=localhost",
                     d.upstream_request.headers.forwarded)
    end)
end)

describe("the real client behind trusted proxies (src/client_addr.c)", function()
    local g = load("real_ip")

    it("is the first untrusted X-Forwarded-For hop from a trusted peer", function()
        local d = g:request { path = "/who", client = "10.1.2.3",
            headers = { ["X-Forwarded-For"] = "6.6.6.6, 203.0.113.7, 10.9.9.9" } }
        assert.same({ client = "203.0.113.7", peer = "10.1.2.3" }, d.json)
        assert.truthy(t.format_trace(d):find("client 203.0.113.7 via 10.1.2.3", 1, true))
    end)

    it("walks the last 32 lines of a header repeated more often", function()
        local hs = { { "X-Forwarded-For", "198.51.100.9" } }
        for i = 1, 40 do hs[#hs + 1] = { "X-Forwarded-For", "10.0.0." .. i } end
        local d = g:request { path = "/who", client = "10.1.2.3", headers = hs }
        assert.same({ client = "10.0.0.9", peer = "10.1.2.3" }, d.json)
        hs[#hs + 1] = { "X-Forwarded-For", "192.0.2.1" }
        d = g:request { path = "/who", client = "10.1.2.3", headers = hs }
        assert.same({ client = "192.0.2.1", peer = "10.1.2.3" }, d.json)
    end)

    it("ignores the header from an untrusted peer", function()
        local d = g:request { path = "/who", client = "203.0.113.7",
            headers = { ["X-Forwarded-For"] = "10.0.0.1" } }
        assert.same({ client = "203.0.113.7", peer = "203.0.113.7" }, d.json)
    end)

    it("sends a trusted list on with the peer, an untrusted one not at all", function()
        local d = g:request { path = "/x", client = "10.1.2.3",
            headers = { ["X-Forwarded-For"] = "203.0.113.7" } }
        assert.equal("203.0.113.7, 10.1.2.3",
                     d.upstream_request.headers["x-forwarded-for"])
        d = g:request { path = "/x", client = "203.0.113.7",
            headers = { ["X-Forwarded-For"] = "1.2.3.4" } }
        assert.equal("203.0.113.7", d.upstream_request.headers["x-forwarded-for"])
    end)

    it("keys a rate limit on the real client", function()
        local function limited(client, xff)
            return g:request { path = "/limited", client = "10.1.2.3",
                               headers = { ["X-Forwarded-For"] = xff } }.status
        end
        assert.equal(200, limited(nil, "198.51.100.1"))
        assert.equal(429, limited(nil, "198.51.100.1"))
        assert.equal(200, limited(nil, "198.51.100.2"))
    end)

    it("fake requests take trusted_proxies and real_ip_header too", function()
        local req = t.fake_request { client = "::1", trusted_proxies = { "::1" },
            real_ip_header = "X-Real-IP", headers = { ["X-Real-IP"] = "2001:db8::7" } }
        assert.equal("2001:db8::7", req.client)
        assert.equal("::1", req.peer)
        assert.is_nil(req:proxy_tlv(5))
        req = t.fake_request { client = "::1", proxy_tlvs = { [5] = "id-1" } }
        assert.equal("::1", req.client)
        assert.equal("id-1", req:proxy_tlv(5))
    end)
end)

describe("the upstream request", function()
    local g = load("routing")

    it("carries the forwarding headers of src/proxy.c", function()
        local d = g:request {
            path = "/orders/1", client = "10.0.0.1",
            headers = { ["X-Forwarded-For"] = "1.2.3.4", Host = "shop.test" },
        }
        local h = d.upstream_request.headers
        assert.equal("1.2.3.4, 10.0.0.1", h["x-forwarded-for"])
        assert.equal("http", h["x-forwarded-proto"])
        assert.equal("shop.test", h["x-forwarded-host"])
        assert.equal("shop.test", h.host)
        assert.equal(d.id, h["x-request-id"])
    end)

    it("keeps a valid client X-Request-Id and replaces a bad one", function()
        local d = g:request { path = "/orders/1",
                              headers = { ["X-Request-Id"] = "abc-1" } }
        assert.equal("abc-1", d.id)
        assert.equal("abc-1", d.headers["x-request-id"])
        d = g:request { path = "/orders/1",
                        headers = { ["X-Request-Id"] = "a b" } }
        assert.not_equal("a b", d.id)
        assert.equal(28, #d.id)
    end)

    it("drops the client's URL and method override headers", function()
        local d = g:request { path = "/orders/1", headers = {
            ["X-Original-URL"] = "/admin", ["X-Rewrite-URL"] = "/admin",
            ["X-HTTP-Method-Override"] = "DELETE", ["X-Kept"] = "1",
        } }
        local h = d.upstream_request.headers
        assert.is_nil(h["x-original-url"])
        assert.is_nil(h["x-rewrite-url"])
        assert.is_nil(h["x-http-method-override"])
        assert.equal("1", h["x-kept"])
    end)

    it("drops hop-by-hop headers and those Connection names", function()
        local d = g:request { path = "/orders/1", headers = {
            Connection = "x-secret", ["X-Secret"] = "1", TE = "trailers",
            ["Keep-Alive"] = "5", Expect = "100-continue", ["X-Kept"] = "1",
        } }
        local h = d.upstream_request.headers
        assert.is_nil(h.connection)
        assert.is_nil(h["x-secret"])
        assert.is_nil(h.te)
        assert.is_nil(h["keep-alive"])
        assert.is_nil(h.expect)
        assert.equal("1", h["x-kept"])
    end)

    it("drops the blanks around a header value, as the core does", function()
        local g = load("routing")
        local d = g:request { path = "/orders/1",
                              headers = { { "Host", " localhost \t" },
                                          { "X-Pad", "v  " } } }
        assert.equal(200, d.status)
        assert.equal("localhost", d.upstream_request.headers["host"])
        assert.equal("v", d.upstream_request.headers["x-pad"])
    end)

    it("gives a head llhttp refuses a new request id", function()
        local g = load("routing")
        local d = g:request { path = "/orders/1",
                              headers = { { "X-Request-Id", "mine" },
                                          { "Content-Length", "1x" } } }
        assert.equal(400, d.status)
        assert.equal("0000000000000000000000000001", d.json.request_id)
        assert.equal("Invalid character in Content-Length", d.json.error)
    end)

    it("answers 400 to a duplicate Host", function()
        local d = g:request { path = "/", headers = { host = { "a", "b" } } }
        assert.equal(400, d.status)
        assert.equal(error_body(400,
            "duplicate Host header", d.id), d.body)
    end)

    it("gives the fake upstream the request and sends back its answer",
       function()
        local seen
        local d = g:request {
            path = "/orders/5",
            upstream = function(ureq)
                seen = ureq
                return 202, { ["X-From"] = "fake" }, "queued"
            end,
        }
        assert.equal("/v1/orders/5", seen.path)
        assert.equal("orders", seen.upstream)
        assert.equal(202, d.status)
        assert.equal("queued", d.body)
        assert.equal("fake", d.headers["x-from"])
        assert.equal("6", d.headers["content-length"])
    end)

    it("frames an upstream body without length as chunked", function()
        local d = g:request { path = "/orders/5", upstream_response = {
            status = 200, headers = { ["Transfer-Encoding"] = "chunked",
                                      Connection = "close, X-Hop",
                                      ["X-Hop"] = "1" },
            body = "streamed",
        } }
        assert.equal("chunked", d.headers["transfer-encoding"])
        assert.is_nil(d.headers.connection)
        assert.is_nil(d.headers["x-hop"])
        assert.equal("streamed", d.body)
    end)

    it("defaults to 200 with an empty JSON object", function()
        local d = g:request { path = "/orders/5" }
        assert.equal(200, d.status)
        assert.equal("{}", d.body)
        assert.same({}, d.json)
        assert.equal("upstream", d.responded_by)
    end)

    it("takes a default fake upstream from t.load", function()
        local g2 = load("routing", { upstream_response = { status = 204 } })
        local d = g2:request { path = "/orders/5" }
        assert.equal(204, d.status)
        assert.equal("", d.body)
    end)

    it("sends no body for HEAD", function()
        local d = g:request { method = "HEAD", path = "/orders/5",
                              upstream_response = { body = "abc" } }
        assert.equal("", d.body)
        assert.equal("3", d.headers["content-length"])
    end)
end)

describe("hooks", function()
    local g = load("hooks")
    local good = { authorization = "Bearer good" }

    it("run in the core's order", function()
        local d = g:request { path = "/orders/7", headers = good }
        assert.equal(200, d.status)
        assert.equal("on_request,on_route:order,auth,tag,auth:response," ..
                     "cors,on_response", d.headers["x-order"])
        assert.same({ "on_request", "on_route", "policy 1 (auth)", "policy 2",
                      "policy 1 (auth)", "policy 3 (cors)", "on_response",
                      "policy 3 (cors)", "on_log" }, hooks_of(d))
    end)

    it("name each phase in the trace", function()
        local d = g:request { path = "/orders/7", headers = good }
        local phases = {}
        for i, e in ipairs(d.trace) do
            phases[i] = e.phase
        end
        assert.same({ "on_request", "on_route", "route policy on_request",
                      "route policy on_request", "on_response", "on_response",
                      "on_response", "on_log", "on_log" }, phases)
    end)

    it("stop at gw.respond: the upstream is never contacted", function()
        local calls = 0
        local d = g:request { path = "/orders/7", upstream = function()
            calls = calls + 1
        end }
        assert.equal(0, calls)
        assert.equal(401, d.status)
        assert.same({ error = "unauthorized" }, d.json)
        assert.equal("Bearer", d.headers["www-authenticate"])
        assert.equal("policy 1 (auth)", d.responded_by)
        assert.is_nil(d.upstream_request)
        assert.is_nil(d.upstream)
        assert.is_nil(d.target)
        assert.equal("order", d.route)
    end)

    it("run on_log but no on_response after a local answer", function()
        local d = g:request { path = "/orders/7" }
        assert.same({ "on_request", "on_route", "policy 1 (auth)",
                      "policy 3 (cors)", "on_log" }, hooks_of(d))
    end)

    it("answer before routing from on_request", function()
        local d = g:request { path = "/orders/7",
                              headers = { ["X-Block"] = 1 } }
        assert.equal(403, d.status)
        assert.equal("on_request", d.responded_by)
        assert.is_nil(d.route)
        assert.same({ "on_request", "on_log" }, hooks_of(d))
    end)

    it("redirect with gw.redirect", function()
        local d = g:request { path = "/old" }
        assert.equal(301, d.status)
        assert.equal("/new", d.headers.location)
        assert.equal("", d.body)
    end)

    it("change headers, query and method upstream", function()
        local d = g:request { path = "/edit/a/b?z=1",
                              headers = { ["X-Drop"] = "1", ["X-B"] = "0" } }
        local u = d.upstream_request
        assert.equal("PUT", u.method)
        assert.equal("/v1/a/b", u.path)
        assert.equal("a=x%20y&b=2", u.query)
        assert.equal("1", u.headers["x-a"])
        assert.same({ "0", "2", "3" }, u.headers["x-b"])
        assert.is_nil(u.headers["x-drop"])
    end)

    it("record what each hook changed", function()
        local d = g:request { path = "/edit/a", headers = { ["X-Drop"] = "1" } }
        assert.same({ "set header X-A: 1", "add header X-B: 2",
                      "add header X-B: 3", "remove header X-Drop",
                      "set query a=x%20y&b=2", "set method PUT" },
                    d.trace[3].changes)
        assert.same({ 'ctx.order = {"on_request"}' }, d.trace[1].changes)
    end)

    it("send a path set after routing as it is", function()
        local d = g:request { path = "/edit/a",
                              headers = { ["X-New-Path"] = "/raw/x" } }
        assert.equal("/raw/x", d.upstream_request.path)
    end)

    it("route a path set in on_request", function()
        local d = g:request { path = "/anything", headers = {
            ["X-Reroute"] = "1", authorization = "Bearer good" } }
        assert.equal("order", d.route)
        assert.same({ id = "99" }, d.params)
        assert.equal("/orders/99", d.upstream_request.path)
    end)

    it("pick another upstream in on_route", function()
        local d = g:request { path = "/orders/7", headers = {
            authorization = "Bearer good", ["X-To-Other"] = "1" } }
        assert.equal("other", d.upstream)
        assert.equal("other", d.upstream_request.upstream)
        assert.truthy(d.target == "127.0.0.1:9001"
                      or d.target == "127.0.0.1:9002")
    end)

    it("pick an upstream and a target in a policy", function()
        local d = g:request { path = "/switch" }
        assert.equal("other", d.upstream)
        assert.equal("127.0.0.1:9002", d.target)
    end)

    it("change the client response in on_response", function()
        local d = g:request { path = "/resp", upstream_response = {
            status = 200, headers = { ["X-Secret"] = "s", ["X-Up"] = "u" },
            body = "abc" } }
        assert.equal(201, d.status)
        assert.is_nil(d.headers["x-secret"])
        assert.equal("yes", d.headers["x-added"])
        assert.equal("u", d.headers["x-up"])
        assert.equal("abc", d.body)
        assert.equal("upstream", d.responded_by)
    end)

    it("see the upstream's answer in on_response", function()
        local d = g:request { path = "/resp", upstream_response = {
            status = 200, headers = { ["X-Secret"] = "s" } } }
        local changes = d.trace[3].changes
        assert.equal("ctx.seen_secret = \"s\"", changes[#changes - 1])
        assert.equal("ctx.seen_status = 200", changes[#changes])
    end)

    it("replace the body with res:set_body", function()
        local d = g:request { path = "/resp", headers = { ["X-Wrap"] = "1" },
                              upstream_response = {
                                  headers = { ["X-Up"] = "u" }, body = "abc" } }
        assert.equal("{\"wrapped\":\"u\"}\n", d.body)
        assert.equal("application/json", d.headers["content-type"])
        assert.equal("16", d.headers["content-length"])
    end)

    it("replace the upstream's answer with gw.respond in on_response",
       function()
        local d = g:request { path = "/replace" }
        assert.equal(503, d.status)
        assert.equal("maintenance", d.body)
        assert.equal("30", d.headers["retry-after"])
        assert.equal("text/plain; charset=utf-8", d.headers["content-type"])
        assert.equal("policy 1", d.responded_by)
        -- later on_response hooks still run
        assert.equal("on_request,on_route:replace,on_response",
                     d.headers["x-order"])
    end)

    it("advance a virtual clock with gw.sleep", function()
        local t0 = os.time()
        local d = g:request { path = "/sleep" }
        assert.equal("2.5", d.upstream_request.headers["x-slept"])
        assert.equal(2500, d.wait_ms)
        assert.equal(2500, d.trace[3].wait_ms)
        assert.truthy(os.time() - t0 < 2)
        assert.equal("sleep 2.5s (virtual)", d.trace[3].changes[1])
    end)

    it("keep the virtual clock per gateway", function()
        local g2 = load("hooks")
        local before = g2:now()
        g2:request { path = "/sleep" }
        g2:advance(10)
        assert.truthy(g2:now() - before >= 12.5)
        assert.truthy(math.abs(gw.now() - os.time()) < 2)
    end)

    it("give Lua handlers the request as the core does", function()
        local d = g:request { path = "/hello", headers = { ["X-User"] = "jo" } }
        assert.equal("hi jo", d.body)
        assert.same({ "on_request", "on_route", "handler", "on_log" },
                    hooks_of(d))
    end)

    it("read the body with req:body() and send it from memory", function()
        local d = g:request { method = "POST", path = "/body", body = "abc",
                              headers = { ["Transfer-Encoding"] = "chunked" } }
        local u = d.upstream_request
        assert.equal("3", u.headers["x-body-length"])
        assert.equal("3", u.headers["content-length"])
        assert.is_nil(u.headers["transfer-encoding"])
        assert.equal("abc", u.body)
    end)

    it("answer 413 when req:body() goes over max_body", function()
        local d = g:request { method = "POST", path = "/body",
                              body = "123456789",
                              headers = { ["Transfer-Encoding"] = "chunked" } }
        assert.equal(413, d.status)
        assert.equal(error_body(413, "request body too large", d.id), d.body)
        assert.is_nil(d.upstream_request)
        -- the hook still waits for the body: no on_log
        assert.same({ "on_request", "on_route", "policy 1" }, hooks_of(d))
    end)

    it("answer gw.http.request from the request's http fake", function()
        local asked
        local d = g:request { path = "/fa", headers = good, http = function(r)
            asked = r
            return { status = 200, headers = { ["X-User"] = "bob" } }
        end }
        assert.equal("http://auth.local/check", asked.url)
        assert.equal("GET", asked.method)
        assert.equal("Bearer good", asked.headers.Authorization)
        assert.equal("bob", d.upstream_request.headers["x-auth-user"])
        assert.equal("http GET http://auth.local/check -> 200",
                     d.trace[3].changes[1])
    end)

    it("answer gw.http.request nil, err without a fake", function()
        local d = g:request { path = "/fa" }
        assert.equal(502, d.status)
        assert.truthy(d.body:find("no fake for gw.http.request", 1, true))
    end)

    it("put gw.now and gw.http.request back after a request", function()
        local runtime = require "moongate.runtime"
        g:request { path = "/sleep" }
        assert.equal(runtime.now, gw.now)
        assert.equal(runtime.http_request, gw.http.request)
    end)

    it("take the http fake from t.load's options", function()
        local g2 = load("hooks", { http = function()
            return { status = 401 }
        end })
        assert.equal(403, g2:request { path = "/fa" }.status)
    end)

    it("time every hook", function()
        local d = g:request { path = "/orders/7", headers = good }
        for _, e in ipairs(d.trace) do
            assert.is_number(e.time_ms)
            assert.truthy(e.time_ms >= 0)
            assert.truthy(e.source:find("hooks.lua:%d+$"))
        end
    end)
end)

describe("hook failures", function()
    local g = load("errors")

    it("answer 500 with the core's JSON body and keep the message", function()
        local d = g:request { path = "/boom" }
        assert.equal(500, d.status)
        assert.equal(error_body(500, "hook error", d.id), d.body)
        assert.equal("spec/fixtures/testing/errors.lua:9: boom", d.error)
        assert.equal("on_request", d.error_phase)
        assert.truthy(d.traceback:find("stack traceback", 1, true))
        assert.equal(d.error, d.trace[1].error)
        assert.equal("gateway", d.responded_by)
    end)

    it("treat a bad return value as an error", function()
        local d = g:request { path = "/bad-return" }
        assert.equal(500, d.status)
        assert.equal('on_request returned "yes": a hook returns nothing or ' ..
                     'gw.respond(...)', d.error)
    end)

    it("refuse a bad status in gw.respond", function()
        local d = g:request { path = "/bad-status" }
        assert.equal(500, d.status)
        assert.truthy(d.error:find("gw.respond: status must be an integer " ..
                                   "200-599 (1xx answers are the gateway's own), got 42",
                                   1, true))
    end)

    it("refuse a 1xx in res:set_status, naming the hook's line", function()
        local d = g:request { path = "/set-101" }
        assert.equal(500, d.status)
        assert.truthy(d.error:find("errors.lua:%d+: res:set_status: status must " ..
                                   "be an integer 200%-599"), d.error)
    end)

    it("send a hook's 204 without its body, Content-Type or Content-Length", function()
        local d = g:request { path = "/no-content" }
        assert.equal(204, d.status)
        assert.equal("", d.body)
        assert.equal("1", d.headers["x-kept"])
        assert.is_nil(d.headers["content-length"])
        assert.is_nil(d.headers["content-type"])
    end)

    it("drop the upstream's body and length when on_response makes it a 204", function()
        local d = g:request { path = "/to-204" }
        assert.equal(204, d.status)
        assert.equal("", d.body)
        assert.is_nil(d.headers["content-length"])
    end)

    it("refuse headers the core owns", function()
        local d = g:request { path = "/owned" }
        assert.equal(500, d.status)
        assert.equal("spec/fixtures/testing/errors.lua:15: req:set_header: " ..
                     "invalid name or value", d.error)
    end)

    it("stop the policies after the one that failed", function()
        local d = g:request { path = "/policy" }
        assert.equal(500, d.status)
        assert.same({ "on_request", "policy 1", "policy 2" }, hooks_of(d))
        assert.truthy(d.error:find("^table: "))
    end)

    it("answer 500 when on_response fails, without its changes", function()
        local d = g:request { path = "/resp-error" }
        assert.equal(500, d.status)
        assert.is_nil(d.headers["x-never"])
        assert.truthy(d.error:find("req:set_header: not possible in this " ..
                                   "phase", 1, true))
        assert.equal("on_response", d.error_phase)
    end)

    it("keep the response when on_log fails", function()
        local d = g:request { path = "/log-error" }
        assert.equal(200, d.status)
        assert.equal("on_log", d.error_phase)
        assert.truthy(d.error:find("res:set_header: not possible in this " ..
                                   "phase", 1, true))
    end)

    it("give later phases a fresh req.ctx, as the core does", function()
        local d = g:request { path = "/fresh" }
        assert.equal(500, d.status)
        assert.same({ "ctx.after = true" }, d.trace[3].changes)
        assert.is_nil(d.trace[3].error)
    end)

    it("answer 500 to a hook that waits for I/O", function()
        local d = g:request { path = "/wait" }
        assert.equal(500, d.status)
        assert.truthy(d.error:find("does not simulate", 1, true))
    end)

    it("answer 500 handler error when a handler fails", function()
        local d = g:request { path = "/handler-error" }
        assert.equal(500, d.status)
        assert.equal(error_body(500, "handler error", d.id), d.body)
        assert.equal("handler body must be a string or a table, got function",
                     d.error)
    end)

    it("run handlers outside the hooks, as the core does", function()
        local d = g:request { path = "/handler-respond" }
        assert.equal(500, d.status)
        assert.truthy(d.error:find("can only be called inside a hook", 1, true))
    end)

    it("raise a failing fake upstream to the caller", function()
        assert.has_error(function()
            g:request { path = "/x", upstream = function() error("oops") end }
        end)
    end)
end)

describe("the hook budget (timeouts.hook)", function()
    local g = load("loops")

    for _, case in ipairs {
        { "/spin", 7 }, { "/spin-pcall", 10 }, { "/spin-xpcall", 14 },
        { "/spin-wrap", 17 }, { "/spin-handler", 20 },
    } do
        local path, line = case[1], case[2]
        it("stops a hook that loops, as the gateway does: " .. path, function()
            local t0 = os.clock()
            local d = g:request { path = path }
            -- 0.1 s of CPU, and the few checks after it
            assert.is_true(os.clock() - t0 < 1, "took " .. (os.clock() - t0))
            assert.equal(500, d.status)
            assert.equal(error_body(500, path == "/spin-handler" and "handler error"
                                    or "hook error", d.id), d.body)
            assert.equal(DIR .. "loops.lua:" .. line ..
                         ": hook exceeded its time budget of 100 ms", d.error)
        end)
    end

    it("leaves the next request its whole budget", function()
        assert.equal(500, g:request { path = "/spin" }.status)
        assert.equal(200, g:request { path = "/ok" }.status)
    end)
end)

describe("round robin", function()
    it("follows the smooth weighted order of src/pool.c", function()
        local g = load("balance")
        local seen = {}
        for i = 1, 7 do
            seen[i] = g:request { path = "/pool/x" }.target
        end
        local a, b, c = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"
        assert.same({ a, a, b, a, c, a, a }, seen)
    end)

    it("alternates equal weights", function()
        local g = load("balance")
        local seen = {}
        for i = 1, 4 do
            seen[i] = g:request { path = "/pair" }.target
        end
        assert.same({ "10.0.1.1:80", "10.0.1.2:80", "10.0.1.1:80",
                      "10.0.1.2:80" }, seen)
    end)

    it("starts over for every loaded gateway", function()
        local g1, g2 = load("balance"), load("balance")
        g1:request { path = "/pair" }
        assert.equal("10.0.1.1:80", g2:request { path = "/pair" }.target)
    end)

    it("honours a pinned target without moving the rotation", function()
        local g = load("balance")
        assert.equal("10.0.0.3:80", g:request { path = "/pin" }.target)
        assert.equal("10.0.0.1:80", g:request { path = "/pool/" }.target)
    end)

    it("is the gateway's pick (mg_ffi_balancer_swrr), live targets only", function()
        local ffi = require "ffi"
        local C = require("moongate.cdefs").C
        local cw, w = ffi.new("int[3]"), ffi.new("int[3]", { 5, 1, 1 })
        local live = ffi.new("unsigned char[3]", { 1, 0, 1 })
        local seen = {}
        for i = 1, 6 do
            seen[i] = C.mg_ffi_balancer_swrr(cw, w, live, 3)
        end
        assert.same({ 0, 0, 0, 2, 0, 0 }, seen) -- a tie goes to the first
        live[0], live[2] = 0, 0
        assert.equal(-1, C.mg_ffi_balancer_swrr(cw, w, live, 3))
    end)

    it("names IPv6 targets with brackets", function()
        local g = load("balance")
        assert.equal("[::1]:8080", g:request { path = "/v6" }.target)
    end)
end)

describe("route split and canary (src/split.c through mg_ffi_kit_split)", function()
    it("rotates 3:1 as a worker does, smoothly", function()
        local g = load("split")
        local seen = {}
        for i = 1, 8 do
            local d = g:request { path = "/s/x" }
            assert.equal("weight", d.split)
            seen[i] = d.upstream
        end
        assert.same({ "v1", "v1", "v2", "v1", "v1", "v1", "v2", "v1" }, seen)
    end)

    it("sends the canary's header value and cookie to v2, else the split or upstream", function()
        local g = load("split")
        local d = g:request { path = "/s/x", headers = { ["X-Canary"] = "1" } }
        assert.same({ "v2", "canary", "10.0.0.2:80" }, { d.upstream, d.split, d.target })
        assert.equal("weight", g:request { path = "/s/x", headers = { ["X-Canary"] = "0" } }.split)
        d = g:request { path = "/b/x", headers = { Cookie = "a=1; beta=on" } }
        assert.same({ "v2", "canary" }, { d.upstream, d.split })
        d = g:request { path = "/b/x" }
        assert.same({ "v1" }, { d.upstream, d.split })
    end)

    it("keeps one key on one upstream", function()
        local g = load("split")
        for i = 1, 20 do
            local user = "user-" .. i
            local first = g:request { path = "/k/x", headers = { ["X-User"] = user } }
            assert.equal("key", first.split)
            for _ = 1, 3 do
                assert.equal(first.upstream,
                             g:request({ path = "/k/x", headers = { ["X-User"] = user } }).upstream)
            end
        end
    end)

    it("shows the choice to on_route as req.upstream", function()
        local g = load("split")
        local d = g:request { path = "/s/x", headers = { ["X-Canary"] = "1", ["X-Seen"] = "1" } }
        assert.equal("v2", d.upstream_request.headers["x-seen-upstream"])
    end)

    it("names the mirror, and the trace shows both", function()
        local g = load("split")
        local d = g:request { path = "/s/x", headers = { ["X-Canary"] = "1" } }
        assert.equal("shadow", d.mirror)
        local text = t.format_trace(d)
        assert.truthy(text:find("  canary -> v2\n", 1, true), text)
        assert.truthy(text:find("  mirror: a copy to shadow (its answer dropped)\n", 1, true), text)
        text = t.format_trace(g:request { path = "/k/x", headers = { ["X-User"] = "u" } })
        assert.truthy(text:find("  split %-> v%d %(by key%)\n"), text)
        assert.is_nil(g:request({ path = "/b/x" }).mirror)
    end)
end)

describe("t.request", function()
    it("runs one request against a config file", function()
        local d = t.request(DIR .. "routing.lua", { path = "/orders/1" })
        assert.equal("order", d.route)
    end)

    it("takes the config in the request table", function()
        local d = t.request { config = DIR .. "routing.lua", path = "/nope" }
        assert.equal(404, d.status)
    end)

    it("returns the config's errors", function()
        local d, errs = t.request(DIR .. "bad.lua", { path = "/" })
        assert.is_nil(d)
        assert.equal(1, #errs)
    end)
end)

describe("fake requests and single policies", function()
    local api_key = require "spec.fixtures.testing.api_key"
    local policy = api_key.new { shop = "k-123" }

    it("reads like a runtime request", function()
        local req = t.fake_request {
            method = "POST", path = "/orders/%37?a=1&a=2&b=x%20y",
            headers = { Authorization = "Bearer tok",
                        ["X-Multi"] = { "1", "2" } },
            route = "order", params = { id = "7" }, upstream = "orders",
            client = "10.1.1.1",
        }
        assert.equal("POST", req.method)
        assert.equal("/orders/7", req.path)
        assert.equal("/orders/%37", req.raw_path)
        assert.equal("a=1&a=2&b=x%20y", req.query)
        assert.same({ a = { "1", "2" }, b = "x y" }, req:args())
        assert.equal("1", req:arg("a"))
        assert.equal("tok", req:bearer())
        assert.equal("2", req:header("x-multi", 2))
        assert.same({ "1", "2" }, req:header_all("X-MULTI"))
        assert.same({ "1", "2" }, req:headers()["x-multi"])
        assert.equal("order", req.route)
        assert.same({ id = "7" }, req.params)
        assert.equal("orders", req.upstream)
        assert.equal("10.1.1.1", req.client)
        assert.equal("http", req.scheme)
        assert.equal(1.1, req.http_version)
    end)

    it("refuses assignments but keeps req.ctx", function()
        local req = t.fake_request {}
        assert.has_error(function() req.path = "/x" end,
            "req.path cannot be assigned (use req.ctx for per-request data, " ..
            "req:set_* to change the request)")
        req.ctx = { a = 1 }
        assert.equal(1, req.ctx.a)
    end)

    it("answers through t.call when the policy refuses", function()
        local req = t.fake_request { path = "/orders/1" }
        local r = t.call(policy.on_request, req, policy)
        assert.is_true(r.responded)
        assert.equal(401, r.status)
        assert.same({ error = "missing or unknown API key" },
                    require("cjson").decode(r.body))
        assert.equal("application/json", r.headers["content-type"])
    end)

    it("shows the changes a policy makes upstream", function()
        local req = t.fake_request { path = "/orders/1",
                                     headers = { ["X-Api-Key"] = "k-123" } }
        local r = t.call(policy.on_request, req, policy)
        assert.is_nil(r.responded)
        assert.is_nil(r.error)
        assert.same({ "remove header X-Api-Key",
                      "set header X-Consumer: shop" }, r.changes)
        local u = t.upstream_request(req)
        assert.equal("shop", u.headers["x-consumer"])
        assert.is_nil(u.headers["x-api-key"])
        assert.equal("shop", req:header("x-consumer"))
    end)

    it("calls an on_response policy on a fake response", function()
        local req = t.fake_request { path = "/orders/1" }
        local res = t.fake_response({ status = 200, body = "ok",
                                      headers = { ["X-Up"] = "1" } }, req)
        assert.equal(200, res.status)
        assert.equal("1", res:header("x-up"))
        local r = t.call(policy.on_response, req, res, policy)
        assert.equal(200, r.status)
        assert.equal("moongate", r.headers["x-served-by"])
        assert.equal("ok", r.body)
    end)

    it("lets a policy be called directly when it does not answer", function()
        local res = t.fake_response { status = 204 }
        api_key.on_response(res._req, res, policy)
        local out = t.client_response(res)
        assert.equal(204, out.status)
        assert.equal("moongate", out.headers["x-served-by"])
    end)

    it("reports a policy error through t.call", function()
        local req = t.fake_request {}
        local r = t.call(function() error("nope") end, req)
        assert.equal(500, r.status)
        assert.truthy(r.error:find("nope$"))
    end)

    it("reads the body only before the request goes upstream", function()
        local req = t.fake_request { method = "POST", body = "abc" }
        assert.equal("abc", req:body())
        local req2 = t.fake_request { method = "POST", body = "abc",
                                      phase = "on_response" }
        assert.has_error(function() req2:body() end,
                         "req:body() works only before the request goes " ..
                         "upstream")
    end)

    it("fakes gw.http.request in t.call", function()
        local req = t.fake_request { http = function(r)
            return { status = 204 }
        end }
        local r = t.call(function(rq)
            local res = gw.http.request { url = "http://x.test/" }
            rq:set_header("X-Status", res.status)
        end, req)
        assert.same({ "http GET http://x.test/ -> 204",
                      "set header X-Status: 204" }, r.changes)
    end)

    it("keeps the phase rules of the core", function()
        local req = t.fake_request { phase = "on_response" }
        assert.has_error(function() req:set_header("x-a", "1") end)
        local req2 = t.fake_request { phase = "on_log" }
        local res = t.fake_response({ status = 200 }, req2)
        assert.equal(200, res.status)
        assert.has_error(function() res:set_header("x-a", "1") end)
    end)

    it("validates set_upstream against spec.upstreams", function()
        local req = t.fake_request { upstreams = { a = { "1.1.1.1:80" } } }
        req:set_upstream("a")
        req:set_target("1.1.1.1:80")
        assert.equal("a", req.upstream)
        assert.has_error(function() req:set_upstream("b") end,
                         "req:set_upstream: no such name")
    end)

    it("routes a gateway's fake request with the real router", function()
        local g = load("routing")
        local req = g:fake_request { path = "/orders/12" }
        assert.equal("order", req.route)
        assert.equal("12", req.params.id)
        assert.equal("/v1/orders/12", t.upstream_request(req).path)
    end)

    it("runs the same policy inside a config", function()
        local g = load("policies")
        local d = g:request { path = "/orders/1",
                              headers = { ["X-Api-Key"] = "k-123" } }
        assert.equal(200, d.status)
        assert.equal("shop", d.upstream_request.headers["x-consumer"])
        assert.equal("moongate", d.headers["x-served-by"])
        assert.equal(401, g:request { path = "/orders/1" }.status)
    end)
end)

describe("t.format_trace", function()
    local g = load("hooks")

    it("shows hooks, changes, route, target and the answer", function()
        local s = t.format_trace(g:request { path = "/orders/7", headers = {
            authorization = "Bearer good" } })
        assert.truthy(s:find("^GET /orders/7 "))
        assert.truthy(s:find("\n  on_request +[%d.]+ ms"))
        assert.truthy(s:find("\n  route: order  params id=7\n", 1, false))
        assert.truthy(s:find("\n  policy 1 %(auth%) +[%d.]+ ms"))
        assert.truthy(s:find("\n      set header X%-User: alice\n"))
        assert.truthy(s:find("\n  upstream: orders  target 127.0.0.1:8081\n",
                             1, true))
        assert.truthy(s:find("\n    > GET /orders/7\n", 1, true))
        assert.truthy(s:find("\n  => 200  answered by upstream\n", 1, true))
        assert.truthy(s:find("\n     X%-Order: "))
    end)

    it("puts the lines in pipeline order", function()
        local s = t.format_trace(g:request { path = "/orders/7", headers = {
            authorization = "Bearer good" } })
        local function at(p) return assert(s:find(p, 1, true)) end
        assert.truthy(at("  on_request ") < at("  route: order"))
        assert.truthy(at("  route: order") < at("  on_route "))
        assert.truthy(at("  policy 2 ") < at("  upstream: orders"))
        assert.truthy(at("  upstream: orders") < at("  on_response "))
        assert.truthy(at("  on_response ") < at("  => 200"))
        assert.truthy(at("  => 200") < at("  on_log "))
    end)

    it("shows errors and virtual waits", function()
        local s = t.format_trace(load("errors"):request { path = "/boom" })
        assert.truthy(s:find("ERROR spec/fixtures/testing/errors.lua:9: boom",
                             1, true))
        assert.truthy(s:find("\n  => 500  answered by gateway\n", 1, true))
        s = t.format_trace(g:request { path = "/sleep" })
        assert.truthy(s:find("(+2500 ms virtual wait)", 1, true))
    end)
end)

describe("testing kit: settings.tracing", function()
    local g = load("tracing")
    local PID = "00f067aa0ba902b7"

    local function flags_of(d)
        return d.upstream_request.headers.traceparent:match("%-(%x%x)$")
    end

    it("sends upstream the flag the gateway's sampler gives", function()
        -- the trace id's 19th hex digit decides at 0.25 (src/trace.c): c-f kept
        local keep, drop = ("1"):rep(18) .. ("c"):rep(14), ("1"):rep(18) .. ("b"):rep(14)
        local function with(tid, f)
            return flags_of(g:request { path = "/x",
                headers = { traceparent = "00-" .. tid .. "-" .. PID .. "-" .. f } })
        end
        -- parent-based: the client's flag wins over the ratio
        assert.equal("01", with(drop, "01"))
        assert.equal("00", with(keep, "00"))
        -- new traces: the ratio, by the id the kit gave (its ids count up)
        for _ = 1, 20 do
            local tp = g:request { path = "/x" }.upstream_request.headers.traceparent
            local tid, f = tp:match("^00%-(%x+)%-%x+%-(%x%x)$")
            assert.equal(tid:sub(19, 19):match("[c-f]") and "01" or "00", f)
        end
    end)
end)
