-- moongate.basic_auth: HTTP Basic authentication (RFC 7617) against an
-- htpasswd file, as a route policy.
--
--   local basic_auth = require "moongate.basic_auth"
--   gw.route { path = "/admin/**", upstream = "admin", policies = {
--       basic_auth.policy { file = "admin.htpasswd", realm = "admin" } } }
--
-- The file holds "user:hash" lines (`htpasswd -B`, `mkpasswd -m sha-512`,
-- `openssl passwd -6`): bcrypt ($2y$, $2b$, $2a$) and SHA-crypt ($5$, $6$),
-- checked by libxcrypt's crypt_rn (mg_ffi_crypt_verify, constant-time
-- compare). It is read while the config loads, so a reload rereads it,
-- and the gateway watches it like the config: saving it reloads. A line
-- crypt cannot check (MD5 "$apr1$", "{SHA}", plain text, a broken hash)
-- fails the load with the file's name and line.
--
-- A hash is slow on purpose (bcrypt cost 10: ~50 ms of the worker's CPU),
-- so each worker remembers the Authorization values it has verified (and
-- refused), up to 1,000 of each, for `cache_ttl` seconds (default 60): a
-- client sending the same credentials pays for one hash per worker. A
-- bcrypt cost over bcrypt_max_cost (default 10: the hook budget,
-- timeouts.hook, is 100 ms) is refused at load; put a rate limit in front
-- of this policy: each wrong password tried costs one hash.
--
-- On success req.ctx.consumer = { name = user, groups = {...} } (groups:
-- the `groups` option, { group = { users } }); the Authorization header
-- is not sent upstream unless hide_credentials = false. Else 401 with
-- WWW-Authenticate: Basic realm="...", charset="UTF-8".

local ffi = require "ffi"
local policy = require "moongate.policy"
local config = require "moongate.config"
local base = require "moongate.base"

local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring
local find, sub, match, gsub = string.find, string.sub, string.match,
    string.gsub
local ffi_string = ffi.string

ffi.cdef [[
int mg_ffi_crypt_verify(const char *password, size_t plen, const char *hash);
int mg_ffi_b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);
]]

local C = require("moongate.clib").load("mg_ffi_crypt_verify")

local _M = {}

-- The hashes crypt_rn checks that htpasswd files carry, by their prefix.
local function hash_problem(h, max_cost)
    if find(h, "^%$2[aby]%$%d%d%$[./A-Za-z0-9]+$") then
        if #h ~= 60 then return "a bcrypt hash is 60 characters" end
        local cost = tonumber(sub(h, 5, 6))
        if cost < 4 or cost > 31 then return "bcrypt's cost must be 04-31" end
        if cost > max_cost then
            -- each doubling of the work: cost 10 is ~50 ms of one core
            return string.format("bcrypt cost %d takes ~%d ms of the worker " ..
                "per check, over the hook budget: make the line again with " ..
                "`htpasswd -B -C %d`, or raise bcrypt_max_cost (and " ..
                "timeouts.hook)", cost, 50 * 2 ^ (cost - 10), max_cost)
        end
        return nil
    elseif find(h, "^%$[56]%$") then
        local rest = sub(h, 4)
        rest = gsub(rest, "^rounds=%d+%$", "")
        local salt, sum = match(rest, "^([^$]*)%$([./A-Za-z0-9]+)$")
        local want = sub(h, 2, 2) == "5" and 43 or 86
        if not salt or #salt > 16 or #sum ~= want then
            return "a broken SHA-crypt hash"
        end
        return nil
    elseif find(h, "^%$apr1%$") or find(h, "^%$1%$") then
        return "MD5 hashes are refused (weak); make the line again with " ..
            "`htpasswd -B` (bcrypt)"
    elseif find(h, "^{SHA}") then
        return "{SHA} hashes are refused (unsalted); make the line again " ..
            "with `htpasswd -B` (bcrypt)"
    end
    return "not a bcrypt ($2y$) or SHA-crypt ($5$, $6$) hash (plain " ..
        "text? make the line with `htpasswd -B` or `openssl passwd -6`)"
end

-- user -> hash of the htpasswd file at PATH; notes each broken line.
local function read_htpasswd(path, c, max_cost)
    local f, err = io.open(path, "r")
    if not f then
        c:bad("file: cannot read %s", tostring(err))
        return {}
    end
    local users, n = {}, 0
    for line in f:lines() do
        n = n + 1
        line = gsub(line, "\r$", "")
        if not find(line, "^%s*$") and not find(line, "^%s*#") then
            local user, h = match(line, "^([^:]+):(.*)$")
            if not user then
                c:bad("file: %s:%d: a line is \"user:hash\", got %s", path, n,
                      policy.quoted(line))
            else
                local why = hash_problem(h, max_cost)
                if why then
                    c:bad("file: %s:%d: user %s: %s", path, n,
                          policy.quoted(user), why)
                elseif users[user] then
                    c:bad("file: %s:%d: user %s comes twice", path, n,
                          policy.quoted(user))
                else
                    users[user] = h
                end
            end
        end
    end
    f:close()
    return users
end

