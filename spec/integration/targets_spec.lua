-- Runtime target changes through the admin API (docs/discovery.md): add,
-- remove, set a weight and drain, under load with real upstream processes;
-- a slow request in flight on a draining target finishes there; changes
-- survive a reload until the file changes the upstream; bad bodies get a
-- 400 that says why.
local h = require "spec.support.helpers"
local cjson = require "cjson"

local RATE = h.SLOW > 1 and 150 or 400
-- the workers take a new view at their next loop turn: a change shows
-- within SLACK; each phase of the load test runs PHASE seconds
local SLACK = 0.5 * h.SLOW
local PHASE = 1.5 + SLACK

local function call(admin, method, path, body)
    local res = h.admin(admin, { method = method, path = path,
                                 body = body and (type(body) == "string" and body
                                                  or cjson.encode(body)) or "" })
    local ok, decoded = pcall(cjson.decode, res.body)
    return res.status, ok and decoded or res.body, res
end

local targets_of, sorted_keys = h.upstream_targets, h.sorted_keys

local function sorted(t)
    table.sort(t)
    return t
end

-- Answers by upstream name in the timeline between t0 and t1 (seconds
-- after wall time `since`).
local function window(r, since, t0, t1)
    local out = {}
    for _, e in ipairs(r.timeline) do
        local t = r.t0 + e[1] - since
        if t >= t0 and t < t1 and e[3] == 200 then out[e[5]] = (out[e[5]] or 0) + 1 end
    end
    return out
end

-- svc's targets (Lua text), its options (text, or none) and routes before
-- the catch-all one (text, or none)
local function config(admin, targets, options, routes)
    return ([[
local gw = require "moongate"
gw.settings { admin = { port = %d }, access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { %s }%s)
gw.upstream("small", { "127.0.0.1:9" }, { max_targets = 1 })
%s
gw.route { path = "/**", upstream = "svc" }
]]):format(admin, targets, options and ", " .. options or "", routes or "")
end

