-- Every ffi.cdef of lua/** against the C headers, by the C compiler.
--
-- A fresh LuaJIT loads every module of lua/moongate/ with ffi.cdef wrapped,
-- so each block is seen as the module really declares it (constants
-- substituted, blocks inside pcall or behind a guard included). Each block
-- becomes C that includes every header of src/ and:
--   * re-declares each function and typedef exactly as the block does: a
--     prototype or typedef that does not match the header's is a conflicting
--     redeclaration, i.e. a compile error;
--   * re-defines each struct under another tag and asserts, field by field,
--     the same offset, size and type as the header's struct, and the same
--     total size.
-- One compile for all blocks; each error is traced back to its block.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local fmt, concat = string.format, table.concat

-- Structs a module declares under its own name for a libc type, and the
-- header name of each field.
local MIRRORS = {
    mg_budget_timespec_t = { "struct timespec", { sec = "tv_sec", nsec = "tv_nsec" } },
}

local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    local ok, _, code = p:close()
    return out, ok == true or code == 0
end

local function lines(cmd)
    local out = {}
    for l in sh(cmd):gmatch("[^\n]+") do
        out[#out + 1] = l
    end
    return out
end

-- The blocks every module of lua/moongate/ passes to ffi.cdef:
-- list of { file =, line =, text = }.
local COLLECT = [=[
local ffi = require "ffi"
local real, blocks = ffi.cdef, {}
ffi.cdef = function(text)
    local level = 2
    local info = debug.getinfo(level, "Sl")
    while info and info.what == "C" do
        level = level + 1
        info = debug.getinfo(level, "Sl")
    end
    blocks[#blocks + 1] = string.format("{ file = %q, line = %d, text = %q },",
        info and info.short_src or "?", info and info.currentline or 0, text)
    return real(text)
end
for _, m in ipairs(arg) do
    pcall(require, m)
end
io.write("return {\n", table.concat(blocks, "\n"), "\n}\n")
]=]

local function collect()
    local mods = {}
    for _, f in ipairs(lines("find lua/moongate -name '*.lua' | sort")) do
        mods[#mods + 1] = f:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", "")
            :gsub("/", ".")
    end
    local script = os.tmpname()
    local fh = assert(io.open(script, "w"))
    fh:write(COLLECT)
    fh:close()
    local out = sh(fmt("LUA_PATH='lua/?.lua;lua/?/init.lua;;' luajit %s %s", script,
                       concat(mods, " ")))
    os.remove(script)
    return assert(loadstring(out), out)()
end

-- Declarations of a block: comments dropped, split at ';' outside braces.
local function declarations(text)
    text = text:gsub("/%*.-%*/", " "):gsub("//[^\n]*", " ")
    local out, depth, start = {}, 0, 1
    for i = 1, #text do
        local c = text:sub(i, i)
        if c == "{" then
            depth = depth + 1
        elseif c == "}" then
            depth = depth - 1
        elseif c == ";" and depth == 0 then
            local d = text:sub(start, i):gsub("^%s+", "")
            if d:find("%S") then
                out[#out + 1] = d
            end
            start = i + 1
        end
    end
    return out
end

-- The field names of a struct body, in order ("double min, max;" gives two;
-- a nested struct counts once, with the name after its '}').
local function fields(body)
    local out = {}
    for _, d in ipairs(declarations(body)) do
        local nested = d:match("}%s*([%a_][%w_]*)[^}]*;$")
        if nested then
            out[#out + 1] = { name = nested, nested = true }
        else
            d = d:gsub("%[[^%]]*%]", ""):gsub(";$", "")
            for piece in (d .. ","):gmatch("([^,]+),") do
                out[#out + 1] = { name = piece:match("([%a_][%w_]*)%s*$") }
            end
        end
    end
    return out
end

-- C text checking declaration `d` (a string ending in ';'), tag a unique
-- struct tag for a struct definition.
local function check_of(d, tag)
    local head, body, name = d:match("^typedef%s+(struct[^{]*){(.*)}%s*([%a_][%w_]*)%s*;$")
    if not head then
        for mirror, m in pairs(MIRRORS) do
            d = d:gsub("%f[%w_]" .. mirror .. "%f[^%w_]", m[1])
        end
        return d .. "\n"
    end
    local mirror = MIRRORS[name]
    local theirs = mirror and mirror[1] or name
    local ours = "struct " .. tag
    local out = { fmt("%s {%s};", ours, body),
                  fmt("_Static_assert(sizeof(%s) == sizeof(%s), \"%s: size\");",
                      ours, theirs, name) }
    for _, f in ipairs(fields(body)) do
        local hf = mirror and mirror[2][f.name] or f.name
        local a, b = fmt("((%s *)0)->%s", ours, f.name), fmt("((%s *)0)->%s", theirs, hf)
        out[#out + 1] = fmt("_Static_assert(offsetof(%s, %s) == offsetof(%s, %s), " ..
                            "\"%s.%s: offset\");", ours, f.name, theirs, hf, name, f.name)
        out[#out + 1] = fmt("_Static_assert(sizeof(%s) == sizeof(%s), \"%s.%s: size\");",
                            a, b, name, f.name)
        if not f.nested then
            out[#out + 1] = fmt("_Static_assert(__builtin_types_compatible_p(" ..
                                "__typeof__(%s), __typeof__(%s)), \"%s.%s: type\");",
                                a, b, name, f.name)
        end
    end
    return concat(out, "\n") .. "\n"
end

describe("every ffi.cdef in lua/**", function()
    local blocks = collect()
    local by_file = {}
    for _, b in ipairs(blocks) do
        by_file[b.file] = true
    end

    -- one C file: the headers, then each block's checks, every line of it
    -- mapped back to its block
    local c = { "#include <stddef.h>", "#include <time.h>" }
    for _, h in ipairs(lines("ls src/*.h")) do
        c[#c + 1] = fmt('#include "%s"', h:match("[^/]+$"))
    end
    local owner, ntags = {}, 0
    for i, b in ipairs(blocks) do
        b.decls = declarations(b.text)
        for _, d in ipairs(b.decls) do
            ntags = ntags + 1
            for l in check_of(d, "cdef_check_" .. ntags):gmatch("[^\n]+") do
                c[#c + 1] = l
                owner[#c] = i
            end
        end
    end
    local src = os.tmpname() .. ".c"
    local fh = assert(io.open(src, "w"))
    fh:write(concat(c, "\n"), "\n")
    fh:close()
    local incs = sh("printf 'print-incs:\\n\\t@echo $(INCS)\\n' | " ..
                    "make -s -f Makefile -f - print-incs"):gsub("%s+$", "")
    local out, compiled = sh(fmt("cc -std=c11 -D_GNU_SOURCE -fsyntax-only -Werror %s %s",
                                 incs, src))
    os.remove(src)
    os.remove((src:gsub("%.c$", "")))
    -- "x.c:N:M: error: ..." starts a record for the block owning line N;
    -- what follows (notes, source excerpts) belongs to it
    local errors, at = {}, 0
    for l in out:gmatch("[^\n]+") do
        local n = tonumber(l:match("^[^:]+%.c:(%d+):%d+: error"))
        if n then
            at = owner[n] or 0
            l = c[n] .. "\n  " .. l:gsub("^[^:]+:%d+:%d+: ", "")
        end
        errors[at] = errors[at] or {}
        local e = errors[at]
        e[#e + 1] = l
    end

    it("finds the blocks of every module that calls ffi.cdef", function()
        for _, f in ipairs(lines("grep -rlE '^[^-]*ffi[.]cdef' lua")) do
            assert.truthy(by_file[f], f .. " calls ffi.cdef but no block was seen")
        end
        assert.is_true(#blocks >= 10, #blocks .. " blocks")
    end)

    it("compiles (no error outside a block)", function()
        assert.is_nil(errors[0] and concat(errors[0], "\n"))
        assert.is_true(compiled or next(errors) ~= nil, out)
    end)

    it("checks struct layouts and prototypes, not only that they parse", function()
        local text = concat(c, "\n")
        assert.truthy(text:find("offsetof(mg_route_t, escaped_slashes)", 1, true))
        assert.truthy(text:find("sizeof(mg_ffi_config_field_t)", 1, true))
        assert.truthy(text:find("\nint mg_ffi_route_pattern(", 1, true))
    end)

    for i, b in ipairs(blocks) do
        local names = {}
        for _, d in ipairs(b.decls) do
            names[#names + 1] = d:match("%(%s*%*%s*([%a_][%w_]*)%s*%)%s*%b()%s*;$")
                or d:match("([%a_][%w_]*)%s*%b()%s*;$")
                or d:match("([%a_][%w_]*)%s*;$") or d
        end
        it(fmt("%s:%d declares %s as src/*.h do", b.file, b.line, concat(names, ", ")),
           function()
            assert.is_nil(errors[i] and concat(errors[i], "\n"))
        end)
    end
end)
