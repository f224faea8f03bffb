-- moongate.config: runs a config file, validates it whole and returns the
-- normalised table described in docs/config-dsl.md.
--
-- The public DSL (gw.settings, gw.listen, gw.upstream, gw.route,
-- gw.shared_dict, gw.on_*)
-- lives in lua/moongate/init.lua and only forwards here. Each load() call
-- gets a fresh collector; the DSL always writes into the collector of the
-- load in progress, so one Lua state can load (and reload) any number of
-- times. Every declaration is checked when it is made (that is when its line
-- is known); cross-declaration checks (upstream names, duplicates, listeners)
-- run once the file has finished.

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring,
    tonumber
local select, setmetatable, setfenv = select, setmetatable, setfenv
local xpcall, loadfile, error = xpcall, loadfile, error
local fmt, sub, byte, find, match, gsub, lower, upper =
    string.format, string.sub, string.byte, string.find, string.match,
    string.gsub, string.lower, string.upper
local concat, sort = table.concat, table.sort
local floor, huge = math.floor, math.huge
local getinfo = debug.getinfo
local budget = require "moongate.budget"
local base = require "moongate.base"
local ffi = require "ffi"
local cdefs = require "moongate.cdefs"
local C = cdefs.C     -- mg_ffi_route_pattern


local _M = {}

local MAX_METHODS = 16          -- MG_MAX_METHODS (src/config.h)
local MAX_UPGRADES = 8          -- MG_MAX_UPGRADES (src/config.h)
local MAX_HEADERS = 8           -- MG_MAX_ROUTE_HEADERS (src/config.h)
local MAX_INT = 2 ^ 53          -- largest integer a double holds exactly

local current                   -- collector of the load in progress, or nil
local last                      -- collector of the last successful load


-- Where the DSL is called from --------------------------------------------

-- Sources ("@dir/") whose frames are never the user's: moongate's own Lua.
local skip_dirs = {}

--- Marks the directory of Lua source `source` (a debug.getinfo source,
-- "@.../moongate/x.lua") as moongate's own: frames there are never blamed.
function _M.skip_source_dir(source)
    local dir = match(source, "^(@.*[/\\])")
    if dir then
        skip_dirs[dir] = true
    end
end

_M.skip_source_dir(getinfo(1, "S").source)

local function is_ours(source)
    for dir in pairs(skip_dirs) do
        if sub(source, 1, #dir) == dir then
            return true
        end
    end
    return false
end

-- Nearest Lua frame up the stack that is not moongate's own code: the
-- config line that made the call (or a helper function in the user's files).
local function where()
    local level = 2
    while true do
        local info = getinfo(level, "Sl")
        if not info then
            return nil, 0
        end
        if info.what ~= "C" and info.currentline > 0
            and not is_ours(info.source) then
            -- "@file" as is; a chunk loaded from a string by its short name
            local source = info.source
            if sub(source, 1, 1) ~= "@" then
                source = "=" .. info.short_src
            end
            return source, info.currentline
        end
        level = level + 1
    end
end


-- Collector and errors -----------------------------------------------------

local function new_collector(file)
    return {
        file = file,
        errors = {},
        settings = nil,         -- site of the gw.settings call
        settings_value = nil,   -- its normalised settings
        listeners = {},
        nlisten = 0,            -- gw.listen calls, good or bad
        upstreams = {},
        upstream_by_name = {},
        routes = {},
        shared_dicts = {},
        shared_dict_by_name = {},
        hooks = {},             -- "on_request" = function, ...
        tests = {},             -- gw.test declarations
        extra = {},             -- other fields assigned to gw
    }
end

-- A declaration site: collector, source and line of one gw.* call.
local function site(c)
    local source, line = where()
    return { c = c, source = source, line = line }
end

local function err(d, msg, ...)
    if select("#", ...) > 0 then
        msg = fmt(msg, ...)
    end
    local errors = d.c.errors
    d.bad = true                -- keeps it out of the cross checks
    errors[#errors + 1] = {
        source = d.source, line = d.line, msg = msg, seq = #errors + 1,
    }
end

local function source_name(c, source)
    if source == nil then
        return c.file
    end
    if source == "@" .. c.file then
        return c.file
    end
    if sub(source, 1, 1) == "@" or sub(source, 1, 1) == "=" then
        return sub(source, 2)
    end
    return source
end

-- "at line 7" or "at other.lua:7" when the other site is in another file.
local function at(d, other)
    if other.source == d.source then
        return "line " .. other.line
    end
    return source_name(d.c, other.source) .. ":" .. other.line
end

local function format_errors(c)
    local errors = c.errors
    sort(errors, function(a, b)
        local sa, sb = a.source or "", b.source or ""
        if sa ~= sb then
            -- the config file itself first, then the files it pulled in
            if a.source == "@" .. c.file then return true end
            if b.source == "@" .. c.file then return false end
            return sa < sb
        end
        if a.line ~= b.line then
            return a.line < b.line
        end
        return a.seq < b.seq
    end)
    local out = {}
    for i, e in ipairs(errors) do
        -- one error per line: fold multi-line messages (nested tracebacks)
        local msg = gsub(e.msg, "%s*\n%s*", " ")
        out[i] = fmt("%s:%d: %s", source_name(c, e.source), e.line, msg)
    end
    return out
end


-- Describing values and suggesting names (moongate.base) -------------------

local quote, describe, key_str, did_you_mean, sorted_keys, copy =
    base.quote, base.describe, base.key_str, base.did_you_mean,
    base.sorted_keys, base.copy

--- base.unknown_keys, kept here for the policies that read it from config.
_M.unknown_keys = base.unknown_keys

-- Reports every key of `t` that is not in the list `valid`.
local function check_keys(d, t, valid, what)
    for _, msg in ipairs(_M.unknown_keys(t, valid, what)) do
        err(d, "%s", msg)
    end
end

--- For constructors called from a config file (jwt.policy, limit.policy):
-- while a config loads, records each message of the list `msgs` at the
-- user's line that made the call and returns true, so that the file runs
-- on and every mistake in it is reported at once (the load fails). Outside
-- a load returns false: the caller raises as usual.
function _M.report(msgs)
    if not current then
        return false
    end
    local d = site(current)
    for _, msg in ipairs(msgs) do
        err(d, "%s", msg)
    end
    return true
end


-- Value checkers: return the normalised value, or nil and what is expected --

local function is_int(v)
    return type(v) == "number" and v % 1 == 0 and v >= -MAX_INT
        and v <= MAX_INT
end

local function int_range(lo, hi, expected)
    return function(v)
        if is_int(v) and v >= lo and v <= hi then
            return v
        end
        return nil, expected
    end
end

local SIZE_EXPECTED =
    'must be a size: bytes as an integer, or a string like "32k", "10m", "1g"'
local SIZE_UNITS = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }

--- Parses a size: an integer number of bytes or a string "<digits>[kmg]"
-- (case-insensitive). Returns bytes, or nil and what is expected.
function _M.parse_size(v)
    local n
    if type(v) == "number" then
        n = v
    elseif type(v) == "string" then
        local digits, unit = match(v, "^(%d+)([kKmMgG]?)$")
        if digits then
            n = tonumber(digits) * SIZE_UNITS[lower(unit)]
        end
    end
    if n and is_int(n) and n >= 0 then
        return n
    end
    return nil, SIZE_EXPECTED
end

local function size_min(lo)
    return function(v)
        local n, why = _M.parse_size(v)
        if n and n < lo then
            return nil, fmt("must be at least %d bytes", lo)
        end
        return n, why
    end
end

local TIME_EXPECTED = "must be a positive number of seconds (fractions allowed)"

--- Parses a time in seconds (a number, fractions allowed) into integer
-- milliseconds >= 1. Returns ms, or nil and what is expected.
function _M.parse_time(v)
    if type(v) == "number" and v > 0 and v < huge then
        local ms = floor(v * 1000 + 0.5)
        if ms >= 1 and ms <= MAX_INT then
            return ms
        end
    end
    return nil, TIME_EXPECTED
end

-- Checks key `key` of `t` with `check`; reports "<prefix>.<key> <expected>,
-- got <value>". Returns the normalised value, or nil (absent or bad).
local function field(d, t, key, prefix, check)
    local v = t[key]
    if v == nil then
        return nil
    end
    local out, expected = check(v)
    if out == nil then
        err(d, "%s.%s %s, got %s", prefix, key, expected, describe(v))
    end
    return out
end

local function is_ipv4(s)
    local a, b, c, e = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return false
    end
    for _, o in ipairs({ a, b, c, e }) do
        if #o > 3 or tonumber(o) > 255 then
            return false
        end
    end
    return true
end

local function is_ipv6(s)
    if not find(s, ":", 1, true) or find(s, "[^%x:%.]") or #s > 45 then
        return false
    end
    local _, ncolon = gsub(s, ":", "")
    local _, ndouble = gsub(s, "::", "")
    return ncolon >= 2 and ncolon <= 7 and ndouble <= 1
        and not find(s, ":::", 1, true)
end

-- Host names: labels of letters, digits, '-' and '_' (container names),
-- not starting or ending with '-'; a trailing '.' (fully qualified) is ok.
local function is_hostname(s)
    if #s == 0 or #s > 254 then
        return false
    end
    if sub(s, -1) == "." then
        s = sub(s, 1, -2)
    end
    for label in (s .. "."):gmatch("([^.]*)%.") do
        if #label == 0 or #label > 63 or find(label, "[^%w%-_]")
            or sub(label, 1, 1) == "-" or sub(label, -1) == "-" then
            return false
        end
    end
    return true
end

local function is_host(s)
    return is_ipv4(s) or is_ipv6(s) or (not match(s, "^[%d.]+$")
        and is_hostname(s))
end

local HOST_EXPECTED = "must be an IP address or a host name"

local function check_listen_host(v)
    if type(v) == "string" then
        local h = match(v, "^%[(.*)%]$") or v
        if is_ipv4(h) or is_ipv6(h) or (h == v and is_host(h)) then
            return h
        end
    end
    return nil, HOST_EXPECTED
end

local ADDR_EXPECTED = 'must be "host:port" or "[ipv6]:port"'

-- Parses "host:port" / "[v6]:port" into host, port.
local function parse_addr(v)
    if type(v) ~= "string" then
        return nil, ADDR_EXPECTED
    end
    local host, port = match(v, "^%[([^%]]*)%]:(.*)$")
    if host then
        if not is_ipv6(host) then
            return nil, ADDR_EXPECTED .. " (bad IPv6 address)"
        end
    else
        host, port = match(v, "^(.*):([^:]*)$")
        if not host then
            return nil, ADDR_EXPECTED .. ' (missing ":port")'
        end
        if find(host, ":", 1, true) then
            return nil, ADDR_EXPECTED .. " (IPv6 addresses need [brackets])"
        end
        if host == "" then
            return nil, ADDR_EXPECTED .. " (missing host)"
        end
        if not is_host(host) then
            return nil, ADDR_EXPECTED .. " (bad host)"
        end
    end
    local p = match(port, "^%d+$") and tonumber(port)
    if not p or p < 1 or p > 65535 then
        return nil, ADDR_EXPECTED .. " (port 1-65535)"
    end
    return host, p
end

-- Route host: a name, an IP, or "*.name"; normalised to lower case.
local function check_route_host(v)
    if type(v) == "string" then
        local h = lower(v)
        local rest = match(h, "^%*%.(.+)$")
        if (rest and is_hostname(rest)) or (not rest and is_host(h)) then
            return h
        end
    end
    return nil, 'must be a host name, optionally with a leading "*." ' ..
        '(like "api.example.com" or "*.example.com")'
end

local HTTP_METHODS = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
    "CONNECT", "COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH",
    "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT",
    "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
    "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY",
}
local IS_METHOD = {}
for _, m in ipairs(HTTP_METHODS) do
    IS_METHOD[m] = true
