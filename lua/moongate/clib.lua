-- moongate.clib: where the Lua library finds moongate's C functions.
--
-- Inside the gateway binary they are its own exported symbols (ffi.C, the
-- binary links with -Wl,-E). Outside it (specs, the testing kit, scripts)
-- they come from a shared library of the same sources, looked up in order:
--   1. $MG_TEST_LIB, a path (the suite sets it to build/libmgtest.so);
--   2. moongate.core on package.cpath (the LuaRocks install);
--   3. build/libmgtest.so under the current directory (a source checkout).
-- One place, so every module agrees on which copy is loaded.

local ffi = require "ffi"

local pcall, getenv, searchpath = pcall, os.getenv, package.searchpath

local _M = {}

local loaded, load_err

local function candidates()
    local list = {}
    local env = getenv("MG_TEST_LIB")
    if env and env ~= "" then
        list[#list + 1] = env
    else
        local rock = searchpath and searchpath("moongate.core", package.cpath)
        if rock then
            list[#list + 1] = rock
        end
        list[#list + 1] = "build/libmgtest.so"
    end
    return list
end

--- The namespace that holds `symbol` (declared by the caller's ffi.cdef):
--- ffi.C inside the binary, else the shared library. Returns nil and a
--- reason (what to build or set) when none can be loaded.
function _M.load(symbol)
    if pcall(function() return ffi.C[symbol] end) then
        return ffi.C
    end
    if loaded then
        return loaded
    end
    if load_err then
        return nil, load_err
    end
    local tried = {}
    for _, path in ipairs(candidates()) do
        local ok, lib = pcall(ffi.load, path)
        if ok then
            loaded = lib
            return lib
        end
        tried[#tried + 1] = path .. " (" .. tostring(lib) .. ")"
    end
    load_err = "moongate's C library cannot be loaded; tried " ..
        table.concat(tried, ", ") .. ". In a source checkout run `make " ..
        "build/libmgtest.so` (or set MG_TEST_LIB to its path); else install " ..
        "the rock (moongate-*.rockspec), which provides moongate.core"
    return nil, load_err
end

--- Like load, but raises the reason.
function _M.require(symbol)
    local lib, why = _M.load(symbol)
    if not lib then
        error(why, 2)
    end
    return lib
end

return _M
