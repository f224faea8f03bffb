-- moongate.ratelimit: rate limits for hooks and routes.
--
--   local limit = require "moongate.ratelimit"
--
--   -- a limiter, made once while the config loads
--   local per_user = limit.new { rate = 100, per = 1 }
--   gw.on_request = function(req)
--       local ok, remaining, reset, retry_after = per_user:allow(req.client)
--       if not ok then return gw.respond(429) end
--   end
--
--   -- or the bundled per-route policy (429 + RateLimit-* headers)
--   gw.route { path = "/orders/**", upstream = "orders", policies = {
--       limit.policy { rate = 100, per = 1, key = limit.key.jwt_sub } } }
--
-- Algorithms (docs/ratelimit.md): "sliding" (default), a sliding window
-- that weighs the previous fixed window by the share of it still inside the
-- window and counts admitted requests only; "gcra", a token bucket of
-- `burst` tokens refilled at rate/per. A key's windows start at its first
-- request.
--
-- Local mode (no `redis`): the state lives in a shared dictionary and each
-- decision is one C call that reads and updates it under the stripe lock
-- (src/shdict.c), so one limit is exact across all workers of the process.
-- Nothing is allocated per call.
--
-- Cluster mode (`redis = {...}`): the state lives in Redis and each decision
-- is one round trip running a Lua script there (EVALSHA); several gateways
-- share the limit. When Redis fails (down, timeout), `fallback` (a local
-- limit) decides if given, else `on_redis_error` ("allow" or "deny").

local ffi = require "ffi"
require "moongate.shared"       -- mg_shdict_t and the shared dict symbols
local redis = require "moongate.redis"
local config = require "moongate.config"   -- config.report
local base = require "moongate.base"       -- option errors read alike

local type, tostring, error, pairs, ipairs, setmetatable, pcall, next =
    type, tostring, error, pairs, ipairs, setmetatable, pcall, next
local floor, ceil, huge = math.floor, math.ceil, math.huge
local fmt, gsub, concat, sort = string.format, string.gsub, table.concat,
    table.sort

local raise, describe, check_keys = base.raise, base.describe,
    base.check_keys

-- (a struct cannot be declared twice in a Lua state: specs load this module
-- again in the same state)
if not pcall(ffi.typeof, "mg_rl_result_t") then
    ffi.cdef [[
typedef struct mg_rl_result_s {
    double remaining;
    double reset;
    double retry_after;
} mg_rl_result_t;
]]
end
ffi.cdef [[
int mg_ffi_shdict_gcra(mg_shdict_t *d, const char *ns, size_t ns_len, const char *key,
                       size_t key_len, double interval, double burst, double cost, double now,
                       mg_rl_result_t *out);
int mg_ffi_shdict_sliding(mg_shdict_t *d, const char *ns, size_t ns_len, const char *key,
                          size_t key_len, double limit, double window, double cost, double now,
                          mg_rl_result_t *out);
mg_shdict_t *mg_ffi_shdict_open(const char *name, size_t name_len, size_t cap);
]]

local C = require("moongate.clib").load("mg_ffi_shdict_gcra")

-- A dictionary name (src/shdict.c's rule, as gw.shared_dict checks it) and
-- a header name (src/header_names.c's, lower-cased), from the config schema.
local cdefs = require "moongate.cdefs"
local DICT_NAME = base.value_check(cdefs.config_field("shared_dict", "name"), cdefs)
local HEADER_NAME = base.value_check(cdefs.config_field("cache", "vary").item, cdefs)

local _M = {}

_M.DEFAULT_DICT = "ratelimit"
_M.DEFAULT_DICT_SIZE = 16 * 1024 * 1024
_M.REDIS_PREFIX = "moongate:rl:"

local ENOMEM = 12

-- one result buffer per Lua state: a local decision never yields
local out = ffi.new("mg_rl_result_t")

-- Numbers as Redis arguments and key parts: exact, integers without ".0".
local function num(n)
    if n % 1 == 0 and n > -1e15 and n < 1e15 then
        return fmt("%d", n)
    end
    return fmt("%.17g", n)
end


-- Redis scripts ---------------------------------------------------------------
-- Both mirror the C functions of src/shdict.c (mg_ffi_shdict_gcra,
-- mg_ffi_shdict_sliding) on the server's clock, in milliseconds. KEYS[1]
-- is the state; ARGV: the two parameters, the cost. They return
-- { admitted (1/0), remaining, reset ms, retry_after ms }.

_M.GCRA_SCRIPT = [[
if redis.replicate_commands then redis.replicate_commands() end
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - interval * burst
if now >= allow_at - 1e-6 then
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat),
             'PX', math.ceil(new_tat - now) + 1000)
  return { 1, math.floor((now - allow_at) / interval + 1e-9),
           math.ceil(new_tat - now), 0 }
end
local remaining = math.floor((now - (tat - interval * burst)) / interval + 1e-9)
if remaining < 0 then remaining = 0 end
return { 0, remaining, math.ceil(tat - now), math.ceil(allow_at - now) }
]]

