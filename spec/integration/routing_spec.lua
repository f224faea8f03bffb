-- Routing (docs/config-dsl.md): patterns, most-specific match, host,
-- methods, headers, listener, strip_prefix, rewrite, Lua handlers,
-- path normalisation. Each route proxies to its own upstream, so the
-- X-Upstream-Name of the answer says which route matched.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT1}}, host = "127.0.0.1" }
gw.listen { port = {{PORT2}}, host = "127.0.0.1" }

gw.upstream("u1", { "{{U1}}" })
gw.upstream("u2", { "{{U2}}" })
gw.upstream("u3", { "{{U3}}" })
gw.upstream("u4", { "{{U4}}" })

-- patterns
gw.route { path = "/payments", upstream = "u1" }
gw.route { path = "/orders/", upstream = "u2" }
gw.route { path = "/items/**", upstream = "u3" }
gw.route { path = "/users/:id", upstream = "u1" }
gw.route { path = "/users/me", upstream = "u2" }
gw.route { path = "/users/:id/orders", upstream = "u4" }

-- most specific wins (literal > :param > **), whatever the order
gw.route { path = "/api/**", upstream = "u1" }
gw.route { path = "/api/:ver/status", upstream = "u2" }
gw.route { path = "/api/v1/:thing", upstream = "u3" }
gw.route { path = "/api/v1/status", upstream = "u4" }

-- hosts
gw.route { path = "/h", host = "api.example.com", upstream = "u1" }
gw.route { path = "/h", host = "*.example.com", upstream = "u2" }
gw.route { path = "/h", upstream = "u3" }
gw.route { path = "/onlyhost", host = "only.example.com", upstream = "u1" }
gw.route { path = "/h6", host = "[::1]", upstream = "u4" }
gw.route { path = "/h6b", host = "::1", upstream = "u3" }

-- methods
gw.route { path = "/m", methods = { "GET" }, upstream = "u1" }
gw.route { path = "/m", methods = { "POST", "PUT" }, upstream = "u2" }
gw.route { path = "/m2", methods = { "POST", "PUT" }, upstream = "u1" }
gw.route { path = "/m2", methods = { "PUT" }, headers = { ["X-Version"] = "9" }, upstream = "u2" }
gw.route { path = "/m2", methods = { "POST" }, host = "other.example.com", upstream = "u2" }

-- headers
gw.route { path = "/v", headers = { ["X-Version"] = "2" }, upstream = "u2" }
gw.route { path = "/v", upstream = "u1" }
gw.route { path = "/vonly", headers = { ["X-Version"] = "2" }, upstream = "u2" }

-- listener
gw.route { path = "/l", listen = {{PORT2}}, upstream = "u2" }
gw.route { path = "/l", upstream = "u1" }
gw.route { path = "/only2", listen = {{PORT2}}, upstream = "u2" }

-- strip_prefix / rewrite
gw.route { path = "/svc/**", strip_prefix = "/svc", upstream = "u3" }
gw.route { path = "/legacy/:id", rewrite = "/v2/things/:id", upstream = "u4" }
gw.route { path = "/files/:user/**", rewrite = "/store/:user/**", upstream = "u4" }

-- normalisation targets
gw.route { path = "/admin", upstream = "u4" }
gw.route { path = "/public/**", upstream = "u3" }

-- Lua handlers
gw.route { name = "hello", path = "/hello/:who", handler = function(req)
    return 200, { hello = req.params.who, method = req.method, path = req.path,
                  ua = req.headers["user-agent"] }, { ["x-demo"] = "1" }
end }
gw.route { path = "/teapot", handler = function(req)
    return 418, "short and stout"
end }
]]

