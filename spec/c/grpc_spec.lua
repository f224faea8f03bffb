-- spec/c/grpc_spec.lua: src/grpc.c through the FFI: which requests are
-- gRPC, the service and method of a path, grpc-timeout, the one table of
-- gRPC statuses for the gateway's own answers, grpc-message's encoding.
local ffi = require "ffi"
local decl = require("spec.support.cdecl").new()

decl.cdef [[
int mg_grpc_content_type(const char *v, size_t len);
int mg_grpc_path_split(const char *path, size_t len, const char **service, size_t *service_len,
                       const char **method, size_t *method_len);
int64_t mg_grpc_timeout_ms(const char *v, size_t len);
int mg_grpc_status_of_http(int http_status);
const char *mg_grpc_status_name(int code);
size_t mg_grpc_message_encode(const char *msg, size_t len, char *out, size_t cap);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local function split(p)
    local s, sl = ffi.new("const char *[1]"), ffi.new("size_t[1]")
    local m, ml = ffi.new("const char *[1]"), ffi.new("size_t[1]")
    if lib.mg_grpc_path_split(p, #p, s, sl, m, ml) == 0 then
        return nil
    end
    return ffi.string(s[0], sl[0]), ffi.string(m[0], ml[0])
end

local function timeout(v)
    return tonumber(lib.mg_grpc_timeout_ms(v, #v))
end

local function encode(s, cap)
    cap = cap or #s * 3
    local out = ffi.new("char[?]", cap + 1)
    local n = lib.mg_grpc_message_encode(s, #s, out, cap)
    return ffi.string(out, n)
end

describe("grpc.c", function()
    it("declares what src/grpc.h says", function()
        assert.same({}, decl.missing { "src/grpc.h" })
    end)

    it("knows gRPC content types", function()
        for _, v in ipairs { "application/grpc", "application/grpc+proto",
                             "application/grpc+json", "Application/GRPC",
                             "application/grpc;charset=utf-8" } do
            assert.equal(1, lib.mg_grpc_content_type(v, #v), v)
        end
        for _, v in ipairs { "application/grpc-web", "application/grpcx",
                             "application/json", "application/grp", "",
                             "text/application/grpc" } do
            assert.equal(0, lib.mg_grpc_content_type(v, #v), v)
        end
    end)

    it("splits /package.Service/Method", function()
        assert.same({ "helloworld.Greeter", "SayHello" },
                    { split("/helloworld.Greeter/SayHello") })
        assert.same({ "S", "M" }, { split("/S/M") })
        for _, p in ipairs { "/", "//M", "/S/", "/S", "S/M", "/S/M/x", "/S//M",
                             "/S/M?x=1", "" } do
            assert.is_nil(split(p), p)
        end
    end)

    it("reads grpc-timeout in every unit, rounding up to ms", function()
        assert.equal(2 * 3600000, timeout("2H"))
        assert.equal(3 * 60000, timeout("3M"))
        assert.equal(5000, timeout("5S"))
        assert.equal(250, timeout("250m"))
        assert.equal(2, timeout("1500u"))
        assert.equal(1, timeout("1u"))
        assert.equal(1, timeout("1n"))
        assert.equal(0, timeout("0m"))
        assert.equal(99999999 * 3600000, timeout("99999999H"))
        for _, v in ipairs { "", "S", "10", "10s", "123456789S", "-1S", "1.5S", " 1S",
                             "1 S" } do
            assert.equal(-1, timeout(v), v)
        end
    end)

    it("maps the gateway's own answers to gRPC statuses in one table", function()
        local want = { [200] = 0, [204] = 0, [400] = 13, [401] = 16, [403] = 7, [404] = 12,
                       [405] = 12, [408] = 4, [413] = 8, [429] = 8, [500] = 13,
                       [502] = 14, [503] = 14, [504] = 4, [418] = 2, [599] = 2 }
        for http, grpc in pairs(want) do
            assert.equal(grpc, lib.mg_grpc_status_of_http(http), http)
        end
        assert.equal("UNAVAILABLE", ffi.string(lib.mg_grpc_status_name(14)))
        assert.equal("UNAUTHENTICATED", ffi.string(lib.mg_grpc_status_name(16)))
        assert.equal("UNKNOWN", ffi.string(lib.mg_grpc_status_name(17)))
        assert.equal("UNKNOWN", ffi.string(lib.mg_grpc_status_name(-1)))
    end)

    it("percent-encodes grpc-message, never cutting an escape", function()
        assert.equal("no route", encode("no route"))
        assert.equal("100%25 caf%C3%A9%0A", encode("100% caf\195\169\n"))
        assert.equal("ab", encode("ab%", 4))
        assert.equal("ab%25", encode("ab%", 5))
    end)
end)
