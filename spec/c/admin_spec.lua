-- spec/c/admin_spec.lua: the admin API server (src/admin.c) on its own loop
-- in a thread (spec/c/admin_harness.c, canned handlers), driven by a real
-- luasocket client (spec/support/helpers.lua).
local ffi = require "ffi"
local h = require "spec.support.helpers"

ffi.cdef [[
typedef struct mg_test_admin_s mg_test_admin_t;
mg_test_admin_t *mg_test_admin_start(const char *host, int port, const char *token,
                                     const char *names, uint64_t idle_ms, int flags,
                                     char *err, size_t errlen);
int mg_test_admin_port(const mg_test_admin_t *t);
int mg_test_admin_stop(mg_test_admin_t *t);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local NO_REPL = 1
local errbuf = ffi.new("char[512]")

-- Starts a server; returns the handle and its port, or nil, err.
local function start(opts)
    opts = opts or {}
    local t = lib.mg_test_admin_start(opts.host or "127.0.0.1", opts.port or 0,
        opts.token, opts.names, opts.idle_ms or 0, opts.flags or 0, errbuf, 512)
    if t == nil then return nil, ffi.string(errbuf) end
    return t, lib.mg_test_admin_port(t)
end

-- r with the headers moongate's own clients send to the server on port p
-- (Host, and the Content-Type of a POST or DELETE)
local function as_client(p, r)
    local hdrs = h.admin_headers(p, r.method, r.path)
    for k, v in pairs(r.headers or {}) do hdrs[k] = v end
    local out = {}
    for k, v in pairs(r) do out[k] = v end
    out.headers = hdrs
    return out
end

local function stop(t)
    assert.equal(0, lib.mg_test_admin_stop(t))  -- every handle closed
end

describe("admin server", function()
    local srv, port

    before_each(function()
        srv, port = assert(start())
    end)
    after_each(function()
        if srv then stop(srv) end
        srv = nil
    end)

    describe("routing", function()
        it("sends GET /status to its handler", function()
            local res = h.admin(port, { path = "/status" })
            assert.equal(200, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ ok = true, reloads = 0 }, h.json(res.body))
        end)

        it("sends each endpoint to its own handler", function()
            assert.equal("[]", h.admin(port, { path = "/routes" }).body)
            local up = h.admin(port, { path = "/upstreams" })
            assert.equal(256 * 1024, #up.body)
            local m = h.admin(port, { path = "/metrics" })
            assert.equal("text/plain; version=0.0.4", m.headers["content-type"])
            assert.equal("up 1\n", m.body)
        end)

        it("calls the reload handler on POST /reload", function()
            local res = h.admin(port, { method = "POST", path = "/reload" })
            assert.equal(200, res.status)
            local n = h.json(res.body).reloaded
            assert.equal(n, h.json(h.admin(port, { path = "/status" }).body).reloads)
        end)

        it("passes the request body to the repl handler", function()
            local body = "return 1 + 1\n" .. ("x"):rep(100000)
            local res = h.admin(port, { method = "POST", path = "/repl", body = body })
            assert.equal(200, res.status)
            assert.equal("text/plain", res.headers["content-type"])
            assert.equal("echo:" .. body, res.body)
        end)

        it("passes a chunked request body too", function()
            local c = h.connect(port)
            c:send("POST /repl HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\nContent-Type: text/x-lua\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal("echo:abcde", res.body)
            c:close()
        end)

        it("passes the handler's status and content type through", function()
            local res = h.admin(port, { method = "POST", path = "/repl", body = "fail" })
            assert.equal(422, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ error = "refused" }, h.json(res.body))
        end)

        it("ignores the query string", function()
            assert.equal(200, h.admin(port, { path = "/status?verbose=1" }).status)
        end)

        it("answers 404 with JSON for an unknown path", function()
            for _, path in ipairs { "/", "/nope", "/status/", "/statusx", "/STATUS" } do
                local res = h.admin(port, { path = path })
                assert.equal(404, res.status, path)
                assert.equal("application/json", res.headers["content-type"])
                assert.equal(404, h.json(res.body).status)
            end
        end)

        it("answers 405 with Allow for a known path and another method", function()
            local res = h.admin(port, { method = "POST", path = "/status", body = "" })
            assert.equal(405, res.status)
            assert.equal("GET", res.headers["allow"])
            assert.equal(405, h.json(res.body).status)
            res = h.admin(port, { path = "/reload" })
            assert.equal(405, res.status)
            assert.equal("POST", res.headers["allow"])
            assert.equal(405, h.admin(port, { method = "HEAD", path = "/status" }).status)
            assert.equal(405, h.admin(port, { method = "DELETE", path = "/repl" }).status)
        end)

        it("passes the query of POST /reload to its handler", function()
            local res = h.admin(port, { method = "POST", path = "/reload?file=%2Fa%20b" })
            assert.equal("file=%2Fa%20b", h.json(res.body).query)
        end)
    end)

    -- What a web page in the operator's browser can make it send: it must
    -- not be served (a reload or Lua run), nor readable (DNS rebinding).
    describe("who may ask", function()
        local function reloads()
            return h.json(h.admin(port, { path = "/status" }).body).reloads
        end

        -- a raw request with exactly these headers (nothing added)
        local function raw(method, path, hdrs, body)
            local c = h.connect(port)
            c:send(h.request_text { method = method, path = path, headers = hdrs,
                                    host = false, body = body })
            local res = assert(c:read_response())
            c:close()
            return res
        end

        it("refuses a Host that names another site (DNS rebinding) with 403", function()
            for _, host in ipairs { "evil.example:" .. port, "evil.example",
                                    "localhost", "127.0.0.1", "localhost:" .. (port + 1),
                                    "127.0.0.1:" .. port .. ".evil.example" } do
                local res = raw("GET", "/status", { { "Host", host } })
                assert.equal(403, res.status, host)
                assert.equal("application/json", res.headers["content-type"])
                local err = h.json(res.body)
                assert.equal(403, err.status)
                assert.truthy(err.error:find("is not this admin API (127.0.0.1:" .. port .. ")",
                    1, true), err.error)
            end
        end)

        it("answers 400 without exactly one Host", function()
            assert.equal(400, raw("GET", "/status", {}).status)
            local two = { { "Host", "127.0.0.1:" .. port }, { "Host", "127.0.0.1:" .. port } }
            assert.equal(400, raw("GET", "/status", two).status)
        end)

        it("answers its address, and localhost, 127.0.0.1, [::1] with the port", function()
            for _, host in ipairs { "127.0.0.1:" .. port, "localhost:" .. port,
                                    "LocalHost:" .. port, "[::1]:" .. port } do
                assert.equal(200, raw("GET", "/status", { { "Host", host } }).status, host)
            end
        end)

        it("answers the configured names, alone or with the admin port", function()
            stop(srv)
            srv, port = assert(start { names = "gw1.internal,admin.example:8443" })
            for _, host in ipairs { "gw1.internal", "gw1.internal:" .. port, "GW1.internal",
                                    "admin.example:8443" } do
                assert.equal(200, raw("GET", "/status", { { "Host", host } }).status, host)
            end
            for _, host in ipairs { "admin.example", "admin.example:" .. port,
                                    "gw1.internal:1" } do
                assert.equal(403, raw("GET", "/status", { { "Host", host } }).status, host)
            end
        end)

        it("refuses a browser's text/plain POST /repl (no preflight) unrun, with 415", function()
            local res = raw("POST", "/repl", { { "Host", "127.0.0.1:" .. port },
                { "Content-Type", "text/plain" } }, "os.exit(1)")
            assert.equal(415, res.status)
            local err = h.json(res.body)
            assert.equal("POST /repl needs Content-Type: text/x-lua (or the admin token), " ..
                "which no web page can send here", err.error)
            assert.falsy(res.body:find("echo:", 1, true))
            for _, ct in ipairs { "application/x-www-form-urlencoded", "multipart/form-data",
                                  "application/json", "text/x-luax" } do
                assert.equal(415, raw("POST", "/repl", { { "Host", "127.0.0.1:" .. port },
                    { "Content-Type", ct } }, "x").status, ct)
            end
            assert.equal(415, raw("POST", "/repl", { { "Host", "127.0.0.1:" .. port } },
                "x").status)
        end)

        it("refuses POST /reload and DELETE /cache without their type, running nothing", function()
            local before = reloads()
            local res = raw("POST", "/reload", { { "Host", "127.0.0.1:" .. port },
                { "Content-Type", "text/plain" } }, "")
            assert.equal(415, res.status)
            assert.equal(before, reloads())
            assert.equal(415, raw("DELETE", "/cache", { { "Host", "127.0.0.1:" .. port } }).status)
            res = raw("POST", "/reload", { { "Host", "127.0.0.1:" .. port },
                { "Content-Type", "Application/JSON; charset=utf-8" } }, "")
            assert.equal(200, res.status)
            assert.equal(before + 1, reloads())
        end)

        it("refuses a foreign Origin, even with the right type, running nothing", function()
            local before = reloads()
            for _, origin in ipairs { "http://evil.example", "null", "http://localhost",
                                      "http://127.0.0.1:" .. (port + 1),
                                      "http://127.0.0.1:" .. port .. ".evil.example" } do
                local res = raw("POST", "/reload", { { "Host", "127.0.0.1:" .. port },
                    { "Content-Type", "application/json" }, { "Origin", origin } }, "")
                assert.equal(403, res.status, origin)
                assert.truthy(h.json(res.body).error:find("cross-origin request refused", 1,
                    true))
            end
            assert.equal(before, reloads())
        end)

        it("serves its own origin (a page it served, or a tool that sends Origin)", function()
            for _, origin in ipairs { "http://127.0.0.1:" .. port, "HTTP://127.0.0.1:" .. port,
                                      "https://127.0.0.1:" .. port } do
                local res = raw("POST", "/repl", { { "Host", "127.0.0.1:" .. port },
                    { "Content-Type", "text/x-lua" }, { "Origin", origin } }, "ok")
                assert.equal(200, res.status, origin)
                assert.equal("echo:ok", res.body)
            end
        end)

        it("refuses Sec-Fetch-Site cross-site and same-site, serves same-origin and none",
            function()
            for _, site in ipairs { "cross-site", "same-site", "bogus" } do
                local res = raw("GET", "/status", { { "Host", "127.0.0.1:" .. port },
                    { "Sec-Fetch-Site", site } })
                assert.equal(403, res.status, site)
                assert.truthy(h.json(res.body).error:find("Sec-Fetch-Site: " .. site, 1, true))
            end
            for _, site in ipairs { "same-origin", "none" } do
                assert.equal(200, raw("GET", "/status", { { "Host", "127.0.0.1:" .. port },
                    { "Sec-Fetch-Site", site } }).status, site)
            end
        end)

        it("keeps the connection after a refusal, and drops its body", function()
            local c = h.connect(port)
            local res = c:request { method = "POST", path = "/repl", body = "secret",
                                    headers = { Host = "evil.example:" .. port,
                                                ["Content-Type"] = "text/x-lua" } }
            assert.equal(403, res.status)
            assert.falsy(res.body:find("secret", 1, true))
            res = c:request(as_client(port, { method = "POST", path = "/repl", body = "ok" }))
            assert.equal("echo:ok", res.body)
            c:close()
        end)
    end)

    describe("connections", function()
        it("serves two requests on one connection", function()
            local c = h.connect(port)
            local a = c:request(as_client(port, { path = "/status" }))
            local b = c:request(as_client(port, { method = "POST", path = "/repl", body = "two" }))
            assert.equal(200, a.status)
            assert.is_nil(a.headers["connection"])
            assert.equal("echo:two", b.body)
            assert.is_false(c:closed(0.1))
            c:close()
        end)

        it("answers pipelined requests in order", function()
            local c = h.connect(port)
            c:send(h.request_text(as_client(port, { path = "/upstreams" })) ..
                h.request_text(as_client(port, { method = "POST", path = "/repl", body = "1" })) ..
                h.request_text(as_client(port, { path = "/nope" })) ..
                h.request_text(as_client(port, { method = "POST", path = "/repl", body = "2" })))
            assert.equal(256 * 1024, #assert(c:read_response()).body)
            assert.equal("echo:1", assert(c:read_response()).body)
            assert.equal(404, assert(c:read_response()).status)
            assert.equal("echo:2", assert(c:read_response()).body)
            c:close()
        end)

        it("closes after Connection: close and after an HTTP/1.0 request", function()
            local c = h.connect(port)
            local res = c:request(as_client(port, { path = "/status",
                                                    headers = { Connection = "close" } }))
            assert.equal("close", res.headers["connection"])
            assert.is_true(c:closed(2))
            c = h.connect(port)
            res = c:request(as_client(port, { path = "/status", version = "HTTP/1.0" }))
            assert.equal(200, res.status)
            assert.is_true(c:closed(2))
        end)

        it("keeps an HTTP/1.0 keep-alive connection", function()
            local c = h.connect(port)
            local res = c:request(as_client(port, { path = "/status", version = "HTTP/1.0",
                                    headers = { Connection = "keep-alive" } }))
            assert.equal("keep-alive", res.headers["connection"])
            assert.equal(200, c:request(as_client(port, { path = "/routes",
                version = "HTTP/1.0", headers = { Connection = "keep-alive" } })).status)
            c:close()
        end)

        it("answers a malformed request with 400 and closes", function()
            local c = h.connect(port)
            c:send("GET /status HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\nContent-Length: 1\r\n" ..
                "Transfer-Encoding: chunked\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(400, res.status)
            assert.equal("close", res.headers["connection"])
            assert.is_true(c:closed(3))
        end)

        it("refuses an obs-folded header with 400", function()
            local c = h.connect(port)
            c:send("GET /status HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\nX-A: a\r\n b\r\n\r\n")
            assert.equal(400, assert(c:read_response()).status)
            c:close()
        end)

        it("answers 414 and 431 for an oversized head", function()
            local c = h.connect(port)
            c:send("GET /" .. ("a"):rep(9000) .. " HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\n\r\n")
            assert.equal(414, assert(c:read_response()).status)
            c:close()
            c = h.connect(port)
            local hdrs = { { "Host", "127.0.0.1:" .. port } }
            for i = 1, 100 do hdrs[#hdrs + 1] = { "X-H" .. i, ("v"):rep(1000) } end
            c:send(h.request_text { path = "/status", headers = hdrs })
            assert.equal(431, assert(c:read_response()).status)
            c:close()
        end)
    end)

    describe("bodies", function()
        it("accepts a body of exactly 1 MiB", function()
            local body = ("b"):rep(1024 * 1024)
            local res = h.admin(port, { method = "POST", path = "/repl", body = body,
                                       timeout = 10 })
            assert.equal(200, res.status)
            assert.equal(5 + #body, #res.body)
        end)

        it("answers 413 to a Content-Length beyond 1 MiB and closes", function()
            local c = h.connect(port)
            local body = ("b"):rep(1024 * 1024 + 1)
            c:send(h.request_text(as_client(port, { method = "POST", path = "/repl", body = body })))
            local res = assert(c:read_response())
            assert.equal(413, res.status)
            assert.equal("close", res.headers["connection"])
            assert.equal(413, h.json(res.body).status)
            assert.is_true(c:closed(5))
        end)

        it("answers 413 to a chunked body beyond 1 MiB", function()
            local c = h.connect(port)
            local piece = ("c"):rep(65536)
            local chunks = {}
            for i = 1, 17 do chunks[i] = "10000\r\n" .. piece .. "\r\n" end
            c:send("POST /repl HTTP/1.1\r\nHost: 127.0.0.1:" .. port .. "\r\nContent-Type: text/x-lua\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                table.concat(chunks) .. "0\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(413, res.status)
            assert.is_true(c:closed(5))
        end)
    end)

    describe("idle connections", function()
        it("closes a connection idle longer than the timeout", function()
            stop(srv)
            srv, port = assert(start { idle_ms = 200 })
            local c = h.connect(port)
            assert.equal(200, c:request(as_client(port, { path = "/status" })).status)
            local t0 = h.now()
            assert.is_true(c:closed(3))
            local took = h.now() - t0
            assert.is_true(took >= 0.15 and took < 2, "closed after " .. took)
        end)

        it("closes a connection that never sends a full request", function()
            stop(srv)
            srv, port = assert(start { idle_ms = 200 })
            local c = h.connect(port)
            c:send("GET /sta")
            assert.is_true(c:closed(3))
        end)
    end)

    describe("without a repl handler", function()
        it("answers 501", function()
            stop(srv)
            srv, port = assert(start { flags = NO_REPL })
            local res = h.admin(port, { method = "POST", path = "/repl", body = "x" })
            assert.equal(501, res.status)
        end)
    end)

    describe("stop", function()
        it("closes open connections and the listener", function()
            local c1 = h.connect(port)
            local c2 = h.connect(port)
            assert.equal(200, c1:request(as_client(port, { path = "/status" })).status)
            c2:send("GET /stat")                   -- half a request
            local big = h.connect(port)             -- an answer not read yet
            big:send(h.request_text(as_client(port, { path = "/upstreams" })):rep(20))
            h.sleep(0.1)
            stop(srv)
            srv = nil
            assert.is_true(c1:closed(2))
            assert.is_true(c2:closed(2))
            big:close()
            assert.is_nil(h.try_connect(port))
        end)
    end)
end)

describe("admin token", function()
    local TOKEN = "s3cret-token"
    local srv, port

    setup(function()
        srv, port = assert(start { token = TOKEN })
    end)
    teardown(function()
        stop(srv)
    end)

    local function get(auth, path)
        return h.admin(port, { path = path or "/status",
                              headers = { Authorization = auth } })
    end

    it("answers 401 with WWW-Authenticate: Bearer without a token", function()
        local res = h.admin(port, { path = "/status" })
        assert.equal(401, res.status)
        assert.equal("Bearer", res.headers["www-authenticate"])
        assert.equal("application/json", res.headers["content-type"])
        assert.equal(401, h.json(res.body).status)
    end)

    it("answers 401 for a wrong, shorter, longer or non-Bearer token", function()
        for _, auth in ipairs { "Bearer wrong", "Bearer s3cret-toke",
                                "Bearer s3cret-token2", "Bearer ", "Bearer",
                                "Basic " .. TOKEN, TOKEN, "Bearer S3CRET-TOKEN" } do
            local res = get(auth)
            assert.equal(401, res.status, auth)
            assert.equal("Bearer", res.headers["www-authenticate"])
        end
    end)

    it("answers 401 before routing (unknown paths are not revealed)", function()
        assert.equal(401, h.admin(port, { path = "/nope" }).status)
        assert.equal(401, h.admin(port, { method = "POST", path = "/status" }).status)
        assert.equal(404, get("Bearer " .. TOKEN, "/nope").status)
    end)

    it("serves a request with the right token", function()
        local res = get("Bearer " .. TOKEN)
        assert.equal(200, res.status)
        assert.equal(200, get("bearer  " .. TOKEN, "/metrics").status)
    end)

    it("needs no Content-Type from a client with the token", function()
        local c = h.connect(port)
        c:send(h.request_text { method = "POST", path = "/repl", body = "tok", headers = {
            { "Host", "127.0.0.1:" .. port }, { "Content-Type", "text/plain" },
            { "Authorization", "Bearer " .. TOKEN } } })
        local res = assert(c:read_response())
        assert.equal(200, res.status)
        assert.equal("echo:tok", res.body)
        c:close()
    end)

    it("checks the Host before the token", function()
        local res = h.http(port, { path = "/status", headers = {
            Host = "evil.example:" .. port, Authorization = "Bearer " .. TOKEN } })
        assert.equal(403, res.status)
    end)

    it("refuses two Authorization headers", function()
        local res = h.http(port, { path = "/status", headers = {
            { "Host", "127.0.0.1:" .. port },
            { "Authorization", "Bearer " .. TOKEN },
            { "Authorization", "Bearer " .. TOKEN } } })
        assert.equal(401, res.status)
    end)

    it("keeps the connection after a 401 and drops its body", function()
        local c = h.connect(port)
        local res = c:request(as_client(port, { method = "POST", path = "/repl",
                                                body = "secret body" }))
        assert.equal(401, res.status)
        res = c:request(as_client(port, { method = "POST", path = "/repl", body = "ok",
                          headers = { Authorization = "Bearer " .. TOKEN } }))
        assert.equal(200, res.status)
        assert.equal("echo:ok", res.body)
        c:close()
    end)
end)

describe("admin address", function()
    it("refuses a non-loopback address without a token", function()
        local t, err = start { host = "0.0.0.0", port = 9901 }
        assert.is_nil(t)
        assert.equal('admin API on 0.0.0.0:9901 needs a token (admin = { token = "..." }, ' ..
            "16 characters or more) because it is not a loopback address; or bind " ..
            "127.0.0.1, or set admin = false", err)
        t, err = start { host = "::", port = 9901, token = "" }
        assert.is_nil(t)
        assert.truthy(err:find("admin API on [::]:9901 needs a token", 1, true), err)
        t, err = start { host = "10.1.2.3", port = 9901 }
        assert.is_nil(t)
        assert.truthy(err:find("needs a token", 1, true))
    end)

    it("binds any 127.0.0.0/8 address, ::1 and localhost without a token", function()
        for _, host in ipairs { "127.0.0.1", "127.0.0.2", "localhost" } do
            local t, p = start { host = host }
            assert.is_not_nil(t, p)
            local c = assert(h.try_connect(p, { host = host == "localhost"
                and "127.0.0.1" or host }))
            c:close()
            stop(t)
        end
        local t, err = start { host = "::1" }
        -- hosts without IPv6 cannot bind ::1; the refusal must not be the token
        if t then stop(t) else assert.falsy(err:find("needs a token", 1, true)) end
    end)

    it("binds a non-loopback address with a token", function()
        local t, p = start { host = "0.0.0.0", token = "tok" }
        assert.is_not_nil(t, p)
        local res = h.admin(p, { path = "/status", headers = { Authorization = "Bearer tok" } })
        assert.equal(200, res.status)
        stop(t)
    end)

    it("on a wildcard address answers any IP literal with its port, and its names", function()
        local t, p = assert(start { host = "0.0.0.0", token = "tok", names = "gw1.internal" })
        local function status(host)
            return h.http(p, { path = "/status", headers = { Host = host,
                                                             Authorization = "Bearer tok" } })
                .status
        end
        for _, host in ipairs { "127.0.0.1:" .. p, "10.1.2.3:" .. p, "[::1]:" .. p,
                                "[2001:db8::1]:" .. p, "gw1.internal:" .. p } do
            assert.equal(200, status(host), host)
        end
        for _, host in ipairs { "evil.example:" .. p, "10.1.2.3", "10.1.2.3:" .. (p + 1),
                                "[::1]", "10.1.2:" .. p } do
            assert.equal(403, status(host), host)
        end
        stop(t)
    end)

    it("refuses names that are not host names", function()
        for _, names in ipairs { "bad name", "a:b", "a:0", "a:65536", "x/y", ":80" } do
            local t, err = start { names = names }
            assert.is_nil(t, names)
            assert.truthy(err:find("is not a host name or host:port", 1, true), err)
        end
    end)

    it("reads names with the config's host grammar (src/uri.c)", function()
        for _, names in ipairs { "a..b", "-gw.internal", "123", "1.2.3:9901",
                                 ("a"):rep(64) .. ".internal" } do
            local t, err = start { names = names }
            assert.is_nil(t, names)
            assert.truthy(err:find("is not a host name or host:port", 1, true), err)
        end
        local t = assert(start { names = "gw_1.internal,gw1.internal.:8443,10.0.0.7" })
        stop(t)
    end)

    it("reports a bind error with the address", function()
        local t, p = assert(start())
        local t2, err = start { port = p }
        assert.is_nil(t2)
        assert.equal(("admin API cannot listen on 127.0.0.1:%d: Address already in use")
            :format(p), err)
        stop(t)
        local _, err2 = start { host = "192.0.2.1", token = "x" }
        assert.truthy(err2:find("^admin API cannot listen on 192.0.2.1:0: "), err2)
    end)

    it("refuses a host that is not a numeric address", function()
        local t, err = start { host = "example.com" }
        assert.is_nil(t)
        assert.truthy(err:find("example.com:0", 1, true), err)
    end)
end)
