-- moongate.key_auth: API keys, as a route policy.
--
--   local key_auth = require "moongate.key_auth"
--   gw.route { path = "/orders/**", upstream = "orders", policies = {
--       key_auth.policy { consumers = {
--           { name = "shop", groups = { "partners" },
--             keys = { "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" } },
--       } } } }
--
-- Keys are never in the config: only their SHA-256, as 64 hex digits
-- (`printf %s "$KEY" | sha256sum`, or key_auth.hash(key)). They come from
-- `consumers` (the config), `file` (one "consumer:sha256[:group,group]"
-- per line, reread on reload and watched like the config) and/or `redis`
-- (a hash per key, see docs/policies.md), looked up in that order.
--
-- Per request: the key is read from the header (default X-Api-Key) and/or
-- the query argument configured; a key sent twice (two headers, a header
-- and the argument, the argument twice) is refused with 400, whatever the
-- copies hold. Its SHA-256 is computed in C into a reused buffer; the
-- digests known are indexed by their first 4 bytes, and the candidates of
-- that bucket are compared whole in constant time (CRYPTO_memcmp). The
-- consumer found goes in req.ctx.consumer ({ name =, groups = }, one
-- table per consumer made at load: nothing is allocated per request).

local ffi = require "ffi"
local policy = require "moongate.policy"
local config = require "moongate.config"
local base = require "moongate.base"

local type, ipairs, tostring = type, ipairs, tostring
local fmt, find, lower, match, byte, gsub, sub = string.format,
    string.find, string.lower, string.match, string.byte, string.gsub,
    string.sub
local ffi_string = ffi.string

ffi.cdef [[
void mg_ffi_sha256(const char *in, size_t len, unsigned char *out);
int mg_ffi_equal(const unsigned char *a, const unsigned char *b, size_t n);
]]

local C = require("moongate.clib").load("mg_ffi_sha256")

local _M = {}

_M.REDIS_PREFIX = "moongate:key:"

local digest = ffi.new("unsigned char[32]")
local digest_u32 = ffi.cast("uint32_t *", digest)
local hexbuf = ffi.new("char[64]")

local function hex_of(d)
    local hx = "0123456789abcdef"
    for i = 0, 31 do
        local b = d[i]
        hexbuf[i * 2] = byte(hx, math.floor(b / 16) + 1)
        hexbuf[i * 2 + 1] = byte(hx, b % 16 + 1)
    end
    return ffi_string(hexbuf, 64)
end

