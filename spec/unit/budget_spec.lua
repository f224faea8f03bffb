-- Specs for lua/moongate/budget.lua: CPU-time and memory budgets of Lua
-- that runs outside the workers' hooks (loading, the kit, the REPL).
-- The looping code is compiled by loadstring so that it is not moongate's
-- own (the budget lets moongate's modules run on), and kept interpreted as
-- config.lua keeps a config's loops (LuaJIT runs no hook in compiled code).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local budget = require "moongate.budget"

local function user(src)
    local f = assert(loadstring(src, "=user"))
    jit.off(f, true)
    setfenv(f, setmetatable({ xpcall = budget.xpcall }, { __index = _G }))
    return f()
end

describe("budget.call", function()
    it("returns what the function returns", function()
        assert.same({ true, 1, nil, 3 },
                    { budget.call({ seconds = 1 }, function() return 1, nil, 3 end) })
    end)

    it("returns false and the error of a failing function", function()
        local ok, err = budget.call({ seconds = 1 }, error, "boom", 0)
        assert.is_false(ok)
        assert.equal("boom", err)
    end)

    it("stops a loop with file:line and the message", function()
        local spin = user("return function() while true do end end")
        local t0 = os.clock()
        local ok, err = budget.call({ seconds = 0.05, what = "loading",
                                      hint = "(a loop?)" }, spin)
        assert.is_false(ok)
        assert.equal("user:1: loading took longer than 0.05 s (a loop?)", err)
        -- a few checks past the limit; generous for a loaded machine
        assert.is_true(os.clock() - t0 < 1)
    end)

    it("is not swallowed by a pcall in the loop", function()
        local spin = user([[return function()
            while true do pcall(function() while true do end end) end
        end]])
        local ok, err = budget.call({ seconds = 0.05, message = "over" }, spin)
        assert.is_false(ok)
        assert.equal("user:2: over", err)
    end)

    it("skips an xpcall handler that loops, once over", function()
        local spin = user([[return function()
            xpcall(function() while true do end end,
                   function(e) while true do end end)
            return "escaped"
        end]])
        local ok, err = budget.call({ seconds = 0.05, message = "over" }, spin)
        assert.is_false(ok)
        assert.equal("user:4: over", err)
    end)

    it("stops a loop inside a coroutine the code made", function()
        local spin = user([[return function()
            while true do pcall(coroutine.wrap(function() while true do end end)) end
        end]])
        local ok, err = budget.call({ seconds = 0.05, message = "over" }, spin)
        assert.is_false(ok)
        assert.truthy(err:find("over", 1, true), err)
    end)

    it("nests: the inner budget stops its call, the outer one goes on", function()
        local spin = user("return function() while true do end end")
        local inner_ok, inner_err
        local ok, n = budget.call({ seconds = 5 }, function()
            inner_ok, inner_err = budget.call({ seconds = 0.05, message = "inner" }, spin)
            local x = 0
            for i = 1, 1000 do x = x + i end
            return x
        end)
        assert.is_false(inner_ok)
        assert.equal("user:1: inner", inner_err)
        assert.is_true(ok)
        assert.equal(500500, n)
        assert.is_nil(budget.exceeded())
    end)

    it("reads opts.seconds at every check (a budget set while it runs)", function()
        local opts = { seconds = 100, message = "over" }
        local spin = user("return function(o) o.seconds = 0.05 while true do end end")
        local ok, err = budget.call(opts, spin, opts)
        assert.is_false(ok)
        assert.equal("user:1: over", err)
    end)

    it("stops code that allocates past opts.memory", function()
        local grow = user([[return function()
            local t = {}
            while true do t[#t + 1] = string.rep("x", 65536) .. #t end
        end]])
        local limit = collectgarbage("count") * 1024 + 32 * 1048576
        local ok, err = budget.call({ seconds = 30, memory = limit, what = "loading" }, grow)
        assert.is_false(ok)
        assert.truthy(err:find("^user:3: loading used more than %d+ MB of memory"), err)
        collectgarbage()
    end)

    it("turns the JIT off while it runs with interpret, and back on", function()
        local inside
        budget.call({ seconds = 1, interpret = true }, function()
            inside = jit.status()
        end)
        assert.is_false(inside)
        assert.is_true((jit.status()))
    end)

    it("leaves no hook behind", function()
        budget.call({ seconds = 1 }, function() end)
        assert.is_nil(debug.gethook())
    end)
end)
