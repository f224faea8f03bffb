-- spec/c/trace_spec.lua: W3C traceparent parsing (src/trace.c) through the
-- FFI, and the testing kit's mirror of it (moongate.testing.fake) on the
-- same values.
local ffi = require "ffi"
local fake = require "moongate.testing.fake"

ffi.cdef [[
int mg_trace_parse(const char *v, size_t n, char trace_id[32], char parent_id[16],
                   char flags[2]);
uint64_t mg_trace_ratio_threshold(double p);
int mg_trace_ratio_sampled(const char trace_id[32], uint64_t threshold);
void mg_trace_random_hex(uint64_t *rng, char *out, size_t n);
void mg_hex16(uint64_t x, char out[16]);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local TID = "4bf92f3577b34da6a3ce929d0e0e4736"
local PID = "00f067aa0ba902b7"

local function parse(v)
    local tid, pid, flags = ffi.new("char[32]"), ffi.new("char[16]"), ffi.new("char[2]")
    if lib.mg_trace_parse(v, #v, tid, pid, flags) ~= 0 then return nil end
    return ffi.string(tid, 32), ffi.string(flags, 2), ffi.string(pid, 16)
end

describe("traceparent", function()
    local good = {
        { "00-" .. TID .. "-" .. PID .. "-01", "01" },
        { "00-" .. TID .. "-" .. PID .. "-00", "00" },
        { "00-" .. TID .. "-" .. PID .. "-03", "01" },  -- unknown flag bits dropped
        { "00-" .. TID .. "-" .. PID .. "-01 ", "01" }, -- trailing blanks
        { "01-" .. TID .. "-" .. PID .. "-01", "01" },  -- a later version...
        { "cc-" .. TID .. "-" .. PID .. "-01-what-ever", "01" }, -- ...may add fields
    }
    local bad = {
        "", "00", "00-" .. TID .. "-" .. PID,
        "00-" .. TID:upper() .. "-" .. PID .. "-01",            -- upper case
        "00-" .. string.rep("0", 32) .. "-" .. PID .. "-01",    -- zero trace id
        "00-" .. TID .. "-" .. string.rep("0", 16) .. "-01",    -- zero parent id
        "ff-" .. TID .. "-" .. PID .. "-01",                    -- forbidden version
        "00-" .. TID .. "-" .. PID .. "-01-x",                  -- 00 has no more fields
        "01-" .. TID .. "-" .. PID .. "-01x",                   -- fields follow a '-'
        "00-" .. TID:sub(2) .. "-" .. PID .. "0-01",            -- misplaced dash
        "0g-" .. TID .. "-" .. PID .. "-01",
        "00-" .. TID .. "-" .. PID .. "-0z",
    }

    it("continues a valid one: its trace id, only the sampled flag", function()
        for _, c in ipairs(good) do
            local tid, flags, pid = parse(c[1])
            assert.equal(TID, tid, c[1])
            assert.equal(c[2], flags, c[1])
            assert.equal(PID, pid, c[1]) -- the parent's span id (tracing: parentSpanId)
            local ftid, fflags = fake.parse_traceparent((c[1]:gsub("%s+$", "")))
            assert.equal(TID, ftid, "fake: " .. c[1])
            assert.equal(c[2], fflags, "fake: " .. c[1])
        end
    end)

    it("refuses what a receiver may not continue", function()
        for _, v in ipairs(bad) do
            assert.is_nil(parse(v), v)
            assert.is_nil(fake.parse_traceparent(v), "fake: " .. v)
        end
    end)

    it("makes random lower-case hex ids, never all zero", function()
        local rng = ffi.new("uint64_t[1]", 0)
        local out = ffi.new("char[32]")
        local seen = {}
        for _ = 1, 1000 do
            lib.mg_trace_random_hex(rng, out, 32)
            local s = ffi.string(out, 32)
            assert.truthy(s:match("^[0-9a-f]+$"))
            assert.is_nil(seen[s])
            seen[s] = true
        end
        lib.mg_trace_random_hex(rng, out, 16)
        assert.truthy(ffi.string(out, 16):match("^[0-9a-f]+$"))
    end)
end)

describe("ratio sampling by trace id", function()
    -- the 56 low bits (14 last hex digits) against (1 - p) * 2^56
    local function sampled(tid, p)
        return lib.mg_trace_ratio_sampled(tid, lib.mg_trace_ratio_threshold(p)) == 1
    end

    it("keeps all at 1, none at 0, and decides by the id's random part only", function()
        local low = string.rep("f", 18) .. string.rep("0", 13) .. "1"
        local high = string.rep("0", 18) .. string.rep("f", 14)
        assert.is_true(sampled(low, 1))
        assert.is_false(sampled(high, 0))
        assert.is_false(sampled(low, 0.5))  -- its first 18 digits do not count
        assert.is_true(sampled(high, 0.5))
        assert.is_true(sampled(string.rep("0", 18) .. "80000000000000", 0.5)) -- at the bound
        assert.is_false(sampled(string.rep("0", 18) .. "7fffffffffffff", 0.5))
    end)

    it("keeps about p of random ids", function()
        local rng = ffi.new("uint64_t[1]", 12345)
        local out = ffi.new("char[32]")
        for _, p in ipairs({ 0.01, 0.1, 0.5, 0.9 }) do
            local n, kept = 20000, 0
            local th = lib.mg_trace_ratio_threshold(p)
            for _ = 1, n do
                lib.mg_trace_random_hex(rng, out, 32)
                if lib.mg_trace_ratio_sampled(out, th) == 1 then kept = kept + 1 end
            end
            -- binomial: 5 standard deviations
            local sd = math.sqrt(n * p * (1 - p))
            assert.is_true(math.abs(kept - n * p) < 5 * sd, p .. ": " .. kept)
        end
    end)
end)

describe("mg_hex16", function()
    it("writes %016x, for the request ids' counter and the trace ids", function()
        local out = ffi.new("char[16]")
        local x = ffi.new("uint64_t", 0x9e3779b97f4a7c15ULL)
        for _, v in ipairs({ 0ULL, 1ULL, 9ULL, 10ULL, 15ULL, 16ULL, 0xabcdef0123456789ULL,
                             0xffffffffffffffffULL, 0x8000000000000000ULL }) do
            lib.mg_hex16(v, out)
            assert.equal(bit.tohex(v, 16), ffi.string(out, 16))
        end
        for _ = 1, 2000 do -- and a walk over many more values
            x = x * 6364136223846793005ULL + 1442695040888963407ULL
            lib.mg_hex16(x, out)
            assert.equal(bit.tohex(x, 16), ffi.string(out, 16))
        end
    end)
end)
