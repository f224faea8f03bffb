-- moongate.policy: what the bundled policies (moongate.key_auth,
-- basic_auth, acl, cors, ip, headers, redirect, maintenance) share when
-- they check their options, so that they all read alike and report every
-- mistake of a call at once, at the user's line (config.report):
--
--   local c, o = policy.options(opts, "cors.policy", KEYS,
--                               '{ origins = { "https://app.example.com" } }')
--   if o.max_age ~= nil and not ... then c:bad("max_age must be ...") end
--   local refused = c:done("cors")
--   if refused then return refused end
--
-- Nothing here runs per request.

local config = require "moongate.config"   -- config.report
local base = require "moongate.base"

local type, ipairs, pairs, error = type, ipairs, pairs, error
local fmt, find = string.format, string.find

local _M = {}

local Check = {}
Check.__index = Check

--- policy.options(opts, what, keys, example) -> checker, opts. The checker
-- has already noted a non-table opts (then opts is {}) and every unknown
-- key; `example` shows the call's shape in that message.
function _M.options(opts, what, keys, example)
    local c = setmetatable({ what = what, msgs = {} }, Check)
    if type(opts) ~= "table" then
        c.msgs[1] = fmt("%s takes a table like %s, got %s", what, example,
                        base.describe(opts))
        return c, {}
    end
    local names = {}
    for _, k in ipairs(keys) do names[#names + 1] = k end
    table.sort(names)
    for _, m in ipairs(base.unknown_keys(opts, names, what)) do
        c.msgs[#c.msgs + 1] = m
    end
    return c, opts
end

--- checker:bad(format, ...): one mistake, "<what>.<the message>".
function Check:bad(f, ...)
    self.msgs[#self.msgs + 1] = self.what .. "." .. fmt(f, ...)
end

--- checker:ok() -> true while no mistake was noted.
function Check:ok()
    return self.msgs[1] == nil
end

--- checker:boolean(o, key, default) -> the value, or default.
function Check:boolean(o, key, default)
    local v = o[key]
    if v == nil then return default end
    if type(v) ~= "boolean" then
        self:bad("%s must be true or false, got %s", key, base.describe(v))
        return default
    end
    return v
end

--- checker:integer(o, key, lo, hi, default) -> the value, or default.
function Check:integer(o, key, lo, hi, default)
    local v = o[key]
    if v == nil then return default end
    if type(v) ~= "number" or v % 1 ~= 0 or v < lo or v > hi then
        self:bad("%s must be an integer %d-%d, got %s", key, lo, hi,
                 base.describe(v))
        return default
    end
    return v
end

--- checker:strings(o, key) -> a list of non-empty strings (a single
-- string is a list of one), or nil when absent or wrong.
function Check:strings(o, key)
    local v = o[key]
    if v == nil then return nil end
    if type(v) == "string" then v = { v } end
    if type(v) ~= "table" then
        self:bad("%s must be a list of strings, got %s", key, base.describe(v))
        return nil
    end
    local out = {}
    for k in pairs(v) do
        if type(k) ~= "number" or k % 1 ~= 0 or k < 1 or k > #v then
            self:bad("%s must be a list of strings, got the key %s", key,
                     base.key_str(k))
            return nil
        end
    end
    for i, s in ipairs(v) do
        if type(s) ~= "string" or s == "" then
            self:bad("%s[%d] must be a non-empty string, got %s", key, i,
                     base.describe(s))
            return nil
        end
        out[i] = s
    end
    return out
end

-- RFC 9110 token: method and header names
_M.TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

--- checker:tokens(o, key, noun) -> like strings, each an RFC 9110 token
-- (a method, a header name: `noun` says which in the message).
function Check:tokens(o, key, noun)
    local list = self:strings(o, key)
    for i, s in ipairs(list or {}) do
        if not find(s, _M.TOKEN) then
            self:bad("%s[%d] %s is not a %s", key, i, _M.quoted(s), noun)
        end
    end
    return list
end

--- checker:status(o, key, lo, hi, default): an HTTP status in [lo, hi].
function Check:status(o, key, lo, hi, default)
    return self:integer(o, key, lo, hi, default)
end

--- checker:body(o, key) -> a string or table body, or nil.
function Check:body(o, key)
    local v = o[key]
    if v ~= nil and type(v) ~= "string" and type(v) ~= "table" then
        self:bad("%s must be a string or a table (sent as JSON), got %s", key,
                 base.describe(v))
        return nil
    end
    return v
end

-- The policy a config gets for options that were refused: the load fails
-- anyway (config.report), this only lets the file run on to its end.
local function refused(name)
    return { name = name, on_request = function()
        error(name .. ".policy: its options were refused", 2)
    end }
end

--- checker:done(name) -> nil when the options were right; else, while a
-- config loads, records every message at the user's line and returns a
-- stand-in policy (the load fails); outside a load raises the first.
function Check:done(name)
    if self.msgs[1] == nil then return nil end
    if config.report(self.msgs) then return refused(name) end
    base.raise(self.msgs[1])
end

--- A quoted-string parameter value (RFC 9110 5.6.4) of `s`, which must
-- hold no control character: for realm="..." in WWW-Authenticate.
function _M.quoted(s)
    return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

--- true when `s` may be a realm: a string without control characters.
function _M.realm_ok(s)
    return type(s) == "string" and not find(s, "%c")
end

return _M
