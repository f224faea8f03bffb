-- The docs are tested like the code: every curl of the README's tour and
-- of the demo's banner (scripts/demo.sh) runs against the demo
-- (examples/msa/gateway.lua, on ports of our own) and gets the status its
-- comment promises (a leading "NNN", else 200; "Cache-Status: ... hit" is
-- checked too); examples/msa/README.md's too, and every code block of the docs that is a whole config
-- (require "moongate" and gw.listen) passes `moongate check`.
local h = require "spec.support.helpers"

local fmt = string.format

-- Lines of `text` between the first line matching `from` and the next
-- line matching `to`.
local function section(text, from, to)
    local out, inside = {}, false
    for line in (text .. "\n"):gmatch("(.-)\n") do
        if inside and line:find(to) then
            break
        end
        if inside then
            out[#out + 1] = line
        elseif line:find(from) then
            inside = true
        end
    end
    return out
end

-- { args, comment } of every "curl ..." line
local function curls(lines)
    local out = {}
    for _, line in ipairs(lines) do
        local cmd, comment = line:match("^%s*(curl .-)%s*#%s*(.*)$")
        if not cmd then
            cmd, comment = line:match("^%s*(curl .-)%s*$"), ""
        end
        if cmd then
            out[#out + 1] = { cmd = cmd, comment = comment }
        end
    end
    return out
end

local function read(path)
    return assert(h.read_file(path), "cannot read " .. path)
end

local README = read("README.md")
local tour = {}
do
    local demo = table.concat(section(README, "^### 1%. The demo", "^### 2"), "\n")
    tour = curls(section(demo, "^```sh", "^```"))
end
local banner = curls(section(read("scripts/demo.sh"), "<<'TXT'", "^TXT"))
local msa
do
    local try = table.concat(section(read("examples/msa/README.md"), "^## Try", "^## "), "\n")
    msa = curls(section(try, "^```sh", "^```"))
end

describe("the demo's curls", function()
    local gw
    setup(function()
        -- the demo's fixed ports become free ones; its admin API too
        local text = read("examples/msa/gateway.lua")
        for i, port in ipairs { 8080, 8081, 8091, 8082, 8083 } do
            text = text:gsub("%f[%d]" .. port .. "%f[%D]", "{{PORT" .. i .. "}}")
        end
        text = text:gsub("gw%.settings%s*{", "gw.settings { admin = { port = {{PORT6}} },", 1)
        gw = h.start_gateway(text, { ports = 6 })
    end)
    teardown(h.cleanup)

    it("are there to test", function()
        assert.is_true(#tour >= 5, "README tour curls: " .. #tour)
        assert.is_true(#banner >= 5, "demo banner curls: " .. #banner)
        assert.is_true(#msa >= 5, "examples/msa/README curls: " .. #msa)
    end)

    for _, list in ipairs { { "README", tour }, { "demo banner", banner },
                          { "examples/msa/README", msa } } do
        for _, c in ipairs(list[2]) do
            it(fmt("%s: %s  # %s", list[1], c.cmd, c.comment), function()
                -- without it curl resolves "/../" itself: the gateway never sees it
                if c.cmd:find("/../", 1, true) then
                    assert.truthy(c.cmd:find("--path-as-is", 1, true), c.cmd)
                end
                local args = c.cmd:gsub("^curl", ""):gsub("%s%-i%f[%s]", " ")
                args = args:gsub("localhost:8080", "127.0.0.1:" .. gw.port)
                local out = h.sh(fmt("curl -s -o /dev/null -D - --max-time %d %s",
                                     10 * h.SLOW, args))
                local status = tonumber(out:match("^HTTP/%S+ (%d%d%d)"))
                local want = tonumber(c.comment:match("^(%d%d%d)")) or 200
                assert.equal(want, status, c.cmd .. "\n" .. out)
                if c.comment:find("Cache%-Status: [%w; ]-hit") then
                    local cs = out:lower():match("\ncache%-status:([^\r\n]*)")
                    assert.truthy(cs and cs:find("hit", 1, true), out)
                end
            end)
        end
    end
end)

-- The ```lua blocks of a markdown file: { line, text, before } (before: the
-- text just above the block, where a file name is given).
local function lua_blocks(text)
    local out, pos = {}, 1
    while true do
        local s, e = text:find("```lua\n", pos, true)
        if not s then
            return out
        end
        local close = text:find("\n```", e, true) or #text
        local _, nl = text:sub(1, s):gsub("\n", "")
        out[#out + 1] = { line = nl + 1, text = text:sub(e + 1, close),
                          before = text:sub(math.max(1, s - 400), s) }
        pos = close + 4
    end
end

local DOCS = { "README.md" }
for f in h.sh("ls docs/*.md examples/*/README.md"):gmatch("%S+") do
    DOCS[#DOCS + 1] = f
end

describe("whole configs in the docs", function()
    local certs
    setup(function()
        -- the DSL reference's TLS listener names certs/site.pem and .key
        certs = h.tmpdir() .. "/certs"
        h.sh(fmt("mkdir -p %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 " ..
                 "-subj /CN=localhost -keyout %s/site.key -out %s/site.pem 2>/dev/null",
                 h.shq(certs), h.shq(certs), h.shq(certs)))
    end)

    local found = 0
    for _, doc in ipairs(DOCS) do
        local blocks = lua_blocks(read(doc))
        for _, b in ipairs(blocks) do
            if b.text:find('require "moongate"', 1, true) and b.text:find("gw.listen", 1, true) then
                found = found + 1
                it(fmt("%s:%d passes moongate check", doc, b.line), function()
                    local dir = h.tmpdir() .. "/doc" .. b.line
                    h.sh(fmt("mkdir -p %s && cp -r %s %s/", h.shq(dir), h.shq(certs), h.shq(dir)))
                    -- a module the config requires is a block of the same
                    -- doc whose file name is given just above it
                    for mod in b.text:gmatch('require "([%w_.]+)"') do
                        if not mod:find("^moongate") then
                            local path = mod:gsub("%.", "/") .. ".lua"
                            for _, m in ipairs(blocks) do
                                if m.before:find("`" .. path .. "`", 1, true) then
                                    h.sh(fmt("mkdir -p %s", h.shq(dir .. "/" .. path:match("^(.*)/") or "")))
                                    h.write_file(dir .. "/" .. path, m.text)
                                end
                            end
                        end
                    end
                    h.write_file(dir .. "/gateway.lua", b.text)
                    local bin = h.MG_BIN:sub(1, 1) == "/" and h.MG_BIN
                        or (os.getenv("PWD") .. "/" .. h.MG_BIN)
                    local out = h.sh(fmt("cd %s && API_KEY=k timeout 20 %s check -c gateway.lua 2>&1; echo \"rc=$?\"",
                                         h.shq(dir), h.shq(bin)))
                    assert.truthy(out:find("rc=0", 1, true), b.text .. "\n" .. out)
                end)
            end
        end
    end

    it("are there to test", function()
        assert.is_true(found >= 3, "whole configs found: " .. found)
    end)
end)
