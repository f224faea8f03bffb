-- Service discovery (docs/discovery.md): upstream targets named by host,
-- looked up in a real DNS server (Debian's dnsmasq, spec/support/dnsmasq.lua)
-- on a loopback port as settings.resolver, with real upstream processes on
-- 127.0.0.2, .3, .4: records changed under load, SRV records with their
-- ports, weights and priorities, and a resolver that dies or says NXDOMAIN.
local h = require "spec.support.helpers"
local dnsmasq = require "spec.support.dnsmasq"
local cjson = require "cjson"

-- Under ASan the gateway does about a third of the work per second.
local RATE = h.SLOW > 1 and 150 or 400
-- a record's TTL is 1 s (--local-ttl=1); what a change may take on top
-- of it: the lookup, the workers taking the new view, the next request
local TTL, SLACK = 1, 1.5 * h.SLOW

local function metrics(admin)
    local res = h.admin(admin, { path = "/metrics" })
    assert.equal(200, res.status)
    local out = {}
    for name, v in res.body:gmatch("\n([%w_]+{[^}]*}) ([%d%.e+-]+)") do out[name] = tonumber(v) end
    return out
end

local function upstreams(admin)
    local res = h.admin(admin, { path = "/upstreams" })
    assert.equal(200, res.status)
    return cjson.decode(res.body)
end

local targets_of, sorted_keys = h.upstream_targets, h.sorted_keys

local function log_count(gw, text)
    return select(2, gw:log():gsub(text:gsub("%p", "%%%0"), ""))
end

-- From a load's timeline: the first and the last time (seconds after
-- `since`, a wall time) an answer came from upstream `name`.
local function seen(r, name, since)
    local first, last
    for _, e in ipairs(r.timeline) do
        local t = r.t0 + e[1] - since
        if e[5] == name then
            if t >= 0 and not first then first = t end
            last = t
        end
    end
    return first, last
end

local function gateway(resolver, admin, upstreams_lua, extra)
    return h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d }, access_log = "off", resolver = %q,
              dns = { timeout = 0.2, attempts = 2, retry = 0.5 }%s }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
%s
gw.route { path = "/**", upstream = "svc" }
]]):format(admin, resolver, extra or "", upstreams_lua))
end

