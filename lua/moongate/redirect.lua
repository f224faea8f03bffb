-- moongate.redirect: answer a route's requests with a redirect, as a route
-- policy: to HTTPS, or to a URL made from the request (a template of
-- moongate.template, compiled while the config loads).
--
--   local redirect = require "moongate.redirect"
--   -- plain HTTP to HTTPS, same host, path and query (nothing on HTTPS)
--   gw.route { path = "/**", upstream = "web", policies = {
--       redirect.policy { https = true, status = 308 } } }
--   -- anywhere
--   gw.route { path = "/old/**", upstream = "web", policies = {
--       redirect.policy { to = "https://new.example.com${path}", status = 301 } } }
--
-- status: 301, 302, 303, 307 or 308 (default 301; 307/308 keep the method
-- and body, which a POST needs). The query is kept (https) or is the
-- template's business (to: "${path}?${query}" drops nothing, and
-- "${raw_path}" is the path as the client sent it). The HTTPS target is
-- https://<Host without its port>[:https_port]<path>[?query]; the core has
-- checked the Host is a valid host, so it cannot inject a header.

local policy = require "moongate.policy"
local template = require "moongate.template"
local base = require "moongate.base"

local match = string.match

local _M = {}

local KEYS = { "https", "https_port", "to", "status" }
local STATUSES = { [301] = true, [302] = true, [303] = true, [307] = true,
                   [308] = true }

--- redirect.policy { https = true | to = template, status = 301,
-- https_port = 443 } -> a route policy.
function _M.policy(opts)
    local c, o = policy.options(opts, "redirect.policy", KEYS,
                                '{ https = true } or { to = "https://x${path}" }')
    local https = c:boolean(o, "https", false)
    local port = c:integer(o, "https_port", 1, 65535, 443)
    local status = o.status
    if status == nil then status = 301 end
    if not STATUSES[status] then
        c:bad("status must be 301, 302, 303, 307 or 308, got %s",
              base.describe(status))
    end
    local to
    if o.to ~= nil then
        local why
        to, why = template.compile(o.to, false)
        if not to then c:bad("to: %s", why) end
        if https then c:bad("%s", "https and to: give one of them") end
    elseif not https and c:ok() then
        c:bad("%s", "https = true or to = \"<url template>\" is required")
    end
    if o.https_port ~= nil and not https then
        c:bad("%s", "https_port only applies with https = true")
    end
    local refused = c:done("redirect")
    if refused then return refused end

    local redirect = require("moongate.runtime").redirect
    local suffix = port == 443 and "" or (":" .. port)
    local respond = require("moongate.runtime").respond
    local b_nohost = { error = "no Host to redirect to", status = 400 }

    local function on_request(req)
        if to then
            local url = to(req)
            if url == nil or url == "" then return end
            return redirect(url, status)
        end
        if req.scheme == "https" then return end
        local h = req:header("host")
        local host = h and (match(h, "^(%[[^%]]*%])") or match(h, "^([^:]*)"))
        if host == nil or host == "" then return respond(400, b_nohost) end
        local q = req.query
        local url = "https://" .. host .. suffix .. req.raw_path ..
            (q and q ~= "" and ("?" .. q) or "")
        return redirect(url, status)
    end

    return { name = "redirect", on_request = on_request }
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
