-- spec/c/ratelimit_spec.lua: the rate-limit algorithms of src/shdict.c
-- (mg_ffi_shdict_gcra, mg_ffi_shdict_sliding) through the FFI, on a clock
-- the tests drive (`now`, milliseconds).
local ffi = require "ffi"
require "moongate.ratelimit"    -- declares mg_rl_result_t and the functions
local shared = require "moongate.shared"

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local EINVAL = -22

local seq = 0

-- A fresh dictionary: its C pointer and its Lua object.
local function new_dict()
    seq = seq + 1
    local name = "rlspec" .. seq
    local d = lib.mg_ffi_shdict_open(name, #name, 1024 * 1024)
    assert(d ~= nil)
    return d, assert(shared.get(name))
end

local out = ffi.new("mg_rl_result_t")

local function result(rc)
    return rc, out.remaining, out.reset, out.retry_after
end

-- GCRA of `rate` per `per_ms` with `burst`, key `key` in d
local function gcra(d, key, rate, per_ms, burst, now, cost)
    return result(lib.mg_ffi_shdict_gcra(d, "g:", 2, key, #key, per_ms / rate,
                                         burst, cost or 1, now, out))
end

local function sliding(d, key, limit, window, now, cost)
    return result(lib.mg_ffi_shdict_sliding(d, "s:", 2, key, #key, limit, window,
                                            cost or 1, now, out))
end

describe("gcra", function()
    local d
    before_each(function() d = new_dict() end)

    it("admits the burst at once, counting down remaining", function()
        for i = 1, 5 do
            local rc, remaining, reset, retry = gcra(d, "k", 10, 1000, 5, 1000)
            assert.same({ 1, 5 - i, i * 100, 0 }, { rc, remaining, reset, retry })
        end
    end)

    it("then refuses, saying when one more token comes", function()
        for _ = 1, 5 do gcra(d, "k", 10, 1000, 5, 1000) end
        local rc, remaining, reset, retry = gcra(d, "k", 10, 1000, 5, 1000)
        assert.same({ 0, 0, 500, 100 }, { rc, remaining, reset, retry })
        assert.equal(0, (gcra(d, "k", 10, 1000, 5, 1099.9)))
        assert.equal(1, (gcra(d, "k", 10, 1000, 5, 1100)))
        assert.equal(0, (gcra(d, "k", 10, 1000, 5, 1100)))
    end)

    it("refills at the rate, up to the burst", function()
        for _ = 1, 5 do gcra(d, "k", 10, 1000, 5, 0) end
        local rc, remaining = gcra(d, "k", 10, 1000, 5, 250)  -- 2.5 tokens back
        assert.same({ 1, 1 }, { rc, remaining })
        rc, remaining = gcra(d, "k", 10, 1000, 5, 60000)      -- long idle: full
        assert.same({ 1, 4 }, { rc, remaining })
    end)

    it("refused requests do not count", function()
        gcra(d, "k", 1, 1000, 1, 0)
        for t = 1, 999 do
            assert.equal(0, (gcra(d, "k", 1, 1000, 1, t)))
        end
        assert.equal(1, (gcra(d, "k", 1, 1000, 1, 1000)))
    end)

    it("admits exactly rate x time at a steady overload", function()
        local n = 0
        for t = 0, 9999 do  -- 1,000/s for 10 s against 3/s, burst 1
            if gcra(d, "k", 3, 1000, 1, t) == 1 then n = n + 1 end
        end
        assert.equal(30, n)
    end)

    it("weighs requests by cost; cost 0 only looks", function()
        local rc, remaining = gcra(d, "k", 10, 1000, 10, 0, 4)
        assert.same({ 1, 6 }, { rc, remaining })
        rc, remaining = gcra(d, "k", 10, 1000, 10, 0, 0)
        assert.same({ 1, 6 }, { rc, remaining })
        rc, remaining = gcra(d, "k", 10, 1000, 10, 0, 7)
        assert.same({ 0, 6 }, { rc, remaining })
        assert.equal(EINVAL, (gcra(d, "k", 10, 1000, 10, 0, 11)))
    end)

    it("rejects bad parameters", function()
        assert.equal(EINVAL, (gcra(d, "k", 10, 0, 5, 0)))       -- interval 0
        assert.equal(EINVAL, (gcra(d, "k", 10, 1000, 0, 0)))    -- burst 0
        assert.equal(EINVAL, (gcra(d, "k", 10, 0 / 0, 5, 0)))   -- NaN
    end)
end)

describe("sliding window", function()
    local d
    before_each(function() d = new_dict() end)

    it("admits the limit in a fresh window; the window starts with the key",
       function()
        for i = 1, 10 do
            local rc, remaining, reset = sliding(d, "k", 10, 1000, 123)
            assert.same({ 1, 10 - i, 1000 }, { rc, remaining, reset })
        end
        local rc, remaining, reset, retry = sliding(d, "k", 10, 1000, 623)
        assert.same({ 0, 0, 500 }, { rc, remaining, reset })
        -- the next window starts at 1123: 10 * (1 - f) + 1 <= 10 from f = 0.1
        assert.equal(600, retry)
    end)

    it("weighs the previous window by the share still inside", function()
        for _ = 1, 10 do sliding(d, "k", 10, 1000, 0) end
        local rc, _, _, retry = sliding(d, "k", 10, 1000, 1000)
        assert.same({ 0, 100 }, { rc, retry })       -- 10 * 0.9 + 1 <= 10 at 1100
        rc = sliding(d, "k", 10, 1000, 1100)
        assert.equal(1, rc)
        rc, _, _, retry = sliding(d, "k", 10, 1000, 1100)
        assert.same({ 0, 100 }, { rc, retry })       -- 10 * 0.8 + 1 + 1 at 1200
        local n = 0
        for _ = 1, 10 do
            if sliding(d, "k", 10, 1000, 1500) == 1 then n = n + 1 end
        end
        assert.equal(4, n)                            -- 5 + 1 + 4 = 10
    end)

    it("counts admitted requests only", function()
        sliding(d, "k", 2, 1000, 0)
        sliding(d, "k", 2, 1000, 0)
        for t = 1, 999 do assert.equal(0, (sliding(d, "k", 2, 1000, t))) end
        assert.equal(1, (sliding(d, "k", 2, 1000, 1500)))  -- 2 * 0.5 + 0 + 1
    end)

    it("starts afresh after two idle windows", function()
        for _ = 1, 10 do sliding(d, "k", 10, 1000, 0) end
        local rc, remaining, reset = sliding(d, "k", 10, 1000, 2000)
        assert.same({ 1, 9, 1000 }, { rc, remaining, reset })
    end)

    it("admits close to limit x time at a steady overload", function()
        local n = 0
        for t = 0, 4999 do  -- 1,000/s for 5 s against 100/s
            if sliding(d, "k", 100, 1000, t) == 1 then n = n + 1 end
        end
        assert.is_true(n >= 490 and n <= 500, "admitted " .. n)
    end)

    it("a refused request learns when it would pass", function()
        local t = 0
        for _ = 1, 100 do sliding(d, "k", 5, 1000, t) ; t = t + 7 end
        local rc, _, _, retry = sliding(d, "k", 5, 1000, t)
        assert.equal(0, rc)
        assert.equal(0, (sliding(d, "k", 5, 1000, t + retry - 0.01)))
        assert.equal(1, (sliding(d, "k", 5, 1000, t + retry)))
    end)

    it("rejects bad parameters", function()
        assert.equal(EINVAL, (sliding(d, "k", 0, 1000, 0)))
        assert.equal(EINVAL, (sliding(d, "k", 10, 0, 0)))
        assert.equal(EINVAL, (sliding(d, "k", 10, 1000, 0, 11)))
    end)
end)

describe("rate-limit state in the dictionary", function()
    it("is kept per namespace and key", function()
        local d = new_dict()
        local o = ffi.new("mg_rl_result_t")
        assert.equal(1, lib.mg_ffi_shdict_sliding(d, "a:", 2, "k", 1, 1, 1000, 1, 0, o))
        assert.equal(0, lib.mg_ffi_shdict_sliding(d, "a:", 2, "k", 1, 1, 1000, 1, 0, o))
        assert.equal(1, lib.mg_ffi_shdict_sliding(d, "b:", 2, "k", 1, 1, 1000, 1, 0, o))
        assert.equal(1, lib.mg_ffi_shdict_sliding(d, "a:", 2, "j", 1, 1, 1000, 1, 0, o))
    end)

    it("lives under namespace .. key, and replaces a value of another shape", function()
        local d, dict = new_dict()
        assert.is_true(dict:set("s:k", "a user value"))
        assert.equal(1, (sliding(d, "k", 1, 1000, 0)))
        assert.equal(24, #dict:get("s:k"))   -- start, previous, current
        assert.equal(1, (gcra(d, "n", 1, 1000, 1, 0)))
        assert.equal(1000, dict:get("g:n"))  -- the theoretical arrival time
    end)

    it("takes long keys, refuses empty and too long ones", function()
        local d = new_dict()
        local long = string.rep("x", 5000)
        assert.equal(1, (sliding(d, long, 1, 1000, 0)))
        assert.equal(0, (sliding(d, long, 1, 1000, 0)))
        local o = ffi.new("mg_rl_result_t")
        assert.equal(EINVAL, lib.mg_ffi_shdict_gcra(d, "", 0, "", 0, 1, 1, 1, 0, o))
        local huge = string.rep("y", 65535)
        assert.equal(EINVAL, (sliding(d, huge, 1, 1000, 0)))
    end)

    it("uses the monotonic clock when now is negative", function()
        local d = new_dict()
        local rc, remaining, reset = sliding(d, "k", 3, 1000, -1)
        assert.same({ 1, 2 }, { rc, remaining })
        assert.is_true(reset > 999 and reset <= 1000)
    end)

    it("mg_ffi_shdict_open finds a dictionary or makes one", function()
        local a = lib.mg_ffi_shdict_open("rlspec-open", 11, 65536)
        local b = lib.mg_ffi_shdict_open("rlspec-open", 11, 1)
        assert.is_true(a ~= nil and a == b)
        assert.is_true(lib.mg_ffi_shdict_open("", 0, 65536) == nil)
    end)
end)

describe("the reset of a first request", function()
    -- is the whole window exactly, whatever the clock reads: computed as
    -- start + window - now it was 9999.9999999998 ms at some clock readings
    -- (ms of CLOCK_MONOTONIC), and a spec comparing it with 10 s failed now and then
    it("is exact whatever the clock reads, for both algorithms", function()
        local d = new_dict()
        -- (rounding cases of the monotonic clock's milliseconds, then the clock itself)
        for i, now in ipairs({ 131040.87511006669, 59293.16345432145, 536865641.3109184, -1 }) do
            local _, _, reset = sliding(d, "first" .. i, 3, 10000, now)
            assert.equal(10000, reset)
            _, _, reset = gcra(d, "first" .. i, 1, 10000, 1, now)
            assert.equal(10000, reset)
        end
    end)
end)
