-- spec/c/cidr_spec.lua: address keys and CIDR sets (src/cidr.c) through
-- the FFI: parsing and its refusals, merging, IPv4 mapped into IPv6, and
-- 10,000 random ranges checked against a brute-force model written here
-- over bytes, with the lookup's cost counted (never timed).
local ffi = require "ffi"
local bit = require "bit"

local decl = require("spec.support.cdecl").new()
local cdef = decl.cdef

-- mirrors src/cidr.h
cdef [[
typedef struct mg_addr_s { uint8_t b[16]; } mg_addr_t;
typedef struct mg_cidr_set_s mg_cidr_set_t;
int mg_addr_parse(const char *s, size_t n, mg_addr_t *out);
void mg_addr_from_v4(const uint8_t v4[4], mg_addr_t *out);
int mg_addr_is_v4(const mg_addr_t *a);
int mg_addr_format(const mg_addr_t *a, char *buf, size_t cap);
mg_cidr_set_t *mg_cidr_set_new(void);
int mg_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap);
int mg_cidr_set_build(mg_cidr_set_t *s);
int mg_cidr_set_contains(const mg_cidr_set_t *s, const mg_addr_t *a, unsigned *probes);
int mg_cidr_set_contains_text(const mg_cidr_set_t *s, const char *text, size_t n);
size_t mg_cidr_set_count(const mg_cidr_set_t *s);
int mg_cidr_set_range(const mg_cidr_set_t *s, size_t i, mg_addr_t *first, mg_addr_t *last);
void mg_cidr_set_free(mg_cidr_set_t *s);
]]

cdef "struct sockaddr;"
cdef "int mg_addr_from_sockaddr(const struct sockaddr *sa, mg_addr_t *out);"

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local errbuf = ffi.new("char[256]")
local addr = ffi.new("mg_addr_t")
local fmtbuf = ffi.new("char[64]")