_M.SLIDING_SCRIPT = [[
if redis.replicate_commands then redis.replicate_commands() end
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local v = redis.call('HMGET', KEYS[1], 's', 'p', 'c')
local start, prev, cur = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
if not start then start, prev, cur = now, 0, 0 end
if now >= start + window then
  if now < start + 2 * window then
    prev, start = cur, start + window
  else
    prev, start = 0, now
  end
  cur = 0
end
local el = now - start
if el < 0 then el = 0 end
local est = prev * (window - el) / window + cur
local ok, remaining, retry = 0, 0, 0
if est + cost <= limit + 1e-6 then
  cur = cur + cost
  ok = 1
  remaining = math.floor(limit - est - cost + 1e-9)
else
  remaining = math.floor(limit - est + 1e-9)
  if remaining < 0 then remaining = 0 end
  local room, r = limit - cur - cost, nil
  if room >= 0 and prev > 0 then
    local need = window * (1 - room / prev)
    if need < window then r = start + need - now end
  end
  if not r then
    local x = 0
    if cur > limit - cost then x = window * (1 - (limit - cost) / cur) end
    r = start + window + x - now
  end
  retry = math.ceil(r)
end
redis.call('HMSET', KEYS[1], 's', string.format('%.3f', start), 'p', prev, 'c', cur)
redis.call('PEXPIRE', KEYS[1], math.ceil(start + 2 * window - now) + 1000)
return { ok, remaining, math.ceil(start + window - now), retry }
]]


-- Options ---------------------------------------------------------------------

local LIMIT_KEYS = { "rate", "per", "burst", "algorithm", "dict", "name",
                     "redis", "on_redis_error", "fallback" }
