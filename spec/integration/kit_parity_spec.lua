-- spec/integration/kit_parity_spec.lua: the testing kit (moongate.testing)
-- and the real binary agree. One config; every request goes through both:
-- the real gateway (one worker, so that its balancer rotation is the
-- kit's) in front of two real upstreams (spec/support/upstream.py), and
-- gwt:request with a fake upstream that answers what upstream.py answers.
-- Compared for each request:
--   the decision    status, route, upstream and target (the binary's are
--                   read from headers an on_response hook adds, and from
--                   which upstream counted the request);
--   the upstream    method, target (path + query) and headers it received,
--                   in order (the binary's from the echo in the body);
--   the answer      status, headers in order, body (JSON compared decoded).
-- Values that legitimately differ are normalised by norm_value below, each
-- with its reason; the kit's documented limits (docs/testing.md: no cache,
-- no connections) are declared per request in `known`, never silently.
local h = require "spec.support.helpers"
local t = require "moongate.testing"
local jwt = require "moongate.jwt"
local cjson = require "cjson.safe"

local fmt = string.format
local SECRET = "parity-secret-0123456789abcdef0123"

local CONFIG = [[
local gw = require "moongate"
local jwt = require "moongate.jwt"
local limit = require "moongate.ratelimit"
gw.settings { access_log = "off", timeouts = { hook = 0.5 },
              limits = { request_line = 2048, header_size = 4096, header_count = 40 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("a", { "{{A}}" })
gw.upstream("b", { "{{B}}" })
gw.upstream("ab", { { "{{A}}", weight = 2 }, { "{{B}}", weight = 1 } })
gw.upstream("dead", { "{{DEAD}}" })
gw.upstream("hab", { "{{A}}", "{{B}}" }, { hash = { header = "x-user" } })
gw.upstream("qab", { "{{A}}", "{{B}}" }, { hash = { query = "u" } })
gw.upstream("cab", { "{{A}}", "{{B}}" }, { hash = { cookie = "sid" } })
gw.upstream("fab", { "{{A}}", "{{B}}" }, { hash = function(req) return req:header("x-user") end })
gw.upstream("lab", { "{{A}}", "{{B}}" }, { balancer = "least_conn" })

gw.on_request = function(req)
    if req:header("x-hook-add") then
        req:set_header("X-Hook-Added", "on_request:" .. req:header("x-hook-add"))
    end
    if req:header("x-hook-remove") then
        req:remove_header("X-Hook-Remove")
        req:remove_header("X-Secret")
    end
    if req:header("x-hook-bad") then
        req:set_header("X-Bad", "line\nbreak")   -- refused: a hook error
    end
    if req.path == "/teapot" then
        return gw.respond(418, { teapot = true, id = req.id },
                          { ["X-Why"] = "on_request" })
    end
    if req.path == "/refuse" then
        return gw.respond(400, "bad header from a hook")
    end
    if req.path == "/respond/204" then return gw.respond(204) end
    if req.path == "/respond/304" then return gw.respond(304, nil, { ETag = '"v1"' }) end
    if req.path == "/respond/html" then
        return gw.respond(201, "<p>hi</p>", { ["Content-Type"] = "text/html" })
    end
end

-- a refused call's message without its position
local function why(e) return (tostring(e):gsub("^[^:]*:%d+: ", "")) end

gw.on_route = function(req, route)
    if req.path:find("^/rw/") then
        req:set_path("/rewritten" .. req.path:sub(4))
        req:set_query("via=on_route")
        req:set_method("PATCH")
    elseif req.path:find("^/ovr/") then
        req:set_upstream("b")
    end
    if route then req:add_header("X-Route-Seen", route.name or route.path) end
    if req:header("x-pin-b") then req:set_target("{{B}}") end
    if req:header("x-pin-bad") then req:set_target("10.255.0.1:9") end  -- not ab's: 500
    if req:header("x-up-bad") then req:set_upstream("nope") end         -- no such: 500
end

gw.on_response = function(req, res)
    res:set_header("X-Route", req.route or "-")
    res:set_header("X-Upstream", req.upstream or "-")
    res:set_header("X-Target", req.target or "-")
    if req:header("x-res-status") then res:set_status(tonumber(req:header("x-res-status"))) end
    if req:header("x-res-body") then res:set_body("replaced by on_response\n") end
    if req:header("x-res-drop") then res:remove_header("X-Upstream-Name") end
    if req:header("x-res-boom") then error("on_response fails") end
    if req:header("x-late") then
        -- too late once the upstream answered: both refused, with their reasons
        local _, e1 = pcall(req.set_upstream, req, "b")
        local _, e2 = pcall(req.set_target, req, "{{B}}")
        res:set_header("X-Late", why(e1) .. " | " .. why(e2))
    end
    if req:header("x-res-respond") then return gw.respond(202, { replaced = true }) end
end

gw.on_log = function(req, res)
    if req:header("x-log-boom") then error("on_log fails: changes nothing") end
end

gw.route { name = "user", path = "/api/users/:id", upstream = "a",
           rewrite = "/v1/users/:id" }
gw.route { name = "static", path = "/static/**", upstream = "b", strip_prefix = "/static" }
gw.route { name = "exact", path = "/exact", methods = { "GET" }, upstream = "a" }
gw.route { name = "host-b", path = "/h/**", host = "api.example", upstream = "b" }
gw.route { name = "host-any", path = "/h/**", upstream = "a" }
gw.route { name = "m-get", path = "/m", methods = { "GET", "HEAD" }, upstream = "a" }
gw.route { name = "m-post", path = "/m", methods = { "POST" }, upstream = "b" }
gw.route { name = "rw", path = "/rw/**", upstream = "a" }
gw.route { name = "ovr", path = "/ovr/**", upstream = "a" }
gw.route { name = "rot", path = "/rot/**", upstream = "ab" }
gw.route { name = "jwt", path = "/jwt/**", upstream = "a",
           policies = { jwt.policy { secret = "]] .. SECRET .. [[" },
                        function(req) req:set_header("X-Sub", req.ctx.jwt.sub) end } }
gw.route { name = "admin", path = "/admin/**", upstream = "a",
           policies = { jwt.policy { secret = "]] .. SECRET .. [[", roles = { "admin" } } } }
gw.route { name = "rl", path = "/rl/**", upstream = "a", policies = {
    limit.policy { rate = 2, per = 60, key = limit.key.header("X-Key") } } }
gw.route { name = "cached", path = "/cached/**", upstream = "a", cache = { ttl = 30 } }
gw.route { name = "lua", path = "/lua/:name", handler = function(req)
    return 200, { hello = req.params.name, q = req.query }
end }
gw.route { name = "lua-err", path = "/lua-err", handler = function(req)
    error("handler fails")
end }
gw.route { name = "down", path = "/down/**", upstream = "dead" }
gw.route { name = "boom", path = "/boom", upstream = "a",
           policies = { function(req) error("policy fails") end } }
gw.route { name = "small", path = "/small", upstream = "a", max_body = 8 }
gw.route { name = "esc-redirect", path = "/er/**", upstream = "a", escaped_slashes = "redirect" }
gw.route { name = "esc-decode", path = "/ed/**", upstream = "a", escaped_slashes = "decode" }
gw.route { name = "hash", path = "/hash/**", upstream = "hab" }
gw.route { name = "hq", path = "/hq/**", upstream = "qab" }
gw.route { name = "hc", path = "/hc/**", upstream = "cab" }
gw.route { name = "hf", path = "/hf/**", upstream = "fab" }
gw.route { name = "lc", path = "/lc/**", upstream = "lab" }
gw.route { name = "split", path = "/split/**",
           split = { { upstream = "a", weight = 2 }, { upstream = "b", weight = 1 } },
           canary = { header = "x-canary", value = "1", upstream = "b" } }
gw.route { name = "sticky", path = "/sticky/**",
           split = { { upstream = "a" }, { upstream = "b" }, key = { cookie = "sid" } } }
gw.route { name = "beta", path = "/beta/**", upstream = "a",
           canary = { cookie = "beta", upstream = "b" } }
]]

-- The requests. Each: method, path, headers (a list, sent in this order),
-- body; `known` names the kit's documented differences for that request.
local function token(claims)
    return "Bearer " .. jwt.sign(claims, { secret = SECRET })
end

local REQUESTS = {
    -- routing
    { path = "/api/users/7" },
    { path = "/api/users/7?x=1&y=two" },
    { path = "/api/users/7/extra" },                 -- 404: no route
    { path = "/static/css/site.css" },
    { path = "/static/" },
    { path = "/exact" },
    { method = "POST", path = "/exact", body = "x" }, -- 405 + Allow
    { method = "DELETE", path = "/m" },               -- 405
    { path = "/m" },
    { method = "HEAD", path = "/m" },
    { method = "POST", path = "/m", body = "posted body" },
    { path = "/h/x", headers = { { "Host", "api.example" } } },
    { path = "/h/x", headers = { { "Host", "API.example:8080" } } },
    { path = "/h/x", headers = { { "Host", "other.example" } } },
    { path = "/nowhere" },
    { path = "/a/../api/users/9" },                   -- normalised path
    { path = "/api/users/%41b" },                     -- percent-decoded
    { path = "/api/users/a%2Fb" },                    -- escaped slash: 400
    -- rewrites
    { path = "/rw/one?q=1" },
    { method = "POST", path = "/rw/two", body = "abc" },
    { path = "/ovr/x" },
    { path = "/ovr/y?z=9" },
    -- balancer: weights 2:1 over a and b
    { path = "/rot/1" }, { path = "/rot/2" }, { path = "/rot/3" },
    { path = "/rot/4" }, { path = "/rot/5" }, { path = "/rot/6" },
    -- balancers: consistent hashing by a header, a query argument, a
    -- cookie and a function; round robin without the key; least_conn's
    -- ties (the same random draws as the gateway's first worker)
    { path = "/hash/1", headers = { { "X-User", "u1" } } },
    { path = "/hash/2", headers = { { "X-User", "u2" } } },
    { path = "/hash/3", headers = { { "X-User", "u3" } } },
    { path = "/hash/4", headers = { { "X-User", "u4" } } },
    { path = "/hash/5" }, { path = "/hash/6" },
    { path = "/hq/1?u=u1" }, { path = "/hq/2?a=1&u=u2" }, { path = "/hq/3?u=u3" },
    { path = "/hc/1", headers = { { "Cookie", "theme=dark; sid=u1" } } },
    { path = "/hc/2", headers = { { "Cookie", "sid=u2" } } },
    { path = "/hf/1", headers = { { "X-User", "u3" } } },
    { path = "/hf/2", headers = { { "X-User", "u4" } } },
    { path = "/lc/1" }, { path = "/lc/2" }, { path = "/lc/3" }, { path = "/lc/4" },
    -- route split 2:1 (the worker's rotation), its canary, a sticky key and
    -- a cookie canary (src/split.c in both)
    { path = "/split/1" }, { path = "/split/2" }, { path = "/split/3" },
    { path = "/split/4", headers = { { "X-Canary", "1" } } },
    { path = "/split/5", headers = { { "X-Canary", "2" } } },
    { path = "/split/6" }, { path = "/split/7" },
    { path = "/sticky/1", headers = { { "Cookie", "sid=u1" } } },
    { path = "/sticky/2", headers = { { "Cookie", "theme=dark; sid=u2" } } },
    { path = "/sticky/3", headers = { { "Cookie", "sid=u3" } } },
    { path = "/sticky/4", headers = { { "Cookie", "sid=u4" } } },
    { path = "/sticky/5" },
    { path = "/beta/1", headers = { { "Cookie", "beta=yes" } } },
    { path = "/beta/2" },
    -- hooks editing the request and the answer
    { path = "/api/users/1", headers = { { "X-Hook-Add", "yes" } } },
    { path = "/api/users/2", headers = { { "X-Hook-Remove", "1" },
                                         { "X-Secret", "s3" }, { "X-Keep", "k" } } },
    { path = "/api/users/3", headers = { { "X-Res-Status", "201" } } },
    { path = "/api/users/4", headers = { { "X-Res-Body", "1" } } },
    { path = "/api/users/5", headers = { { "X-Res-Drop", "1" } } },
    { path = "/api/users/6", headers = { { "X-Res-Status", "204" } } },
    { path = "/api/users/8", headers = { { "X-Log-Boom", "1" } } },
    { path = "/teapot" },
    { path = "/refuse" },
    -- headers a client sends
    { path = "/api/users/10", headers = { { "X-Forwarded-For", "10.0.0.1" },
                                          { "Forwarded", "for=1.2.3.4" } } },
    { path = "/api/users/11", headers = { { "Connection", "close, X-Hop" },
                                          { "X-Hop", "dropped" }, { "TE", "trailers" } } },
    { path = "/api/users/12", headers = { { "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
        { "tracestate", "vendor=1" } } },
    { path = "/api/users/13", headers = { { "traceparent", "garbage" },
                                          { "tracestate", "vendor=1" } } },
    { path = "/api/users/14", headers = { { "X-Dup", "1" }, { "X-Dup", "2" } } },
    { path = "/api/users/23", headers = { { "X-Pad", "v \t" },
                                          { "Host", "localhost " } } },
    { path = "/api/users/15", body = "hello body" },
    { path = "/api/users/16?status=404" },
    { path = "/api/users/17?hdr=X-Extra:v1&hdr=Cache-Control:no-store" },
    { path = "/api/users/24?chunked=1" },
    { path = "/api/users/25?hop=1" },
    { path = "/api/users/26?status=204" },
    { path = "/api/users/27?status=304" },
    { path = "/api//users/28/" },
    { version = "1.0", path = "/api/users/29" },
    { version = "1.0", path = "/api/users/30?chunked=1" },
    { method = "OPTIONS", path = "/exact" },
    { method = "get", path = "/exact" },              -- llhttp: 400
    { path = "/api/users/31?a=%20b&c=d%26e" },
    -- policies
    { path = "/jwt/orders" },                                    -- 401
    { path = "/jwt/orders", headers = { { "Authorization", "Bearer not.a.token" } } },
    { path = "/jwt/orders", headers = { { "Authorization",
        token { sub = "alice", exp = os.time() + 3600 } } } },
    { path = "/admin/x", headers = { { "Authorization",
        token { sub = "bob", exp = os.time() + 3600, roles = { "user" } } } } }, -- 403
    { path = "/admin/x", headers = { { "Authorization",
        token { sub = "carol", exp = os.time() + 3600, roles = { "admin" } } } } },
    { path = "/rl/a", headers = { { "X-Key", "k1" } } },
    { path = "/rl/a", headers = { { "X-Key", "k1" } } },
    { path = "/rl/a", headers = { { "X-Key", "k1" } } },         -- 429
    { path = "/rl/a", headers = { { "X-Key", "k2" } } },
    -- cache: a miss, then a hit
    { path = "/cached/p?v=1", known = "cache-miss" },
    { path = "/cached/p?v=1", known = "cache" },
    { path = "/cached/nostore?hdr=Cache-Control:no-store" },
    -- Lua handlers
    { path = "/lua/world?a=1" },
    { path = "/lua-err" },
    -- errors
    { path = "/down/x", known = "connections" },                 -- 502
    { path = "/boom" },                                          -- 500
    { path = "/api/users/18", headers = { { "X-Hook-Bad", "1" } } }, -- 500
    { path = "/api/users/19", headers = { { "X-Res-Boom", "1" } } }, -- 500
    { method = "POST", path = "/small", body = "more than eight" }, -- 413
    { path = "/api/users/20", headers = { { "Host", "a" }, { "Host", "b" } } }, -- 400
    { path = "/api/users/21", headers = { { "Host", "bad host!" } } },          -- 400
    { path = "/api/users/22", headers = { { "Content-Length", "abc" } } },      -- 400
    -- the gateway's own answers, and the limits of the config
    { path = "/" .. string.rep("a", 2100) },                                   -- 414
    { path = "/api/users/41", headers = { { "X-Big", string.rep("b", 4200) } } }, -- 431
    { path = "/api/users/42", headers = (function()                            -- 431
        local l = {}
        for i = 1, 45 do l[i] = { "X-N" .. i, "v" } end
        return l
    end)() },
    { path = "/api/users/43", headers = { { "X-Cr", "a\rb" } } },             -- 400 bare CR
    { path = "/api/users/44", headers = { { "X-Fold", "a\r\n b" } } },       -- 400 obs-fold
    { version = "0.9", path = "/api/users/45" },                              -- 400 HTTP/0.9
    { method = "HEAD", path = "/nowhere" },                                   -- 404, no body
    { version = "1.0", path = "/nowhere" },                                   -- 404, HTTP/1.0
    { method = "PUT", path = "/exact", body = "x" },                          -- 405
    { method = "POST", path = "/api/users/46", body = string.rep("z", 64),
      headers = { { "Content-Length", "99999999" } } },                       -- 413
    -- set_target / set_upstream: the config's names, in their phases
    { path = "/rot/pin", headers = { { "X-Pin-B", "1" } } },
    { path = "/rot/pin-bad", headers = { { "X-Pin-Bad", "1" } } },             -- 500
    { path = "/api/users/47", headers = { { "X-Up-Bad", "1" } } },             -- 500
    { path = "/api/users/48", headers = { { "X-Late", "1" } } },               -- refused
    -- gw.respond
    { path = "/respond/204" },
    { path = "/respond/304" },
    { path = "/respond/html" },
    { method = "HEAD", path = "/teapot" },
    { version = "1.0", path = "/teapot" },
    { path = "/api/users/49", headers = { { "X-Res-Respond", "1" } } },
    -- escaped slashes as a route says: the 307, the decoded path, nested
    { path = "/er/a%2Fb?q=1" },
    { path = "/ed/a%2Fb/../c?q=2" },
    { path = "/er/a%252Fb" },
}

-- Values that differ between the two runs for a reason, by header name
-- (lower case). Returns the normalised value.
local function norm_value(name, v)
    if name == "traceparent" then
        -- span ids (and trace ids not continued) are random in the gateway
        -- and counted in the kit: keep the version, the trace id when the
        -- client's was continued (the spec's known one), and the flags
        local tid, flags = v:match("^00%-(%x+)%-%x+%-(%x%x)$")
        if tid ~= "4bf92f3577b34da6a3ce929d0e0e4736" then tid = "<new>" end
        return fmt("00-%s-<span>-%s", tostring(tid), tostring(flags))
    elseif name == "x-request-id" or name == "request_id" then
        -- every request sends its own X-Request-Id, which both keep; an id
        -- made when a head is refused before it is read has the gateway's
        -- random per-worker prefix, and is counted in the kit
        return #v == 28 and v:find("^%x+$") and "<generated>" or v
    elseif name == "ratelimit-reset" or name == "retry-after"
        or name == "ratelimit" then
        -- seconds left in the window: computed from each side's clock
        return (v:gsub("%d+", "<n>"))
    elseif name == "age" or name == "cache-status" then
        -- only the gateway has a cache (docs/testing.md): see `known`
        return (v:gsub("%d+", "<n>"))
    end
    return v
end

local function norm_list(list, drop)
    local out = {}
    for _, kv in ipairs(list or {}) do
        local n = kv[1]:lower()
        if not (drop and drop[n]) then
            out[#out + 1] = { kv[1], norm_value(n, kv[2]) }
        end
    end
    return out
end

-- The echo body upstream.py answers, with what differs per connection
-- dropped: conn, conn_requests (which connection of the gateway's pool),
-- peer (the gateway's source port), body_sha256 (the kit's fake does not
-- hash; body_len is kept).
local function norm_echo(body)
    local e = cjson.decode(body or "")
    if type(e) ~= "table" or not e.header_list then
        return nil
    end
    e.conn, e.conn_requests, e.peer, e.body_sha256 = nil, nil, nil, nil
    e.header_list = norm_list(e.header_list)
    local hm = {}
    for k, v in pairs(e.headers) do hm[k] = norm_value(k, v) end
    e.headers = hm
    return e
end

-- A body that is JSON is compared decoded: cjson writes an object's keys
-- in pairs() order, which differs from one Lua state to the next.
local function norm_body(body)
    local v = cjson.decode(body or "")
    if type(v) ~= "table" then
        return body
    end
    if type(v.request_id) == "string" then
        v.request_id = norm_value("request_id", v.request_id)
    end
    return v
end

describe("the testing kit and the binary", function()
    local gw, gwt, ups, by_port, dead

    -- upstream.py's answer (spec/support/upstream.py respond()) for what
    -- the kit would send upstream: the same headers in the same order
    local function fake_upstream(ureq)
        local port = tonumber(ureq.target:match(":(%d+)$"))
        local name = by_port[port]
        local q = {}
        for k, v in (ureq.query or ""):gmatch("([^&=]+)=([^&]*)") do
            q[k] = q[k] or {}
            table.insert(q[k], (v:gsub("%%(%x%x)", function(x)
                return string.char(tonumber(x, 16)) end)))
        end
        local status = tonumber(q.status and q.status[#q.status] or "200")
        local hm = {}
        for _, kv in ipairs(ureq.header_list) do
            local k = kv[1]:lower()
            hm[k] = hm[k] and hm[k] .. ", " .. kv[2] or kv[2]
        end
        local list = {}
        for _, kv in ipairs(ureq.header_list) do list[#list + 1] = { kv[1], kv[2] } end
        local te = hm["transfer-encoding"]
        local info = {
            name = name, method = ureq.method, path = ureq.uri,
            version = "HTTP/1.1", headers = hm, header_list = list,
            body_len = #ureq.body, chunked = te ~= nil, trailers = {},
            chunk_exts = {},
        }
        local body = cjson.encode(info) .. "\n"
        local headers = { { "X-Upstream-Name", name } }
        for _, hv in ipairs(q.hdr or {}) do
            local k, v = hv:match("^([^:]*):(.*)$")
            headers[#headers + 1] = { k, v }
        end
        if q.hop then
            for _, kv in ipairs { { "Connection", "x-foo" }, { "X-Foo", "must-not-pass" },
                                  { "Keep-Alive", "timeout=5, max=100" },
                                  { "Proxy-Connection", "keep-alive" } } do
                headers[#headers + 1] = kv
            end
        end
        headers[#headers + 1] = { "Content-Type", "application/json" }
        local no_body = ureq.method == "HEAD" or status == 204 or status == 304
        if q.chunked and not no_body then
            headers[#headers + 1] = { "Transfer-Encoding", "chunked" }
        elseif status ~= 204 and status ~= 304 then
            headers[#headers + 1] = { "Content-Length", tostring(#body) }
        end
        return status, headers, body
    end

    setup(function()
        ups = h.start_upstreams { "a", "b" }
        dead = h.dead_addr()
        gw = h.start_gateway(CONFIG, { args = "--workers 1",
            vars = { A = ups.a, B = ups.b, DEAD = dead } })
        by_port = { [ups.a.port] = "a", [ups.b.port] = "b" }
        local errs
        gwt, errs = t.load(gw.config_path, { upstream = fake_upstream })
        assert(gwt, errs and table.concat(errs, "\n"))
    end)

    teardown(h.cleanup)

    local function counts()
        return { a = ups.a:stats().requests, b = ups.b:stats().requests }
    end

    -- The binary's side: { status, route, upstream, target, upstream_request,
    -- answer = { status, header_list, body } }.
    local function via_binary(r, headers)
        local before = counts()
        local res
        if r.version == "0.9" then
            -- a request line without a version: the same head as the kit's
            local c = h.connect(gw.port)
            c:send((h.request_text { method = r.method, path = r.path, headers = headers }
                :gsub(" HTTP/1%.1\r\n", "\r\n", 1)))
            res = assert(c:read_response { method = r.method })
            c:close()
        else
            res = h.http(gw.port, { method = r.method, path = r.path,
                                    headers = headers, body = r.body,
                                    version = r.version and "HTTP/" .. r.version })
        end
        local after = counts()
        local contacted
        for _, n in ipairs { "a", "b" } do
            if after[n] > before[n] then contacted = n end
        end
        local hdr = res.headers
        local out = {
            status = res.status,
            route = hdr["x-route"] ~= "-" and hdr["x-route"] or nil,
            upstream = hdr["x-upstream"] ~= "-" and hdr["x-upstream"] or nil,
            target = contacted and ups[contacted].addr or nil,
            contacted = contacted,
            echo = norm_echo(res.body),
            answer = { status = res.status, header_list = res.header_list,
                       body = res.body },
        }
        return out
    end

    local function via_kit(r, headers)
        local d = gwt:request { method = r.method, path = r.path,
                                headers = headers, body = r.body,
                                http_version = r.version }
        local contacted = d.target and by_port[tonumber(d.target:match(":(%d+)$"))]
        local hdr = d.headers
        return {
            status = d.status,
            route = hdr["x-route"] ~= "-" and hdr["x-route"] or nil,
            upstream = hdr["x-upstream"] ~= "-" and hdr["x-upstream"] or nil,
            target = d.target, contacted = contacted,
            echo = norm_echo(d.body),
            sent = d.upstream_request,
            answer = { status = d.status, header_list = d.header_list,
                       body = d.body },
            d = d,
        }
    end

    -- headers of the answers that only the binary has: Connection (the kit
    -- has no connections, docs/testing.md) and, on cache routes, what the
    -- cache adds
    local CLIENT_ONLY = { connection = true }
    -- (a miss: the gateway answers from the copy it keeps, so it frames the
    -- answer after on_response's headers and its on_response sees no
    -- req.target; the kit forwards the upstream's answer)
    local CACHE_ONLY = { connection = true, age = true, ["cache-status"] = true,
                         ["content-length"] = true, ["x-target"] = true }

    local function compare(i, r)
        local label = fmt("#%d %s %s", i, r.method or "GET", r.path)
        -- the same head for both: Host first (h.http's default, also for
        -- HTTP/1.0), then the request's own id
        local headers = { { "X-Request-Id", fmt("parity-%03d", i) } }
        local has_host = false
        for _, kv in ipairs(r.headers or {}) do
            headers[#headers + 1] = kv
            has_host = has_host or kv[1]:lower() == "host"
        end
        if not has_host then table.insert(headers, 1, { "Host", "localhost" }) end
        -- the client closes after one answer (h.http does the same)
        headers[#headers + 1] = { "Connection", "close" }
        local b = via_binary(r, headers)
        local k = via_kit(r, headers)

        if r.known == "connections" then
            -- the kit's targets are always up: the gateway's 502 is not
            -- modelled (docs/testing.md)
            assert.equal(502, b.status, label)
            assert.equal(200, k.status, label)
            return
        end
        assert.equal(b.status, k.status, label .. ": status")
        assert.equal(b.route, k.route, label .. ": route")
        assert.equal(b.upstream, k.upstream, label .. ": upstream")
        if r.known == "cache" then
            -- a hit in the gateway; the kit has no cache and asks again
            assert.is_nil(b.contacted, label .. ": the gateway's cache answered")
            assert.equal("a", k.contacted, label)
        else
            assert.equal(b.contacted, k.contacted, label .. ": upstream contacted")
            assert.equal(b.target, k.target, label .. ": target")
        end
        -- what the upstream received
        if b.echo and r.known ~= "cache" then
            assert.same(b.echo, k.echo, label .. ": upstream request")
        end
        if k.sent and b.echo and r.known ~= "cache" then
            -- the kit's own record of the head agrees with its echo
            assert.same(b.echo.header_list, norm_list(k.sent.header_list),
                        label .. ": d.upstream_request.header_list")
            assert.equal(b.echo.path, k.sent.uri, label .. ": d.upstream_request.uri")
        end
        -- what the client got
        local drop = r.path:find("^/cached/") and CACHE_ONLY or CLIENT_ONLY
        local bl, kl = norm_list(b.answer.header_list, drop),
            norm_list(k.answer.header_list, drop)
        if b.echo or (b.contacted and r.method == "HEAD") then
            -- the echo's JSON differs in key order and per-connection
            -- fields: its length is compared through the decoded body
            for _, l in ipairs { bl, kl } do
                for _, kv in ipairs(l) do
                    if kv[1]:lower() == "content-length" then kv[2] = "<echo>" end
                end
            end
            if r.known ~= "cache" then
                assert.same(b.echo, k.echo, label .. ": answer body")
            end
        else
            assert.same(norm_body(b.answer.body), norm_body(k.answer.body),
                        label .. ": answer body")
        end
        assert.same(bl, kl, label .. ": answer headers")
    end

    it("runs at least 50 requests", function()
        assert.is_true(#REQUESTS >= 50)
    end)

    for i, r in ipairs(REQUESTS) do
        it(fmt("agree on #%d %s %s", i, r.method or "GET", r.path), function()
            compare(i, r)
        end)
    end
end)
