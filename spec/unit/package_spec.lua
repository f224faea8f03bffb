-- The packaging: the rockspec lists every Lua module and C source of the
-- tree, the version is the same everywhere it is written, and (where
-- luarocks is installed, as `make test` arranges) the rock really installs
-- into a tree that a plain luajit can require the library from.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local h = require "spec.support.helpers"

local function read(path)
    return assert(h.read_file(path), path)
end

local function lines_of(cmd)
    local p = assert(io.popen(cmd))
    local out = {}
    for l in p:lines() do out[#out + 1] = l end
    p:close()
    return out
end

local function sh(cmd)
    local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\""))
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("rc=(%d+)%s*$"))
    return rc, out
end

local VERSION = assert(read("src/version.h"):match('#define MG_VERSION "([^"]+)"'))
local ROCKSPEC = "moongate-" .. VERSION .. "-1.rockspec"

local function load_rockspec()
    local env = {}
    local chunk = assert(loadfile(ROCKSPEC))
    setfenv(chunk, env)
    chunk()
    return env
end

describe("moongate's packaging", function()
    it("has a rockspec named after src/version.h", function()
        local rock = lines_of("ls moongate-*.rockspec")
        assert.same({ ROCKSPEC }, rock)
        local spec = load_rockspec()
        assert.equal("moongate", spec.package)
        assert.equal(VERSION .. "-1", spec.version)
        assert.equal("builtin", spec.build.type)
    end)

    it("says the same version in the Lua library", function()
        assert.equal(VERSION, require("moongate")._VERSION)
    end)

    it("lists every module under lua/moongate/, at its path, and nothing else", function()
        local modules = load_rockspec().build.modules
        local want = {}
        for _, f in ipairs(lines_of("find lua/moongate -name '*.lua' | sort")) do
            local name = f:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", ".")
                :gsub("%.init$", "")
            want[name] = f
        end
        for name, path in pairs(want) do
            assert(modules[name] == path,
                   ROCKSPEC .. " does not list " .. name .. " (" .. path .. ")")
        end
        for name, v in pairs(modules) do
            if type(v) == "string" then
                assert(want[name] == v, ROCKSPEC .. " lists " .. name .. " = " .. v ..
                       ", which is not a module of lua/moongate/")
            end
        end
    end)

    it("builds moongate.core from every C source but main.c", function()
        local core = assert(load_rockspec().build.modules["moongate.core"])
        local listed = {}
        for _, s in ipairs(core.sources) do listed[s] = true end
        for _, f in ipairs(lines_of("ls src/*.c")) do
            if f ~= "src/main.c" then
                assert(listed[f], ROCKSPEC .. ": moongate.core does not list " .. f)
                listed[f] = nil
            end
        end
        for s in pairs(listed) do
            assert(s:find("^/usr/share/llhttp/"), ROCKSPEC .. " lists " .. s ..
                   ", which is not a source of src/")
        end
    end)

    local have_luarocks = sh("command -v luarocks >/dev/null") == 0
    local it_rocks = have_luarocks and it or pending

    it_rocks("passes luarocks lint", function()
        local rc, out = sh("luarocks lint " .. ROCKSPEC)
        assert(rc == 0, out)
    end)

    it_rocks("installs into a tree that plain luajit requires moongate.jwt from", function()
        local tree = os.tmpname()
        os.remove(tree)
        -- built in a copy of the checkout: the builtin backend leaves its
        -- objects beside the sources and moongate/core.so in the directory
        -- it runs in, where a later `require "moongate.core"` (./?.so on
        -- package.cpath) would find a stale copy
        local work = os.tmpname()
        os.remove(work)
        local rc, out = sh("mkdir -p " .. work .. " && cp -r src lua docs examples " .. ROCKSPEC .. " " .. work)
        assert(rc == 0, out)
        -- lua-cjson is Debian's package here (no rocks server to fetch from)
        rc, out = sh("cd " .. work .. " && luarocks --lua-version 5.1 make --deps-mode none --tree " ..
                     tree .. " " .. ROCKSPEC)
        sh("rm -rf " .. work)
        assert(rc == 0, out)
        -- from another directory, with nothing of the checkout on the path
        local probe = [[
            package.path = TREE .. "/share/lua/5.1/?.lua;" .. TREE ..
                "/share/lua/5.1/?/init.lua;" .. package.path
            package.cpath = TREE .. "/lib/lua/5.1/?.so;" .. package.cpath
            local jwt = require "moongate.jwt"
            local gw = require "moongate"
            assert(type(jwt.policy) == "function" and gw._VERSION)
            local opts = { secret = string.rep("k", 32) }
            local token = jwt.sign({ sub = "alice", exp = os.time() + 60 }, opts)
            assert(jwt.verify(token, opts).sub == "alice")
            assert(not jwt.verify(token .. "x", opts))
            print("required " .. package.searchpath("moongate.jwt", package.path))
        ]]
        rc, out = sh("cd / && env -u MG_TEST_LIB -u LUA_PATH -u LUA_CPATH luajit -e " ..
                     "'TREE=\"" .. tree .. "\"' -e '" .. probe:gsub("'", "'\\''") .. "'")
        sh("rm -rf " .. tree)
        assert(rc == 0, out)
        assert.truthy(out:find("required " .. tree .. "/share/lua/5.1/moongate/jwt.lua", 1, true),
                      out)
    end)
end)
