-- moongate.testing.fake: request and response objects with the fields and
-- methods of moongate.runtime's, over a plain Lua model of the C request.
--
-- The model (`st` below) holds the fields of mg_request_t (src/request.h)
-- that hooks can see or change. The rules are the C code's, called through
-- the FFI (src/mg_ffi.h): header reads, header edit lists and the phase
-- checks of edits, of a new method, path or query and of the response's
-- status and body run the gateway's
-- own mg_ffi_req_* / mg_ffi_res_* functions (src/ffi_request.c) on a
-- request built in memory from the model (st.cr, src/kit_request.c),
-- whose config (r->g->cfg) is the kit's (env.kc: the gateway's copy of the
-- kit's config file), so that set_upstream and set_target are checked
-- there too; which client X-Request-Id is kept (mg_ffi_request_id_check)
-- and the traceparent parser (mg_ffi_trace_parse) are pure functions; the
-- head goes through llhttp with a client connection's own callbacks and
-- the config's limits (mg_ffi_head_check, src/http_conn.c); the head the
-- upstream gets and the client's head of a proxied answer are written by
-- src/proxy.c's own head builders on st.cr and the model
-- (mg_ffi_kit_upstream_head, mg_ffi_kit_response_head), and the gateway's
-- own answers by src/request.c, written by src/h1_writer.c
-- (mg_ffi_kit_respond). What is left here is the state model.
--
-- A model st:
--   env             gateway context: kc (the kit config), upstreams, router,
--                   clock, id counter
--   method          as received; new_method when a hook set one
--   url, raw_path   request-target and its path part as received
--   path            normalised path (or the path a hook set)
--   query_raw       "?..." as received, or ""; new_query when a hook set one
--   headers         { { name, value }, ... } as received
--   known           { lower-case name = index of its first header } for the
--                   headers of the request's known[] slots (from C)
--   body, content_length, chunked, has_body, http_minor, head_method
--   id, client, client_port, local_port
--   tls             nil (plain listener) or { version, cipher, sni, alpn, resumed,
--                   client (an X509 pointer from its PEM), client_verified }
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
local cert = require "moongate.cert"
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

-- The model's route upstream as mg_ffi_kit_request_state takes it.
local function route_upstream(st)
    if not st.route then
        return -2
    end
    return st.route.upstream and st.route.upstream - 1 or -1
end

