-- moongate.maintenance: a route (or every route it is put on) answers 503
-- with Retry-After while it is on, as a route policy; clients in an
-- allow-list of CIDR ranges still get through (to check the site before
-- opening it again).
--
--   local maintenance = require "moongate.maintenance"
--   local down = maintenance.policy { retry_after = 600,
--                                     allow = { "10.0.0.0/8" } }
--   gw.route { path = "/shop/**", upstream = "shop", policies = { down } }
--
-- Turning it on and off is a reload (edit `enabled`, save: the gateway
-- reloads the file). retry_after: seconds (an integer, default 300) or an
-- HTTP-date string. The allow-list is a CIDR set (moongate.ip), matched on
-- req.client.

local policy = require "moongate.policy"
local ip = require "moongate.ip"
local base = require "moongate.base"

local type, fmt = type, string.format

local _M = {}

local KEYS = { "enabled", "retry_after", "allow", "status", "body" }

--- maintenance.policy { enabled = true, retry_after = 300, allow = {},
-- status = 503, body = } -> a route policy.
function _M.policy(opts)
    local c, o = policy.options(opts, "maintenance.policy", KEYS,
                                '{ retry_after = 600 }')
    local enabled = c:boolean(o, "enabled", true)
    local ra = o.retry_after
    if ra == nil then ra = 300 end
    if type(ra) == "number" then
        if ra % 1 ~= 0 or ra < 0 or ra > 86400 * 365 then
            c:bad("retry_after must be an integer of seconds 0-31536000 " ..
                  "or an HTTP-date, got %s", base.describe(ra))
        end
        ra = fmt("%d", ra)
    elseif type(ra) ~= "string" or not ra:find(
        "^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$") then
        c:bad("retry_after must be seconds or an HTTP-date like " ..
              "\"Wed, 21 Oct 2026 07:28:00 GMT\", got %s", base.describe(ra))
    end
    local status = c:status(o, "status", 500, 599, 503)
    local body = c:body(o, "body")
    local list = c:strings(o, "allow")
    local allow = list and ip.set(list, "allow", c)
    local refused = c:done("maintenance")
    if refused then return refused end

    local p = { name = "maintenance", enabled = enabled }
    if not enabled then
        p.on_request = function() end
        return p
    end
    local respond = require("moongate.runtime").respond
    local contains = ip.contains
    local b = body or { error = "down for maintenance", status = status }
    local h = { ["Retry-After"] = ra }
    function p.on_request(req)
        if allow and contains(allow, req.client) then return end
        return respond(status, b, h)
    end
    return p
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
