-- Lua hooks through the real binary: on_request, on_route, route policies,
-- on_response, on_log; the request/response API; waiting (gw.sleep,
-- gw.http.request, req:body()); faults (errors, bad returns, the time
-- budget, clients that leave while a hook waits). All of it twice, with
-- the same expectations: clients speaking HTTP/1.1, then HTTP/2 (h2c with
-- prior knowledge, spec/support/h2_client.py): one policy applies whatever
-- protocol the client spoke.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { workers = 1, access_log = "{{TMP}}/access.log",
              timeouts = { shutdown = 2, hook = 0.2 }, limits = { lua_memory = "32m" } }
gw.shared_dict("counters", { size = "1m" })
gw.listen { port = {{PORT1}}, host = "127.0.0.1", http2 = {{H2}} }
gw.upstream("up", { "{{U}}" })
gw.upstream("other", { "{{U2}}" })

local function tag(n)
    return {
        on_request = function(req)
            local seen = req:header("x-order")
            req:set_header("x-order", (seen and seen .. "," or "") .. n)
        end,
        on_response = function(req, res)
            local seen = res:header("x-res-order")
            res:set_header("x-res-order", (seen and seen .. "," or "") .. n)
        end,
    }
end

gw.route { path = "/order", upstream = "up", policies = { tag(1), tag(2), tag(3) } }
gw.route { path = "/api/:id", upstream = "up", policies = { function(req)
    req:set_header("x-api", table.concat({ req.method, req.path, req.raw_path,
        req.query, req.params.id, req.route, req.upstream, req.client,
        tostring(req.client_port > 0), tostring(#req.id > 0) }, "|"))
    req:set_header("x-multi", table.concat(req:header_all("x-dup"), ";"))
    req:set_header("x-case", req:header("X-MiXeD") or "none")
    req:set_header("x-bearer", req:bearer() or "none")
    req:set_header("x-arg", tostring(req:arg("a")) .. "/" .. tostring(req:args().b))
    req:add_header("x-added", "1")
    req:add_header("x-added", "2")
    req:remove_header("x-secret")
    req:set_query("rewritten=1")
    req:set_path("/elsewhere")
end } }
gw.route { path = "/misc", upstream = "up", policies = { function(req)
    gw.log("warn", "misc hook", req.id, 42)
    req:set_header("x-misc", table.concat({ req.scheme, tostring(req.http_version),
        tostring(gw.worker_id()), tostring(req.tls), tostring(gw.now() > 1.7e9) }, "|"))
end } }
gw.route { path = "/method", upstream = "up", policies = { function(req)
    req:set_method("PUT")
end } }
gw.route { path = "/switch", upstream = "up", policies = { function(req)
    req:set_upstream("other")
end } }
gw.route { path = "/deny", upstream = "up", policies = { function(req)
    return gw.respond(403, { denied = true, id = req.id }, { ["X-Why"] = "policy" })
end } }
gw.route { path = "/text", upstream = "up", policies = { function(req)
    return gw.respond(200, "plain words")
end } }
gw.route { path = "/go", upstream = "up", policies = { function(req)
    return gw.redirect("https://example.com/there", 301)
end } }
gw.route { path = "/res", upstream = "up", policies = { {
    on_response = function(req, res)
        res:set_header("x-status-was", res.status)
        res:set_header("x-all-headers-name", tostring(res:headers()["x-upstream-name"]))
        res:set_status(201)
        res:remove_header("x-upstream-name")
        res:add_header("x-extra", "a")
    end } } }
gw.route { path = "/body", upstream = "up", policies = { {
    on_response = function(req, res)
        res:set_body({ replaced = true, status = res.status })
    end } } }
gw.route { path = "/ctx", upstream = "up", policies = {
    function(req) req.ctx.a = "from-request" end,
    { on_response = function(req, res) res:set_header("x-ctx", req.ctx.a .. "/" .. req.ctx.b) end },
} }
gw.route { path = "/readbody", upstream = "up", policies = { function(req)
    local b = req:body()
    req:set_header("x-body-len", #b)
    req:set_header("x-body-head", b:sub(1, 5))
end } }
gw.route { path = "/sleep", upstream = "up", policies = { function(req)
    local t0 = gw.now()
    gw.sleep(0.3)
    req:set_header("x-slept", string.format("%.1f", gw.now() - t0))
end } }
gw.route { path = "/callout", upstream = "up", policies = { function(req)
    local res, err = gw.http.request { url = "http://{{U2}}/auth?until={{GATE}}",
                                       headers = { ["X-From"] = "hook" }, timeout = 30 }
    if not res then return gw.respond(502, { err = err }) end
    req:set_header("x-auth-status", res.status)
    req:set_header("x-auth-name", res.headers["x-upstream-name"])
end } }
gw.upstream("named", { "localhost:{{U2PORT}}" })
gw.route { path = "/named", upstream = "named" }
gw.route { path = "/callout-name", upstream = "up", policies = { function(req)
    local res, err = gw.http.request { url = "http://localhost:{{U2PORT}}/x", timeout = 2 }
    if not res then return gw.respond(502, { err = err }) end
    req:set_header("x-auth-name", res.headers["x-upstream-name"])
end } }
gw.route { path = "/callout-nxdomain", upstream = "up", policies = { function(req)
    local res, err = gw.http.request { url = "http://no-such-host.invalid/x", timeout = 1 }
    return gw.respond(502, { err = err })
end } }
gw.route { path = "/callout-timeout", upstream = "up", policies = { function(req)
    local res, err = gw.http.request { url = "http://{{U2}}/x?delay=2", timeout = 0.2 }
    return gw.respond(504, { err = err })
end } }
gw.route { path = "/error", upstream = "up", policies = { function(req)
    local t = nil
    return t.field
end } }
gw.route { path = "/badreturn", upstream = "up", policies = { function(req)
    return "not allowed"
end } }
gw.route { path = "/spin", upstream = "up", policies = { function(req)
    -- pairs() keeps LuaJIT in its interpreter, where the budget can stop it
    local t = { a = 1 }
    while true do for _ in pairs(t) do end end
end } }
-- loops that try to outlive the budget: it abandons the hook's coroutine,
-- so neither pcall, nor an error handler, nor an inner coroutine keeps it
gw.route { path = "/spin-pcall", upstream = "up", policies = { function(req)
    while true do pcall(function() while true do end end) end
end } }
gw.route { path = "/spin-xpcall", upstream = "up", policies = { function(req)
    xpcall(function() while true do end end, function(e) while true do end end)
    return gw.respond(200, "escaped")
end } }
gw.route { path = "/spin-wrap", upstream = "up", policies = { function(req)
    while true do
        pcall(coroutine.wrap(function() while true do end end))
    end
end } }
gw.route { path = "/spin-handler", handler = function(req)
    while true do pcall(function() while true do end end) end
end }
gw.route { path = "/spin-handler-xpcall", handler = function(req)
    xpcall(function() while true do end end, function(e) while true do end end)
    return 200, "escaped"
end }
gw.route { path = "/spin-wrap-xpcall", upstream = "up", policies = { function(req)
    coroutine.wrap(function()
        xpcall(function() while true do end end, function(e) while true do end end)
    end)()
    return gw.respond(200, "escaped")
end } }
gw.route { path = "/grow", upstream = "up", policies = { function(req)
    local t = {}
    while true do t[#t + 1] = string.rep("x", 8 * 1048576) .. #t end
end } }
gw.route { path = "/wait-long", upstream = "up", policies = { function(req)
    gw.sleep(0.5)
    gw.shared("counters"):incr("after-wait", 1, 0)
end } }
gw.route { path = "/count", handler = function(req)
    local d = gw.shared("counters")
    return 200, { after_wait = d:get("after-wait") or 0, ticks = d:get("ticks") or 0,
                  logged = d:get("logged") or 0, worker = gw.worker_id() }
end }
gw.route { path = "/**", upstream = "up" }

function gw.on_request(req)
    if req.path == "/global" then
        req:set_header("x-global", "on_request")
    end
    if req:header("x-ctx-b") then req.ctx.b = req:header("x-ctx-b") end
end

function gw.on_route(req, route)
    if req.path == "/route-info" then
        req:set_header("x-route-seen", route and route.name or "none")
    end
    if req.path == "/nowhere-but-hook" then
        req:set_upstream("up")
    end
end

function gw.on_response(req, res)
    res:set_header("x-global-response", "yes")
end

function gw.on_log(req, res)
    gw.shared("counters"):incr("logged", 1, 0)
end

gw.timer.every(0.05, function()
    gw.shared("counters"):incr("ticks", 1, 0)
end)
]]


for _, proto in ipairs { "HTTP/1.1", "HTTP/2" } do
local h2 = proto == "HTTP/2"

describe("hooks over " .. proto, function()
    local gw, ups
    -- the callout's answer waits for this file: other requests must flow
    -- while it waits, however slow the machine
    local gate = h.tmpfile("callout-gate-" .. (h2 and "h2" or "h1"))

    setup(function()
        ups = h.start_upstreams { "u1", "u2" }
        gw = h.start_gateway(CONFIG, { workers = 1,
                                       vars = { U = ups.u1, U2 = ups.u2,
                                                U2PORT = ups.u2.port, H2 = tostring(h2),
                                                GATE = gate } })
    end)

    teardown(h.cleanup)

    -- one request on a connection of its own
    local function get(path, req)
        req = req or {}
        req.path = path
        local res = h2 and h.http2(gw.port, req) or h.http(gw.port, req)
        local seen = res.headers["x-upstream-name"] and h.json(res.body) or nil
        return res, seen
    end

    -- a client connection: start(req) sends one, finish(opts) reads its
    -- answer (one in flight at a time); request(req) does both; all(reqs)
    -- sends each and returns their answers (HTTP/1.1: one after the other;
    -- HTTP/2: a stream each, 8 at once)
    local function open()
        if h2 then
            local c = h.h2_connect(gw.port)
            return { start = function(_, req) c.id = c:start(req) end,
                     finish = function(_, opts) return c:wait(c.id, opts and opts.timeout) end,
                     request = function(_, req) return c:request(req) end,
                     all = function(_, reqs) return c:batch(reqs, nil, 8) end,
                     close = function() c:close() end }
        end
        local c = h.connect(gw.port)
        local function request(_, req)
            c:send(h.request_text(req))
            return assert(c:read_response())
        end
        return { start = function(_, req) c:send(h.request_text(req)) end,
                 finish = function(_, opts) return c:read_response(opts) end,
                 request = request,
                 all = function(_, reqs)
                     local out = {}
                     for i, req in ipairs(reqs) do out[i] = request(nil, req) end
                     return out
                 end,
                 close = function() c:close() end }
    end

    describe("phases", function()
        it("runs route policies in the order written, on the way in and out", function()
            local res, seen = get("/order")
            assert.equal(200, res.status)
            assert.equal("1,2,3", seen.headers["x-order"])
            assert.equal("1,2,3", res.headers["x-res-order"])
        end)

        it("runs the global on_request before routing", function()
            local _, seen = get("/global")
            assert.equal("on_request", seen.headers["x-global"])
        end)

        it("gives on_route the matched route", function()
            local _, seen = get("/route-info")
            assert.equal("/**", seen.headers["x-route-seen"])
        end)

        it("lets on_route pick an upstream for a request no route matches", function()
            local res = get("/nowhere-but-hook")
            assert.equal(200, res.status)
        end)

        it("runs the global on_response after the route's", function()
            local res = get("/order")
            assert.equal("yes", res.headers["x-global-response"])
        end)

        it("shares req.ctx between the phases of one request only", function()
            local res = get("/ctx", { headers = { ["X-Ctx-B"] = "b1" } })
            assert.equal("from-request/b1", res.headers["x-ctx"])
            local res2 = get("/ctx", { headers = { ["X-Ctx-B"] = "b2" } })
            assert.equal("from-request/b2", res2.headers["x-ctx"])
        end)

        it("runs on_log after each response", function()
            local before = h.json(get("/count").body).logged
            get("/order")
            get("/order")
            h.sleep(0.1)
            local after = h.json(get("/count").body).logged
            assert.is_true(after >= before + 2)
        end)
    end)

    describe("request API", function()
        local res, seen

        setup(function()
            res, seen = get("/api/42?a=1&b=two", { headers = {
                { "X-Dup", "one" }, { "X-Dup", "two" }, { "x-mixed", "MiXeD" },
                { "Authorization", "Bearer tok.en.sig" }, { "X-Secret", "hide me" } } })
        end)

        it("reads method, path, raw path, query, params, route, upstream, client, id", function()
            assert.equal(200, res.status)
            assert.equal("GET|/api/42|/api/42|a=1&b=two|42|/api/:id|up|127.0.0.1|true|true",
                         seen.headers["x-api"])
        end)

        it("reads repeated headers and names case-insensitively", function()
            assert.equal("one;two", seen.headers["x-multi"])
            assert.equal("MiXeD", seen.headers["x-case"])
        end)

        it("reads the bearer token and query arguments", function()
            assert.equal("tok.en.sig", seen.headers["x-bearer"])
            assert.equal("1/two", seen.headers["x-arg"])
        end)

        it("adds and removes request headers", function()
            assert.equal("1, 2", seen.headers["x-added"])
            assert.is_nil(seen.headers["x-secret"])
        end)

        it("changes path and query sent upstream", function()
            assert.equal("/elsewhere?rewritten=1", seen.path)
        end)

        it("reads scheme, HTTP version, worker id, TLS, wall clock; gw.log writes a line", function()
            local res, s = get("/misc")
            assert.equal("http|" .. (h2 and "2" or "1.1") .. "|0|nil|true", s.headers["x-misc"])
            h.sleep(0.1)
            local log = h.read_file(gw.log_path)
            assert.truthy(log:find("[warn] worker 0: misc hook " .. res.headers["x-request-id"] .. " 42",
                                   1, true), log)
        end)

        it("changes the method", function()
            local _, s = get("/method")
            assert.equal("PUT", s.method)
        end)

        it("changes the upstream", function()
            local r = get("/switch")
            assert.equal("u2", r.headers["x-upstream-name"])
        end)
    end)

    describe("answers from hooks", function()
        it("gw.respond answers with a JSON body and headers; the upstream is not contacted", function()
            local before = ups.u1:stats()
            local res = get("/deny")
            assert.equal(403, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.equal("policy", res.headers["x-why"])
            local body = h.json(res.body)
            assert.is_true(body.denied)
            assert.equal(res.headers["x-request-id"], body.id)
            assert.equal(before.requests, ups.u1:stats().requests)
        end)

        it("gw.respond answers a string as text", function()
            local res = get("/text")
            assert.equal(200, res.status)
            assert.equal("plain words", res.body)
        end)

        it("gw.redirect answers with Location", function()
            local res = get("/go")
            assert.equal(301, res.status)
            assert.equal("https://example.com/there", res.headers["location"])
        end)
    end)

    describe("response API", function()
        it("changes status and headers of the upstream's answer", function()
            local res = get("/res")
            assert.equal(201, res.status)
            assert.equal("200", res.headers["x-status-was"])
            assert.equal("u1", res.headers["x-all-headers-name"])
            assert.is_nil(res.headers["x-upstream-name"])
            assert.equal("a", res.headers["x-extra"])
        end)

        it("replaces the body", function()
            local res = get("/body")
            assert.same({ replaced = true, status = 200 }, h.json(res.body))
            assert.equal(tostring(#res.body), res.headers["content-length"])
        end)

        it("keeps the connection usable after a replaced body", function()
            local c = open()
            for _ = 1, 3 do
                assert.equal(200, c:request({ path = "/body" }).status)
            end
            c:close()
        end)
    end)

    describe("waiting", function()
        it("gw.sleep waits without blocking", function()
            local _, seen = get("/sleep")
            assert.equal("0.3", seen.headers["x-slept"])
        end)

        it("req:body() reads the whole body and sends it on", function()
            local body = string.rep("z", 200000)
            local res, seen = get("/readbody", { method = "POST", body = body })
            assert.equal(200, res.status)
            assert.equal("200000", seen.headers["x-body-len"])
            assert.equal("zzzzz", seen.headers["x-body-head"])
            assert.equal(200000, seen.body_len)
        end)

        it("gw.http.request waits while 200 other requests keep flowing", function()
            local slow = open()
            local before = ups.u2:stats().requests
            slow:start({ path = "/callout" })
            h.eventually(10, function() return ups.u2:stats().requests > before end,
                         "the callout at its upstream")
            local c = open()
            local reqs = {}
            for i = 1, 200 do reqs[i] = { path = "/fast/" .. i } end
            for _, r in ipairs(c:all(reqs)) do
                assert.equal(200, r.status)
            end
            -- all 200 answered while the callout still waits for the gate
            assert.is_nil(io.open(gate), "the callout was released early")
            h.write_file(gate, "go")
            local res = assert(slow:finish())
            assert.equal(200, res.status)
            local seen = h.json(res.body)
            assert.equal("200", seen.headers["x-auth-status"])
            assert.equal("u2", seen.headers["x-auth-name"])
            c:close()
            slow:close()
        end)

        it("host names: targets resolved with the config, gw.http off the loop", function()
            local res = get("/named")
            assert.equal(200, res.status)
            assert.equal("u2", res.headers["x-upstream-name"])
            local _, seen = get("/callout-name")
            assert.equal("u2", seen.headers["x-auth-name"])
            -- a name that does not resolve (or whose lookup hangs, offline)
            -- fails that call only; the worker keeps serving meanwhile
            local slow = open()
            slow:start({ path = "/callout-nxdomain" })
            local c = open()
            local t0 = h.now()
            local reqs = {}
            for i = 1, 20 do reqs[i] = { path = "/fast/x" } end
            for _, r in ipairs(c:all(reqs)) do
                assert.equal(200, r.status)
            end
            -- 20 answers take a few ms; 0.5 s (x3 under ASan) only fails
            -- if the worker waited for the lookup
            assert.is_true(h.now() - t0 < 0.5 * h.SLOW, "took " .. (h.now() - t0))
            c:close()
            local r = assert(slow:finish({ timeout = 5 }))
            slow:close()
            assert.equal(502, r.status)
            local err = h.json(r.body).err
            assert.truthy(err == "host does not resolve" or err == "timeout", err)
        end)

        it("gw.http.request times out", function()
            local res = get("/callout-timeout")
            assert.equal(504, res.status)
            assert.equal("timeout", h.json(res.body).err)
        end)

        it("timers run in the worker", function()
            local a = h.json(get("/count").body).ticks
            h.sleep(0.3)
            local b = h.json(get("/count").body).ticks
            assert.is_true(b >= a + 3, a .. " -> " .. b)
        end)
    end)

    describe("faults", function()
        it("a hook error answers 500 with the request id, logged with file:line", function()
            local res = get("/error")
            h.assert_error(res, 500)
            h.sleep(0.1)
            local log = h.read_file(gw.log_path)
            assert.truthy(log:find("attempt to index local 't'", 1, true))
            assert.truthy(log:find(":%d+: attempt to index"))
            assert.truthy(log:find("stack traceback", 1, true))
        end)

        it("the same error is logged once per minute", function()
            get("/error")
            get("/error")
            h.sleep(0.1)
            local log = h.read_file(gw.log_path)
            local n = 0
            for _ in log:gmatch("attempt to index local 't'") do n = n + 1 end
            assert.equal(1, n)
        end)

        it("a hook that returns a bad value answers 500", function()
            h.assert_error(get("/badreturn"), 500)
        end)

        it("a hook that runs past its budget is stopped with a 500", function()
            local t0 = h.now()
            local res = get("/spin")
            h.assert_error(res, 500)
            assert.is_true(h.now() - t0 < 2 * h.SLOW)
            assert.equal(200, get("/after-spin").status)
        end)

        for _, path in ipairs { "/spin-pcall", "/spin-xpcall", "/spin-wrap",
                                "/spin-handler", "/spin-handler-xpcall",
                                "/spin-wrap-xpcall" } do
            it("the budget stops a loop that catches its error: " .. path, function()
                local t0 = h.now()
                local res = get(path)
                local body = h.assert_error(res, 500)
                assert.is_true(h.now() - t0 < 1.5 * h.SLOW)
                -- the only worker goes on serving, and is not quarantined
                assert.equal(200, get("/after-" .. path:sub(2)).status)
                assert.is_nil(gw:log():find("cannot be interrupted", 1, true))
                if not path:find("handler", 1, true) then
                    assert.truthy(gw:log():find("request " .. body.request_id, 1, true))
                    assert.truthy(gw:log():find("hook exceeded its time budget", 1, true))
                end
            end)
        end

        it("a hook that allocates without end fails at limits.lua_memory", function()
            local t0 = h.now()
            h.assert_error(get("/grow"), 500)
            assert.is_true(h.now() - t0 < 1.5 * h.SLOW)
            assert.truthy(gw:log():find("hook ran out of memory: the Lua heap is limited to " ..
                                        "32 MB (limits.lua_memory)", 1, true))
            -- its garbage is collected: the worker serves the next hooks
            for _ = 1, 3 do
                assert.equal(200, get("/order").status)
            end
        end)

        it("a client that leaves while its hook waits leaks nothing", function()
            local before = h.json(get("/count").body).after_wait
            for _ = 1, 20 do
                local c = open()
                c:start({ path = "/wait-long" })
                c:close()
            end
            h.sleep(0.8)
            -- the waits were cancelled: none of those hooks went on
            assert.equal(before, h.json(get("/count").body).after_wait)
            assert.equal(200, get("/still-fine").status)
        end)
    end)
end)
end

-- One request API: a route handler gets the same request object as hooks
-- and policies (req:header, req.headers, req:headers(), req.params,
-- req.ctx), in the gateway and in gw.test alike.
for _, proto in ipairs { "HTTP/1.1", "HTTP/2" } do
local h2 = proto == "HTTP/2"

describe("the request object over " .. proto, function()
    local gw

    local API_CONFIG = [[
local gw = require "moongate"
gw.settings { workers = 2, access_log = "off", admin = false, timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT1}}, host = "127.0.0.1", http2 = {{H2}} }
local function policy(req)
    -- the field and the call read the same table
    assert(req.headers["x-a"] == req:headers()["x-a"])
    req.ctx.seen_by_policy = req:header("x-a")
end
local function view(req)
    local all = req:headers()
    return 200, { header = req:header("x-a"), field = req.headers["x-a"],
                  call = all["x-a"], same = all == req.headers,
                  repeated = req.headers["x-r"], nth = req:header("x-r", 2),
                  id = req.params.id, method = req.method, query = req.query,
                  ctx = req.ctx.seen_by_policy or false }
end
gw.route { path = "/plain/:id", handler = view }
gw.route { path = "/policed/:id", handler = view, policies = { policy } }
gw.test { request = { path = "/policed/7", headers = { ["x-a"] = "1" } },
          expect = { status = 200, body_contains = '"ctx":"1"' } }
gw.test { request = { path = "/plain/7", headers = { ["x-a"] = "1" } },
          expect = { status = 200, body_contains = '"call":"1"' } }
]]

    setup(function()
        gw = h.start_gateway(API_CONFIG, { vars = { H2 = tostring(h2) } })
    end)

    teardown(h.cleanup)

    local function get(path)
        local req = { path = path, headers = { { "X-A", "1" }, { "X-R", "p" }, { "X-R", "q" } } }
        local res = h2 and h.http2(gw.port, req) or h.http(gw.port, req)
        assert.equal(200, res.status, res.body)
        return h.json(res.body)
    end

    it("in a handler: req:header, req.headers and req:headers() agree", function()
        local b = get("/plain/42?x=1")
        assert.equal("1", b.header)
        assert.equal("1", b.field)
        assert.equal("1", b.call)
        assert.is_true(b.same)
        assert.same({ "p", "q" }, b.repeated)
        assert.equal("q", b.nth)
        assert.equal("42", b.id)
        assert.equal("GET", b.method)
        assert.equal("x=1", b.query)
        assert.is_false(b.ctx)
    end)

    it("a handler after policies is handed their request: req.ctx carries over", function()
        local b = get("/policed/9")
        assert.equal("1", b.ctx)
        assert.equal("9", b.id)
        assert.equal("1", b.field)
    end)

    it("is the same in gw.test (moongate check)", function()
        local code, out = h.check_config(h.read_file(gw.config_path))
        assert.equal(0, code, out)
        assert.truthy(out:find("2 tests passed", 1, true), out)
    end)
end)
end