local KEYS = { "file", "realm", "groups", "hide_credentials", "cache_ttl",
               "bcrypt_max_cost" }

-- Standard base64 (RFC 4648 §4, padded) decoded by the strict base64url
-- decoder of src/crypto.c.
local B64URL = { ["+"] = "-", ["/"] = "_" }
local out = ffi.new("unsigned char[768]")
local outlen = ffi.new("size_t[1]")
local function b64decode(s)
    if #s > 1024 or #s % 4 ~= 0 then return nil end
    s = gsub(gsub(s, "==?$", ""), "[+/]", B64URL)
    outlen[0] = 768
    if C.mg_ffi_b64url_decode(s, #s, out, outlen) ~= 0 then return nil end
    return ffi_string(out, outlen[0])
end

--- basic_auth.policy { file = "htpasswd", realm =, groups =,
-- hide_credentials = true, cache_ttl = 60, bcrypt_max_cost = 10 } -> a
-- route policy.
function _M.policy(opts)
    local c, o = policy.options(opts, "basic_auth.policy", KEYS,
                                '{ file = "users.htpasswd" }')
    local users = {}
    local max_cost = c:integer(o, "bcrypt_max_cost", 4, 31, 10)
    if type(o.file) ~= "string" or o.file == "" then
        c:bad("file must be the path of an htpasswd file, got %s",
              base.describe(o.file))
    else
        users = read_htpasswd(config.data_file(o.file), c, max_cost)
    end
    local realm = o.realm
    if realm == nil then realm = "moongate" end
    if not policy.realm_ok(realm) or find(realm, '"') then
        c:bad("realm must be a string without quotes or control " ..
              "characters, got %s", base.describe(realm))
    end
    local groups_of = {}
    if o.groups ~= nil then
        if type(o.groups) ~= "table" then
            c:bad("groups must be a table { group = { users } }, got %s",
                  base.describe(o.groups))
        else
            for _, g in ipairs(base.sorted_keys(o.groups)) do
                local list = c:strings(o.groups, g)
                if type(g) ~= "string" then
                    c:bad("groups: a group's name is a string, got %s",
                          base.key_str(g))
                end
                for _, u in ipairs(list or {}) do
                    local gl = groups_of[u]
                    if not gl then gl = {}; groups_of[u] = gl end
                    gl[#gl + 1] = g
                end
            end
        end
    end
    local hide = c:boolean(o, "hide_credentials", true)
    local ttl = o.cache_ttl
    if ttl ~= nil and (type(ttl) ~= "number" or ttl < 0) then
        c:bad("cache_ttl must be a number of seconds >= 0, got %s",
              base.describe(ttl))
    end
    local refused = c:done("basic_auth")
    if refused then return refused end
    ttl = ttl or 60

    -- one consumer table per user, made here
    local consumers, dummy = {}, nil
    for u, h in pairs(users) do
        consumers[u] = { name = u, groups = groups_of[u] or {} }
        dummy = dummy or h      -- a hash of the same kind and cost
    end
    local rt = require "moongate.runtime"
    local respond, now = rt.respond, rt.now
    local verify = C.mg_ffi_crypt_verify
    local www = { ["WWW-Authenticate"] = "Basic realm=" .. policy.quoted(realm)
                  .. ', charset="UTF-8"' }
    local b_missing = { error = "authentication required" }
    local b_invalid = { error = "invalid user or password" }

    -- Authorization value -> { consumer or false, expiry }, per worker
    local good, ngood, bad, nbad = {}, 0, {}, 0
    local function remember(value, cons)
        local e = { cons, now() + ttl }
        if cons then
            if ngood >= 1000 then good, ngood = {}, 0 end
            good[value], ngood = e, ngood + 1
        else
            if nbad >= 1000 then bad, nbad = {}, 0 end
            bad[value], nbad = e, nbad + 1
        end
    end

    -- The consumer of Authorization value V, or false.
    local function check(v)
        local e = good[v] or bad[v]
        if e and e[2] > now() then return e[1] end
        -- "Basic" (any case) and one or more spaces (RFC 7235 §2.1)
        local scheme, cred = match(v, "^(%a+) +([%w+/=]+)$")
        if not scheme or scheme:lower() ~= "basic" then return false end
        local plain = b64decode(cred)
        local colon = plain and find(plain, ":", 1, true)
        if not colon then
            remember(v, false)
            return false
        end
        local user, pw = sub(plain, 1, colon - 1), sub(plain, colon + 1)
        local h = users[user]
        local cons = false
        if h then
            if verify(pw, #pw, h) == 1 then cons = consumers[user] end
        else
            -- an unknown user costs what a wrong password costs (no
            -- telling which users exist by the time an answer takes)
            if dummy then verify(pw, #pw, dummy) end
        end
        remember(v, cons)
        return cons
    end

    local function on_request(req)
        local v = req:header("authorization")
        if v == nil then return respond(401, b_missing, www) end
        local cons = check(v)
        if not cons then return respond(401, b_invalid, www) end
        req.ctx.consumer = cons
        if hide then req:remove_header("authorization") end
    end

    return { name = "basic_auth", on_request = on_request }
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
