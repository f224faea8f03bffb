-- moongate.acl: allow or deny by consumer group, JWT claim or role, as a
-- route policy placed after the policy that identifies the client.
--
--   local acl = require "moongate.acl"
--   -- groups of req.ctx.consumer (key_auth, basic_auth)
--   acl.policy { allow = { "partners", "staff" } }
--   -- a claim of the verified JWT (req.ctx.jwt, the jwt policy): a string,
--   -- a space-separated string ("scope") or an array; dotted for nested
--   acl.policy { claim = "roles", allow = { "admin" } }
--   acl.policy { claim = "realm_access.roles", deny = { "suspended" } }
--
-- `deny` wins: a client with any denied value is refused; with `allow`, a
-- client needs one allowed value. A request no earlier policy identified
-- (no consumer, no claims) is refused too. Refused: 403 (or `status`).
-- Nothing is allocated per request: the lists are sets made at load.

local policy = require "moongate.policy"
local base = require "moongate.base"

local type, ipairs = type, ipairs
local find, sub, gmatch = string.find, string.sub, string.gmatch

local _M = {}

local KEYS = { "allow", "deny", "claim", "status", "body" }

-- Walks VALUE (a string, a space-separated string, an array of strings)
-- and returns true when one of its words is in SET.
local function any_in(set, value)
    local tv = type(value)
    if tv == "string" then
        if set[value] then return true end
        -- a space-separated list ("scope"): its words, without a closure
        local pos, n = 1, #value
        if not find(value, " ", 1, true) then return false end
        while pos <= n do
            local sp = find(value, " ", pos, true) or n + 1
            if sp > pos and set[sub(value, pos, sp - 1)] then return true end
            pos = sp + 1
        end
        return false
    elseif tv == "table" then
        for i = 1, #value do
            local v = value[i]
            if type(v) == "string" and set[v] then return true end
        end
    end
    return false
end

--- acl.policy { allow = { ... } | deny = { ... }, claim = "roles",
-- status = 403, body = } -> a route policy.
function _M.policy(opts)
    local c, o = policy.options(opts, "acl.policy", KEYS,
                                '{ allow = { "admins" } }')
    local allow, deny = c:strings(o, "allow"), c:strings(o, "deny")
    local claim = o.claim
    if claim ~= nil and (type(claim) ~= "string" or claim == ""
                         or find(claim, "^%.") or find(claim, "%.%.")
                         or sub(claim, -1) == ".") then
        c:bad("claim must be a claim name (dotted for a nested one: " ..
              "\"realm_access.roles\"), got %s", base.describe(claim))
        claim = nil
    end
    local status = c:status(o, "status", 400, 599, 403)
    local body = c:body(o, "body")
    if c:ok() and not allow and not deny then
        c:bad("%s", "allow or deny is required (a list of groups, roles " ..
              "or claim values)")
    end
    local refused = c:done("acl")
    if refused then return refused end

    local function set_of(list)
        if not list then return nil end
        local s = {}
        for _, v in ipairs(list) do s[v] = true end
        return s
    end
    local allow_set, deny_set = set_of(allow), set_of(deny)
    local path = {}
    if claim then
        for k in gmatch(claim, "[^.]+") do path[#path + 1] = k end
    end
    local np = #path

    -- the values the request is judged on, or nil
    local function values(ctx)
        if np == 0 then
            local cons = ctx.consumer
            return cons and cons.groups
        end
        local v = ctx.jwt
        for i = 1, np do
            if type(v) ~= "table" then return nil end
            v = v[path[i]]
        end
        return v
    end

    local respond = require("moongate.runtime").respond
    local b = body or { error = "forbidden", status = status }

    local function on_request(req)
        local v = values(req.ctx)
        if v == nil then return respond(status, b) end
        if deny_set and any_in(deny_set, v) then return respond(status, b) end
        if allow_set and not any_in(allow_set, v) then
            return respond(status, b)
        end
    end

    return { name = "acl", on_request = on_request }
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
