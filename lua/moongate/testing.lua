-- moongate.testing: runs a config's router and hooks against fake requests
-- and a fake upstream, without sockets, and returns what the gateway
-- decided (docs/testing.md).
--
--   local t = require "moongate.testing"
--   local gwt = assert(t.load("gateway.lua"))
--   local d = gwt:request { path = "/orders/1", headers = { ... } }
--   -- d.status, d.headers, d.route, d.upstream, d.upstream_request, d.trace
--
-- The pipeline below is continue_request (src/pipeline.c) step by step:
-- on_request, router, on_route, 404/405, 413, the route's policies, then
-- the route's handler or the upstream; on_response; on_log. What comes
-- before (the head's checks, then the Host, target and escaped-slash
-- checks of src/pipeline.c), the router (moongate.testing.router), the
-- balancers (mg_ffi_lb_pick) and the gateway's own answers are the C
-- code itself; requests and responses are models with runtime.lua's API
-- (moongate.testing.fake). spec/integration/kit_parity_spec.lua checks
-- the whole against the binary. Hooks run in one coroutine per request that
-- runtime.co_req maps to the fake request, so gw.respond, gw.redirect and
-- gw.sleep of the real moongate module find it. gw.sleep advances a virtual
-- clock instead of waiting; while a kit request runs, gw.now follows that
-- clock and gw.http.request is answered by the request's `http` fake.
local ffi = require "ffi"
local cdefs = require "moongate.cdefs"
local config = require "moongate.config"
local runtime = require "moongate.runtime"
local handler = require "moongate.handler"
local gw = require "moongate"
local cjson = require "cjson.safe"
local router = require "moongate.testing.router"
local band = require("bit").band
local fake = require "moongate.testing.fake"
local trace = require "moongate.testing.trace"
local budget = require "moongate.budget"

local type, tostring, pairs, ipairs, select, error, pcall, xpcall =
    type, tostring, pairs, ipairs, select, error, pcall, xpcall
local setmetatable, getmetatable, rawget, rawset = setmetatable,
    getmetatable, rawget, rawset
local find, fmt, lower, match, sub = string.find, string.format,
    string.lower, string.match, string.sub
local concat, sort = table.concat, table.sort
local co_create, co_resume, co_status, co_running = coroutine.create,
    coroutine.resume, coroutine.status, coroutine.running
local getinfo, traceback = debug.getinfo, debug.traceback

local P_REQUEST, P_ROUTE, P_ACCESS = cdefs.PHASE_REQUEST, cdefs.PHASE_ROUTE,
    cdefs.PHASE_ACCESS
local P_RESPONSE, P_LOG = cdefs.PHASE_RESPONSE, cdefs.PHASE_LOG
local PHASE_NAMES = runtime.PHASE_NAMES
local RESPONDED_MARK = runtime.RESPONDED_MARK
local co_req = runtime.co_req

local _M = {}

_M.format_trace = trace.format

-- The C namespace (cdefs.C), raising the reason when it cannot be loaded.
local function C()
    return cdefs.C or require("moongate.clib").require("mg_ffi_now")
end


-- Helpers -------------------------------------------------------------------

local function first_line(s)
    return match(s, "^[^\n]*") or s
end

-- "file:line" where function fn is defined, or nil.
local function where(fn)
    local info = getinfo(fn, "S")
    if not info or info.what == "C" then
        return nil
    end
    local src = sub(info.source, 1, 1) == "@" and sub(info.source, 2)
        or info.short_src
    return src .. ":" .. info.linedefined
end

