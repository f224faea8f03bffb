-- What the upstream receives (hop-by-hop headers removed, X-Forwarded-*,
-- X-Request-Id, Host, re-framed bodies) and what the client gets back.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.upstream("plain", { "{{UP}}" }, { forwarded = false, request_id = false })
gw.upstream("legacy", { "{{UP}}" }, { override_headers = true })
gw.route { path = "/plain/**", upstream = "plain" }
gw.route { path = "/legacy/**", upstream = "legacy" }
gw.route { path = "/**", upstream = "up" }
]]

local ID_PATTERN = "^[A-Za-z0-9._-]+$"

describe("proxied request", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up } })
    end)

    teardown(h.cleanup)

    -- sends req through the gateway; returns the upstream's view, response
    local function through(req)
        local res = h.http(gw.port, req)
        assert.equal("up", res.headers["x-upstream-name"])
        return h.json(res.body), res
    end

    describe("an upstream with forwarded = false, request_id = false", function()
        it("gets no X-Forwarded-* or X-Request-Id of the gateway's, the client's unchanged", function()
            local seen, res = through { path = "/plain/x", headers = {
                { "X-Forwarded-For", "10.1.1.1" }, { "X-Request-Id", "client-id-1" } } }
            assert.equal("10.1.1.1", seen.headers["x-forwarded-for"])
            assert.is_nil(seen.headers["x-forwarded-proto"])
            assert.is_nil(seen.headers["x-forwarded-host"])
            assert.equal("client-id-1", seen.headers["x-request-id"])
            assert.equal("client-id-1", res.headers["x-request-id"])
            local seen2, res2 = through { path = "/plain/y" }
            assert.is_nil(seen2.headers["x-request-id"])
            assert.truthy(res2.headers["x-request-id"])
        end)
    end)

    describe("hop-by-hop headers", function()
        it("Connection and the headers it lists are not forwarded", function()
            local seen = through { path = "/hop", headers = {
                { "Connection", "X-Custom-Hop, keep-alive" },
                { "X-Custom-Hop", "1" },
                { "X-End-To-End", "yes" },
            } }
            assert.is_nil(seen.headers["x-custom-hop"])
            assert.equal("yes", seen.headers["x-end-to-end"])
            local conn = (seen.headers["connection"] or ""):lower()
            assert.is_nil(conn:find("x-custom-hop", 1, true))
        end)

        it("an answer's Connection and the headers it names are not passed on", function()
            -- keep-alive alone (the common case), other tokens, and close
            local res = h.http(gw.port, { path = "/hop?hdr=Connection:keep-alive" ..
                "&hdr=X-Up-Hop:1&hdr=X-Up-Kept:2" })
            assert.equal(200, res.status)
            assert.equal("1", res.headers["x-up-hop"])
            res = h.http(gw.port, { path = "/hop?hdr=Connection:X-Up-Hop,%20keep-alive" ..
                "&hdr=X-Up-Hop:1&hdr=X-Up-Kept:2" })
            assert.is_nil(res.headers["x-up-hop"])
            assert.equal("2", res.headers["x-up-kept"])
            res = h.http(gw.port, { path = "/hop?hdr=Connection:close&hdr=Close:x" ..
                "&hdr=X-Up-Kept:2" })
            assert.is_nil(res.headers["close"])
            assert.equal("2", res.headers["x-up-kept"])
        end)

        it("Keep-Alive, Proxy-Connection, TE and Trailer are not forwarded", function()
            local seen = through { path = "/hop", headers = {
                { "Keep-Alive", "timeout=5" },
                { "Proxy-Connection", "keep-alive" },
                { "TE", "trailers" },
                { "Trailer", "X-Checksum" },
            } }
            assert.is_nil(seen.headers["keep-alive"])
            assert.is_nil(seen.headers["proxy-connection"])
            assert.is_nil(seen.headers["te"])
            assert.is_nil(seen.headers["trailer"])
        end)

        it("Upgrade is not forwarded when the request is not upgrading", function()
            local seen = through { path = "/hop", headers = { { "Upgrade", "h2c" } } }
            assert.is_nil(seen.headers["upgrade"])
        end)

        it("a chunked request body is re-framed, not passed with its Transfer-Encoding twice",
        function()
            local body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            local seen = through { method = "POST", path = "/te", body = body,
                headers = { { "Transfer-Encoding", "chunked" } } }
            assert.equal(11, seen.body_len)
            assert.equal(h.sh("printf 'hello world' | sha256sum"):match("^(%x+)"),
                seen.body_sha256)
            local te = seen.headers["transfer-encoding"]
            assert.is_true(te == nil or te:lower() == "chunked")
            assert.is_true(te == nil or seen.headers["content-length"] == nil)
        end)

        it("hop-by-hop response headers of the upstream are removed", function()
            local res = h.http(gw.port, { path = "/?hop=1" })
            assert.equal(200, res.status)
            assert.is_nil(res.headers["x-foo"])
            assert.is_nil(res.headers["keep-alive"])
            assert.is_nil(res.headers["proxy-connection"])
            local conn = (res.headers["connection"] or ""):lower()
            assert.is_nil(conn:find("x-foo", 1, true))
        end)
    end)

    describe("X-Forwarded-*", function()
        it("X-Forwarded-For is the client address", function()
            local seen = through { path = "/xff" }
            assert.equal("127.0.0.1", seen.headers["x-forwarded-for"])
        end)

        it("X-Forwarded-For appends the client address to an existing value", function()
            local seen = through { path = "/xff",
                headers = { ["X-Forwarded-For"] = "10.0.0.1, 10.0.0.2" } }
            assert.equal("10.0.0.1, 10.0.0.2, 127.0.0.1", seen.headers["x-forwarded-for"])
        end)

        it("X-Forwarded-Proto is http", function()
            local seen = through { path = "/xfp" }
            assert.equal("http", seen.headers["x-forwarded-proto"])
        end)

        it("a client-supplied X-Forwarded-Proto is replaced", function()
            local seen = through { path = "/xfp",
                headers = { ["X-Forwarded-Proto"] = "https" } }
            assert.equal("http", seen.headers["x-forwarded-proto"])
        end)

        it("X-Forwarded-Host is the Host the client sent", function()
            local seen = through { path = "/xfh", host = "shop.example.com:8080" }
            assert.equal("shop.example.com:8080", seen.headers["x-forwarded-host"])
        end)

        it("a client-supplied X-Forwarded-Host is replaced", function()
            local seen = through { path = "/xfh", host = "real.example.com",
                headers = { ["X-Forwarded-Host"] = "evil.example.com" } }
            assert.equal("real.example.com", seen.headers["x-forwarded-host"])
        end)
    end)

    describe("Host", function()
        it("the upstream gets the Host the client sent", function()
            local seen = through { path = "/host", host = "api.example.com:8443" }
            assert.equal("api.example.com:8443", seen.headers["host"])
            assert.equal(1, #(function()
                local n = {}
                for _, kv in ipairs(seen.header_list) do
                    if kv[1]:lower() == "host" then n[#n + 1] = kv end
                end
                return n
            end)())
        end)
    end)

    describe("X-Request-Id", function()
        it("a valid client id is kept and returned", function()
            local seen, res = through { path = "/rid",
                headers = { ["X-Request-Id"] = "abc-123.X_y" } }
            assert.equal("abc-123.X_y", seen.headers["x-request-id"])
            assert.equal("abc-123.X_y", res.headers["x-request-id"])
        end)

        it("a 128-character id is valid", function()
            local id = string.rep("a1", 64)
            local seen = through { path = "/rid", headers = { ["X-Request-Id"] = id } }
            assert.equal(id, seen.headers["x-request-id"])
        end)

        it("without a client id one is generated and returned", function()
            local seen, res = through { path = "/rid" }
            local id = seen.headers["x-request-id"]
            assert.is_string(id)
            assert.truthy(id:match(ID_PATTERN))
            assert.equal(id, res.headers["x-request-id"])
        end)

        it("generated ids differ per request", function()
            local ids = {}
            for _ = 1, 5 do
                local seen = through { path = "/rid" }
                local id = seen.headers["x-request-id"]
                assert.is_nil(ids[id])
                ids[id] = true
            end
        end)

        it("an invalid client id is replaced by a generated one", function()
            for _, bad in ipairs { "bad id!", "a/b", string.rep("x", 129), "x\"y" } do
                local seen, res = through { path = "/rid",
                    headers = { ["X-Request-Id"] = bad } }
                local id = seen.headers["x-request-id"]
                assert.is_string(id)
                assert.are_not.equal(bad, id)
                assert.truthy(id:match(ID_PATTERN))
                assert.truthy(#id <= 128)
                assert.equal(id, res.headers["x-request-id"])
            end
        end)
    end)

    describe("response", function()
        it("passes the upstream status, headers and body", function()
            local res = h.http(gw.port, { path = "/r?status=201&hdr=X-Custom:yes" })
            assert.equal(201, res.status)
            assert.equal("yes", res.headers["x-custom"])
            assert.equal("/r?status=201&hdr=X-Custom:yes", h.json(res.body).path)
        end)

        it("passes an upstream error status with the upstream's body", function()
            local res = h.http(gw.port, { path = "/r?status=503" })
            assert.equal(503, res.status)
            assert.equal("up", h.json(res.body).name)
        end)

        it("answers HEAD without a body and keeps the connection usable", function()
            local c = h.connect(gw.port)
            local res = c:request { method = "HEAD", path = "/head" }
            assert.equal(200, res.status)
            assert.equal("", res.body)
            res = c:request { path = "/after-head" }
            assert.equal(200, res.status)
            assert.equal("/after-head", h.json(res.body).path)
            c:close()
        end)

        it("204 responses have no body and keep the connection usable", function()
            local c = h.connect(gw.port)
            local res = c:request { path = "/r?status=204" }
            assert.equal(204, res.status)
            res = c:request { path = "/after-204" }
            assert.equal("/after-204", h.json(res.body).path)
            c:close()
        end)
    end)

    describe("URL and method override headers", function()
        local OVERRIDES = {
            { "X-Original-URL", "/admin" }, { "X-Rewrite-URL", "/admin" },
            { "X-HTTP-Method-Override", "DELETE" }, { "X-HTTP-Method", "DELETE" },
            { "X-Method-Override", "DELETE" },
        }

        it("the client's are not forwarded by default", function()
            local headers = { { "X-Other", "kept" } }
            for _, kv in ipairs(OVERRIDES) do headers[#headers + 1] = kv end
            local seen = through { path = "/ovr", headers = headers }
            for _, kv in ipairs(OVERRIDES) do
                assert.is_nil(seen.headers[kv[1]:lower()], kv[1])
            end
            assert.equal("kept", seen.headers["x-other"])
        end)

        it("an upstream with override_headers = true gets them", function()
            local seen = through { path = "/legacy/ovr", headers = OVERRIDES }
            for _, kv in ipairs(OVERRIDES) do
                assert.equal(kv[2], seen.headers[kv[1]:lower()], kv[1])
            end
        end)
    end)

    describe("an obs-folded upstream response header (RFC 9112 5.2)", function()
        -- the raw answer, so that a folded or truncated line is seen as is
        local function raw_answer(path)
            local c = h.connect(gw.port)
            c:send(h.request_text { path = path, headers = { Connection = "close" } })
            local raw = assert(c:read_until_close())
            c:close()
            return raw, raw:match("^(.-\r\n)\r\n")
        end

        it("reaches the client unfolded: each fold is one SP, no line starts blank", function()
            local raw, head = raw_answer("/fold?fold=X-Folded:abc%7Cdef%7Cghi")
            assert.truthy(head, raw)
            assert.truthy(head:find("\r\nX-Folded: abc def ghi\r\n", 1, true), head)
            assert.is_nil(head:find("\r\n[ \t]"), head)
            assert.matches("^HTTP/1.1 200 ", raw)
        end)

        it("loses the blanks around each fold, not the value's bytes", function()
            local res = h.http(gw.port, { path = "/fold?fold=X-Folded:a%20%20%7C%20%20b%20c%7C%7Cd" })
            assert.equal(200, res.status)
            assert.equal("a b c d", res.headers["x-folded"])
            assert.equal("/fold?fold=X-Folded:a%20%20%7C%20%20b%20c%7C%7Cd",
                h.json(res.body).path) -- the body is whole, the framing right
        end)

        it("is unfolded the same when the head arrives a byte at a time", function()
            local res = h.http(gw.port, { path = "/fold?trickle=1&fold=X-Folded:ab%20%7C%20%7C%20cd%7Cef" })
            assert.equal(200, res.status)
            assert.equal("ab cd ef", res.headers["x-folded"])
            assert.equal("up", res.headers["x-upstream-name"])
        end)

        it("of a framing header (Connection) gets 502", function()
            local res = h.http(gw.port, { path = "/fold?fold=Connection:keep-alive%7Cclose" })
            h.assert_error(res, 502)
        end)

        it("leaves the connection usable for the next request", function()
            local c = h.connect(gw.port)
            local res = c:request { path = "/fold?fold=X-Folded:1%7C2" }
            assert.equal("1 2", res.headers["x-folded"])
            res = c:request { path = "/after-fold" }
            assert.equal("/after-fold", h.json(res.body).path)
            c:close()
        end)
    end)

    describe("request body", function()
        it("a Content-Length body reaches the upstream intact", function()
            local body = string.rep("0123456789", 1000)
            local seen = through { method = "POST", path = "/body", body = body }
            assert.equal(#body, seen.body_len)
            assert.equal(tostring(#body), seen.headers["content-length"])
        end)

        it("the method and raw query reach the upstream", function()
            local seen = through { method = "DELETE", path = "/q?a=1&b=%20x&c" }
            assert.equal("DELETE", seen.method)
            assert.equal("/q?a=1&b=%20x&c", seen.path)
        end)
    end)
end)
