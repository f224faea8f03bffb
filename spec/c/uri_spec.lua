-- spec/c/uri_spec.lua: mg_uri_normalize_path, mg_uri_escaped_slashes and
-- mg_uri_valid_host (src/uri.c) through the FFI.
-- The normaliser is a security boundary: every case below that returns nil is
-- a path the gateway must answer with 400 instead of routing.
local ffi = require "ffi"

-- one declaration per cdef: another spec may have declared it already
local function cdef(decl)
    local ok, err = pcall(ffi.cdef, decl)
    if not ok and not tostring(err):find("redefine", 1, true) then
        error(err, 2)
    end
end

-- mirrors src/uri.h exactly (checked below)
local DECL = [[
int mg_uri_normalize_path(const char *in, size_t len, char *out, size_t *out_len, int flags);]]
local DECLS = { DECL,
    "int mg_uri_escaped_slashes(const char *path, size_t len);",
    "int mg_uri_slashes_mode(const char *name);",
    "int mg_uri_valid_host(const char *s, size_t n);" }
for _, d in ipairs(DECLS) do cdef(d) end
local DECODE, ESCAPED, NESTED = 1, 1, 2 -- MG_URI_DECODE_SLASHES, MG_URI_*_SLASH

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local out_len = ffi.new("size_t[1]")

