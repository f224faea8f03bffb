-- spec/c/h2_headers_spec.lua: HTTP/2 header blocks to the core's request
-- and back (src/h2_headers.c, RFC 9113 8.2.2, 8.2.3, 8.3) through the FFI
-- and spec/c/h2_headers_harness.c: pseudo-header fields, :authority and
-- Host, cookie crumbs, connection-specific fields, the methods taken, the
-- limits (431, 414), the framing an HTTP/1.1 upstream gets; the answer's
-- fields in lower case without the connection-specific ones, with the
-- gateway's content-length.
local ffi = require "ffi"
local decl = require("spec.support.cdecl").new()

decl.cdef [[
int mg_test_h2_head(const char *fields, size_t len, int end_stream, uint64_t header_size,
                    uint64_t header_count, char *out, size_t cap);
int mg_test_h2_response(int status, long long body_len, const char *fields, size_t len,
                        char *out, size_t cap);
]]
local C = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local function pack(fields)
    local parts = {}
    for _, kv in ipairs(fields) do
        parts[#parts + 1] = kv[1] .. "\0" .. kv[2] .. "\0"
    end
    return table.concat(parts)
end

-- The request built from `fields` (a list of { name, value }), as a table:
-- { status = 0 | refusal, reason, method, url, headers = { "name: value" },
-- has_body, chunked, content_length, head, idempotent, version, host }
local function head(fields, opts)
    opts = opts or {}
    local s = pack(fields)
    local out = ffi.new("char[65536]")
    local rc = C.mg_test_h2_head(s, #s, opts.end_stream == false and 0 or 1,
                                 opts.header_size or 32768, opts.header_count or 100, out, 65536)
    local text = ffi.string(out)
    local r = { status = rc, headers = {} }
    for line in text:gmatch("[^\n]+") do
        local k, v = line:match("^(%S+) (.*)$")
        if k == "refused" then
            r.reason = v:match("^%d+ (.*)$")
        elseif k == "header" then
            r.headers[#r.headers + 1] = v
        elseif k == "known" then
            r.host = v:match("^host (.*)$")
        else
            r[k] = tonumber(v) or v
        end
    end
    return r
end

local function req(extra, method, path)
    local f = { { ":method", method or "GET" }, { ":scheme", "https" },
                { ":authority", "api.example" }, { ":path", path or "/x?y=1" } }
    for _, kv in ipairs(extra or {}) do f[#f + 1] = kv end
    return f
end

describe("HTTP/2 request heads (h2_headers.c)", function()
    it("takes the pseudo-header fields as method and target, :authority as Host", function()
        local r = head(req({ { "accept", "*/*" } }))
        assert.equal(0, r.status)
        assert.equal("GET", r.method)
        assert.equal("/x?y=1", r.url)
        assert.equal(2, r.version) -- "2.0", read as a number
        assert.same({ "accept: */*", "host: api.example" }, r.headers)
        assert.equal("api.example", r.host)
        assert.equal(0, r.has_body)
        assert.equal(1, r.idempotent)
    end)

    it("joins cookie crumbs with '; ' in the first one's place (8.2.3)", function()
        local r = head(req({ { "cookie", "a=1" }, { "x-1", "one" }, { "cookie", "b=2" },
                             { "cookie", "c=3" }, { "x-2", "two" } }))
        assert.same({ "cookie: a=1; b=2; c=3", "x-1: one", "x-2: two", "host: api.example" },
                    r.headers)
    end)

    it("joins crumbs larger than its first buffer", function()
        local big = string.rep("v", 3000)
        local r = head(req({ { "cookie", "a=" .. big }, { "cookie", "b=" .. big } }))
        assert.equal(0, r.status)
        assert.equal("cookie: a=" .. big .. "; b=" .. big, r.headers[1])
    end)

    it("keeps a Host naming the :authority, refuses one naming another (8.3.1)", function()
        local r = head(req({ { "host", "API.example" } }))
        assert.equal(0, r.status)
        assert.same({ "host: API.example" }, r.headers)
        r = head(req({ { "host", "other.example" } }))
        assert.equal(400, r.status)
        assert.equal("Host and :authority differ", r.reason)
        r = head(req({ { "host", "api.example" }, { "host", "api.example" } }))
        assert.equal("duplicate Host header", r.reason)
    end)

    it("takes Host alone when there is no :authority", function()
        local r = head({ { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" },
                         { "host", "h.example" } })
        assert.equal(0, r.status)
        assert.equal("h.example", r.host)
    end)

    it("refuses userinfo in :authority", function()
        local r = head({ { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" },
                         { ":authority", "user@h.example" } })
        assert.equal("userinfo in :authority", r.reason)
    end)

    it("refuses connection-specific fields and TE other than trailers (8.2.2)", function()
        for _, name in ipairs { "connection", "keep-alive", "proxy-connection",
                                "transfer-encoding", "upgrade" } do
            local r = head(req({ { name, "x" } }))
            assert.equal(400, r.status, name)
            assert.equal("connection-specific header field", r.reason)
        end
        assert.equal("TE other than trailers", head(req({ { "te", "gzip" } })).reason)
        local r = head(req({ { "te", "trailers" } }))
        assert.equal(0, r.status)
        assert.same({ "host: api.example" }, r.headers) -- nothing upstream needs
    end)

    it("refuses pseudo-header fields out of place, repeated, unknown or missing", function()
        local r = head({ { ":method", "GET" }, { "x", "1" }, { ":path", "/" } })
        assert.equal("pseudo-header field after a regular field", r.reason)
        r = head({ { ":method", "GET" }, { ":method", "GET" } })
        assert.equal("repeated pseudo-header field", r.reason)
        assert.equal("unknown pseudo-header field", head({ { ":status", "200" } }).reason)
        assert.equal("missing :method", head({ { ":path", "/" } }).reason)
        assert.equal("missing :path", head({ { ":method", "GET" }, { ":scheme", "http" } }).reason)
        assert.equal("missing :scheme", head({ { ":method", "GET" }, { ":path", "/" } }).reason)
        assert.equal("empty pseudo-header field", head({ { ":method", "" } }).reason)
    end)

    it("takes the methods an HTTP/1.1 client could send, no others; CONNECT is 405", function()
        assert.equal(0, head(req({}, "PROPFIND")).status)
        assert.equal(0, head(req({}, "M-SEARCH")).status)
        local r = head(req({}, "BREW"))
        assert.equal(400, r.status)
        assert.equal("unknown method", r.reason)
        r = head(req({}, "CONNECT"))
        assert.equal(405, r.status)
        assert.equal(1, head(req({}, "HEAD")).head)
        assert.equal(0, head(req({}, "POST")).idempotent)
        assert.equal(1, head(req({}, "DELETE")).idempotent)
    end)

    it("frames a body for HTTP/1.1: its length, or chunked without one", function()
        local r = head(req({ { "content-length", "12" } }, "POST"), { end_stream = false })
        assert.equal(1, r.has_body)
        assert.equal(0, r.chunked)
        assert.equal(12, r.content_length)
        r = head(req({}, "POST"), { end_stream = false })
        assert.equal(1, r.has_body)
        assert.equal(1, r.chunked)
        r = head(req({ { "content-length", "0" } }, "POST"), { end_stream = false })
        assert.equal(0, r.has_body)
        assert.equal("content-length without a body",
                     head(req({ { "content-length", "5" } }, "POST")).reason)
        assert.equal("invalid content-length",
                     head(req({ { "content-length", "5x" } }, "POST"), { end_stream = false }).reason)
        assert.equal("duplicate Content-Length header",
                     head(req({ { "content-length", "1" }, { "content-length", "1" } }, "POST"),
                          { end_stream = false }).reason)
    end)

    it("bounds the list: limits.header_size and header_count (431), the request line (414)", function()
        local many = {}
        for i = 1, 10 do many[i] = { "x-" .. i, "v" } end
        local r = head(req(many), { header_count = 5 })
        assert.equal(431, r.status)
        assert.equal("too many header fields", r.reason)
        r = head(req({ { "x-big", string.rep("b", 5000) } }), { header_size = 4096 })
        assert.equal(431, r.status)
        assert.equal("request header fields too large", r.reason)
        r = head(req({}, "GET", "/" .. string.rep("p", 9000)))
        assert.equal(414, r.status)
    end)
end)

describe("HTTP/2 response fields (h2_headers.c)", function()
    local function resp(status, body_len, fields)
        local s = pack(fields)
        local out = ffi.new("char[16384]")
        C.mg_test_h2_response(status, body_len, s, #s, out, 16384)
        local lines = {}
        for line in ffi.string(out):gmatch("[^\n]+") do lines[#lines + 1] = line end
        return lines
    end

    it("lower-cases names, leaves out the connection-specific ones, adds content-length", function()
        assert.same({ ":status: 200", "content-type: text/plain", "x-thing: 1",
                      "content-length: 42" },
                    resp(200, 42, { { "Content-Type", "text/plain" }, { "Connection", "close" },
                                    { "Keep-Alive", "timeout=5" }, { "X-Thing", "1" },
                                    { "Transfer-Encoding", "chunked" },
                                    { "Content-Length", "99" }, { "Upgrade", "h2c" } }))
    end)

    it("gives no content-length when the length is unknown or the status has no body", function()
        assert.same({ ":status: 200" }, resp(200, -1, {}))
        assert.same({ ":status: 204" }, resp(204, 0, {}))
        assert.same({ ":status: 304", "etag: \"e1\"" }, resp(304, 10, { { "ETag", "\"e1\"" } }))
    end)

    it("trims blanks a hook left at a value's ends (clients refuse them)", function()
        assert.same({ ":status: 404", "x-a: padded", "content-length: 0" },
                    resp(404, 0, { { "X-A", "  padded\t" } }))
    end)
end)