-- A built set of the given entries; raises on a refused entry.
local function set_of(list)
    local s = ffi.gc(lib.mg_cidr_set_new(), lib.mg_cidr_set_free)
    for _, e in ipairs(list) do
        local rc = lib.mg_cidr_set_add(s, e, #e, errbuf, 256)
        assert(rc == 0, e .. ": " .. ffi.string(errbuf))
    end
    assert(lib.mg_cidr_set_build(s) == 0)
    return s
end

-- nil and the reason when the entry is refused, true when accepted
local function add(e)
    local s = lib.mg_cidr_set_new()
    local rc = lib.mg_cidr_set_add(s, e, #e, errbuf, 256)
    lib.mg_cidr_set_free(s)
    if rc ~= 0 then return nil, ffi.string(errbuf) end
    return true
end

local function has(s, text)
    local rc = lib.mg_cidr_set_contains_text(s, text, #text)
    assert(rc >= 0, text .. " is not an address")
    return rc == 1
end

local function canon(text)
    assert(lib.mg_addr_parse(text, #text, addr) == 0, text)
    local n = lib.mg_addr_format(addr, fmtbuf, 64)
    return ffi.string(fmtbuf, n)
end

local function ranges(s)
    local out, first, last = {}, ffi.new("mg_addr_t"), ffi.new("mg_addr_t")
    for i = 0, tonumber(lib.mg_cidr_set_count(s)) - 1 do
        assert(lib.mg_cidr_set_range(s, i, first, last) == 0)
        lib.mg_addr_format(first, fmtbuf, 64)
        local a = ffi.string(fmtbuf)
        lib.mg_addr_format(last, fmtbuf, 64)
        out[#out + 1] = a .. "-" .. ffi.string(fmtbuf)
    end
    return out
end

describe("mg_addr_parse", function()
    it("maps IPv4 into ::ffff:0:0/96", function()
        assert.equal("10.1.2.3", canon("::ffff:10.1.2.3"))
        assert.equal("10.1.2.3", canon("::FFFF:0a01:0203"))
        assert.equal(1, lib.mg_addr_is_v4(addr))
        assert.equal("2001:db8::1", canon("2001:0DB8:0:0::1"))
        assert.equal(0, lib.mg_addr_is_v4(addr))
    end)

    it("reads socket addresses and raw IPv4 into the same keys", function()
        local AF_INET, AF_INET6, AF_UNIX = 2, 10, 1 -- Linux
        local sa = ffi.new("uint8_t[28]")
        ffi.cast("uint16_t *", sa)[0] = AF_INET
        sa[4], sa[5], sa[6], sa[7] = 192, 0, 2, 33
        local sp = ffi.cast("const struct sockaddr *", sa)
        assert.equal(0, lib.mg_addr_from_sockaddr(sp, addr))
        assert.equal("192.0.2.33", ffi.string(fmtbuf, lib.mg_addr_format(addr, fmtbuf, 64)))
        ffi.fill(sa, 28)
        ffi.cast("uint16_t *", sa)[0] = AF_INET6
        sa[8], sa[9], sa[23] = 0x20, 0x01, 7
        assert.equal(0, lib.mg_addr_from_sockaddr(sp, addr))
        assert.equal("2001::7", ffi.string(fmtbuf, lib.mg_addr_format(addr, fmtbuf, 64)))
        ffi.cast("uint16_t *", sa)[0] = AF_UNIX
        assert.equal(-1, lib.mg_addr_from_sockaddr(sp, addr))
        lib.mg_addr_from_v4(ffi.new("uint8_t[4]", { 10, 1, 2, 3 }), addr)
        assert.equal(1, lib.mg_addr_is_v4(addr))
        assert.equal("10.1.2.3", ffi.string(fmtbuf, lib.mg_addr_format(addr, fmtbuf, 64)))
        assert.equal(-1, lib.mg_addr_format(addr, fmtbuf, 8)) -- too small: refused
    end)

    it("refuses what is not exactly one address", function()
        for _, bad in ipairs { "", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1",
                               "1.2.3.4 ", " 1.2.3.4", "1.2.3.4:80", "[::1]",
                               "fe80::1%eth0", "::1::2", "1:2:3:4:5:6:7:8:9",
                               "0x7f.0.0.1", "1.2.3.4\0", "localhost" } do
            assert.equal(-1, lib.mg_addr_parse(bad, #bad, addr), bad)
        end
    end)
end)

describe("mg_cidr_set_add", function()
    it("takes ranges and single addresses of both families", function()
        for _, ok in ipairs { "10.0.0.0/8", "1.2.3.4", "1.2.3.4/32", "0.0.0.0/0",
                              "::1", "::/0", "2001:db8::/32", "::1/128",
                              "::ffff:10.0.0.0/104" } do
            assert.is_true(add(ok), ok)
        end
    end)

    it("refuses host bits past the prefix and names the fix", function()
        local ok, why = add("10.1.2.3/8")
        assert.is_nil(ok)
        assert.matches("did you mean 10.0.0.0/8?", why, 1, true)
        ok, why = add("2001:db8::1/32")
        assert.is_nil(ok)
        assert.matches("did you mean 2001:db8::/32?", why, 1, true)
    end)

    it("refuses bad prefix lengths, saying the bound", function()
        local cases = {
            ["10.0.0.0/33"] = "at most 32", ["::/129"] = "at most 128",
            ["10.0.0.0/"] = "not a number", ["10.0.0.0/08"] = "not a number",
            ["10.0.0.0/+8"] = "not a number", ["10.0.0.0/8/8"] = "not a number",
            ["10.0.0.0/1000"] = "not a number",
        }
        for e, want in pairs(cases) do
            local ok, why = add(e)
            assert.is_nil(ok, e)
            assert.matches(want, why, 1, true)
        end
    end)

    it("refuses garbage, showing the valid forms", function()
        for _, e in ipairs { "", "/8", "ten.0.0.0/8", "10.0.0.0 /8", "10.0.0.0-10.0.0.9",
                             "*" } do
            local ok, why = add(e)
            assert.is_nil(ok, e)
            assert.matches("not an IPv4 or IPv6 address", why, 1, true)
            assert.matches("10.0.0.0/8", why, 1, true)
        end
    end)
end)

describe("a built set", function()
    it("is empty before anything is added", function()
        local s = set_of {}
        assert.equal(0, tonumber(lib.mg_cidr_set_count(s)))
        assert.is_false(has(s, "10.0.0.1"))
    end)

    it("matches /0, /32 and /128 exactly at their edges", function()
        local s = set_of { "0.0.0.0/0" }
        assert.is_true(has(s, "0.0.0.0"))
        assert.is_true(has(s, "255.255.255.255"))
        assert.is_false(has(s, "::1"))
        assert.is_false(has(s, "::fffe:ffff:ffff"))
        s = set_of { "192.0.2.7/32", "2001:db8::7/128" }
        assert.is_true(has(s, "192.0.2.7"))
        assert.is_false(has(s, "192.0.2.6"))
        assert.is_false(has(s, "192.0.2.8"))
        assert.is_true(has(s, "2001:db8::7"))
        assert.is_false(has(s, "2001:db8::6"))
        assert.is_false(has(s, "2001:db8::8"))
        s = set_of { "::/0" }
        assert.is_true(has(s, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        assert.is_true(has(s, "::"))
        assert.is_true(has(s, "10.0.0.1")) -- IPv4 is inside the mapped range
    end)

    it("matches mapped IPv6 spellings of IPv4 against IPv4 ranges", function()
        local s = set_of { "10.0.0.0/8" }
        assert.is_true(has(s, "::ffff:10.1.2.3"))
        assert.is_true(has(s, "::ffff:a01:203"))
        assert.is_false(has(s, "::10.1.2.3")) -- IPv4-compatible, deprecated: not mapped
        assert.is_false(has(s, "11.0.0.0"))
    end)

    it("merges overlapping, nested, duplicate and adjacent ranges", function()
        local s = set_of { "10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "10.0.0.0/8",
                           "192.168.0.0/24", "192.168.1.0/24", "192.168.3.0/24",
                           "192.168.3.0/24", "::1", "::2" }
        assert.same({ "::1-::2", "10.0.0.0-10.255.255.255",
                      "192.168.0.0-192.168.1.255", "192.168.3.0-192.168.3.255" },
                    ranges(s))
        assert.is_false(has(s, "192.168.2.0"))
        assert.is_true(has(s, "192.168.1.255"))
    end)

    it("merges up to the top of the key space without wrapping", function()
        local s = set_of { "ffff::/16", "ff00::/8", "::/1" }
        assert.same({ "::-7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                      "ff00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" }, ranges(s))
    end)

    it("refuses additions once built", function()
        local s = set_of { "10.0.0.0/8" }
        assert.equal(-2, lib.mg_cidr_set_add(s, "11.0.0.0/8", 10, errbuf, 256))
    end)
end)

-- The model: an entry is { bytes (16 numbers), bits }; an address is
-- inside when its first `bits` bits are the entry's.
local function inside(e, a)
    local bits = e.bits
    for i = 1, 16 do
        if bits <= 0 then return true end
        if bits >= 8 then
            if a[i] ~= e.b[i] then return false end
        else
            local m = bit.band(bit.lshift(0xff, 8 - bits), 0xff)
            return bit.band(a[i], m) == bit.band(e.b[i], m)
        end
        bits = bits - 8
    end
    return true
end

local function mask(b, bits)
    local out = {}
    for i = 1, 16 do
        local keep = math.max(0, math.min(8, bits - (i - 1) * 8))
        out[i] = bit.band(b[i], bit.band(bit.lshift(0xff, 8 - keep), 0xff))
    end
    return out
end

local function text_of(b)
    if b[11] == 0xff and b[12] == 0xff and b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7]
            + b[8] + b[9] + b[10] == 0 then
        return string.format("%d.%d.%d.%d", b[13], b[14], b[15], b[16]), true
    end
    local g = {}
    for i = 1, 16, 2 do g[#g + 1] = string.format("%x", b[i] * 256 + b[i + 1]) end
    return table.concat(g, ":"), false
end

describe("10,000 random ranges", function()
    it("answer as the brute-force model does, in logarithmic probes", function()
        math.randomseed(14)
        local entries, texts = {}, {}
        local function random_addr(v4)
            local b = {}
            for i = 1, 16 do b[i] = math.random(0, 255) end
            if v4 then
                for i = 1, 10 do b[i] = 0 end
                b[11], b[12] = 0xff, 0xff
                b[13] = math.random(0, 15) -- dense, so that ranges overlap
            else
                b[1], b[2], b[3] = 0x20, 0x01, math.random(0, 3)
            end
            return b
        end
        for i = 1, 10000 do
            local v4 = i % 3 ~= 0
            local plen = v4 and math.random(16, 32) or math.random(32, 128)
            local bits = v4 and 96 + plen or plen
            local b = mask(random_addr(v4), bits)
            entries[i] = { b = b, bits = bits }
            texts[i] = text_of(b) .. "/" .. plen
        end
        local s = set_of(texts)
        local n = tonumber(lib.mg_cidr_set_count(s))
        assert.is_true(n > 0 and n < 10000)
        local bound = math.ceil(math.log(n) / math.log(2)) + 1
        local probes = ffi.new("unsigned[1]")
        local worst, hits = 0, 0
        for q = 1, 1000 do
            local a
            if q % 2 == 0 then -- near an entry: same prefix, random rest
                local e = entries[math.random(1, #entries)]
                a = random_addr(mask(e.b, 128)[11] == 0xff)
                for i = 1, 16 do
                    local keep = math.max(0, math.min(8, e.bits - (i - 1) * 8))
                    local m = bit.band(bit.lshift(0xff, 8 - keep), 0xff)
                    a[i] = bit.bor(bit.band(e.b[i], m), bit.band(a[i], bit.bnot(m), 0xff))
                end
            else
                a = random_addr(q % 3 ~= 0)
            end
            local want = false
            for i = 1, #entries do
                if inside(entries[i], a) then want = true break end
            end
            for i = 1, 16 do addr.b[i - 1] = a[i] end
            local got = lib.mg_cidr_set_contains(s, addr, probes) == 1
            assert(got == want, text_of(a) .. ": set says " .. tostring(got))
            if got then hits = hits + 1 end
            worst = math.max(worst, probes[0])
        end
        assert.is_true(hits > 100 and hits < 900, "hits " .. hits) -- both answers tested
        if os.getenv("MG_CIDR_REPORT") then
            print(("%d ranges after merging, worst %d probes (bound %d), %d hits of 1000")
                  :format(n, worst, bound, hits))
        end
        assert.is_true(worst <= bound, "worst " .. worst .. " probes > " .. bound)
    end)
end)

describe("the declarations of this spec", function()
    it("are spelled as in src/cidr.h", function()
        assert.same({}, decl.missing { "src/cidr.h" })
    end)
end)
