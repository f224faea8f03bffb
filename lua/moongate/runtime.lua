-- moongate.runtime: what runs inside a worker at request time.
--
-- * `driver`: the body of the coroutines src/hooks.c keeps in a pool. It
--   runs one phase of one request per resume and yields its result, so one
--   coroutine serves request after request.
-- * the request and response objects hooks receive, backed by C through
--   the FFI: reads return slices of the connection buffer turned into Lua
--   strings only when asked for; writes are copied into the request.
-- * the hook-time API that moongate (init.lua) re-exports: respond,
--   redirect, sleep, now, log, worker_id.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local cdefs = require "moongate.cdefs"
local cert = require "moongate.cert"

local C = cdefs.C
local ffi_string = ffi.string
local type, tostring, pairs, ipairs, select = type, tostring, pairs, ipairs, select
local error, xpcall, setmetatable, rawget, rawset = error, xpcall, setmetatable, rawget, rawset
local yield, running = coroutine.yield, coroutine.running
local traceback, concat, floor = debug.traceback, table.concat, math.floor
local byte, find, lower, sub, gsub, fmt = string.byte, string.find, string.lower,
    string.sub, string.gsub, string.format

local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end
local ok_clear, clear_tab = pcall(require, "table.clear")
if not ok_clear then
    clear_tab = function(t) for k in pairs(t) do t[k] = nil end end
end

if cjson.encode_escape_forward_slash then cjson.encode_escape_forward_slash(false) end

local DONE, RESPONDED, WAIT, ERROR = 0, 1, 2, 3
local P_REQUEST, P_ROUTE, P_ACCESS = cdefs.PHASE_REQUEST, cdefs.PHASE_ROUTE,
    cdefs.PHASE_ACCESS
local P_RESPONSE, P_LOG, P_TIMER = cdefs.PHASE_RESPONSE, cdefs.PHASE_LOG,
    cdefs.PHASE_TIMER
local EDIT_SET, EDIT_ADD, EDIT_REMOVE = cdefs.EDIT_SET, cdefs.EDIT_ADD,
    cdefs.EDIT_REMOVE

local _M = {}

-- One scratch set of out-parameters: calls never overlap in a thread.
local out_p = ffi.new("const char *[1]")
local out_n = ffi.new("size_t[1]")
local out_p2 = ffi.new("const char *[1]")
local out_n2 = ffi.new("size_t[1]")

-- The request each coroutine is running (hooks find it through gw.*).
local co_req = setmetatable({}, { __mode = "k" })
_M.co_req = co_req

local function current(fname)
    local req = co_req[running()]
    if not req then
        error(fname .. " can only be called inside a hook", 3)
    end
    return req
end
_M.current = current

local function errcheck(rc, what)
    if rc == 0 then return end
    if rc == cdefs.EPHASE then
        error(what .. ": not possible in this phase (the response has started)", 3)
    elseif rc == cdefs.ELIMIT then
        error(what .. ": too many header changes in one request", 3)
    elseif rc == cdefs.ENOTFOUND then
        error(what .. ": no such name", 3)
    elseif rc == cdefs.ENOMEM then
        error(what .. ": out of memory", 3)
    end
    error(what .. ": invalid name or value", 3)
end

-- Request ---------------------------------------------------------------------

local Request = {}
local getters = {}

local function rptr(self)
    local r = self._r
    if r == nil then error("this request is over", 3) end
    return r
end

local function str_getter(what)
    return function(self)
        if C.mg_ffi_req_str(rptr(self), what, out_p, out_n) == 0 then
            local s = ffi_string(out_p[0], out_n[0])      -- (no tail call)
            return s
        end
        return nil
    end
end