local FALLBACK_KEYS = { "rate", "per", "burst", "algorithm", "dict", "name" }
local POLICY_KEYS = { "key", "headers", "status", "body" }
for _, k in ipairs(LIMIT_KEYS) do POLICY_KEYS[#POLICY_KEYS + 1] = k end
local POLICY_NAMES = {}
for i, k in ipairs(POLICY_KEYS) do POLICY_NAMES[i] = k end
sort(POLICY_NAMES)
local REDIS_KEYS = {}
for i, k in ipairs(redis.KEYS) do REDIS_KEYS[i] = k end
REDIS_KEYS[#REDIS_KEYS + 1] = "prefix"

local function positive(v, what, default, hint)
    if v == nil then return default end
    if type(v) ~= "number" or not (v > 0) or v == huge then
        raise(fmt("%s must be a number > 0%s, got %s", what, hint or "",
                  describe(v)))
    end
    return v
end

local Limiter = {}
Limiter.__index = Limiter

local build

local function build_redis(lim, opts, what)
    local r, prefix = opts.redis, _M.REDIS_PREFIX
    if type(r) == "table" then
        check_keys(r, REDIS_KEYS, what .. ".redis")
        if r.prefix ~= nil then
            if type(r.prefix) ~= "string" then
                raise(fmt("%s.redis.prefix must be a string, got %s", what,
                          describe(r.prefix)))
            end
            prefix = r.prefix
            local copy = {}
            for k, v in pairs(r) do
                if k ~= "prefix" then copy[k] = v end
            end
            r = copy
        end
    end
    lim.redis = redis.new(r, what .. ".redis")
    lim._rkey = prefix .. lim._ns
    lim._script = lim.algorithm == "gcra" and _M.GCRA_SCRIPT or
        _M.SLIDING_SCRIPT
    lim._arg_a, lim._arg_b = num(lim._a), num(lim._b)
    local on_err = opts.on_redis_error
    if on_err == nil then on_err = "allow" end
    if on_err ~= "allow" and on_err ~= "deny" then
        raise(fmt('%s.on_redis_error must be "allow" or "deny", got %s', what,
                  describe(on_err)))
    end
    lim.on_redis_error = on_err
    lim._deny = on_err == "deny"
    if opts.fallback ~= nil then
        lim.fallback = build(opts.fallback, what .. ".fallback", FALLBACK_KEYS)
    end
end

-- Validates opts (only `keys` allowed) and makes a limiter; raises at the
-- user's line.
build = function(opts, what, keys)
    if type(opts) ~= "table" then
        raise(fmt("%s takes a table like { rate = 100, per = 1 }, got %s",
                  what, describe(opts)))
    end
    check_keys(opts, keys, what)
    local alg = opts.algorithm
    if alg == nil then alg = "sliding" end
    if alg ~= "sliding" and alg ~= "gcra" then
        raise(fmt('%s.algorithm must be "sliding" or "gcra", got %s', what,
                  describe(alg)))
    end
    if opts.rate == nil then
        raise(fmt("%s.rate is required (requests per `per` seconds)", what))
    end
    local rate = positive(opts.rate, what .. ".rate", nil,
                          " (requests per `per` seconds)")
    local per = positive(opts.per, what .. ".per", 1, " (seconds)")
    local burst = opts.burst
    if alg == "sliding" then
        if burst ~= nil then
            raise(fmt('%s.burst only applies to algorithm = "gcra"', what))
        end
        if rate < 1 then
            raise(fmt("%s.rate must be at least 1 for the sliding window, " ..
                      "got %s (for slower rates raise per: rate = 1, " ..
                      "per = %s)", what, num(rate), num(per / rate)))
        end
    else
        if burst == nil then
            burst = rate >= 1 and rate or 1
        elseif type(burst) ~= "number" or not (burst >= 1) or burst == huge then
            raise(fmt("%s.burst must be a number >= 1 (requests at once), " ..
                      "got %s", what, describe(burst)))
        end
    end
    local dict = opts.dict
    if dict == nil then dict = _M.DEFAULT_DICT end
    if DICT_NAME(dict) == nil then
        raise(fmt("%s.dict must be a shared dict name (1-64 letters, " ..
                  "digits, " ..
                  "'_', '-', '.'), got %s", what, describe(dict)))
    end
    local name = opts.name
    if name ~= nil and (type(name) ~= "string" or name == ""
                        or #name > 200) then
        raise(fmt("%s.name must be a non-empty string, got %s", what,
                  describe(name)))
    end
    local lim = setmetatable({
        algorithm = alg, rate = rate, per = per, burst = burst,
        dict = dict, name = name,
        -- RateLimit-Limit: what `remaining` counts down from
        limit = alg == "gcra" and burst or rate,
        _gcra = alg == "gcra",
        _d = false,             -- the dictionary, found on first use
    }, Limiter)
    if lim._gcra then
        lim._a, lim._b = per * 1000 / rate, burst   -- interval (ms), burst
    else
        lim._a, lim._b = rate, per * 1000            -- limit, window (ms)
    end
    -- The namespace of the limit's keys: its name, or its parameters (so
    -- that the same limit in every worker and every gateway of a cluster
    -- shares its counters; give `name` to keep two equal limits apart).
    if name then
        lim._ns = name .. ":"
    elseif lim._gcra then
        lim._ns = fmt("g%s/%s/%s:", num(rate), num(per), num(burst))
    else
        lim._ns = fmt("s%s/%s:", num(rate), num(per))
    end
    lim._nslen = #lim._ns
    if opts.redis ~= nil then
        build_redis(lim, opts, what)
    elseif opts.on_redis_error ~= nil or opts.fallback ~= nil then
        raise(fmt("%s.%s only applies with redis", what,
                  opts.fallback ~= nil and "fallback" or "on_redis_error"))
    end
    return lim
end


-- Deciding --------------------------------------------------------------------

local function open_dict(self)
    if not C then
        error("moongate.ratelimit: the moongate library is not loaded", 3)
    end
    local d = C.mg_ffi_shdict_open(self.dict, #self.dict,
                                   _M.DEFAULT_DICT_SIZE)
    if d == nil then
        error("moongate.ratelimit: cannot open shared dict '" .. self.dict ..
              "'", 3)
    end
    self._d = d
    return d
end

-- The local decision: allowed, remaining, reset (s), retry_after (s); or
-- nil and a reason.
local function local_allow(self, key, cost, now)
    local d = self._d
    if not d then d = open_dict(self) end
    local rc
    if self._gcra then
        rc = C.mg_ffi_shdict_gcra(d, self._ns, self._nslen, key, #key,
                                  self._a, self._b, cost, now, out)
    else
        rc = C.mg_ffi_shdict_sliding(d, self._ns, self._nslen, key, #key,
                                     self._a, self._b, cost, now, out)
    end
    if rc == 1 then
        return true, out.remaining, out.reset / 1000, 0
    elseif rc == 0 then
        return false, out.remaining, out.reset / 1000, out.retry_after / 1000
    end
    return nil, rc == -ENOMEM and "no memory" or "key too long"
end

local function redis_failed(self, key, cost, err)
    err = "redis: " .. tostring(err)
    local fb = self.fallback
    if fb then
        local ok, remaining, reset, retry = local_allow(fb, key, cost, -1)
        if ok ~= nil then
            return ok, remaining, reset, retry, err
        end
    end
    if self._deny then
        return false, 0, 1, 1, err
    end
    return true, nil, nil, 0, err
end

local function cluster_allow(self, key, cost)
    local ok, admitted, remaining, reset, retry = self.redis:eval(
        self._script, 1, self._rkey .. key, self._arg_a, self._arg_b,
        cost == 1 and "1" or num(cost))
    if ok and type(retry) == "number" then
        return admitted == 1, remaining, reset / 1000, retry / 1000
    end
    return redis_failed(self, key, cost, ok and "unexpected reply" or admitted)
end

local function key_string(key)
    if type(key) == "number" then
        return tostring(key)
    end
    error("rate limit key must be a string, got " .. type(key), 3)
end

--- limiter:allow(key [, cost]) -> allowed, remaining, reset, retry_after
-- [, err]. Counts the request (when allowed) against the limit of `key`.
-- remaining: requests left now; reset: seconds until the limit is whole
-- again (gcra) or the window ends (sliding); retry_after: seconds until a
-- refused request would pass (0 when allowed). Cluster mode only: when
-- Redis failed, the decision of the fallback or on_redis_error, with err
-- (with "allow" and no fallback, remaining and reset are nil). A local
-- failure (no memory) gives nil and a reason.
function Limiter:allow(key, cost)
    if type(key) ~= "string" then key = key_string(key) end
    if cost == nil then
        cost = 1
    elseif type(cost) ~= "number" or not (cost >= 0) or cost > self.limit then
        error(fmt("limiter:allow: cost must be a number 0-%s, got %s",
                  num(self.limit), describe(cost)), 2)
    end
    if self.redis then
        return cluster_allow(self, key, cost)
    end
    -- not a tail call: the JIT counts those against its unroll limit
    local ok, remaining, reset, retry = local_allow(self, key, cost, -1)
    return ok, remaining, reset, retry
end

--- limiter:allow_at(key, cost, now_ms): the local decision at a given time
-- (milliseconds on any clock that only moves forward): for tests and
-- simulations. Local mode only.
function Limiter:allow_at(key, cost, now)
    if type(key) ~= "string" then key = key_string(key) end
    if type(now) ~= "number" or not (now >= 0) then
        error("limiter:allow_at: now must be a number of milliseconds >= 0",
              2)
    end
    return local_allow(self, key, cost or 1, now)
end

--- limit.new(opts) -> limiter. opts: rate (required), per (s, default 1),
-- algorithm ("sliding" | "gcra"), burst (gcra; default rate), dict (shared
-- dict of the counters, default "ratelimit"), name (namespace; default
-- from the parameters), redis (cluster mode: "host:port" or { host, port,
-- password, db, pool, timeout, connect_timeout, prefix }), on_redis_error
-- ("allow" | "deny"), fallback ({ rate, per, ... } local limit used while
-- Redis fails). Made once, while the config loads; bad options raise an
-- error at the caller's line.
function _M.new(opts)
    return build(opts, "limit.new", LIMIT_KEYS)
end

-- limit.allow: limiters by options table, then by their content.
local by_table = setmetatable({}, { __mode = "k" })
local by_sig, nsig = {}, 0

local function signature(t, parts)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = tostring(k) end
    sort(keys)
    for _, k in ipairs(keys) do
        local v = t[k]
        if v == nil then v = t[tonumber(k)] end
        parts[#parts + 1] = k
        if type(v) == "table" then
            parts[#parts + 1] = "{"
            signature(v, parts)
            parts[#parts + 1] = "}"
        else
            parts[#parts + 1] = type(v) .. ":" .. tostring(v)
        end
    end
    return parts
end

--- limit.allow(key, opts [, cost]) -> as limiter:allow. The limiter for
-- opts is made on first use and reused (by the table, else by its
-- content): hoist opts out of the hook, or better use limit.new.
function _M.allow(key, opts, cost)
    local lim = by_table[opts]
    if not lim then
        if type(opts) ~= "table" then
            raise("limit.allow(key, opts): opts must be a table like " ..
                  "{ rate = 100, per = 1 }, got " .. describe(opts))
        end
        local sig = concat(signature(opts, {}), "\0")
        lim = by_sig[sig]
        if not lim then
            lim = build(opts, "limit.allow", LIMIT_KEYS)
            if nsig >= 1000 then by_sig, nsig = {}, 0 end
            by_sig[sig], nsig = lim, nsig + 1
        end
        by_table[opts] = lim
    end
    if type(key) ~= "string" then key = key_string(key) end
    return lim:allow(key, cost)
end


-- Keys ------------------------------------------------------------------------

_M.key = {}

--- limit.key.client_ip(req): the client's address.
function _M.key.client_ip(req)
    return req.client
end

--- limit.key.jwt_sub(req): the `sub` claim verified by the jwt policy
-- (req.ctx.jwt), else "ip:" and the client's address.
function _M.key.jwt_sub(req)
    local claims = req.ctx.jwt
    local sub = claims and claims.sub
    if sub ~= nil then
        return type(sub) == "string" and sub or tostring(sub)
    end
    return "ip:" .. req.client
end

--- limit.key.route(req): the route's name (one limit for the whole route).
function _M.key.route(req)
    return req.route
end

--- limit.key.header(name) -> a key function: the value of that request
-- header, else "ip:" and the client's address.
function _M.key.header(name)
    local lname = HEADER_NAME(name)
    if not lname then
        raise("limit.key.header(name): name must be a header name, got " ..
              describe(name))
    end
    name = lname
    return function(req)
        return req:header(name) or "ip:" .. req.client
    end
end


-- The bundled policy ----------------------------------------------------------

local respond                   -- moongate.runtime.respond, on first use

local function int_str(n)
    if n < 1e14 then return tostring(n) end
    return fmt("%.0f", n)
end

-- Seconds for a header, rounded up; a float error of the clock arithmetic
-- (10.0000000001) must not add a second.
local function header_seconds(s)
    return int_str(ceil(s - 1e-6))
end

-- The RateLimit-* numbers of the most restrictive limit go in req.ctx
-- (ratelimit_limit, ratelimit_remaining, ratelimit_reset).
local function note(ctx, limit, remaining, reset)
    local old = ctx.ratelimit_remaining
    if old == nil or remaining < old then
        ctx.ratelimit_limit = limit
        ctx.ratelimit_remaining = remaining
        ctx.ratelimit_reset = reset
    end
end

--- limit.policy(opts) -> a route policy: the options of limit.new plus
-- key (function(req) -> key or nil to skip; default limit.key.client_ip),
-- headers (default true: RateLimit-Limit/-Remaining/-Reset on every
-- answer of the route), status (default 429), body (string or table;
-- default a JSON error with the request id). Refused requests get status,
-- body and Retry-After.
-- The policy a config gets for options that were refused: the load fails
-- anyway (config.report), this only lets the file run on to its end.
local REFUSED = { name = "ratelimit", on_request = function()
    error("limit.policy: its options were refused", 2)
end }

function _M.policy(opts)
    -- every mistake of the call, not only the first (config.report)
    local msgs, known = {}, opts
    if type(opts) == "table" then
        msgs = base.unknown_keys(opts, POLICY_NAMES, "limit.policy")
        if msgs[1] then
            known = {}
            for _, k in ipairs(POLICY_KEYS) do known[k] = opts[k] end
        end
    end
    local ok, lim = pcall(build, known, "limit.policy", POLICY_KEYS)
    if not ok then
        -- raise() put the user's "file:line: " in front: the site says it
        msgs[#msgs + 1] = (gsub(tostring(lim), "^[^\n]-:%d+: ", "", 1))
    end
    if type(opts) ~= "table" then opts = {} end
    local keyfn = opts.key
    if keyfn == nil then keyfn = _M.key.client_ip end
    if type(keyfn) ~= "function" then
        msgs[#msgs + 1] = "limit.policy.key must be a function(req) " ..
            "returning the key (see limit.key), got " .. describe(keyfn)
    end
    local headers = opts.headers
    if headers == nil then headers = true end
    if type(headers) ~= "boolean" then
        msgs[#msgs + 1] = "limit.policy.headers must be a boolean, got " ..
            describe(headers)
    end
    local status = opts.status or 429
    if type(status) ~= "number" or status % 1 ~= 0 or status < 400
        or status > 599 then
        msgs[#msgs + 1] = "limit.policy.status must be an integer 400-599, " ..
            "got " .. describe(status)
    end
    local body = opts.body
    if body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
        msgs[#msgs + 1] = "limit.policy.body must be a string or a table, " ..
            "got " .. describe(body)
    end
    if msgs[1] then
        if config.report(msgs) then return REFUSED end
        raise(msgs[1])
    end

    local function refuse(req, remaining, reset, retry)
        local h = { ["Retry-After"] = retry > 1 and header_seconds(retry) or "1" }
        if headers and remaining then
            h["RateLimit-Limit"] = int_str(lim.limit)
            h["RateLimit-Remaining"] = int_str(remaining)
            h["RateLimit-Reset"] = header_seconds(reset)
        end
        local b = body or { error = "too many requests", status = status,
                            request_id = req.id }
        if not respond then respond = require("moongate.runtime").respond end
        return respond(status, b, h)
    end

    local p = { name = "ratelimit", limiter = lim }

    function p.on_request(req)
        local key = keyfn(req)
        if key == nil then return end
        local ok, remaining, reset, retry, err = lim:allow(key)
        if ok == nil then           -- local failure (no memory): let it pass
            return
        end
        if headers and remaining then
            note(req.ctx, lim.limit, remaining, reset)
        end
        if not ok then
            return refuse(req, remaining, reset, retry)
        end
    end

    if headers then
        function p.on_response(req, res)
            local ctx = req.ctx
            local remaining = ctx.ratelimit_remaining
            if remaining == nil or ctx.ratelimit_sent then return end
            ctx.ratelimit_sent = true
            res:set_header("RateLimit-Limit", int_str(ctx.ratelimit_limit))
            res:set_header("RateLimit-Remaining", int_str(remaining))
            res:set_header("RateLimit-Reset",
                           header_seconds(ctx.ratelimit_reset))
        end
    end

    return p
end

return _M
