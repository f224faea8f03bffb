-- spec/c/balancer_spec.lua: the balancers' picks (src/balancer*.c) through
-- the FFI, as one worker runs them (mg_ffi_lb_*): round robin's order,
-- least_conn's in-flight counts and weights, p2c_ewma's latency average,
-- and the hash balancer's exclude falling through to the key's next
-- target. Deterministic: the random draws are seeded per balancer.
local ffi = require "ffi"

local decl = require("spec.support.cdecl").new()
decl.cdef [[
typedef struct mg_lb_s mg_lb_t;
mg_lb_t *mg_ffi_lb_new(const char *kind, const char *const *names, const int *weights, size_t n,
                       uint64_t seed);
void mg_ffi_lb_free(mg_lb_t *lb);
int mg_ffi_lb_pick(mg_lb_t *lb, int exclude, int has_key, uint64_t key);
void mg_ffi_lb_acquire(mg_lb_t *lb, int i);
void mg_ffi_lb_release(mg_lb_t *lb, int i);
void mg_ffi_lb_observe(mg_lb_t *lb, int i, uint64_t ns);
uint64_t mg_maglev_hash(const void *p, size_t n, uint64_t seed);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

-- a balancer over targets "t1".."tN" with these weights (default 1 each)
local function new(kind, weights, n)
    n = n or #weights
    local names, w = ffi.new("const char *[?]", n), ffi.new("int[?]", n)
    local keep = {}
    for i = 1, n do
        keep[i] = "10.0.0." .. i .. ":80"
        names[i - 1], w[i - 1] = keep[i], weights and weights[i] or 1
    end
    local lb = lib.mg_ffi_lb_new(kind, names, w, n, 0)
    assert(lb ~= nil, kind)
    return ffi.gc(lb, lib.mg_ffi_lb_free)
end

local function picks(lb, count, exclude)
    local seen = {}
    for _ = 1, count do
        local t = lib.mg_ffi_lb_pick(lb, exclude or -1, 0, 0)
        seen[t] = (seen[t] or 0) + 1
    end
    return seen
end

local function key(s) return lib.mg_maglev_hash(s, #s, 0) end

describe("balancers", function()
    it("match their headers", function()
        assert.same({}, decl.missing { "src/mg_ffi.h", "src/maglev.h" })
    end)

    it("refuse an unknown kind or no targets", function()
        local names, w = ffi.new("const char *[1]", { "a:1" }), ffi.new("int[1]", { 1 })
        assert.is_true(lib.mg_ffi_lb_new("ketama", names, w, 1, 0) == nil)
        assert.is_true(lib.mg_ffi_lb_new("round_robin", names, w, 0, 0) == nil)
    end)

    it("round_robin: smooth, weighted, skipping the excluded target", function()
        local lb = new("round_robin", { 5, 1, 1 })
        local order = {}
        for i = 1, 7 do order[i] = lib.mg_ffi_lb_pick(lb, -1, 0, 0) end
        assert.same({ 0, 0, 1, 0, 2, 0, 0 }, order)
        assert.same({ [1] = 50, [2] = 50 }, picks(new("round_robin", { 5, 1, 1 }), 100, 0))
    end)

    it("least_conn: the fewest in flight per weight; ties spread", function()
        local lb = new("least_conn", { 1, 1, 1 })
        local all = picks(lb, 300)
        for t = 0, 2 do assert.truthy((all[t] or 0) > 50, "tie spread to " .. t) end
        lib.mg_ffi_lb_acquire(lb, 0)
        lib.mg_ffi_lb_acquire(lb, 0)
        lib.mg_ffi_lb_acquire(lb, 1)
        assert.same({ [2] = 20 }, picks(lb, 20))
        assert.same({ [1] = 20 }, picks(lb, 20, 2)) -- 1 has fewer than 0
        lib.mg_ffi_lb_release(lb, 0)
        lib.mg_ffi_lb_release(lb, 0)
        assert.same({ [0] = 20 }, picks(lb, 20, 2))
        -- weight 3 holds three times the requests of weight 1
        local w = new("least_conn", { 1, 3 })
        lib.mg_ffi_lb_acquire(w, 0)
        lib.mg_ffi_lb_acquire(w, 1)
        lib.mg_ffi_lb_acquire(w, 1)
        assert.same({ [1] = 10 }, picks(w, 10)) -- 2/3 < 1/1
        lib.mg_ffi_lb_acquire(w, 1)
        lib.mg_ffi_lb_acquire(w, 1)
        assert.same({ [0] = 10 }, picks(w, 10)) -- 1/1 < 4/3
    end)

    it("p2c_ewma: a target 10x slower loses unless the others queue", function()
        local lb = new("p2c_ewma", { 1, 1, 1 })
        for _ = 1, 10 do
            lib.mg_ffi_lb_observe(lb, 0, 1000000)
            lib.mg_ffi_lb_observe(lb, 1, 1000000)
            lib.mg_ffi_lb_observe(lb, 2, 10000000)
        end
        local seen = picks(lb, 1000)
        assert.is_nil(seen[2])
        assert.truthy(seen[0] > 300 and seen[1] > 300)
        -- 20 in flight on each fast one: (1 ms + 0.1) x 21 > (10 ms + 0.1) x 1
        for _ = 1, 20 do
            lib.mg_ffi_lb_acquire(lb, 0)
            lib.mg_ffi_lb_acquire(lb, 1)
        end
        assert.truthy((picks(lb, 300)[2] or 0) > 100)
        -- the average follows: the slow one turned fast wins again
        for _ = 1, 20 do lib.mg_ffi_lb_observe(lb, 2, 100000) end
        for _ = 1, 20 do
            lib.mg_ffi_lb_release(lb, 0)
            lib.mg_ffi_lb_release(lb, 1)
        end
        assert.truthy((picks(lb, 300)[2] or 0) > 150)
    end)

    it("hash: a key's target, its next one when excluded, round robin without a key",
       function()
        local lb = new("hash", nil, 5)
        local first, nexts, moved_others = {}, {}, 0
        for i = 1, 10000 do
            local k = key("user-" .. i)
            first[i] = lib.mg_ffi_lb_pick(lb, -1, 1, k)
            assert.equal(first[i], lib.mg_ffi_lb_pick(lb, -1, 1, k)) -- sticky
            local ex = lib.mg_ffi_lb_pick(lb, 2, 1, k)
            if first[i] == 2 then
                assert.are_not.equal(2, ex)
                nexts[ex] = (nexts[ex] or 0) + 1
                assert.equal(ex, lib.mg_ffi_lb_pick(lb, 2, 1, k)) -- the same next one
            elseif ex ~= first[i] then
                moved_others = moved_others + 1
            end
        end
        assert.equal(0, moved_others) -- only the excluded target's keys move
        for t = 0, 4 do
            if t ~= 2 then assert.truthy((nexts[t] or 0) > 250, "next " .. t) end
        end
        -- no key: smooth round robin over the live targets
        local rr = {}
        for i = 1, 5 do rr[i] = lib.mg_ffi_lb_pick(lb, -1, 0, 0) end
        table.sort(rr)
        assert.same({ 0, 1, 2, 3, 4 }, rr)
    end)
end)
