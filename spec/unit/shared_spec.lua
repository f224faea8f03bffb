-- Specs for lua/moongate/shared.lua (the Lua side of shared dictionaries)
-- and gw.shared. The C side is in build/libmgtest.so (MG_TEST_LIB); its
-- behaviour is covered by spec/c/shdict_spec.lua.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local ffi = require "ffi"
local jit_util = require "jit.util"
local vmdef = require "jit.vmdef"
local shared = require "moongate.shared"

ffi.cdef [[
mg_shdict_t *mg_shdict_open(const char *name, size_t cap);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local function new_dict(name)
    assert(lib.mg_shdict_open(name, 1024 * 1024) ~= nil)
    return assert(shared.get(name))
end

-- "(error raised at) this file:line: msg" of f's error, for matches().
local function raised(f)
    local ok, err = pcall(f)
    assert.is_false(ok)
    return err
end


describe("shared.get", function()
    it("returns one cached object per dictionary", function()
        local dict = new_dict("lua-cached")
        assert.equal(dict, shared.get("lua-cached"))
        assert.equal("lua-cached", dict.name)
    end)

    it("tells how to declare a missing dictionary", function()
        assert.same({ nil, "no shared dict 'lua-none' (declare it with " ..
                      "gw.shared_dict)" }, { shared.get("lua-none") })
    end)

    it("raises for a name that is not a string", function()
        assert.matches("shared_spec.lua:%d+: shared dict name must be a " ..
                       "string, got number",
                       raised(function() shared.get(1) end))
    end)
end)


describe("gw.shared", function()
    local gw = require "moongate"

    it("hands out the same dictionaries", function()
        local dict = new_dict("lua-gw")
        assert.equal(dict, gw.shared("lua-gw"))
        assert.same({ nil, "no shared dict 'lua-gw-none' (declare it with " ..
                      "gw.shared_dict)" }, { gw.shared("lua-gw-none") })
    end)

    it("raises for a name that is not a string, blaming the caller",
       function()
        assert.matches("shared_spec.lua:%d+: gw.shared: name must be a " ..
                       "string, got nil",
                       raised(function() gw.shared() end))
    end)
end)


describe("dict methods", function()
    local dict = new_dict("lua-methods")
    before_each(function()
        dict:flush_all()
    end)

    it("take numbers as keys in their string form", function()
        assert.is_true(dict:set(1, "one"))
        assert.equal("one", dict:get("1"))
        assert.equal(2, dict:incr(7, 2, 0))
        assert.equal(2, dict:get(7))
        assert.is_true(dict:delete(1))
        assert.is_nil(dict:get(1))
    end)

    it("raise for keys that are not strings or numbers", function()
        assert.matches("shared_spec.lua:%d+: shared dict key must be a " ..
                       "string, got table",
                       raised(function() dict:get({}) end))
        assert.matches("shared_spec.lua:%d+: shared dict key must be a " ..
                       "string, got boolean",
                       raised(function() dict:set(true, 1) end))
        assert.matches("shared_spec.lua:%d+: shared dict key must be a " ..
                       "string, got nil",
                       raised(function() dict:incr(nil, 1) end))
    end)

    it("raise for values that cannot be stored", function()
        assert.matches("shared_spec.lua:%d+: shared dict values are " ..
                       "strings, numbers or booleans, got table",
                       raised(function() dict:set("k", {}) end))
        assert.matches("shared_spec.lua:%d+: shared dict add/replace need " ..
                       "a value, got nil",
                       raised(function() dict:add("k", nil) end))
    end)

    it("raise for bad ttls", function()
        assert.matches("shared_spec.lua:%d+: ttl must be a number of " ..
                       "seconds >= 0, got %-1",
                       raised(function() dict:set("k", 1, -1) end))
        assert.matches("shared_spec.lua:%d+: ttl must be a number of " ..
                       "seconds >= 0, got 1",
                       raised(function() dict:add("k", 1, "1") end))
        assert.matches("shared_spec.lua:%d+: ttl must be a number of " ..
                       "seconds >= 0, got nan",
                       raised(function() dict:set("k", 1, 0 / 0) end))
    end)

    it("raise for bad incr arguments", function()
        assert.matches("shared_spec.lua:%d+: dict:incr: by must be a " ..
                       "number, got string",
                       raised(function() dict:incr("k", "1") end))
        assert.matches("shared_spec.lua:%d+: dict:incr: init must be a " ..
                       "number, got string",
                       raised(function() dict:incr("k", 1, "0") end))
        assert.matches("shared_spec.lua:%d+: dict:incr: ttl only applies " ..
                       "with init",
                       raised(function() dict:incr("k", 1, nil, 5) end))
    end)

    it("raise for a bad keys() max", function()
        assert.matches("shared_spec.lua:%d+: dict:keys: max must be an " ..
                       "integer >= 0",
                       raised(function() dict:keys(-1) end))
    end)

    it("round a tiny ttl up to one millisecond, not to forever", function()
        assert.is_true(dict:set("k", 1, 0.0001))
        ffi.cdef "int poll(void *fds, unsigned long nfds, int timeout);"
        ffi.C.poll(nil, 0, 30)
        assert.is_nil(dict:get("k"))
    end)
end)


describe("dict hot methods", function()
    -- Aborts that only come from the order in which traces form (a trace
    -- begun inside a hot method runs into the not yet compiled loop).
    local BENIGN = { ["loop unroll limit reached"] = true }

    it("stay compiled by the JIT", function()
        local dict = new_dict("lua-jit")
        dict:set("s", "a string value")
        local aborts, loops = {}, 0
        local spec_source = debug.getinfo(1, "S").source
        local function on_trace(what, _, func, pc, code, info)
            local fi = jit_util.funcinfo(func, pc)
            if what == "abort" then
                local msg = vmdef.traceerr[code] or tostring(code)
                if msg:find("%%") then
                    msg = msg:format(type(info) == "number"
                        and vmdef.ffnames[info] or tostring(info))
                end
                if not BENIGN[msg] and tostring(fi.source):find(
                        "moongate/shared.lua", 1, true) then
                    aborts[#aborts + 1] = tostring(fi.source) .. ":" ..
                        tostring(fi.currentline) .. ": " .. msg
                end
            elseif what == "stop" and fi.source == spec_source then
                loops = loops + 1
            end
        end
        -- a finalizer run during recording (an earlier spec's ffi.gc'd
        -- object) aborts the trace ("error thrown or hook called during
        -- recording"): collect them all first, and no GC while recording
        collectgarbage("collect")
        collectgarbage("collect")
        collectgarbage("stop")
        jit.flush()
        jit.attach(on_trace, "trace")
        local sum = 0
        for i = 1, 2000 do
            dict:set("n", i)
            sum = sum + dict:incr("n", 1, 0) + dict:incr("c", 1, 0, 60)
            sum = sum + #dict:get("s") + dict:get("n")
            dict:add("n", 1)
        end
        jit.attach(on_trace)
        collectgarbage("restart")
        assert.is_true(sum > 0)
        assert.same({}, aborts)
        assert.is_true(loops > 0, "the loop was not compiled")
    end)
end)
