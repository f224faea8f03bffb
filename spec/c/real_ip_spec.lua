-- spec/c/real_ip_spec.lua: the real client address behind trusted proxies
-- (src/real_ip.c over src/cidr.c) through the FFI: nginx's recursive rule,
-- spoofing through a trusted proxy, IPv6 and ports, RFC 7239 Forwarded,
-- X-Real-IP, and garbage that must stop the walk.
local ffi = require "ffi"

local decl = require("spec.support.cdecl").new()
local cdef = decl.cdef

-- mirrors src/cidr.h and src/real_ip.h
cdef "typedef struct mg_addr_s { uint8_t b[16]; } mg_addr_t;"
cdef "typedef struct mg_cidr_set_s mg_cidr_set_t;"
for _, d in ipairs {
    "int mg_addr_parse(const char *s, size_t n, mg_addr_t *out);",
    "int mg_addr_format(const mg_addr_t *a, char *buf, size_t cap);",
    "mg_cidr_set_t *mg_cidr_set_new(void);",
    "int mg_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap);",
    "int mg_cidr_set_build(mg_cidr_set_t *s);",
    "void mg_cidr_set_free(mg_cidr_set_t *s);",
} do cdef(d) end
cdef [[
typedef struct mg_real_ip_value_s { const char *p; size_t n; } mg_real_ip_value_t;
typedef struct mg_real_ip_s {
    mg_addr_t addr;
    uint16_t port;
    int stop;
    unsigned hops;
} mg_real_ip_t;
int mg_real_ip_find(const mg_addr_t *peer, const mg_cidr_set_t *trusted, int header,
                    const mg_real_ip_value_t *values, size_t nvalues, mg_real_ip_t *out);
int mg_real_ip_header_kind(const char *name, size_t n);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")
local XFF, FWD, XRI = 0, 1, 2
local PEER, HEADER = 0, 1
local NOT_TRUSTED_PEER, NO_HEADER, UNTRUSTED, ALL_TRUSTED, MALFORMED, OPAQUE = 0, 1, 2, 3, 4, 5

local TRUSTED = ffi.gc(lib.mg_cidr_set_new(), lib.mg_cidr_set_free)
for _, e in ipairs { "10.0.0.0/8", "192.168.0.0/16", "::1", "2001:db8:a::/48" } do
    assert(lib.mg_cidr_set_add(TRUSTED, e, #e, nil, 0) == 0)
end
assert(lib.mg_cidr_set_build(TRUSTED) == 0)

local out = ffi.new("mg_real_ip_t")
local peer = ffi.new("mg_addr_t")
local txt = ffi.new("char[64]")

-- client text, port, how it ended, hops, and whether it is the peer
local function find(peer_text, kind, lines, set)
    assert(lib.mg_addr_parse(peer_text, #peer_text, peer) == 0, peer_text)
    local vals = ffi.new("mg_real_ip_value_t[?]", math.max(#lines, 1))
    for i, l in ipairs(lines) do vals[i - 1].p, vals[i - 1].n = l, #l end
    local src = lib.mg_real_ip_find(peer, set == nil and TRUSTED or set or nil, kind, vals,
                                    #lines, out)
    return { ffi.string(txt, lib.mg_addr_format(out.addr, txt, 64)), out.port, out.stop,
             out.hops, src == PEER and "peer" or "header" }
end

local function client(peer_text, kind, lines) return find(peer_text, kind, lines)[1] end

describe("X-Forwarded-For", function()
    it("is ignored when the peer is not trusted", function()
        assert.same({ "203.0.113.9", 0, NOT_TRUSTED_PEER, 0, "peer" },
                    find("203.0.113.9", XFF, { "10.1.1.1" }))
        assert.same({ "10.0.0.5", 0, NOT_TRUSTED_PEER, 0, "peer" },
                    find("10.0.0.5", XFF, { "1.2.3.4" }, false)) -- nothing trusted
    end)

    it("is the peer when a trusted peer sends none", function()
        assert.same({ "10.0.0.5", 0, NO_HEADER, 0, "peer" }, find("10.0.0.5", XFF, {}))
        assert.same({ "10.0.0.5", 0, NO_HEADER, 0, "peer" }, find("10.0.0.5", XFF, { " , ," }))
    end)

    it("walks right to left past trusted hops to the first untrusted one", function()
        assert.same({ "198.51.100.1", 0, UNTRUSTED, 3, "header" },
                    find("10.0.0.5", XFF, { "7.7.7.7, 198.51.100.1, 192.168.1.1, 10.9.9.9" }))
    end)

    it("returns the leftmost address when every hop is trusted", function()
        assert.same({ "10.1.1.1", 0, ALL_TRUSTED, 2, "header" },
                    find("10.0.0.5", XFF, { "10.1.1.1,192.168.3.3" }))
    end)

    it("never returns a spoofed address sent through a trusted proxy", function()
        -- the client at 203.0.113.50 sends "X-Forwarded-For: 1.2.3.4"; the
        -- trusted proxy 10.0.0.5 appends the address it saw
        assert.equal("203.0.113.50", client("10.0.0.5", XFF, { "1.2.3.4, 203.0.113.50" }))
        -- a spoofed trusted-looking entry is only believed if the hop to its
        -- right was trusted, which the real client never is
        assert.equal("203.0.113.50", client("10.0.0.5", XFF, { "10.6.6.6, 203.0.113.50" }))
        -- several lines are one list; the proxy appended its own line
        assert.equal("203.0.113.50", client("10.0.0.5", XFF, { "1.2.3.4", "203.0.113.50" }))
        assert.equal("203.0.113.50",
                     client("10.0.0.5", XFF, { "9.9.9.9, 8.8.8.8", "203.0.113.50, 10.2.2.2" }))
    end)

    it("reads IPv6, brackets and ports", function()
        assert.same({ "2001:db8::7", 0, UNTRUSTED, 2, "header" },
                    find("::1", XFF, { "2001:db8::7, 2001:db8:a::2" }))
        assert.same({ "2001:db8::7", 8443, UNTRUSTED, 1, "header" },
                    find("::1", XFF, { "[2001:db8::7]:8443" }))
        assert.same({ "198.51.100.1", 51000, UNTRUSTED, 1, "header" },
                    find("::ffff:10.0.0.5", XFF, { "198.51.100.1:51000" }))
        assert.equal("2001:db8::7", client("::1", XFF, { "[2001:db8::7]" }))
        assert.equal("198.51.100.1", client("10.0.0.5", XFF, { "::ffff:198.51.100.1" }))
    end)

    it("stops at a malformed element and keeps the last good address, as nginx does", function()
        local cases = {
            { "1.2.3.4, bogus, 10.1.1.1", { "10.1.1.1", 0, MALFORMED, 1, "header" } },
            { "1.2.3.4, 10.1.1.1, 300.1.1.1", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "1.2.3.4 5.6.7.8", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "1.2.3.4:0", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "1.2.3.4:65536", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "[1.2.3.4]", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "[::1", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "[2001:db8::1]x", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "fe80::1%eth0", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "unknown", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            { "\"1.2.3.4\"", { "10.0.0.5", 0, MALFORMED, 0, "peer" } },
            -- quotes mean nothing here: the comma still splits
            { "\"9.9.9.9, 10.1.1.1", { "10.1.1.1", 0, MALFORMED, 1, "header" } },
        }
        for _, c in ipairs(cases) do
            assert.same(c[2], find("10.0.0.5", XFF, { c[1] }), c[1])
        end
        -- blanks and empty elements are not malformed
        assert.equal("1.2.3.4", client("10.0.0.5", XFF, { " 1.2.3.4 ,, \t10.1.1.1 , " }))
    end)
end)

describe("Forwarded (RFC 7239)", function()
    it("takes the for= node of each element, any case, among other pairs", function()
        assert.same({ "198.51.100.1", 0, UNTRUSTED, 2, "header" },
                    find("10.0.0.5", FWD, { "for=198.51.100.1;proto=https;by=10.0.0.5, "
                                            .. "For=10.1.1.1;host=\"api.test\"" }))
    end)

    it("reads quoted IPv4 with a port and bracketed IPv6", function()
        assert.same({ "198.51.100.1", 4711, UNTRUSTED, 1, "header" },
                    find("10.0.0.5", FWD, { "for=\"198.51.100.1:4711\"" }))
        assert.same({ "2001:db8:cafe::17", 4711, UNTRUSTED, 2, "header" },
                    find("::1", FWD, { "for=\"[2001:db8:cafe::17]:4711\", for=\"[::1]\"" }))
        assert.same({ "2001:db8:cafe::17", 0, UNTRUSTED, 1, "header" },
                    find("::1", FWD, { "for=\"[2001:db8:cafe::17]:_port\"" }))
        -- a comma inside a quoted value does not split elements
        assert.equal("198.51.100.1",
                     client("10.0.0.5", FWD, { "for=198.51.100.1;x=\"a,b\", for=10.1.1.1" }))
    end)

    it("stops at unknown and obfuscated nodes, keeping the trusted hop", function()
        assert.same({ "10.1.1.1", 0, OPAQUE, 1, "header" },
                    find("10.0.0.5", FWD, { "for=unknown, for=10.1.1.1" }))
        assert.same({ "10.0.0.5", 0, OPAQUE, 0, "peer" },
                    find("10.0.0.5", FWD, { "for=_hidden" }))
    end)

    it("refuses what the grammar does not allow", function()
        for _, bad in ipairs {
            "for=2001:db8::1",           -- IPv6 must be quoted and bracketed
            "for=\"2001:db8::1\"",
            "for=198.51.100.1:80",       -- a port needs quotes
            "proto=https",               -- no for=
            "for=1.2.3.4;for=5.6.7.8",   -- twice
            "for=",
            "for=\"1.2.3.4",
            "for=\"1.2.\\3.4\"",
            "for =1.2.3.4",
            "for=1.2.3.4 ;proto=http",
            "1.2.3.4",
        } do
            assert.same({ "10.0.0.5", 0, MALFORMED, 0, "peer" }, find("10.0.0.5", FWD, { bad }),
                        bad)
        end
        assert.equal("1.2.3.4", client("10.0.0.5", FWD, { "for=1.2.3.4;;proto=http;" }))
    end)

    it("is not fooled by a spoofed element through a trusted proxy", function()
        assert.equal("203.0.113.50",
                     client("10.0.0.5", FWD, { "for=1.2.3.4", "for=203.0.113.50" }))
    end)
end)

describe("X-Real-IP", function()
    it("is one address, trusted or not", function()
        assert.same({ "198.51.100.1", 0, UNTRUSTED, 1, "header" },
                    find("10.0.0.5", XRI, { " 198.51.100.1 " }))
        assert.same({ "10.1.1.1", 0, ALL_TRUSTED, 1, "header" }, find("10.0.0.5", XRI, { "10.1.1.1" }))
        assert.same({ "2001:db8::1", 443, UNTRUSTED, 1, "header" },
                    find("10.0.0.5", XRI, { "[2001:db8::1]:443" }))
    end)

    it("is ignored when it is a list, garbage, repeated, or from an untrusted peer", function()
        for _, lines in ipairs { { "1.2.3.4, 5.6.7.8" }, { "bogus" }, { "" },
                                 { "1.2.3.4", "5.6.7.8" } } do
            assert.equal("peer", find("10.0.0.5", XRI, lines)[5], lines[1])
        end
        assert.equal("203.0.113.9", client("203.0.113.9", XRI, { "1.2.3.4" }))
    end)
end)

describe("mg_real_ip_header_kind", function()
    it("names the three headers in any case", function()
        assert.equal(XFF, lib.mg_real_ip_header_kind("x-forwarded-for", 15))
        assert.equal(FWD, lib.mg_real_ip_header_kind("Forwarded", 9))
        assert.equal(XRI, lib.mg_real_ip_header_kind("X-REAL-IP", 9))
        assert.equal(-1, lib.mg_real_ip_header_kind("X-Forwarded", 11))
    end)
end)

describe("the declarations of this spec", function()
    it("are spelled as in src/cidr.h and src/real_ip.h", function()
        assert.same({}, decl.missing { "src/cidr.h", "src/real_ip.h" })
    end)
end)
