-- Request syntax and path confusion, through the real binary with raw
-- bytes: what the core refuses (400/505 and a clean close, nothing
-- upstream), and what it forwards (checked on the upstream's side).
--   * escaped slashes (%2F, %5C) and the escaped_slashes option
--   * singleton fields sent twice (Authorization, Host, ...)
--   * the client's Forwarded header
--   * Host syntax, empty and invalid field names, field values
--   * HTTP/0.9 and other versions
--   * chunk extensions (RFC 9112 7.1.1) and the 4 KiB chunk line bound
local h = require "spec.support.helpers"

-- PORT1 listener default (reject), PORT2 decode, PORT3 redirect, PORT4
-- keep. "sec" serves /secure, "pub" everything else; /open keeps escaped
-- slashes on every listener, /dec decodes them on every listener.
local CONFIG = [[
local gw = require "moongate"
gw.settings { timeouts = { header = 10, shutdown = 2 } }
gw.listen { port = {{PORT1}}, host = "127.0.0.1" }
gw.listen { port = {{PORT2}}, host = "127.0.0.1", escaped_slashes = "decode" }
gw.listen { port = {{PORT3}}, host = "127.0.0.1", escaped_slashes = "redirect" }
gw.listen { port = {{PORT4}}, host = "127.0.0.1", escaped_slashes = "keep" }
gw.upstream("sec", { "{{SEC}}" })
gw.upstream("pub", { "{{PUB}}" })
gw.upstream("plain", { "{{PUB}}" }, { forwarded = false })
gw.route { path = "/secure/**", upstream = "sec" }
gw.route { path = "/open/**", upstream = "pub", escaped_slashes = "keep" }
gw.route { path = "/dec/**", upstream = "pub", escaped_slashes = "decode" }
gw.route { path = "/plain/**", upstream = "plain" }
gw.route { path = "/**", upstream = "pub" }
]]

local gw, sec, pub

local function sha256(s)
    local path = h.tmpfile("body.bin", s)
    return (h.sh("sha256sum " .. h.shq(path)):match("^(%x+)"))
end

local function requests()
    return sec:stats().requests + pub:stats().requests
end

-- Sends raw bytes on a new connection to `port`; returns the response and
-- the connection.
local function raw(port, data)
    local c = h.connect(port)
    c:send(data)
    local res, err = c:read_response()
    assert(res, "no response: " .. tostring(err))
    return res, c
end

local function get(path, extra)
    return "GET " .. path .. " HTTP/1.1\r\nHost: localhost\r\n" .. (extra or "") .. "\r\n"
end

-- The core answers `status` itself, closes cleanly, forwards nothing.
local function refused(port, data, status)
    local before = requests()
    local res, c = raw(port, data)
    h.assert_error(res, status or 400)
    assert.equal("close", res.headers["connection"])
    assert.is_true(c:closed(2), "connection not closed after the " .. res.status)
    assert.equal("", c.buf, "bytes after the answer: " .. c.buf)
    h.sleep(0.05) -- let a late forward show up in the counts
    assert.equal(before, requests(), "the upstream got the request")
    return res
end

-- Forwarded: returns the upstream's name and what it received.
local function forwarded(port, data)
    local res = raw(port, data)
    assert.equal(200, res.status, res.body)
    return res.headers["x-upstream-name"], h.json(res.body)
end

describe("request syntax", function()
    setup(function()
        sec = h.start_upstream { name = "sec" }
        pub = h.start_upstream { name = "pub" }
        gw = h.start_gateway(CONFIG, { ports = 4, vars = { SEC = sec, PUB = pub } })
    end)

    teardown(h.cleanup)

    describe("escaped slashes, by default", function()
        local CASES = {
            "/secure%2Fresource", "/public/..%2Fsecure/x", "/secure%2fresource",
            "/public/..%2fsecure/x", "/public/..%5Csecure/x", "/public/..%5csecure/x",
            "/secure%5Cresource", "/a/b%2F", "/%2F", "/%2fsecure/x",
        }
        for _, path in ipairs(CASES) do
            it(path .. " is a 400", function()
                local res = refused(gw.ports[1], get(path))
                assert.matches("escaped slash", h.json(res.body).error, 1, true)
            end)
        end

        it("a query with %2F is not a path: forwarded", function()
            local name, seen = forwarded(gw.ports[1], get("/public/x?next=%2Fsecure%2Fx"))
            assert.equal("pub", name)
            assert.equal("/public/x?next=%2Fsecure%2Fx", seen.path)
        end)

        it("other escapes still go through", function()
            local name, seen = forwarded(gw.ports[1], get("/public/a%20b%3Fc"))
            assert.equal("pub", name)
            assert.equal("/public/a%20b%3Fc", seen.path)
        end)
    end)

    describe("nested encodings of a slash", function()
        local CASES = { "/public/..%252Fsecure/x", "/public/..%252fsecure/x",
                        "/public/..%255Csecure/x", "/public/..%25252Fsecure/x",
                        -- pieced together by decoding: %32 is "2", %46 "F"
                        "/public/..%25%32%46secure/x" }
        for _, path in ipairs(CASES) do
            it(path .. " is a 400 on reject, decode and redirect listeners", function()
                for i = 1, 3 do
                    local res = refused(gw.ports[i], get(path))
                    assert.matches("encoded escaped slash", h.json(res.body).error, 1, true)
                end
            end)
        end

        local OVERLONG = { -- sent, kept by a keep listener
            { "/public/..%C0%AFsecure/x", "/public/..%C0%AFsecure/x" },
            { "/public/..%c1%9csecure/x", "/public/..%C1%9Csecure/x" },
            { "/public/..%E0%80%AFsecure/x", "/public/..%E0%80%AFsecure/x" },
        }
        for _, case in ipairs(OVERLONG) do
            it(case[1] .. " (overlong UTF-8) is a 400 but on keep listeners", function()
                for i = 1, 3 do
                    refused(gw.ports[i], get(case[1]))
                end
                local name, seen = forwarded(gw.ports[4], get(case[1]))
                assert.equal("pub", name)
                assert.equal(case[2], seen.path)
            end)
        end

        it("%2525 alone (no slash after it) is kept", function()
            local _, seen = forwarded(gw.ports[1], get("/public/a%2525b"))
            assert.equal("/public/a%2525b", seen.path)
        end)
    end)

    describe("escaped_slashes = \"decode\"", function()
        it("/public/..%2Fsecure/x is /secure/x: routed and forwarded so", function()
            local name, seen = forwarded(gw.ports[2], get("/public/..%2Fsecure/x"))
            assert.equal("sec", name)
            assert.equal("/secure/x", seen.path)
        end)

        it("/secure%2Fresource is /secure/resource", function()
            local name, seen = forwarded(gw.ports[2], get("/secure%2fresource?a=%2F"))
            assert.equal("sec", name)
            assert.equal("/secure/resource?a=%2F", seen.path)
        end)

        it("%5C is a separator too, and runs of them collapse", function()
            local name, seen = forwarded(gw.ports[2], get("/public/a%5C%5cb%2F%2F.%2Fc"))
            assert.equal("pub", name)
            assert.equal("/public/a/b/c", seen.path)
        end)

        it("a decoded .. above the root is a 400", function()
            refused(gw.ports[2], get("/public/..%2F..%2F..%2Fx"))
        end)

        it("a route's own decode applies on a rejecting listener", function()
            local name, seen = forwarded(gw.ports[1], get("/dec/..%2Fsecure/x"))
            assert.equal("sec", name) -- routed on the decoded path
            assert.equal("/secure/x", seen.path)
        end)
    end)

    describe("escaped_slashes = \"redirect\"", function()
        it("answers 307 to the decoded path, forwards nothing", function()
            local before = requests()
            local res, c = raw(gw.ports[3], get("/public/..%2Fsecure/x?q=%2F1"))
            assert.equal(307, res.status)
            assert.equal("/secure/x?q=%2F1", res.headers["location"])
            assert.is_nil(res.headers["x-upstream-name"])
            assert.is_true(c:closed(2))
            assert.equal(before, requests())
        end)

        it("a path without escaped slashes is not redirected", function()
            local name, seen = forwarded(gw.ports[3], get("/public/x"))
            assert.equal("pub", name)
            assert.equal("/public/x", seen.path)
        end)
    end)

    describe("escaped_slashes = \"keep\"", function()
        it("forwards the path as received (escapes upper-cased)", function()
            local name, seen = forwarded(gw.ports[4], get("/public/..%2fsecure/x"))
            assert.equal("pub", name) -- routed on what is forwarded
            assert.equal("/public/..%2Fsecure/x", seen.path)
        end)

        it("keeps nested encodings too", function()
            local _, seen = forwarded(gw.ports[4], get("/public/a%252Fb"))
            assert.equal("/public/a%252Fb", seen.path)
        end)

        it("a route's own keep applies on a rejecting listener", function()
            local name, seen = forwarded(gw.ports[1], get("/open/a%2Fb"))
            assert.equal("pub", name)
            assert.equal("/open/a%2Fb", seen.path)
        end)
    end)

    describe("dot segments", function()
        it("..;/ (a path parameter on a dot segment) is a 400", function()
            refused(gw.ports[1], get("/public/..;/secure/x"))
            refused(gw.ports[1], get("/public/.;x/y"))
        end)

        it("a fragment is a 400: an upstream would cut it off", function()
            refused(gw.ports[1], get("/secure#x"))
            refused(gw.ports[1], get("/public/x?a=1#/../../secure"))
            refused(gw.ports[4], get("/public/x#"))
        end)

        it("a raw backslash is a 400", function()
            refused(gw.ports[1], get("/public/..\\secure/x"))
        end)

        it("a segment merely starting with dots is kept", function()
            local _, seen = forwarded(gw.ports[1], get("/public/..a;b/...;c"))
            assert.equal("/public/..a;b/...;c", seen.path)
        end)
    end)

    describe("fields sent twice", function()
        local CASES = {
            { "Authorization", "Authorization: Bearer good\r\nAuthorization: Bearer evil\r\n" },
            { "Authorization (same value)",
              "Authorization: Basic YTpi\r\nAuthorization: Basic YTpi\r\n" },
            { "Authorization (different case)",
              "Authorization: Bearer a\r\nauthorization: Bearer b\r\n" },
            { "Proxy-Authorization",
              "Proxy-Authorization: Basic YTpi\r\nPROXY-AUTHORIZATION: Basic Yzpk\r\n" },
            { "Host", "Host: other\r\n" },
            { "Content-Type", "Content-Type: text/plain\r\nContent-Type: application/json\r\n" },
            { "Content-Length", "Content-Length: 0\r\nContent-Length: 0\r\n" },
        }
        for _, case in ipairs(CASES) do
            it(case[1] .. " is a 400", function()
                refused(gw.ports[1], get("/public/x", case[2]))
            end)
        end

        it("one Authorization is forwarded", function()
            local _, seen = forwarded(gw.ports[1], get("/public/x",
                "Authorization: Bearer good\r\n"))
            assert.equal("Bearer good", seen.headers["authorization"])
        end)
    end)

    describe("Forwarded", function()
        it("the client's is replaced by the gateway's own", function()
            local _, seen = forwarded(gw.ports[1],
                "GET /public/x HTTP/1.1\r\nHost: example.com:8080\r\n" ..
                "Forwarded: for=10.1.2.3;proto=https\r\nforwarded: for=evil\r\n\r\n")
            local list = {}
            for _, kv in ipairs(seen.header_list) do
                if kv[1]:lower() == "forwarded" then list[#list + 1] = kv[2] end
            end
            assert.same({ 'for=127.0.0.1;proto=http;host="example.com:8080"' }, list)
        end)

        it("a host that is a token is not quoted", function()
            local _, seen = forwarded(gw.ports[1], get("/public/x"))
            assert.equal("for=127.0.0.1;proto=http;host=localhost", seen.headers["forwarded"])
        end)

        it("goes through unchanged to an upstream with forwarded = false", function()
            local _, seen = forwarded(gw.ports[1], get("/plain/x", "Forwarded: for=10.1.2.3\r\n"))
            assert.equal("for=10.1.2.3", seen.headers["forwarded"])
        end)
    end)

    describe("Host", function()
        local BAD = { "a b/c@d", "a b", "a/b", "a@b", "a\"b", "a\\b", "a:b", "a:65536",
                      "a:123456", "[::1", "[::g]", "[::1]x", "a%zz", "a:80:80",
                      "<a>", "a{b}", "[v1]" }
        for _, host in ipairs(BAD) do
            it(("%q is a 400"):format(host), function()
                local res = refused(gw.ports[1],
                    "GET /public/x HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n")
                assert.equal("invalid Host header", h.json(res.body).error)
            end)
        end

        local GOOD = { "example.com", "example.com.", "EXAMPLE.com:8080", "127.0.0.1:1",
                       "[::1]", "[::1]:8080", "[2001:db8::7]", "a_b-c~d", "a%41b", "a:",
                       "[v1.fe80::a+en1]", "[::1]:", "a!$&'()*+,;=b", "" }
        for _, host in ipairs(GOOD) do
            it(("%q is accepted"):format(host), function()
                local _, seen = forwarded(gw.ports[1],
                    "GET /public/x HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n")
                assert.equal(host, seen.headers["host"] or "")
            end)
        end

        it("trailing whitespace is not part of the value", function()
            local _, seen = forwarded(gw.ports[1],
                "GET /public/x HTTP/1.1\r\nHost: example.com \t\r\n\r\n")
            assert.equal("example.com", seen.headers["host"])
        end)
    end)

    describe("field names and values", function()
        it("an empty field name is a 400", function()
            local res = refused(gw.ports[1], get("/public/x", ": value\r\n"))
            assert.equal("empty header field name", h.json(res.body).error)
            refused(gw.ports[1], "GET /public/x HTTP/1.1\r\n: v\r\nHost: localhost\r\n\r\n")
        end)

        for _, ch in ipairs({ "(", ")", "@", "[", "]", "\"", "/", "{", "}", "=", ",", ";",
                              "\\", "?", "\127", "\128", "\0" }) do
            it(("the character %q in a field name is a 400"):format(ch), function()
                refused(gw.ports[1], get("/public/x", "X-A" .. ch .. "b: v\r\n"))
            end)
        end

        it("whitespace before the colon is a 400 (RFC 9112 5.1)", function()
            refused(gw.ports[1], get("/public/x", "X-A : v\r\n"))
            refused(gw.ports[1], get("/public/x", "X-A\t: v\r\n"))
            refused(gw.ports[1], get("/public/x", "Authorization : Bearer x\r\n"))
        end)

        it("a field line starting with whitespace is a 400", function()
            refused(gw.ports[1], "GET /public/x HTTP/1.1\r\n Host: localhost\r\n\r\n")
        end)

        for _, ch in ipairs({ "\0", "\r", "\1", "\31", "\127" }) do
            it(("the byte %q in a field value is a 400"):format(ch), function()
                refused(gw.ports[1], get("/public/x", "X-A: a" .. ch .. "b\r\n"))
            end)
        end

        it("a tab and obs-text in a value are forwarded", function()
            local _, seen = forwarded(gw.ports[1], get("/public/x", "X-A: a\tb\128c\r\n"))
            assert.equal("a\tb\194\128c", seen.headers["x-a"]) -- latin-1 -> UTF-8 JSON
        end)
    end)

    describe("request line", function()
        -- the header timeout is 10 s, longer than a read waits: an answer
        -- proves the gateway did not wait for more input
        it("GET /\\r\\n (HTTP/0.9) is answered 400 at once", function()
            local res = refused(gw.ports[1], "GET /\r\n")
            assert.matches("HTTP/0.9", h.json(res.body).error, 1, true)
        end)

        it("GET /x?y\\n (HTTP/0.9, bare LF) is answered 400 at once", function()
            refused(gw.ports[1], "GET /x?y\n")
        end)

        it("HTTP/0.9 split over two reads is answered 400", function()
            local c = h.connect(gw.ports[1])
            c:send("GET /public")
            h.sleep(0.1)
            c:send("\r\n")
            local res = assert(c:read_response())
            h.assert_error(res, 400)
            assert.is_true(c:closed(2))
        end)

        it("HTTP/2.0 is a 505", function()
            refused(gw.ports[1], "GET / HTTP/2.0\r\nHost: localhost\r\n\r\n", 505)
        end)

        it("an explicit HTTP/0.9 is a 505", function()
            refused(gw.ports[1], "GET / HTTP/0.9\r\nHost: localhost\r\n\r\n", 505)
        end)

        it("HTTP/1.2 is a 400", function()
            refused(gw.ports[1], "GET / HTTP/1.2\r\nHost: localhost\r\n\r\n")
        end)
    end)

    describe("chunk extensions", function()
        local HEAD = "POST /public/x HTTP/1.1\r\nHost: localhost\r\n" ..
                     "Transfer-Encoding: chunked\r\n\r\n"
        local GOOD = {
            { "name=value", "5;name=value\r\nhello\r\n0\r\n\r\n" },
            { "a bare name", "5;name\r\nhello\r\n0\r\n\r\n" },
            { "several, after an unquoted value",
              "5;a=b;c=\"d\";e\r\nhello\r\n0\r\n\r\n" },
            { "a quoted value with ; = and a space", "5;a=\"x;y=z w\"\r\nhello\r\n0\r\n\r\n" },
            { "a quoted-pair", "5;a=\"x\\\"y\\\\\"\r\nhello\r\n0\r\n\r\n" },
            { "whitespace around ; and = (BWS)", "5 ; a = b ;c\t=\t\"d\"\r\nhello\r\n0\r\n\r\n" },
            { "on later chunks and the last one",
              "5\r\nhello\r\n3;i=1\r\nabc\r\n0;end=\"x\"\r\n\r\n" },
            { "with trailers", "5;a=b\r\nhello\r\n0;c\r\nX-T: 1\r\n\r\n" },
        }
        for _, case in ipairs(GOOD) do
            it(case[1] .. ": accepted, dropped before forwarding", function()
                local before = requests()
                local res = raw(gw.ports[1], HEAD .. case[2])
                assert.equal(200, res.status, res.body)
                local seen = h.json(res.body)
                assert.is_true(seen.chunked)
                assert.same({}, seen.chunk_exts)
                local body = case[2]:find("abc", 1, true) and "helloabc" or "hello"
                assert.equal(#body, seen.body_len)
                assert.equal(sha256(body), seen.body_sha256)
                assert.equal(before + 1, requests())
            end)
        end

        local BAD = {
            { "an empty name", "5;=b\r\nhello\r\n0\r\n\r\n" },
            { "a lone ;", "5;\r\nhello\r\n0\r\n\r\n" },
            { "an empty value", "5;a=\r\nhello\r\n0\r\n\r\n" },
            { "a space inside a name", "5;a b\r\nhello\r\n0\r\n\r\n" },
            { "two =", "5;a=b=c\r\nhello\r\n0\r\n\r\n" },
            { "text after a quoted value", "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n" },
            { "a control byte in a quoted value", "5;a=\"b\1\"\r\nhello\r\n0\r\n\r\n" },
            { "an unterminated quoted value", "5;a=\"b\r\nhello\r\n0\r\n\r\n" },
            { "a bare LF", "5;a=b\nhello\r\n0\r\n\r\n" },
            { "whitespace before the CRLF", "5 \r\nhello\r\n0\r\n\r\n" },
            { "whitespace after a value", "5;a=b \r\nhello\r\n0\r\n\r\n" },
            { "a bad extension on a later chunk", "5\r\nhello\r\n3;=x\r\nabc\r\n0\r\n\r\n" },
            { "a bad extension on the last chunk", "5\r\nhello\r\n0;a=\r\n\r\n" },
        }
        for _, case in ipairs(BAD) do
            it(case[1] .. " is a 400", function()
                local res, c = raw(gw.ports[1], HEAD .. case[2])
                h.assert_error(res, 400)
                assert.is_true(c:closed(2))
            end)
        end

        it("a first chunk line over 4 KiB is answered 400, not waited on", function()
            local c = h.connect(gw.ports[1])
            c:send(HEAD .. "5;a=" .. ("x"):rep(5000))
            local res = assert(c:read_response())
            h.assert_error(res, 400)
            assert.is_true(c:closed(2))
        end)

        it("a later chunk line over 4 KiB is answered 400, not waited on", function()
            local c = h.connect(gw.ports[1])
            c:send(HEAD .. "5\r\nhello\r\n5;a=\"" .. ("x"):rep(5000))
            local res = assert(c:read_response())
            assert.equal(400, res.status)
            assert.is_true(c:closed(2))
        end)

        it("a chunk line just under 4 KiB is accepted", function()
            local ext = "a=" .. ("x"):rep(4000)
            local res = raw(gw.ports[1], HEAD .. "5;" .. ext .. "\r\nhello\r\n3;" .. ext ..
                            "\r\nabc\r\n0\r\n\r\n")
            assert.equal(200, res.status, res.body)
            assert.equal(8, h.json(res.body).body_len)
        end)

        it("many chunks with extensions stream through (the buffer is reused)", function()
            local parts, want = {}, {}
            for i = 1, 2000 do
                parts[#parts + 1] = ("7;n=%d;q=\"v %d\"\r\nabcdefg\r\n"):format(i, i)
                want[#want + 1] = "abcdefg"
            end
            local c = h.connect(gw.ports[1])
            c:send(HEAD)
            c:send(table.concat(parts))
            c:send("0\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(200, res.status, res.body)
            local seen = h.json(res.body)
            assert.equal(7 * 2000, seen.body_len)
            assert.equal(sha256(table.concat(want)), seen.body_sha256)
        end)
    end)
end)

describe("escaped_slashes in the config", function()
    teardown(h.cleanup)

    local function check(listen, route)
        return h.check_config(([[
local gw = require "moongate"
gw.listen { port = 8080%s }
gw.upstream("u", { "127.0.0.1:1" })
gw.route { path = "/**", upstream = "u"%s }
]]):format(listen, route))
    end

    it("an unknown listener value is refused with file:line", function()
        local code, out, path = check(', escaped_slashes = "allow"', "")
        assert.not_equal(0, code)
        assert.matches(path:match("[^/]+$") .. ":2:", out, 1, true)
        assert.matches('listen.escaped_slashes must be "reject", "decode", "redirect" or ' ..
                       '"keep", got string "allow"', out, 1, true)
    end)

    it("an unknown route value is refused with file:line", function()
        local code, out, path = check("", ", escaped_slashes = true")
        assert.not_equal(0, code)
        assert.matches(path:match("[^/]+$") .. ":4:", out, 1, true)
        assert.matches("route.escaped_slashes must be", out, 1, true)
    end)

    it("the four names are accepted", function()
        for _, v in ipairs({ "reject", "decode", "redirect", "keep" }) do
            local code, out = check((', escaped_slashes = "%s"'):format(v),
                                    (', escaped_slashes = "%s"'):format(v))
            assert.equal(0, code, out)
        end
    end)
end)
