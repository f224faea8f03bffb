-- Active health checks: real upstream servers whose /health answer the
-- specs change while traffic flows through the gateway.
local h = require "spec.support.helpers"

local function set_health(up, query)
    return h.json(h.http(up.port, { path = "/__health?" .. query }).body)
end

-- Which upstreams answered n requests, as { name = count } (one worker:
-- its round robin alternates exactly).
local function spread(port, n)
    local seen = {}
    for _ = 1, n do
        local res = h.http(port, { path = "/svc/x" })
        assert.equal(200, res.status)
        local name = res.headers["x-upstream-name"]
        seen[name] = (seen[name] or 0) + 1
    end
    return seen
end

-- Polls until f() is true (or fails after `seconds`).
local eventually = h.eventually

describe("active health checks", function()
    local gw, ups, admin

    local function target(name)
        local body = h.admin(admin, { path = "/upstreams" }).body
        for _, u in ipairs(h.json(body).upstreams) do
            for _, t in ipairs(u.targets) do
                if t.target == ups[name].addr then return t end
            end
        end
    end

    setup(function()
        ups = h.start_upstreams { "a", "b" }
        admin = h.free_port()
        gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "{{B}}" }, {
    health = { path = "/health", interval = 0.1, timeout = 0.3, fall = 2, rise = 2 },
})
gw.route { path = "/svc/**", upstream = "svc" }
]]):format(admin), { vars = { A = ups.a, B = ups.b }, workers = 1 })
    end)

    teardown(h.cleanup)

    before_each(function()
        set_health(ups.a, "status=200&delay=0")
        set_health(ups.b, "status=200&delay=0")
        eventually(3, function()
            return target("a").checks.state == "up" and target("b").checks.state == "up"
        end, "both targets up")
    end)

    it("checks every target with GET <path>", function()
        local before = set_health(ups.a, "").checks
        h.sleep(0.5)
        assert.truthy(set_health(ups.a, "").checks >= before + 2)
        -- health checks are not requests of the service
        assert.same({ a = 2, b = 2 }, spread(gw.port, 4))
    end)

    it("a target answering 503 is taken out, and comes back when it recovers", function()
        set_health(ups.b, "status=503")
        eventually(3, function() return target("b").checks.state == "down" end, "b down")
        local t = target("b")
        assert.equal("down", t.health)
        assert.equal("status 503", t.checks.last_error)
        assert.same({ a = 10 }, spread(gw.port, 10))
        assert.truthy(gw:log():find("target " .. ups.b.addr .. " taken out: status 503", 1, true))
        local metrics = h.admin(admin, { path = "/metrics" }).body
        assert.truthy(metrics:find(('moongate_upstream_target_up{upstream="svc",target="%s"} 0')
            :format(ups.b.addr), 1, true), metrics)
        assert.truthy(metrics:find(('moongate_upstream_target_up{upstream="svc",target="%s"} 1')
            :format(ups.a.addr), 1, true), metrics)
        set_health(ups.b, "status=200")
        eventually(3, function() return target("b").checks.state == "up" end, "b back")
        assert.same({ a = 5, b = 5 }, spread(gw.port, 10))
        assert.truthy(gw:log():find("target " .. ups.b.addr .. " is back", 1, true))
    end)

    it("a target that does not answer in time is taken out", function()
        set_health(ups.a, "delay=1")
        eventually(4, function() return target("a").checks.state == "down" end, "a down")
        assert.equal("no answer within the health timeout", target("a").checks.last_error)
        assert.same({ b = 6 }, spread(gw.port, 6))
    end)

    it("when every target is out, they all get traffic again", function()
        set_health(ups.a, "status=500")
        set_health(ups.b, "status=500")
        eventually(3, function()
            return target("a").checks.state == "down" and target("b").checks.state == "down"
        end, "both down")
        local seen = spread(gw.port, 6)
        assert.equal(6, (seen.a or 0) + (seen.b or 0))
    end)

    it("a reload keeps a target that is down out", function()
        set_health(ups.b, "status=503")
        eventually(3, function() return target("b").checks.state == "down" end, "b down")
        local res = h.admin(admin, { method = "POST", path = "/reload" })
        assert.equal(200, res.status)
        -- at once: the new generation starts from the old one's state
        assert.equal("down", target("b").checks.state)
        assert.same({ a = 6 }, spread(gw.port, 6))
    end)

    it("a target that refuses connections is taken out", function()
        local extra = h.start_upstream { name = "c" }
        local admin2 = h.free_port()
        local gw2 = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "{{C}}" }, {
    health = { path = "/health", interval = 0.1, timeout = 0.3, fall = 1, rise = 1 },
})
gw.route { path = "/svc/**", upstream = "svc" }
]]):format(admin2), { vars = { A = ups.a, C = extra } })
        h.cleanup(extra)
        eventually(3, function()
            local body = h.json(h.admin(admin2, { path = "/upstreams" }).body)
            local t = body.upstreams[1].targets[2]
            return t.checks.state == "down"
                and t.checks.last_error:lower():find("refused", 1, true) ~= nil
        end, "c down with connection refused")
        h.cleanup(gw2)
    end)
