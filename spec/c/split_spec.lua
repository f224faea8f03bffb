-- spec/c/split_spec.lua: a route's split and canary (src/split.c,
-- mg_split_choose) through the FFI, on the testing kit's in-memory
-- requests (mg_ffi_kit_split): the smooth rotation's order, the shares by
-- key over 2,000 keys, what moves when the weights change, the canary's
-- value match. Deterministic (fixed keys, the gateway's hash): counts,
-- never times.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local t = require "moongate.testing"

local function gateway(routes)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write('local gw = require "moongate"\ngw.listen { port = 8080 }\n',
            'gw.upstream("v1", { "10.0.0.1:80" })\ngw.upstream("v2", { "10.0.0.2:80" })\n',
            'gw.upstream("v3", { "10.0.0.3:80" })\n', routes)
    f:close()
    local g, errs = t.load(path)
    os.remove(path)
    return assert(g, errs and table.concat(errs, "\n"))
end

local function by_key(weights, n)
    local g = gateway(('gw.route { path = "/k", split = { { upstream = "v1", weight = %d }, ' ..
                       '{ upstream = "v2", weight = %d }, key = { header = "X-User" } } }\n')
                      :format(weights[1], weights[2]))
    local out = {}
    for i = 1, n do
        out[i] = g:request({ path = "/k", headers = { ["X-User"] = "user-" .. i } }).upstream
    end
    return out
end

describe("split.c", function()
    it("rotates 5:1:1 smoothly, as the round robin balancer does", function()
        local g = gateway('gw.route { path = "/s", split = { { upstream = "v1", weight = 5 }, ' ..
                          '{ upstream = "v2" }, { upstream = "v3" } } }\n')
        local seen = {}
        for i = 1, 14 do seen[i] = g:request({ path = "/s" }).upstream end
        assert.same({ "v1", "v1", "v2", "v1", "v3", "v1", "v1",
                      "v1", "v1", "v2", "v1", "v3", "v1", "v1" }, seen)
    end)

    it("never picks a weight 0 entry", function()
        local g = gateway('gw.route { path = "/s", split = { { upstream = "v1", weight = 0 }, ' ..
                          '{ upstream = "v2", weight = 1 } } }\n')
        for _ = 1, 10 do assert.equal("v2", g:request({ path = "/s" }).upstream) end
        assert.equal("v2", g:request({ path = "/s" }).upstream)
    end)

    it("shares 2,000 keys by weight, and a raised last weight only moves keys to it", function()
        local n = 2000
        local a, b = by_key({ 90, 10 }, n), by_key({ 80, 20 }, n)
        local n2a, n2b, back = 0, 0, 0
        for i = 1, n do
            n2a = n2a + (a[i] == "v2" and 1 or 0)
            n2b = n2b + (b[i] == "v2" and 1 or 0)
            back = back + ((a[i] == "v2" and b[i] == "v1") and 1 or 0)
        end
        assert.is_true(math.abs(n2a / n - 0.10) <= 0.02, "90/10: v2 " .. n2a)
        assert.is_true(math.abs(n2b / n - 0.20) <= 0.02, "80/20: v2 " .. n2b)
        assert.equal(0, back) -- none of the first 10 % left v2
        assert.same(a, by_key({ 90, 10 }, n)) -- the same keys, the same answer
    end)

    it("matches a canary's value byte for byte, and any value without one", function()
        local g = gateway(
            'gw.route { path = "/c", upstream = "v1", canary = { header = "X-C", value = "on", ' ..
            'upstream = "v2" } }\n' ..
            'gw.route { path = "/any", upstream = "v1", canary = { cookie = "b", upstream = "v3" } }\n')
        local function up(path, headers) return g:request({ path = path, headers = headers }).upstream end
        assert.equal("v2", up("/c", { ["X-C"] = "on" }))
        assert.equal("v1", up("/c", { ["X-C"] = "On" }))
        assert.equal("v1", up("/c", { ["X-C"] = "on " .. "x" }))
        assert.equal("v1", up("/c"))
        assert.equal("v3", up("/any", { Cookie = "b=" }))
        assert.equal("v3", up("/any", { Cookie = "a=1; b=2" }))
        assert.equal("v1", up("/any", { Cookie = "ab=2; bb=1" }))
    end)
end)