describe("DNS discovery with dnsmasq as the resolver", function()
    teardown(h.cleanup)

    it("follows a name's records changed mid-load within the TTL, without a reload or a failed request", function()
        local port = h.free_port()
        local ups = {}
        for _, n in ipairs { "2", "3", "4" } do
            ups[n] = h.start_upstream { name = "u" .. n, host = "127.0.0." .. n, port = port }
        end
        local dns = dnsmasq.start { hosts = { ["api.test"] = { "127.0.0.2", "127.0.0.3" } } }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, ([[
gw.upstream("svc", { "api.test:%d" }, { outlier = { consecutive_5xx = 100 } })]]):format(port))
        local before = targets_of(admin, "svc")
        assert.same({ "127.0.0.2:" .. port, "127.0.0.3:" .. port }, sorted_keys(before))
        assert.equal("dns", before["127.0.0.2:" .. port].source)
        assert.equal("api.test:" .. port, before["127.0.0.2:" .. port].from)

        local duration = 6
        local wait = h.load_start { ports = { gw.port }, paths = { "/x" }, rate = RATE,
                                    duration = duration, conns = 20, timeline = true,
                                    count_header = "x-upstream-name", timeout = 10 }
        h.eventually(10, function() return ups["3"]:stats().requests > 0 end, "the load starts")
        h.sleep(1)
        local mid = targets_of(admin, "svc")["127.0.0.3:" .. port].outlier.attempts
        -- 127.0.0.2 goes, 127.0.0.4 comes, 127.0.0.3 stays
        local changed_at = dns:set_hosts { ["api.test"] = { "127.0.0.3", "127.0.0.4" } }
        local r = wait()
        gw:assert_alive()

        assert.equal(0, r.errors, "socket errors: " .. cjson.encode(r.error_kinds))
        assert.same({ ["200"] = r.sent }, r.status)
        local first4 = seen(r, "u4", changed_at)
        local _, last2 = seen(r, "u2", changed_at)
        print(("records changed: first answer from the new address %.2f s later, last from " ..
               "the old one %.2f s later (TTL %d s)"):format(first4 or -1, last2 or -1, TTL))
        assert.truthy(first4 and first4 <= TTL + SLACK, "the new address took " .. tostring(first4))
        assert.truthy(last2 and last2 <= TTL + SLACK, "the old address still served at " ..
                      tostring(last2))
        assert.truthy((r.header.u4 or 0) > 0 and (r.header.u3 or 0) > 0)
        -- no reload: still generation 1; the address that stayed kept its state
        local after, u = targets_of(admin, "svc")
        assert.equal(1, upstreams(admin).generation)
        assert.equal(0, log_count(gw, "reloaded"))
        assert.same({ "127.0.0.3:" .. port, "127.0.0.4:" .. port }, sorted_keys(after))
        assert.truthy(after["127.0.0.3:" .. port].outlier.attempts > mid,
                      "the staying target's counts started again")
        assert.equal("ok", u.dns[1].state)
        assert.equal(2, u.dns[1].addresses)
        assert.truthy(metrics(admin)['moongate_dns_lookups_total{name="api.test",result="ok"}'] >= 4)
    end)

    it("makes every A and AAAA record a target", function()
        local port = h.free_port()
        local v4 = h.start_upstream { name = "v4", host = "127.0.0.2", port = port }
        local v6 = h.start_upstream { name = "v6", host = "::1", port = port }
        local dns = dnsmasq.start { hosts = { ["dual.test"] = { "127.0.0.2", "::1" } } }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, ([[
gw.upstream("svc", { { "dual.test:%d", weight = 2 } })]]):format(port))
        local t, u = targets_of(admin, "svc")
        local a4, a6 = "127.0.0.2:" .. port, "[::1]:" .. port
        assert.same(sorted_keys { [a4] = 1, [a6] = 1 }, sorted_keys(t))
        assert.same({ 2, 2 }, { t[a4].weight, t[a6].weight })
        assert.equal("dual.test:" .. port, t[a6].from)
        assert.equal(2, u.dns[1].addresses)
        local got = {}
        for _ = 1, 20 do
            local res = h.http(gw.port, { path = "/x" })
            assert.equal(200, res.status)
            got[res.headers["x-upstream-name"]] = true
        end
        assert.same({ "v4", "v6" }, sorted_keys(got))
        -- the declared name, not the address, is the Host a request without one gets
        local c = h.connect(gw.port)
        c:send("GET /x HTTP/1.0\r\n\r\n")
        local res = c:read_response()
        c:close()
        assert.equal("dual.test:" .. port, cjson.decode(res.body).headers.host)
        assert.truthy(v4:alive() and v6:alive())
    end)

    it("takes what fits in max_targets and says so once, not at every lookup", function()
        local port = h.free_port()
        for _, n in ipairs { "2", "3", "4" } do
            h.start_upstream { name = "u" .. n, host = "127.0.0." .. n, port = port }
        end
        local dns = dnsmasq.start { hosts = { ["many.test"] = { "127.0.0.2", "127.0.0.3",
                                                               "127.0.0.4" } } }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, ([[
gw.upstream("svc", { "many.test:%d" }, { max_targets = 2 })]]):format(port))
        assert.equal(2, #sorted_keys(targets_of(admin, "svc")))
        -- several lookups later (TTL 1 s), still two and one line
        h.eventually(10, function()
            return (metrics(admin)['moongate_dns_lookups_total{name="many.test",result="ok"}']
                    or 0) >= 4
        end, "more lookups")
        assert.equal(2, #sorted_keys(targets_of(admin, "svc")))
        assert.equal(1, log_count(gw, "upstream svc: 1 of its 3 targets do not fit in " ..
                                      "max_targets (2)"))
        for _ = 1, 10 do assert.equal(200, h.http(gw.port, { path = "/x" }).status) end
    end)

    it("balances over SRV records by their ports and weights, the best priority first", function()
        local a = h.start_upstream { name = "a", host = "127.0.0.2" }
        local b = h.start_upstream { name = "b", host = "127.0.0.3" }
        local c = h.start_upstream { name = "c", host = "127.0.0.4" }
        local dns = dnsmasq.start {
            host_records = { "a.test,127.0.0.2", "b.test,127.0.0.3", "c.test,127.0.0.4" },
            srv = { { "_http._tcp.svc.test", "a.test", a.port, 1, 30 },
                    { "_http._tcp.svc.test", "b.test", b.port, 1, 10 },
                    { "_http._tcp.svc.test", "c.test", c.port, 2, 10 } } }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, [[
gw.upstream("svc", { "srv://_http._tcp.svc.test" }, { retries = { attempts = 3 } })]])
        local t = targets_of(admin, "svc")
        assert.same({ a.addr, b.addr, c.addr }, sorted_keys(t))
        assert.same({ 30, 1 }, { t[a.addr].weight, t[a.addr].priority })
        assert.same({ 10, 2 }, { t[c.addr].weight, t[c.addr].priority })
        assert.equal("srv", t[a.addr].source)

        local n, got = 400, {}
        for _ = 1, n do
            local res = h.http(gw.port, { path = "/s" })
            assert.equal(200, res.status)
            local who = res.headers["x-upstream-name"]
            got[who] = (got[who] or 0) + 1
        end
        print(("SRV weights 30:10 (priority 1), 10 (priority 2): a %d, b %d, c %d"):format(
            got.a or 0, got.b or 0, got.c or 0))
        assert.is_nil(got.c) -- priority 2 waits while priority 1 has a target up
        assert.truthy(math.abs((got.a or 0) - n * 3 / 4) <= n * 0.1, "a: " .. tostring(got.a))
        -- a request without Host gets the record's target and port
        local conn = h.connect(gw.port)
        conn:send("GET /s HTTP/1.0\r\n\r\n")
        local res = conn:read_response()
        assert.equal(200, res.status)
        local host = cjson.decode(res.body).headers.host
        assert.truthy(host == "a.test:" .. a.port or host == "b.test:" .. b.port, host)
        conn:close()

        -- dnsmasq rotates the records' order: not a change
        h.eventually(10, function()
            return (metrics(admin)['moongate_dns_lookups_total{name="_http._tcp.svc.test",' ..
                                   'result="ok"}'] or 0) >= 3
        end, "lookups again")
        assert.equal(0, log_count(gw, "dns: _http._tcp.svc.test changed"))

        -- priority 1 down: priority 2 takes the traffic, nothing fails
        a:kill("KILL")
        b:kill("KILL")
        for _ = 1, 20 do
            res = h.http(gw.port, { path = "/s" })
            assert.equal(200, res.status)
            assert.equal("c", res.headers["x-upstream-name"])
        end

        -- the records change (a new port and weights, priority 1 again):
        -- followed without a reload
        local d = h.start_upstream { name = "d", host = "127.0.0.2" }
        dns = dns:restart {
            host_records = { "a.test,127.0.0.2", "c.test,127.0.0.4" },
            srv = { { "_http._tcp.svc.test", "a.test", d.port, 1, 5 },
                    { "_http._tcp.svc.test", "c.test", c.port, 1, 15 } } }
        h.eventually(5, function()
            local now = targets_of(admin, "svc")
            return now[d.addr] and now[c.addr] and now[d.addr].weight == 5
                   and now[c.addr].weight == 15 and now[c.addr].priority == 1
                   and not now[a.addr] and not now[b.addr]
        end, "the gateway follows the new SRV records")
        got = {}
        for _ = 1, 200 do
            res = h.http(gw.port, { path = "/s" })
            assert.equal(200, res.status)
            local who = res.headers["x-upstream-name"]
            got[who] = (got[who] or 0) + 1
        end
        print(("SRV records changed to weights 5:15: d %d, c %d"):format(got.d or 0, got.c or 0))
        assert.truthy(math.abs((got.d or 0) - 200 / 4) <= 200 * 0.1, "d: " .. tostring(got.d))
        assert.equal(1, upstreams(admin).generation)
        gw:assert_alive()
    end)

    it("keeps the last good set while the resolver is down, and follows it when it is back", function()
        local port = h.free_port()
        local u2 = h.start_upstream { name = "u2", host = "127.0.0.2", port = port }
        local u3 = h.start_upstream { name = "u3", host = "127.0.0.3", port = port }
        local u4 = h.start_upstream { name = "u4", host = "127.0.0.4", port = port }
        local dns = dnsmasq.start { hosts = { ["api.test"] = { "127.0.0.2", "127.0.0.3" } } }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, ([[
gw.upstream("svc", { "api.test:%d" })]]):format(port))
        local wait = h.load_start { ports = { gw.port }, paths = { "/x" }, rate = RATE,
                                    duration = 5, conns = 10, count_header = "x-upstream-name" }
        h.eventually(10, function() return u2:stats().requests > 0 end, "the load starts")
        dns:kill()
        -- lookups fail (each try 0.2 s, 2 tries, again after 0.5 s)
        h.eventually(5, function()
            return (metrics(admin)['moongate_dns_lookups_total{name="api.test",result="timeout"}']
                    or 0) >= 4
        end, "lookups time out")
        local r = wait()
        assert.equal(0, r.errors)
        assert.same({ ["200"] = r.sent }, r.status)
        assert.truthy((r.header.u2 or 0) > 0 and (r.header.u3 or 0) > 0)
        local t, u = targets_of(admin, "svc")
        assert.same({ "127.0.0.2:" .. port, "127.0.0.3:" .. port }, sorted_keys(t))
        assert.equal("failing", u.dns[1].state)
        assert.equal("timeout", u.dns[1].last_error)
        assert.equal(1, metrics(admin)['moongate_dns_failing{name="api.test"}'])
        -- said once, not at every failed lookup
        assert.equal(1, log_count(gw, "dns: api.test: lookup failed (timeout)"))

        -- back, with other records: followed, and said once
        dns = dns:restart { hosts = { ["api.test"] = { "127.0.0.4" } } }
        h.eventually(5, function()
            return sorted_keys(targets_of(admin, "svc"))[1] == "127.0.0.4:" .. port
        end, "the set follows the resolver once it is back")
        assert.equal(1, log_count(gw, "dns: api.test answers again"))
        assert.equal(0, metrics(admin)['moongate_dns_failing{name="api.test"}'])
        for _ = 1, 10 do
            local res = h.http(gw.port, { path = "/x" })
            assert.equal(200, res.status)
            assert.equal("u4", res.headers["x-upstream-name"])
        end
        assert.truthy(u2:alive() and u3:alive() and u4:alive())
    end)

    it("keeps the last good set when the name goes away (NXDOMAIN), and logs it once", function()
        local u2 = h.start_upstream { name = "u2", host = "127.0.0.2" }
        local dns = dnsmasq.start { hosts = { ["api.test"] = { "127.0.0.2" } } }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, ([[
gw.upstream("svc", { "api.test:%d" })]]):format(u2.port))
        dns:set_hosts {}
        h.eventually(5, function()
            return (metrics(admin)['moongate_dns_lookups_total{name="api.test",result="nxdomain"}']
                    or 0) >= 4
        end, "lookups say NXDOMAIN")
        for _ = 1, 10 do
            assert.equal(200, h.http(gw.port, { path = "/x" }).status)
        end
        assert.same({ u2.addr }, sorted_keys(targets_of(admin, "svc")))
        assert.equal(1, log_count(gw, "dns: api.test: lookup failed (nxdomain)"))
    end)

    it("starts with a name that does not resolve yet: 503, then its targets once it does", function()
        local u2 = h.start_upstream { name = "u2", host = "127.0.0.2" }
        local dns = dnsmasq.start { hosts = {} }
        local admin = h.free_port()
        local gw = gateway(dns.addr, admin, ([[
gw.upstream("svc", { "late.test:%d" })]]):format(u2.port))
        local res = h.http(gw.port, { path = "/x" })
        h.assert_error(res, 503)
        assert.truthy(gw:log():find("upstream has no target", 1, true))
        dns:set_hosts { ["late.test"] = { "127.0.0.2" } }
        h.eventually(5, function()
            return h.http(gw.port, { path = "/x" }).status == 200
        end, "the name resolves")
    end)

    it("refuses a bad resolver or dns settings with file:line and the running one keeps serving", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.settings { resolver = "dns.example:53", dns = { min_ttl = 10, max_ttl = 5 } }
gw.listen { port = 8080 }
gw.upstream("svc", { "srv://_http._tcp.svc.test", { "srv://_x._tcp.svc.test", weight = 2 } })
gw.route { path = "/", upstream = "svc" }
]])
        assert.are_not.equal(0, code)
        assert.truthy(out:find(":2: settings.resolver must be a DNS server's numeric address", 1, true), out)
        assert.truthy(out:find(":2: settings.dns.min_ttl (10 s) is above max_ttl (5 s)", 1, true), out)
        assert.truthy(out:find('upstream.targets[2] "srv://_x._tcp.svc.test": an SRV name\'s ' ..
                               "records give the weights (remove weight)", 1, true), out)
    end)
end)
