-- Specs for the layering of src/ (scripts/layers.lua): every object in
-- build/obj (make all) uses only symbols defined in its own layer or in the
-- layers below, and no files call each other in a circle except within a
-- layer that allows it. Read from the objects with nm: what a file calls,
-- not what it includes (a header for types is no dependency).
local layers = dofile("scripts/layers.lua")

local OBJ = "build/obj"

-- The symbols nm lists for the object of file f (nm options opts) that
-- match pattern.
local function symbols(opts, f, pattern)
    local p = assert(io.popen("nm " .. opts .. " " .. OBJ .. "/" .. f .. ".o"))
    local out = {}
    for l in p:lines() do out[#out + 1] = l:match(pattern) end
    p:close()
    return out
end

-- file -> layer index, from the table
local function layer_of(t)
    local at = {}
    for i, l in ipairs(t) do
        for _, f in ipairs(l.files) do
            assert(not at[f], f .. " is in two layers")
            at[f] = i
        end
    end
    return at
end

-- The calls between the objects: { from = , to = , sym = } for every
-- undefined symbol of one object that another one defines.
local function edges_of(files)
    local def, edges = {}, {}
    for _, f in ipairs(files) do
        for _, sym in ipairs(symbols("-g --defined-only", f, "^%x*%s+%a%s+(%S+)$")) do
            def[sym] = f
        end
    end
    for _, f in ipairs(files) do
        for _, sym in ipairs(symbols("-u", f, "^%s*U%s+(%S+)$")) do
            if def[sym] and def[sym] ~= f then
                edges[#edges + 1] = { from = f, to = def[sym], sym = sym }
            end
        end
    end
    return edges
end

-- The edges that go up a layer, as "from (layer) -> to (layer): sym".
local function back_edges(t, edges)
    local at, bad = layer_of(t), {}
    for _, e in ipairs(edges) do
        local a, b = at[e.from], at[e.to]
        if a and b and b > a then
            bad[#bad + 1] = string.format("%s (%s) -> %s (%s): %s", e.from, t[a].name,
                                          e.to, t[b].name, e.sym)
        end
    end
    table.sort(bad)
    return bad
end

-- A circle among the files, leaving out the edges inside a layer with
-- `cycles`: nil, or the files around it ("a -> b -> a").
local function circle(t, edges)
    local at, out = layer_of(t), {}
    for _, e in ipairs(edges) do
        local a, b = at[e.from], at[e.to]
        if not (a and a == b and t[a].cycles) then
            out[e.from] = out[e.from] or {}
            out[e.from][e.to] = true
        end
    end
    local state, stack = {}, {}
    local function visit(f)
        state[f] = 1
        stack[#stack + 1] = f
        local next = {}
        for to in pairs(out[f] or {}) do next[#next + 1] = to end
        table.sort(next)
        for _, to in ipairs(next) do
            if state[to] == 1 then
                local path, on = {}, false
                for _, s in ipairs(stack) do
                    if s == to then on = true end
                    if on then path[#path + 1] = s end
                end
                path[#path + 1] = to
                return table.concat(path, " -> ")
            elseif not state[to] then
                local found = visit(to)
                if found then return found end
            end
        end
        stack[#stack] = nil
        state[f] = 2
    end
    local all = {}
    for f in pairs(out) do all[#all + 1] = f end
    table.sort(all)
    for _, f in ipairs(all) do
        if not state[f] then
            local found = visit(f)
            if found then return found end
        end
    end
end

local edges_cache
local function built_edges(files)
    edges_cache = edges_cache or edges_of(files)
    return edges_cache
end

local function sources()
    local p = assert(io.popen("ls src/*.c"))
    local files = {}
    for l in p:lines() do files[#files + 1] = l:match("^src/(.-)%.c$") end
    p:close()
    return files
end

describe("layers of src/", function()
    it("places every C file in exactly one layer", function()
        local at = layer_of(layers)
        local missing, gone = {}, {}
        local have = {}
        for _, f in ipairs(sources()) do
            have[f] = true
            if not at[f] then missing[#missing + 1] = f end
        end
        for f in pairs(at) do
            if not have[f] then gone[#gone + 1] = f end
        end
        assert.same({}, missing) -- add them to scripts/layers.lua
        assert.same({}, gone)
    end)

    it("has every object built (make all)", function()
        for _, f in ipairs(sources()) do
            local h = io.open(OBJ .. "/" .. f .. ".o")
            assert(h, OBJ .. "/" .. f .. ".o is missing: run make all first")
            h:close()
        end
    end)

    it("calls only down: no object uses a symbol of a higher layer", function()
        local edges = built_edges(sources())
        assert.is_true(#edges > 50) -- nm read the objects
        local bad = back_edges(layers, edges)
        assert(#bad == 0, "calls up a layer:\n  " .. table.concat(bad, "\n  "))
    end)

    it("has no circle of files outside the layers that allow one", function()
        local c = circle(layers, built_edges(sources()))
        assert(c == nil, "files that call each other in a circle: " .. tostring(c))
    end)
end)

describe("the layer checks", function()
    local t = {
        { name = "low", files = { "a", "b" } },
        { name = "mid", files = { "c", "d" }, cycles = true },
        { name = "high", files = { "e" } },
    }

    it("report a call up a layer with the symbol", function()
        local edges = { { from = "e", to = "c", sym = "c_go" },
                        { from = "a", to = "e", sym = "e_back" } }
        assert.same({ "a (low) -> e (high): e_back" }, back_edges(t, edges))
    end)

    it("report a circle inside a layer", function()
        local edges = { { from = "a", to = "b", sym = "x" }, { from = "b", to = "a", sym = "y" } }
        assert.equal("a -> b -> a", circle(t, edges))
    end)

    it("let a layer with cycles call itself both ways", function()
        local edges = { { from = "c", to = "d", sym = "x" }, { from = "d", to = "c", sym = "y" },
                        { from = "e", to = "c", sym = "z" } }
        assert.is_nil(circle(t, edges))
        assert.same({}, back_edges(t, edges))
    end)
end)