end)

describe("health check config", function()
    teardown(h.cleanup)

    local function check(opts)
        return h.check_config(([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.upstream("svc", { "127.0.0.1:9001" }, { health = %s })
gw.route { path = "/", upstream = "svc" }
]]):format(opts))
    end

    it("names what is wrong", function()
        local code, out = check('{ path = "health" }')
        assert.equal(1, code)
        assert.truthy(out:find(':3: upstream.health.path must be a path like "/health"', 1, true),
            out)
        code, out = check('{ path = "/h", fall = 0 }')
        assert.truthy(out:find("upstream.health.fall must be an integer 1-100", 1, true), out)
        code, out = check('{ path = "/h", every = 1 }')
        assert.truthy(out:find("unknown key 'every' in upstream.health", 1, true), out)
        code, out = check('"/health"')
        assert.truthy(out:find("upstream.health must be a table", 1, true), out)
        code, out = check('{ path = "/health", interval = 2, timeout = 0.5 }')
        assert.equal(0, code, out)
    end)
end)

describe("passive circuit breaking (max_fails, fail_timeout)", function()
    local socket = require "socket"
    local up, closer, hole

    -- A target that accepts and closes at once, without an answer.
    local function start_closer()
        local port = h.free_port()
        local p = h.spawn(("python3 -c %s"):format(h.shq(([[
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(64); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(4096); c.close()
]]):format(port))), "closer")
        local deadline = h.now() + 5
        while not p:log():find("ready", 1, true) and h.now() < deadline do h.sleep(0.02) end
        return "127.0.0.1:" .. port
    end

    setup(function()
        up = h.start_upstream { name = "a" }
        closer = start_closer()
        -- a listening socket nobody accepts on: connections complete in the
        -- kernel's backlog and never get an answer
        hole = assert(socket.bind("127.0.0.1", 0)) -- bound and listening
    end)

    teardown(function()
        hole:close()
        h.cleanup()
    end)

    local function statuses(port, n)
        local out = {}
        for i = 1, n do
            local res = h.http(port, { path = "/svc/" .. i })
            out[i] = res.status == 200 and res.headers["x-upstream-name"] or res.status
        end
        return out
    end

    local function gateway(bad, opts)
        return h.start_gateway(([[
local gw = require "moongate"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("svc", { "{{A}}", "%s" }, %s)
gw.route { path = "/svc/**", upstream = "svc" }
]]):format(bad, opts), { vars = { A = up }, workers = 1 })
    end

    it("max_fails answers that never came take a target out for fail_timeout", function()
        local gw = gateway(closer, "{ max_fails = 2, fail_timeout = 30 }")
        -- round robin: a, bad (502), a, bad (502, second failure: out), then a only
        assert.same({ "a", 502, "a", 502, "a", "a", "a", "a" }, statuses(gw.port, 8))
        h.cleanup(gw)
    end)

    it("a target that times out is skipped after one failure by default", function()
        local _, hport = hole:getsockname()
        local gw = gateway("127.0.0.1:" .. hport, "{ read_timeout = 0.3 }")
        assert.same({ "a", 504, "a", "a", "a" }, statuses(gw.port, 5))
        h.cleanup(gw)
    end)

    it("max_fails = 0 never takes a target out", function()
        local gw = gateway(closer, "{ max_fails = 0 }")
        assert.same({ "a", 502, "a", 502, "a", 502 }, statuses(gw.port, 6))
        h.cleanup(gw)
    end)
end)