getters.method = str_getter(cdefs.METHOD)
getters.path = str_getter(cdefs.PATH)
getters.raw_path = str_getter(cdefs.RAW_PATH)
getters.query = str_getter(cdefs.QUERY)
getters.id = str_getter(cdefs.ID)
-- the real client (settings.trusted_proxies: from a trusted proxy's PROXY
-- header or real_ip_header), and the socket peer
getters.client = str_getter(cdefs.CLIENT)
getters.peer = str_getter(cdefs.PEER)
getters.route = str_getter(cdefs.ROUTE)
getters.upstream = str_getter(cdefs.UPSTREAM)
getters.target = str_getter(cdefs.TARGET)
getters.scheme = str_getter(cdefs.SCHEME)
-- W3C trace context: the trace this request belongs to (continued from the
-- client's traceparent, or started here) and the gateway's own span in it
getters.trace_id = str_getter(cdefs.TRACE_ID)
getters.span_id = str_getter(cdefs.SPAN_ID)

function getters.client_port(self)
    return C.mg_ffi_req_client_port(rptr(self))
end

function getters.http_version(self)
    return C.mg_ffi_req_http_version(rptr(self)) / 10
end

-- grpc: { service, method } of a gRPC request (its content type and
-- "/package.Service/Method" path, src/grpc.c), nil for others
function getters.grpc(self)
    local ct, path = self:header("content-type"), self.path
    if not ct or not path or C.mg_ffi_grpc_split(ct, #ct, path, #path, out_p, out_n,
                                                 out_p2, out_n2) ~= 1 then
        return nil
    end
    local g = { service = ffi_string(out_p[0], out_n[0]),
                method = ffi_string(out_p2[0], out_n2[0]) }
    rawset(self, "grpc", g)
    return g
end

function getters.ctx(self)
    local t = rawget(self, "_ctx_spare")
    if t then
        rawset(self, "_ctx_spare", false)
    else
        t = new_tab(0, 4)
    end
    rawset(self, "ctx", t)
    return t
end

function getters.params(self)
    local r = rptr(self)
    local t = new_tab(0, 2)
    local i = 0
    while C.mg_ffi_req_param(r, i, out_p, out_n, out_p2, out_n2) == 0 do
        t[ffi_string(out_p[0], out_n[0])] = ffi_string(out_p2[0], out_n2[0])
        i = i + 1
    end
    -- cached only once the route is known: before routing there are none
    if rawget(self, "_phase") ~= P_REQUEST then
        rawset(self, "params", t)
    end
    return t
end

-- tls.client: the client certificate (moongate.cert), read from C only
-- when a hook asks for it; nil when the client sent none
local verified_out = ffi.new("int[1]")
local function tls_client_mt(req)
    return { __index = function(t, k)
        if k ~= "client" then
            return nil
        end
        local get = function()
            local x = C.mg_ffi_req_client_cert(rptr(req), verified_out)
            if x ~= nil then return x end
        end
        local c = get() and cert.info(get, verified_out[0] == 1) or false
        rawset(t, "client", c)
        return c or nil
    end }
end

-- tls: nil on a plain HTTP listener; otherwise what the handshake agreed
-- (sni and alpn nil when the client sent none)
function getters.tls(self)
    local r = rptr(self)
    if C.mg_ffi_req_str(r, cdefs.TLS_VERSION, out_p, out_n) ~= 0 then
        return nil
    end
    local t = setmetatable({ version = ffi_string(out_p[0], out_n[0]),
                             resumed = C.mg_ffi_req_tls_resumed(r) == 1 },
                           tls_client_mt(self))
    if C.mg_ffi_req_str(r, cdefs.TLS_CIPHER, out_p, out_n) == 0 then
        t.cipher = ffi_string(out_p[0], out_n[0])
    end
    if C.mg_ffi_req_str(r, cdefs.TLS_SNI, out_p, out_n) == 0 then
        t.sni = ffi_string(out_p[0], out_n[0])
    end
    if C.mg_ffi_req_str(r, cdefs.TLS_ALPN, out_p, out_n) == 0 then
        t.alpn = ffi_string(out_p[0], out_n[0])
    end
    rawset(self, "tls", t)
    return t
end

--- req:header(name [, nth]) -> value of the first (or nth, 1-based) header
-- of that name (case-insensitive), seeing earlier changes; nil if absent.
function Request.header(self, name, nth)
    local r = rptr(self)
    if C.mg_ffi_req_header(r, name, #name, (nth or 1) - 1, out_p, out_n) == 1 then
        local v = ffi_string(out_p[0], out_n[0])      -- (no tail call)
        return v
    end
    return nil
end

--- req:header_all(name) -> list of every value of that header (maybe empty).
function Request.header_all(self, name)
    local r = rptr(self)
    local t, i = {}, 0
    while C.mg_ffi_req_header(r, name, #name, i, out_p, out_n) == 1 do
        i = i + 1
        t[i] = ffi_string(out_p[0], out_n[0])
    end
    return t
end

--- req:headers() -> { lower-case name = value } as received; a repeated
-- header gives a list of its values.
-- t[k] = v, or a list of the values when k comes again (headers, query
-- arguments).
local function add_multi(t, k, v)
    local old = t[k]
    if old == nil then
        t[k] = v
    elseif type(old) == "table" then
        old[#old + 1] = v
    else
        t[k] = { old, v }
    end
end
_M.add_multi = add_multi

-- { lower-case name = value } of n headers read with at(r, i, ...): a
-- repeated name gives a list of its values.
local function header_map(r, n, at)
    local t = new_tab(0, n)
    for i = 0, n - 1 do
        at(r, i, out_p, out_n, out_p2, out_n2)
        local k = lower(ffi_string(out_p[0], out_n[0]))
        local v = ffi_string(out_p2[0], out_n2[0])
        add_multi(t, k, v)
    end
    return t
end

-- req.headers is a table that can also be called: `req:headers()` (the
-- form hooks used when it was a method) returns the same table.
local header_view_mt = { __call = function(t) return t end }

--- Makes map `t` req.headers of request object `self` (kept for the
-- request). Also used by moongate.testing's fake requests.
function _M.header_view(self, t)
    setmetatable(t, header_view_mt)
    rawset(self, "headers", t)
    return t
end

-- req.headers: { lower-case name = value } as received, a list of the
-- values for a repeated name; made on first use, then kept.
function getters.headers(self)
    local r = rptr(self)
    return _M.header_view(self, header_map(r, C.mg_ffi_req_header_count(r),
                                           C.mg_ffi_req_header_at))
end

local bor = require("bit").bor

--- The token of an Authorization value "Bearer <token>" (scheme case-
-- insensitive), or nil. Byte compares, no patterns: JIT-compiled, it runs
-- on every request of a JWT-protected route.
local function bearer_token(v)
    if v == nil or #v < 8 then return nil end
    local b1, b2, b3, b4, b5, b6, b7 = byte(v, 1, 7)
    -- bor 32 folds ASCII letters to lower case
    if bor(b1, 32) ~= 98 or bor(b2, 32) ~= 101 or bor(b3, 32) ~= 97
        or bor(b4, 32) ~= 114 or bor(b5, 32) ~= 101 or bor(b6, 32) ~= 114
        or b7 ~= 32 then
        return nil
    end
    local from = 8
    if byte(v, 8) == 32 then
        from = find(v, "[^ ]", 8)          -- more than one space: rare
        if not from then return nil end
    end
    if find(v, " ", from, true) or find(v, "\t", from, true) then return nil end
    return sub(v, from)
end
_M.bearer_token = bearer_token

--- req:bearer() -> the token of "Authorization: Bearer <token>", or nil.
function Request.bearer(self)
    return bearer_token(self:header("authorization"))
end

local function unescape(s)
    s = gsub(s, "+", " ")
    return (gsub(s, "%%(%x%x)", function(h)
        return string.char(tonumber(h, 16))
    end))
end

--- A query string as { name = value } (decoded; a repeated name gives a
-- list; a name without "=" gives true). Also used by moongate.testing.
function _M.parse_args(q)
    local t = {}
    for pair in string.gmatch(q, "[^&]+") do
        local k, v = string.match(pair, "^([^=]*)=(.*)$")
        if k then
            k, v = unescape(k), unescape(v)
        else
            k, v = unescape(pair), true
        end
        add_multi(t, k, v)
    end
    return t
end

--- req:args() -> { name = value } from the query string (decoded; a
-- repeated name gives a list; a name without "=" gives true).
function Request.args(self)
    return _M.parse_args(self.query or "")
end

-- The first value of argument NAME in query string Q (decoded as
-- parse_args does; true for a name without "="), or nil; and how many
-- times NAME comes. No table is made: the key_auth policy looks for its
-- key on every request.
local function query_arg(q, name)
    local first, count, pos, n = nil, 0, 1, #q
    while pos <= n do
        local amp = find(q, "&", pos, true) or n + 1
        if amp > pos then
            local eq = find(q, "=", pos, true)
            if eq and eq > amp then eq = nil end
            local k = sub(q, pos, (eq or amp) - 1)
            if find(k, "[%%+]") then k = unescape(k) end
            if k == name then
                count = count + 1
                if count == 1 then
                    first = eq and unescape(sub(q, eq + 1, amp - 1)) or true
                end
            end
        end
        pos = amp + 1
    end
    return first, count
end
_M.query_arg = query_arg

--- req:arg(name) -> the first value of a query argument, or nil.
function Request.arg(self, name)
    local q = self.query
    if q == nil then return nil end
    return (query_arg(q, name))
end

--- req:proxy_tlv(type) -> the value (a string) of the PROXY protocol v2
-- TLV of that type (0x01 ALPN, 0x02 authority, 0x05 unique id, 0x21-0x25
-- the SSL TLV's version, CN, cipher, signature and key algorithms) the
-- connection began with, or nil.
function Request.proxy_tlv(self, t)
    if type(t) ~= "number" then
        error("req:proxy_tlv expects a TLV type (a number 0-255)", 2)
    end
    if C.mg_ffi_req_proxy_tlv(rptr(self), t, out_p, out_n) == 0 then
        return ffi_string(out_p[0], out_n[0])
    end
    return nil
end

-- Methods written only on the public request API: the testing kit's fake
-- requests use them as they are.
_M.api_methods = { bearer = Request.bearer, args = Request.args, arg = Request.arg }

--- req:body() -> the whole request body as a string (read into memory,
-- bounded by the route's max_body, only when a hook asks; the body is then
-- sent upstream from memory). Waits without blocking the worker.
function Request.body(self)
    local rc = C.mg_ffi_req_read_body(rptr(self), out_p, out_n)
    if rc == 1 then
        return ffi_string(out_p[0], out_n[0])
    elseif rc == 0 then
        return yield(WAIT)
    end
    error("req:body() works only before the request goes upstream", 2)
end

function Request.set_header(self, name, value)
    value = tostring(value)
    errcheck(C.mg_ffi_req_edit_header(rptr(self), EDIT_SET, name, #name,
                                      value, #value), "req:set_header")
end

function Request.add_header(self, name, value)
    value = tostring(value)
    errcheck(C.mg_ffi_req_edit_header(rptr(self), EDIT_ADD, name, #name,
                                      value, #value), "req:add_header")
end

function Request.remove_header(self, name)
    errcheck(C.mg_ffi_req_edit_header(rptr(self), EDIT_REMOVE, name, #name,
                                      "", 0), "req:remove_header")
end

--- req:set_response_header(name, value), req:add_response_header(name,
-- value): a header of the answer this request will get (the upstream's or
-- the cache's; not an answer the gateway makes itself), decided before it
-- comes: a policy that knows them from the request needs no on_response.
function Request.set_response_header(self, name, value)
    value = tostring(value)
    errcheck(C.mg_ffi_res_edit_header(rptr(self), EDIT_SET, name, #name,
                                      value, #value), "req:set_response_header")
end

function Request.add_response_header(self, name, value)
    value = tostring(value)
    errcheck(C.mg_ffi_res_edit_header(rptr(self), EDIT_ADD, name, #name,
                                      value, #value), "req:add_response_header")
end

-- req:_client_in(set): is the real client in CIDR set `set` (moongate.ip)?
-- 1, 0, or -1 (no address): C compares the address it holds, with no
-- string made or parsed (the ip policy's path on every request).
function Request._client_in(self, set)
    return C.mg_ffi_req_client_in(rptr(self), set)
end

function Request.set_path(self, path)
    errcheck(C.mg_ffi_req_set_str(rptr(self), cdefs.PATH, path, #path),
             "req:set_path")
end

local function encode_query(t)
    local parts = {}
    for k, v in pairs(t) do
        local function esc(s)
            return (gsub(tostring(s), "[^%w%-%._~]", function(ch)
                return fmt("%%%02X", byte(ch))
            end))
        end
        if type(v) == "table" then
            for _, x in ipairs(v) do parts[#parts + 1] = esc(k) .. "=" .. esc(x) end
        elseif v == true then
            parts[#parts + 1] = esc(k)
        else
            parts[#parts + 1] = esc(k) .. "=" .. esc(v)
        end
    end
    table.sort(parts)
    return concat(parts, "&")
end
_M.encode_query = encode_query

--- req:set_query(q): q is the raw query string (without '?') or a table.
function Request.set_query(self, q)
    if type(q) == "table" then q = encode_query(q) end
    errcheck(C.mg_ffi_req_set_str(rptr(self), cdefs.QUERY, q, #q), "req:set_query")
end

function Request.set_method(self, m)
    errcheck(C.mg_ffi_req_set_str(rptr(self), cdefs.METHOD, m, #m), "req:set_method")
end

function Request.set_upstream(self, name)
    errcheck(C.mg_ffi_req_set_upstream(rptr(self), name, #name), "req:set_upstream")
end

function Request.set_hash_key(self, key)
    if type(key) ~= "string" then
        error("req:set_hash_key: the key must be a string, got " .. type(key),
              2)
    end
    errcheck(C.mg_ffi_req_set_hash_key(rptr(self), key, #key),
             "req:set_hash_key")
end

-- moongate.compression's way in (conf: what its policy made): the answer
-- is compressed as the core decides on its head (src/compress.h)
function Request.compress(self, conf)
    local rc = C.mg_ffi_req_set_compression(rptr(self), conf)
    if rc < 0 then errcheck(rc, "req:compress") end
end

function Request.set_target(self, name)
    errcheck(C.mg_ffi_req_set_target(rptr(self), name, #name), "req:set_target")
end

-- The route's response cache (route option `cache`). These work until the
-- cache is looked up, i.e. in on_request, on_route and route policies.
local CACHE_LATE = ": too late, the cache was already looked up " ..
    "(call it from on_request, on_route or a route policy's on_request)"

--- req:skip_cache(): this request neither uses nor fills the cache.
function Request.skip_cache(self)
    if C.mg_ffi_req_skip_cache(rptr(self)) ~= 0 then
        error("req:skip_cache" .. CACHE_LATE, 2)
    end
end

--- req:cache_key(part): adds part to the request's cache key, e.g. a
-- consumer id so that each consumer gets its own answers.
function Request.cache_key(self, part)
    part = tostring(part)
    local rc = C.mg_ffi_req_cache_key(rptr(self), part, #part)
    if rc == cdefs.EPHASE then
        error("req:cache_key" .. CACHE_LATE, 2)
    elseif rc ~= 0 then
        errcheck(rc, "req:cache_key")
    end
end

local CACHE_STATES = { "hit", "miss", "expired", "stale", "bypass" }

-- req.cache: what the cache did ("hit", "miss", "expired", "stale" (served
-- an expired answer because the upstream failed), "bypass"), nil when the
-- route has no cache or it was not looked up yet
function getters.cache(self)
    return CACHE_STATES[C.mg_ffi_req_cache_state(rptr(self))]
end

-- The metatable of request objects: fields from `getters` (computed on
-- use), methods from `methods`; only req.ctx may be assigned. Shared with
-- moongate.testing's fake requests.
function _M.request_mt(getters_, methods)
    return {
        __index = function(self, k)
            local g = getters_[k]
            if g then
                local v = g(self)       -- (no tail call: policy_call)
                return v
            end
            return methods[k]
        end,
        __newindex = function(self, k, v)
            if k == "ctx" then
                rawset(self, k, v)
                return
            end
            error("req." .. tostring(k) .. " cannot be assigned (use req.ctx " ..
                  "for per-request data, req:set_* to change the request)", 2)
        end,
    }
end

local req_mt = _M.request_mt(getters, Request)

-- Response ----------------------------------------------------------------

local Response = {}
local res_getters = {}

function res_getters.status(self)
    return C.mg_ffi_res_status(rptr(self._req))
end

function Response.header(self, name, nth)
    local r = rptr(self._req)
    if C.mg_ffi_res_header(r, name, #name, (nth or 1) - 1, out_p, out_n) == 1 then
        return ffi_string(out_p[0], out_n[0])
    end
    return nil
end

function Response.headers(self)
    local r = rptr(self._req)
    return header_map(r, C.mg_ffi_res_header_count(r), C.mg_ffi_res_header_at)
end

function Response.set_status(self, status)
    local rc = C.mg_ffi_res_set_status(rptr(self._req), status)
    if rc == cdefs.EINVAL then
        _M.hook_error(_M.status_refused("res:set_status", status))
    end
    errcheck(rc, "res:set_status")
end

function Response.set_header(self, name, value)
    value = tostring(value)
    errcheck(C.mg_ffi_res_edit_header(rptr(self._req), EDIT_SET, name, #name,
                                      value, #value), "res:set_header")
end

function Response.add_header(self, name, value)
    value = tostring(value)
    errcheck(C.mg_ffi_res_edit_header(rptr(self._req), EDIT_ADD, name, #name,
                                      value, #value), "res:add_header")
end

function Response.remove_header(self, name)
    errcheck(C.mg_ffi_res_edit_header(rptr(self._req), EDIT_REMOVE, name, #name,
                                      "", 0), "res:remove_header")
end

--- res:set_body(s): replaces the upstream's body (a table is sent as JSON).
function Response.set_body(self, body)
    if type(body) == "table" then
        body = _M.json_text(cjson.encode(body))
        self:set_header("content-type", "application/json")
    end
    body = tostring(body)
    errcheck(C.mg_ffi_res_set_body(rptr(self._req), body, #body), "res:set_body")
end

local res_mt = {
    __index = function(self, k)
        local g = res_getters[k]
        if g then return g(self) end
        return Response[k]
    end,
}

-- What a hook's req and res offer (fields, methods), for the REPL's Tab
-- completion of "req." and "res:".
_M.request_api = { fields = getters, methods = Request }
_M.response_api = { fields = res_getters, methods = Response }

-- Answers ---------------------------------------------------------------------

-- The value `return gw.respond(...)` hands back: any other non-nil return
-- value of a hook is a mistake.
local RESPONDED_MARK = setmetatable({}, { __tostring = function()
    return "gw.respond result"
end })
_M.RESPONDED_MARK = RESPONDED_MARK

-- gw.respond's headers as a flat list { name, value, name, value, ... }
-- (framing headers are the core's) and its Content-Type; shared with
-- moongate.testing.
local NO_HEADERS = {} -- shared, never written: no table per answer

local function header_block(headers)
    if headers == nil then return NO_HEADERS, nil end
    if type(headers) ~= "table" then
        error("gw.respond: headers must be a table, got " .. type(headers), 3)
    end
    -- in name order: pairs' order differs from one Lua state to the next
    -- (string hashes are seeded), and an answer's head should not
    local keys = {}
    for k in pairs(headers) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local out, ctype = {}, nil
    for _, k in ipairs(keys) do
        local name, value = tostring(k), tostring(headers[k])
        if find(name, "[^%w%-]") or find(value, "[%c]") then
            error("gw.respond: invalid header " .. name, 3)
        end
        local l = lower(name)
        if l == "content-type" then
            ctype = value
        elseif l ~= "content-length" and l ~= "connection"
            and l ~= "transfer-encoding" and l ~= "x-request-id" then
            out[#out + 1] = name
            out[#out + 1] = value
        end
    end
    return out, ctype
end

_M.header_block = header_block

-- cjson output as the gateway sends it: "/" unescaped (Debian's lua-cjson
-- cannot be told not to escape it; every "\/" it writes is an escaped
-- slash) and a final newline, like the core's own JSON errors.
function _M.json_text(s)
    return (gsub(s, "\\/", "/")) .. "\n"
end

-- gw.respond's body: a table is JSON; returns bytes, content type.
local function encode_body(body)
    if type(body) == "table" then
        local s, err = cjson.encode(body)
        if not s then error("gw.respond: body is not JSON: " .. err, 3) end
        return _M.json_text(s), "application/json"
    elseif body == nil then
        return "", "text/plain; charset=utf-8"
    end
    return tostring(body), "text/plain; charset=utf-8"
end

-- Request:_respond / Response side of gw.respond for the real runtime.
_M.encode_body = encode_body

-- A status the gateway may answer with (gw.respond, a route handler,
-- res:set_status checks the same in C): a final one, 200-599. The 1xx a
-- client gets are the core's own (100 Continue, a proxied 101); one made
-- by a hook would leave the request unanswered. Shared with
-- moongate.handler and moongate.testing.
function _M.final_status(status)
    return type(status) == "number" and status >= 200 and status <= 599
        and status % 1 == 0
end

function _M.status_refused(what, status)
    return what .. ": status must be an integer 200-599 (1xx answers are " ..
        "the gateway's own), got " .. tostring(status)
end

-- The files whose frames are the gateway's, not a hook's.
local OWN_FILES = { "moongate/runtime%.lua$", "moongate/init%.lua$",
                    "moongate/testing%.lua$", "moongate/testing/fake%.lua$" }

local function own_frame(source)
    for i = 1, #OWN_FILES do
        if find(source, OWN_FILES[i]) then return true end
    end
    return false
end

--- Raises msg at the hook that called the gw.* or req/res function
-- raising it. `return gw.respond(...)` is a tail call: the hook has no
-- frame left, so the message then names the line the hook was defined at,
-- taken from the runner that called it (its local `fn`). Error path only.
function _M.hook_error(msg)
    local getinfo, getlocal = debug.getinfo, debug.getlocal
    for l = 2, 12 do
        local info = getinfo(l, "Sl")
        if not info then break end
        if info.what ~= "C" then
            if not own_frame(info.source) then
                error(fmt("%s:%d: %s", info.short_src, info.currentline, msg), 0)
            end
            for i = 1, 32 do
                local name, v = getlocal(l, i)
                if not name then break end
                if name == "fn" and type(v) == "function" then
                    local d = getinfo(v, "S")
                    error(fmt("%s:%d: %s (in the hook defined here)", d.short_src,
                              d.linedefined, msg), 0)
                end
            end
        end
    end
    error(msg, 0)
end

function Request._respond(self, status, body, headers)
    if not _M.final_status(status) then
        _M.hook_error(_M.status_refused("gw.respond", status))
    end
    local b, ctype = encode_body(body)
    if rawget(self, "_phase") == P_RESPONSE then
        -- the upstream's answer is replaced as a whole
        local res = rawget(self, "_res")
        res:set_status(status)
        C.mg_ffi_res_set_body(rptr(self), b, #b)
        if headers then
            for k, v in pairs(headers) do res:set_header(k, v) end
        end
        if not (headers and (headers["content-type"] or headers["Content-Type"])) then
            res:set_header("content-type", ctype)
        end
        return RESPONDED_MARK
    end
    local block, hctype = header_block(headers)
    rawset(self, "_resp_status", status)
    rawset(self, "_resp_body", b)
    rawset(self, "_resp_headers", block)
    rawset(self, "_resp_ctype", hctype or ctype)
    rawset(self, "_responded", true)
    return RESPONDED_MARK
end

--- gw.respond(status, body, headers): answer the request from the hook;
-- body is a string or a table (sent as JSON). Use as `return gw.respond(...)`.
function _M.respond(status, body, headers)
    return current("gw.respond"):_respond(status, body, headers)
end

--- gw.redirect(url, status): answers with a redirect (302 by default).
function _M.redirect(url, status)
    status = status or 302
    if status < 300 or status > 399 then
        error("gw.redirect: status must be 3xx, got " .. tostring(status), 2)
    end
    if type(url) ~= "string" or find(url, "[%c ]") then
        error("gw.redirect: invalid url", 2)
    end
    return current("gw.redirect"):_respond(status, "", { Location = url })
end

-- Waiting and misc ----------------------------------------------------------

--- gw.sleep(seconds): waits without blocking the worker.
function _M.sleep(seconds)
    local req = current("gw.sleep")
    if req._sleep then return req:_sleep(seconds) end
    if type(seconds) ~= "number" then
        error("gw.sleep: seconds must be a number", 2)
    end
    if C.mg_ffi_sleep(seconds) ~= 0 then
        error("gw.sleep: invalid duration " .. tostring(seconds), 2)
    end
    yield(WAIT)
end

-- gw.timer -------------------------------------------------------------------

-- Timers declared while the config loads start once the worker runs it
-- (init); a config that is only checked never starts them.
local timers, ntimers, pending, started = {}, 0, {}, false

local function add_timer(fname, seconds, fn, every)
    if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
        error(fname .. ": seconds must be a number >= 0", 3)
    end
    if type(fn) ~= "function" then
        error(fname .. ": the second argument must be a function", 3)
    end
    if every and seconds < 0.001 then
        error(fname .. ": the interval must be at least 0.001 s", 3)
    end
    ntimers = ntimers + 1
    timers[ntimers] = fn
    local t = { ntimers, seconds, every and seconds or 0 }
    if started then
        if C.mg_ffi_timer_start(t[1], t[2], t[3]) ~= 0 then
            error(fname .. ": cannot start a timer here", 3)
        end
    else
        pending[#pending + 1] = t
    end
    return ntimers
end

--- gw.timer.every(seconds, fn): runs fn every `seconds` in each worker;
-- fn may wait (gw.sleep, gw.http.request).
function _M.timer_every(seconds, fn)
    return add_timer("gw.timer.every", seconds, fn, true)
end

--- gw.timer.after(seconds, fn): runs fn once, `seconds` from now.
function _M.timer_after(seconds, fn)
    return add_timer("gw.timer.after", seconds, fn, false)
end

-- The request object timers and other request-less code see: none.
local function timer_phase(id)
    local fn = timers[id]
    if fn then fn() end
    return false
end

-- gw.http -----------------------------------------------------------------

local errp = ffi.new("const char *[1]")

local function header_lines(h)
    if h == nil then return "" end
    if type(h) ~= "table" then
        error("gw.http.request: headers must be a table", 3)
    end
    local out = {}
    for k, v in pairs(h) do
        k, v = tostring(k), tostring(v)
        if find(k, "[^%w%-]") or find(v, "[%c]") then
            error("gw.http.request: invalid header " .. k, 3)
        end
        local l = lower(k)
        if l ~= "host" and l ~= "content-length" and l ~= "connection"
            and l ~= "transfer-encoding" then
            out[#out + 1] = k .. ": " .. v .. "\r\n"
        end
    end
    return concat(out)
end

--- gw.http.request{ method =, url =, headers =, body =, timeout =,
-- max_body =, ca =, verify = } -> { status =, headers = {lower-case},
-- body = } or nil, err. https URLs check the server's certificate against
-- `ca` (default: the system bundle) unless verify = false.
-- Waits without blocking the worker; reuses the core's upstream pools
-- (a url host that names an upstream is balanced over its targets).
-- Checks gw.http.request's argument (errors at `level`, ca and verify
-- too); returns url, method, body. Shared with moongate.testing's fake client.
local function http_args(opts, level)
    level = level + 1
    if type(opts) ~= "table" then
        error("gw.http.request takes a table { url = ..., ... }", level)
    end
    local url = opts.url
    if type(url) ~= "string" then
        error("gw.http.request: url must be a string", level)
    end
    local method = opts.method or "GET"
    if type(method) ~= "string" or not find(method, "^%u+$") then
        error("gw.http.request: method must be an upper-case token", level)
    end
    local body = opts.body or ""
    if type(body) ~= "string" then
        error("gw.http.request: body must be a string", level)
    end
    if opts.ca ~= nil and (type(opts.ca) ~= "string" or opts.ca == "") then
        error("gw.http.request: ca must be the path of a PEM file", level)
    end
    if opts.verify ~= nil and type(opts.verify) ~= "boolean" then
        error("gw.http.request: verify must be true or false", level)
    end
    return url, method, body
end
_M.http_args = http_args

function _M.http_request(opts)
    local url, method, body = http_args(opts, 2)
    local timeout = opts.timeout or 10
    local block = header_lines(opts.headers)
    local rc = C.mg_ffi_http_request(method, #method, url, #url, block, #block,
                                     body, #body, timeout, opts.max_body or 0,
                                     opts.ca, opts.verify == false and 0 or 1, errp)
    if rc ~= 0 then
        return nil, ffi_string(errp[0])
    end
    local status, headers, rbody = yield(WAIT)
    if status == nil then
        return nil, headers
    end
    return { status = status, headers = headers, body = rbody }
end

function _M.now()
    return C.mg_ffi_now()
end

function _M.worker_id()
    return C.mg_ffi_worker_id()
end

-- MG_LOG_* of src/errlog.h; nginx's names are accepted too
local LEVELS = { debug = 0, info = 1, notice = 2, warn = 3, error = 4, crit = 5,
                 err = 4, warning = 3, alert = 5, emerg = 5 }

--- gw.log(level, ...): one line to the error log ("debug" .. "crit"; lines
-- below settings.log_level are dropped).
function _M.log(level, ...)
    local n = LEVELS[level]
    if not n then
        error("gw.log: level must be one of debug, info, notice, warn, error (or err), " ..
              "crit, got " .. tostring(level), 2)
    end
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    local s = concat(parts, " ")
    C.mg_ffi_log(n, s, #s)
end

-- Hook errors: logged once per distinct message per minute --------------------

local last_logged, nlogged = {}, 0

local function on_hook_error(e)
    local msg = tostring(e)
    return traceback(msg, 2)
end

local function log_hook_error(req_id, phase, tb)
    local first = string.match(tb, "^[^\n]*") or tb
    local now = C.mg_ffi_monotonic()
    local t = last_logged[first]
    if t and now - t < 60 then return end
    if nlogged > 1000 then
        last_logged, nlogged = {}, 0
    end
    if not t then nlogged = nlogged + 1 end
    last_logged[first] = now
    local s = fmt("hook error in %s phase (request %s): %s", phase, req_id or "?", tb)
    C.mg_ffi_log(4, s, #s)
end

-- Phases ----------------------------------------------------------------------

local PHASE_NAMES = { "on_request", "on_route", "route policy on_request",
                      "on_response", "on_log" }
_M.PHASE_NAMES = PHASE_NAMES

-- Built by init(): the config's hooks, in the form the driver runs them.
local global = {}          -- on_request, on_route, on_response, on_log
local route_access = {}    -- [route index] = { policy, ... } with on_request
local route_response = {}  -- [route index] = { policy, ... } with on_response
local route_log = {}       -- [route index] = { policy, ... } with on_log
local route_info = {}      -- [route index] = { name=, path=, upstream= }
-- Hook ids for moongate_hook_seconds_total / _calls_total (src/metrics.c),
-- parallel to the above: global_id[name], route_*_id[route index][i].
local global_id, route_access_id, route_response_id, route_log_id = {}, {}, {}, {}

local function bad_return(fname, v)
    error(fmt("%s returned %s: a hook returns nothing or gw.respond(...)",
              fname, type(v) == "string" and fmt("%q", v) or type(v)), 0)
end

-- Calls hook fn, timed under hook id `id` (moongate_hook_seconds_total):
-- the coroutine's clock (waits left out) around it; a hook that raises is
-- not counted (its error is). Returns whether the hook answered.
local function timed(req, fname, fn, id, a, b, c)
    local t0 = C.mg_ffi_hook_clock()
    local v = fn(a, b, c)
    C.mg_ffi_hook_spent(id, t0)
    if v ~= nil and v ~= RESPONDED_MARK then bad_return(fname, v) end
    return rawget(req, "_responded")
end

-- One policy's hook KEY: (req, p) before the response, (req, res, p)
-- after, timed from t0 (the clock when the previous one of the chain
-- ended: one clock read per policy, not two). Returns whether it answered
-- and the clock at its end.
-- No tail calls here, in the getters and in req:header: LuaJIT counts
-- each tail call of a trace against its loop unroll limit (15), and a
-- chain of five policies (cors, ip, key_auth, jwt, limit) passed it, so
-- its trace aborted on every request ("loop unroll limit reached") and
-- the chain ran in the interpreter.
local function policy_call(req, p, id, key, fname, res, t0)
    -- `fn` by name: _M.hook_error finds a tail-calling hook's line by it
    local fn, v = p[key], nil
    if res then
        v = fn(req, res, p)
    else
        v = fn(req, p)
    end
    local t1 = C.mg_ffi_hook_spent(id, t0)
    if v ~= nil and v ~= RESPONDED_MARK then bad_return(fname, v) end
    return rawget(req, "_responded"), t1
end

-- Runs the hooks KEY of a route's policies (LIST, never empty; IDS their
-- hook ids) in order; with STOP, returns true as soon as one answered. The
-- first six are called without a loop: a loop here becomes a trace of its
-- own, and where it lands in the trace tree (so what a request costs)
-- varied from process to process; a chain of bundled policies (cors, ip,
-- key_auth, jwt, limit: the bench's W6) is five long, and with three
-- unrolled its loop was blacklisted and run by the interpreter (~2,500
-- instructions a request).
local function run_policies(req, list, ids, key, fname, res, stop)
    local n = #list
    local t = C.mg_ffi_hook_clock()
    local answered
    answered, t = policy_call(req, list[1], ids[1], key, fname, res, t)
    if answered and stop then return true end
    if n < 2 then return false end
    answered, t = policy_call(req, list[2], ids[2], key, fname, res, t)
    if answered and stop then return true end
    if n < 3 then return false end
    answered, t = policy_call(req, list[3], ids[3], key, fname, res, t)
    if answered and stop then return true end
    if n < 4 then return false end
    answered, t = policy_call(req, list[4], ids[4], key, fname, res, t)
    if answered and stop then return true end
    if n < 5 then return false end
    answered, t = policy_call(req, list[5], ids[5], key, fname, res, t)
    if answered and stop then return true end
    if n < 6 then return false end
    answered, t = policy_call(req, list[6], ids[6], key, fname, res, t)
    if answered and stop then return true end
    for i = 7, n do
        answered, t = policy_call(req, list[i], ids[i], key, fname, res, t)
        if answered and stop then return true end
    end
    return false
end

-- Runs one phase's hooks for req (res: the response object). Returns true
-- when a hook answered.
local function run_phase(req, res, phase, ri)
    if phase == P_REQUEST then
        local fn = global.on_request
        return fn and timed(req, "on_request", fn, global_id.on_request, req)
    elseif phase == P_ROUTE then
        local fn = global.on_route
        return fn and timed(req, "on_route", fn, global_id.on_route, req,
                            ri and route_info[ri] or nil)
    elseif phase == P_ACCESS then
        local list = ri and route_access[ri]
        return list and run_policies(req, list, route_access_id[ri], "on_request",
                                     "policy on_request", nil, true)
            or false
    elseif phase == P_TIMER then
        return timer_phase(ri)
    elseif phase == P_RESPONSE or phase == P_LOG then
        local key = phase == P_RESPONSE and "on_response" or "on_log"
        local pname = phase == P_RESPONSE and "policy on_response" or "policy on_log"
        local resp = phase == P_RESPONSE
        local list = ri and (resp and route_response or route_log)[ri]
        if list then
            run_policies(req, list, (resp and route_response_id or route_log_id)[ri], key,
                         pname, res, false)
        end
        local fn = global[key]
        if fn then timed(req, key, fn, global_id[key], req, res) end
        return false
    end
    error("unknown phase " .. tostring(phase))
end
_M.run_phase = run_phase

-- A request object of a fixed shape: every key it will ever hold exists
-- from the start, so no request inserts a key. (Setting an absent key, even
-- to nil, inserts it; once the hash part is full LuaJIT rehashes the table,
-- dropping the nil keys, and every compiled trace that knew the old layout
-- exits to a new side trace: per-request work that varied with the
-- process's random string hash seed.) Fields read through rawget hold
-- false when unset; the fields the getters cache (ctx, params, headers,
-- tls) must be nil for __index to run, and setting an existing key to nil
-- keeps it in place.
local function new_request()
    local req = setmetatable({ _r = false, _phase = false, _res = false,
        _ctx_spare = false, ctx = false, params = false, headers = false,
        tls = false, grpc = false, _responded = false, _resp_status = false,
        _resp_body = false, _resp_headers = false, _resp_ctype = false },
        req_mt)
    rawset(req, "_r", nil)
    rawset(req, "ctx", nil)
    rawset(req, "params", nil)
    rawset(req, "headers", nil)
    rawset(req, "tls", nil)
    rawset(req, "grpc", nil)
    return req
end

local function reset(req)
    local ctx = rawget(req, "ctx")
    if ctx then
        clear_tab(ctx)
        rawset(req, "_ctx_spare", ctx)
        rawset(req, "ctx", nil)
    end
    rawset(req, "params", nil)
    rawset(req, "headers", nil)
    rawset(req, "tls", nil)
    rawset(req, "grpc", nil)
    rawset(req, "_responded", false)
    rawset(req, "_resp_body", false)
    rawset(req, "_resp_headers", false)
end

local req_ptr_t = ffi.typeof("mg_request_t *")
local req_ptrs = {}

--- The request object of a route handler (src/lua_route.c): the one the
-- request's hooks got when they ran (coroutine `co`), else a new one over
-- request struct `lud`. Returns it and whether it is new (the caller ends
-- it after the handler).
function _M.handler_request(lud, co)
    local req = co and co_req[co]
    if req then return req, false end
    req = new_request()
    rawset(req, "_r", ffi.cast(req_ptr_t, lud))
    return req, true
end

--- The coroutine body (see src/hooks.c). Resumed with (request or nil,
-- phase, first, route index, slot) it runs that phase and yields its result. A
-- hook error ends the coroutine (no pcall on the hot path): C reports the
-- error through report_error() and starts a fresh coroutine next time.
function _M.driver()
    local req = new_request()
    local res = setmetatable({ _req = req }, res_mt)
    rawset(req, "_res", res)
    co_req[running()] = req
    local lud, phase, first, ri, slot = yield(DONE)
    while true do
        if first then reset(req) end
        -- a cdata pointer per request struct, made once: the JIT cannot pass
        -- a lightuserdata to a C function. C sends the struct's address
        -- only the first time it sends a slot (nil after); slot 0 is a
        -- timer's run, with no request.
        local r = nil
        if slot ~= 0 then
            r = req_ptrs[slot]
            if r == nil then
                r = ffi.cast(req_ptr_t, lud)
                req_ptrs[slot] = r
            end
        end
        rawset(req, "_r", r)
        rawset(req, "_phase", phase)
        if run_phase(req, res, phase, ri) and phase < P_RESPONSE then
            lud, phase, first, ri, slot = yield(RESPONDED,
                rawget(req, "_resp_status"), rawget(req, "_resp_body"),
                rawget(req, "_resp_headers"), rawget(req, "_resp_ctype"))
        else
            lud, phase, first, ri, slot = yield(DONE)
        end
    end
end

--- Logs a hook error (message with traceback) once per distinct message
-- per minute; C counts it.
function _M.report_error(tb, id, phase)
    log_hook_error(id, PHASE_NAMES[phase] or "timer", tb)
end

--- Called when a request ends while its coroutine still waits: the hook
-- may go on (on_log) but must not touch the request.
function _M.detach(co)
    local req = co_req[co]
    if req then rawset(req, "_r", nil) end
end

local function bit(phase) return 2 ^ phase end

--- Takes the worker's config table; returns the global phase mask and the
-- list of per-route masks (bit `phase` set when a hook runs in it).
function _M.init(cfg, worker_id, metric_handles)
    started = true
    -- the config's metrics count into this worker's shard of each
    require("moongate.metrics").bind(cfg, metric_handles or {})
    for _, t in ipairs(pending) do
        C.mg_ffi_timer_start(t[1], t[2], t[3])
    end
    pending = {}
    global, global_id = {}, {}
    route_access, route_response, route_log, route_info = {}, {}, {}, {}
    route_access_id, route_response_id, route_log_id = {}, {}, {}
    local gmask = 0
    local hooks = cfg.hooks or {}
    local phases = { on_request = P_REQUEST, on_route = P_ROUTE,
                     on_response = P_RESPONSE, on_log = P_LOG }
    for name, phase in pairs(phases) do
        if type(hooks[name]) == "function" then
            global[name] = hooks[name]
            global_id[name] = C.mg_ffi_hook_metric_id(name, "(global)")
            gmask = gmask + bit(phase)
        end
    end
    local masks = {}
    for i, r in ipairs(cfg.routes or {}) do
        local ri = i - 1
        local up = r.upstream and cfg.upstreams[r.upstream]
        route_info[ri] = { name = r.name, path = r.path,
                           upstream = up and up.name or nil }
        local m = 0
        local acc, resp, log = {}, {}, {}
        local acc_id, resp_id, log_id = {}, {}, {}
        for _, p in ipairs(r.policies or {}) do
            if type(p) == "function" then p = { on_request = p } end
            -- the metrics' policy label: its name (bounded: from the config)
            local pname = type(p.name) == "string" and p.name or "(unnamed)"
            local function add(list, ids, key)
                if type(p[key]) ~= "function" then return end
                list[#list + 1] = p
                ids[#ids + 1] = C.mg_ffi_hook_metric_id(key, pname)
            end
            add(acc, acc_id, "on_request")
            add(resp, resp_id, "on_response")
            add(log, log_id, "on_log")
        end
        if #acc > 0 then route_access[ri] = acc; route_access_id[ri] = acc_id; m = m + bit(P_ACCESS) end
        if #resp > 0 then route_response[ri] = resp; route_response_id[ri] = resp_id; m = m + bit(P_RESPONSE) end
        if #log > 0 then route_log[ri] = log; route_log_id[ri] = log_id; m = m + bit(P_LOG) end
        masks[i] = m
    end
    return gmask, masks
end

return _M
