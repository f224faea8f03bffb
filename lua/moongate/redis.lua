-- moongate.redis: Redis commands from hooks, on the worker's own loop
-- (src/redis.c: hiredis's reader and formatter over a transport of our own,
-- plain TCP or TLS; a small pool of connections per worker, timeouts,
-- reconnection with backoff).
--
--   local redis = require "moongate.redis"
--   local r = redis.new { host = "127.0.0.1", port = 6379, timeout = 0.2 }
--
--   gw.on_request = function(req)
--       local ok, n = r:command("INCR", "hits")   -- the hook waits, the
--       if not ok then gw.log("warn", n) end      -- worker does not
--   end
--
--   local r = redis.new "rediss://limiter:secret@redis.example.com:6380/0"
--   local r = redis.new { url = "rediss://...", tls = { ca = "ca.pem" } }
--
-- A client is made once, while the config loads (its settings are checked
-- there, and a TLS client's CA and certificate files read); each worker
-- connects on first use. Commands return true and the
-- reply (an array reply as one value per element, integers as numbers, a
-- nil reply as nil), or nil and a reason ("timeout", "connect timeout",
-- "redis unavailable: <why>", an error reply's text). While the server is
-- down, commands fail at once instead of waiting; each worker tries to
-- connect again in the background after 50 ms, backing off to 1 s, and the
-- client works again as soon as the server answers.

local ffi = require "ffi"

local type, tostring, error, select, setmetatable, pcall, ipairs, pairs, tonumber =
    type, tostring, error, select, setmetatable, pcall, ipairs, pairs, tonumber
local ffi_string = ffi.string
local fmt, match, find, gsub, char = string.format, string.match, string.find,
    string.gsub, string.char
local yield = coroutine.yield

ffi.cdef [[
typedef struct mg_redis_s mg_redis_t;
typedef struct mg_tls_client_s mg_tls_client_t;
mg_redis_t *mg_ffi_redis_client(const char *host, size_t host_len, int port, const char *username,
                                size_t username_len, const char *password, size_t password_len,
                                int db, int pool, double connect_timeout, double timeout,
                                mg_tls_client_t *tls, const char **err);
mg_tls_client_t *mg_ffi_tls_client_new(int verify, const char *ca, const char *sni,
                                       const char *cert, const char *key,
                                       const char *min_version, const char *ciphers,
                                       int session_reuse, const char *label, char *err,
                                       size_t errlen);
void mg_ffi_tls_client_release(mg_tls_client_t *c);
int mg_ffi_redis_script(mg_redis_t *rs, const char *src, size_t len);
int mg_ffi_redis_command(mg_redis_t *rs, int argc, const char **argv, const size_t *argvlen,
                         const char **err);
int mg_ffi_redis_eval(mg_redis_t *rs, int script, int nkeys, int argc, const char **argv,
                      const size_t *argvlen, const char **err);
int mg_ffi_redis_up(mg_redis_t *rs);
]]

local _M = {}

local WAIT = 2                  -- what a hook yields to wait (runtime.lua)
local MAX_ARGS = 32             -- MAX_ARGS of src/redis.c
local EDOWN = -40               -- MG_REDIS_EDOWN

-- The binary exports the symbols (-Wl,-E); specs load the test library.
local C = require("moongate.clib").load("mg_ffi_redis_client")

-- scratch arguments of this Lua state: C copies them during the call
local argv = ffi.new("const char *[?]", MAX_ARGS)
local lens = ffi.new("size_t[?]", MAX_ARGS)
local errp = ffi.new("const char *[1]")
local keep = {}     -- strings made from numbers: alive during the call


-- Option errors are blamed on the user's line and read like the config's.
local base = require "moongate.base"
local raise, describe, check_keys = base.raise, base.describe, base.check_keys
local config = require "moongate.config" -- client_tls: upstream.tls's checks

-- The options, their ranges and defaults: src/config.c's "redis" schema,
-- which also copies route.cache.redis into C.
local cdefs = require "moongate.cdefs"
local FIELDS = cdefs.config_fields("redis")
local KEYS, CHECKS, DEFAULTS = {}, {}, {}
for i, f in ipairs(FIELDS) do
    KEYS[i] = f.name
    CHECKS[f.name] = base.value_check(f, cdefs) -- nil: checked by hand
    DEFAULTS[f.name] = f.def
end

-- The option `name` of `opts` (or its default), checked by the schema;
-- raises when it is not valid.
local function option(opts, what, name)
    local v = opts[name]
    if v == nil then
        return DEFAULTS[name]
    end
    local out, expected = CHECKS[name](v)
    if out == nil then
        raise(fmt("%s.%s %s, got %s", what, name, expected, describe(v)))
    end
    return out
end

-- Copies the numeric options of `opts` (or their defaults) into `out`,
-- raising at the first that is out of range.
local function numbers(opts, what, out)
    for _, f in ipairs(FIELDS) do
        if f.kind == cdefs.FIELD_INT or f.kind == cdefs.FIELD_SECONDS then
            out[f.name] = option(opts, what, f.name)
        end
    end
    return out
end

--- The options a client takes (policies that wrap one add their own).
_M.KEYS = KEYS

local URL_EXAMPLE = '"rediss://user:password@host:6380/0"'
local URL_KEYS = { "host", "port", "username", "password", "db" }

-- A URL as messages show it: the password never (its length neither).
local function shown_url(url)
    return describe((gsub(url, "^(%a+://[^:@/]*:)[^@/]*@", "%1***@")))
end

local function unescape(s)
    return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- opts with its url ("redis[s]://[[user]:password@]host[:port][/db]")
-- read into host, port, username, password and db (a copy; tls = true
-- for rediss:// unless opts.tls says more), raising when it is not one.
local function from_url(opts, what)
    local url = opts.url
    if type(url) ~= "string" then
        raise(fmt("%s.url must be a string like %s, got %s", what, URL_EXAMPLE,
                  describe(url)))
    end
    for _, k in ipairs(URL_KEYS) do
        if opts[k] ~= nil then
            raise(fmt("%s: give url or %s, not both (the url holds host, port, " ..
                      "username, password and db)", what, k))
        end
    end
    local scheme, rest = match(url, "^(rediss?)://(.*)$")
    local userinfo, hostport, db = nil, rest, nil
    if rest then
        local at = find(rest, "@[^@]*$")
        if at then
            userinfo, hostport = rest:sub(1, at - 1), rest:sub(at + 1)
        end
        local path
        hostport, path = match(hostport, "^([^/?#]*)(.*)$")
        db = match(path, "^/?(%d*)$")
    end
    local host, port = nil, "6379"
    if db and hostport ~= "" then
        host, port = match(hostport, "^(%[[^%]]+%]):?(%d*)$")
        if not host then
            host, port = match(hostport, "^([^:%[%]]+):?(%d*)$")
        end
        port = port ~= "" and port or "6379"
    end
    if not host then
        raise(fmt("%s.url must be a URL like %s (db, port and user optional), got %s",
                  what, URL_EXAMPLE, shown_url(url)))
    end
    local out = {}
    for k, v in pairs(opts) do
        if k ~= "url" then out[k] = v end
    end
    out.host, out.port = unescape(host), tonumber(port)
    if db ~= "" then out.db = tonumber(db) end
    if userinfo then
        local user, pass = match(userinfo, "^([^:]*):(.*)$")
        if not user then
            raise(fmt("%s.url has a user and no password (write %s, or " ..
                      '":password@" for the default user)', what, URL_EXAMPLE))
        end
        out.username = user ~= "" and unescape(user) or nil
        out.password = unescape(pass)
    end
    if scheme == "rediss" then
        if out.tls == nil then out.tls = true end
    elseif out.tls ~= nil then
        raise(fmt("%s.tls needs a rediss:// url (redis:// is plain TCP)", what))
    end
    return out
end

-- The TLS configuration of `opts.tls` (checked like upstream.tls): the
-- normalised options and the C configuration (nil without the library).
local function tls_config(opts, what, host, port)
    local out, msgs = config.client_tls(opts.tls, what .. ".tls", what)
    if not out then
        raise(msgs[1])
    end
    if not C then return out, nil end
    local errbuf = ffi.new("char[512]")
    local ctx = C.mg_ffi_tls_client_new(out.verify and 1 or 0, out.ca, out.sni, out.cert,
                                        out.key, out.min_version, out.ciphers,
                                        out.session_reuse and 1 or 0,
                                        fmt("redis %s:%d", host, port), errbuf, 512)
    if ctx == nil then
        raise(fmt("%s.tls: %s", what, ffi_string(errbuf)))
    end
    return out, ffi.gc(ctx, C.mg_ffi_tls_client_release)
end

local Client = {}
Client.__index = Client

--- redis.new(opts [, what]) -> client. opts: a table { host = "127.0.0.1",
-- port = 6379, password = nil, username = nil (a Redis 6 ACL user: AUTH
-- username password), db = 0, pool = 2 (connections per worker),
-- timeout = 0.2 (s, per command), connect_timeout = 1 (s), tls = nil
-- (true or upstream.tls's table: TLS, as managed services want) }, url
-- ("redis[s]://[[user]:password@]host[:port][/db]", rediss:// is TLS) in
-- place of host to db, or a string: such a URL, or "host:port". Bad
-- options raise an error at the caller's line.
function _M.new(opts, what)
    what = what or "redis.new"
    if type(opts) == "string" then
        if find(opts, "^%a+://") then
            opts = { url = opts }
        else
            local host, port = match(opts, "^%[?([^%[%]]+)%]?:(%d+)$")
            if not host then
                raise(fmt('%s must be "host:port", a URL like %s or a table, got %s', what,
                          URL_EXAMPLE, describe(opts)))
            end
            opts = { host = host, port = tonumber(port) }
        end
    elseif type(opts) ~= "table" then
        raise(fmt('%s takes a table like { host = "127.0.0.1", port = 6379 }' ..
                  ", got %s", what, describe(opts)))
    end
    check_keys(opts, KEYS, what)
    if opts.url ~= nil then
        opts = from_url(opts, what)
    end
    local host = option(opts, what, "host")
    local username = option(opts, what, "username")
    if username ~= nil and opts.password == nil then
        raise(fmt("%s.username needs password (AUTH username password)", what))
    end
    -- the password's value is never shown (its type is)
    local password = opts.password
    if password ~= nil and (type(password) ~= "string" or password == ""
                            or find(password, "%z")) then
        raise(fmt("%s.password must be a non-empty string, got %s", what,
                  type(password)))
    end
    local self = numbers(opts, what, {
        host = host,
        password = password,
        username = username,
        tls = nil,              -- the TLS options, normalised (nil: plain)
        _tls = nil,             -- their C configuration
        _rs = false,            -- this worker's C client, made on first use
        _scripts = {},          -- script source -> number in this worker
    })
    if opts.tls ~= nil then
        self.tls, self._tls = tls_config(opts, what, host, self.port)
    end
    return setmetatable(self, Client)
end

-- This worker's C client, or nil and a reason.
local function handle(self)
    local rs = self._rs
    if rs then return rs end
    if not C then return nil, "no moongate library" end
    local pw, user = self.password, self.username
    rs = C.mg_ffi_redis_client(self.host, #self.host, self.port, user,
                               user and #user or 0, pw, pw and #pw or 0, self.db, self.pool,
                               self.connect_timeout, self.timeout, self._tls, errp)
    if rs == nil then
        return nil, ffi_string(errp[0])
    end
    self._rs = rs
    return rs
end

local function fill(first, ...)
    local n = select("#", ...)
    if first + n > MAX_ARGS then
        return nil
    end
    for i = 1, n do
        local v = select(i, ...)
        if type(v) ~= "string" then
            if type(v) ~= "number" then
                return nil, i
            end
            v = tostring(v)
            keep[#keep + 1] = v
        end
        argv[first + i - 1] = v
        lens[first + i - 1] = #v
    end
    return first + n
end

local function failed(rc)
    local why = ffi_string(errp[0])
    if rc == EDOWN then
        return nil, "redis unavailable: " .. why
    end
    return nil, why
end

--- client:command(name, args...) -> true, reply... | nil, reason. Waits for
-- the reply without blocking the worker: hooks only. Arguments are strings
-- or numbers.
function Client:command(...)
    local rs, err = handle(self)
    if not rs then return nil, err end
    local n, bad = fill(0, ...)
    if not n or n == 0 then
        for i = #keep, 1, -1 do keep[i] = nil end
        if bad then
            error(fmt("redis command argument #%d must be a string or a " ..
                      "number", bad), 2)
        end
        error("redis command takes 1-32 arguments", 2)
    end
    local rc = C.mg_ffi_redis_command(rs, n, argv, lens, errp)
    for i = #keep, 1, -1 do keep[i] = nil end
    if rc ~= 0 then
        return failed(rc)
    end
    return yield(WAIT)
end

--- client:eval(source, nkeys, keys_and_args...) -> true, reply... | nil,
-- reason. Runs the Lua script by its SHA-1 (EVALSHA; the source is sent
-- once when the server does not know it). Hooks only.
function Client:eval(src, nkeys, ...)
    local rs, err = handle(self)
    if not rs then return nil, err end
    local idx = self._scripts[src]
    if not idx then
        if type(src) ~= "string" or src == "" then
            error("redis eval: the script must be a non-empty string", 2)
        end
        idx = C.mg_ffi_redis_script(rs, src, #src)
        if idx < 0 then return nil, "cannot register the script" end
        self._scripts[src] = idx
    end
    local n, bad = fill(0, ...)
    if not n then
        for i = #keep, 1, -1 do keep[i] = nil end
        if bad then
            error(fmt("redis eval argument #%d must be a string or a " ..
                      "number", bad + 2), 2)
        end
        error("redis eval takes at most 32 keys and arguments", 2)
    end
    if type(nkeys) ~= "number" or nkeys < 0 or nkeys > n or nkeys % 1 ~= 0 then
        error("redis eval: nkeys must be an integer 0-" .. n, 2)
    end
    local rc = C.mg_ffi_redis_eval(rs, idx, nkeys, n, argv, lens, errp)
    for i = #keep, 1, -1 do keep[i] = nil end
    if rc ~= 0 then
        return failed(rc)
    end
    return yield(WAIT)
end

--- client:up() -> false while the server is known to be down (commands
-- fail at once), true otherwise.
function Client:up()
    local rs = handle(self)
    return rs ~= nil and C.mg_ffi_redis_up(rs) == 1
end

return _M