local function repr(v, depth)
    local tv = type(v)
    if tv == "string" then
        if #v > 60 then
            v = sub(v, 1, 57) .. "..."
        end
        return fmt("%q", v)
    elseif tv ~= "table" then
        return tostring(v)
    elseif (depth or 0) > 1 then
        return "{...}"
    end
    -- a short look into tables: lists in order, then other keys sorted
    local parts, n = {}, #v
    for i = 1, n do
        parts[#parts + 1] = repr(v[i], (depth or 0) + 1)
    end
    local keys = {}
    for k in pairs(v) do
        if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
            keys[#keys + 1] = k
        end
    end
    sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        parts[#parts + 1] = tostring(k) .. "=" .. repr(v[k], (depth or 0) + 1)
    end
    local s = "{" .. concat(parts, ", ") .. "}"
    if #s > 80 then
        s = sub(s, 1, 76) .. "...}"
    end
    return s
end

-- Sets the client answer of decision d from a header list.
local function answer(d, status, list, body)
    d.status, d.header_list, d.body = status, list, body
    d.headers = fake.header_map(list)
    local ctype = d.headers["content-type"]
    if type(ctype) == "string" and find(lower(ctype), "^application/json") then
        d.json = cjson.decode(body)
    else
        d.json = nil
    end
end

-- The gateway's own JSON error answer (src/request.c, through fake).
local function gateway_error(d, st, status, message)
    answer(d, fake.error_response(st, status, message))
    d.responded_by = "gateway"
end

-- gw.http.request in the kit: the same argument checks as
-- runtime.http_request, then the request's (or the gateway's) `http` fake
-- answers at once: function(req) -> { status, headers, body } or nil, err.
local function fake_http(opts)
    local url, method, body = require("moongate.runtime").http_args(opts, 2)
    if opts.headers ~= nil and type(opts.headers) ~= "table" then
        error("gw.http.request: headers must be a table", 3)
    end
    local st = fake.state_of(co_req[co_running()])
    if not st then
        return nil, "gw.http.request can only be used inside hooks and timers"
    end
    if not ((sub(url, 1, 7) == "http://" and #url > 7) or
            (sub(url, 1, 8) == "https://" and #url > 8)) then
        return nil, "url must start with http:// or https://"
    end
    local fn = st.http or st.env.http
    local res, err
    if fn == nil then
        err = "moongate.testing: no fake for gw.http.request (give the " ..
            "request, or t.load's options, http = function(req) ... end)"
    else
        res, err = fn { method = method, url = url, body = body,
                        headers = opts.headers or {},
                        timeout = opts.timeout or 10, ca = opts.ca,
                        verify = opts.verify ~= false }
    end
    if res ~= nil then
        if type(res) ~= "table" then
            error("moongate.testing: the http fake must return a table " ..
                  "{ status =, headers =, body = } or nil, err", 0)
        end
        local headers = {}
        for k, v in pairs(res.headers or {}) do
            headers[lower(tostring(k))] = tostring(v)
        end
        res = { status = res.status or 200, headers = headers,
                body = res.body == nil and "" or tostring(res.body) }
    end
    local c = st.changes
    if c then
        c[#c + 1] = fmt("http %s %s -> %s", method, url,
                        res and tostring(res.status) or
                        "nil, " .. tostring(err))
    end
    if res == nil then
        return nil, err
    end
    return res
end

-- While a kit request runs, gw.now() follows the virtual clock and
-- gw.http.request is faked. Returns what restore() puts back.
local function swap_in(env)
    local saved = { now = rawget(gw, "now") }
    rawset(gw, "now", function()
        return router.now() + env.clock.offset
    end)
    local http = rawget(gw, "http")
    if type(http) == "table" then
        saved.http, saved.http_request = http, http.request
        http.request = fake_http
    end
    local mod = package.loaded["moongate.http"]
    if type(mod) == "table" then
        saved.mod, saved.mod_request = mod, mod.request
        mod.request = fake_http
    end
    return saved
end

local function restore(saved)
    rawset(gw, "now", saved.now)
    if saved.http then
        saved.http.request = saved.http_request
    end
    if saved.mod then
        saved.mod.request = saved.mod_request
    end
end


-- Hooks, as runtime.run_phase runs them, with a trace entry per call ---------

local function ctx_snapshot(req)
    local ctx = rawget(req, "ctx")
    if type(ctx) ~= "table" then
        return nil
    end
    local t = {}
    for k, v in pairs(ctx) do
        t[k] = v
    end
    return t
end

local function ctx_changes(before, req, changes)
    local ctx = rawget(req, "ctx")
    if type(ctx) ~= "table" then
        return
    end
    before = before or {}
    local keys = {}
    for k, v in pairs(ctx) do
        if before[k] ~= v then
            keys[#keys + 1] = k
        end
    end
    for k in pairs(before) do
        if ctx[k] == nil then
            keys[#keys + 1] = k
        end
    end
    sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        changes[#changes + 1] = "ctx." .. tostring(k) .. " = " .. repr(ctx[k])
    end
end

local function begin_hook(R, phase, label, fn)
    local st = R.st
    local e = { phase = PHASE_NAMES[phase], hook = label, changes = {},
                source = where(fn), time_ms = 0, wait_ms = 0 }
    R.d.trace[#R.d.trace + 1] = e
    st.changes = e.changes
    st.last_entry = e
    st.cur = { e = e, t0 = router.monotonic(), w0 = st.waited,
               ctx = ctx_snapshot(R.req), req = R.req }
    return e
end

local function end_hook(st)
    local cur = st.cur
    if not cur then
        return
    end
    st.cur = nil
    local e = cur.e
    e.time_ms = (router.monotonic() - cur.t0) * 1000
    e.wait_ms = (st.waited - cur.w0) * 1000
    ctx_changes(cur.ctx, cur.req, e.changes)
    st.changes = nil
end

local function bad_return(fname, v)
    error(fmt("%s returned %s: a hook returns nothing or gw.respond(...)",
              fname, type(v) == "string" and fmt("%q", v) or type(v)), 0)
end

-- runtime.lua's call(): returns true when the request was answered.
local function call(R, phase, label, fname, fn, a, b, c)
    local st = R.st
    local e = begin_hook(R, phase, label, fn)
    st.replaced = false
    local had_answer = st.answer
    local v = fn(a, b, c)
    end_hook(st)
    if v ~= nil and v ~= RESPONDED_MARK then
        bad_return(fname, v)
    end
    if st.answer ~= had_answer then
        st.answer.by = label
        e.responded = true
    end
    if st.replaced then
        st.replaced_by = label
        e.responded = true
    end
    return rawget(R.req, "_responded")
end

-- runtime.lua's run_phase, over the run context R.
local function phase_body(R, phase)
    local hooks, req, res = R.g.hooks, R.req, R.res
    local rh = R.st.route and R.g.route_hooks[R.st.route_i]
    if phase == P_REQUEST then
        local fn = hooks.on_request
        return fn and call(R, phase, "on_request", "on_request", fn, req)
    elseif phase == P_ROUTE then
        local fn = hooks.on_route
        return fn and call(R, phase, "on_route", "on_route", fn, req,
                           rh and rh.info or nil)
    elseif phase == P_ACCESS then
        if rh then
            for _, x in ipairs(rh.access) do
                if call(R, phase, x.label, "policy on_request",
                        x.p.on_request, req, x.p) then
                    return true
                end
            end
        end
        return false
    end
    local key = phase == P_RESPONSE and "on_response" or "on_log"
    local list = rh and (phase == P_RESPONSE and rh.response or rh.log)
    if list then
        for _, x in ipairs(list) do
            call(R, phase, x.label, "policy " .. key, x.p[key], req, res, x.p)
        end
    end
    local fn = hooks[key]
    if fn then
        call(R, phase, key, key, fn, req, res)
    end
    return false
end

local hook_error_msg

local function on_hook_error(e)
    hook_error_msg = tostring(e)
    return traceback(hook_error_msg, 2)
end

-- Runs one phase. Returns "error", "answered" or nil (go on). A hook error
-- ends the request's coroutine in the core: later phases get a fresh one,
-- with new request and response objects (an empty req.ctx).
local function run_phase(R, phase)
    local st, d = R.st, R.d
    st.phase = phase
    local ok, answered = xpcall(phase_body, on_hook_error, R, phase)
    if not ok then
        end_hook(st)
        if st.last_entry and not st.last_entry.error then
            st.last_entry.error = hook_error_msg
        end
        if not d.error then
            d.error, d.traceback = hook_error_msg, answered
            d.error_phase = PHASE_NAMES[phase]
        end
        R.req, R.res = fake.request(st)
        co_req[co_running()] = R.req
        return "error"
    end
    if answered and phase < P_RESPONSE then
        return "answered"
    end
    return nil
end

-- mg_hooks_has: a global hook for the phase, or one of the route's.
local function has(R, phase)
    local hooks, st = R.g.hooks, R.st
    if phase == P_REQUEST then
        return hooks.on_request ~= nil
    elseif phase == P_ROUTE then
        return hooks.on_route ~= nil
    end
    local rh = st.route and R.g.route_hooks[st.route_i]
    if phase == P_ACCESS then
        return rh ~= nil and #rh.access > 0
    elseif phase == P_RESPONSE then
        return hooks.on_response ~= nil or (rh ~= nil and #rh.response > 0)
    end
    return hooks.on_log ~= nil or (rh ~= nil and #rh.log > 0)
end

-- Runs a phase that may end the request (on_request, on_route, policies)
-- when it has hooks. Returns true when the request was answered (by a hook,
-- or with a 500 after a hook error).
local function stops(R, phase)
    if not has(R, phase) then
        return false
    end
    local st, d = R.st, R.d
    local r = run_phase(R, phase)
    if r == "error" then
        gateway_error(d, st, 500, "hook error")
        return true
    elseif r == "answered" then
        local a = st.answer
        answer(d, fake.local_response(st, a.status, a.ctype, a.body, a.block))
        d.responded_by = a.by
        return true
    end
    return false
end


-- The steps of continue_request ----------------------------------------------

local function route_request(g, d, st)
    local host = st.known.host and st.headers[st.known.host][2] or nil
    local rc, m, buf = g.router:match(st.local_port,
                                      st.new_method or st.method, host,
                                      st.path, st.headers)
    st.route_rc, st.match, st.path_buf = rc, m, buf
    d.routed = true
    if rc == router.OK then
        st.route_i = m.route.index + 1
        st.route = g.cfg.routes[st.route_i]
        st.params, st.rest = router.params(m)
        d.route = st.route.name
        d.params = {}
        for _, p in ipairs(st.params) do
            d.params[p[1]] = p[2]
        end
        -- the route's canary or split (src/split.c): before on_route
        local ui, how = fake.choose_split(st)
        if ui then
            d.split, d.upstream = how, g.env.upstreams[ui].name
        end
    end
end

-- Routes answered by Lua run outside the hook coroutines (lua_route.c).
local function run_handler(R)
    local d, st = R.d, R.st
    local fn = st.route.handler
    local e = { phase = "handler", hook = "handler", changes = {},
                source = where(fn), time_ms = 0, wait_ms = 0 }
    d.trace[#d.trace + 1] = e
    local co = co_create(handler.invoke)
    local t0 = router.monotonic()
    local ok, hok, status, body, block, ctype =
        co_resume(co, fn, R.req)   -- the hooks' request object, as in lua_route.c
    e.time_ms = (router.monotonic() - t0) * 1000
    if not ok then
        error(hok, 0)
    end
    if co_status(co) ~= "dead" then
        hok, status = false, "a route handler cannot wait: it runs outside " ..
            "the hook coroutines"
    end
    if not hok then
        e.error = first_line(status)
        d.error, d.traceback, d.error_phase = e.error, status, "handler"
        gateway_error(d, st, 500, "handler error")
        return
    end
    e.changes[1] = fmt("answer %d (%d bytes)", status, #body)
    e.responded = true
    answer(d, fake.local_response(st, status, ctype or "text/plain", body,
                                  block))
    d.responded_by = "handler"
end

local DEFAULT_RESPONSE = {
    status = 200, headers = { ["content-type"] = "application/json" },
    body = "{}",
}

-- The fake upstream's answer as { status, headers = list, body }, framed
-- like a real server's (Content-Length unless the headers frame it).
local function upstream_answer(status, headers, body)
    if type(status) == "table" then
        status, headers, body = status.status, status.headers, status.body
    end
    status = status or 200
    if type(status) ~= "number" or status % 1 ~= 0 or status < 101
        or status > 599 or (status < 200 and status ~= 101) then
        error("moongate.testing: the fake upstream's status must be an " ..
              "integer 200-599 (or 101), got " .. tostring(status), 0)
    end
    local list = fake.header_list(headers)
    local ctype, framed = false, false
    for _, h in ipairs(list) do
        local l = lower(h[1])
        ctype = ctype or l == "content-type"
        framed = framed or l == "content-length" or l == "transfer-encoding"
    end
    if type(body) == "table" then
        body = cjson.encode(body)
        if not ctype then
            list[#list + 1] = { "Content-Type", "application/json" }
        end
    end
    body = body == nil and "" or tostring(body)
    if not framed and status ~= 204 and status ~= 304 and status ~= 101 then
        list[#list + 1] = { "Content-Length", tostring(#body) }
    end
    return { status = status, headers = list, body = body }
end

local function ask_upstream(R, ureq)
    local spec, opts = R.spec, R.g.opts
    local fn = spec.upstream or opts.upstream
    if fn ~= nil then
        if type(fn) ~= "function" then
            error("moongate.testing: upstream must be a function " ..
                  "(upstream_request) -> status, headers, body", 0)
        end
        return upstream_answer(fn(ureq))
    end
    return upstream_answer(spec.upstream_response or opts.upstream_response
                           or DEFAULT_RESPONSE)
end

local function proxy(R)
    local d, st = R.d, R.st
    local ui = fake.upstream_index(st)
    st.target = st.target_override or fake.pick_target(st)
    st.up = true
    local ureq = fake.upstream_request(st)
    d.upstream, d.target, d.upstream_request = ureq.upstream, ureq.target, ureq
    if st.upstream_override then
        d.split = nil -- a hook's req:set_upstream chose, not the split
    end
    local m = st.route and st.route.mirror
    if m then
        -- a copy goes to the shadow (src/mirror.c); the kit sends none
        d.mirror = R.g.env.upstreams[m.upstream].name
    end
    local up = ask_upstream(R, ureq)
    st.up_res = up
    d.upstream_response = up
    if up.status ~= 101 and has(R, P_RESPONSE)
        and run_phase(R, P_RESPONSE) == "error" then
        st.up = false
        return gateway_error(d, st, 500, "hook error")
    end
    answer(d, fake.client_response(st))
    st.up = false
    d.responded_by = st.replaced_by or "upstream"
end

-- The pipeline's checks before any hook (src/pipeline.c: Host, the
-- target, escaped slashes), or once routed (404, 405, 413): true when they
-- answered.
local function checks_answered(d, st, routed)
    local status, list, body
    if routed then
        status, list, body = fake.routed(st)
    else
        status, list, body = fake.checks(st)
    end
    if status then
        answer(d, status, list, body)
        d.responded_by = "gateway"
        return true
    end
    return false
end

-- process_head, continue_request and the proxy, then on_log. Runs in the
-- request's coroutine.
local function pipeline(R)
    local g, d, st = R.g, R.d, R.st
    if st.bad then
        gateway_error(d, st, st.bad_status or 400, st.bad)
    elseif checks_answered(d, st) then
        -- answered
    elseif not stops(R, P_REQUEST) then
        route_request(g, d, st)
        if stops(R, P_ROUTE) or checks_answered(d, st, true) then
            -- answered
        elseif st.route and stops(R, P_ACCESS) then
            -- answered
        elseif st.route and st.route.handler and not st.upstream_override then
            run_handler(R)
        else
            proxy(R)
        end
    end
    -- the request is over for the client: on_log (its errors change nothing;
    -- a gateway loaded with on_log = false skips it)
    if has(R, P_LOG) and g.opts.on_log ~= false then
        run_phase(R, P_LOG)
    end
end


-- Gateways ------------------------------------------------------------------

local Gateway = {}
local gateway_mt = { __index = Gateway }

local function policy_label(i, p)
    if type(p.name) == "string" then
        return fmt("policy %d (%s)", i, p.name)
    end
    return fmt("policy %d", i)
end

-- The route patterns checked as src/config.c does (moongate check).
local function check_patterns(cfg)
    local errors = {}
    for _, r in ipairs(cfg.routes) do
        local src = r.source or cfg.file
        local why = router.check_pattern(r.path)
        if why then
            errors[#errors + 1] = fmt(
                '%s:%d: route.path "%s" is not a valid pattern: %s',
                src, r.line, r.path, why)
        end
        why = r.rewrite and router.check_pattern(r.rewrite)
        if why then
            errors[#errors + 1] = fmt(
                '%s:%d: route.rewrite "%s" is not a valid template: %s',
                src, r.line, r.rewrite, why)
        end
    end
    return errors
end

-- A kit config (src/kit_request.c) owned by the Lua GC, or nil and its
-- errors ("file:line: reason" lines).
local function kit_config(kc)
    if kc == nil then
        return nil, { "moongate.testing: out of memory" }
    end
    kc = ffi.gc(kc, C().mg_ffi_kit_config_free)
    local e = C().mg_ffi_kit_config_errors(kc)
    if e ~= nil then
        local errs = {}
        for line in ffi.string(e):gmatch("[^\n]+") do
            errs[#errs + 1] = line
        end
        return nil, errs
    end
    return kc
end

local function id_counter()
    local seq = 0
    return function()
        seq = seq + 1
        return fmt("000000000000%016x", seq)
    end
end

-- trace and span ids for fake requests: counted, n hex digits, never zero
local function hex_counter()
    local seq = 0
    return function(n)
        seq = seq + 1
        return fmt("%0" .. n .. "x", seq)
    end
end

--- Loads config `file` (moongate.config) and builds its router with the C
-- code. `opts.upstream` / `opts.upstream_response` / `opts.http`: the
-- default fakes of every request (see request()); `opts.on_log = false`:
-- the on_log hooks do not run (the gateway's self-tests, which are not
-- traffic to log). Returns a gateway, or nil and a list of "file:line:
-- reason" strings.
function _M.load(file, opts)
    if type(file) ~= "string" then
        error("moongate.testing.load: file must be a string, got " ..
              type(file), 2)
    end
    local _, why = router.lib()
    if why then
        return nil, { "moongate.testing: " .. why }
    end
    local cfg, errs = config.load(file)
    if not cfg then
        return nil, errs
    end
    errs = check_patterns(cfg)
    if #errs > 0 then
        return nil, errs
    end
    local rt, err = router.build(cfg)
    if not rt then
        return nil, { fmt("%s: the router refused the routes: %s", file, err) }
    end
    -- the config the gateway would run (src/config.c's copy into C), which
    -- the kit's C requests read (r->g->cfg: upstreams, targets, limits)
    local kc, kerr = kit_config(C().mg_ffi_kit_config_load(file, package.path))
    if not kc then
        return nil, kerr
    end
    for _, sd in ipairs(cfg.shared_dicts) do
        router.open_shared_dict(sd.name, sd.size)
    end

    -- the listener a request on a port came on: the first on that port
    -- (0-based, as the config's in C; none: past the last)
    local listeners = {}
    for i = #cfg.listeners, 1, -1 do
        listeners[cfg.listeners[i].port] = i - 1
    end
    local env = {
        kc = kc,
        listener_of = function(port) return listeners[port] or 65535 end,
        upstreams = {}, upstream_by_name = {}, clock = { offset = 0 },
        listen_port = cfg.listeners[1] and cfg.listeners[1].port or 80,
        next_id = id_counter(), next_hex = hex_counter(), max_body = cfg.limits.body,
        http = opts and opts.http,
        upstream_path = function(st)
            return rt:upstream_path(st.match, st.path)
        end,
    }
    fake.trusted_set(env, cfg.trusted_proxies, cfg.real_ip_header)
    env.tracing = cfg.tracing
    for i, u in ipairs(cfg.upstreams) do
        local targets = {}
        for j, t in ipairs(u.targets) do
            targets[j] = { name = ffi.string(C().mg_ffi_kit_config_name(kc, i - 1, j - 1)),
                           weight = t.weight }
        end
        env.upstreams[i] = { name = u.name, targets = targets,
                             override_headers = u.override_headers,
                             forwarded = u.forwarded, request_id = u.request_id,
                             balancer = u.balancer, hash = u.hash }
        env.upstream_by_name[u.name] = i
    end

    -- the config's gw.metrics count into metrics of the kit's own (C's,
    -- not a running gateway's): read them with metric:value(...)
    require("moongate.metrics").bind_private(cfg)

    -- runtime.init: the hooks in the form the phases run them
    local hooks = {}
    for _, k in ipairs { "on_request", "on_route", "on_response", "on_log" } do
        if type(cfg.hooks[k]) == "function" then
            hooks[k] = cfg.hooks[k]
        end
    end
    local route_hooks = {}
    for i, r in ipairs(cfg.routes) do
        local up = r.upstream and cfg.upstreams[r.upstream]
        local rh = {
            info = { name = r.name, path = r.path,
                     upstream = up and up.name or nil },
            access = {}, response = {}, log = {},
        }
        for j, p in ipairs(r.policies or {}) do
            if type(p) == "function" then
                p = { on_request = p }
            end
            local x = { p = p, label = policy_label(j, p) }
            if type(p.on_request) == "function" then
                rh.access[#rh.access + 1] = x
            end
            if type(p.on_response) == "function" then
                rh.response[#rh.response + 1] = x
            end
            if type(p.on_log) == "function" then
                rh.log[#rh.log + 1] = x
            end
        end
        route_hooks[i] = rh
    end

    return setmetatable({
        file = file, cfg = cfg, router = rt, env = env, hooks = hooks,
        route_hooks = route_hooks, opts = opts or {},
    }, gateway_mt)
end

local function new_state(spec, env, level)
    local ok, st = pcall(fake.new_state, spec, env)
    if not ok then
        error("moongate.testing: bad request: " .. tostring(st), level + 1)
    end
    return st
end

-- A fake request the gateway answers before any hook is no request to
-- call hooks with: raises what the gateway answers.
local function refused(st, level)
    local status, why = st.bad_status, st.bad
    if not st.bad then
        local _, body
        status, _, body = fake.checks(st, false)
        local j = status and cjson.decode(body)
        why = type(j) == "table" and j.error or body
    end
    if status then
        error(fmt("moongate.testing: the gateway answers this request %d (%s)", status, why),
              level + 1)
    end
end

--- Runs request `spec` through the gateway (docs/testing.md) and returns
-- the decision: { status, headers, header_list, body, json, route, params,
-- upstream, target, upstream_request, upstream_response, responded_by,
-- error, traceback, error_phase, trace, id, request, time_ms, wait_ms }.
function Gateway.request(self, spec)
    if type(spec) ~= "table" then
        error("gwt:request: expects a request table, got " .. type(spec), 2)
    end
    local st = new_state(spec, self.env, 2)
    st.http = spec.http
    local req, res = fake.request(st)
    local d = {
        trace = {}, id = st.id,
        request = { method = st.method, uri = st.url,
                    client = st.real_client or st.client, peer = st.client,
                    port = st.local_port },
    }
    local R = { g = self, spec = spec, st = st, d = d, req = req, res = res }
    local co = co_create(pipeline)
    co_req[co] = req
    local saved = swap_in(self.env)
    local t0 = router.monotonic()
    -- the gateway's hook budget (timeouts.hook), here for the whole request
    -- (its waits are virtual): a looping hook answers 500 as it would there
    local ms = self.cfg.timeouts.hook
    local _, ok, err = budget.call({ seconds = ms / 1000,
        memory = self.cfg.limits.lua_memory,
        message = fmt("hook exceeded its time budget of %d ms", ms) },
        co_resume, co, R)
    restore(saved)
    co_req[co] = nil
    if not ok then
        error(traceback(co, tostring(err)), 0)
    end
    if co_status(co) ~= "dead" then
        -- a hook waits and nothing will resume it: the parser answered
        -- (req:body() over the limit), or I/O the kit does not simulate
        end_hook(st)
        local status, msg = 500, "hook error"
        if err == fake.ABORT then
            status, msg = st.abort.status, st.abort.message
        else
            local why = "a hook waited for I/O, which moongate.testing " ..
                "does not simulate (gw.sleep and gw.http.request are faked)"
            if st.last_entry and not st.last_entry.error then
                st.last_entry.error = why
            end
            d.error = d.error or why
        end
        if not st.response_started then
            gateway_error(d, st, status, msg)
        end
    end
    st.over = true
    d.time_ms = (router.monotonic() - t0) * 1000
    d.wait_ms = st.waited * 1000
    return d
end

--- Moves the gateway's virtual clock (what gw.now returns in its hooks).
function Gateway.advance(self, seconds)
    self.env.clock.offset = self.env.clock.offset + seconds
end

--- The gateway's virtual time (seconds since the epoch).
function Gateway.now(self)
    return router.now() + self.env.clock.offset
end

--- The object of the config's gw.metrics declaration `name` (the kit's
-- own metric: read it with :value(labelvalues...)), or nil.
function Gateway.metric(self, name)
    for _, m in ipairs(self.cfg.metrics or {}) do
        if m.name == name then return m.object end
    end
    return nil
end

local function apply_phase(st, req, spec)
    local phase = spec.phase or "access"
    local p = fake.PHASES[phase]
    if not p then
        error("moongate.testing: phase must be one of on_request, on_route, " ..
              "access, on_response, on_log; got " .. tostring(phase), 3)
    end
    st.phase = p
    if spec.ctx ~= nil then
        rawset(req, "ctx", spec.ctx)
    end
end

--- A fake request routed by this gateway's router (no hook runs), for
-- calling one policy function with t.call. `spec` as for request(), plus
-- `phase` (default "access": a route policy's on_request) and `ctx`.
function Gateway.fake_request(self, spec)
    spec = spec or {}
    local st = new_state(spec, self.env, 2)
    refused(st, 3)
    route_request(self, {}, st)
    st.http = spec.http
    local req = fake.request(st)
    apply_phase(st, req, spec)
    return req
end


-- One-offs and single functions ---------------------------------------------

--- t.request(config, spec) or t.request { config = file, ... }: loads the
-- config (a file name or a loaded gateway) and runs one request. Returns
-- the decision, or nil and the config's errors.
function _M.request(a, b)
    local g, spec = a, b
    if type(a) == "table" and getmetatable(a) ~= gateway_mt then
        g, spec = a.config, a
    end
    if type(g) == "string" then
        local errs
        g, errs = _M.load(g)
        if not g then
            return nil, errs
        end
    elseif getmetatable(g) ~= gateway_mt then
        error("t.request: give a config file or a gateway from t.load", 2)
    end
    return g:request(spec or {})
end

-- A context for fake requests made without a config: any upstream or
-- target name is accepted unless spec.upstreams lists them.
local function standalone_env(spec)
    local kc = kit_config(C().mg_ffi_kit_config_new())
    if not kc then
        error("moongate.testing: out of memory", 3)
    end
    local env = {
        kc = kc,
        listener_of = function() return 65535 end, -- none
        upstreams = {}, upstream_by_name = {}, clock = { offset = 0 },
        lenient = spec.upstreams == nil, listen_port = 80,
        next_id = id_counter(), next_hex = hex_counter(), max_body = spec.max_body,
    }
    -- the upstreams and targets of the model and of its C config, in step
    local function grown(i)
        if i < 0 then
            error("moongate.testing: out of memory", 0)
        end
        return i
    end
    local function add(name)
        if not env.upstream_by_name[name] then
            grown(C().mg_ffi_kit_config_upstream(kc, name, #name))
            env.upstreams[#env.upstreams + 1] = { name = name, targets = {} }
            env.upstream_by_name[name] = #env.upstreams
        end
        return env.upstreams[env.upstream_by_name[name]]
    end
    function env.add_target(ui, name)
        local u = env.upstreams[ui]
        grown(C().mg_ffi_kit_config_target(kc, ui - 1, name, #name))
        u.targets[#u.targets + 1] = { name = name, weight = 1 }
        return #u.targets
    end
    if spec.upstreams then
        local names = {}
        for name in pairs(spec.upstreams) do
            names[#names + 1] = name
        end
        sort(names)
        for _, name in ipairs(names) do
            add(name)
            for _, t in ipairs(spec.upstreams[name]) do
                env.add_target(env.upstream_by_name[name], t)
            end
        end
    end
    env.add = add
    fake.trusted_set(env, spec.trusted_proxies, spec.real_ip_header)
    return env
end

--- A fake request without a config, for calling one policy function with
-- t.call (or directly when it does not answer). `spec` as for request(),
-- plus: route (name), params ({ name = value }), upstream (name), target
-- ("host:port"), upstreams ({ name = { "host:port", ... } }: the names
-- set_upstream / set_target accept; any when absent), phase (default
-- "access"), ctx.
function _M.fake_request(spec)
    spec = spec or {}
    local env = standalone_env(spec)
    local st = new_state(spec, env, 2)
    refused(st, 3)
    local ui
    if spec.upstream then
        if not env.upstream_by_name[spec.upstream] and not env.lenient then
            error("moongate.testing: upstream " .. tostring(spec.upstream) ..
                  " is not in spec.upstreams", 2)
        end
        env.add(spec.upstream)
        ui = env.upstream_by_name[spec.upstream]
    end
    if spec.route then
        st.route = { name = spec.route, upstream = ui }
        st.route_i = 0
        local names = {}
        for k in pairs(spec.params or {}) do
            names[#names + 1] = k
        end
        sort(names)
        for _, k in ipairs(names) do
            st.params[#st.params + 1] = { k, tostring(spec.params[k]) }
        end
    else
        st.upstream_override = ui
    end
    if spec.target and ui then
        local u = env.upstreams[ui]
        for i, t in ipairs(u.targets) do
            if t.name == spec.target then
                st.target = i
            end
        end
        if not st.target then
            st.target = env.add_target(ui, spec.target)
        end
    end
    st.http = spec.http
    local req = fake.request(st)
    apply_phase(st, req, spec)
    return req
end

local function state_of(x, what, level)
    local st = fake.state_of(x)
    if not st and type(x) == "table" then
        st = fake.state_of(rawget(x, "_req"))
    end
    if not st then
        error(what .. ": expects a request from t.fake_request (or a " ..
              "response from t.fake_response)", level + 1)
    end
    return st
end

--- A fake response of the upstream for `req` (default: a new fake
-- request): `spec` = { status = 200, headers = {...}, body = "" }. The
-- request moves to the on_response phase (unless it is at on_log, where the
-- response has been sent). Returns the response object.
function _M.fake_response(spec, req)
    spec = spec or {}
    req = req or _M.fake_request {}
    local st = state_of(req, "t.fake_response", 2)
    st.up_res = upstream_answer(spec.status or 200, spec.headers, spec.body)
    st.up = true
    if st.phase < P_RESPONSE then
        st.phase = P_RESPONSE
    elseif st.phase == P_LOG then
        fake.client_response(st)
        st.up = false
    end
    local ui = fake.upstream_index(st)
    if not st.target and ui and #st.env.upstreams[ui].targets > 0 then
        st.target = 1
    end
    return rawget(req, "_res")
end

--- The request the upstream would receive for fake request `req` now.
function _M.upstream_request(req)
    return fake.upstream_request(state_of(req, "t.upstream_request", 2))
end

--- What the client would receive for fake response `res` now:
-- { status, headers, header_list, body }.
function _M.client_response(res)
    local st = state_of(res, "t.client_response", 2)
    if not st.up_res then
        error("t.client_response: the request has no upstream response " ..
              "(make one with t.fake_response)", 2)
    end
    local status, list, body = fake.client_response(st, false)
    return { status = status, headers = fake.header_map(list),
             header_list = list, body = body }
end

local function call_in_co(fn, ...)
    return xpcall(fn, on_hook_error, ...)
end

--- Calls hook or policy function `fn(...)` as the gateway would: in a
-- coroutine bound to the fake request among the arguments, so gw.respond,
-- gw.redirect, gw.sleep and (faked) gw.http.request work. Returns
-- { returned, responded, status, headers, header_list, body, error,
-- traceback, changes, wait_ms }: status/headers/body are what the client
-- would get when the hook answered or failed (or, at on_response, the
-- client's response with the hook's changes).
function _M.call(fn, ...)
    if type(fn) ~= "function" then
        error("t.call: expects a function, got " .. type(fn), 2)
    end
    local st, req
    for i = 1, select("#", ...) do
        local a = select(i, ...)
        st = fake.state_of(a)
        if st then
            req = a
            break
        end
    end
    if not req then
        error("t.call: pass a request from t.fake_request among the " ..
              "arguments", 2)
    end
    local out = { changes = {} }
    st.changes = out.changes
    st.answer, st.replaced = nil, false
    rawset(req, "_responded", nil)
    local before = ctx_snapshot(req)
    local w0 = st.waited
    local co = co_create(call_in_co)
    co_req[co] = req
    local saved = swap_in(st.env)
    local ok, hok, v = co_resume(co, fn, ...)
    restore(saved)
    co_req[co] = nil
    st.changes = nil
    ctx_changes(before, req, out.changes)
    out.wait_ms = (st.waited - w0) * 1000
    if not ok then
        error(traceback(co, tostring(hok)), 0)
    end
    local aborted = false
    if co_status(co) ~= "dead" and hok == fake.ABORT then
        aborted, hok = true, true
    elseif co_status(co) ~= "dead" then
        hok, v = false, "a hook waited for I/O, which moongate.testing " ..
            "does not simulate (gw.sleep and gw.http.request are faked)"
        hook_error_msg = v
    elseif hok and v ~= nil and v ~= RESPONDED_MARK then
        hok = false
        v = fmt("hook returned %s: a hook returns nothing or gw.respond(...)",
                type(v) == "string" and fmt("%q", v) or type(v))
        hook_error_msg = v
    end
    local status, list, body
    if aborted then
        -- the parser answered while the hook waits for the body
        status, list, body = fake.error_response(st, st.abort.status,
                                                 st.abort.message, false)
    elseif not hok then
        out.error, out.traceback = hook_error_msg, v
        if st.phase < P_LOG then
            status, list, body = fake.error_response(st, 500, "hook error",
                                                     false)
        end
    else
        out.returned = v
        if st.answer and st.phase < P_RESPONSE then
            local a = st.answer
            out.responded = true
            status, list, body = fake.local_response(st, a.status, a.ctype,
                                                     a.body, a.block, false)
        elseif st.phase == P_RESPONSE and st.up_res then
            out.responded = st.replaced or nil
            status, list, body = fake.client_response(st, false)
        end
    end
    if status then
        out.status, out.header_list, out.body = status, list, body
        out.headers = fake.header_map(list)
    end
    return out
end

return _M
