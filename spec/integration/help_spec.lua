-- `moongate help` lists every command with its options, `moongate help CMD`
-- tells one in full, and no option the parsers accept is missing from it.
local h = require "spec.support.helpers"

describe("moongate help", function()
    local code, list = h.run_bin("help")

    it("lists every command", function()
        assert.equal(0, code, list)
        for _, cmd in ipairs({ "run", "check", "reload", "repl", "version", "help" }) do
            assert.truthy(list:find("\n  " .. cmd .. "[ %[]"), cmd .. " missing:\n" .. list)
        end
    end)

    it("names every option that src/main.c and src/repl.c accept", function()
        local n = 0
        for _, src in ipairs({ "src/main.c", "src/repl.c" }) do
            local text = assert(h.read_file(src))
            local opts = {}
            for opt in text:gmatch('strcmp%(argv%[i%], "(%-%-?[%w-]+)"%)') do
                opts[#opts + 1] = opt
            end
            -- main.c's table of options: [OPT_X] = { "flag", "alias" or NULL, ...
            for flag, alias in text:gmatch('%[OPT_[%u_]+%] = { "(%-%-?[%w-]+)", ([^,]+),') do
                opts[#opts + 1] = flag
                opts[#opts + 1] = alias:match('^"(.*)"$')
            end
            for _, opt in ipairs(opts) do
                if opt ~= "-h" and opt ~= "--help" then
                    n = n + 1
                    assert.truthy(list:find(opt, 1, true), opt .. " (" .. src .. ") not in help")
                end
            end
        end
        assert.is_true(n >= 6, "found only " .. n .. " options in the parsers")
    end)

    it("tells one command in full, and refuses an unknown one", function()
        local c, out = h.run_bin("help reload")
        assert.equal(0, c, out)
        assert.truthy(out:find("usage: moongate reload", 1, true), out)
        assert.truthy(out:find("--admin HOST:PORT", 1, true), out)
        c, out = h.run_bin("help nope")
        assert.equal(2, c)
        assert.truthy(out:find("no command 'nope'", 1, true), out)
        c, out = h.run_bin("repl --help")
        assert.equal(0, c, out)
        assert.truthy(out:find("--attach HOST:PORT", 1, true), out)
    end)
end)
