-- moongate.testing.fake: request and response objects with the fields and
-- methods of moongate.runtime's, over a plain Lua model of the C request.
--
-- The model (`st` below) holds the fields of mg_request_t (src/request.h)
-- that hooks can see or change. The rules are the C code's, called through
-- the FFI (src/mg_ffi.h): header reads, header edit lists and the phase
-- checks of edits, of a new method, path or query and of the response's
-- status and body run the gateway's
-- own mg_ffi_req_* / mg_ffi_res_* functions (src/ffi_request.c) on a
-- request built in memory from the model (st.cr, src/kit_request.c);
-- which client X-Request-Id is kept (mg_ffi_request_id_check) and the
-- traceparent parser (mg_ffi_trace_parse) are pure functions, and the
-- head goes through llhttp and the gateway's head checks
-- (mg_ffi_head_check, src/http_conn.c); the head the upstream gets, the
-- client's head of a proxied answer and of an answer the gateway makes
-- are written by src/proxy.c's and src/request.c's own builders and
-- src/h1_writer.c on st.cr and the model (mg_ffi_kit_upstream_head,
-- mg_ffi_kit_response_head, mg_ffi_kit_answer_head). What is still
-- written here after the C code (the function named beside each must
-- follow it): the gateway's JSON error body (mg_request_respond_error);
-- the phase checks of set_upstream and set_target, which need the
-- config's upstreams (the model's env).
--
-- A model st:
--   env             gateway context: upstreams, router, clock, id counter
--   method          as received; new_method when a hook set one
--   url, raw_path   request-target and its path part as received
--   path            normalised path (or the path a hook set)
--   query_raw       "?..." as received, or ""; new_query when a hook set one
--   headers         { { name, value }, ... } as received
--   known           index of the first host, x-forwarded-for, connection,
--                   x-request-id, content-length, transfer-encoding header
--   body, content_length, chunked, has_body, http_minor, head_method
--   id, client, client_port, local_port
--   tls             nil (plain listener) or { version, cipher, sni, alpn, resumed }
--   route           the cfg route table, or nil; match (mg_route_match_t),
--                   path_buf (the routed path it points into), params
--   phase           hook phase running (0 none)
--   cr, cr_up       the C request (sync) and the upstream answer it holds
--   path_rewritten, upstream_override, target_override, target
--   up, up_res      the upstream was contacted / its answer { status,
--                   headers, body } (during on_response)
--   res_status, res_body, res_body_set, status, response_started
--   changes         list the current hook's changes are written to
local ffi = require "ffi"
local cjson = require "cjson.safe"
local cdefs = require "moongate.cdefs"
local runtime = require "moongate.runtime"

local type, tostring, tonumber, pairs, ipairs, error = type, tostring,
    tonumber, pairs, ipairs, error
local setmetatable, getmetatable, rawget, rawset = setmetatable, getmetatable,
    rawget, rawset
local byte, find, lower, sub, gsub, fmt, match, gmatch =
    string.byte, string.find, string.lower, string.sub, string.gsub,
    string.format, string.match, string.gmatch
local concat, sort = table.concat, table.sort
local band = require("bit").band

if cjson.encode_escape_forward_slash then
    cjson.encode_escape_forward_slash(false)
end

local P_REQUEST, P_ROUTE, P_ACCESS = cdefs.PHASE_REQUEST, cdefs.PHASE_ROUTE,
    cdefs.PHASE_ACCESS
local P_RESPONSE, P_LOG = cdefs.PHASE_RESPONSE, cdefs.PHASE_LOG
local EDIT_SET, EDIT_ADD, EDIT_REMOVE = cdefs.EDIT_SET, cdefs.EDIT_ADD,
    cdefs.EDIT_REMOVE
local EINVAL, EPHASE, ELIMIT, ENOTFOUND = cdefs.EINVAL, cdefs.EPHASE,
    cdefs.ELIMIT, cdefs.ENOTFOUND
local RESPONDED_MARK = runtime.RESPONDED_MARK
local F_METHOD, F_PATH, F_QUERY = cdefs.METHOD, cdefs.PATH, cdefs.QUERY

-- The C namespace (cdefs.C), raising the reason when it cannot be loaded.
local function C()
    return cdefs.C or require("moongate.clib").require("mg_ffi_now")
end

local _M = {}

-- What a hook's coroutine yields when the core answered while it waits
-- and will never resume it.
_M.ABORT = setmetatable({}, { __tostring = function()
    return "moongate.testing: request answered by the core"
end })

