-- The FFI declarations of lua/moongate/cdefs.lua are the prototypes of
-- src/mg_ffi.h, character for character (whitespace aside).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local function squash(s)
    s = s:gsub("/%*.-%*/", " "):gsub("%s+", " "):gsub(" ?([%(%)%*,;]) ?", "%1")
    return (s:gsub("^ ", ""):gsub(" $", ""))
end

describe("lua/moongate/cdefs.lua", function()
    local src = assert(io.open("lua/moongate/cdefs.lua")):read("*a")
    local cdef = assert(src:match("ffi%.cdef%s*%[%[(.-)%]%]"))
    local header = squash(assert(io.open("src/mg_ffi.h")):read("*a"))

    local n = 0
    for decl in cdef:gmatch("[^;]+;") do
        local d = squash(decl)
        if d:find("mg_ffi_", 1, true) or d:find("typedef", 1, true) then
            n = n + 1
            it("declares " .. (d:match("(mg_ffi_[%w_]+)") or d) .. " as mg_ffi.h does", function()
                assert.truthy(header:find(d, 1, true), d)
            end)
        end
    end

    it("declares every request and hook function", function()
        assert.is_true(n >= 28, "only " .. n .. " declarations")
    end)
end)
