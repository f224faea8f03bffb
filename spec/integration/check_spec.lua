-- `moongate check -c FILE` validates without serving and reports every
-- mistake as file:line: reason; `moongate version`; `moongate run` refuses
-- a bad config.
local h = require "spec.support.helpers"

local FIX = "spec/fixtures/integration/"

-- lines of `out` that look like "<file>:<line>: reason", by line number
local function reports(out, file)
    local by_line, n = {}, 0
    local pat = "^" .. file:gsub("%p", "%%%0") .. ":(%d+):%s*(.+)$"
    for line in out:gmatch("[^\n]+") do
        local ln, reason = line:match(pat)
        if ln then
            ln = tonumber(ln)
            by_line[ln] = (by_line[ln] and (by_line[ln] .. "\n") or "") .. reason
            n = n + 1
        end
    end
    return by_line, n
end

describe("moongate check", function()
    it("accepts a good config with exit code 0", function()
        local code, out = h.run_bin("check -c " .. FIX .. "good.lua")
        assert.equal(0, code, out)
    end)

    it("reports all three mistakes of a bad config as file:line: reason, exit 1", function()
        local file = FIX .. "bad.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line = reports(out, file)
        assert.truthy(by_line[5], "bad address (line 5) not reported:\n" .. out)
        assert.truthy(by_line[5]:find("99999", 1, true), by_line[5])
        assert.truthy(by_line[6], "unknown upstream (line 6) not reported:\n" .. out)
        assert.truthy(by_line[6]:find("ordres", 1, true), by_line[6])
        assert.truthy(by_line[7], "unknown key (line 7) not reported:\n" .. out)
        assert.truthy(by_line[7]:find("methds", 1, true), by_line[7])
    end)

    it("suggests the close name of an unknown upstream", function()
        local file = FIX .. "bad.lua"
        local _, out = h.run_bin("check -c " .. file)
        local by_line = reports(out, file)
        assert.truthy((by_line[6] or ""):find("orders", 1, true), out)
    end)

    it("reports a Lua syntax error with its line", function()
        local file = FIX .. "syntax.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line = reports(out, file)
        assert.truthy(by_line[4], "syntax error (line 4) not reported:\n" .. out)
    end)

    it("reports a wrong type with the key and the bad value", function()
        local file = FIX .. "types.lua"
        local code, out = h.run_bin("check -c " .. file)
        assert.equal(1, code, out)
        local by_line = reports(out, file)
        assert.truthy(by_line[3], "wrong type (line 3) not reported:\n" .. out)
        assert.truthy(by_line[3]:find("port", 1, true), by_line[3])
    end)

    it("returns at once instead of serving", function()
        local code = h.run_bin("check -c " .. FIX .. "good.lua", 5)
        assert.are_not.equal(124, code, "still running after 5 s")
        assert.equal(0, code)
    end)
end)

describe("moongate run with a bad config", function()
    it("refuses to start, exits non-zero and prints the errors", function()
        local file = FIX .. "bad.lua"
        local code, out = h.run_bin("run -c " .. file, 10)
        assert.are_not.equal(0, code, out)
        assert.are_not.equal(124, code, "still running after 10 s")
        local _, n = reports(out, file)
        assert.is_true(n >= 3, out)
    end)
end)

describe("moongate version", function()
    it("prints the versions of moongate, LuaJIT, libuv and llhttp", function()
        local code, out = h.run_bin("version")
        assert.equal(0, code, out)
        local lower = out:lower()
        for _, what in ipairs { "moongate", "luajit", "libuv", "llhttp" } do
            assert.truthy(lower:find(what, 1, true), what .. " missing from:\n" .. out)
        end
        assert.truthy(out:find("%d+%.%d+"), out)
    end)

    it("prints the OpenSSL version", function()
        local _, out = h.run_bin("version")
        assert.truthy(out:lower():find("openssl", 1, true), out)
    end)
end)
