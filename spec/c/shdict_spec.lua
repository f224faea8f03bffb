-- spec/c/shdict_spec.lua: src/shdict.c through the FFI, mostly by way of
-- lua/moongate/shared.lua. Dictionaries live until the process exits, so
-- every test opens its own name.
local ffi = require "ffi"
local shared = require "moongate.shared"   -- declares the mg_ffi_shdict_*

ffi.cdef [[
mg_shdict_t *mg_shdict_open(const char *name, size_t cap);
mg_shdict_t *mg_shdict_find(const char *name);
size_t mg_shdict_capacity(const mg_shdict_t *d);
size_t mg_shdict_max_entry(const mg_shdict_t *d);
double mg_test_shdict_incr_threads(mg_shdict_t *d, const char *key,
                                   int nthreads, int n);
int poll(void *fds, unsigned long nfds, int timeout);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local ENOBUFS = 105
local ENTRY = 56                -- sizeof(entry_t) in src/shdict.c

local function sleep(s)
    ffi.C.poll(nil, 0, s * 1000)
end

local seq = 0

-- A fresh dictionary of `cap` bytes: its Lua object and its C pointer.
local function new_dict(cap)
    seq = seq + 1
    local name = "spec" .. seq
    local d = lib.mg_shdict_open(name, cap)
    assert(d ~= nil)
    return assert(shared.get(name)), d
end


describe("shdict values", function()
    local dict
    before_each(function()
        dict = new_dict(1024 * 1024)
    end)

    it("stores numbers, strings and booleans", function()
        assert.is_true(dict:set("n", 1.5))
        assert.is_true(dict:set("big", 2 ^ 53))
        assert.is_true(dict:set("neg", -7))
        assert.is_true(dict:set("s", "a\0b"))
        assert.is_true(dict:set("empty", ""))
        assert.is_true(dict:set("t", true))
        assert.is_true(dict:set("f", false))
        assert.equal(1.5, dict:get("n"))
        assert.equal(2 ^ 53, dict:get("big"))
        assert.equal(-7, dict:get("neg"))
        assert.equal("a\0b", dict:get("s"))
        assert.equal("", dict:get("empty"))
        assert.is_true(dict:get("t"))
        assert.is_false(dict:get("f"))
    end)

    it("gives nil for a missing key", function()
        assert.is_nil(dict:get("missing"))
    end)

    it("keeps keys apart byte for byte", function()
        dict:set("k\0a", 1)
        dict:set("k\0b", 2)
        dict:set("k", 3)
        assert.equal(1, dict:get("k\0a"))
        assert.equal(2, dict:get("k\0b"))
        assert.equal(3, dict:get("k"))
    end)

    it("replaces a value with one of another type and size", function()
        dict:set("k", 1)
        dict:set("k", ("x"):rep(1000))
        assert.equal(("x"):rep(1000), dict:get("k"))
        dict:set("k", true)
        assert.is_true(dict:get("k"))
        dict:set("k", "short")
        assert.equal("short", dict:get("k"))
    end)

    it("deletes with delete() and with set(key, nil)", function()
        dict:set("a", 1)
        dict:set("b", 2)
        assert.is_true(dict:delete("a"))
        assert.is_true(dict:set("b", nil))
        assert.is_true(dict:delete("never"))
        assert.is_nil(dict:get("a"))
        assert.is_nil(dict:get("b"))
    end)

    it("returns strings longer than the scratch buffer", function()
        local s = ("0123456789"):rep(3000)
        assert.is_true(dict:set("long", s))
        assert.equal(s, dict:get("long"))
        assert.equal("x", (dict:set("short", "x") and dict:get("short")))
    end)

    it("asks for a bigger buffer when the caller's is too small", function()
        dict:set("s", "hello world")
        local key = "s"
        local len = ffi.new("size_t[1]", 4)
        local buf = ffi.new("char[4]")
        local num = ffi.new("double[1]")
        local rc = lib.mg_ffi_shdict_get(dict.cdata, key, #key, num, buf, len)
        assert.equal(-ENOBUFS, rc)
        assert.equal(11, tonumber(len[0]))
    end)

    it("refuses empty and too long keys", function()
        assert.same({ nil, "empty key" }, { dict:set("", 1) })
        assert.same({ nil, "empty key" }, { dict:get("") })
        assert.same({ nil, "key too long" },
                    { dict:set(("k"):rep(65536), 1) })
        local big = new_dict(16 * 1024 * 1024)   -- stripes of 256k
        assert.is_true(big:set(("k"):rep(65535), 1))
        assert.equal(1, big:get(("k"):rep(65535)))
    end)
end)


describe("shdict add and replace", function()
    local dict
    before_each(function()
        dict = new_dict(1024 * 1024)
    end)

    it("adds only when absent", function()
        assert.is_true(dict:add("k", 1))
        assert.same({ nil, "exists" }, { dict:add("k", 2) })
        assert.equal(1, dict:get("k"))
    end)

    it("adds over an expired entry", function()
        dict:set("k", 1, 0.02)
        sleep(0.06)
        assert.is_true(dict:add("k", 2))
        assert.equal(2, dict:get("k"))
    end)

    it("replaces only when present", function()
        assert.same({ nil, "not found" }, { dict:replace("k", 1) })
        assert.is_nil(dict:get("k"))
        dict:set("k", 1)
        assert.is_true(dict:replace("k", "two"))
        assert.equal("two", dict:get("k"))
    end)
end)


describe("shdict expiry", function()
    local dict
    before_each(function()
        dict = new_dict(1024 * 1024)
    end)

    it("hides a value once its ttl has passed", function()
        dict:set("k", "v", 0.05)
        dict:set("forever", "v")
        dict:set("zero", "v", 0)
        assert.equal("v", dict:get("k"))
        sleep(0.1)
        assert.is_nil(dict:get("k"))
        assert.equal("v", dict:get("forever"))
        assert.equal("v", dict:get("zero"))
    end)

    it("leaves expired keys out of keys()", function()
        dict:set("old", 1, 0.02)
        dict:set("new", 1)
        sleep(0.06)
        assert.same({ "new" }, dict:keys())
    end)

    it("gives the memory of expired entries back", function()
        local free = dict:free_space()
        for i = 1, 100 do
            dict:set("k" .. i, ("x"):rep(100), 0.02)
        end
        assert.is_true(dict:free_space() < free)
        sleep(0.06)
        for i = 1, 100 do
            assert.is_nil(dict:get("k" .. i))
        end
        assert.equal(free, dict:free_space())
    end)

    it("resets the ttl on set", function()
        dict:set("k", 1, 0.05)
        dict:set("k", 2)
        sleep(0.1)
        assert.equal(2, dict:get("k"))
    end)
end)


describe("shdict incr", function()
    local dict
    before_each(function()
        dict = new_dict(1024 * 1024)
    end)

    it("adds to a number", function()
        dict:set("n", 10)
        assert.equal(15, dict:incr("n", 5))
        assert.equal(14.5, dict:incr("n", -0.5))
        assert.equal(14.5, dict:get("n"))
    end)

    it("refuses an absent key without init", function()
        assert.same({ nil, "not found" }, { dict:incr("n", 1) })
        assert.is_nil(dict:get("n"))
    end)

    it("starts an absent key at init + by", function()
        assert.equal(11, dict:incr("n", 1, 10))
        assert.equal(12, dict:incr("n", 1, 10))
    end)

    it("gives a new key init's ttl and keeps the ttl afterwards", function()
        assert.equal(1, dict:incr("n", 1, 0, 0.05))
        assert.equal(2, dict:incr("n", 1, 0, 10))
        sleep(0.1)
        assert.is_nil(dict:get("n"))
        assert.equal(5, dict:incr("n", 5, 0))
    end)

    it("restarts an expired key at init + by", function()
        dict:set("n", 100, 0.02)
        sleep(0.06)
        assert.same({ nil, "not found" }, { dict:incr("n", 1) })
        dict:set("m", 100, 0.02)
        sleep(0.06)
        assert.equal(3, dict:incr("m", 1, 2))
    end)

    it("refuses a value that is not a number", function()
        dict:set("s", "12")
        dict:set("b", true)
        assert.same({ nil, "not a number" }, { dict:incr("s", 1) })
        assert.same({ nil, "not a number" }, { dict:incr("b", 1, 0) })
        assert.equal("12", dict:get("s"))
    end)

    it("is atomic across threads (4 x 100000)", function()
        local _, d = new_dict(1024 * 1024)
        assert.equal(400000, lib.mg_test_shdict_incr_threads(d, "hits", 4,
                                                             100000))
    end)
end)


describe("shdict keys and flush_all", function()
    local dict
    before_each(function()
        dict = new_dict(1024 * 1024)
    end)

    it("lists live keys, up to max", function()
        for i = 1, 10 do
            dict:set("k" .. i, i)
        end
        local keys = dict:keys()
        table.sort(keys)
        assert.same({ "k1", "k10", "k2", "k3", "k4", "k5", "k6", "k7", "k8",
                      "k9" }, keys)
        assert.equal(3, #dict:keys(3))
        assert.equal(10, #dict:keys(0))
    end)

    it("lists more keys than the scratch buffer holds", function()
        for i = 1, 3000 do
            dict:set("key-number-" .. i, i)
        end
        assert.equal(1024, #dict:keys())
        local keys = dict:keys(0)
        assert.equal(3000, #keys)
        local seen = {}
        for _, k in ipairs(keys) do
            seen[k] = true
        end
        assert.is_true(seen["key-number-1"] and seen["key-number-3000"])
    end)

    it("flush_all removes everything and frees the memory", function()
        for i = 1, 100 do
            dict:set("k" .. i, ("v"):rep(i))
        end
        dict:flush_all()
        assert.same({}, dict:keys(0))
        assert.is_nil(dict:get("k1"))
        assert.equal(dict:capacity(), dict:free_space())
    end)
end)


describe("shdict memory cap", function()
    it("evicts old entries instead of growing past the cap", function()
        local cap = 1024 * 1024
        local dict = new_dict(cap)
        local value = ("v"):rep(100)
        local n = 0
        local used = 0
        while used < 10 * cap do     -- ten times the cap
            n = n + 1
            local key = "key" .. n
            assert.is_true(dict:set(key, value))
            used = used + ENTRY + #key + #value
        end
        local free = dict:free_space()
        assert.is_true(free >= 0 and free < cap / 10)
        assert.is_nil(dict:get("key1"))
        assert.is_nil(dict:get("key" .. math.floor(n / 2)))
        for i = n - 100, n do
            assert.equal(value, dict:get("key" .. i))
        end
        local live = #dict:keys(0)
        assert.is_true(live < n / 9)
        assert.is_true(live * (ENTRY + #value) <= cap)
    end)

    it("evicts the least recently used first", function()
        local dict = new_dict(16384)          -- one stripe
        local value = ("v"):rep(100)
        dict:set("k1", value)
        local size = dict:capacity() - dict:free_space()
        local fit = math.floor(dict:capacity() / size)
        for i = 2, fit do
            dict:set("k" .. i, value)
        end
        assert.equal(value, dict:get("k1"))  -- k1 is now the most recent
        for i = fit + 1, fit + 10 do
            dict:set("k" .. i, value)
        end
        assert.equal(value, dict:get("k1"))
        assert.is_nil(dict:get("k2"))
        assert.equal(value, dict:get("k" .. (fit + 10)))
    end)

    it("refuses a value bigger than a stripe and keeps the old one",
       function()
        local dict, d = new_dict(1024 * 1024)
        local max = tonumber(lib.mg_shdict_max_entry(d))
        assert.equal(64 * 1024, max)
        dict:set("k", "old")
        assert.same({ nil, "no memory" }, { dict:set("k", ("x"):rep(max)) })
        assert.equal("old", dict:get("k"))
        local fits = ("x"):rep(max - ENTRY - 16)
        assert.is_true(dict:set("k", fits))
        assert.equal(fits, dict:get("k"))
    end)

    it("holds values of several megabytes in a big dictionary", function()
        local dict = new_dict(256 * 1024 * 1024)
        local s = ("0123456789abcdef"):rep(100000)   -- 1.6 MB
        assert.is_true(dict:set("blob", s))
        assert.equal(s, dict:get("blob"))
        assert.equal(s, dict:get("blob"))
        dict:flush_all()
    end)

    it("reports capacity and free space", function()
        local dict = new_dict(1024 * 1024)
        assert.equal(1024 * 1024, dict:capacity())
        assert.equal(1024 * 1024, dict:free_space())
        dict:set("k", "v")
        assert.is_true(dict:free_space() < 1024 * 1024)
    end)
end)


describe("shdict registry", function()
    it("gives the same dictionary for the same name", function()
        local a = lib.mg_shdict_open("registry-a", 65536)
        local b = lib.mg_shdict_open("registry-a", 65536)
        assert.is_true(a == b)
        assert.is_true(lib.mg_shdict_find("registry-a") == a)
        assert.is_true(lib.mg_shdict_find("registry-none") == nil)
    end)

    it("keeps the first size when a name is opened again", function()
        local a = lib.mg_shdict_open("registry-b", 65536)
        local b = lib.mg_shdict_open("registry-b", 2 * 65536)
        assert.is_true(a == b)
        assert.equal(65536, tonumber(lib.mg_shdict_capacity(b)))
    end)

    it("finds dictionaries by name from Lua, sharing their contents",
       function()
        lib.mg_shdict_open("registry-c", 65536)
        local dict = assert(shared.get("registry-c"))
        assert.equal(dict, shared.get("registry-c"))
        dict:set("k", 42)
        local d = lib.mg_ffi_shdict_find("registry-c", #"registry-c")
        local num = ffi.new("double[1]")
        local len = ffi.new("size_t[1]", 0)
        assert.equal(3, lib.mg_ffi_shdict_get(d, "k", 1, num, nil, len))
        assert.equal(42, num[0])
    end)
end)