describe("admin API target changes", function()
    teardown(h.cleanup)

    it("adds, weighs and removes targets under load with 0 failed requests", function()
        local u1 = h.start_upstream { name = "u1" }
        local u2 = h.start_upstream { name = "u2" }
        local u3 = h.start_upstream { name = "u3" }
        local admin = h.free_port()
        local gw = h.start_gateway(config(admin, ('"%s"'):format(u1.addr)))
        local wait = h.load_start { ports = { gw.port }, paths = { "/x" }, rate = RATE,
                                    duration = 4 + 3 * PHASE, conns = 20, timeline = true,
                                    count_header = "x-upstream-name", timeout = 10 }
        -- the load runs (python starts slowly on a busy machine), then a
        -- second of it on u1 alone
        h.eventually(10, function() return u1:stats().requests > 0 end, "the load starts")
        local start = h.now()
        h.sleep(1)
        local code, j = call(admin, "POST", "/upstreams/svc/targets", { target = u2.addr })
        assert.equal(201, code)
        assert.same({ ok = true, upstream = "svc", target = u2.addr, resolving = false }, j)
        code = call(admin, "POST", "/upstreams/svc/targets", { target = u3.addr, weight = 1 })
        assert.equal(201, code)
        local added_at = h.now() - start
        h.sleep(PHASE)
        code, j = call(admin, "PUT", "/upstreams/svc/targets/" .. u3.addr, { weight = 4 })
        assert.equal(200, code)
        assert.same({ ok = true, upstream = "svc", target = u3.addr, weight = 4,
                      state = "active" }, j)
        local weighed_at = h.now() - start
        h.sleep(PHASE)
        code = call(admin, "DELETE", "/upstreams/svc/targets/" .. u1.addr)
        assert.equal(200, code)
        local removed_at = h.now() - start
        local r = wait()
        gw:assert_alive()

        assert.equal(0, r.errors, "socket errors: " .. cjson.encode(r.error_kinds))
        assert.same({ ["200"] = r.sent }, r.status)
        -- each change shows within a moment
        local before = window(r, start, -100, 1)
        assert.same({ "u1" }, sorted_keys(before))
        local spread = window(r, start, added_at + SLACK, weighed_at)
        assert.same({ "u1", "u2", "u3" }, sorted_keys(spread))
        local weighed = window(r, start, weighed_at + SLACK, removed_at)
        -- weights 1, 1, 4: u3 gets two thirds
        local total = (weighed.u1 or 0) + (weighed.u2 or 0) + (weighed.u3 or 0)
        print(("weights 1:1:4 -> u1 %d, u2 %d, u3 %d"):format(weighed.u1 or 0, weighed.u2 or 0,
                                                               weighed.u3 or 0))
        assert.truthy(math.abs(weighed.u3 / total - 4 / 6) < 0.1, cjson.encode(weighed))
        local after = window(r, start, removed_at + SLACK, 100)
        assert.is_nil(after.u1)
        assert.truthy((after.u2 or 0) > 0 and (after.u3 or 0) > 0)
        -- /upstreams says where they came from
        local t, u = targets_of(admin, "svc")
        assert.same(sorted { u2.addr, u3.addr }, sorted_keys(t))
        assert.equal("admin", t[u2.addr].source)
        table.sort(u.admin_changes.added)
        assert.same({ added = sorted { u2.addr, u3.addr }, removed = { u1.addr }, drained = {},
                      weights = { [u3.addr] = 4 } }, u.admin_changes)
        assert.truthy(u1:alive())
    end)

    it("drains a target: no new requests, the slow one in flight finishes, then it is removed", function()
        local slow = h.start_upstream { name = "slow" }
        local fast = h.start_upstream { name = "fast" }
        local admin = h.free_port()
        local gw = h.start_gateway(config(admin, ('"%s"'):format(slow.addr)))
        -- a request that takes 2 s on the only target
        local c = h.connect(gw.port)
        c:send("GET /x?delay=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        h.eventually(5, function()
            return (targets_of(admin, "svc")[slow.addr].busy_connections or 0) == 1
        end, "the slow request is in flight")
        assert.equal(201, (call(admin, "POST", "/upstreams/svc/targets", { target = fast.addr })))
        local code, j = call(admin, "PUT", "/upstreams/svc/targets/" .. slow.addr, { drain = true })
        assert.equal(200, code)
        assert.equal("draining", j.state)
        local t = targets_of(admin, "svc")
        assert.equal("draining", t[slow.addr].state)
        assert.equal(1, t[slow.addr].busy_connections)
        -- new requests: all to the other one
        h.sleep(0.2 * h.SLOW)
        for _ = 1, 20 do
            local res = h.http(gw.port, { path = "/y" })
            assert.equal(200, res.status)
            assert.equal("fast", res.headers["x-upstream-name"])
        end
        -- the one in flight finishes on the draining target
        local res = assert(c:read_response { timeout = 10 })
        assert.equal(200, res.status)
        assert.equal("slow", res.headers["x-upstream-name"])
        c:close()
        -- nothing left on it (no idle connection kept either): removed
        h.eventually(5, function()
            local s = targets_of(admin, "svc")[slow.addr]
            return s.busy_connections == 0 and s.idle_connections == 0
        end, "the draining target has no connection left")
        assert.equal(200, (call(admin, "DELETE", "/upstreams/svc/targets/" .. slow.addr)))
        assert.same({ fast.addr }, sorted_keys(targets_of(admin, "svc")))
        -- undrain works too: PUT drain = false on one that drains
        assert.equal(200, (call(admin, "PUT", "/upstreams/svc/targets/" .. fast.addr,
                                { drain = true })))
        h.assert_error(h.http(gw.port, { path = "/z" }), 503)
        assert.equal(200, (call(admin, "PUT", "/upstreams/svc/targets/" .. fast.addr,
                                { drain = false })))
        h.eventually(2, function() return h.http(gw.port, { path = "/z" }).status == 200 end,
                     "undrained")
    end)

    it("keeps admin changes across a reload until the file changes the upstream", function()
        local ups = h.start_upstreams { "u1", "u2", "u3", "u4", "u5" }
        local u1, u2, u3, u4, u5 = ups.u1, ups.u2, ups.u3, ups.u4, ups.u5
        local admin = h.free_port()
        local gw = h.start_gateway(config(admin, ('"%s", "%s", "%s"'):format(u1.addr, u4.addr,
                                                                           u5.addr)))
        -- one change of each kind: added, weighed, drained, removed
        assert.equal(201, (call(admin, "POST", "/upstreams/svc/targets", { target = u2.addr,
                                                                           weight = 2 })))
        assert.equal(200, (call(admin, "PUT", "/upstreams/svc/targets/" .. u1.addr,
                                { weight = 3 })))
        assert.equal(200, (call(admin, "PUT", "/upstreams/svc/targets/" .. u4.addr,
                                { drain = true })))
        assert.equal(200, (call(admin, "DELETE", "/upstreams/svc/targets/" .. u5.addr)))
        local function kept(when)
            local t = targets_of(admin, "svc")
            assert.same(sorted { u1.addr, u2.addr, u4.addr }, sorted_keys(t), when)
            assert.equal(2, t[u2.addr].weight, when)
            assert.equal(3, t[u1.addr].weight, when)
            assert.equal("admin", t[u2.addr].source, when)
            assert.equal("draining", t[u4.addr].state, when)
            assert.equal("active", t[u1.addr].state, when)
            -- requests follow them: u1 and u2 (3:2), never the drained or removed one
            local got = {}
            for _ = 1, 50 do
                local res = h.http(gw.port, { path = "/x" })
                assert.equal(200, res.status)
                local n = res.headers["x-upstream-name"]
                got[n] = (got[n] or 0) + 1
            end
            assert.same({ "u1", "u2" }, sorted_keys(got), when)
            assert.truthy(got.u1 > got.u2, when .. ": " .. cjson.encode(got))
        end
        kept("before a reload")
        -- the same file again: the changes stay
        local code, j = call(admin, "POST", "/reload")
        assert.equal(200, code, cjson.encode(j))
        kept("after reloading the same file")
        -- a reload that changes another upstream keeps them too
        local text = h.read_file(gw.config_path)
        h.write_file(gw.config_path, text:gsub('"127.0.0.1:9"', '"127.0.0.1:10"'))
        assert.equal(200, (call(admin, "POST", "/reload")))
        kept("after a reload that changed another upstream")
        assert.equal(0, select(2, gw:log():gsub("admin API target change", "")))
        -- the file changes svc's targets: the file wins, the changes go
        h.write_file(gw.config_path, h.read_file(gw.config_path):gsub(
            '"' .. u1.addr:gsub("%p", "%%%0") .. '"', ('"%s", "%s"'):format(u1.addr, u3.addr)))
        assert.equal(200, (call(admin, "POST", "/reload")))
        local t = targets_of(admin, "svc")
        assert.same(sorted { u1.addr, u3.addr, u4.addr, u5.addr }, sorted_keys(t))
        assert.equal(1, t[u1.addr].weight)
        assert.equal("config", t[u3.addr].source)
        assert.equal("active", t[u4.addr].state)
        assert.truthy(gw:log():find("upstream svc: the config file changed its targets; its 4 " ..
                                    "admin API target changes dropped (the file wins)", 1, true))
        local got = {}
        for _ = 1, 40 do
            local n = h.http(gw.port, { path = "/x" }).headers["x-upstream-name"]
            got[n] = true
        end
        assert.same({ "u1", "u3", "u4", "u5" }, sorted_keys(got))
    end)

    it("closes a connection of a request from before a reload when its target has left, even if another took its slot", function()
        -- one worker (the connection comes back to its pool), one slot (the
        -- new target takes the old one's)
        local old = h.start_upstream { name = "old" }
        local new = h.start_upstream { name = "new" }
        local admin = h.free_port()
        local gw = h.start_gateway(config(admin, ('"%s"'):format(old.addr), "{ max_targets = 1 }"),
                                   { workers = 1 })
        local c = h.connect(gw.port)
        c:send("GET /x?delay=" .. 1.5 * h.SLOW .. " HTTP/1.1\r\nHost: x\r\n\r\n")
        h.eventually(5, function()
            return (targets_of(admin, "svc")[old.addr].busy_connections or 0) == 1
        end, "the slow request is in flight")
        -- a new generation while it is in flight; then its target leaves
        -- and the new one takes the slot (once nothing of the new
        -- generation uses it)
        assert.equal(200, (call(admin, "POST", "/reload")))
        assert.equal(200, (call(admin, "DELETE", "/upstreams/svc/targets/" .. old.addr)))
        h.eventually(5, function()
            return call(admin, "POST", "/upstreams/svc/targets", { target = new.addr }) == 201
        end, "the new target takes the slot")
        local res = assert(c:read_response { timeout = 10 * h.SLOW })
        assert.equal(200, res.status)
        assert.equal("old", res.headers["x-upstream-name"])
        c:close()
        -- the old target's connection did not join the new one's pool
        for _ = 1, 10 do
            res = h.http(gw.port, { path = "/y" })
            assert.equal(200, res.status)
            assert.equal("new", res.headers["x-upstream-name"])
        end
        assert.equal(1, old:stats().requests)
        gw:assert_alive()
    end)

    it("answers 503 to a request set_target pins to a draining target", function()
        local u1 = h.start_upstream { name = "u1" }
        local u2 = h.start_upstream { name = "u2" }
        local admin = h.free_port()
        local gw = h.start_gateway(config(admin, ('"%s", "%s"'):format(u1.addr, u2.addr), nil,
            ('gw.route { path = "/pin", upstream = "svc", policies = { function(req)\n' ..
             '    req:set_target("%s") end } }'):format(u1.addr)))
        assert.equal("u1", h.http(gw.port, { path = "/pin" }).headers["x-upstream-name"])
        assert.equal(200, (call(admin, "PUT", "/upstreams/svc/targets/" .. u1.addr,
                                { drain = true })))
        -- every worker takes the view at its next loop turn
        h.eventually(2, function() return h.http(gw.port, { path = "/pin" }).status == 503 end,
                     "the pinned request is refused")
        for _ = 1, 10 do
            h.assert_error(h.http(gw.port, { path = "/pin" }), 503)
            assert.equal("u2", h.http(gw.port, { path = "/any" }).headers["x-upstream-name"])
        end
        assert.truthy(gw:log():find("the target set_target chose is draining", 1, true))
        gw:assert_alive()
    end)

    it("answers bad requests with 4xx and a reason, and changes nothing", function()
        local u1 = h.start_upstream { name = "u1" }
        local admin = h.free_port()
        local gw = h.start_gateway(config(admin, ('"%s"'):format(u1.addr)))
        local cases = {
            { "POST", "/upstreams/svc/targets", "not json", 400, "the body must be one JSON object" },
            { "POST", "/upstreams/svc/targets", "[1]", 400, "the body must be one JSON object" },
            { "POST", "/upstreams/svc/targets", { target = "x:1", colour = "red" }, 400,
              'unknown key "colour" (valid: target, weight, drain)' },
            { "POST", "/upstreams/svc/targets", {}, 400, 'needs "target"' },
            { "POST", "/upstreams/svc/targets", { target = "nohost" }, 400,
              '"target" must be "host:port", "[ipv6]:port" or "srv://_service._proto.name" ' ..
              '(missing ":port"), got "nohost"' },
            { "POST", "/upstreams/svc/targets", { target = "https://a.example" }, 400, "no scheme" },
            { "POST", "/upstreams/svc/targets", { target = "10.0.0.1:80", weight = 0 }, 400,
              '"weight" must be an integer >= 1' },
            { "POST", "/upstreams/svc/targets", { target = "10.0.0.1:80", weight = "2" }, 400,
              '"weight" must be an integer >= 1' },
            { "POST", "/upstreams/svc/targets", { target = "10.0.0.1:80", weight = 1.5 }, 400,
              '"weight" must be an integer >= 1' },
            { "POST", "/upstreams/svc/targets", { target = u1.addr }, 409,
              "upstream svc already has target " .. u1.addr },
            { "POST", "/upstreams/nope/targets", { target = "10.0.0.1:80" }, 404,
              "no upstream is called nope" },
            { "POST", "/upstreams/small/targets", { target = "10.0.0.1:80" }, 409,
              "upstream small has no free target slot (max_targets = 1" },
            { "PUT", "/upstreams/svc/targets/" .. u1.addr, {}, 400, 'needs "weight" and/or "drain"' },
            { "PUT", "/upstreams/svc/targets/" .. u1.addr, { drain = "yes" }, 400,
              '"drain" must be true or false' },
            { "PUT", "/upstreams/svc/targets/10.9.9.9:1", { weight = 2 }, 404,
              "upstream svc has no target 10.9.9.9:1" },
            { "DELETE", "/upstreams/svc/targets/" .. u1.addr, { weight = 2 }, 400,
              'DELETE takes no "weight" or "drain"' },
            { "PUT", "/upstreams/svc/targets", { weight = 2 }, 405, "PUT and DELETE need the target" },
            { "POST", "/upstreams/svc/other", { target = "10.0.0.1:80" }, 404,
              "/upstreams/NAME/targets[/TARGET]" },
        }
        for _, c in ipairs(cases) do
            local code, j = call(admin, c[1], c[2], c[3])
            assert.equal(c[4], code, c[1] .. " " .. c[2] .. ": " .. cjson.encode(j))
            assert.is_false(j.ok)
            assert.truthy(j.error:find(c[5], 1, true), j.error .. "\n  wanted: " .. c[5])
        end
        -- without the Content-Type no page could send: 415; GET is not one of them: 405
        local res = h.http(admin, { method = "POST", path = "/upstreams/svc/targets",
                                    headers = { Host = "127.0.0.1:" .. admin },
                                    body = '{"target":"10.0.0.1:80"}' })
        assert.equal(415, res.status)
        res = h.admin(admin, { path = "/upstreams/svc/targets" })
        assert.equal(405, res.status)
        assert.equal("POST, PUT, DELETE", res.headers["allow"])
        -- nothing changed; the 409 for the full upstream said it, the log does not
        assert.same({ u1.addr }, sorted_keys(targets_of(admin, "svc")))
        assert.is_nil(gw:log():find("do not fit", 1, true))
        -- and the refused add left no (empty) change to keep
        assert.is_nil(select(2, targets_of(admin, "small")).admin_changes)
        -- a change undone leaves none either: removed, then added back
        assert.equal(200, (call(admin, "DELETE", "/upstreams/svc/targets/" .. u1.addr)))
        assert.same({ u1.addr }, select(2, targets_of(admin, "svc")).admin_changes.removed)
        assert.equal(201, (call(admin, "POST", "/upstreams/svc/targets", { target = u1.addr })))
        assert.is_nil(select(2, targets_of(admin, "svc")).admin_changes)
        assert.same({ u1.addr }, sorted_keys(targets_of(admin, "svc")))
    end)
end)
