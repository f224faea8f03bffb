-- moongate.cors: Cross-Origin Resource Sharing (the Fetch standard's CORS
-- protocol), as a route policy. Put it first in the route's policies:
-- preflights carry no credentials, so they must be answered before an
-- authentication policy refuses them.
--
--   local cors = require "moongate.cors"
--   gw.route { path = "/api/**", upstream = "api", policies = {
--       cors.policy { origins = { "https://app.example.com",
--                                 "https://*.example.com" },
--                     credentials = true, max_age = 600,
--                     expose_headers = { "X-Request-Id" } },
--       key_auth.policy { ... } } }
--
-- Preflights (OPTIONS with Origin and Access-Control-Request-Method) are
-- answered by the gateway: 204 with the Access-Control-Allow-* headers
-- when the origin, the method and the headers asked for are allowed,
-- else 403 without them; the upstream never sees a preflight. Other
-- requests go on, and their answers get Access-Control-Allow-Origin (and
-- -Credentials, -Expose-Headers) when the origin is allowed.
--
-- Origins: exact ("https://app.example.com", "http://localhost:3000"),
-- "*" (any; not with credentials, which browsers refuse), or a pattern
-- with "*" standing for one or more DNS labels ("https://*.example.com"
-- is https://a.example.com and https://a.b.example.com, not
-- https://example.com). An Origin that is not one serialized origin
-- (scheme://host[:port]; a list, a path, "null" unless listed, blanks)
-- matches nothing, and is never echoed.
--
-- Vary: unless the answer is the same for every origin ("*" without
-- credentials), every answer of the route says Vary: Origin (one more
-- Vary line beside the upstream's), so that caches keep one copy per
-- origin. All of it is decided in on_request (req:set_response_header):
-- the policy has no on_response, and costs no response phase.

local policy = require "moongate.policy"

local ipairs = ipairs
local fmt, find, gsub, lower, gmatch, concat = string.format,
    string.find, string.gsub, string.lower, string.gmatch, table.concat

local _M = {}

local KEYS = { "origins", "methods", "headers", "expose_headers",
               "credentials", "max_age" }
local DEFAULT_METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE" }
local TOKEN = policy.TOKEN

--- cors.origin_ok(s) -> true when s is one serialized origin:
-- scheme "://" host [":" port], host a DNS name, IPv4 or [IPv6].
local function origin_ok(s)
    local scheme, rest = s:match("^(%a[%w+.%-]*)://(.+)$")
    if not scheme then return false end
    local host, port = rest:match("^(%[[%x:.]+%])(.*)$")
    if not host then host, port = rest:match("^([%w%-%.]+)(.*)$") end
    if not host or find(host, "^%.") or find(host, "%.%.") then return false end
    return port == "" or (port:match("^:%d%d?%d?%d?%d?$") ~= nil)
end
_M.origin_ok = origin_ok

-- "https://*.example.com" as an anchored Lua pattern.
local function origin_pattern(s)
    local pre, post = s:match("^(%a[%w+.%-]*://)%*(%..+)$")
    if not pre or find(post, "*", 1, true) then return nil end
    local function esc(x) return (gsub(x, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end
    return "^" .. esc(pre) .. "[%w%-%.]*[%w%-]" .. esc(post) .. "$"
end

--- cors.policy { origins, methods, headers, expose_headers, credentials,
-- max_age } -> a route policy (see the module's comment).
function _M.policy(opts)
    local c, o = policy.options(opts, "cors.policy", KEYS,
                                '{ origins = { "https://app.example.com" } }')
    local origins = c:strings(o, "origins")
    local exact, patterns, any = {}, {}, false
    if c:ok() and not origins then
        c:bad("%s", "origins is required: the origins allowed " ..
              '({ "https://app.example.com" }, "https://*.example.com" ' ..
              'or "*")')
    end
    for i, s in ipairs(origins or {}) do
        if s == "*" then
            any = true
        elseif find(s, "*", 1, true) then
            local p = origin_pattern(s)
            if not p then
                c:bad("origins[%d] %s: a pattern is scheme://*.domain " ..
                      "(\"*.\" first, once)", i, policy.quoted(s))
            else
                patterns[#patterns + 1] = p
            end
        elseif s == "null" then
            exact[s] = true
        elseif not origin_ok(s) or find(s, "%u") then
            c:bad("origins[%d] %s is not an origin: scheme://host[:port], " ..
                  "lower case, no path (e.g. \"https://app.example.com\")",
                  i, policy.quoted(s))
        else
            exact[s] = true
        end
    end
    local methods = c:tokens(o, "methods", "method") or DEFAULT_METHODS
    local headers = c:tokens(o, "headers", "header name")
    local expose = c:tokens(o, "expose_headers", "header name")
    local credentials = c:boolean(o, "credentials", false)
    if credentials and any then
        c:bad("%s", "credentials = true with origins \"*\": browsers " ..
              "refuse that; list the origins")
    end
    local max_age = c:integer(o, "max_age", 0, 86400 * 7, nil)
    local refused = c:done("cors")
    if refused then return refused end

    local method_set = {}
    for _, m in ipairs(methods) do method_set[m] = true end
    local header_set
    if headers then
        header_set = {}
        for _, h in ipairs(headers) do header_set[lower(h)] = true end
    end
    local s_methods = concat(methods, ", ")
    local s_headers = headers and concat(headers, ", ")
    local s_expose = expose and concat(expose, ", ")
    local s_max_age = max_age and fmt("%d", max_age)
    local npat = #patterns
    -- the answer does not depend on the origin: "*", and nothing else
    local same_for_all = any and not credentials

    -- true when ORIGIN (a request's Origin value) is allowed
    local function allowed(origin)
        if exact[origin] then return true end
        if not any and npat == 0 then return false end
        if not origin_ok(origin) then return false end
        if any then return true end
        for i = 1, npat do
            if find(origin, patterns[i]) then return true end
        end
        return false
    end

    -- The request headers a preflight asks for, when all are allowed: the
    -- value to answer with; or nil.
    local function requested_headers(v)
        if v == nil then return "" end
        if header_set == nil then
            -- no list: whatever is asked, if it is a list of names
            for h in gmatch(v, "[^,]+") do
                h = h:match("^%s*(.-)%s*$")
                if h ~= "" and not find(h, TOKEN) then return nil end
            end
            return v
        end
        for h in gmatch(v, "[^,]+") do
            h = lower(h:match("^%s*(.-)%s*$"))
            if h ~= "" and not header_set[h] then return nil end
        end
        return s_headers
    end

    local respond = require("moongate.runtime").respond
    local vary_preflight = "Origin, Access-Control-Request-Method, " ..
        "Access-Control-Request-Headers"
    local refused_h = { Vary = vary_preflight }
    local refused_b = { error = "CORS preflight refused", status = 403 }

    local allowed_h = { ["Access-Control-Allow-Methods"] = s_methods,
                        Vary = vary_preflight,
                        ["Access-Control-Allow-Credentials"] =
                            credentials and "true" or nil,
                        ["Access-Control-Max-Age"] = s_max_age }

    local function preflight(req, origin, method)
        if req:header("origin", 2) ~= nil or not allowed(origin)
            or not method_set[method] then
            return respond(403, refused_b, refused_h)
        end
        local ah = requested_headers(req:header("access-control-request-headers"))
        if ah == nil then return respond(403, refused_b, refused_h) end
        -- one table per policy, filled per preflight: respond turns it
        -- into the answer's head at once (and does not yield)
        local h = allowed_h
        h["Access-Control-Allow-Origin"] = same_for_all and "*" or origin
        h["Access-Control-Allow-Headers"] = ah ~= "" and ah or nil
        return respond(204, "", h)
    end

    -- Everything is decided from the request, in on_request: the answer's
    -- CORS headers go with req:set_response_header (no on_response, so no
    -- response phase runs for them). Vary: Origin goes on every answer
    -- whose headers depend on the origin; when the upstream's own Vary
    -- lists Origin too it is there twice, which means the same (a list of
    -- field names, RFC 9110 12.5.5).
    local function on_request(req)
        local origin = req:header("origin")
        if origin ~= nil and req.method == "OPTIONS" then
            local method = req:header("access-control-request-method")
            if method ~= nil then return preflight(req, origin, method) end
        end
        if not same_for_all then req:add_response_header("Vary", "Origin") end
        if origin == nil or req:header("origin", 2) ~= nil
            or not allowed(origin) then
            return
        end
        req:set_response_header("Access-Control-Allow-Origin",
                                same_for_all and "*" or origin)
        if credentials then
            req:set_response_header("Access-Control-Allow-Credentials", "true")
        end
        if s_expose then
            req:set_response_header("Access-Control-Expose-Headers", s_expose)
        end
    end

    return { name = "cors", on_request = on_request }
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
