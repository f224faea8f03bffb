-- The upstream balancers (src/balancer*.c) through the real binary and
-- real upstream servers (spec/support/upstream.py):
--   hash       10,000 keys over 5 targets: spread within +-10 % of the
--              weights; a target down by health checks moves exactly its
--              own keys (<= 1.15 x 1/5) and they return when it is back; a
--              reload without one target moves <= 1.15 x 1/5, and putting
--              it back returns every key; each key source (header, cookie,
--              query, client, path, a Lua function) is sticky, and the
--              same key by header, cookie, query or function lands on the
--              same target; a dead target's keys go to the next one
--              (retry with exclude); req:set_target still wins.
--   p2c_ewma   one target 10x slower gets under 10 % of the requests.
--   all        a dead target is skipped, its failed attempts retried.
--   least_conn long requests interleaved with short ones stay balanced
--              over two workers (round robin piles them on one target).
local h = require "spec.support.helpers"
local cjson = require "cjson"

local fmt = string.format
local KEYS = 10000
local SHARE = 1 / 5

teardown(h.cleanup)

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local KEYS_PY = here .. "/../support/keys.py"

-- The upstream name that answered each key "user-1".."user-N" (keys.py),
-- asserting that every one was answered with a 200.
local function assign(port, how, count)
    local args = {}
    for k, v in pairs(how) do args[#args + 1] = fmt("--%s '%s'", k, v) end
    local p = assert(io.popen(fmt("python3 %s --port %d --count %d %s", KEYS_PY, port,
                                  count or KEYS, table.concat(args, " "))))
    local out = p:read("*a")
    p:close()
    local ok, r = pcall(cjson.decode, out)
    assert(ok, "keys.py: " .. out)
    assert.same({ ["200"] = count or KEYS }, r.statuses)
    return r.names
end

local function counts(names)
    local c = {}
    for _, n in ipairs(names) do c[n] = (c[n] or 0) + 1 end
    return c
end

-- keys whose target differs between a and b, and whether each moved key
-- was on `from` in a (when given)
local function moved(a, b, from)
    local n, others = 0, 0
    for i = 1, #a do
        if a[i] ~= b[i] then
            n = n + 1
            if from and a[i] ~= from then others = others + 1 end
        end
    end
    return n, others
end

local eventually = h.eventually

-- a key that `names` puts on target `name`
local function key_of(names, name)
    for i, n in ipairs(names) do
        if n == name then return "user-" .. i end
    end
end

local function set_health(up, query)
    return h.json(h.http(up.port, { path = "/__health?" .. query }).body)
end

local function name_for(port, key, path)
    local res = h.http(port, { path = path or "/k", headers = { ["x-user"] = key } })
    assert.equal(200, res.status)
    return res.headers["x-upstream-name"]
end

-- the config text with the gateway's own {{VARS}} (for a rewrite + reload)
local function render(gw, text)
    return (text:gsub("{{([%w_]+)}}", function(k)
        local v = gw.vars[k]
        if type(v) == "table" then v = v.addr or v.port end
        return tostring(v)
    end))
end

local function rewrite(gw, text)
    local f = assert(io.open(gw.config_path, "w"))
    f:write(render(gw, text))
    f:close()
    gw:signal("HUP")
end

describe("hash balancer", function()
    local ups, gw
    local NAMES = { "a", "b", "c", "d", "e" }

    local function config(without)
        local list = {}
        for _, n in ipairs(NAMES) do
            if n ~= without then list[#list + 1] = '"{{' .. n:upper() .. '}}"' end
        end
        local targets = "{ " .. table.concat(list, ", ") .. " }"
        return table.concat({
            'local gw = require "moongate"',
            'gw.settings { access_log = "off" }',
            'gw.listen { port = {{PORT}}, host = "127.0.0.1" }',
            'local health = { path = "/health", interval = 0.05, timeout = 0.5, fall = 1, rise = 1 }',
            'gw.upstream("by_header", ' .. targets ..
                ', { hash = { header = "X-User" }, health = health })',
            'gw.upstream("by_cookie", ' .. targets .. ', { hash = { cookie = "sid" } })',
            'gw.upstream("by_query", ' .. targets .. ', { hash = { query = "user" } })',
            'gw.upstream("by_fn", ' .. targets ..
                ', { hash = function(req) return req:header("x-user") end })',
            'gw.upstream("by_path", ' .. targets .. ', { balancer = "hash", hash = "path" })',
            'gw.upstream("by_client", ' .. targets .. ', { hash = "client" })',
            'gw.upstream("weighted", { "{{A}}", "{{B}}", "{{C}}", "{{D}}", { "{{E}}", weight = 2 } },',
            '            { hash = { header = "x-user" } })',
            'gw.route { path = "/k", upstream = "by_header" }',
            'gw.route { path = "/c", upstream = "by_cookie" }',
            'gw.route { path = "/q", upstream = "by_query" }',
            'gw.route { path = "/f", upstream = "by_fn" }',
            'gw.route { path = "/p/**", upstream = "by_path" }',
            'gw.route { path = "/ip", upstream = "by_client" }',
            'gw.route { path = "/w", upstream = "weighted" }',
            'gw.route { path = "/pin", upstream = "by_header", policies = { function(req)',
            '    req:set_target("{{B}}") end } }',
        }, "\n") .. "\n"
    end

    setup(function()
        ups = h.start_upstreams(NAMES)
        local vars = {}
        for _, n in ipairs(NAMES) do vars[n:upper()] = ups[n] end
        gw = h.start_gateway(config(), { vars = vars })
    end)

    local base -- key i's target with all five up

    it("spreads 10,000 keys within 10 % of the weights", function()
        base = assign(gw.port, { header = "x-user" })
        local c = counts(base)
        for _, n in ipairs(NAMES) do
            local share = (c[n] or 0) / KEYS
            assert.truthy(math.abs(share - SHARE) <= 0.1 * SHARE,
                          fmt("%s has %.4f of the keys", n, share))
        end
        local w = counts(assign(gw.port, { header = "x-user", at = "/w" }))
        for _, n in ipairs(NAMES) do
            local want = n == "e" and 2 / 6 or 1 / 6
            local share = (w[n] or 0) / KEYS
            assert.truthy(math.abs(share - want) <= 0.1 * want,
                          fmt("weighted: %s has %.4f of the keys, weight says %.4f", n, share,
                              want))
        end
    end)

    it("moves only a down target's keys (health checks), and they return", function()
        local probe = key_of(base, "c")
        set_health(ups.c, "status=500")
        eventually(10, function() return name_for(gw.port, probe) ~= "c" end,
                   "the key of c moves once c fails its health checks")
        local down = assign(gw.port, { header = "x-user" })
        local n, others = moved(base, down, "c")
        assert.equal(0, others) -- keys of live targets stay
        assert.equal(counts(base).c, n) -- and every key of c moved
        assert.truthy(n <= 1.15 * SHARE * KEYS, fmt("%d of %d keys moved", n, KEYS))
        assert.is_nil(counts(down).c)
        -- c's keys went to the other four, not to one of them
        local to = {}
        for i = 1, KEYS do
            if base[i] == "c" then to[down[i]] = (to[down[i]] or 0) + 1 end
        end
        for _, name in ipairs({ "a", "b", "d", "e" }) do
            assert.truthy((to[name] or 0) > n / 8, fmt("%s took %d of c's keys", name,
                                                      to[name] or 0))
        end
        set_health(ups.c, "status=200")
        eventually(10, function() return name_for(gw.port, probe) == "c" end,
                   "the key of c returns once c passes its health check")
        assert.same(base, assign(gw.port, { header = "x-user" }))
    end)

    it("a reload without one target moves at most 1.15 x 1/5; with it back every key returns",
       function()
        local probe = key_of(base, "e")
        rewrite(gw, config("e"))
        eventually(10, function() return name_for(gw.port, probe) ~= "e" end,
                   "the reload without e")
        local without = assign(gw.port, { header = "x-user" })
        local n = moved(base, without)
        assert.truthy(n <= 1.15 * SHARE * KEYS, fmt("%d of %d keys moved", n, KEYS))
        assert.truthy(n >= counts(base).e) -- at least e's own keys
        rewrite(gw, config())
        eventually(10, function() return name_for(gw.port, probe) == "e" end,
                   "the reload with e back")
        assert.same(base, assign(gw.port, { header = "x-user" }))
    end)

    it("takes the key from a header, a cookie, a query argument or a Lua function alike",
       function()
        local n = 2000
        local by_header = assign(gw.port, { header = "x-user" }, n)
        assert.same(by_header, assign(gw.port, { cookie = "sid", at = "/c" }, n))
        assert.same(by_header, assign(gw.port, { query = "user", at = "/q" }, n))
        assert.same(by_header, assign(gw.port, { header = "x-user", at = "/f" }, n))
    end)

    it("hashes the path, and the client address", function()
        local by_path = assign(gw.port, { path = "/p" }, 2000)
        assert.same(by_path, assign(gw.port, { path = "/p" }, 2000))
        local c = counts(by_path)
        for _, name in ipairs(NAMES) do
            assert.truthy((c[name] or 0) > 300, fmt("%s has %d of 2000 paths", name,
                                                    c[name] or 0))
        end
        local seen = {}
        for _ = 1, 30 do
            local res = h.http(gw.port, { path = "/ip" })
            assert.equal(200, res.status)
            seen[res.headers["x-upstream-name"]] = true
        end
        local list = {}
        for k in pairs(seen) do list[#list + 1] = k end
        assert.equal(1, #list) -- one client address, one target
    end)

    it("balances requests without the key by round robin; set_target still wins", function()
        local seen, nseen = {}, 0
        for _ = 1, 20 do
            local res = h.http(gw.port, { path = "/k" })
            assert.equal(200, res.status)
            local name = res.headers["x-upstream-name"]
            if not seen[name] then nseen = nseen + 1 end
            seen[name] = true
        end
        assert.truthy(nseen >= 3, "requests without x-user reached " .. nseen .. " targets")
        for i = 1, 20 do
            assert.equal("b", name_for(gw.port, "user-" .. i, "/pin"))
        end
    end)
end)

describe("hash balancer with a dead target", function()
    it("sends the dead target's keys to their next target, the same each time", function()
        local ups = h.start_upstreams({ "a", "b" })
        local gw = h.start_gateway({
            settings = { access_log = "off" },
            upstreams = { { "h", { "{{A}}", "{{B}}", h.dead_addr() },
                            { hash = { header = "x-user" } } } },
            routes = { { path = "/k", upstream = "h" } },
        }, { vars = { A = ups.a, B = ups.b } })
        -- every key answered (a refused connection is retried on another
        -- target: mg_balancer_pick's exclude), twice the same way
        local first = assign(gw.port, { header = "x-user" }, 1000)
        assert.same(first, assign(gw.port, { header = "x-user" }, 1000))
        local c = counts(first)
        assert.truthy(c.a > 0 and c.b > 0)
        gw:stop()
    end)
end)

describe("every balancer", function()
    it("skips a dead target (a failed attempt is retried on another one)", function()
        local ups = h.start_upstreams({ "a", "b" })
        local upstreams, routes = {}, {}
        for _, b in ipairs({ "round_robin", "least_conn", "p2c_ewma" }) do
            upstreams[#upstreams + 1] = { b, { "{{A}}", h.dead_addr(), "{{B}}" },
                                          { balancer = b } }
            routes[#routes + 1] = { path = "/" .. b, upstream = b }
        end
        local gw = h.start_gateway({ settings = { access_log = "off" },
                                     upstreams = upstreams, routes = routes },
                                   { vars = { A = ups.a, B = ups.b } })
        for _, b in ipairs({ "round_robin", "least_conn", "p2c_ewma" }) do
            local seen = {}
            for _ = 1, 30 do
                local res = h.http(gw.port, { path = "/" .. b })
                assert.equal(200, res.status, b)
                seen[res.headers["x-upstream-name"]] = true
            end
            assert.truthy(seen.a and seen.b, b)
        end
        gw:stop()
    end)
end)

describe("p2c_ewma balancer", function()
    it("sends a target 10x slower under 10 % of the requests", function()
        local ups = h.start_upstreams({ { name = "fast1", delay = 0.005 },
                                        { name = "fast2", delay = 0.005 },
                                        { name = "slow", delay = 0.05 } })
        local admin = h.free_port()
        local gw = h.start_gateway({
            settings = { access_log = "off", admin = { port = admin } },
            upstreams = { { "p", { "{{F1}}", "{{F2}}", "{{S}}" }, { balancer = "p2c_ewma" } } },
            routes = { { path = "/**", upstream = "p" } },
        }, { vars = { F1 = ups.fast1, F2 = ups.fast2, S = ups.slow } })
        local r = h.load_start({ ports = { gw.port }, rate = 150, duration = 3, conns = 4,
                                 count_header = "x-upstream-name" })()
        local total, by = 0, r.header or {}
        for _, v in pairs(by) do total = total + v end
        assert.truthy(total >= 200, "only " .. total .. " answers: " .. cjson.encode(r))
        local slow = by.slow or 0
        assert.truthy(slow < 0.1 * total, fmt("slow got %d of %d", slow, total))
        -- the averages the workers share, as /upstreams shows them
        local ms = {}
        for _, t in ipairs(h.json(h.admin(admin, { path = "/upstreams" }).body).upstreams[1].targets) do
            ms[t.target] = t.latency_ms
        end
        assert.truthy(ms[ups.slow.addr] > 4 * ms[ups.fast1.addr], cjson.encode(ms))
        assert.truthy(ms[ups.slow.addr] > 4 * ms[ups.fast2.addr], cjson.encode(ms))
        gw:stop()
    end)
end)

describe("least_conn balancer", function()
    -- Six long requests, each followed by a short one, over two targets:
    -- the answers say where each long one ran. Each long request is seen
    -- by an upstream, and each short one has ended, before the next one is
    -- sent, so that every pick sees the counts of the requests before it.
    -- Returns where the long ones ran, and (least_conn) the gateway's own
    -- in-flight counts while they all were in flight (GET /upstreams).
    local function longs(balancer, workers)
        local ups = h.start_upstreams({ "a", "b" })
        local admin = h.free_port()
        local gw = h.start_gateway({
            settings = { access_log = "off", admin = { port = admin } },
            upstreams = { { "l", { "{{A}}", "{{B}}" }, { balancer = balancer } } },
            routes = { { path = "/**", upstream = "l" } },
        }, { vars = { A = ups.a, B = ups.b }, workers = workers })
        local function heads()
            return ups.a:stats().requests + ups.b:stats().requests
        end
        -- the gateway's in-flight count over both targets (nil: not counted)
        local function counted()
            local n = 0
            for _, t in ipairs(h.json(h.admin(admin, { path = "/upstreams" }).body)
                                   .upstreams[1].targets) do
                if not t.in_flight then return nil end
                n = n + t.in_flight
            end
            return n
        end
        local conns, sent = {}, 0
        for i = 1, 6 do
            local c = h.connect(gw.port, { timeout = 30 * h.SLOW })
            c:send(h.request_text({ path = fmt("/long?delay=%g", 4 * h.SLOW) }))
            conns[i] = c
            sent = sent + 1
            eventually(10, function() return heads() == sent end, "long request " .. i)
            local res = h.http(gw.port, { path = "/short" })
            assert.equal(200, res.status)
            sent = sent + 1
            -- the short one stops counting just after its answer went out,
            -- maybe after another worker's next pick: wait for it
            eventually(10, function()
                local n = counted()
                return n == nil or n == i
            end, "short request " .. i .. " no longer counted")
        end
        local in_flight = {}
        local st = h.json(h.admin(admin, { path = "/upstreams" }).body)
        for _, t in ipairs(st.upstreams[1].targets) do
            in_flight[t.target == ups.a.addr and "a" or "b"] = t.in_flight
        end
        local where = {}
        for _, c in ipairs(conns) do
            local res = assert(c:read_response({ timeout = 30 * h.SLOW }))
            assert.equal(200, res.status)
            local n = res.headers["x-upstream-name"]
            where[n] = (where[n] or 0) + 1
            c:close()
        end
        gw:stop()
        ups.a:stop()
        ups.b:stop()
        return where, in_flight, st.upstreams[1].balancer
    end

    it("keeps long requests balanced over two workers", function()
        local where, in_flight, name = longs("least_conn", 2)
        assert.same({ a = 3, b = 3 }, where)
        assert.equal("least_conn", name)
        assert.same({ a = 3, b = 3 }, in_flight) -- counted over both workers
    end)

    it("(round robin, one worker, piles them on one target)", function()
        local where = longs("round_robin", 1)
        assert.truthy(where.a == 6 or where.b == 6, cjson.encode(where))
    end)
end)
