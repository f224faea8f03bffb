-- moongate.template: header values and redirect targets made from the
-- request, compiled once while a config loads (the headers and redirect
-- policies), never parsed per request.
--
--   local t = template.compile("${ctx.consumer.name}@${client}", "what")
--   local v = t(req, res)     -- nil when a field it names has no value
--
-- A template is text with ${field} in it ($$ is one "$"). Fields:
--   method path raw_path query client client_port scheme id route
--   upstream target trace_id span_id host   the request (host: its Host
--                                           header, without the port)
--   header.<name>                           a request header (its first value)
--   arg.<name>                              a query argument (decoded)
--   ctx.<key>[.<key>...]                    req.ctx, e.g. ctx.consumer.name
--   status                                  the response status (responses only)
-- A field that has no value (no such header, ctx.x unset) makes the whole
-- template nil: the policy then leaves that header alone.

local type, tostring, ipairs = type, tostring, ipairs
local fmt, find, sub, match, lower, gmatch = string.format, string.find,
    string.sub, string.match, string.lower, string.gmatch
local concat = table.concat

local query_arg = require("moongate.runtime").query_arg

local _M = {}

local REQUEST_FIELDS = { "method", "path", "raw_path", "query", "client",
    "client_port", "scheme", "id", "route", "upstream", "target", "trace_id",
    "span_id" }
local IS_REQUEST_FIELD = {}
for _, f in ipairs(REQUEST_FIELDS) do IS_REQUEST_FIELD[f] = true end
_M.FIELDS = "method, path, raw_path, query, client, client_port, scheme, " ..
    "id, route, upstream, target, trace_id, span_id, host, status, " ..
    "header.<name>, arg.<name>, ctx.<key>"

local function field_getter(name)
    return function(req) return req[name] end
end

local function host(req)
    local h = req:header("host")
    if h == nil then return nil end
    -- "[::1]:8080" keeps its brackets; "a.example:80" loses the port
    return match(h, "^(%[[^%]]*%])") or match(h, "^([^:]*)")
end

local function status(_, res)
    return res and res.status or nil
end

local function ctx_getter(path)
    local keys = {}
    for k in gmatch(path, "[^.]+") do keys[#keys + 1] = k end
    local k1, k2, k3 = keys[1], keys[2], keys[3]
    if #keys == 1 then
        return function(req) return req.ctx[k1] end
    elseif #keys == 2 then
        return function(req)
            local v = req.ctx[k1]
            if type(v) ~= "table" then return nil end
            return v[k2]
        end
    end
    return function(req)
        local v = req.ctx
        for i = 1, #keys do
            if type(v) ~= "table" then return nil end
            v = v[keys[i]]
        end
        return v
    end, k3
end

-- The getter for `${name}`, or nil and why.
local function getter(name, response)
    if IS_REQUEST_FIELD[name] then return field_getter(name) end
    if name == "host" then return host end
    if name == "status" then
        if not response then
            return nil, "${status} is only known in a response template"
        end
        return status
    end
    local hname = match(name, "^header%.([%w!#$%%&'*+%-.^_`|~]+)$")
    if hname then
        hname = lower(hname)
        return function(req) return req:header(hname) end
    end
    local aname = match(name, "^arg%.(.+)$")
    if aname then
        return function(req)
            local q = req.query
            if q == nil then return nil end
            local v = query_arg(q, aname)
            if v == true then return "" end
            return v
        end
    end
    local cpath = match(name, "^ctx%.([%w_]+[%w_.]*)$")
    if cpath and not find(cpath, "%.%.") and sub(cpath, -1) ~= "." then
        return (ctx_getter(cpath))
    end
    return nil, fmt("unknown field ${%s} (fields: %s)", name, _M.FIELDS)
end

--- template.compile(text, response) -> a function(req, res) giving the
-- value (a string) or nil, and whether the text is constant; or nil and
-- why the text is refused. `response`: the template is rendered in a
-- response (${status} allowed).
function _M.compile(text, response)
    if type(text) ~= "string" then
        return nil, "must be a string, got " .. type(text)
    end
    local parts, pos, n = {}, 1, #text
    local lit = {}
    while pos <= n do
        local d = find(text, "$", pos, true)
        if not d then
            lit[#lit + 1] = sub(text, pos)
            break
        end
        lit[#lit + 1] = sub(text, pos, d - 1)
        local nx = sub(text, d + 1, d + 1)
        if nx == "$" then
            lit[#lit + 1] = "$"
            pos = d + 2
        elseif nx == "{" then
            local close = find(text, "}", d + 2, true)
            if not close then
                return nil, fmt("unclosed ${ at byte %d (write $$ for a $)", d)
            end
            local g, why = getter(sub(text, d + 2, close - 1), response)
            if not g then return nil, why end
            if #lit > 0 then
                parts[#parts + 1] = concat(lit)
                lit = {}
            end
            parts[#parts + 1] = g
            pos = close + 1
        else
            return nil, fmt("a $ at byte %d is neither ${field} nor $$", d)
        end
    end
    if #lit > 0 then parts[#parts + 1] = concat(lit) end
    local np = #parts
    if np == 0 then
        return function() return "" end, true
    elseif np == 1 then
        local p = parts[1]
        if type(p) == "string" then return function() return p end, true end
        return function(req, res)
            local v = p(req, res)
            if v == nil or v == false then return nil end
            return type(v) == "string" and v or tostring(v)
        end, false
    end
    -- several parts: one scratch list per template (hooks of one Lua state
    -- never run a template twice at once: rendering does not yield)
    local buf = {}
    return function(req, res)
        for i = 1, np do
            local p = parts[i]
            if type(p) ~= "string" then
                p = p(req, res)
                if p == nil or p == false then return nil end
                if type(p) ~= "string" then p = tostring(p) end
            end
            buf[i] = p
        end
        return concat(buf, "", 1, np)
    end, false
end

return _M