--- key_auth.hash(key) -> the SHA-256 of `key` as 64 lower-case hex digits:
-- what the config, the key file and Redis hold.
function _M.hash(key)
    if type(key) ~= "string" then
        error("key_auth.hash: key must be a string", 2)
    end
    C.mg_ffi_sha256(key, #key, digest)
    return hex_of(digest)
end

-- 64 hex digits as 32 bytes (a cdata kept by the caller).
local function digest_of_hex(h)
    local d = ffi.new("unsigned char[32]")
    for i = 0, 31 do
        d[i] = tonumber(h:sub(i * 2 + 1, i * 2 + 2), 16)
    end
    return d
end

local HEX_FIX = "must be the SHA-256 of the key as 64 hex digits " ..
    "(printf %%s \"$KEY\" | sha256sum), got %s"

-- The index: bucket (the first 4 bytes of a digest as a number) -> list
-- of { digest cdata, consumer }.
local function add_key(index, seen, hexkey, consumer, c, where)
    if type(hexkey) ~= "string" or not find(hexkey, "^%x+$") or #hexkey ~= 64 then
        c:bad("%s " .. HEX_FIX, where, type(hexkey) == "string" and
              (#hexkey == 64 and "non-hex digits" or
               fmt("%d characters (a plain key? keys are stored hashed)",
                   #hexkey)) or base.describe(hexkey))
        return
    end
    hexkey = lower(hexkey)
    if seen[hexkey] then
        c:bad("%s: the same key is also %s's (a key names one consumer)",
              where, seen[hexkey])
        return
    end
    seen[hexkey] = consumer.name
    local d = digest_of_hex(hexkey)
    local b = ffi.cast("uint32_t *", d)[0]
    local list = index[b]
    if not list then list = {}; index[b] = list end
    list[#list + 1] = { d = d, consumer = consumer }
end

local CONSUMER_KEYS = { "name", "keys", "groups" }

local function consumer_of(t, c, where)
    local cc, o = policy.options(t, where, CONSUMER_KEYS,
                                 '{ name = "shop", keys = { "<sha256>" } }')
    if type(o.name) ~= "string" or o.name == "" then
        for _, m in ipairs(cc.msgs) do c.msgs[#c.msgs + 1] = m end
        c.msgs[#c.msgs + 1] = fmt("%s.name must be a non-empty string, got %s",
                                  where, base.describe(o.name))
        return nil
    end
    local groups = cc:strings(o, "groups") or {}
    for _, m in ipairs(cc.msgs) do c.msgs[#c.msgs + 1] = m end
    if not cc:ok() then return nil end
    return { name = o.name, groups = groups }, o.keys
end

-- Reads the key file: "consumer:sha256[:group,group]" per line; blank
-- lines and lines starting with # are skipped.
local function read_file(path, index, seen, by_name, c)
    local f, err = io.open(path, "r")
    if not f then
        c:bad("file: cannot read %s", tostring(err))
        return
    end
    local n = 0
    for line in f:lines() do
        n = n + 1
        line = gsub(line, "\r$", "")
        if not find(line, "^%s*$") and not find(line, "^%s*#") then
            local name, hexkey, groups = match(line, "^([^:]+):([^:]*):?(.*)$")
            local where = fmt("file: %s:%d:", path, n)
            if not name then
                c:bad("%s a line is \"consumer:sha256\" or " ..
                      "\"consumer:sha256:group,group\", got %s", where,
                      policy.quoted(line))
            else
                local cons = by_name[name]
                if not cons then
                    local gl = {}
                    for g in groups:gmatch("[^,%s]+") do gl[#gl + 1] = g end
                    cons = { name = name, groups = gl }
                    by_name[name] = cons
                end
                add_key(index, seen, hexkey, cons, c, where)
            end
        end
    end
    f:close()
end

local KEYS = { "consumers", "file", "redis", "header", "query",
               "hide_credentials", "realm", "cache_ttl" }

--- key_auth.policy(opts) -> a route policy. opts: consumers (a list of
-- { name, keys = { sha256 hex }, groups }), file (a key file), redis (a
-- moongate.redis client's options, plus prefix), header (default
-- "X-Api-Key"; false: none), query (an argument name; default none),
-- hide_credentials (default true: the key is not sent upstream), realm,
-- cache_ttl (seconds a Redis answer is kept per worker; default 10).
function _M.policy(opts)
    local c, o = policy.options(opts, "key_auth.policy", KEYS,
        '{ consumers = { { name = "shop", keys = { "<sha256 hex>" } } } }')
    local index, seen, by_name = {}, {}, {}
    local nkeys = 0
    if o.consumers ~= nil then
        if type(o.consumers) ~= "table" then
            c:bad("consumers must be a list of { name =, keys = }, got %s",
                  base.describe(o.consumers))
        else
            for i, t in ipairs(o.consumers) do
                local where = fmt("consumers[%d]", i)
                local cons, keys = consumer_of(t, c, "key_auth.policy." .. where)
                if cons then
                    if by_name[cons.name] then
                        c:bad("%s: consumer %s comes twice", where,
                              policy.quoted(cons.name))
                    end
                    by_name[cons.name] = cons
                    if type(keys) == "string" then keys = { keys } end
                    if type(keys) ~= "table" or keys[1] == nil then
                        c:bad("%s.keys must be a list of SHA-256 hex digests",
                              where)
                    else
                        for j, k in ipairs(keys) do
                            add_key(index, seen, k, cons, c,
                                    fmt("%s.keys[%d]", where, j))
                            nkeys = nkeys + 1
                        end
                    end
                end
            end
        end
    end
    if o.file ~= nil then
        if type(o.file) ~= "string" or o.file == "" then
            c:bad("file must be a path, got %s", base.describe(o.file))
        else
            read_file(config.data_file(o.file), index, seen, by_name, c)
        end
    end
    local header = o.header
    if header == nil then header = "X-Api-Key" end
    if header ~= false and (type(header) ~= "string"
                            or not find(header, policy.TOKEN)) then
        c:bad("header must be a header name or false, got %s",
              base.describe(header))
        header = false
    end
    local query = o.query
    if query == false then query = nil end
    if query ~= nil and (type(query) ~= "string" or query == "") then
        c:bad("query must be a query argument name, got %s",
              base.describe(query))
        query = nil
    end
    if not header and not query then
        c:bad("%s", "header = false needs query = \"<argument>\": the key " ..
              "must come from somewhere")
    end
    local hide = c:boolean(o, "hide_credentials", true)
    local realm = o.realm
    if realm ~= nil and not policy.realm_ok(realm) then
        c:bad("realm must be a string without control characters, got %s",
              base.describe(realm))
    end
    local ttl = o.cache_ttl
    if ttl ~= nil and (type(ttl) ~= "number" or ttl < 0) then
        c:bad("cache_ttl must be a number of seconds >= 0, got %s",
              base.describe(ttl))
    end
    local rclient, rprefix
    if o.redis ~= nil then
        local r = o.redis
        rprefix = _M.REDIS_PREFIX
        if type(r) == "table" and r.prefix ~= nil then
            rprefix = r.prefix
            if type(rprefix) ~= "string" then
                c:bad("redis.prefix must be a string, got %s",
                      base.describe(rprefix))
            end
            r = base.copy(r)
            r.prefix = nil
        end
        local ok, v = pcall(require("moongate.redis").new, r,
                            "key_auth.policy.redis")
        if ok then
            rclient = v
        else
            c.msgs[#c.msgs + 1] = (gsub(tostring(v), "^[^\n]-:%d+: ", "", 1))
        end
    end
    if c:ok() and not next(index) and not rclient then
        c:bad("%s", "consumers, file or redis is required (where the keys are)")
    end
    local refused = c:done("key_auth")
    if refused then return refused end

    ttl = ttl or 10
    local hname = header and lower(header)
    local rt = require "moongate.runtime"
    local respond, query_arg, now = rt.respond, rt.query_arg, rt.now
    local mg_sha256, mg_equal = C.mg_ffi_sha256, C.mg_ffi_equal
    local www = { ["WWW-Authenticate"] = "ApiKey" ..
        (realm and (" realm=" .. policy.quoted(realm)) or "") }
    local where = header and query and
        fmt("the %s header or the %s query argument", header, query) or
        header and ("the " .. header .. " header") or
        ("the " .. query .. " query argument")
    local b_missing = { error = "missing API key", hint = "send it in " .. where }
    local b_invalid = { error = "invalid API key" }
    local b_twice = { error = "API key sent more than once",
                      hint = "send one key, once, in " .. where }
    local b_unavailable = { error = "temporarily_unavailable" }

    -- Redis answers of this worker: hex -> { consumer or false, expiry }
    local rcache, rcount = {}, 0
    local function redis_lookup(hex)
        local e = rcache[hex]
        local t = now()
        if e and e[2] > t then return e[1] end
        local ok, name, groups = rclient:command("HMGET", rprefix .. hex,
                                                 "consumer", "groups")
        if not ok then return nil, name end
        local cons = false
        if type(name) == "string" and name ~= "" then
            local gl = {}
            if type(groups) == "string" then
                for g in groups:gmatch("[^,%s]+") do gl[#gl + 1] = g end
            end
            cons = { name = name, groups = gl }
        end
        if rcount >= 10000 then rcache, rcount = {}, 0 end
        if not e then rcount = rcount + 1 end
        rcache[hex] = { cons, t + ttl }
        return cons
    end

    -- the second and later digests of a bucket (digest holds the key's)
    local function bucket_rest(list)
        for i = 2, #list do
            local e = list[i]
            if mg_equal(digest, e.d, 32) == 1 then return e.consumer end
        end
        return nil
    end

    -- Keys found in the config or file, by the key itself: a request with
    -- a key seen before costs a table lookup, not SHA-256 and the
    -- constant-time compare. It adds no compare of key bytes: LuaJIT made
    -- the key an interned string when the header was read (comparing it to
    -- the strings of its hash then), and the table is looked up by that
    -- string's identity; only keys that were valid are in it, and a valid
    -- key is no secret from the client that sent it. An unknown key takes
    -- the digest path every time. At most SEEN_MAX keys, then it starts
    -- over (memory stays bounded whatever the clients send).
    local SEEN_MAX = 1024
    local seen_keys, nseen = {}, 0

    -- The consumer of KEY, false when unknown, nil and why when Redis failed.
    local function lookup(key)
        local known = seen_keys[key]
        if known then return known end
        mg_sha256(key, #key, digest)
        local list = index[digest_u32[0]]
        if list then
            -- a bucket holds one digest but by a 1-in-4-billion chance: no
            -- loop on the usual path (a loop here would start traces of
            -- its own on every request)
            local e = list[1]
            local cons = mg_equal(digest, e.d, 32) == 1 and e.consumer
            if not cons and list[2] then cons = bucket_rest(list) end
            if cons then
                if nseen >= SEEN_MAX then seen_keys, nseen = {}, 0 end
                seen_keys[key], nseen = cons, nseen + 1
                return cons
            end
        end
        if rclient then return redis_lookup(hex_of(digest)) end
        return false
    end

    -- The query without argument QUERY (hide_credentials); strings only.
    local function strip_query(req, q)
        local out, pos, n = nil, 1, #q
        while pos <= n do
            local amp = find(q, "&", pos, true) or n + 1
            if amp > pos then
                local pair = sub(q, pos, amp - 1)
                local k = match(pair, "^([^=]*)")
                if find(k, "[%%+]") then k = next(rt.parse_args(k .. "=")) end
                if k ~= query then out = out and (out .. "&" .. pair) or pair end
            end
            pos = amp + 1
        end
        req:set_query(out or "")
    end

    local function on_request(req)
        local key, count, q = nil, 0, nil
        if hname then
            key = req:header(hname)
            if key ~= nil then
                count = 1
                if req:header(hname, 2) ~= nil then count = 2 end
            end
        end
        if query then
            q = req.query
            -- (a name may come %-escaped: "api%6bey=")
            if q ~= nil and (find(q, query, 1, true) or find(q, "%", 1, true)) then
                local v, n = query_arg(q, query)
                if n == 0 then
                    q = nil
                else
                    count = count + n
                    if key == nil then key = v end
                end
            else
                q = nil
            end
        end
        if count == 0 then return respond(401, b_missing, www) end
        if count > 1 then return respond(400, b_twice) end
        if type(key) ~= "string" or key == "" then
            return respond(401, b_invalid, www)
        end
        local cons, err = lookup(key)
        if cons == nil then
            require("moongate").log("warn", "key_auth: " .. tostring(err))
            return respond(503, b_unavailable, { ["Retry-After"] = "1" })
        end
        if not cons then return respond(401, b_invalid, www) end
        req.ctx.consumer = cons
        if hide then
            if q then
                strip_query(req, q)
            else
                req:remove_header(hname)
            end
        end
    end

    return { name = "key_auth", on_request = on_request, keys = nkeys }
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