describe("routing", function()
    local gw, ups

    setup(function()
        ups = h.start_upstreams { "u1", "u2", "u3", "u4" }
        gw = h.start_gateway(CONFIG, {
            ports = 2,
            vars = { U1 = ups.u1, U2 = ups.u2, U3 = ups.u3, U4 = ups.u4 },
        })
    end)

    teardown(h.cleanup)

    -- GET `path` (with extra request fields); returns the upstream name that
    -- answered (nil if the gateway did), the response, the upstream's view
    local function route(path, req)
        req = req or {}
        req.path = path
        local res = h.http(req.port or gw.port, req)
        local name = res.headers["x-upstream-name"]
        return name, res, name and h.json(res.body) or nil
    end

    local function assert_404(path, req)
        local _, res = route(path, req)
        h.assert_error(res, 404)
    end

    describe("patterns", function()
        it("exact path matches only itself", function()
            assert.equal("u1", (route("/payments")))
            assert_404("/payments/x")
            assert_404("/paymentsx")
        end)

        it("the query string does not take part in matching", function()
            local name, _, seen = route("/payments?a=1&b=2")
            assert.equal("u1", name)
            assert.equal("/payments?a=1&b=2", seen.path)
        end)

        it("prefix /orders/ matches everything under it", function()
            assert.equal("u2", (route("/orders/")))
            assert.equal("u2", (route("/orders/42")))
            assert.equal("u2", (route("/orders/a/b/c")))
        end)

        it("prefix /orders/ does not match /orders or /ordersx", function()
            assert_404("/orders")
            assert_404("/ordersx")
        end)

        it("/items/** matches /items itself and everything below", function()
            assert.equal("u3", (route("/items")))
            assert.equal("u3", (route("/items/")))
            assert.equal("u3", (route("/items/a/b")))
            assert_404("/itemsx")
        end)

        it(":param matches exactly one segment", function()
            assert.equal("u1", (route("/users/42")))
            assert.equal("u4", (route("/users/42/orders")))
        end)

        it("a literal segment beats :param", function()
            assert.equal("u2", (route("/users/me")))
        end)

        it("the most specific route wins, segment by segment", function()
            assert.equal("u4", (route("/api/v1/status")))
            assert.equal("u3", (route("/api/v1/other")))
            assert.equal("u2", (route("/api/v2/status")))
            assert.equal("u1", (route("/api/v2/other")))
            assert.equal("u1", (route("/api")))
        end)

        it("no matching route is a 404 JSON error", function()
            local _, res = route("/nothing/here")
            local body = h.assert_error(res, 404)
            assert.equal("no route", body.error)
        end)
    end)

    describe("host", function()
        it("an exact host route matches that host", function()
            assert.equal("u1", (route("/h", { host = "api.example.com" })))
        end)

        it("host matching ignores case and the :port of the Host header", function()
            assert.equal("u1", (route("/h", { host = "API.Example.COM:8080" })))
        end)

        it("*.example.com matches one or more labels before the domain", function()
            assert.equal("u2", (route("/h", { host = "x.example.com" })))
            assert.equal("u2", (route("/h", { host = "a.b.example.com:81" })))
        end)

        it("an IPv6 host route matches the Host header's bracketed address", function()
            assert.equal("u4", (route("/h6", { host = "[::1]:8080" })))
            assert.equal("u4", (route("/h6", { host = "[::1]" })))
            assert_404("/h6", { host = "[::2]" })
            assert.equal("u3", (route("/h6b", { host = "[::1]" })))
        end)

        it("*.example.com does not match example.com itself", function()
            assert.equal("u3", (route("/h", { host = "example.com" })))
        end)

        it("a route without host matches any host", function()
            assert.equal("u3", (route("/h", { host = "other.org" })))
        end)

        it("a host-only route does not match other hosts", function()
            assert.equal("u1", (route("/onlyhost", { host = "only.example.com" })))
            assert_404("/onlyhost", { host = "other.example.com" })
        end)
    end)

    describe("methods", function()
        it("picks the route by method", function()
            assert.equal("u1", (route("/m", { method = "GET" })))
            assert.equal("u2", (route("/m", { method = "POST", body = "x" })))
            assert.equal("u2", (route("/m", { method = "PUT", body = "x" })))
        end)

        it("answers 405 when only the method does not match", function()
            local _, res = route("/m", { method = "DELETE" })
            h.assert_error(res, 405)
        end)

        -- RFC 9110 15.5.6: a 405 lists the methods the resource accepts
        it("a 405 has an Allow header with every method of the matching routes, once", function()
            local _, res = route("/m", { method = "DELETE" })
            assert.equal(405, res.status)
            local got = {}
            for m in assert(res.headers["allow"], "no Allow header"):gmatch("[^, ]+") do
                got[#got + 1] = m
            end
            table.sort(got)
            assert.same({ "GET", "POST", "PUT" }, got)
            _, res = route("/m2", { method = "GET" })
            assert.equal(405, res.status)
            assert.equal("POST, PUT", res.headers["allow"])
            -- with the header route matching too: PUT is listed once
            _, res = route("/m2", { method = "GET", headers = { ["X-Version"] = "9" } })
            got = {}
            for m in res.headers["allow"]:gmatch("[^, ]+") do got[#got + 1] = m end
            table.sort(got)
            assert.same({ "POST", "PUT" }, got)
        end)
    end)

    describe("headers", function()
        it("a header route matches when the header has the value", function()
            assert.equal("u2", (route("/v", { headers = { ["X-Version"] = "2" } })))
        end)

        it("header names match case-insensitively", function()
            assert.equal("u2", (route("/v", { headers = { ["x-VERSION"] = "2" } })))
        end)

        it("another value or no header falls back to the plain route", function()
            assert.equal("u1", (route("/v", { headers = { ["X-Version"] = "3" } })))
            assert.equal("u1", (route("/v")))
        end)

        it("a header-only route is a 404 without the header", function()
            assert_404("/vonly")
        end)
    end)

    describe("listen", function()
        it("a route restricted to a listener matches only there", function()
            assert.equal("u2", (route("/l", { port = gw.ports[2] })))
            assert.equal("u1", (route("/l", { port = gw.ports[1] })))
        end)

        it("on another listener a listener-only route is a 404", function()
            assert.equal("u2", (route("/only2", { port = gw.ports[2] })))
            assert_404("/only2", { port = gw.ports[1] })
        end)
    end)

    describe("upstream path", function()
        it("is the request path when the route has no rewrite", function()
            local _, _, seen = route("/orders/7?x=1")
            assert.equal("/orders/7?x=1", seen.path)
        end)

        it("strip_prefix removes the prefix and keeps the query", function()
            local name, _, seen = route("/svc/a/b?q=1")
            assert.equal("u3", name)
            assert.equal("/a/b?q=1", seen.path)
        end)

        it("strip_prefix of the whole path leaves /", function()
            local _, _, seen = route("/svc")
            assert.equal("/", seen.path)
        end)

        it("rewrite fills in :params and keeps the query", function()
            local name, _, seen = route("/legacy/7?a=b")
            assert.equal("u4", name)
            assert.equal("/v2/things/7?a=b", seen.path)
        end)

        it("rewrite fills in ** with the rest of the path", function()
            local _, _, seen = route("/files/bob/docs/a.txt")
            assert.equal("/store/bob/docs/a.txt", seen.path)
        end)
    end)

    describe("path normalisation", function()
        it("resolves /public/../admin to /admin", function()
            local name, _, seen = route("/public/../admin")
            assert.equal("u4", name)
            assert.equal("/admin", seen.path)
        end)

        it("treats %2e%2e like ..", function()
            local name, _, seen = route("/public/%2e%2e/admin")
            assert.equal("u4", name)
            assert.equal("/admin", seen.path)
        end)

        it("treats %2E%2E like ..", function()
            local name, _, seen = route("/public/%2E%2E/admin")
            assert.equal("u4", name)
            assert.equal("/admin", seen.path)
        end)

        it("collapses //admin to /admin", function()
            local name, _, seen = route("//admin")
            assert.equal("u4", name)
            assert.equal("/admin", seen.path)
        end)

        it("removes . segments and collapses slashes in the upstream path", function()
            local name, _, seen = route("/public/./a//b/../c?x=/../y")
            assert.equal("u3", name)
            assert.equal("/public/a/c?x=/../y", seen.path)
        end)

        it("decodes unreserved %XX and keeps reserved ones", function()
            local _, _, seen = route("/public/%41%62%7E/%3a")
            assert.equal("/public/Ab~/%3A", seen.path)
        end)

        it("answers an escaped slash with 400 (escaped_slashes defaults to reject)", function()
            local _, res = route("/public/%41/%2F")
            h.assert_error(res, 400)
        end)

        it("rejects a path escaping the root with 400", function()
            local _, res = route("/../x")
            h.assert_error(res, 400)
            _, res = route("/public/../../x")
            h.assert_error(res, 400)
        end)

        it("rejects an encoded escape from the root with 400", function()
            local _, res = route("/%2e%2e/x")
            h.assert_error(res, 400)
        end)
    end)

    describe("Lua handler routes", function()
        it("answer with status, JSON body and headers", function()
            local res = h.http(gw.port, { path = "/hello/ann",
                                          headers = { ["User-Agent"] = "spec" } })
            assert.equal(200, res.status)
            assert.equal("1", res.headers["x-demo"])
            assert.truthy((res.headers["content-type"] or ""):find("application/json", 1, true))
            assert.same({ hello = "ann", method = "GET", path = "/hello/ann", ua = "spec" },
                h.json(res.body))
        end)

        it("answer a string body as is", function()
            local res = h.http(gw.port, { path = "/teapot" })
            assert.equal(418, res.status)
            assert.equal("short and stout", res.body)
        end)

        it("contact no upstream", function()
            local before = {}
            for _, u in ipairs(ups) do before[u.name] = u:stats().requests end
            h.http(gw.port, { path = "/hello/x" })
            for _, u in ipairs(ups) do
                assert.equal(before[u.name], u:stats().requests)
            end
        end)
    end)
end)