_M.PHASES = { on_request = P_REQUEST, on_route = P_ROUTE, access = P_ACCESS,
              on_response = P_RESPONSE, on_log = P_LOG }

-- runtime.lua's errcheck: the same messages at the same levels.
local function errcheck(rc, what)
    if rc == 0 then return end
    if rc == EPHASE then
        error(what .. ": not possible in this phase (the response has " ..
              "started)", 3)
    elseif rc == ELIMIT then
        error(what .. ": too many header changes in one request", 3)
    elseif rc == ENOTFOUND then
        error(what .. ": no such name", 3)
    end
    error(what .. ": invalid name or value", 3)
end

local function note(st, s)
    local c = st.changes
    if c and not st.quiet then
        c[#c + 1] = s
    end
end


-- The C request (src/kit_request.c) ----------------------------------------

-- The gateway's own header reads, edit lists and phase checks
-- (src/ffi_request.c) run on a request built in memory from the model:
-- st.cr, made from st.headers, told the phase, whether the response
-- started and the upstream's answer before each call (sync).
local u32_arr = ffi.typeof("uint32_t[?]")
local out_p, out_n = ffi.new("const char *[1]"), ffi.new("size_t[1]")

-- The bytes of a header list { { name, value }, ... } and its spans
-- (name offset, length, value offset, length), as a parser leaves them.
local function head_spans(list)
    local parts, spans, off = {}, u32_arr(4 * #list + 1), 0
    for i, h in ipairs(list) do
        local n, v, b = h[1], h[2], 4 * (i - 1)
        parts[#parts + 1], parts[#parts + 2] = n, v
        spans[b], spans[b + 1] = off, #n
        off = off + #n
        spans[b + 2], spans[b + 3] = off, #v
        off = off + #v
    end
    return concat(parts), spans, #list
end

-- st's C request, brought to where the model is.
local function sync(st)
    local c = C()
    local r = st.cr
    if not r then
        local buf, spans, n = head_spans(st.headers)
        r = c.mg_ffi_kit_request_new(buf, #buf, spans, n)
        if r == nil then
            error("moongate.testing: out of memory", 0)
        end
        r = ffi.gc(r, c.mg_ffi_kit_request_free)
        st.cr = r
    end
    c.mg_ffi_kit_request_state(r, st.phase or 0, st.response_started and 1 or 0)
    local up = st.up and st.up_res or nil
    if up ~= st.cr_up then
        local rc
        if up then
            local buf, spans, n = head_spans(up.headers)
            rc = c.mg_ffi_kit_request_upstream(r, up.status, buf, #buf, spans, n)
        else
            rc = c.mg_ffi_kit_request_upstream(r, 0, nil, 0, nil, 0)
        end
        if rc ~= 0 then
            error("moongate.testing: out of memory", 0)
        end
        st.cr_up = up
    end
    return r
end

-- mg_ffi_req_header / mg_ffi_res_header on st's C request (res: the
-- response's headers), nth from 0.
local function read_header(st, res, name, nth)
    local r = sync(st)
    local c = C()
    local f = res and c.mg_ffi_res_header or c.mg_ffi_req_header
    if f(r, name, #name, nth, out_p, out_n) == 1 then
        return ffi.string(out_p[0], out_n[0])
    end
    return nil
end

--- { lower-case name = value } of a header list; a repeated header gives
-- a list of its values (like req:headers()).
function _M.header_map(list)
    local t = {}
    for _, h in ipairs(list) do
        runtime.add_multi(t, lower(h[1]), h[2])
    end
    return t
end


-- Upstreams and targets of the model's gateway -------------------------------

local function upstream_index(st)
    if st.upstream_override then
        return st.upstream_override
    end
    return st.route and st.route.upstream or nil
end
_M.upstream_index = upstream_index

local function upstream_name(st)
    local ui = upstream_index(st)
    return ui and st.env.upstreams[ui].name or nil
end

local function target_name(st)
    local ui = upstream_index(st)
    if not ui or not st.target then
        return nil
    end
    return st.env.upstreams[ui].targets[st.target].name
end


-- Request -------------------------------------------------------------------

local Request = {}
local getters = {}

local function state(self)
    local st = rawget(self, "_st")
    if st.over then
        error("this request is over", 3)
    end
    return st
end

function getters.method(self)
    local st = state(self)
    return st.new_method or st.method
end

function getters.path(self) return state(self).path end
function getters.raw_path(self) return state(self).raw_path end

function getters.query(self)
    local st = state(self)
    if st.new_query then
        return st.new_query
    end
    return sub(st.query_raw, 2)
end

function getters.id(self) return state(self).id end
function getters.client(self) return state(self).client end

function getters.route(self)
    local st = state(self)
    return st.route and st.route.name or nil
end

function getters.upstream(self) return upstream_name(state(self)) end
function getters.target(self) return target_name(state(self)) end
function getters.scheme(self) return state(self).tls and "https" or "http" end
function getters.trace_id(self) return state(self).trace_id end
function getters.span_id(self) return state(self).span_id end
function getters.client_port(self) return state(self).client_port end

function getters.http_version(self)
    return (10 + state(self).http_minor) / 10
end

function getters.ctx(self)
    local t = {}
    rawset(self, "ctx", t)
    return t
end

function getters.params(self)
    local st = state(self)
    local t = {}
    if st.route then
        for _, p in ipairs(st.params) do
            t[p[1]] = p[2]
        end
    end
    -- cached only once the route is known (as runtime.lua does)
    if st.route then
        rawset(self, "params", t)
    end
    return t
end

function getters.tls(self)
    local t = state(self).tls
    if not t then
        return nil
    end
    local copy = {}
    for k, v in pairs(t) do
        copy[k] = v
    end
    rawset(self, "tls", copy)
    return copy
end

function Request.header(self, name, nth)
    return read_header(state(self), false, name, (nth or 1) - 1)
end

function Request.header_all(self, name)
    local st = state(self)
    local t, i = {}, 0
    while true do
        local v = read_header(st, false, name, i)
        if v == nil then
            return t
        end
        i = i + 1
        t[i] = v
    end
end

function getters.headers(self)
    return runtime.header_view(self, _M.header_map(state(self).headers))
end

-- bearer, args, arg: runtime's own (they use only the public API)
for name, fn in pairs(runtime.api_methods) do
    Request[name] = fn
end

local function req_edit(st, op, name, value)
    local r = sync(st)
    return C().mg_ffi_req_edit_header(r, op, name, #name, value, #value)
end

--- req:body(): the whole body. The core reads it when a hook first asks
-- (mg_ffi_req_read_body) and then sends it upstream from memory; a body
-- over the limit is answered 413 by the parser while the hook waits for
-- good (here: the coroutine yields ABORT and is never resumed).
function Request.body(self)
    local st = state(self)
    if not st.has_body then
        return ""
    end
    if st.body_buffered then
        return st.body
    end
    if st.up or st.response_started or st.phase >= P_RESPONSE then
        error("req:body() works only before the request goes upstream", 2)
    end
    st.body_buffered = true
    note(st, fmt("read body (%d bytes)", #st.body))
    local max = st.route and st.route.max_body or st.env.max_body
    if max and #st.body > max then
        st.abort = { status = 413, message = "request body too large" }
        coroutine.yield(_M.ABORT)
    end
    return st.body
end

function Request.set_header(self, name, value)
    value = tostring(value)
    local st = state(self)
    errcheck(req_edit(st, EDIT_SET, name, value), "req:set_header")
    note(st, "set header " .. name .. ": " .. value)
end

function Request.add_header(self, name, value)
    value = tostring(value)
    local st = state(self)
    errcheck(req_edit(st, EDIT_ADD, name, value), "req:add_header")
    note(st, "add header " .. name .. ": " .. value)
end

function Request.remove_header(self, name)
    local st = state(self)
    errcheck(req_edit(st, EDIT_REMOVE, name, ""), "req:remove_header")
    note(st, "remove header " .. name)
end

local function req_writable(st)
    return not st.response_started and st.phase < P_RESPONSE
end

-- mg_ffi_req_set_str on the C request: the phase and the value checked
-- there, the new value kept in the model
local function str_check(st, what, s)
    return C().mg_ffi_req_set_str(sync(st), what, s, #s)
end

function Request.set_path(self, path)
    local st = state(self)
    errcheck(str_check(st, F_PATH, path), "req:set_path")
    st.path = path
    -- before routing the new path is routed; after, it is sent as is
    st.path_rewritten = st.route ~= nil
    note(st, "set path " .. path)
end

local encode_query = runtime.encode_query
_M.encode_query = encode_query

function Request.set_query(self, q)
    if type(q) == "table" then q = encode_query(q) end
    local st = state(self)
    errcheck(str_check(st, F_QUERY, q), "req:set_query")
    st.new_query = q
    note(st, "set query " .. q)
end

function Request.set_method(self, m)
    local st = state(self)
    errcheck(str_check(st, F_METHOD, m), "req:set_method")
    st.new_method = m
    note(st, "set method " .. m)
end

function Request.set_upstream(self, name)
    local st = state(self)
    local rc = 0
    local _ = #name
    local env = st.env
    local ui = env.upstream_by_name[name]
    if not req_writable(st) or st.up then
        rc = EPHASE
    elseif not ui and env.lenient then
        ui = #env.upstreams + 1
        env.upstreams[ui] = { name = name, targets = {} }
        env.upstream_by_name[name] = ui
    elseif not ui then
        rc = ENOTFOUND
    end
    errcheck(rc, "req:set_upstream")
    st.upstream_override = ui
    st.target_override = nil
    note(st, "set upstream " .. name)
end

function Request.set_target(self, name)
    local st = state(self)
    local rc = 0
    local _ = #name
    local ui = upstream_index(st)
    local ti
    if not req_writable(st) or st.up then
        rc = EPHASE
    elseif not ui then
        rc = ENOTFOUND
    else
        local u = st.env.upstreams[ui]
        for i, t in ipairs(u.targets) do
            if t.name == name then
                ti = i
                break
            end
        end
        if not ti and st.env.lenient then
            ti = #u.targets + 1
            u.targets[ti] = { name = name, weight = 1 }
        elseif not ti then
            rc = ENOTFOUND
        end
    end
    errcheck(rc, "req:set_target")
    st.target_override = ti
    note(st, "set target " .. name)
end

-- mg_ffi_req_skip_cache, mg_ffi_req_cache_key: the fake has no cache; the
-- lookup would happen when the request goes upstream
function Request.skip_cache(self)
    local st = state(self)
    if st.up or st.response_started then
        error("req:skip_cache: too late, the cache was already looked up " ..
              "(call it from on_request, on_route or a route policy's " ..
              "on_request)", 2)
    end
    st.cache_skip = true
    note(st, "skip cache")
end

function Request.cache_key(self, part)
    local st = state(self)
    part = tostring(part)
    if st.up or st.response_started then
        error("req:cache_key: too late, the cache was already looked up " ..
              "(call it from on_request, on_route or a route policy's " ..
              "on_request)", 2)
    elseif find(part, "\n", 1, true) then
        errcheck(EINVAL, "req:cache_key")
    end
    st.cache_key = (st.cache_key or "") .. part .. "\n"
    note(st, "cache key + " .. part)
end

function getters.cache(self)
    return state(self).cache_state
end

local req_mt = runtime.request_mt(getters, Request)


-- Response --------------------------------------------------------------------

local Response = {}
local res_getters = {}

-- The upstream's headers, only while on_response runs (as in C).
local function up_headers(st)
    if st.up and st.phase == P_RESPONSE then
        return st.up_res.headers
    end
    return nil
end

function res_getters.status(self)
    local st = state(self._req)
    if st.res_status ~= 0 then
        return st.res_status
    end
    if st.status ~= 0 then
        return st.status
    end
    if st.up and st.phase == P_RESPONSE then
        return st.up_res.status
    end
    return 0
end

function Response.header(self, name, nth)
    local st = state(self._req)
    return read_header(st, true, name, (nth or 1) - 1)
end

function Response.headers(self)
    return _M.header_map(up_headers(state(self._req)) or {})
end

function Response.set_status(self, status)
    local st = state(self._req)
    if type(status) ~= "number" then
        error("bad argument #2 to 'mg_ffi_res_set_status' (cannot convert '"
              .. type(status) .. "' to 'int')", 2)
    end
    status = status - status % 1
    -- the phase and the range checked by mg_ffi_res_set_status
    local rc = C().mg_ffi_res_set_status(sync(st), status)
    if rc == EINVAL then
        runtime.hook_error(runtime.status_refused("res:set_status", status))
    end
    errcheck(rc, "res:set_status")
    st.res_status = status
    note(st, "set status " .. status)
end

local function res_edit(st, op, name, value)
    local r = sync(st)
    return C().mg_ffi_res_edit_header(r, op, name, #name, value, #value)
end

function Response.set_header(self, name, value)
    value = tostring(value)
    local st = state(self._req)
    errcheck(res_edit(st, EDIT_SET, name, value), "res:set_header")
    note(st, "set response header " .. name .. ": " .. value)
end

function Response.add_header(self, name, value)
    value = tostring(value)
    local st = state(self._req)
    errcheck(res_edit(st, EDIT_ADD, name, value), "res:add_header")
    note(st, "add response header " .. name .. ": " .. value)
end

function Response.remove_header(self, name)
    local st = state(self._req)
    errcheck(res_edit(st, EDIT_REMOVE, name, ""), "res:remove_header")
    note(st, "remove response header " .. name)
end

-- mg_ffi_res_set_body (the runtime does not check its result); the body
-- itself is kept in the model
local function set_body(st, body)
    local rc = C().mg_ffi_res_set_body(sync(st), body, #body)
    if rc ~= 0 then
        return rc
    end
    st.res_body = body
    st.res_body_set = true
    return 0
end

function Response.set_body(self, body)
    if type(body) == "table" then
        body = runtime.json_text(cjson.encode(body))
        self:set_header("content-type", "application/json")
    end
    body = tostring(body)
    local st = state(self._req)
    errcheck(set_body(st, body), "res:set_body")
    note(st, "set body (" .. #body .. " bytes)")
end

local res_mt = {
    __index = function(self, k)
        local g = res_getters[k]
        if g then return g(self) end
        return Response[k]
    end,
}


-- Answers (runtime.lua's gw.respond side, on the model) -----------------------

local header_block, encode_body = runtime.header_block, runtime.encode_body

function Request._respond(self, status, body, headers)
    if not runtime.final_status(status) then
        runtime.hook_error(runtime.status_refused("gw.respond", status))
    end
    local b, ctype = encode_body(body)
    local st = state(self)
    if st.phase == P_RESPONSE then
        -- the upstream's answer is replaced as a whole
        local res = rawget(self, "_res")
        st.quiet = true
        res:set_status(status)
        set_body(st, b)
        if headers then
            for k, v in pairs(headers) do res:set_header(k, v) end
        end
        if not (headers and (headers["content-type"]
                             or headers["Content-Type"])) then
            res:set_header("content-type", ctype)
        end
        st.quiet = false
        st.replaced = true
        note(st, fmt("respond %d (replaces the upstream's answer, %d bytes)",
                     status, #b))
        return RESPONDED_MARK
    end
    local block, hctype = header_block(headers)
    st.answer = { status = status, body = b, block = block,
                  ctype = hctype or ctype }
    rawset(self, "_responded", true)
    note(st, fmt("respond %d (%d bytes)", status, #b))
    return RESPONDED_MARK
end

--- gw.sleep in the kit: advances the gateway's virtual clock at once.
function Request._sleep(self, seconds)
    if type(seconds) ~= "number" then
        error("gw.sleep: seconds must be a number", 3)
    end
    if not (seconds >= 0) or seconds > 86400 * 365 then
        error("gw.sleep: invalid duration " .. tostring(seconds), 3)
    end
    local st = state(self)
    st.env.clock.offset = st.env.clock.offset + seconds
    st.waited = st.waited + seconds
    note(st, fmt("sleep %gs (virtual)", seconds))
end


-- Building a model ------------------------------------------------------------

-- The header list of a request spec: { {name, value}, ... } entries first,
-- in order, then name = value | { values } entries sorted by name.
local function header_list(spec_headers)
    local out = {}
    if spec_headers == nil then
        return out
    end
    if type(spec_headers) ~= "table" then
        error("headers must be a table, got " .. type(spec_headers), 0)
    end
    for _, h in ipairs(spec_headers) do
        if type(h) ~= "table" or type(h[1]) ~= "string" then
            error("headers[i] must be { name, value }", 0)
        end
        out[#out + 1] = { h[1], tostring(h[2]) }
    end
    local names = {}
    for k in pairs(spec_headers) do
        if type(k) == "string" then
            names[#names + 1] = k
        end
    end
    sort(names, function(a, b) return lower(a) < lower(b) end)
    for _, k in ipairs(names) do
        local v = spec_headers[k]
        if type(v) == "table" then
            for _, x in ipairs(v) do
                out[#out + 1] = { k, tostring(x) }
            end
        elseif v ~= false and v ~= nil then
            out[#out + 1] = { k, tostring(v) }
        end
    end
    return out
end
_M.header_list = header_list

local function has_header(list, lname)
    for _, h in ipairs(list) do
        if lower(h[1]) == lname then
            return true
        end
    end
    return false
end

local KNOWN = {  -- MG_H_* (src/request.h), in order
    "host", "connection", "expect", "request_id", "xff", "upgrade",
    "content_length", "transfer_encoding", "traceparent", "authorization",
    "proxy_authorization", "content_type",
}
local known_buf = ffi.new("uint16_t[?]", #KNOWN)
local head_flags, head_cl = ffi.new("int[1]"), ffi.new("uint64_t[1]")
local head_why = ffi.new("const char *[1]")

local trace_id_buf, trace_flags_buf = ffi.new("char[32]"), ffi.new("char[2]")

--- A traceparent value -> trace id, flags to send on ("01"/"00"), or nil
-- when it is not one to continue: the gateway's parser (mg_trace_parse).
function _M.parse_traceparent(v)
    if C().mg_ffi_trace_parse(v, #v, trace_id_buf, trace_flags_buf) ~= 0 then
        return nil
    end
    return ffi.string(trace_id_buf, 32), ffi.string(trace_flags_buf, 2)
end

local function trim(s)
    return (gsub(s, "^[ \t]*(.-)[ \t]*$", "%1"))
end

--- A model of the request described by `spec` (see docs/testing.md) as
-- the core has it when its head is parsed (llhttp callbacks, then
-- process_head: request id). Sets st.bad (the 400 reason) for what the
-- core refuses. prepare() then splits and normalises the target.
function _M.new_state(spec, env)
    local st = {
        env = env, phase = 0, waited = 0,
        method = spec.method or "GET",
        url = spec.path or "/",
        client = spec.client or "127.0.0.1",
        client_port = spec.client_port or 50000,
        local_port = spec.port or env.listen_port or 80,
        http_minor = 1,
        res_status = 0, status = 0,
        params = {},
    }
    if type(st.method) ~= "string" or st.method == "" then
        error("method must be a non-empty string", 0)
    end
    if type(st.url) ~= "string" then
        error("path must be a string", 0)
    end
    if spec.query ~= nil then
        local q = spec.query
        if type(q) == "table" then q = encode_query(q) end
        st.url = st.url .. (find(st.url, "?", 1, true) and "&" or "?") .. q
    end
    if spec.http_version == 1.0 or spec.http_version == "1.0" then
        st.http_minor = 0
    end
    if spec.tls then
        -- a request on a TLS listener: what a handshake would have agreed
        local t = type(spec.tls) == "table" and spec.tls or {}
        st.tls = { version = t.version or "TLSv1.3",
                   cipher = t.cipher or "TLS_AES_256_GCM_SHA384",
                   sni = t.sni, alpn = t.alpn, resumed = t.resumed == true }
    end
    local hs = header_list(spec.headers)
    -- a client sends Host (HTTP/1.1) and frames its body
    if spec.host ~= false and not has_header(hs, "host") then
        if spec.host ~= nil or st.http_minor == 1 then
            table.insert(hs, 1, { "Host", spec.host or "localhost" })
        end
    end
    local body = spec.body
    if body ~= nil then
        body = tostring(body)
        if not has_header(hs, "content-length")
            and not has_header(hs, "transfer-encoding") then
            hs[#hs + 1] = { "Content-Length", tostring(#body) }
        end
    end
    -- llhttp skips the blanks before a value, on_headers_complete those
    -- after it (RFC 9112 5): "Host: a " is host "a"
    local lines = {}
    for i, h in ipairs(hs) do
        lines[i] = h[1] .. ": " .. h[2] .. "\r\n"
        h[2] = trim(h[2])
    end
    st.headers = hs
    st.body = body or ""

    -- the gateway's checks of the head (mg_ffi_head_check): llhttp, the
    -- header classification, the framing; known as classified up to a
    -- refusal (which X-Request-Id and traceparent the answer carries)
    local head = st.method .. " " .. st.url .. " HTTP/1." .. st.http_minor
        .. "\r\n" .. concat(lines) .. "\r\n"
    local status = C().mg_ffi_head_check(head, #head, known_buf, head_flags,
                                         head_cl, head_why)
    if status ~= 0 then
        st.bad, st.bad_status = ffi.string(head_why[0]), status
    end
    local known = {}
    for i, k in ipairs(KNOWN) do
        if known_buf[i - 1] ~= 0 then known[k] = known_buf[i - 1] end
    end
    st.known = known
    st.trace_bad = band(head_flags[0], cdefs.HEAD_TRACE_BAD) ~= 0 or nil
    st.chunked = band(head_flags[0], cdefs.HEAD_CHUNKED) ~= 0 or nil
    st.content_length = tonumber(head_cl[0])
    local rid_i = known.request_id
    st.has_body = st.chunked or st.content_length > 0
    st.head_method = st.method == "HEAD"

    -- assign_trace (src/trace.c mg_trace_parse; ids from env.next_hex)
    local tp = known.traceparent and not st.trace_bad
        and trim(hs[known.traceparent][2])
    local tid, flags = tp and _M.parse_traceparent(tp)
    st.trace_continued = tid ~= nil
    st.trace_id = tid or env.next_hex(32)
    st.trace_flags = flags or "01"
    st.span_id = env.next_hex(16)

    -- assign_request_id
    local rid = rid_i and hs[rid_i][2]
    if rid and C().mg_ffi_request_id_check(rid, #rid) == 0 then
        st.id = rid
    else
        st.id = env.next_id()
    end
    return st
end

--- prepare_target: splits the target into normalised path and query.
-- Returns true, or false when the core answers 400 "bad request target".
function _M.prepare(st, normalize)
    local url = st.url
    if url == "" or byte(url, 1) ~= 47 then
        return false
    end
    local q = find(url, "?", 1, true)
    if q and find(url, "#", q, true) then
        return false -- a fragment in the query
    end
    local raw = q and sub(url, 1, q - 1) or url
    local path = normalize(raw)
    if not path then
        return false
    end
    st.raw_path = raw
    st.path = path
    st.query_raw = q and sub(url, q) or ""
    return true
end

--- A request object over model st (and its response object).
function _M.request(st)
    local req = setmetatable({ _st = st }, req_mt)
    local res = setmetatable({ _req = req }, res_mt)
    rawset(req, "_res", res)
    return req, res
end

--- The model of a request object made here, or nil.
function _M.state_of(req)
    if type(req) == "table" and getmetatable(req) == req_mt then
        return rawget(req, "_st")
    end
    return nil
end



-- What goes on the wire -------------------------------------------------------

-- mg_status_has_body (src/request.h): 1xx, 204 and 304 carry no body
local function has_body(status)
    return status >= 200 and status ~= 204 and status ~= 304
end

-- The header lines of a "Name: value\r\n" block.
local function parse_block(block, out)
    for name, value in gmatch(block or "", "([^:\r\n]+): ([^\r\n]*)\r\n") do
        out[#out + 1] = { name, value }
    end
    return out
end

--- send_head: the request the upstream receives, as
-- { method, path, query, uri, headers (map), header_list, body, head,
--   upstream, target }: the head src/proxy.c's own builders write
-- (mg_ffi_kit_upstream_head) for st's C request (its headers and edits)
-- and the rest of the model (kit_head). The routed path (route rewrite /
-- strip_prefix) is the router's, from st.match, when no hook set the path
-- after routing.
local kit_head = ffi.new("mg_ffi_kit_head_t")
local kit_known = ffi.new("uint16_t[?]", #KNOWN)
local kit_out, kit_body = ffi.new("const char *[1]"), ffi.new("int[1]")

-- kit_head set from st (its strings stay referenced by st for the call):
-- what the head builders read besides st's C request.
local function head_model(st, target)
    local h, ui = kit_head, upstream_index(st)
    local up = ui and st.env.upstreams[ui] or {}
    for i, k in ipairs(KNOWN) do
        kit_known[i - 1] = st.known[k] or 0
    end
    h.method, h.method_len = st.method, #st.method
    h.new_method, h.new_method_len = st.new_method, st.new_method and #st.new_method or 0
    h.path, h.path_len = st.path, #st.path
    h.query, h.query_len = st.query_raw, #st.query_raw
    h.new_query, h.new_query_len = st.new_query, st.new_query and #st.new_query or 0
    h.path_rewritten = st.path_rewritten and 1 or 0
    h.match = st.route and st.env.upstream_path and st.match or nil
    h.known = kit_known
    h.client_ip, h.request_id, h.target = st.client, st.id, target
    h.trace_id, h.span_id, h.trace_flags = st.trace_id, st.span_id, st.trace_flags
    h.trace_continued = st.trace_continued and 1 or 0
    h.tls = st.tls and 1 or 0
    h.head_method = st.head_method and 1 or 0
    h.body_buffered = st.body_buffered and 1 or 0
    h.has_body = st.has_body and 1 or 0
    h.chunked = st.chunked and 1 or 0
    h.body_len, h.content_length = #st.body, st.content_length or 0
    h.forwarded = up.forwarded == false and 0 or 1
    h.send_request_id = up.request_id == false and 0 or 1
    h.override_headers = up.override_headers and 1 or 0
    h.res_status = st.res_status or 0
    h.res_body_set = st.res_body_set and 1 or 0
    h.res_body_len = st.res_body and #st.res_body or 0
    h.http_minor = st.http_minor or 1
    return h
end

-- The head a C builder wrote (n bytes at kit_out, or its reason).
local function built_head(n)
    n = tonumber(n)
    if n < 0 then
        error("moongate.testing: " .. ffi.string(kit_out[0]), 0)
    end
    return ffi.string(kit_out[0], n)
end

function _M.upstream_request(st)
    local r = sync(st)
    local target = target_name(st)
    local head = built_head(C().mg_ffi_kit_upstream_head(r, head_model(st, target or ""),
                                                         kit_out))
    local method, uri, rest = match(head, "^(%S+) (%S*) HTTP/1%.1\r\n(.*)$")
    local path, q = match(uri, "^([^?]*)(.*)$")
    local out = parse_block(rest, {})
    return {
        method = method, path = path, query = sub(q, 2), uri = uri,
        headers = _M.header_map(out), header_list = out,
        body = st.has_body and st.body or "",
        head = head,
        upstream = upstream_name(st), target = target,
    }
end

--- emit_head: what the client gets from the upstream's answer st.up_res
-- and the on_response changes, as src/proxy.c makes it and src/h1_writer.c
-- writes it (mg_ffi_kit_response_head) less the gateway's Connection
-- header (the kit has no client connection). Sets st.status and
-- st.response_started unless `commit` is false. Returns status, header
-- list, body.
function _M.client_response(st, commit)
    local r = sync(st)
    local head = built_head(C().mg_ffi_kit_response_head(r, head_model(st, ""), kit_out,
                                                         kit_body))
    local status, rest = match(head, "^HTTP/1%.1 (%d%d%d) [^\r\n]*\r\n(.*)$")
    local out = {}
    for _, h in ipairs(parse_block(rest, {})) do
        if lower(h[1]) ~= "connection" then
            out[#out + 1] = h
        end
    end
    local b = kit_body[0]
    local body = b == 2 and st.res_body or b == 1 and st.up_res.body or ""
    status = tonumber(status)
    if commit ~= false then
        st.status = status
        st.response_started = true
    end
    return status, out, body
end

--- mg_request_respond: an answer made by the gateway (hook, handler,
-- error), its head as src/request.c makes it and src/h1_writer.c writes it
-- (mg_ffi_kit_answer_head) less the Connection header. `block` is the
-- flat { name, value, ... } list of gw.respond's headers. `commit` false
-- only computes it. Returns status, header list, body.
function _M.local_response(st, status, ctype, body, block, commit)
    local r = sync(st)
    block = block or {}
    local n = #block
    local kv = ffi.new("const char *[?]", n + 1)
    local lens = ffi.new("size_t[?]", n + 1)
    for i = 1, n do
        kv[i - 1], lens[i - 1] = block[i], #block[i]
    end
    local head = built_head(C().mg_ffi_kit_answer_head(r, status, ctype or "text/plain", #body,
                                                       kv, lens, n / 2, st.id,
                                                       st.http_minor or 1,
                                                       st.head_method and 1 or 0, kit_out))
    local rest = match(head, "^HTTP/1%.1 %d%d%d [^\r\n]*\r\n(.*)$")
    local out = {}
    for _, h in ipairs(parse_block(rest, {})) do
        if lower(h[1]) ~= "connection" then
            out[#out + 1] = h
        end
    end
    if not has_body(status) then
        body = ""
    end
    if commit ~= false then
        st.status = status
        st.response_started = true
    end
    return status, out, st.head_method and "" or body
end

--- mg_request_respond_error: the gateway's JSON error answer.
function _M.error_response(st, status, message, commit, block)
    local body = fmt('{"error":"%s","status":%d,"request_id":"%s"}\n',
                     message, status, st.id)
    return _M.local_response(st, status, "application/json", body,
                             block or {}, commit)
end

return _M