-- Returns the normalised path, or nil when the C side rejects it.
local function norm(s, flags)
    local out = ffi.new("char[?]", #s + 1) -- the documented capacity
    if lib.mg_uri_normalize_path(s, #s, out, out_len, flags or 0) ~= 0 then
        return nil
    end
    local n = tonumber(out_len[0])
    assert(n <= #s, "output longer than input")
    assert(out[n] == 0, "output not NUL-terminated")
    return ffi.string(out, n)
end

describe("mg_uri_normalize_path", function()
    it("is declared as in src/uri.h", function()
        local f = assert(io.open("src/uri.h"))
        local h = f:read("*a"):gsub("%s+", " ")
        f:close()
        for _, d in ipairs(DECLS) do
            assert.truthy(h:find((d:gsub("%s+", " ")), 1, true), d)
        end
    end)

    describe("plain paths", function()
        it("keeps the root", function()
            assert.equal("/", norm("/"))
        end)

        it("keeps a clean path unchanged", function()
            assert.equal("/orders/42/items", norm("/orders/42/items"))
        end)

        it("keeps a trailing slash", function()
            assert.equal("/orders/", norm("/orders/"))
        end)

        it("keeps sub-delims and ':' '@' in segments", function()
            assert.equal("/a:b@c!$&'()*+,;=", norm("/a:b@c!$&'()*+,;="))
        end)

        it("keeps segments that only look like dots", function()
            assert.equal("/.../.a/a./..a/a..", norm("/.../.a/a./..a/a.."))
        end)
    end)

    describe("slashes", function()
        it("collapses a leading double slash (//admin)", function()
            assert.equal("/admin", norm("//admin"))
        end)

        it("collapses runs of slashes inside the path", function()
            assert.equal("/a/b/c", norm("/a//b///c"))
        end)

        it("collapses a trailing run of slashes to one", function()
            assert.equal("/a/", norm("/a///"))
        end)

        it("collapses a path of only slashes to the root", function()
            assert.equal("/", norm("////"))
        end)
    end)

    describe("dot segments", function()
        it("removes a '.' segment", function()
            assert.equal("/a/b", norm("/a/./b"))
        end)

        it("turns a final '.' into a trailing slash", function()
            assert.equal("/a/", norm("/a/."))
        end)

        it("removes a '.' at the root", function()
            assert.equal("/", norm("/."))
        end)

        it("removes consecutive '.' segments", function()
            assert.equal("/a", norm("/././a"))
        end)

        it("lets '..' remove the previous segment", function()
            assert.equal("/b", norm("/a/../b"))
        end)

        it("resolves /public/../admin to /admin", function()
            assert.equal("/admin", norm("/public/../admin"))
        end)

        it("turns a final '..' into a trailing slash of the parent", function()
            assert.equal("/a/", norm("/a/b/.."))
        end)

        it("resolves a final '..' below the root to the root", function()
            assert.equal("/", norm("/a/.."))
        end)

        it("resolves several '..' in a row", function()
            assert.equal("/x", norm("/a/b/c/../../../x"))
        end)

        it("collapses slashes before resolving '..'", function()
            assert.equal("/b", norm("/a//../b"))
        end)

        it("rejects '..' at the root", function()
            assert.is_nil(norm("/.."))
        end)

        it("rejects '..' escaping the root (/../admin)", function()
            assert.is_nil(norm("/../admin"))
        end)

        it("rejects '..' escaping the root after collapsing (//..)", function()
            assert.is_nil(norm("//.."))
        end)

        it("rejects '..' escaping the root deeper in the path", function()
            assert.is_nil(norm("/a/b/../../../etc/passwd"))
        end)
    end)

    describe("encoded dots", function()
        it("treats lower-case %2e%2e as '..'", function()
            assert.equal("/admin", norm("/x/%2e%2e/admin"))
        end)

        it("treats upper-case %2E%2E as '..'", function()
            assert.equal("/admin", norm("/x/%2E%2E/admin"))
        end)

        it("treats mixed .%2E as '..'", function()
            assert.equal("/admin", norm("/x/.%2E/admin"))
        end)

        it("treats %2e as '.'", function()
            assert.equal("/admin", norm("/%2e/admin"))
        end)

        it("rejects an encoded '..' escaping the root (/%2e%2e/)", function()
            assert.is_nil(norm("/%2e%2e/admin"))
        end)

        it("rejects an upper-case encoded '..' escaping the root", function()
            assert.is_nil(norm("/%2E%2E/admin"))
        end)

        it("does not double-decode %252e (lower case)", function()
            assert.equal("/%252e%252e/admin", norm("/%252e%252e/admin"))
        end)

        it("does not double-decode %252E (upper case)", function()
            assert.equal("/%252E%252E/admin", norm("/%252E%252E/admin"))
        end)
    end)

    describe("encoded slashes", function()
        it("keeps ..%2f inside its segment (/admin/..%2f)", function()
            assert.equal("/admin/..%2F", norm("/admin/..%2f"))
        end)

        it("never splits a segment at %2F", function()
            assert.equal("/a%2F..%2Fb", norm("/a%2f..%2fb"))
        end)

        it("keeps %5C (encoded backslash) encoded", function()
            assert.equal("/a%5C..", norm("/a%5c.."))
        end)
    end)

    describe("percent-escapes", function()
        it("decodes an escaped letter (%41 -> A)", function()
            assert.equal("/A", norm("/%41"))
        end)

        it("decodes escaped letters and digits", function()
            assert.equal("/abc019", norm("/%61%62%63%30%31%39"))
        end)

        it("decodes the unreserved marks - _ ~", function()
            assert.equal("/-_~", norm("/%2D%5f%7E"))
        end)

        it("keeps %2F encoded", function()
            assert.equal("/a%2Fb", norm("/a%2Fb"))
        end)

        it("upper-cases the hex digits of a kept escape", function()
            assert.equal("/a%2Fb%3A", norm("/a%2fb%3a"))
        end)

        it("keeps %25 encoded", function()
            assert.equal("/100%25", norm("/100%25"))
        end)

        it("keeps %00 encoded", function()
            assert.equal("/a%00b", norm("/a%00b"))
        end)

        it("keeps an encoded space", function()
            assert.equal("/a%20b", norm("/a%20b"))
        end)

        it("keeps encoded UTF-8, upper-cased", function()
            assert.equal("/%E2%82%AC", norm("/%e2%82%ac"))
        end)

        it("keeps %7F and %FF encoded", function()
            assert.equal("/%7F%FF", norm("/%7f%ff"))
        end)

        it("keeps an encoded '?' and '#'", function()
            assert.equal("/%3F%23", norm("/%3f%23"))
        end)

        it("rejects a '%' at the end", function()
            assert.is_nil(norm("/a%"))
        end)

        it("rejects a '%' with one hex digit at the end", function()
            assert.is_nil(norm("/a%4"))
        end)

        it("rejects a non-hex first digit (%G1)", function()
            assert.is_nil(norm("/%G1"))
        end)

        it("rejects a non-hex second digit (%4G)", function()
            assert.is_nil(norm("/%4G"))
        end)

        it("rejects an escape cut by a slash (%2/)", function()
            assert.is_nil(norm("/%2/a"))
        end)
    end)

    describe("rejected bytes", function()
        it("rejects a raw NUL", function()
            assert.is_nil(norm("/a\0b"))
        end)

        it("rejects a control byte", function()
            assert.is_nil(norm("/a\tb"))
        end)

        it("rejects DEL", function()
            assert.is_nil(norm("/a\127b"))
        end)

        it("rejects a raw byte >= 0x80", function()
            assert.is_nil(norm("/caf\195\169"))
        end)

        it("rejects a backslash", function()
            assert.is_nil(norm("/a\\b"))
        end)

        it("rejects a backslash dot-dot trick (/..\\admin)", function()
            assert.is_nil(norm("/public/..\\admin"))
        end)
    end)

    describe("the input's first byte", function()
        it("rejects an empty path", function()
            assert.is_nil(norm(""))
        end)

        it("rejects a path without a leading '/'", function()
            assert.is_nil(norm("admin/x"))
        end)

        it("rejects the asterisk form", function()
            assert.is_nil(norm("*"))
        end)
    end)

    describe("output", function()
        it("is idempotent", function()
            local once = norm("/a//./b/%2e%2E/c%2f%7e%41/")
            assert.equal("/a/c%2F~A/", once)
            assert.equal(once, norm(once))
        end)

        it("writes no more than len + 1 bytes", function()
            local s = "/a/b"
            local buf = ffi.new("uint8_t[16]")
            ffi.fill(buf, 16, 0xAA)
            assert.equal(0, lib.mg_uri_normalize_path(s, #s, ffi.cast("char *", buf),
                                                      out_len, 0))
            assert.equal(4, tonumber(out_len[0]))
            assert.equal(0, buf[4])
            for i = 5, 15 do
                assert.equal(0xAA, buf[i])
            end
        end)
    end)
end)

describe("mg_uri_normalize_path with MG_URI_DECODE_SLASHES", function()
    it("makes %2F and %5C separators, any case", function()
        assert.equal("/a/b/c/d", norm("/a%2Fb%2fc%5Cd", DECODE))
        assert.equal("/a/b", norm("/a%5cb", DECODE))
    end)

    it("resolves dot segments they delimit", function()
        assert.equal("/secure/x", norm("/public/..%2Fsecure/x", DECODE))
        assert.equal("/b", norm("/a%2F.%2F..%2Fb", DECODE))
        assert.is_nil(norm("/a/..%2F..%2Fx", DECODE))
        assert.is_nil(norm("/..%5Cx", DECODE))
    end)

    it("collapses runs of them", function()
        assert.equal("/a/b", norm("/a%2F%2F/%5Cb", DECODE))
        assert.equal("/", norm("/%2F", DECODE))
    end)

    it("decodes once: %252F stays", function()
        assert.equal("/a%252Fb", norm("/a%252Fb", DECODE))
    end)

    it("still rejects a raw backslash", function()
        assert.is_nil(norm("/a\\b", DECODE))
    end)
end)

describe("fragments", function()
    it("rejects a '#' in the path", function()
        assert.is_nil(norm("/secure#x"))
        assert.is_nil(norm("/a/#/../b"))
        assert.equal("/a%23b", norm("/a%23b"))
    end)
end)

describe("dot segments with a path parameter", function()
    it("rejects ..;x and .;x segments", function()
        assert.is_nil(norm("/a/..;/b"))
        assert.is_nil(norm("/a/..;x/b"))
        assert.is_nil(norm("/a/.;x"))
        assert.is_nil(norm("/a/%2e%2e;/b"))
    end)

    it("keeps segments that only start with dots", function()
        assert.equal("/a/..a;b/...;c", norm("/a/..a;b/...;c"))
        assert.equal("/a/b;..", norm("/a/b;.."))
    end)
end)

describe("mg_uri_escaped_slashes", function()
    local function kinds(p)
        return lib.mg_uri_escaped_slashes(p, #p)
    end

    it("is 0 without escapes of a slash", function()
        assert.equal(0, kinds("/a/b"))
        assert.equal(0, kinds("/a%20b%3F"))
        assert.equal(0, kinds("/a%2525"))
        assert.equal(0, kinds("/a%25"))
    end)

    it("finds %2F and %5C in any case", function()
        for _, p in ipairs({ "/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/%2F" }) do
            assert.equal(ESCAPED, kinds(p), p)
        end
    end)

    it("finds nested encodings", function()
        for _, p in ipairs({ "/a%252Fb", "/a%252fb", "/a%255C", "/a%25252F", "/%2525252f" }) do
            assert.equal(NESTED, kinds(p), p)
        end
    end)

    it("finds overlong UTF-8 forms of / and \\ (as nested)", function()
        for _, p in ipairs({ "/a%C0%AFb", "/a%C1%9C", "/%E0%80%AF", "/%E0%81%9C",
                             "/%F0%80%80%AF", "/%F0%80%81%9C", norm("/a%c0%afb") }) do
            assert.equal(NESTED, kinds(p), p)
        end
        assert.equal(0, kinds("/%C0%A0%C3%A9%E0%80"))
    end)

    it("finds nested encodings pieced together by normalisation", function()
        local p = norm("/a%25%32%46b")
        assert.equal("/a%252Fb", p)
        assert.equal(NESTED, kinds(p))
    end)

    it("reports both", function()
        assert.equal(ESCAPED + NESTED, kinds("/a%2F%252F"))
    end)
end)

describe("mg_uri_slashes_mode", function()
    it("knows the four names and nothing else", function()
        assert.equal(1, lib.mg_uri_slashes_mode("reject"))
        assert.equal(2, lib.mg_uri_slashes_mode("decode"))
        assert.equal(3, lib.mg_uri_slashes_mode("redirect"))
        assert.equal(4, lib.mg_uri_slashes_mode("keep"))
        assert.equal(-1, lib.mg_uri_slashes_mode("Reject"))
        assert.equal(-1, lib.mg_uri_slashes_mode(""))
    end)
end)

describe("mg_uri_valid_host", function()
    local function valid(s)
        return lib.mg_uri_valid_host(s, #s) == 1
    end

    it("accepts reg-names, IPv4, IP literals and ports", function()
        for _, s in ipairs({ "", "a", "example.com", "example.com.", "a-b_c~d", "a%41",
                             "a!$&'()*+,;=", "1.2.3.4", "1.2.3.4:80", "a:", "a:0",
                             "a:65535", "[::1]", "[::1]:443", "[2001:db8::1]",
                             "[::ffff:1.2.3.4]", "[v7.a:b]", "[V1A.x]" }) do
            assert.is_true(valid(s), s)
        end
    end)

    it("refuses everything else", function()
        for _, s in ipairs({ " ", "a b", "a/b", "a@b", "a?b", "a#b", "a\"b", "a\\b", "a<b",
                             "a%4", "a%zz", "a:b", "a:65536", "a:000001", "a:1:2",
                             "[::1", "::1", "[::1]]", "[::1]x", "[]", "[g::]", "[v.x]",
                             "[v1.]", "[v1]", "a\0b", "\127", "\200" }) do
            assert.is_false(valid(s), s)
        end
    end)

    -- spec/fuzz/corpus/uri/crash-host-nul-in-ip-literal
    it("refuses a NUL inside an IP literal", function()
        for _, s in ipairs({ "[::\0]", "[::1\0junk]:80", "[::\0]:" }) do
            assert.is_false(valid(s), s)
        end
    end)
end)
