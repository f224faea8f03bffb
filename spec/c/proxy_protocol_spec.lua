-- spec/c/proxy_protocol_spec.lua: the PROXY protocol parser
-- (src/proxy_protocol.c) through the FFI: headers captured from HAProxy
-- 2.6 (spec/fixtures/proxy_protocol/, how in haproxy.cfg there), vectors
-- built byte by byte here, every prefix of each (incremental parsing), and
-- the refusals the spec asks for.
local ffi = require "ffi"
local bit = require "bit"

local decl = require("spec.support.cdecl").new()
local cdef = decl.cdef

-- mirrors src/cidr.h and src/proxy_protocol.h
cdef "typedef struct mg_addr_s { uint8_t b[16]; } mg_addr_t;"
cdef "int mg_addr_format(const mg_addr_t *a, char *buf, size_t cap);"
cdef [[
typedef struct mg_pp_tlv_s { uint32_t off; uint16_t len; uint8_t type; } mg_pp_tlv_t;
typedef struct mg_pp_header_s {
    int version, command, family, transport, has_addr;
    mg_addr_t src, dst;
    uint16_t src_port, dst_port;
    size_t len;
    unsigned ntlvs;
    mg_pp_tlv_t tlvs[16];
    uint8_t ssl_client;
    uint32_t ssl_verify;
} mg_pp_header_t;
int mg_pp_parse(const uint8_t *buf, size_t n, size_t max_len, mg_pp_header_t *h,
                const char **err);
const mg_pp_tlv_t *mg_pp_tlv(const mg_pp_header_t *h, uint8_t type);
int mg_pp_ssl_sub(const mg_pp_header_t *h, const uint8_t *buf, uint8_t type, mg_pp_tlv_t *out);
uint32_t mg_pp_crc32c(const uint8_t *p, size_t n);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")
local AGAIN, ERROR = -11, -22
local LOCAL, PROXY = 0, 1
local UNSPEC, INET, INET6, UNIX = 0, 1, 2, 3

local hdr = ffi.new("mg_pp_header_t")
local err = ffi.new("const char *[1]")
local txt = ffi.new("char[64]")

local function addr_text(a)
    return ffi.string(txt, lib.mg_addr_format(a, txt, 64))
end

-- rc, and a table of what was parsed (or the reason)
local function parse(s, max)
    err[0] = nil
    local rc = lib.mg_pp_parse(s, #s, max or 0, hdr, err)
    if rc == ERROR then return rc, ffi.string(err[0]) end
    if rc < 0 then return rc end
    local t = { version = hdr.version, command = hdr.command, family = hdr.family,
                transport = hdr.transport, len = tonumber(hdr.len), tlvs = {} }
    if hdr.has_addr == 1 then
        t.src, t.dst = addr_text(hdr.src), addr_text(hdr.dst)
        t.sport, t.dport = hdr.src_port, hdr.dst_port
    end
    for i = 0, hdr.ntlvs - 1 do
        local v = hdr.tlvs[i]
        t.tlvs[#t.tlvs + 1] = { type = v.type, value = s:sub(v.off + 1, v.off + v.len) }
    end
    return rc, t
end

-- every strict prefix of a complete header asks for more
local function all_prefixes_again(s, len)
    for i = 0, len - 1 do
        local rc, why = parse(s:sub(1, i))
        assert(rc == AGAIN, ("prefix %d of %d: %s %s"):format(i, len, rc, why or ""))
    end
end

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

local SIG = "\r\n\r\n\0\r\nQUIT\n"
local function be16(n) return string.char(bit.rshift(n, 8), bit.band(n, 0xff)) end
local function be32(n)
    return string.char(bit.band(bit.rshift(n, 24), 0xff), bit.band(bit.rshift(n, 16), 0xff),
                       bit.band(bit.rshift(n, 8), 0xff), bit.band(n, 0xff))
end
local function tlv(t, v) return string.char(t) .. be16(#v) .. v end
-- a v2 header: ver_cmd byte, fam byte, then the rest (address block and TLVs)
local function v2(vc, fam, rest) return SIG .. string.char(vc, fam) .. be16(#rest) .. rest end
local V4_ADDRS = "\192\0\2\1" .. "\198\51\100\7" .. be16(51000) .. be16(443)

local FIX = "spec/fixtures/proxy_protocol/"
local SPORT_V1, SPORT_V2 = 45222, 53476 -- the client ports of the captures

describe("headers captured from HAProxy", function()
    it("v1 TCP4, with the request after it", function()
        local s = read(FIX .. "haproxy-v1-tcp4.bin")
        local rc, t = parse(s)
        assert.equal(44, rc)
        assert.same({ version = 1, command = PROXY, family = INET, transport = 1, len = 44,
                      src = "127.0.0.1", dst = "127.0.0.1", sport = SPORT_V1, dport = 39101,
                      tlvs = {} }, t)
        assert.equal("GET / HTTP/1.0\r\n\r\n", s:sub(rc + 1))
        all_prefixes_again(s, rc)
    end)

    it("v1 TCP6", function()
        local s = read(FIX .. "haproxy-v1-tcp6.bin")
        local rc, t = parse(s)
        assert.equal(32, rc)
        assert.equal(INET6, t.family)
        assert.equal("::1", t.src)
        assert.equal(39102, t.dport)
    end)

    it("v2 PROXY over TCP4 with CRC32C and UNIQUE_ID", function()
        local s = read(FIX .. "haproxy-v2-crc32c-unique-id.bin")
        local rc, t = parse(s)
        assert.equal(62, rc)
        assert.equal(2, t.version)
        assert.equal(PROXY, t.command)
        assert.equal("127.0.0.1", t.src)
        assert.equal(39103, t.dport)
        assert.equal(2, #t.tlvs)
        assert.equal(0x03, t.tlvs[1].type)
        assert.same({ type = 0x05, value = "moongate-127.0.0.1-" .. SPORT_V2 }, t.tlvs[2])
        assert.equal("GET / HTTP/1.0\r\n\r\n", s:sub(rc + 1))
        all_prefixes_again(s, rc)
        -- one bit flipped anywhere in the header breaks the checksum
        for _, i in ipairs { 1 + 16, 1 + 20, rc } do
            local b = s:sub(1, i - 1) .. string.char(bit.bxor(s:byte(i), 1)) .. s:sub(i + 1)
            local rc2, why = parse(b)
            assert.equal(ERROR, rc2)
            assert.matches("CRC32C", why)
        end
    end)

    it("v2 from a TLS listener: ALPN, AUTHORITY, UNIQUE_ID and SSL with sub-TLVs", function()
        local s = read(FIX .. "haproxy-v2-ssl-tlvs.bin")
        local rc, t = parse(s)
        assert.equal(16 + 0x7e, rc)
        local by = {}
        for _, v in ipairs(t.tlvs) do by[v.type] = v.value end
        assert.equal("h2", by[0x01])
        assert.equal("api.moongate.test", by[0x02])
        assert.equal("tls-127.0.0.1", by[0x05])
        assert.equal(1, hdr.ssl_client) -- PP2_CLIENT_SSL, no client certificate
        local sub = ffi.new("mg_pp_tlv_t")
        assert.equal(0, lib.mg_pp_ssl_sub(hdr, s, 0x21, sub))
        assert.equal("TLSv1.3", s:sub(sub.off + 1, sub.off + sub.len))
        assert.equal(0, lib.mg_pp_ssl_sub(hdr, s, 0x23, sub))
        assert.equal("TLS_AES_256_GCM_SHA384", s:sub(sub.off + 1, sub.off + sub.len))
        assert.equal(-1, lib.mg_pp_ssl_sub(hdr, s, 0x22, sub)) -- no client CN
        assert.equal("PING\n", s:sub(rc + 1))
    end)

    it("v2 LOCAL from a health check: no address", function()
        local s = read(FIX .. "haproxy-v2-local-check.bin")
        local rc, t = parse(s)
        assert.equal(16, rc)
        assert.equal(LOCAL, t.command)
        assert.is_nil(t.src)
        assert.equal("PING\r\n", s:sub(rc + 1))
    end)
end)

describe("v1 built here", function()
    it("parses TCP4, TCP6 and UNKNOWN", function()
        local rc, t = parse("PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\nGET")
        assert.equal(45, rc)
        assert.equal("192.0.2.1", t.src)
        assert.equal("198.51.100.7", t.dst)
        assert.equal(51000, t.sport)
        assert.equal(443, t.dport)
        rc, t = parse("PROXY TCP6 2001:db8::1 2001:DB8::2 0 65535\r\n")
        assert.equal("2001:db8::1", t.src)
        assert.equal("2001:db8::2", t.dst)
        assert.equal(0, t.sport)
        assert.equal(65535, t.dport)
        rc, t = parse("PROXY UNKNOWN\r\n")
        assert.equal(15, rc)
        assert.equal(LOCAL, t.command)
        assert.is_nil(t.src)
        rc = parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") -- the rest is ignored
        assert.equal(35, rc)
    end)

    it("accepts the longest line, 107 bytes, and refuses one byte more", function()
        local a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        local line = "PROXY UNKNOWN " .. a .. " " .. a .. " 65535 65535\r\n"
        assert.equal(107, #line)
        assert.equal(107, (parse(line)))
        all_prefixes_again(line, 107)
        local long = "PROXY UNKNOWN " .. ("x"):rep(92) .. "\r\n"
        assert.equal(108, #long)
        local rc, why = parse(long)
        assert.equal(ERROR, rc)
        assert.matches("107", why)
        assert.equal(ERROR, (parse(long:sub(1, 107)))) -- no need to wait for byte 108
    end)

    it("refuses whatever does not match exactly", function()
        for _, bad in ipairs {
            "PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\n",      -- LF alone
            "PROXY  TCP4 192.0.2.1 198.51.100.7 51000 443\r\n",   -- two spaces
            "PROXY TCP4 192.0.2.1  198.51.100.7 51000 443\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.7 51000 443 \r\n",   -- trailing space
            "PROXY TCP4 192.0.2.1 198.51.100.7 51000\r\n",        -- a port missing
            "PROXY TCP4 192.0.2.1 198.51.100.7 51000 443 7\r\n",  -- one field more
            "PROXY TCP4 192.0.2.01 198.51.100.7 51000 443\r\n",   -- leading zero
            "PROXY TCP4 ::1 ::1 51000 443\r\n",                   -- family mismatch
            "PROXY TCP6 192.0.2.1 198.51.100.7 51000 443\r\n",
            "PROXY TCP4 ::ffff:192.0.2.1 198.51.100.7 1 2\r\n",
            "PROXY TCP4 192.0.2.1 198.51.100.7 051000 443\r\n",   -- port leading zero
            "PROXY TCP4 192.0.2.1 198.51.100.7 65536 443\r\n",    -- port too big
            "PROXY TCP4 192.0.2.1 198.51.100.7 -1 443\r\n",
            "PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n",
            "PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n",
            "PROXY \r\n",
            "PROXY TCP4 192.0.2.1\0 198.51.100.7 1 2\r\n",
            "PROXY TCP4 192.0.2.1\t198.51.100.7 1 2\r\n",
            "proxy TCP4 192.0.2.1 198.51.100.7 1 2\r\n",
        } do
            assert.equal(ERROR, (parse(bad)), bad)
        end
    end)

    it("refuses a client that speaks plain HTTP at its first byte", function()
        local rc, why = parse("G")
        assert.equal(ERROR, rc)
        assert.equal("not a PROXY protocol header", why)
        assert.equal(ERROR, (parse("PROXX")))
        assert.equal(AGAIN, (parse("PROX")))
        assert.equal(AGAIN, (parse("\r\n\r\n\0")))
        assert.equal(ERROR, (parse("\r\n\r\n\1")))
    end)
end)

describe("v2 built here", function()
    it("parses PROXY over TCP4 and TCP6, and UDP", function()
        local s = v2(0x21, 0x11, V4_ADDRS) .. "payload"
        local rc, t = parse(s)
        assert.equal(28, rc)
        assert.same({ version = 2, command = PROXY, family = INET, transport = 1, len = 28,
                      src = "192.0.2.1", dst = "198.51.100.7", sport = 51000, dport = 443,
                      tlvs = {} }, t)
        all_prefixes_again(s, 28)
        local a6 = ("\32\1\13\184" .. ("\0"):rep(11) .. "\1") .. ("\32\1\13\184" ..
                   ("\0"):rep(11) .. "\2") .. be16(1) .. be16(2)
        rc, t = parse(v2(0x21, 0x22, a6))
        assert.equal(52, rc)
        assert.equal("2001:db8::1", t.src)
        assert.equal("2001:db8::2", t.dst)
        assert.equal(2, t.transport)
    end)

    it("accepts AF_UNIX and UNSPEC and ignores their addresses", function()
        local rc, t = parse(v2(0x21, 0x31, ("/tmp/sock\0"):rep(21) .. ("\0"):rep(6)))
        assert.equal(16 + 216, rc)
        assert.equal(UNIX, t.family)
        assert.is_nil(t.src)
        rc, t = parse(v2(0x21, 0x00, ""))
        assert.equal(16, rc)
        assert.equal(UNSPEC, t.family)
        assert.is_nil(t.src)
        -- LOCAL with an address block: skipped by its length, never used
        rc, t = parse(v2(0x20, 0x11, V4_ADDRS))
        assert.equal(28, rc)
        assert.equal(LOCAL, t.command)
        assert.is_nil(t.src)
    end)

    it("keeps TLVs as spans, NOOP included, and checks a CRC32C built here", function()
        assert.equal(0xE3069283, lib.mg_pp_crc32c("123456789", 9)) -- RFC 3720 B.4
        local body = V4_ADDRS .. tlv(0x01, "http/1.1") .. tlv(0x04, "") .. tlv(0x04, "pad")
                     .. tlv(0x30, "blue") .. tlv(0xE0, "custom")
        local rc, t = parse(v2(0x21, 0x11, body))
        assert.equal(16 + #body, rc)
        assert.same({ { type = 1, value = "http/1.1" }, { type = 4, value = "" },
                      { type = 4, value = "pad" }, { type = 0x30, value = "blue" },
                      { type = 0xE0, value = "custom" } }, t.tlvs)
        local zero = v2(0x21, 0x11, V4_ADDRS .. tlv(0x03, "\0\0\0\0"))
        local crc = lib.mg_pp_crc32c(zero, #zero)
        local signed = zero:sub(1, -5) .. be32(crc)
        assert.equal(#signed, (parse(signed)))
        assert.equal(ERROR, (parse(zero)))
    end)

    it("refuses what the spec says to reject", function()
        local cases = {
            { v2(0x11, 0x11, V4_ADDRS), "version is not 2" },
            { v2(0x22, 0x11, V4_ADDRS), "neither LOCAL nor PROXY" },
            { v2(0x21, 0x41, V4_ADDRS), "unknown address family" },
            { v2(0x21, 0x13, V4_ADDRS), "unknown address family" },
            { v2(0x21, 0x11, V4_ADDRS:sub(1, 11)), "shorter than its family" },
            { v2(0x21, 0x21, V4_ADDRS), "shorter than its family" },
            { v2(0x21, 0x11, V4_ADDRS .. "\1\0"), "runs past" },
            { v2(0x21, 0x11, V4_ADDRS .. "\1\0\5abc"), "runs past" },
            { v2(0x21, 0x11, V4_ADDRS .. tlv(5, ("u"):rep(129))), "128" },
            { v2(0x21, 0x11, V4_ADDRS .. tlv(3, "abc")), "CRC32C" },
            { v2(0x21, 0x11, V4_ADDRS .. tlv(1, "h2") .. tlv(1, "h2")), "twice" },
            { v2(0x21, 0x11, V4_ADDRS .. tlv(0x20, "\1\0\0\0")), "SSL TLV shorter" },
            { v2(0x21, 0x11, V4_ADDRS .. tlv(0x20, "\1\0\0\0\0" .. "\33\0\9TLS")), "SSL sub-TLV" },
            { v2(0x21, 0x11, V4_ADDRS .. tlv(4, ""):rep(17)), "more than 16" },
        }
        for _, c in ipairs(cases) do
            local rc, why = parse(c[1])
            assert.equal(ERROR, rc, c[2])
            assert.matches(c[2], why, 1, true)
        end
        assert.equal(AGAIN, (parse(v2(0x21, 0x11, V4_ADDRS):sub(1, 27))))
    end)

    it("refuses a header longer than the listener's limit before reading it", function()
        local big = SIG .. "\33\17" .. be16(60000) .. V4_ADDRS
        local rc, why = parse(big, 4096)
        assert.equal(ERROR, rc)
        assert.matches("longer than this listener accepts", why, 1, true)
        assert.equal(AGAIN, (parse(big))) -- without a limit: the protocol's 64 KiB
        local ok = v2(0x21, 0x11, V4_ADDRS .. tlv(4, ("x"):rep(4096 - 31)))
        assert.equal(4096, #ok)
        assert.equal(4096, (parse(ok, 4096)))
    end)
end)

describe("the declarations of this spec", function()
    it("are spelled as in src/cidr.h and src/proxy_protocol.h", function()
        assert.same({}, decl.missing { "src/cidr.h", "src/proxy_protocol.h" })
    end)
end)
