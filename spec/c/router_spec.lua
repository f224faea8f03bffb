-- spec/c/router_spec.lua: src/router.c through the FFI.
-- Routes are built as mg_route_t arrays in Lua; every string C points to is
-- kept alive in the router handle returned by build().
local ffi = require "ffi"

-- The declarations are moongate.testing.router's (it cdefs them;
-- spec/unit/cdefs_spec.lua checks them against the headers).
require "moongate.testing.router"

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local OK, NOT_FOUND, BAD_METHOD = 0, -1, -2

-- Builds a router from a list of route tables { path=, host=, methods={},
-- headers={name=value}, listen=, strip_prefix=, rewrite=, index= }.
-- Returns a handle, or nil and the C reason.
local function build(list)
    local keep = {}
    local function str(s)
        if s == nil then
            return nil
        end
        local b = ffi.new("char[?]", #s + 1, s)
        keep[#keep + 1] = b
        return b
    end

    local routes = ffi.new("mg_route_t[?]", math.max(#list, 1))
    for i, t in ipairs(list) do
        local r = routes[i - 1]
        r.name = str(t.name or t.path)
        r.path = str(t.path)
        r.host = str(t.host)
        for j, m in ipairs(t.methods or {}) do
            r.methods[j - 1] = str(m)
        end
        r.nmethods = #(t.methods or {})
        local names = {}
        for k in pairs(t.headers or {}) do
            names[#names + 1] = k
        end
        table.sort(names)
        for j, k in ipairs(names) do
            r.headers[j - 1].name = str(k)
            r.headers[j - 1].value = str(t.headers[k])
        end
        r.nheaders = #names
        r.upstream = -1
        r.strip_prefix = str(t.strip_prefix)
        r.rewrite = str(t.rewrite)
        r.listen_port = t.listen or 0
        r.index = t.index or i - 1
        r.line = i
    end

    local out = ffi.new("mg_router_t *[1]")
    local err = ffi.new("const char *[1]")
    if lib.mg_router_build(out, routes, #list, err) ~= 0 then
        assert(out[0] == nil, "router set on failure")
        return nil, ffi.string(err[0])
    end
    return {
        r = ffi.gc(out[0], lib.mg_router_free),
        routes = routes,
        keep = keep,
    }
end

-- headers the current request carries, and the names C asked for
local req_headers, asked = nil, {}
local get_header = ffi.cast("mg_header_get_fn",
    function(ctx, name, name_len, value_len)
        local k = ffi.string(name, name_len)
        asked[#asked + 1] = k
        local v = req_headers and req_headers[k]
        if v == nil then
            return nil
        end
        value_len[0] = #v
        return v
    end)

local match_buf = ffi.new("mg_route_match_t")

-- Matches a request { path=, method=, host=, headers=, port= } (defaults:
-- GET, no Host, no headers, port 80). Returns the code and, when OK, a table
-- { name=, index=, params={name=value}, order={names}, rest=string|nil }.
local function match(h, req)
    local method = req.method or "GET"
    local host, path = req.host, req.path
    req_headers, asked = req.headers, {}
    local m = match_buf
    local rc = lib.mg_router_match(h.r, req.port or 80, method, #method, host,
                                   host and #host or 0, path, #path,
                                   req.no_getter and nil or get_header, nil, m)
    if rc ~= OK then
        assert(m.route == nil, "route set on failure")
        return rc
    end
    local res = {
        name = ffi.string(m.route.name),
        index = m.route.index,
        params = {},
        order = {},
    }
    for i = 0, tonumber(m.nparams) - 1 do
        local p = m.params[i]
        local name = ffi.string(p.name, p.name_len)
        assert(p.name[p.name_len] == 0, "param name not NUL-terminated")
        res.params[name] = ffi.string(p.value, p.value_len)
        res.order[#res.order + 1] = name
    end
    if m.rest ~= nil then
        res.rest = ffi.string(m.rest, m.rest_len)
    end
    return rc, res
end
jit.off(match) -- C calls back into Lua (get_header) from this call

-- The path sent upstream for req, or nil when cap is too small.
local function upstream(h, req, cap)
    local rc = match(h, req)
    assert.equal(OK, rc)
    cap = cap or 256
    local out = ffi.new("char[?]", cap)
    local n = tonumber(lib.mg_router_upstream_path(match_buf, req.path, #req.path,
                                                   out, cap))
    if n < 0 then
        return nil
    end
    assert(out[n] == 0, "upstream path not NUL-terminated")
    return ffi.string(out, n)
end

-- name of the route that takes path (or the error code)
local function pick(list, path, req)
    local h = assert(build(list))
    req = req or {}
    req.path = path
    local rc, res = match(h, req)
    if rc ~= OK then
        return rc
    end
    return res.name
end

describe("mg_ffi_route_pattern", function()
    local why = ffi.new("char[256]")
    local function check(p)
        if lib.mg_ffi_route_pattern(p, p and #p or 0, nil, why, 256) == 0 then
            return nil
        end
        return ffi.string(why)
    end

    -- what a valid pattern holds: params, "**", trailing '/', literal part
    local function info(p)
        local i = ffi.new("mg_ffi_pattern_t")
        assert.equal(0, lib.mg_ffi_route_pattern(p, #p, i, nil, 0))
        local names = {}
        for k = 0, i.nparams - 1 do
            local off = tonumber(i.param_off[k])
            names[#names + 1] = p:sub(off + 1, off + tonumber(i.param_len[k]))
        end
        return { names = names, star = i.star ~= 0, prefix = i.prefix ~= 0,
                 literal = p:sub(1, tonumber(i.literal_len)) }
    end

    it("describes an exact pattern", function()
        assert.same({ names = {}, star = false, prefix = false, literal = "/a/b" },
                    info("/a/b"))
    end)

    it("describes a prefix pattern", function()
        assert.same({ names = {}, star = false, prefix = true, literal = "/a/" },
                    info("/a/"))
        assert.same({ names = {}, star = false, prefix = true, literal = "/" }, info("/"))
    end)

    it("describes params and a '**' tail", function()
        assert.same({ names = { "id", "sub" }, star = true, prefix = false,
                      literal = "/u/" }, info("/u/:id/x/:sub/**"))
        assert.same({ names = {}, star = true, prefix = false, literal = "/" }, info("/**"))
    end)

    it("writes no more than cap bytes of the reason", function()
        local small = ffi.new("char[8]", "zzzzzzz")
        assert.equal(-1, lib.mg_ffi_route_pattern("/a//b", 5, nil, small, 8))
        assert.equal("empty s", ffi.string(small))
    end)

    it("sees a NUL inside the pattern", function()
        assert.equal([[invalid character "\0" (space, control, '\', '?', '#' or non-ASCII)]],
                     check("/a\0b"))
    end)

    it("quotes a bad parameter name as config errors do", function()
        assert.equal([[bad parameter name ":a\"b" (':' then a letter or '_', then letters, ]] ..
                     [[digits, '_')]], check('/:a"b'))
    end)

    for _, p in ipairs {
        "/", "/payments", "/orders/", "/orders/**", "/**", "/orders/:id",
        "/u/:id/items/**", "/u/:id/", "/v1/a:b", "/a%2Fb", "/a-b_c~d.e",
    } do
        it("accepts " .. p, function()
            assert.is_nil(check(p))
        end)
    end

    it("rejects NULL", function()
        assert.equal("it must start with '/'", check(nil))
    end)

    it("rejects an empty pattern", function()
        assert.equal("it must start with '/'", check(""))
    end)

    it("rejects a pattern without a leading '/'", function()
        assert.equal("it must start with '/'", check("orders"))
    end)

    it("rejects '**' before the last segment", function()
        assert.equal("'**' must be the last segment", check("/a/**/b"))
    end)

    it("rejects '**' followed by a slash", function()
        assert.equal("'**' must be the last segment", check("/a/**/"))
    end)

    it("rejects '*' inside a segment", function()
        assert.equal("'*' is only allowed as a whole '**' last segment", check("/a/b*"))
    end)

    it("rejects a lone '*' segment", function()
        assert.equal("'*' is only allowed as a whole '**' last segment", check("/a/*"))
    end)

    it("rejects an empty parameter name", function()
        assert.equal([[bad parameter name ":" (':' then a letter or '_', then letters, digits, ]] ..
                     "'_')", check("/a/:"))
    end)

    it("rejects a parameter name starting with a digit", function()
        assert.equal([[bad parameter name ":1d" (':' then a letter or '_', then letters, ]] ..
                     "digits, '_')", check("/a/:1d"))
    end)

    it("rejects a parameter name with a bad character", function()
        assert.equal([[bad parameter name ":id-x" (':' then a letter or '_', then letters, ]] ..
                     "digits, '_')", check("/a/:id-x"))
    end)

    it("rejects a duplicate parameter name", function()
        assert.equal("duplicate parameter ':id'", check("/:id/x/:id"))
    end)

    it("accepts MG_ROUTER_MAX_PARAMS parameters", function()
        assert.is_nil(check("/:a/:b/:c/:d/:e/:f/:g/:h"))
    end)

    it("rejects more than MG_ROUTER_MAX_PARAMS parameters", function()
        assert.equal("too many parameters (at most 8)", check("/:a/:b/:c/:d/:e/:f/:g/:h/:i"))
    end)

    it("rejects an empty segment", function()
        assert.equal("empty segment ('//')", check("/a//b"))
    end)

    it("rejects a '.' segment", function()
        assert.equal("'.' and '..' segments are not allowed (paths are normalised)",
                     check("/a/./b"))
    end)

    it("rejects a '..' segment", function()
        assert.equal("'.' and '..' segments are not allowed (paths are normalised)",
                     check("/a/.."))
    end)

    it("rejects a backslash", function()
        assert.truthy(check("/a\\b"):find("invalid character", 1, true))
    end)

    it("rejects a space", function()
        assert.truthy(check("/a b"):find("invalid character", 1, true))
    end)

    it("rejects a '?'", function()
        assert.truthy(check("/a?b"):find("invalid character", 1, true))
    end)

    it("rejects a non-ASCII byte", function()
        assert.truthy(check("/caf\195\169"):find("invalid character", 1, true))
    end)

    it("rejects a malformed escape", function()
        assert.truthy(check("/a%2"):find("bad percent-escape", 1, true))
    end)

    it("rejects a lower-case escape (never in a normalised path)", function()
        assert.truthy(check("/a%2fb"):find("bad percent-escape", 1, true))
    end)

    it("rejects an escaped unreserved character", function()
        assert.truthy(check("/%41"):find("unreserved", 1, true))
    end)
end)

describe("mg_router_build", function()
    it("builds an empty router that matches nothing", function()
        local h = assert(build({}))
        assert.equal(NOT_FOUND, match(h, { path = "/" }))
    end)

    it("fails with the pattern's reason", function()
        local h, err = build { { path = "/a" }, { path = "a" } }
        assert.is_nil(h)
        assert.equal("it must start with '/'", err)
    end)

    it("rejects a host with a wildcard not in front", function()
        local _, err = build { { path = "/", host = "a.*.com" } }
        assert.truthy(err:find("bad host", 1, true))
    end)

    it("rejects a host wildcard without a dot", function()
        local _, err = build { { path = "/", host = "*example.com" } }
        assert.truthy(err:find("bad host", 1, true))
    end)

    it("rejects a bare '*.' host", function()
        local _, err = build { { path = "/", host = "*." } }
        assert.truthy(err:find("bad host", 1, true))
    end)

    it("rejects an empty host", function()
        local _, err = build { { path = "/", host = "" } }
        assert.truthy(err:find("bad host", 1, true))
    end)
end)

describe("mg_router_match paths", function()
    describe("exact", function()
        local h = build { { path = "/payments" } }

        it("matches the path itself", function()
            local rc, m = match(h, { path = "/payments" })
            assert.equal(OK, rc)
            assert.equal("/payments", m.name)
        end)

        it("has no rest", function()
            local _, m = match(h, { path = "/payments" })
            assert.is_nil(m.rest)
        end)

        it("does not match with a trailing slash", function()
            assert.equal(NOT_FOUND, match(h, { path = "/payments/" }))
        end)

        it("does not match below", function()
            assert.equal(NOT_FOUND, match(h, { path = "/payments/1" }))
        end)

        it("does not match a longer name", function()
            assert.equal(NOT_FOUND, match(h, { path = "/paymentsx" }))
        end)

        it("does not match a shorter name", function()
            assert.equal(NOT_FOUND, match(h, { path = "/payment" }))
        end)

        it("is case-sensitive", function()
            assert.equal(NOT_FOUND, match(h, { path = "/Payments" }))
        end)
    end)

    describe("prefix (trailing slash)", function()
        local h = build { { path = "/orders/" } }

        it("matches the prefix itself with an empty rest", function()
            local rc, m = match(h, { path = "/orders/" })
            assert.equal(OK, rc)
            assert.equal("", m.rest)
        end)

        it("matches below with the remainder as rest", function()
            local _, m = match(h, { path = "/orders/42/items" })
            assert.equal("42/items", m.rest)
        end)

        it("does not match the path without its trailing slash", function()
            assert.equal(NOT_FOUND, match(h, { path = "/orders" }))
        end)

        it("does not match a longer first segment", function()
            assert.equal(NOT_FOUND, match(h, { path = "/ordersx/1" }))
        end)
    end)

    describe("rest (**)", function()
        local h = build { { path = "/orders/**" } }

        it("matches the bare path with an empty rest", function()
            local rc, m = match(h, { path = "/orders" })
            assert.equal(OK, rc)
            assert.equal("", m.rest)
        end)

        it("matches the path with a trailing slash, empty rest", function()
            local _, m = match(h, { path = "/orders/" })
            assert.equal("", m.rest)
        end)

        it("matches below with the remainder as rest", function()
            local _, m = match(h, { path = "/orders/42/items/" })
            assert.equal("42/items/", m.rest)
        end)

        it("does not match a longer first segment", function()
            assert.equal(NOT_FOUND, match(h, { path = "/ordersx" }))
        end)

        it("does not match a parent", function()
            assert.equal(NOT_FOUND, match(h, { path = "/" }))
        end)
    end)

    describe("catch-alls", function()
        it("treats '/' as a prefix of everything", function()
            local h = build { { path = "/" } }
            local _, m = match(h, { path = "/a/b" })
            assert.equal("a/b", m.rest)
        end)

        it("matches the root with '/'", function()
            local h = build { { path = "/" } }
            local _, m = match(h, { path = "/" })
            assert.equal("", m.rest)
        end)

        it("matches the root with '/**'", function()
            local h = build { { path = "/**" } }
            local _, m = match(h, { path = "/" })
            assert.equal("", m.rest)
        end)

        it("matches everything with '/**'", function()
            local h = build { { path = "/**" } }
            local _, m = match(h, { path = "/x/y" })
            assert.equal("x/y", m.rest)
        end)
    end)

    describe("params", function()
        it("captures one segment", function()
            local h = build { { path = "/orders/:id" } }
            local _, m = match(h, { path = "/orders/42" })
            assert.same({ id = "42" }, m.params)
        end)

        it("does not match a missing segment", function()
            local h = build { { path = "/orders/:id" } }
            assert.equal(NOT_FOUND, match(h, { path = "/orders/" }))
        end)

        it("does not match two segments", function()
            local h = build { { path = "/orders/:id" } }
            assert.equal(NOT_FOUND, match(h, { path = "/orders/42/x" }))
        end)

        it("does not match with a trailing slash", function()
            local h = build { { path = "/orders/:id" } }
            assert.equal(NOT_FOUND, match(h, { path = "/orders/42/" }))
        end)

        it("captures an encoded slash inside the value as is", function()
            local h = build { { path = "/f/:name" } }
            local _, m = match(h, { path = "/f/a%2Fb" })
            assert.same({ name = "a%2Fb" }, m.params)
        end)

        it("captures several params in pattern order", function()
            local h = build { { path = "/u/:user/o/:order" } }
            local _, m = match(h, { path = "/u/ann/o/7" })
            assert.same({ user = "ann", order = "7" }, m.params)
            assert.same({ "user", "order" }, m.order)
        end)

        it("captures params and a rest together", function()
            local h = build { { path = "/u/:id/items/**" } }
            local _, m = match(h, { path = "/u/9/items/a/b" })
            assert.same({ id = "9" }, m.params)
            assert.equal("a/b", m.rest)
        end)

        it("captures params before a prefix tail", function()
            local h = build { { path = "/u/:id/" } }
            local _, m = match(h, { path = "/u/9/x" })
            assert.same({ id = "9" }, m.params)
            assert.equal("x", m.rest)
        end)

        it("captures a param at the root", function()
            local h = build { { path = "/:tenant/**" } }
            local _, m = match(h, { path = "/acme" })
            assert.same({ tenant = "acme" }, m.params)
        end)

        it("captures MG_ROUTER_MAX_PARAMS params", function()
            local h = build { { path = "/:a/:b/:c/:d/:e/:f/:g/:h" } }
            local _, m = match(h, { path = "/1/2/3/4/5/6/7/8" })
            assert.same({ "a", "b", "c", "d", "e", "f", "g", "h" }, m.order)
            assert.equal("8", m.params.h)
        end)

        it("has no params on a literal route", function()
            local h = build { { path = "/a" } }
            local _, m = match(h, { path = "/a" })
            assert.same({}, m.params)
        end)
    end)

    it("rejects a path that does not start with '/'", function()
        local h = build { { path = "/**" } }
        assert.equal(NOT_FOUND, match(h, { path = "a" }))
    end)

    it("rejects an empty path", function()
        local h = build { { path = "/**" } }
        assert.equal(NOT_FOUND, match(h, { path = "" }))
    end)
end)

describe("mg_router_match specificity", function()
    it("prefers a literal over a param", function()
        assert.equal("lit", pick({ { path = "/a/:x" }, { name = "lit", path = "/a/b" } },
                                 "/a/b"))
    end)

    it("prefers a param over '**'", function()
        assert.equal("param", pick({ { path = "/a/**" }, { name = "param", path = "/a/:x" } },
                                   "/a/b"))
    end)

    it("prefers a param over a prefix", function()
        assert.equal("param", pick({ { path = "/a/" }, { name = "param", path = "/a/:x" } },
                                   "/a/b"))
    end)

    it("prefers a literal over '**'", function()
        assert.equal("lit", pick({ { path = "/a/**" }, { name = "lit", path = "/a/b" } },
                                 "/a/b"))
    end)

    it("prefers an exact route over '**' for the bare path", function()
        assert.equal("exact", pick({ { path = "/a/**" }, { name = "exact", path = "/a" } },
                                   "/a"))
    end)

    it("prefers the longer prefix", function()
        assert.equal("long", pick({ { path = "/a/" }, { name = "long", path = "/a/b/" } },
                                  "/a/b/c"))
    end)

    it("prefers the longer '**'", function()
        assert.equal("long", pick({ { path = "/a/**" }, { name = "long", path = "/a/b/**" } },
                                  "/a/b/c"))
    end)

    it("prefers a param then '**' over a shorter '**'", function()
        assert.equal("long", pick({ { path = "/a/**" }, { name = "long", path = "/a/:x/**" } },
                                  "/a/b/c"))
    end)

    it("prefers any route over the '/' catch-all", function()
        assert.equal("p", pick({ { path = "/" }, { name = "p", path = "/:x/**" } }, "/a/b"))
    end)

    it("decides at the leftmost differing segment", function()
        assert.equal("/a/**", pick({ { path = "/:x/b/c" }, { path = "/a/**" } }, "/a/b/c"))
    end)

    it("breaks a prefix vs '**' tie by declaration order", function()
        assert.equal("/a/", pick({ { path = "/a/" }, { path = "/a/**" } }, "/a/x"))
        assert.equal("/a/**", pick({ { path = "/a/**" }, { path = "/a/" } }, "/a/x"))
    end)

    it("breaks a tie between equal patterns by declaration order", function()
        assert.equal("first", pick({ { name = "first", path = "/a/:x" },
                                     { name = "second", path = "/a/:y" } }, "/a/b"))
    end)

    it("orders ties by route.index, not array position", function()
        assert.equal("second", pick({ { name = "first", path = "/a", index = 5 },
                                      { name = "second", path = "/a", index = 2 } }, "/a"))
    end)

    it("prefers the host-restricted route between equal paths", function()
        assert.equal("host", pick({ { name = "any", path = "/a" },
                                    { name = "host", path = "/a", host = "x.com" } },
                                  "/a", { host = "x.com" }))
    end)

    it("prefers an exact host over a wildcard host between equal paths", function()
        assert.equal("exact", pick({ { name = "wild", path = "/a", host = "*.x.com" },
                                     { name = "exact", path = "/a", host = "api.x.com" } },
                                   "/a", { host = "api.x.com" }))
    end)

    it("prefers a header-matching route between equal paths", function()
        assert.equal("v2", pick({ { name = "any", path = "/a" },
                                  { name = "v2", path = "/a", headers = { ["x-v"] = "2" } } },
                                "/a", { headers = { ["x-v"] = "2" } }))
    end)

    it("falls back to a less specific route when the host differs", function()
        assert.equal("/a/**", pick({ { path = "/a/b", host = "x.com" }, { path = "/a/**" } },
                                   "/a/b", { host = "y.com" }))
    end)

    it("falls back to a less specific route when a header is missing", function()
        assert.equal("/a/**", pick({ { path = "/a/b", headers = { ["x-v"] = "2" } },
                                     { path = "/a/**" } }, "/a/b"))
    end)

    it("picks the most specific of many routes", function()
        local list = {
            { path = "/" }, { path = "/**" }, { path = "/api/" }, { path = "/api/**" },
            { path = "/api/:v/**" }, { path = "/api/v1/" }, { path = "/api/v1/users/:id" },
            { path = "/api/v1/users/me" }, { path = "/api/:v/users/:id" },
        }
        assert.equal("/api/v1/users/me", pick(list, "/api/v1/users/me"))
        assert.equal("/api/v1/users/:id", pick(list, "/api/v1/users/7"))
        assert.equal("/api/:v/users/:id", pick(list, "/api/v2/users/7"))
        assert.equal("/api/v1/", pick(list, "/api/v1/orders"))
        assert.equal("/api/:v/**", pick(list, "/api/v2"))
        assert.equal("/api/", pick(list, "/api/"))
        assert.equal("/api/**", pick(list, "/api"))
        assert.equal("/", pick(list, "/other"))
    end)
end)

describe("mg_router_match hosts", function()
    local h = build {
        { name = "api", path = "/", host = "api.example.com" },
        { name = "wild", path = "/", host = "*.example.org" },
        { name = "v6", path = "/", host = "[::1]" },
        { name = "upper", path = "/", host = "UP.Example.NET" },
    }

    local function host(name)
        local rc, m = match(h, { path = "/", host = name })
        return rc == OK and m.name or rc
    end

    it("matches an exact host", function()
        assert.equal("api", host("api.example.com"))
    end)

    it("compares hosts case-insensitively", function()
        assert.equal("api", host("API.Example.COM"))
    end)

    it("compares an upper-case route host case-insensitively", function()
        assert.equal("upper", host("up.example.net"))
    end)

    it("ignores a port on the request's Host", function()
        assert.equal("api", host("api.example.com:8080"))
    end)

    it("ignores a trailing dot on the request's Host", function()
        assert.equal("api", host("api.example.com."))
    end)

    it("does not match another host", function()
        assert.equal(NOT_FOUND, host("example.com"))
    end)

    it("does not match a host with a longer name", function()
        assert.equal(NOT_FOUND, host("api.example.com.evil"))
    end)

    it("does not match a host that merely ends the same", function()
        assert.equal(NOT_FOUND, host("xapi.example.com"))
    end)

    it("does not match a request without Host", function()
        assert.equal(NOT_FOUND, match(h, { path = "/" }))
    end)

    it("matches one label for a wildcard", function()
        assert.equal("wild", host("a.example.org"))
    end)

    it("matches several labels for a wildcard", function()
        assert.equal("wild", host("a.b.example.org"))
    end)

    it("matches a wildcard case-insensitively with a port", function()
        assert.equal("wild", host("A.EXAMPLE.ORG:443"))
    end)

    it("does not match the wildcard's base domain", function()
        assert.equal(NOT_FOUND, host("example.org"))
    end)

    it("does not match an empty label before the wildcard's base", function()
        assert.equal(NOT_FOUND, host(".example.org"))
    end)

    it("does not match empty labels inside the wildcard part", function()
        assert.equal(NOT_FOUND, host("a..example.org"))
    end)

    it("does not match a wildcard base without a dot", function()
        assert.equal(NOT_FOUND, host("badexample.org"))
    end)

    it("matches an IPv6 literal with a port", function()
        assert.equal("v6", host("[::1]:8080"))
    end)

    it("lets a route without host match any host", function()
        local any = build { { path = "/" } }
        assert.equal(OK, match(any, { path = "/", host = "whatever.test" }))
    end)

    it("lets a route without host match a request without Host", function()
        local any = build { { path = "/" } }
        assert.equal(OK, match(any, { path = "/" }))
    end)
end)

describe("mg_router_match methods", function()
    it("lets a route without methods match any method", function()
        local h = build { { path = "/a" } }
        assert.equal(OK, match(h, { path = "/a", method = "PATCH" }))
    end)

    it("matches a listed method", function()
        local h = build { { path = "/a", methods = { "GET", "POST" } } }
        assert.equal(OK, match(h, { path = "/a", method = "POST" }))
    end)

    it("answers BAD_METHOD for an unlisted method", function()
        local h = build { { path = "/a", methods = { "GET", "POST" } } }
        assert.equal(BAD_METHOD, match(h, { path = "/a", method = "DELETE" }))
    end)

    it("compares methods case-sensitively", function()
        local h = build { { path = "/a", methods = { "GET" } } }
        assert.equal(BAD_METHOD, match(h, { path = "/a", method = "get" }))
    end)

    it("does not match a method that is a prefix of a listed one", function()
        local h = build { { path = "/a", methods = { "POST" } } }
        assert.equal(BAD_METHOD, match(h, { path = "/a", method = "POS" }))
    end)

    it("falls back to a less specific route that allows the method", function()
        assert.equal("/a/**", pick({ { path = "/a/b", methods = { "GET" } },
                                     { path = "/a/**" } }, "/a/b", { method = "POST" }))
    end)

    it("picks the route that allows the method among equal patterns", function()
        assert.equal("post", pick({ { name = "get", path = "/a", methods = { "GET" } },
                                    { name = "post", path = "/a", methods = { "POST" } } },
                                  "/a", { method = "POST" }))
    end)

    it("answers NOT_FOUND when the path does not match either", function()
        local h = build { { path = "/a", methods = { "GET" } } }
        assert.equal(NOT_FOUND, match(h, { path = "/b", method = "POST" }))
    end)

    it("answers NOT_FOUND when the host does not match either", function()
        local h = build { { path = "/a", host = "x.com", methods = { "GET" } } }
        assert.equal(NOT_FOUND, match(h, { path = "/a", host = "y.com", method = "POST" }))
    end)

    it("answers NOT_FOUND when the headers do not match either", function()
        local h = build { { path = "/a", headers = { ["x-v"] = "2" }, methods = { "GET" } } }
        assert.equal(NOT_FOUND, match(h, { path = "/a", method = "POST" }))
    end)

    it("answers NOT_FOUND when the listen port does not match either", function()
        local h = build { { path = "/a", listen = 81, methods = { "GET" } } }
        assert.equal(NOT_FOUND, match(h, { path = "/a", port = 80, method = "POST" }))
    end)
end)

describe("mg_router_match headers", function()
    local h = build { { name = "v2", path = "/a", headers = { ["x-version"] = "2",
                                                               ["x-tenant"] = "acme" } } }

    it("matches when every header has its value", function()
        assert.equal(OK, match(h, { path = "/a", headers = { ["x-version"] = "2",
                                                              ["x-tenant"] = "acme" } }))
    end)

    it("asks for the lower-case names with their lengths", function()
        match(h, { path = "/a", headers = { ["x-version"] = "2", ["x-tenant"] = "acme" } })
        table.sort(asked)
        assert.same({ "x-tenant", "x-version" }, asked)
    end)

    it("does not match when one header is missing", function()
        assert.equal(NOT_FOUND, match(h, { path = "/a", headers = { ["x-version"] = "2" } }))
    end)

    it("does not match another value", function()
        assert.equal(NOT_FOUND, match(h, { path = "/a", headers = { ["x-version"] = "3",
                                                                     ["x-tenant"] = "acme" } }))
    end)

    it("compares values case-sensitively", function()
        assert.equal(NOT_FOUND, match(h, { path = "/a", headers = { ["x-version"] = "2",
                                                                     ["x-tenant"] = "ACME" } }))
    end)

    it("does not match a value with extra bytes", function()
        assert.equal(NOT_FOUND, match(h, { path = "/a", headers = { ["x-version"] = "22",
                                                                     ["x-tenant"] = "acme" } }))
    end)

    it("does not match a prefix of the value", function()
        assert.equal(NOT_FOUND, match(h, { path = "/a", headers = { ["x-version"] = "2",
                                                                     ["x-tenant"] = "acm" } }))
    end)

    it("does not match, without calling back, when get_header is NULL", function()
        assert.equal(NOT_FOUND, match(h, { path = "/a", no_getter = true }))
    end)

    it("matches routes without headers when get_header is NULL", function()
        local plain = build { { path = "/a" } }
        assert.equal(OK, match(plain, { path = "/a", no_getter = true }))
    end)
end)

describe("mg_router_match listen port", function()
    local h = build { { name = "admin", path = "/", listen = 9000 }, { name = "any", path = "/**" } }

    it("matches a port-bound route on its port", function()
        assert.equal("admin", select(2, match(h, { path = "/x", port = 9000 })).name)
    end)

    it("skips a port-bound route on another port", function()
        assert.equal("any", select(2, match(h, { path = "/x", port = 8080 })).name)
    end)

    it("lets listen_port 0 match any port", function()
        local any = build { { path = "/" } }
        assert.equal(OK, match(any, { path = "/", port = 1 }))
    end)
end)

describe("mg_router_upstream_path", function()
    it("copies the path without rewrite or strip_prefix", function()
        local h = build { { path = "/orders/**" } }
        assert.equal("/orders/1", upstream(h, { path = "/orders/1" }))
    end)

    it("strips a prefix", function()
        local h = build { { path = "/orders/**", strip_prefix = "/orders" } }
        assert.equal("/42/items", upstream(h, { path = "/orders/42/items" }))
    end)

    it("strips a prefix equal to the path down to '/'", function()
        local h = build { { path = "/orders/**", strip_prefix = "/orders" } }
        assert.equal("/", upstream(h, { path = "/orders" }))
    end)

    it("strips a prefix with a trailing slash and keeps a leading '/'", function()
        local h = build { { path = "/orders/", strip_prefix = "/orders/" } }
        assert.equal("/42", upstream(h, { path = "/orders/42" }))
    end)

    it("strips a prefix with a trailing slash from the bare prefix", function()
        local h = build { { path = "/orders/", strip_prefix = "/orders/" } }
        assert.equal("/", upstream(h, { path = "/orders/" }))
    end)

    it("keeps the path when it does not start with the prefix", function()
        local h = build { { path = "/**", strip_prefix = "/orders" } }
        assert.equal("/payments/1", upstream(h, { path = "/payments/1" }))
    end)

    it("strips only at a segment boundary", function()
        local h = build { { path = "/:x/**", strip_prefix = "/api" } }
        assert.equal("/apix/1", upstream(h, { path = "/apix/1" }))
    end)

    it("expands a param in a rewrite", function()
        local h = build { { path = "/orders/:id", rewrite = "/v1/orders/:id" } }
        assert.equal("/v1/orders/42", upstream(h, { path = "/orders/42" }))
    end)

    it("expands several params in any order", function()
        local h = build { { path = "/u/:user/o/:order", rewrite = "/orders/:order/by/:user" } }
        assert.equal("/orders/7/by/ann", upstream(h, { path = "/u/ann/o/7" }))
    end)

    it("expands a param inside a segment", function()
        local h = build { { path = "/f/:id", rewrite = "/files/:id.json" } }
        assert.equal("/files/42.json", upstream(h, { path = "/f/42" }))
    end)

    it("expands '**' to the rest", function()
        local h = build { { path = "/orders/**", rewrite = "/v2/**" } }
        assert.equal("/v2/42/items", upstream(h, { path = "/orders/42/items" }))
    end)

    it("expands '**' to nothing for the bare path", function()
        local h = build { { path = "/orders/**", rewrite = "/v2/**" } }
        assert.equal("/v2/", upstream(h, { path = "/orders" }))
    end)

    it("expands a prefix route's rest", function()
        local h = build { { path = "/orders/", rewrite = "/v2/**" } }
        assert.equal("/v2/a/b", upstream(h, { path = "/orders/a/b" }))
    end)

    it("expands params and '**' together", function()
        local h = build { { path = "/u/:id/items/**", rewrite = "/users/:id/**" } }
        assert.equal("/users/9/a/b", upstream(h, { path = "/u/9/items/a/b" }))
    end)

    it("expands '**' to nothing on a route without rest", function()
        local h = build { { path = "/a/:id", rewrite = "/b/:id/**" } }
        assert.equal("/b/1/", upstream(h, { path = "/a/1" }))
    end)

    it("expands a param the match does not have to nothing", function()
        local h = build { { path = "/a/:id", rewrite = "/x/:nope/y" } }
        assert.equal("/x//y", upstream(h, { path = "/a/1" }))
    end)

    it("does not expand a param whose name only starts the same", function()
        local h = build { { path = "/a/:id", rewrite = "/x/:idx" } }
        assert.equal("/x/", upstream(h, { path = "/a/1" }))
    end)

    it("keeps a ':' not followed by a name", function()
        local h = build { { path = "/a/:id", rewrite = "/x:/:id:1" } }
        assert.equal("/x:/1:1", upstream(h, { path = "/a/1" }))
    end)

    it("keeps an encoded slash from a param encoded", function()
        local h = build { { path = "/f/:name", rewrite = "/files/:name" } }
        assert.equal("/files/a%2Fb", upstream(h, { path = "/f/a%2Fb" }))
    end)

    it("starts a rewrite without a leading '/' with one", function()
        local h = build { { path = "/a/**", rewrite = "**" } }
        assert.equal("/b/c", upstream(h, { path = "/a/b/c" }))
    end)

    it("prefers rewrite over strip_prefix", function()
        local h = build { { path = "/orders/:id", strip_prefix = "/orders", rewrite = "/o/:id" } }
        assert.equal("/o/1", upstream(h, { path = "/orders/1" }))
    end)

    it("fits a result of exactly cap - 1 bytes", function()
        local h = build { { path = "/orders/**" } }
        assert.equal("/orders/1", upstream(h, { path = "/orders/1" }, 10))
    end)

    it("fails when the path and its NUL do not fit", function()
        local h = build { { path = "/orders/**" } }
        assert.is_nil(upstream(h, { path = "/orders/1" }, 9))
    end)

    it("fails when a rewrite does not fit", function()
        local h = build { { path = "/o/:id", rewrite = "/v1/orders/:id" } }
        assert.is_nil(upstream(h, { path = "/o/12345" }, 16))
    end)

    it("fails when a stripped path does not fit", function()
        local h = build { { path = "/o/**", strip_prefix = "/o" } }
        assert.is_nil(upstream(h, { path = "/o" }, 1))
    end)
end)
