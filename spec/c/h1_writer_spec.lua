-- spec/c/h1_writer_spec.lua: the HTTP/1 response writer (src/h1_writer.c)
-- through the FFI: the head every client answer gets (proxied, cached,
-- made by the gateway) and the framing it decides: bodyless statuses,
-- HEAD, Content-Length vs chunked vs close, keep-alive vs close, and a
-- buffer that grows for a long header list.
local ffi = require "ffi"
local decl = require("spec.support.cdecl").new()

decl.cdef [[
typedef struct mg_hfield_s {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    uint8_t tok;
    uint8_t line;
} mg_hfield_t;
typedef struct mg_resp_s {
    int status;
    const char *reason;
    size_t reason_len;
    const mg_hfield_t *headers;
    size_t nheaders;
    uint64_t body_len;
} mg_resp_t;
typedef struct mg_h1w_req_s {
    uint8_t minor;
    uint8_t head;
    uint8_t close;
} mg_h1w_req_t;
typedef struct mg_h1w_frame_s {
    uint8_t chunked;
    uint8_t close;
    uint8_t no_body;
    uint8_t tunnel;
} mg_h1w_frame_t;
long mg_h1w_head(char **buf, size_t *cap, size_t at, const mg_resp_t *res, const mg_h1w_req_t *q, mg_h1w_frame_t *f);
size_t mg_h1w_chunk_line(char *out, uint64_t len);
long mg_h1w_last_chunk(char **buf, size_t *cap, size_t at, const mg_hfield_t *t, size_t n);
]]
decl.cdef [[
void *malloc(size_t n);
void free(void *p);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local UNKNOWN = 0xffffffffffffffffULL -- MG_BODY_UNKNOWN
local HEAD_MAX = 4 * 1024 * 1024         -- MG_H1W_HEAD_MAX

-- A buffer the writer may realloc, as the worker's scratch is.
local function buffer(cap)
    local b = ffi.new("char *[1]")
    local c = ffi.new("size_t[1]", cap)
    b[0] = ffi.C.malloc(cap)
    return b, c
end

-- Keeps the Lua strings the fields point at alive while they are used.
local function fields(list, keep)
    local f = ffi.new("mg_hfield_t[?]", math.max(#list, 1))
    for i, kv in ipairs(list) do
        if not kv[1] then goto next end
        keep[#keep + 1] = kv[1]
        keep[#keep + 1] = kv[2]
        f[i - 1].name, f[i - 1].name_len = kv[1], #kv[1]
        f[i - 1].value, f[i - 1].value_len = kv[2], #kv[2]
        ::next::
    end
    return f
end

-- The head written for a response (o: status, reason, headers, body_len)
-- to a request (q: minor, head, close); returns the text, the frame, the
-- buffer's final capacity.
local function head(o, q, cap, at)
    local keep = {}
    local res = ffi.new("mg_resp_t")
    res.status = o.status or 200
    if o.reason then
        res.reason, res.reason_len = o.reason, #o.reason
    end
    res.headers = fields(o.headers or {}, keep)
    res.nheaders = #(o.headers or {})
    if o.body_len == nil then
        res.body_len = UNKNOWN
    else
        res.body_len = o.body_len
    end
    local req = ffi.new("mg_h1w_req_t", q and q.minor or 1, q and q.head and 1 or 0,
                        q and q.close and 1 or 0)
    local f = ffi.new("mg_h1w_frame_t")
    local b, c = buffer(cap or 4096)
    at = at or 0
    if at > 0 then ffi.fill(b[0], at, 0x58) end -- bytes already there: "XXX"
    local n = tonumber(lib.mg_h1w_head(b, c, at, res, req, f))
    local text = n >= 0 and ffi.string(b[0], at + n) or nil
    local grown = tonumber(c[0])
    ffi.C.free(b[0])
    return text, {
        chunked = f.chunked == 1, close = f.close == 1,
        no_body = f.no_body == 1, tunnel = f.tunnel == 1,
    }, grown, n
end

describe("the HTTP/1 response head", function()
    it("is a status line, the fields in order, the length and a blank line", function()
        local text, f = head { status = 200, body_len = 5,
                               headers = { { "Content-Type", "text/plain" },
                                           { "X-A", "1" } } }
        assert.equal("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n" ..
                     "Content-Length: 5\r\n\r\n", text)
        assert.same({ chunked = false, close = false, no_body = false, tunnel = false }, f)
    end)

    it("keeps the reason it is given, at most 128 bytes of it", function()
        assert.equal("HTTP/1.1 200 Fine\r\nContent-Length: 0\r\n\r\n",
                     (head { status = 200, reason = "Fine", body_len = 0 }))
        local long = string.rep("r", 300)
        local text = head { status = 200, reason = long, body_len = 0 }
        assert.equal("HTTP/1.1 200 " .. string.rep("r", 128) .. "\r\n", text:match("^[^\n]*\n"))
    end)

    it("uses the status's own text without a reason", function()
        assert.equal("HTTP/1.1 404 Not Found\r\n",
                     (head { status = 404, body_len = 0 }):match("^[^\n]*\n"))
    end)

    describe("a status without a body", function()
        for _, status in ipairs { 204, 304 } do
            it(status .. " says no Content-Length and sends no body", function()
                local text, f = head { status = status, body_len = 10,
                                       headers = { { "ETag", '"x"' } } }
                assert.is_nil(text:lower():find("content%-length"))
                assert.is_nil(text:lower():find("transfer%-encoding"))
                assert.is_true(f.no_body)
                assert.is_false(f.chunked)
            end)
            it(status .. " of unknown length is not chunked and keeps the connection", function()
                local text, f = head { status = status }
                assert.equal("HTTP/1.1 " .. status, text:sub(1, 12))
                assert.is_false(f.chunked)
                assert.is_false(f.close)
                assert.is_nil(text:lower():find("transfer%-encoding"))
            end)
        end

        it("101 says Connection: upgrade, no framing, and opens a tunnel", function()
            local text, f = head({ status = 101, reason = "Switching Protocols",
                                   headers = { { "Upgrade", "websocket" } } },
                                 { close = true })
            assert.equal("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ..
                         "Connection: upgrade\r\n\r\n", text)
            assert.same({ chunked = false, close = false, no_body = true, tunnel = true }, f)
        end)
    end)

    describe("for HEAD", function()
        it("says the length the GET's body would have and sends none", function()
            local text, f = head({ status = 200, body_len = 1234 }, { head = true })
            assert.equal("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", text)
            assert.is_true(f.no_body)
        end)

        it("of unknown length says neither length nor chunked, and keeps the connection",
           function()
            local text, f = head({ status = 200 }, { head = true })
            assert.equal("HTTP/1.1 200 OK\r\n\r\n", text)
            assert.same({ chunked = false, close = false, no_body = true, tunnel = false }, f)
            local t10, f10 = head({ status = 200 }, { head = true, minor = 0 })
            assert.equal("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", t10)
            assert.is_false(f10.close)
        end)
    end)

    describe("a body", function()
        it("of known length goes with Content-Length", function()
            local text, f = head { status = 201, body_len = 0 }
            assert.equal("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", text)
            assert.is_false(f.chunked)
            local big = head { status = 200, body_len = 18446744073709551614ULL }
            assert.truthy(big:find("Content-Length: 18446744073709551614\r\n", 1, true))
        end)

        it("of unknown length goes chunked to HTTP/1.1", function()
            local text, f = head { status = 200 }
            assert.equal("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", text)
            assert.is_true(f.chunked)
            assert.is_false(f.close)
        end)

        it("of unknown length to HTTP/1.0 is ended by the close", function()
            local text, f = head({ status = 200 }, { minor = 0 })
            assert.equal("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", text)
            assert.is_false(f.chunked)
            assert.is_true(f.close)
        end)
    end)

    describe("the connection", function()
        it("stays open for HTTP/1.1 without a Connection header", function()
            local text, f = head { status = 200, body_len = 2 }
            assert.is_nil(text:lower():find("connection"))
            assert.is_false(f.close)
        end)

        it("stays open for a kept HTTP/1.0 client with Connection: keep-alive", function()
            local text, f = head({ status = 200, body_len = 2 }, { minor = 0 })
            assert.equal("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" ..
                         "Connection: keep-alive\r\n\r\n", text)
            assert.is_false(f.close)
        end)

        it("closes with Connection: close when asked, on either version", function()
            for _, minor in ipairs { 0, 1 } do
                local text, f = head({ status = 500, body_len = 2 }, { minor = minor, close = true })
                assert.equal("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n" ..
                             "Connection: close\r\n\r\n", text)
                assert.is_true(f.close)
            end
        end)
    end)

    it("copies fields that lie in memory as their HTTP/1 lines as they are", function()
        -- as the proxy hands over an upstream's head: spans into the bytes
        -- it read, each marked as a line; a field from elsewhere between
        local raw = ffi.new("char[?]", 64)
        local src = "Server: up\r\ndate: today\r\nX-Up: 1\r\n"
        ffi.copy(raw, src, #src)
        local keep = {}
        local f = fields({ {}, {}, { "X-Mid", "m" }, {} }, keep)
        local spans = { { 0, 6, 8, 2 }, { 12, 4, 18, 5 }, nil, { 25, 4, 31, 1 } }
        for i, sp in pairs(spans) do
            f[i - 1].name, f[i - 1].name_len = raw + sp[1], sp[2]
            f[i - 1].value, f[i - 1].value_len = raw + sp[3], sp[4]
            f[i - 1].line = 1
        end
        local res = ffi.new("mg_resp_t", { status = 200, headers = f, nheaders = 4,
                                           body_len = 0 })
        local b, c = buffer(8)
        local fr = ffi.new("mg_h1w_frame_t")
        local n = tonumber(lib.mg_h1w_head(b, c, 0, res, ffi.new("mg_h1w_req_t", 1, 0, 0), fr))
        assert.equal("HTTP/1.1 200 OK\r\nServer: up\r\ndate: today\r\nX-Mid: m\r\n" ..
                     "X-Up: 1\r\nContent-Length: 0\r\n\r\n", ffi.string(b[0], n))
        ffi.C.free(b[0])
    end)

    describe("the buffer", function()
        it("grows to the exact need of a long header list, nothing estimated", function()
            local list, want = {}, { "HTTP/1.1 200 OK\r\n" }
            for i = 1, 300 do
                local v = string.rep(string.char(97 + i % 26), i)
                list[i] = { "X-Long-" .. i, v }
                want[#want + 1] = "X-Long-" .. i .. ": " .. v .. "\r\n"
            end
            want[#want + 1] = "Content-Length: 7\r\n\r\n"
            want = table.concat(want)
            local text, _, cap, n = head({ status = 200, body_len = 7, headers = list }, nil, 16)
            assert.equal(want, text)
            assert.equal(#want, n)
            assert.is_true(cap >= #want)
        end)

        it("fits a head of exactly its capacity without growing", function()
            local want = "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"
            local text, _, cap = head({ status = 200, body_len = 0,
                                        headers = { { "X-A", "1" } } }, nil, #want)
            assert.equal(want, text)
            assert.equal(#want, cap)
        end)

        it("writes after the bytes already there", function()
            local text = head({ status = 200, body_len = 0 }, nil, 20, 10)
            assert.equal(string.rep("X", 10) .. "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                         text)
        end)

        it("refuses a head beyond 4 MiB and leaves the buffer as it was", function()
            local v = string.rep("v", HEAD_MAX)
            local text, _, cap, n = head({ status = 200, body_len = 0,
                                           headers = { { "X-Big", v } } }, nil, 64)
            assert.equal(-1, n)
            assert.is_nil(text)
            assert.equal(64, cap)
        end)
    end)
end)

describe("chunk framing", function()
    it("starts a chunk with its length in hex", function()
        local out = ffi.new("char[18]")
        for len, want in pairs { [1] = "1\r\n", [15] = "f\r\n", [16] = "10\r\n",
                                 [65535] = "ffff\r\n", [4096] = "1000\r\n" } do
            local n = tonumber(lib.mg_h1w_chunk_line(out, len))
            assert.equal(want, ffi.string(out, n))
        end
        local n = tonumber(lib.mg_h1w_chunk_line(out, 0xffffffffffffffffULL))
        assert.equal("ffffffffffffffff\r\n", ffi.string(out, n))
    end)

    it("ends a body with the last chunk, its trailer fields and a blank line", function()
        local keep = {}
        local b, c = buffer(4)
        local n = tonumber(lib.mg_h1w_last_chunk(b, c, 0, nil, 0))
        assert.equal("0\r\n\r\n", ffi.string(b[0], n))
        local t = fields({ { "grpc-status", "0" }, { "grpc-message", "ok" } }, keep)
        n = tonumber(lib.mg_h1w_last_chunk(b, c, 2, t, 2))
        assert.equal("0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n", ffi.string(b[0] + 2, n))
        ffi.C.free(b[0])
    end)
end)

describe("h1_writer's declarations", function()
    it("match src/h1_writer.h", function()
        assert.same({}, decl.missing { "src/h1_writer.h" })
    end)
end)