end

local function is_token(s)
    return #s > 0 and not find(s, "[^%w!#%$%%&'%*%+%-%.%^_`|~]")
end

-- Parses a path pattern (or a rewrite template, which has the same shape)
-- with the router's own parser (src/router.c, mg_ffi_route_pattern).
-- Returns info { params = set, names = list, star = "**" at the end,
-- prefix = trailing '/', literal = the literal leading part }, or nil, why.
local pattern_info = ffi.new("mg_ffi_pattern_t")
local pattern_why = ffi.new("char[256]")

local function parse_pattern(p)
    if C.mg_ffi_route_pattern(p, #p, pattern_info, pattern_why, 256) ~= 0 then
        return nil, ffi.string(pattern_why)
    end
    local pi = pattern_info
    local info = { params = {}, names = {}, star = pi.star ~= 0,
                   prefix = pi.prefix ~= 0,
                   literal = sub(p, 1, tonumber(pi.literal_len)) }
    for i = 0, pi.nparams - 1 do
        local off = tonumber(pi.param_off[i])
        local name = sub(p, off + 1, off + tonumber(pi.param_len[i]))
        info.params[name] = true
        info.names[#info.names + 1] = name
    end
    return info
end


-- Declarations -------------------------------------------------------------

local TLS_KEYS = { "cert", "key", "certs", "min_version", "ciphers" }
local TLS_CERT_KEYS = { "cert", "key" }
-- what a route's cache stores when it says only `cache = true` (besides
-- the scalar defaults of src/config.c): the statuses RFC 9111 lets a cache
-- keep without explicit freshness
local DEFAULT_CACHE = { statuses = { 200, 203, 300, 301, 308, 404, 410 },
                        vary = {}, dict = "cache" }
local CACHE_DICT_SIZE = 32 * 1024 * 1024 -- "cache" when not declared
local MAX_CACHE_STATUSES, MAX_CACHE_VARY = 16, 8


local check_time = _M.parse_time

local function check_bool(expected)
    return function(v)
        if type(v) == "boolean" then
            return v
        end
        return nil, expected
    end
end

local function time_or_zero(v)
    if v == 0 then
        return 0
    end
    return _M.parse_time(v)
end

-- The scalar fields of config object `object` as src/config.c declares them
-- (mg_ffi_config_fields), which also copies them into C: { keys = the key
-- list, in order; defaults = name -> value; checks = name -> checker;
-- fields = the names that have a checker, in order, but the ENUMs, which
-- callers read where their messages have always come }. An ENUM's checker
-- asks the C parser (settings.log_level: src/errlog.c, escaped_slashes:
-- src/uri.c) and gives the canonical name.
local function enum(parse, expected)
    return function(v)
        local name = type(v) == "string" and not find(v, "%z") and parse(v)
        if name then
            return name
        end
        return nil, expected
    end
end

local function string_min(lo, expected)
    return function(v)
        if type(v) == "string" and #v >= lo then
            return v
        end
        return nil, expected
    end
end

local function number_range(lo, hi, expected)
    return function(v)
        if type(v) == "number" and v >= lo and v <= hi then
            return v
        end
        return nil, expected
    end
end

local function schema(object)
    local s = { keys = {}, defaults = {}, checks = {}, fields = {} }
    for _, f in ipairs(cdefs.config_fields(object)) do
        local name, kind, lo = f.name, f.kind, f.min
        local check
        if kind == cdefs.FIELD_SIZE then
            check = lo > 0 and size_min(lo) or _M.parse_size
        elseif kind == cdefs.FIELD_TIME then
            check = lo == 0 and time_or_zero or check_time
        elseif kind == cdefs.FIELD_INT then
            check = int_range(lo, f.max, f.expected)
        elseif kind == cdefs.FIELD_BOOL then
            check = check_bool(f.expected or "must be true or false")
        elseif kind == cdefs.FIELD_ENUM then
            check = enum(f.parse, f.expected)
        elseif kind == cdefs.FIELD_STRING then
            check = string_min(lo, f.expected)
        elseif kind == cdefs.FIELD_NUMBER then
            check = number_range(lo, f.max, f.expected)
        end
        s.keys[#s.keys + 1] = name
        if check then
            s.checks[name] = check
            if kind ~= cdefs.FIELD_ENUM then
                s.fields[#s.fields + 1] = name
            end
            s.defaults[name] = f.def
        end
    end
    return s
end

-- Reads every schema field of `t` into `out` (left as is when absent).
local function fields(d, t, out, sc, prefix)
    for _, k in ipairs(sc.fields) do
        local v = field(d, t, k, prefix, sc.checks[k])
        if v ~= nil then
            out[k] = v
        end
    end
end

local SETTINGS, LIMITS, TIMEOUTS = schema("settings"), schema("limits"),
    schema("timeouts")
local UPSTREAM, TARGET, HEALTH = schema("upstream"), schema("target"),
    schema("health")
local SHARED_DICT, CACHE = schema("shared_dict"), schema("cache")
local ADMIN, LISTEN, ROUTE = schema("admin"), schema("listen"), schema("route")
local RETRIES, BACKOFF = schema("retries"), schema("backoff")
local OUTLIER, ROUTE_TIMEOUTS = schema("outlier"), schema("route_timeouts")


local function check_access_log(v)
    if type(v) == "string" and v ~= "" and not find(v, "%z") then
        return v
    end
    return nil, 'must be "off", "stdout", "stderr" or a file path'
end

local function check_error_log(v)
    if type(v) == "string" and v ~= "" and v ~= "off" and not find(v, "%z") then
        return v
    end
    return nil, 'must be "stderr" or a file path'
end

-- A log file as the user wrote it, made absolute against the config's
-- directory (under systemd the working directory is /).
local function log_path(c, v)
    if v == "off" or v == "stdout" or v == "stderr" or sub(v, 1, 1) == "/" then
        return v
    end
    return (match(c.file, "^(.*/)[^/]*$") or "./") .. v
end

local function table_arg(d, v, what, example)
    if type(v) == "table" then
        return true
    end
    err(d, "%s expects a table like %s, got %s", what, example, describe(v))
    return false
end

local function default_settings()
    local s = copy(SETTINGS.defaults)
    s.access_log, s.error_log = "stdout", "stderr"
    s.limits, s.timeouts = copy(LIMITS.defaults), copy(TIMEOUTS.defaults)
    s.admin = copy(ADMIN.defaults)
    s.admin.enabled = true
    return s
end

local decl = {}

function decl.settings(d, t)
    if not table_arg(d, t, "gw.settings", "{ workers = 2 }") then
        return
    end
    local c = d.c
    if c.settings then
        err(d, "gw.settings is called twice (first at %s); merge them",
            at(d, c.settings))
        return
    end
    c.settings = d
    check_keys(d, t, SETTINGS.keys, "gw.settings")
    local s = default_settings()
    fields(d, t, s, SETTINGS, "settings")
    s.access_log = log_path(c, field(d, t, "access_log", "settings",
                                     check_access_log) or "stdout")
    s.error_log = log_path(c, field(d, t, "error_log", "settings",
                                    check_error_log) or "stderr")
    s.log_level = field(d, t, "log_level", "settings", SETTINGS.checks.log_level)
        or s.log_level
    local limits = t.limits
    if limits ~= nil then
        if type(limits) ~= "table" then
            err(d, 'settings.limits must be a table like { body = "10m" }, ' ..
                "got %s", describe(limits))
        else
            check_keys(d, limits, LIMITS.keys, "settings.limits")
            fields(d, limits, s.limits, LIMITS, "settings.limits")
        end
    end
    local timeouts = t.timeouts
    if timeouts ~= nil then
        if type(timeouts) ~= "table" then
            err(d, "settings.timeouts must be a table like { header = 10 }, " ..
                "got %s", describe(timeouts))
        else
            check_keys(d, timeouts, TIMEOUTS.keys, "settings.timeouts")
            fields(d, timeouts, s.timeouts, TIMEOUTS, "settings.timeouts")
        end
    end
    if c.budget then
        -- the rest of this file's run has the budget it sets
        c.budget.seconds = s.timeouts.load / 1000
        c.budget.memory = s.limits.lua_memory
    end
    local admin = t.admin
    if admin == false then
        s.admin.enabled = false
    elseif admin ~= nil then
        if type(admin) ~= "table" then
            err(d, "settings.admin must be false or a table like " ..
                '{ host = "127.0.0.1", port = 9901, token = "..." }, got %s',
                describe(admin))
        else
            check_keys(d, admin, ADMIN.keys, "settings.admin")
            fields(d, admin, s.admin, ADMIN, "settings.admin") -- host, port, token
            -- their form (and the address, and the token rule) is checked
            -- in C, by admin.c's own rules, when the config is converted
            if admin.names ~= nil then
                local names = admin.names
                local ok = type(names) == "table"
                if ok then
                    for k, v in pairs(names) do
                        if type(k) ~= "number" or type(v) ~= "string" then
                            ok = false
                        end
                    end
                end
                if not ok then
                    err(d, "settings.admin.names must be a list of " ..
                        'host names like { "gw1.internal" }, got %s',
                        describe(names))
                else
                    s.admin.names = names
                end
            end
        end
    end
    s.line, s.source = d.line, source_name(c, d.source)
    c.settings_value = s
end

-- gw.test { request = {...}, expect = {...} }: the config's own examples,
-- run by `moongate check` and before every reload.
local TEST_KEYS = { "name", "request", "expect" }
local TEST_REQUEST_KEYS = { "method", "path", "headers", "body", "host", "client",
                            "port", "tls", "upstream_response" }
local TEST_EXPECT_KEYS = { "status", "upstream", "route", "target", "headers",
                           "body", "body_contains", "upstream_headers",
                           "upstream_path" }

function decl.test(d, t)
    if not table_arg(d, t, "gw.test",
                     '{ request = { path = "/x" }, expect = { status = 200 } }') then
        return
    end
    check_keys(d, t, TEST_KEYS, "gw.test")
    local req, exp = t.request, t.expect
    if type(req) ~= "table" then
        err(d, "gw.test needs request = { method =, path =, headers = ... }, got %s",
            describe(req))
        return
    end
    if type(exp) ~= "table" then
        err(d, "gw.test needs expect = { status = ..., upstream = ... }, got %s",
            describe(exp))
        return
    end
    check_keys(d, req, TEST_REQUEST_KEYS, "gw.test request")
    check_keys(d, exp, TEST_EXPECT_KEYS, "gw.test expect")
    if type(req.path) ~= "string" or sub(req.path, 1, 1) ~= "/" then
        err(d, 'gw.test request.path must be a path like "/orders/1", got %s',
            describe(req.path))
        return
    end
    local c = d.c
    c.tests[#c.tests + 1] = { name = t.name, request = req, expect = exp,
                              line = d.line, source = source_name(c, d.source) }
end

-- A certificate path as the user wrote it, made absolute against the
-- config file's directory (a reload from another working directory must
-- find the same file).
local function cert_path(d, v)
    if sub(v, 1, 1) == "/" then
        return v
    end
    local dir = match(d.c.file, "^(.*/)[^/]*$") or "./"
    return dir .. v
end

-- listen.tls: { cert = "site.pem", key = "site.key" }, or several
-- certificates chosen by SNI: { certs = { { cert = .., key = .. }, .. } }
-- (the first is the default); min_version "TLSv1.2" (default) or
-- "TLSv1.3"; ciphers: an OpenSSL TLS 1.2 cipher list. The files are read
-- (and checked) when the config is converted for C (src/tls.c).
local function listen_tls(d, v)
    local example = '{ cert = "certs/site.pem", key = "certs/site.key" }'
    if type(v) ~= "table" then
        err(d, "listen.tls must be a table like %s, got %s", example, describe(v))
        return nil
    end
    check_keys(d, v, TLS_KEYS, "listen.tls")
    local out = { certs = {}, line = d.line, source = source_name(d.c, d.source) }
    local list = v.certs
    if list == nil then
        list = { v }
    elseif v.cert ~= nil or v.key ~= nil then
        err(d, "listen.tls takes either cert/key or certs = { ... }, not both")
        return nil
    elseif type(list) ~= "table" or list[1] == nil then
        err(d, "listen.tls.certs must be a non-empty list of %s, got %s", example,
            describe(list))
        return nil
    end
    if #list > 32 then
        err(d, "listen.tls.certs holds %d certificates; at most 32", #list)
        return nil
    end
    for i, c in ipairs(list) do
        local what = v.certs and fmt("listen.tls.certs[%d]", i) or "listen.tls"
        if type(c) ~= "table" then
            err(d, "%s must be a table like %s, got %s", what, example, describe(c))
            return nil
        end
        if v.certs then
            check_keys(d, c, TLS_CERT_KEYS, what)
        end
        for _, k in ipairs(TLS_CERT_KEYS) do
            if type(c[k]) ~= "string" or c[k] == "" then
                err(d, "%s.%s must be the path of a PEM file, got %s", what, k,
                    describe(c[k]))
                return nil
            end
        end
        out.certs[i] = { cert = cert_path(d, c.cert), key = cert_path(d, c.key) }
    end
    if v.min_version ~= nil then
        if v.min_version ~= "TLSv1.2" and v.min_version ~= "TLSv1.3" then
            err(d, 'listen.tls.min_version must be "TLSv1.2" or "TLSv1.3", got %s',
                describe(v.min_version))
            return nil
        end
        out.min_version = v.min_version
    end
    if v.ciphers ~= nil then
        if type(v.ciphers) ~= "string" or v.ciphers == "" then
            err(d, "listen.tls.ciphers must be an OpenSSL cipher list string, got %s",
                describe(v.ciphers))
            return nil
        end
        out.ciphers = v.ciphers
    end
    return out
end

function decl.listen(d, t)
    d.c.nlisten = d.c.nlisten + 1
    if not table_arg(d, t, "gw.listen", "{ port = 8080 }") then
        return
    end
    check_keys(d, t, LISTEN.keys, "gw.listen")
    local l = { host = "0.0.0.0", line = d.line,
                source = source_name(d.c, d.source) }
    if t.port == nil then
        err(d, "listen.port is required (an integer 1-65535)")
    else
        l.port = field(d, t, "port", "listen", LISTEN.checks.port)
    end
    l.host = field(d, t, "host", "listen", check_listen_host) or l.host
    l.escaped_slashes = field(d, t, "escaped_slashes", "listen",
                              LISTEN.checks.escaped_slashes)
        or LISTEN.defaults.escaped_slashes
    if t.tls ~= nil then
        l.tls = listen_tls(d, t.tls)
    end
    if l.port then
        local listeners = d.c.listeners
        listeners[#listeners + 1] = { value = l, d = d }
    end
end

-- upstream.health: active checks, { path = "/health", interval = 5,
-- timeout = 2, fall = 3, rise = 2 } (times in seconds, like every time in
-- the config); src/health.c runs them.
local function upstream_health(d, v)
    if type(v) ~= "table" then
        err(d, 'upstream.health must be a table like { path = "/health" }, got %s',
            describe(v))
        return nil
    end
    check_keys(d, v, HEALTH.keys, "upstream.health")
    local p = v.path
    if type(p) ~= "string" or sub(p, 1, 1) ~= "/" or find(p, "[%s%c]") then
        err(d, 'upstream.health.path must be a path like "/health" (no spaces), got %s',
            describe(p))
        return nil
    end
    local h = copy(HEALTH.defaults)
    h.path = p
    fields(d, v, h, HEALTH, "upstream.health")
    return h
end

-- A table option `v` of `what` checked against schema `sc`: its fields
-- (defaults filled in), or nil after an error.
local function object_option(d, v, sc, what, example)
    if type(v) ~= "table" then
        err(d, "%s must be a table like %s, got %s", what, example, describe(v))
        return nil
    end
    check_keys(d, v, sc.keys, what)
    local out = copy(sc.defaults)
    fields(d, v, out, sc, what)
    return out
end

local RETRY_ON = 'must be a list of "connect", "reset", "timeout", ' ..
    '"502", "503", "504"'

-- retries = { attempts, on, per_try_timeout, backoff = { base, max, jitter },
-- budget, min_retries, non_idempotent, body } of a route or an upstream;
-- src/retry.c applies it, the names of `on` are config.c's.
local function retries_option(d, v, what)
    local r = object_option(d, v, RETRIES, what, "{ attempts = 3 }")
    if not r then
        return nil
    end
    r.on = { "connect", "reset", "502", "503" }
    if v.on ~= nil then
        local on, ok = v.on, type(v.on) == "table" and v.on[1] ~= nil
        for k, name in pairs(ok and on or {}) do
            if not (is_int(k) and k >= 1 and k <= #on) or type(name) ~= "string"
                or find(name, "%z") or C.mg_ffi_retry_on_parse(name) < 0 then
                ok = false
            end
        end
        if ok then
            r.on = copy(on)
        else
            err(d, "%s.on %s, got %s", what, RETRY_ON, describe(on))
        end
    end
    r.backoff = copy(BACKOFF.defaults)
    if v.backoff ~= nil then
        r.backoff = object_option(d, v.backoff, BACKOFF, what .. ".backoff",
                                  "{ base = 0.025, max = 0.25 }") or r.backoff
    end
    if r.backoff.max < r.backoff.base then
        err(d, "%s.backoff.max must be at least backoff.base (%g s), got %g s",
            what, r.backoff.base / 1000, r.backoff.max / 1000)
    end
    return r
end

-- outlier = { consecutive_5xx, consecutive_gateway_failures,
-- latency_factor, base_ejection_time, max_ejection_time,
-- max_ejection_percent } of an upstream (src/outlier.c).
local function outlier_option(d, v)
    local o = object_option(d, v, OUTLIER, "upstream.outlier",
                            "{ consecutive_5xx = 5 }")
    if not o then
        return nil
    end
    if o.latency_factor ~= 0 and o.latency_factor <= 1 then
        err(d, "upstream.outlier.latency_factor must be 0 (off) or above 1 " ..
            "(e.g. 5: five times the others' latency), got %s",
            describe(v.latency_factor))
    end
    if o.max_ejection_time < o.base_ejection_time then
        err(d, "upstream.outlier.max_ejection_time must be at least " ..
            "base_ejection_time (%g s)", o.base_ejection_time / 1000)
    end
    return o
end

local function upstream_targets(d, u, targets)
    if type(targets) ~= "table" or targets[1] == nil then
        err(d, 'upstream.targets must be a non-empty list of "host:port" ' ..
            "strings, got %s", type(targets) == "table"
            and "a table without list entries" or describe(targets))
        return
    end
    local n = #targets
    for _, k in ipairs(sorted_keys(targets)) do
        if not (is_int(k) and k >= 1 and k <= n) then
            err(d, "unknown key %s in upstream.targets (targets are a list " ..
                'of "host:port" or { "host:port", weight = N })', key_str(k))
        end
    end
    local seen = {}
    for i = 1, n do
        local what = fmt("upstream.targets[%d]", i)
        local t = targets[i]
        local addr, weight = t, TARGET.defaults.weight
        if type(t) == "table" then
            addr = t[1]
            for _, k in ipairs(sorted_keys(t)) do
                if k ~= 1 and k ~= "weight" then
                    err(d, "unknown key %s in %s (%svalid: a \"host:port\" " ..
                        "first, then weight)", key_str(k), what,
                        did_you_mean(k, TARGET.keys))
                end
            end
            weight = field(d, t, "weight", what, TARGET.checks.weight)
                or weight
        end
        local host, port = parse_addr(addr)
        if not host then
            err(d, "%s %s, got %s", what, port, describe(addr))
        else
            local key = host .. "|" .. port
            if seen[key] then
                err(d, "%s %s is listed twice (use weight instead)", what,
                    quote(addr))
            end
            seen[key] = true
            u.targets[#u.targets + 1] = { host = host, port = port,
                                          weight = weight }
        end
    end
end

function decl.upstream(d, name, targets, opts, ...)
    local c = d.c
    if select("#", ...) > 0 then
        err(d, "gw.upstream takes (name, targets[, options]), got %d " ..
            "arguments", 3 + select("#", ...))
    end
    local named = type(name) == "string" and name ~= ""
    if not named then
        err(d, "upstream name must be a non-empty string, got %s",
            describe(name))
    end
    local u = { name = name, line = d.line,
                source = source_name(c, d.source), targets = {} }
    for k, v in pairs(UPSTREAM.defaults) do
        u[k] = v
    end
    upstream_targets(d, u, targets)
    if opts ~= nil then
        if type(opts) ~= "table" then
            err(d, "upstream options must be a table like " ..
                "{ keepalive = 64 }, got %s", describe(opts))
        else
            check_keys(d, opts, UPSTREAM.keys, "gw.upstream options")
            fields(d, opts, u, UPSTREAM, "upstream")
            if opts.health ~= nil then
                u.health = upstream_health(d, opts.health)
            end
            if opts.retries ~= nil then
                u.retries = retries_option(d, opts.retries, "upstream.retries")
            end
            if opts.outlier ~= nil then
                u.outlier = outlier_option(d, opts.outlier)
            end
        end
    end
    if not named then
        return
    end
    local first = c.upstream_by_name[name]
    if first then
        err(d, "duplicate upstream %s (already declared at %s)", quote(name),
            at(d, first.d))
        return
    end
    local entry = { value = u, d = d }
    c.upstream_by_name[name] = entry
    c.upstreams[#c.upstreams + 1] = entry
end

-- Shared dictionary names end up in C strings and error messages.
local function is_dict_name(v)
    return type(v) == "string" and #v >= 1 and #v <= 64
        and not find(v, "[^%w_%-%.]")
end

function decl.shared_dict(d, name, opts, ...)
    local c = d.c
    if select("#", ...) > 0 then
        err(d, "gw.shared_dict takes (name, options), got %d arguments",
            2 + select("#", ...))
    end
    local named = is_dict_name(name)
    if not named then
        err(d, "shared_dict name must be 1-64 letters, digits, '_', '-' " ..
            "or '.', got %s", describe(name))
    end
    local sd = { name = name, line = d.line,
                 source = source_name(c, d.source) }
    if type(opts) ~= "table" then
        err(d, 'gw.shared_dict options must be a table like { size = "10m" }' ..
            ", got %s", describe(opts))
    else
        check_keys(d, opts, SHARED_DICT.keys, "gw.shared_dict options")
        if opts.size == nil then
            err(d, 'shared_dict.size is required (bytes, or a string like ' ..
                '"10m")')
        else
            sd.size = field(d, opts, "size", "shared_dict",
                            SHARED_DICT.checks.size)
        end
    end
    if not named then
        return
    end
    local first = c.shared_dict_by_name[name]
    if first then
        err(d, "duplicate shared dict %s (already declared at %s)",
            quote(name), at(d, first.d))
        return
    end
    local entry = { value = sd, d = d }
    c.shared_dict_by_name[name] = entry
    c.shared_dicts[#c.shared_dicts + 1] = entry
end

local function route_methods(d, methods)
    if type(methods) ~= "table" then
        err(d, 'route.methods must be a list like { "GET", "POST" }, got %s',
            describe(methods))
        return nil
    end
    local n = #methods
    if n == 0 then
        err(d, "route.methods must not be empty (leave it out to allow any " ..
            "method)")
        return nil
    end
    for _, k in ipairs(sorted_keys(methods)) do
        if not (is_int(k) and k >= 1 and k <= n) then
            err(d, 'unknown key %s in route.methods (a list like { "GET" })',
                key_str(k))
        end
    end
    local out, seen = {}, {}
    for i = 1, n do
        local m = methods[i]
        if type(m) ~= "string" then
            err(d, "route.methods[%d] must be a method name, got %s", i,
                describe(m))
        else
            local um = upper(m)
            if not IS_METHOD[um] then
                err(d, "route.methods[%d] %s is not an HTTP method (%s" ..
                    "e.g. GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS)", i,
                    quote(m), did_you_mean(um, HTTP_METHODS))
            elseif not seen[um] then
                seen[um] = true
                out[#out + 1] = um
            end
        end
    end
    if #out > MAX_METHODS then
        err(d, "route.methods lists %d methods (at most %d)", #out,
            MAX_METHODS)
    end
    return out
end

-- route.upgrades: the protocols a client may switch to through this route
-- (Upgrade tokens, lower-cased, without versions). Absent: { "websocket" },
-- filled in by src/config.c; {} allows none. h2c is never tunnelled: the
-- gateway removes it from every request, whatever the route says.
local function route_upgrades(d, list)
    if type(list) ~= "table" then
        err(d, 'route.upgrades must be a list like { "websocket" } ({} allows ' ..
            "none), got %s", describe(list))
        return nil
    end
    local n = #list
    for _, k in ipairs(sorted_keys(list)) do
        if not (is_int(k) and k >= 1 and k <= n) then
            err(d, 'unknown key %s in route.upgrades (a list like { "websocket" })',
                key_str(k))
        end
    end
    local out, seen = {}, {}
    for i = 1, n do
        local p = list[i]
        if type(p) ~= "string" or not match(p, "^[%w!#$%%&'*+%-.^_`|~]+$") then
            err(d, "route.upgrades[%d] must be a protocol name (an HTTP token " ..
                'like "websocket", without "/version"), got %s', i, describe(p))
        elseif lower(p) == "h2c" then
            err(d, 'route.upgrades[%d] "h2c" cannot be allowed: the gateway ' ..
                "always removes HTTP/2 upgrades (remove it from the list)", i)
        elseif not seen[lower(p)] then
            seen[lower(p)] = true
            out[#out + 1] = lower(p)
        end
    end
    if #out > MAX_UPGRADES then
        err(d, "route.upgrades lists %d protocols (at most %d)", #out,
            MAX_UPGRADES)
    end
    return out
end

local function route_headers(d, headers)
    if type(headers) ~= "table" then
        err(d, 'route.headers must be a table like { ["X-Version"] = "2" }, ' ..
            "got %s", describe(headers))
        return nil
    end
    local out, seen = {}, {}
    for _, k in ipairs(sorted_keys(headers)) do
        local v = headers[k]
        if type(k) ~= "string" or not is_token(k) then
            err(d, "route.headers key %s must be a header name", key_str(k))
        elseif type(v) ~= "string" or find(v, "[%z\r\n]") then
            err(d, "route.headers[%s] must be a string (no CR, LF or NUL), " ..
                "got %s", quote(k), describe(v))
        else
            local lk = lower(k)
            if seen[lk] then
                err(d, "route.headers names %s twice (names are " ..
                    "case-insensitive)", quote(lk))
            else
                seen[lk] = true
                out[#out + 1] = { name = lk, value = v }
            end
        end
    end
    sort(out, function(a, b) return a.name < b.name end)
    if #out > MAX_HEADERS then
        err(d, "route.headers has %d headers (at most %d)", #out, MAX_HEADERS)
    end
    return out
end

local function check_prefix(v)
    if type(v) == "string" and sub(v, 1, 1) == "/" then
        return v
    end
    return nil, "must be a path starting with '/'"
end

-- A non-negative time in seconds (0 allowed) -> ms.
local function cache_statuses(d, v)
    if type(v) ~= "table" or #v == 0 then
        err(d, "route.cache.statuses must be a non-empty list of statuses " ..
            "like { 200, 404 }, got %s", describe(v))
        return nil
    end
    local out, seen = {}, {}
    for i, st in ipairs(v) do
        if not (is_int(st) and st >= 200 and st <= 599) then
            err(d, "route.cache.statuses[%d] must be a status 200-599, " ..
                "got %s", i, describe(st))
        elseif not seen[st] then
            seen[st] = true
            out[#out + 1] = st
        end
    end
    if #out > MAX_CACHE_STATUSES then
        err(d, "route.cache.statuses lists %d statuses (at most %d)", #out,
            MAX_CACHE_STATUSES)
    end
    return out
end

local function cache_vary(d, v)
    if type(v) ~= "table" then
        err(d, 'route.cache.vary must be a list of request header names ' ..
            'like { "accept" }, got %s', describe(v))
        return nil
    end
    local out, seen = {}, {}
    for i, name in ipairs(v) do
        if type(name) ~= "string" or not is_token(name) then
            err(d, "route.cache.vary[%d] must be a header name, got %s", i,
                describe(name))
        elseif not seen[lower(name)] then
            seen[lower(name)] = true
            out[#out + 1] = lower(name)
        end
    end
    if #out > MAX_CACHE_VARY then
        err(d, "route.cache.vary names %d headers (at most %d)", #out,
            MAX_CACHE_VARY)
    end
    return out
end

-- route.cache: true, or a table of CACHE.keys. The dictionary is resolved
-- in finish(), once every gw.shared_dict of the file is known.
local function route_cache(d, v)
    if v == false then
        return nil
    end
    local out = copy(CACHE.defaults)
    for k, dv in pairs(DEFAULT_CACHE) do
        out[k] = dv
    end
    if v == true then
        return out
    end
    if type(v) ~= "table" then
        err(d, "route.cache must be true or a table like { ttl = 30 }, got %s",
            describe(v))
        return nil
    end
    check_keys(d, v, CACHE.keys, "route.cache")
    fields(d, v, out, CACHE, "route.cache")
    if v.statuses ~= nil then
        out.statuses = cache_statuses(d, v.statuses) or out.statuses
    end
    if v.vary ~= nil then
        out.vary = cache_vary(d, v.vary) or out.vary
    end
    if v.redis ~= nil then
        -- the same options as moongate.redis (checked by it)
        local ok, client = pcall(require("moongate.redis").new, v.redis,
                                 "route.cache.redis")
        if not ok then
            err(d, "%s", (gsub(tostring(client), "^[^\n]-:%d+: ", "")))
        else
            out.redis = { host = client.host, port = client.port,
                          password = client.password, db = client.db,
                          pool = client.pool, timeout = client.timeout,
                          connect_timeout = client.connect_timeout }
        end
    end
    if v.dict ~= nil then
        if type(v.dict) ~= "string" or v.dict == "" then
            err(d, "route.cache.dict must be a shared dict name, got %s",
                describe(v.dict))
        else
            out.dict = v.dict
        end
    end
    return out
end

local function route_rewrite(d, r, t, pinfo)
    local rw = t.rewrite
    if type(rw) ~= "string" then
        err(d, 'route.rewrite must be a path template like "/v1/:id/**", ' ..
            "got %s", describe(rw))
        return
    end
    local info, why = parse_pattern(rw)
    if not info then
        err(d, "route.rewrite %s is not a valid template: %s", quote(rw), why)
        return
    end
    r.rewrite = rw
    if not pinfo then
        return                  -- the path is bad: already reported
    end
    for _, name in ipairs(info.names) do
        if not pinfo.params[name] then
            local defined = #pinfo.names > 0 and
                "defines " .. concat(pinfo.names, ", ") or "defines none"
            err(d, "route.rewrite %s uses ':%s' which route.path %s does " ..
                "not define (it %s)", quote(rw), name, quote(r.path), defined)
        end
    end
    if info.star and not (pinfo.star or pinfo.prefix) then
        err(d, "route.rewrite %s uses '**' but route.path %s has no '**' or " ..
            "trailing '/'", quote(rw), quote(r.path))
    end
end

-- route.policies: a list run in the order written; each is a function
-- (its on_request) or a table with on_request / on_response / on_log.
local POLICY_HOOKS = { on_request = true, on_response = true, on_log = true }

local function route_policies(d, r, ps)
    if ps == nil then
        return
    end
    if type(ps) ~= "table" then
        err(d, "route.policies must be a list of policies, got %s", describe(ps))
        return
    end
    local n = #ps
    for k in pairs(ps) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
            err(d, "route.policies must be a list (keys 1..n), found key %s",
                describe(k))
            return
        end
    end
    local out = {}
    for i, p in ipairs(ps) do
        if type(p) == "function" then
            out[i] = { on_request = p }
        elseif type(p) == "table" then
            local any = false
            -- read through __index too: a policy may be an object
            for k in pairs(POLICY_HOOKS) do
                local v = p[k]
                if v ~= nil then
                    if type(v) ~= "function" then
                        err(d, "route.policies[%d].%s must be a function, got %s",
                            i, k, describe(v))
                    end
                    any = true
                end
            end
            if not any then
                err(d, "route.policies[%d] has no on_request, on_response or " ..
                    "on_log function", i)
            end
            out[i] = p
        else
            err(d, "route.policies[%d] must be a function or a policy table, " ..
                "got %s", i, describe(p))
        end
    end
    r.policies = out
end

function decl.route(d, t)
    if not table_arg(d, t, "gw.route",
                     '{ path = "/orders/**", upstream = "orders" }') then
        return
    end
    local c = d.c
    check_keys(d, t, ROUTE.keys, "gw.route")
    local r = { line = d.line, source = source_name(c, d.source),
                listen = ROUTE.defaults.listen }
    local pinfo
    local path = t.path
    if path == nil then
        err(d, 'route.path is required (a pattern like "/orders/**")')
    elseif type(path) ~= "string" then
        err(d, 'route.path must be a pattern like "/orders/**", got %s',
            describe(path))
    else
        local why
        pinfo, why = parse_pattern(path)
        if not pinfo then
            err(d, "route.path %s is not a valid pattern: %s", quote(path), why)
        end
        r.path = path
    end
    r.name = r.path
    if t.name ~= nil then
        if type(t.name) == "string" and t.name ~= "" then
            r.name = t.name
        else
            err(d, "route.name must be a non-empty string, got %s",
                describe(t.name))
        end
    end

    local up, handler = t.upstream, t.handler
    if up == nil and handler == nil then
        err(d, "route needs one of upstream (an upstream name) or handler " ..
            "(a function), got neither")
    elseif up ~= nil and handler ~= nil then
        err(d, "route needs exactly one of upstream or handler, got both")
    elseif up ~= nil then
        if type(up) ~= "string" then
            err(d, "route.upstream must be an upstream name (string), got %s",
                describe(up))
        else
            r.upstream_name = up          -- resolved once the file has run
        end
    elseif type(handler) ~= "function" then
        err(d, "route.handler must be a function, got %s", describe(handler))
    else
        r.handler = handler
    end
    route_policies(d, r, t.policies)

    if t.methods ~= nil then
        r.methods = route_methods(d, t.methods)
    end
    if t.upgrades ~= nil then
        r.upgrades = route_upgrades(d, t.upgrades)
        if r.handler then
            err(d, "route.upgrades needs an upstream: a handler route's " ..
                "answers are made by Lua, never tunnelled")
        end
    end
    r.host = field(d, t, "host", "route", check_route_host)
    r.headers = t.headers ~= nil and route_headers(d, t.headers) or {}
    r.listen = field(d, t, "listen", "route", ROUTE.checks.listen) or r.listen
    r.strip_prefix = field(d, t, "strip_prefix", "route", check_prefix)
    r.escaped_slashes = field(d, t, "escaped_slashes", "route",
                              ROUTE.checks.escaped_slashes)
    if r.strip_prefix and pinfo
        and sub(pinfo.literal, 1, #r.strip_prefix) ~= r.strip_prefix then
        err(d, "route.strip_prefix %s is not a literal prefix of route.path %s",
            quote(r.strip_prefix), quote(r.path))
    end
    if t.rewrite ~= nil then
        route_rewrite(d, r, t, pinfo)
    end
    if t.strip_prefix ~= nil and t.rewrite ~= nil then
        err(d, "route.strip_prefix and route.rewrite cannot both be set " ..
            "(rewrite already gives the whole upstream path)")
    end
    r.max_body = field(d, t, "max_body", "route", ROUTE.checks.max_body)
    if t.retries ~= nil then
        r.retries = retries_option(d, t.retries, "route.retries")
    end
    if t.timeouts ~= nil then
        r.timeouts = object_option(d, t.timeouts, ROUTE_TIMEOUTS,
                                   "route.timeouts", "{ total = 10 }")
    end
    if (t.retries ~= nil or t.timeouts ~= nil) and r.handler then
        err(d, "route.retries and route.timeouts need an upstream: a " ..
            "handler route's answers are made by Lua")
    end
    if t.cache ~= nil then
        r.cache = route_cache(d, t.cache)
        if r.cache and r.handler then
            err(d, "route.cache needs an upstream: a handler route's " ..
                "answers are made by Lua, not fetched")
        end
    end

    local routes = c.routes
    routes[#routes + 1] = { value = r, d = d }
end


-- Checks that need the whole file ------------------------------------------

local function wildcard(host)
    return host == "0.0.0.0" or host == "::"
end

local function route_key(r)
    local methods = {}
    for i, m in ipairs(r.methods or {}) do
        methods[i] = m
    end
    sort(methods)
    local headers = {}
    for i, h in ipairs(r.headers) do
        headers[i] = h.name .. "=" .. h.value
    end
    return concat({ r.path or "", r.host or "", concat(methods, ","),
                    concat(headers, "\0"), tostring(r.listen) }, "\1")
end

local function host_port(host, port)
    if find(host, ":", 1, true) then
        return "[" .. host .. "]:" .. port
    end
    return host .. ":" .. port
end

local function finish(c)
    local cfg = { file = c.file }
    local s = c.settings_value or default_settings()
    cfg.workers, cfg.access_log = s.workers, s.access_log
    cfg.error_log, cfg.log_level = s.error_log, s.log_level
    cfg.admin = s.admin
    -- where gw.settings is (nil without one): for errors about them
    cfg.settings_line, cfg.settings_source = s.line, s.source
    cfg.tests = c.tests
    cfg.limits, cfg.timeouts = s.limits, s.timeouts

    -- listeners: duplicates are checked among the well-formed ones only
    cfg.listeners = {}
    local ports, port_list = {}, {}
    for _, e in ipairs(c.listeners) do
        local l, d = e.value, e.d
        if not ports[l.port] then
            ports[l.port] = true
            port_list[#port_list + 1] = l.port
        end
        local dup
        for _, prev in ipairs(c.listeners) do
            if prev == e then
                break
            end
            local p = prev.value
            if not prev.d.bad and p.port == l.port
                and (p.host == l.host or wildcard(p.host)
                     or wildcard(l.host)) then
                dup = prev
                break
            end
        end
        if d.bad then
            -- already reported
        elseif dup and dup.value.host == l.host then
            err(d, "duplicate listener %s (already declared at %s)",
                host_port(l.host, l.port), at(d, dup.d))
        elseif dup then
            err(d, "listener %s overlaps %s (declared at %s)",
                host_port(l.host, l.port),
                host_port(dup.value.host, dup.value.port), at(d, dup.d))
        else
            cfg.listeners[#cfg.listeners + 1] = l
        end
    end
    if c.nlisten == 0 then
        err({ c = c, source = "@" .. c.file, line = 1 },
            "no gw.listen in the config: add one, e.g. " ..
            "gw.listen { port = 8080 }")
    end
    sort(port_list)

    -- upstreams
    cfg.upstreams = {}
    local index, names = {}, {}
    for i, e in ipairs(c.upstreams) do
        cfg.upstreams[i] = e.value
        index[e.value.name] = i
        names[i] = e.value.name
    end

    -- routes
    cfg.routes = {}
    local seen = {}
    for i, e in ipairs(c.routes) do
        local r, d = e.value, e.d
        if r.upstream_name then
            r.upstream = index[r.upstream_name]
            if not r.upstream then
                local declared = #names == 0 and "none declared" or
                    "declared: " .. concat(names, ", ")
                err(d, "route.upstream %s is not declared (%s%s)",
                    quote(r.upstream_name),
                    did_you_mean(r.upstream_name, names), declared)
            end
            r.upstream_name = nil
        end
        if r.listen ~= 0 and #port_list > 0 and not ports[r.listen] then
            err(d, "route.listen %d is not a gw.listen port (listening on: %s)",
                r.listen, concat(port_list, ", "))
        end
        r.max_body = r.max_body or cfg.limits.body
        if r.cache and not r.cache.redis then
            local sd = c.shared_dict_by_name[r.cache.dict]
            if sd then
                r.cache.dict_size = sd.value.size or CACHE_DICT_SIZE
            elseif r.cache.dict == DEFAULT_CACHE.dict then
                r.cache.dict_size = CACHE_DICT_SIZE
                local decl = { name = DEFAULT_CACHE.dict, size = CACHE_DICT_SIZE,
                               line = d.line, source = r.source }
                c.shared_dict_by_name[decl.name] = { value = decl, d = d }
                c.shared_dicts[#c.shared_dicts + 1] =
                    c.shared_dict_by_name[decl.name]
            else
                err(d, "route.cache.dict %s is not declared (add " ..
                    'gw.shared_dict(%s, { size = "64m" }))',
                    quote(r.cache.dict), quote(r.cache.dict))
            end
        end
        if not d.bad then
            local key = route_key(r)
            if seen[key] then
                err(d, "duplicate route: same path, host, methods, headers " ..
                    "and listen as the route at %s", at(d, seen[key]))
            else
                seen[key] = d
            end
        end
        cfg.routes[i] = r
    end
    cfg.shared_dicts = {}
    for i, e in ipairs(c.shared_dicts) do
        cfg.shared_dicts[i] = e.value
    end
    cfg.hooks = c.hooks
    return cfg
end


-- The DSL entry points (called by lua/moongate/init.lua) ---------------------

local function collector_for(what)
    if not current then
        -- level 4: past here, declare() and the gw.* function in init.lua
        error(what .. " can only be used while a config file is loading", 4)
    end
    return current
end

--- Records the declaration gw.<kind>(...) into the load in progress.
-- `kind` is "settings", "listen", "upstream", "route" or "shared_dict".
function _M.declare(kind, ...)
    local c = collector_for("gw." .. kind)
    local d = site(c)
    decl[kind](d, ...)
end

local function is_hook_name(k)
    return type(k) == "string" and sub(k, 1, 3) == "on_" and #k > 3
end

--- gw.<k> = v: on_* functions are hooks; anything else is kept as is.
function _M.set_field(k, v)
    local c = current or last
    if not c then
        last = new_collector("")
        c = last
    end
    if is_hook_name(k) then
        if v ~= nil and type(v) ~= "function" then
            local msg = fmt("gw.%s must be a function, got %s", k, describe(v))
            if not current then
                error(msg, 3)
            end
            err(site(c), msg)
            return
        end
        c.hooks[k] = v
        return
    end
    c.extra[k] = v
end

--- gw.<k> for a key that is not a function of the module: the hook or field
-- set by the config being loaded (or the last one loaded).
function _M.get_field(k)
    local c = current or last
    if not c then
        return nil
    end
    local v = c.hooks[k]
    if v == nil then
        v = c.extra[k]
    end
    return v
end


-- Loading -------------------------------------------------------------------

local keep_loops_interpreted
local jutil_ok, jutil = pcall(require, "jit.util")
local vmdef_ok, vmdef = pcall(require, "jit.vmdef")

-- Does prototype p contain a loop (for, while, repeat, a backward goto)?
-- LuaJIT marks every one with a LOOP, FOR* or ITER* instruction.
local function has_loop(p)
    local names = vmdef.bcnames
    for pc = 0, 1e6 do
        local ins = jutil.funcbc(p, pc)
        if not ins then return false end
        local op = ins % 256
        local name = sub(names, op * 6 + 1, op * 6 + 6)
        if find(name, "LOOP", 1, true) or find(name, "FOR", 1, true)
            or find(name, "ITER", 1, true) then
            return true
        end
    end
    return false
end

-- LuaJIT checks a hook's time budget only while it interprets code, never
-- inside a loop it compiled. So every function of the config file starts
-- interpreted (jit.off on the chunk, recursively), then the hooks, policies
-- and handlers that contain no loop, and the loop-free helpers they reach
-- through upvalues, are compiled again: a loop-free function cannot run for
-- long by itself, and those are the ones on every request's path.
keep_loops_interpreted = function(chunk, cfg)
    if not (jit and jit.off) then
        return
    end
    jit.off(chunk, true)
    if not (jutil_ok and vmdef_ok) then
        return
    end
    local source = debug.getinfo(chunk, "S").source
    local seen = {}
    local function enable(fn)
        if type(fn) ~= "function" or seen[fn] then return end
        seen[fn] = true
        local info = debug.getinfo(fn, "S")
        if info.what ~= "Lua" or info.source ~= source then return end
        if not has_loop(fn) then jit.on(fn) end
        for i = 1, 255 do
            local name, v = debug.getupvalue(fn, i)
            if not name then break end
            if type(v) == "function" then
                enable(v)
            elseif type(v) == "table" then
                for _, x in pairs(v) do enable(x) end
            end
        end
    end
    for _, fn in pairs(cfg.hooks or {}) do enable(fn) end
    for _, r in ipairs(cfg.routes or {}) do
        enable(r.handler)
        for _, p in ipairs(r.policies or {}) do
            if type(p) == "function" then
                enable(p)
            elseif type(p) == "table" then
                enable(p.on_request)
                enable(p.on_response)
                enable(p.on_log)
            end
        end
    end
end

-- Turns a Lua error raised while the file runs into { source, line, msg },
-- with the full source name (Lua error positions truncate long paths).
local function on_error(e)
    local msg = type(e) == "string" and e or
        "error object is a " .. type(e) .. " (" .. tostring(e) .. ")"
    local full = {}
    local level = 2
    while true do
        local info = getinfo(level, "S")
        if not info then
            break
        end
        full[info.short_src] = sub(info.source, 1, 1) == "@" and info.source
            or "=" .. info.short_src
        level = level + 1
    end
    local src, line, rest = match(msg, "^(.-):(%d+): (.*)$")
    local source = src and full[src]
    if source and not is_ours(source) then
        return { source = source, line = tonumber(line), msg = rest }
    end
    local usrc, uline = where()
    if source then
        msg = "internal error in moongate: " .. msg
    end
    return { source = usrc, line = uline, msg = msg }
end

-- Modules first required by a config file are forgotten after the load, so
-- that a reload runs them (and their gw.* calls) again. Moongate's own
-- modules and C modules stay.
local function forget_modules(before)
    local loaded = package.loaded
    for name in pairs(loaded) do
        if not before[name] and type(name) == "string"
            and sub(name, 1, 8) ~= "moongate"
            and package.searchpath(name, package.path) then
            loaded[name] = nil
        end
    end
end

-- The reason of a loadfile() failure to read `file` ("No such file ...").
local function read_error(file, why)
    local f, oerr = io.open(file, "r")
    if f then
        f:close()
    else
        why = oerr or why
    end
    return match(why, ": ([^:]*)$") or why
end

-- Modules and files are found from the config's own directory, whatever
-- the current directory (systemd starts services in /): it comes first on
-- package.path and package.cpath of the state that loads the config, and
-- stays there for hooks that require later. A later load replaces the
-- entries an earlier one added (if they are still in front).
local added_path, added_cpath = "", ""

local function config_dir(file)
    local dir = match(file, "^(.*)/[^/]*$")
    if dir == nil then return "." end
    return dir == "" and "/" or dir
end

local function without_prefix(s, prefix)
    if prefix ~= "" and sub(s, 1, #prefix) == prefix then
        return sub(s, #prefix + 1)
    end
    return s
end

local function use_config_dir(dir)
    local d = dir == "/" and "" or dir
    local path = without_prefix(package.path, added_path)
    local cpath = without_prefix(package.cpath, added_cpath)
    added_path = d .. "/?.lua;" .. d .. "/?/init.lua;"
    added_cpath = d .. "/?.so;"
    package.path = added_path .. path
    package.cpath = added_cpath .. cpath
end

-- The files the last load read (the config, every module it required,
-- every file it ran with dofile/loadfile), kept even when the load failed:
-- the running gateway watches them all for changes (src/control.c).
local loaded_files = {}

--- The files the last load() read, the config file first (a list).
function _M.loaded_files()
    return loaded_files
end

-- While a config loads: the Lua searcher and dofile/loadfile record what
-- they read, and relative dofile/loadfile paths are taken from the config's
-- directory like require's. Returns the function that puts them back.
local function record_files(file, dir)
    local files, seen = { file }, { [file] = true }
    loaded_files = files
    local function note(f)
        if not seen[f] then
            seen[f] = true
            files[#files + 1] = f
        end
    end
    -- a relative path is the config directory's file when there is one
    -- (else, as before, the current directory's)
    local function resolve(f)
        if type(f) == "string" and sub(f, 1, 1) ~= "/" and dir ~= "." then
            local there = dir .. "/" .. f
            local fh = io.open(there, "r")
            if fh then
                fh:close()
                return there
            end
        end
        return f
    end
    local loaders = package.loaders or package.searchers
    local lua_searcher = loaders[2]
    local g_dofile, g_loadfile = _G.dofile, _G.loadfile
    loaders[2] = function(name)
        local f = package.searchpath(name, package.path)
        -- moongate's own modules are not the config's
        if f and sub(name, 1, 8) ~= "moongate" then note(f) end
        return lua_searcher(name)
    end
    _G.dofile = function(f, ...)
        f = resolve(f)
        if f then note(f) end
        return g_dofile(f, ...)
    end
    _G.loadfile = function(f, ...)
        f = resolve(f)
        if f then note(f) end
        return g_loadfile(f, ...)
    end
    return function()
        loaders[2], _G.dofile, _G.loadfile = lua_searcher, g_dofile, g_loadfile
    end
end

--- Runs config file `file` and validates it whole.
-- Returns the normalised cfg (docs/config-dsl.md), or nil and a list of
-- "file:line: reason" strings, one per mistake, in file order. Can be called
-- any number of times in one Lua state; each call is independent.
function _M.load(file)
    if type(file) ~= "string" then
        error("moongate.config.load: file must be a string, got "
              .. type(file), 2)
    end
    local dir = config_dir(file)
    use_config_dir(dir)
    loaded_files = { file }
    local chunk, perr = loadfile(file)
    if not chunk then
        local line, reason = match(perr, "^.-:(%d+): (.*)$")
        if line then
            return nil, { fmt("%s:%s: %s", file, line, reason) }
        end
        return nil, { fmt("%s: cannot read the config file (%s)", file,
                          read_error(file, perr)) }
    end
    -- the file's globals go to its own environment, not the shared _G
    -- (its xpcall is the budget's: a looping error handler can be stopped)
    setfenv(chunk, setmetatable({ xpcall = budget.xpcall }, { __index = _G }))

    local c = new_collector(file)
    local before = {}
    for name in pairs(package.loaded) do
        before[name] = true
    end
    local outer = current
    current = c
    local restore = record_files(file, dir)
    -- bounded (a loop at the top level must not hang a reload, or check):
    -- the default budget, or the one the file's gw.settings gives
    c.budget = { seconds = TIMEOUTS.defaults.load / 1000, what = "loading",
                 memory = LIMITS.defaults.lua_memory, interpret = true,
                 hint = "(a loop at the top level? settings.timeouts.load)" }
    local _, ok, e = budget.call(c.budget, xpcall, chunk, on_error)
    restore()
    current = outer
    if not ok and type(e) ~= "table" then -- "error in error handling"
        e = { msg = budget.exceeded() or tostring(e) }
    end
    forget_modules(before)

    if not ok then
        err({ c = c, source = e.source or "@" .. file, line = e.line }, e.msg)
        -- cross-declaration checks would only add noise to a half-run file
        return nil, format_errors(c)
    end
    local cfg = finish(c)
    if #c.errors > 0 then
        return nil, format_errors(c)
    end
    -- the functions of this file that loop stay in LuaJIT's interpreter,
    -- where the hook time budget can always stop them; the others (most
    -- hooks) are compiled, and cannot run long without calling something
    keep_loops_interpreted(chunk, cfg)
    last = c
    return cfg
end

return _M
