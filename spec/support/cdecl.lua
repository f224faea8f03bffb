-- spec/support/cdecl.lua: ffi.cdef for the C specs (spec/c), remembering
-- each declaration so that the spec can check its function prototypes
-- against the C headers they mirror: a changed signature then fails the
-- spec that declares it instead of corrupting its calls.
--
--   local decl = require("spec.support.cdecl").new()
--   decl.cdef [[ int mg_x_parse(const char *s, size_t n); ]]
--   assert.same({}, decl.missing { "src/x.h" })
local ffi = require "ffi"

local _M = {}

local function squash(s)
    return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

function _M.new()
    local texts = {}
    local obj = {}

    -- Declares; a type or function another spec declared first is fine.
    function obj.cdef(text)
        texts[#texts + 1] = text
        local ok, err = pcall(ffi.cdef, text)
        if not ok and not tostring(err):find("redefine", 1, true) then
            error(err, 2)
        end
    end

    -- The prototypes declared here that none of the headers spells the same
    -- (blanks aside).
    function obj.missing(headers)
        local all = {}
        for _, path in ipairs(headers) do
            local f = assert(io.open(path))
            all[#all + 1] = squash(f:read("*a"))
            f:close()
        end
        local h = table.concat(all, "\n")
        local out = {}
        for _, text in ipairs(texts) do
            for proto in text:gmatch("[^;{}]-mg_[%w_]+%b();") do
                proto = squash(proto)
                if not h:find(proto, 1, true) then out[#out + 1] = proto end
            end
        end
        return out
    end

    return obj
end

return _M