-- st's C request, brought to where the model is: made from the head as
-- the head check read it (st.head: bytes, request line and header spans).
-- Its config (r->g) is the model's gateway's (env.kc, src/kit_request.c),
-- which outlives it.
local function sync(st)
    local c = C()
    local r = st.cr
    if not r then
        local h = st.head
        r = c.mg_ffi_kit_request_new(st.env.kc, h.bytes, #h.bytes, h.line, h.spans, h.n)
        if r == nil then
            error("moongate.testing: out of memory", 0)
        end
        r = ffi.gc(r, c.mg_ffi_kit_request_free)
        st.cr = r
    end
    c.mg_ffi_kit_request_state(r, st.phase or 0, st.response_started and 1 or 0,
                               route_upstream(st), (st.upstream_override or 0) - 1,
                               (st.target_override or 0) - 1)
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
function getters.client(self)
    local st = state(self)
    return st.real_client or st.client
end
function getters.peer(self) return state(self).client end

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
        if k ~= "client" and k ~= "client_verified" then
            copy[k] = v
        end
    end
    -- the client certificate's fields are read by C, as on a real listener
    local x = t.client
    copy.client = x and cert.info(function() return x end, t.client_verified)
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

-- the kit has no PROXY header: a spec's proxy_tlvs = { [type] = value }
-- stands for the TLVs one would have carried
function Request.proxy_tlv(self, t)
    if type(t) ~= "number" then
        error("req:proxy_tlv expects a TLV type (a number 0-255)", 2)
    end
    local tlvs = state(self).proxy_tlvs
    return tlvs and tlvs[t] or nil
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

-- The overrides the C request holds after mg_ffi_req_set_upstream /
-- _set_target, into the model (1-based).
local ov_upstream, ov_target = ffi.new("int[1]"), ffi.new("int[1]")
local function read_overrides(st)
    C().mg_ffi_kit_request_overrides(st.cr, ov_upstream, ov_target)
    st.upstream_override = ov_upstream[0] >= 0 and ov_upstream[0] + 1 or nil
    st.target_override = ov_target[0] >= 0 and ov_target[0] + 1 or nil
end

-- mg_ffi_req_set_upstream / _set_target on the C request (its phase and
-- the kit config's upstreams checked there). A fake request made without
-- a config takes any name (env.lenient): the kit adds it to its config.
function Request.set_upstream(self, name)
    local st = state(self)
    local c, env = C(), st.env
    local rc = c.mg_ffi_req_set_upstream(sync(st), name, #name)
    if rc == ENOTFOUND and env.lenient then
        env.add(name)
        rc = c.mg_ffi_req_set_upstream(sync(st), name, #name)
    end
    errcheck(rc, "req:set_upstream")
    read_overrides(st)
    note(st, "set upstream " .. name)
end

function Request.set_target(self, name)
    local st = state(self)
    local c, env = C(), st.env
    local rc = c.mg_ffi_req_set_target(sync(st), name, #name)
    local ui = upstream_index(st)
    if rc == ENOTFOUND and env.lenient and ui then
        env.add_target(ui, name)
        rc = c.mg_ffi_req_set_target(sync(st), name, #name)
    end
    errcheck(rc, "req:set_target")
    read_overrides(st)
    note(st, "set target " .. name)
end

-- moongate.compression's way in: the gateway's own choice on the C
-- request (Accept-Encoding), applied to the head client_response makes
local ENC_NAMES = { [0] = "identity", "gzip", "br" }
function Request.compress(self, conf)
    local st = state(self)
    local rc = C().mg_ffi_req_set_compression(sync(st), conf)
    if rc < 0 then errcheck(rc, "req:compress") end
    note(st, "compress " .. ENC_NAMES[rc])
end

-- the gateway's own setter on the C request (its phase checks, the key's
-- hash), read by pick_target
function Request.set_hash_key(self, key)
    local st = state(self)
    if type(key) ~= "string" then
        error("req:set_hash_key: the key must be a string, got " .. type(key),
              2)
    end
    errcheck(C().mg_ffi_req_set_hash_key(sync(st), key, #key),
             "req:set_hash_key")
    note(st, "set hash key " .. key)
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

-- The headers of the request's known[] slots (MG_H_*, src/request.h), in
-- their order: their lower-case names, from C; known_buf and kit_known
-- hold that many slots.
local KNOWN, known_buf, kit_known
local function known_names()
    if not KNOWN then
        local c, names = C(), {}
        while true do
            local n = c.mg_ffi_kit_known_header(#names)
            if n == nil then
                break
            end
            names[#names + 1] = ffi.string(n)
        end
        KNOWN = names
        known_buf = ffi.new("uint16_t[?]", #names)
        kit_known = ffi.new("uint16_t[?]", #names)
    end
    return KNOWN
end
local head_flags, head_cl = ffi.new("int[1]"), ffi.new("uint64_t[1]")
local head_n = ffi.new("uint32_t[1]")
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

--- A model of the request described by `spec` (see docs/testing.md) as
-- the core has it when its head is parsed (llhttp callbacks, then
-- process_head: request id). Sets st.bad (the 400 reason) for what the
-- core refuses. checks() then runs the pipeline's checks of the head.
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
    elseif spec.http_version == 0.9 or spec.http_version == "0.9" then
        st.http09 = true
    end
    if spec.tls then
        -- a request on a TLS listener: what a handshake would have agreed
        local t = type(spec.tls) == "table" and spec.tls or {}
        st.tls = { version = t.version or "TLSv1.3",
                   cipher = t.cipher or "TLS_AES_256_GCM_SHA384",
                   sni = t.sni, alpn = t.alpn, resumed = t.resumed == true }
        if t.client ~= nil then
            -- tls = { client = PEM text }: a verified client certificate
            -- (client_verified = false for one the listener did not check)
            local x, why = cert.from_pem(t.client)
            if not x then
                error("request.tls.client: " .. why, 3)
            end
            st.tls.client = x
            st.tls.client_verified = t.client_verified ~= false
        end
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
    local lines = {}
    for i, h in ipairs(hs) do
        lines[i] = h[1] .. ": " .. h[2] .. "\r\n"
    end
    st.body = body or ""

    -- the gateway's checks of the head (mg_ffi_head_check): llhttp with a
    -- client connection's callbacks and the config's limits, the header
    -- classification, the framing. The headers are what they read (values
    -- without the blanks around them: "Host: a " is host "a"), known as
    -- classified up to a refusal (which X-Request-Id and traceparent the
    -- answer carries). http_version 0.9: a request line without a version,
    -- as an HTTP/0.9 client sends it.
    local version = st.http09 and "" or " HTTP/1." .. st.http_minor
    local head = st.method .. " " .. st.url .. version .. "\r\n" .. concat(lines)
        .. "\r\n"
    local _, nlines = gsub(head, "\n", "")
    local spans = u32_arr(4 * nlines)
    known_names()
    local status = C().mg_ffi_head_check(env.kc, head, #head, known_buf, head_flags,
                                         head_cl, spans, nlines, head_n, head_why)
    if status ~= 0 then
        st.bad, st.bad_status = ffi.string(head_why[0]), status
    end
    st.head = { bytes = head, spans = spans, n = tonumber(head_n[0]),
                line = u32_arr(4, 0, #st.method, #st.method + 1, #st.url) }
    hs = {}
    for i = 0, tonumber(head_n[0]) - 1 do
        local sp = spans + 4 * i
        hs[i + 1] = { sub(head, sp[0] + 1, sp[0] + sp[1]), sub(head, sp[2] + 1, sp[2] + sp[3]) }
    end
    st.headers = hs
    local known = {}
    for i, k in ipairs(known_names()) do
        if known_buf[i - 1] ~= 0 then known[k] = known_buf[i - 1] end
    end
    st.known = known
    st.trace_bad = band(head_flags[0], cdefs.HEAD_TRACE_BAD) ~= 0 or nil
    st.chunked = band(head_flags[0], cdefs.HEAD_CHUNKED) ~= 0 or nil
    st.head_method = band(head_flags[0], cdefs.HEAD_HEAD) ~= 0
    st.content_length = tonumber(head_cl[0])
    local rid_i = known["x-request-id"]
    st.has_body = st.chunked or st.content_length > 0

    -- assign_trace (src/trace.c mg_trace_parse; ids from env.next_hex)
    local tp = known.traceparent and not st.trace_bad and hs[known.traceparent][2]
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
    st.proxy_tlvs = spec.proxy_tlvs
    if env.trusted then
        _M.resolve_client(st)
    end
    return st
end

local client_buf = ffi.new("char[64]")

--- The real client behind trusted proxies (src/client_addr.c, the
-- gateway's own walk over the received headers): st.real_client,
-- st.xff_trusted and st.xff_drop, from env.trusted (a set made by
-- _M.trusted_set) and env.real_ip_header.
function _M.resolve_client(st)
    local env = st.env
    local rc = C().mg_ffi_real_client(sync(st), env.trusted, env.real_ip_header,
                                      st.client, #st.client, client_buf, 64)
    if rc < 0 then
        error(fmt("client %q is not an IP address", st.client), 0)
    end
    st.real_client = ffi.string(client_buf)
    st.xff_trusted, st.xff_drop = rc == 1, rc == 0
end

--- Fills env.trusted and env.real_ip_header from a config's
-- trusted_proxies (a list of CIDR strings, checked) and real_ip_header
-- (a name): nothing when the list is empty, as in the gateway.
function _M.trusted_set(env, list, header)
    if not list or #list == 0 then
        return
    end
    local n = #list
    local ptrs, lens = ffi.new("const char *[?]", n), ffi.new("size_t[?]", n)
    for i, e in ipairs(list) do
        ptrs[i - 1], lens[i - 1] = e, #e
    end
    local set = C().mg_ffi_trusted_new(ptrs, lens, n)
    if set == nil then
        error("trusted_proxies: not a list of addresses or CIDRs", 0)
    end
    env.trusted = ffi.gc(set, C().mg_ffi_trusted_free)
    env.trusted_list = list -- the strings the set was made from stay alive
    env.real_ip_header = header or "X-Forwarded-For"
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

-- The header lines of a "Name: value\r\n" block the C code wrote.
local function parse_block(block, out)
    for name, value in gmatch(block or "", "([^:\r\n]+): ([^\r\n]*)\r\n") do
        out[#out + 1] = { name, value }
    end
    return out
end

-- The status and header list of a client's head the C code wrote, less
-- its Connection header (the kit has no client connection).
local function client_head(head)
    local status, rest = match(head, "^HTTP/1%.%d (%d%d%d) [^\r\n]*\r\n(.*)$")
    local out = {}
    for _, h in ipairs(parse_block(rest, {})) do
        if lower(h[1]) ~= "connection" then
            out[#out + 1] = h
        end
    end
    return tonumber(status), out
end

--- send_head: the request the upstream receives, as
-- { method, path, query, uri, headers (map), header_list, body, head,
--   upstream, target }: the head src/proxy.c's own builders write
-- (mg_ffi_kit_upstream_head) for st's C request (its headers and edits)
-- and the rest of the model (kit_head). The routed path (route rewrite /
-- strip_prefix) is the router's, from st.match, when no hook set the path
-- after routing.
local kit_head = ffi.new("mg_ffi_kit_head_t")
local kit_out, kit_body = ffi.new("const char *[1]"), ffi.new("int[1]")

-- kit_head set from st (its strings stay referenced by st for the call):
-- what the head builders read besides st's C request.
local function head_model(st, target)
    local h, ui = kit_head, upstream_index(st)
    local up = ui and st.env.upstreams[ui] or {}
    for i, k in ipairs(known_names()) do
        kit_known[i - 1] = st.known[k] or 0
    end
    -- (a head refused before its target was split has no path yet)
    local path, query = st.path or "", st.query_raw or ""
    h.method, h.method_len = st.method, #st.method
    h.new_method, h.new_method_len = st.new_method, st.new_method and #st.new_method or 0
    h.path, h.path_len = path, #path
    h.query, h.query_len = query, #query
    h.new_query, h.new_query_len = st.new_query, st.new_query and #st.new_query or 0
    h.path_rewritten = st.path_rewritten and 1 or 0
    h.match = st.route and st.env.upstream_path and st.match or nil
    h.known = kit_known
    h.client_ip, h.request_id, h.target = st.client, st.id, target
    h.xff_trusted, h.xff_drop = st.xff_trusted and 1 or 0, st.xff_drop and 1 or 0
    h.trace_id, h.span_id, h.trace_flags = st.trace_id, st.span_id, st.trace_flags
    h.trace_continued = st.trace_continued and 1 or 0
    h.tls = st.tls and 1 or 0
    h.head_method = st.head_method and 1 or 0
    h.body_buffered = st.body_buffered and 1 or 0
    h.has_body = st.has_body and 1 or 0
    h.chunked = st.chunked and 1 or 0
    h.body_len, h.content_length = #st.body, st.content_length or 0
    h.local_port, h.listener = st.local_port, st.env.listener_of(st.local_port)
    -- the router's answer and the config route (none before routing)
    h.route_rc, h.route_index = st.route_rc or -1, (st.route_i or 0) - 1
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

--- mg_balancer_pick: the target (1-based) the upstream's balancer gives
-- st, by the gateway's own balancers (mg_ffi_lb_*, one worker's view) and
-- key reader (mg_ffi_kit_lb_key); every target counts as up and none has
-- a request in flight (the kit has no connections).
local kit_key = ffi.new("uint64_t[1]")
function _M.pick_target(st)
    local ui = upstream_index(st)
    local u = st.env.upstreams[ui]
    local n = #u.targets
    if n <= 1 then
        return n == 1 and 1 or nil
    end
    local c = C()
    local b = u.lb
    if not b or u.lb_n ~= n then
        local names = ffi.new("const char *[?]", n)
        local weights = ffi.new("int[?]", n)
        for i, t in ipairs(u.targets) do
            names[i - 1], weights[i - 1] = t.name, t.weight
        end
        b = c.mg_ffi_lb_new(u.balancer or "round_robin", names, weights, n,
                            ui - 1)
        if b == nil then
            error("moongate.testing: out of memory", 0)
        end
        u.lb, u.lb_n = ffi.gc(b, c.mg_ffi_lb_free), n
    end
    local has = 0
    if u.hash then
        has = c.mg_ffi_kit_lb_key(sync(st), head_model(st, ""), u.hash.on,
                                  u.hash.name, kit_key)
    end
    return c.mg_ffi_lb_pick(b, -1, has, kit_key[0]) + 1
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
    local status, out = client_head(head)
    local b = kit_body[0]
    local body = (b == 2 or b == 4) and st.res_body or (b == 1 or b == 3) and st.up_res.body
                 or ""
    if b >= 3 then -- moongate.compression's encoding of it
        local n = C().mg_ffi_kit_compress_body(r, body, #body, kit_out)
        if n < 0 then error("moongate.testing: out of memory", 0) end
        body = ffi.string(kit_out[0], n)
    end
    if commit ~= false then
        st.status = status
        st.response_started = true
    end
    return status, out, body
end

local answer_out, answer_head = ffi.new("const char *[1]"), ffi.new("size_t[1]")

-- The gateway's answer of n bytes at answer_out (its head answer_head of
-- them), or its reason when n < 0: status, header list, body; committed
-- to the model unless `commit` is false.
local function framed(st, n, commit)
    if n < 0 then
        error("moongate.testing: " .. ffi.string(answer_out[0]), 0)
    end
    local hl = tonumber(answer_head[0])
    local code, out = client_head(ffi.string(answer_out[0], hl))
    if commit ~= false then
        st.status = code
        st.response_started = true
    end
    return code, out, ffi.string(answer_out[0] + hl, n - hl)
end

local cstr_arr, size_arr = ffi.typeof("const char *[?]"), ffi.typeof("size_t[?]")

-- The gateway's own answer (ctype nil: its JSON error answer, body the
-- message) with the extra fields of list ({ name, value, ... }, as
-- runtime.header_block gives them), made by src/request.c's
-- mg_request_respond / mg_request_respond_error_with on st's C request
-- and written as HTTP/1 writes it for a client (mg_ffi_kit_respond).
local function gateway_answer(st, status, ctype, body, list, commit)
    local r = sync(st)
    list = list or {}
    local n = #list
    local fields, lens = cstr_arr(n + 1), size_arr(n + 1)
    for i = 1, n do
        fields[i - 1], lens[i - 1] = list[i], #list[i] -- list keeps the strings
    end
    return framed(st, tonumber(C().mg_ffi_kit_respond(r, head_model(st, ""), status, ctype,
                                                      body, #body, fields, lens, n / 2,
                                                      answer_out, answer_head)), commit)
end

local t_path, t_query = ffi.new("const char *[1]"), ffi.new("const char *[1]")
local t_plen, t_qlen = ffi.new("size_t[1]"), ffi.new("size_t[1]")

--- The pipeline's checks of the head before any hook (src/pipeline.c
-- mg_pipeline_checks: Host, the target, escaped slashes) on st's C
-- request. Returns nil when the request goes on (st.path, st.raw_path and
-- st.query_raw set as they left them), else the gateway's answer: status,
-- header list, body (committed unless `commit` is false).
function _M.checks(st, commit)
    local r = sync(st)
    local c = C()
    local n = tonumber(c.mg_ffi_kit_step(r, head_model(st, ""), cdefs.KIT_CHECKS, answer_out,
                                         answer_head))
    if n == 0 then
        c.mg_ffi_kit_request_target(r, t_path, t_plen, t_query, t_qlen)
        st.path = ffi.string(t_path[0], t_plen[0])
        st.query_raw = ffi.string(t_query[0], t_qlen[0])
        st.raw_path = sub(st.url, 1, #st.url - #st.query_raw)
        return nil
    end
    return framed(st, n, commit)
end

--- The pipeline's checks once routed and on_route ran (src/pipeline.c
-- mg_pipeline_routed: 404, 405 with Allow, 413) on st's C request. Returns
-- nil when the request goes on, else the gateway's answer as checks().
function _M.routed(st)
    local n = tonumber(C().mg_ffi_kit_step(sync(st), head_model(st, ""), cdefs.KIT_ROUTED,
                                           answer_out, answer_head))
    if n == 0 then
        return nil
    end
    return framed(st, n)
end

--- An answer made by the gateway (hook, handler): status, content type,
-- body and extra fields list ({ name, value, ... }). `commit` false only
-- computes it. Returns status, header list, body.
function _M.local_response(st, status, ctype, body, list, commit)
    return gateway_answer(st, status, ctype or "text/plain", body, list, commit)
end

--- The gateway's JSON error answer.
function _M.error_response(st, status, message, commit)
    return gateway_answer(st, status, nil, message, nil, commit)
end

return _M
