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
local getinfo = debug.getinfo
local budget = require "moongate.budget"
local base = require "moongate.base"
local ffi = require "ffi"
local cdefs = require "moongate.cdefs"
local C = cdefs.C     -- mg_ffi_route_pattern


local _M = {}


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
        warnings = {},          -- { source, line, msg }: accepted, but said
        settings = nil,         -- site of the gw.settings call
        settings_value = nil,   -- its normalised settings
        listeners = {},
        nlisten = 0,            -- gw.listen calls, good or bad
        upstreams = {},
        upstream_by_name = {},
        routes = {},
        shared_dicts = {},
        shared_dict_by_name = {},
        metrics = {},           -- gw.metrics.* declarations: { value =, d = }
        metric_by_name = {},
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

local is_int = base.is_int

--- Parses a size: an integer number of bytes or a string "<digits>[kmg]"
-- (case-insensitive). Returns bytes, or nil and what is expected.
_M.parse_size = base.parse_size

--- Parses a time in seconds (a number, fractions allowed) into integer
-- milliseconds >= 1. Returns ms, or nil and what is expected.
_M.parse_time = base.parse_time

-- A file path as the user wrote it, made absolute against the config
-- file's directory (a reload from another working directory, or a service
-- started in /, must find the same file).
local function config_relative(c, v)
    if sub(v, 1, 1) == "/" then
        return v
    end
    return (match(c.file, "^(.*/)[^/]*$") or "./") .. v
end

-- Checks value `v` (named `what`) with `check`, which returns the
-- normalised value (and true when it is a file path), or nil and what is
-- expected; a nested table's check reports its own inner mistakes and
-- returns nil, nil when only those were wrong. Reports "<what> <expected>,
-- got <value>". Returns the normalised value, or nil.
local function check_value(d, v, what, check)
    local out, expected, is_file = check(v, d, what)
    if out == nil then
        if expected then
            err(d, "%s %s, got %s", what, expected, describe(v))
        end
    elseif is_file then
        out = config_relative(d.c, out)
    end
    return out
end

-- Checks key `key` of `t` (see check_value), named "<prefix>.<key>".
-- Returns the normalised value, or nil (absent or bad).
local function field(d, t, key, prefix, check)
    local v = t[key]
    if v == nil then
        return nil
    end
    return check_value(d, v, prefix .. "." .. key, check)
end

-- Host syntax is src/uri.c's (mg_ffi_host_kind): addresses as inet_pton
-- reads them, names per RFC 1123.
local function host_kind(s)
    return C.mg_ffi_host_kind(s, #s)
end

local ADDR_EXPECTED = 'must be "host:port", "[ipv6]:port" or ' ..
    '"srv://_service._proto.name"'

-- A target as written ("host:port", "[v6]:port", "http(s)://host[:port]",
-- "srv://NAME"): src/uri.c's grammar (mg_ffi_target_parse), which the
-- admin API reads too. Returns host, port, scheme (cdefs.TARGET_*), or
-- nil and the reason.
local target_buf = ffi.new("mg_ffi_target_t")
local target_why = ffi.new("const char *[1]")
local function parse_target(v)
    if type(v) ~= "string" then
        return nil, ADDR_EXPECTED
    end
    if C.mg_ffi_target_parse(v, #v, target_buf, target_why) ~= 0 then
        return nil, ADDR_EXPECTED .. ffi.string(target_why[0])
    end
    return ffi.string(target_buf.host), target_buf.port, target_buf.scheme
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

-- what a route's cache stores when it says only `cache = true` (besides
-- the defaults of src/config.c): the statuses RFC 9111 lets a cache keep
-- without explicit freshness
local DEFAULT_CACHE = { statuses = { 200, 203, 300, 301, 308, 404, 410 },
                        vary = {} }
local CACHE_DICT_SIZE = 32 * 1024 * 1024 -- "cache" when not declared
local CACHE_LATER = { dict = true } -- read after the lists, where it always was


-- The fields of config object `object` as src/config.c declares them
-- (mg_ffi_config_fields), which also copies them into C: { keys = the key
-- list, in order (not the INTERNAL fields: positional values); defaults,
-- expected (the words "must be ..."), field (as cdefs gives it), checks
-- (see check_value) and item_checks (a LIST's items): name -> ...; fields
-- = the scalar and string names, in order, but the ENUMs, which callers
-- read where their messages have always come; nested = the OBJECT and LIST
-- names, in order; required = set of the names that must be there }. An
-- ENUM's checker asks the C parser (settings.log_level: src/errlog.c,
-- escaped_slashes: src/uri.c) and gives the canonical name; a STRING's
-- with a check asks its module's (hosts: src/uri.c, src/router.c; log
-- targets: src/errlog.c; TLS: src/tls.c; names: src/shdict.c,
-- src/header_names.c).
local schema, fields
local band = require("bit").band

-- OBJECT: a table read by its own schema (built when first used: schemas
-- may refer to each other). Inner mistakes are named "<what>.<key>".
local function object_check(f)
    local sc
    return function(v, d, what)
        if type(v) ~= "table" then
            return nil, f.expected
        end
        sc = sc or schema(f.object)
        check_keys(d, v, sc.keys, what)
        local out = copy(sc.defaults)
        fields(d, v, out, sc, what)
        for _, k in ipairs(sc.nested) do
            local x = field(d, v, k, what, sc.checks[k])
            if x ~= nil then
                out[k] = x
            end
        end
        return out
    end
end

-- LIST: min..max items, each checked as f.item ("<what>[i] ..."). A list
-- whose items have no words of their own is right or wrong as a whole
-- (keys 1..n, every item valid; its items are plain values). UNIQUE drops repeats (once normalised)
-- and counts the rest against max; other lists are counted first.
local function list_check(f, item_check)
    local whole = f.item.expected == nil
    local unique = band(f.flags, cdefs.FIELD_UNIQUE) ~= 0
    local too_many = f.too_many or "holds %d items (at most %d)"
    return function(v, d, what)
        if type(v) ~= "table" or (f.min > 0 and v[1] == nil) then
            return nil, f.expected
        end
        local n = #v
        if whole then
            for k, x in pairs(v) do
                if not (is_int(k) and k >= 1 and k <= n) or not item_check(x, d, what) then
                    return nil, f.expected
                end
            end
        end
        if not unique and n > f.max then
            err(d, "%s " .. too_many, what, n, f.max)
            return nil
        end
        local out, seen = {}, {}
        for i, x in ipairs(v) do
            local iv = check_value(d, x, fmt("%s[%d]", what, i), item_check)
            if iv ~= nil and not (unique and seen[iv]) then
                seen[iv] = true
                out[#out + 1] = iv
            end
        end
        if unique and #out > f.max then
            err(d, "%s " .. too_many, what, #out, f.max)
        end
        return out
    end
end

-- The checker of field f (see check_value).
local function checker(f)
    local kind = f.kind
    if kind == cdefs.FIELD_OBJECT then
        return object_check(f)
    elseif kind == cdefs.FIELD_LIST then
        return list_check(f, checker(f.item))
    end
    return base.value_check(f, cdefs)
end

schema = function(object)
    local s = { keys = {}, defaults = {}, checks = {}, fields = {}, nested = {},
                required = {}, expected = {}, field = {}, item_checks = {} }
    for _, f in ipairs(cdefs.config_fields(object)) do
        local name, kind = f.name, f.kind
        local check = checker(f)
        local internal = band(f.flags, cdefs.FIELD_INTERNAL) ~= 0
        if not internal then
            s.keys[#s.keys + 1] = name
        end
        s.field[name] = f
        if f.item then
            s.item_checks[name] = checker(f.item)
        end
        if check then
            s.checks[name] = check
            if internal then
                -- read where the caller has it (a positional argument)
            elseif kind == cdefs.FIELD_OBJECT or kind == cdefs.FIELD_LIST then
                s.nested[#s.nested + 1] = name
            elseif kind ~= cdefs.FIELD_ENUM then
                s.fields[#s.fields + 1] = name
            end
            s.defaults[name], s.expected[name] = f.def, f.expected
            s.required[name] = band(f.flags, cdefs.FIELD_REQUIRED) ~= 0 or nil
        end
    end
    return s
end

-- Reads every scalar and string field of `t` (sc.fields) into `out` (left
-- as is when absent; a required one absent is a mistake), but those of the
-- set `except`, which the caller reads itself.
fields = function(d, t, out, sc, prefix, except)
    for _, k in ipairs(sc.fields) do
        if not (except and except[k]) then
            local v = field(d, t, k, prefix, sc.checks[k])
            if v ~= nil then
                out[k] = v
            elseif t[k] == nil and sc.required[k] then
                err(d, "%s.%s %s, got nil", prefix, k, sc.expected[k])
            end
        end
    end
end

local SETTINGS, LIMITS, TIMEOUTS = schema("settings"), schema("limits"),
    schema("timeouts")
local HTTP2 = schema("http2")
local ACCESS_LOG = schema("access_log")
local UPSTREAM, TARGET, HEALTH = schema("upstream"), schema("target"),
    schema("health")
local UPSTREAM_TLS = schema("upstream_tls")
local SHARED_DICT, CACHE = schema("shared_dict"), schema("cache")
local ADMIN, LISTEN, ROUTE = schema("admin"), schema("listen"), schema("route")
local RETRIES, BACKOFF = schema("retries"), schema("backoff")
local OUTLIER, ROUTE_TIMEOUTS = schema("outlier"), schema("route_timeouts")
local ROUTE_GRPC = schema("route_grpc")
local SPLIT_ITEM, CANARY, MIRROR = schema("split_item"), schema("canary"),
    schema("mirror")
local TLS = schema("tls")
local DNS = schema("dns")
-- a header name (also an Upgrade token): src/header_names.c's rule, lower-cased
local HEADER_NAME = CACHE.item_checks.vary


-- settings.trusted_proxies: a list of "ADDR" or "ADDR/LEN", each checked
-- by the set's own parser (src/cidr.c, through mg_ffi_cidr_check).
local cidr_why = ffi.new("char[192]")

local function trusted_proxies(d, v)
    local ok = type(v) == "table"
    for k in pairs(ok and v or {}) do
        ok = ok and is_int(k) and k >= 1 and k <= #v
    end
    if not ok then
        err(d, 'settings.trusted_proxies must be a list of addresses or CIDRs ' ..
            'like { "10.0.0.0/8", "::1" }, got %s', describe(v))
        return nil
    end
    local out = {}
    for i, e in ipairs(v) do
        if type(e) ~= "string" then
            err(d, 'settings.trusted_proxies[%d] must be an address or CIDR ' ..
                'string like "10.0.0.0/8", got %s', i, describe(e))
        elseif C.mg_ffi_cidr_check(e, #e, cidr_why, 192) ~= 0 then
            err(d, "settings.trusted_proxies[%d]: %s", i, ffi.string(cidr_why))
        else
            out[#out + 1] = e
        end
    end
    return out
end

-- A map of header names to values (route.headers, settings.tracing.headers),
-- as a list of { name = lower-case name, value = value } sorted by name;
-- `f` is its LIST row (its words, its maximum).
local function header_map(d, headers, what, f)
    if type(headers) ~= "table" then
        err(d, "%s %s, got %s", what, f.expected, describe(headers))
        return nil
    end
    local out, seen = {}, {}
    for _, k in ipairs(sorted_keys(headers)) do
        local v = headers[k]
        if type(k) ~= "string" or not HEADER_NAME(k) then
            err(d, "%s key %s must be a header name", what, key_str(k))
        elseif type(v) ~= "string" or find(v, "[%z\r\n]") then
            err(d, "%s[%s] must be a string (no CR, LF or NUL), " ..
                "got %s", what, quote(k), describe(v))
        else
            local lk = lower(k)
            if seen[lk] then
                err(d, "%s names %s twice (names are " ..
                    "case-insensitive)", what, quote(lk))
            else
                seen[lk] = true
                out[#out + 1] = { name = lk, value = v }
            end
        end
    end
    sort(out, function(a, b) return a.name < b.name end)
    if #out > f.max then
        err(d, "%s " .. f.too_many, what, #out, f.max)
    end
    return out
end

-- settings.tracing: its fields by the schema (src/config.c); `resource`
-- (attribute names to strings) and `headers` (sent with each export) are
-- maps, handed over as lists of { name, value }.
local TRACING, TRACING_BATCH = schema("tracing"), schema("tracing_batch")

local function tracing(d, v)
    if type(v) ~= "table" then
        err(d, "settings.tracing %s, got %s", SETTINGS.expected.tracing, describe(v))
        return nil
    end
    local rest = {}
    for k, x in pairs(v) do
        if k ~= "resource" and k ~= "headers" then rest[k] = x end
    end
    local t = field(d, { tracing = rest }, "tracing", "settings", SETTINGS.checks.tracing)
    if not t then return nil end
    t.batch = t.batch or copy(TRACING_BATCH.defaults)
    t.headers = v.headers ~= nil and
        header_map(d, v.headers, "settings.tracing.headers", TRACING.field.headers) or {}
    local f = TRACING.field.resource
    local res = v.resource
    t.resource = {}
    if res ~= nil and type(res) ~= "table" then
        err(d, "settings.tracing.resource %s, got %s", f.expected, describe(res))
    elseif res ~= nil then
        for _, k in ipairs(sorted_keys(res)) do
            local x = res[k]
            if type(k) ~= "string" or k == "" then
                err(d, "settings.tracing.resource key %s must be a non-empty string " ..
                    "(an attribute name like \"deployment.environment\")", key_str(k))
            elseif type(x) ~= "string" then
                err(d, "settings.tracing.resource[%s] must be a string, got %s", quote(k),
                    describe(x))
            else
                t.resource[#t.resource + 1] = { name = k, value = x }
            end
        end
        if #t.resource > f.max then
            err(d, "settings.tracing.resource " .. f.too_many, #t.resource, f.max)
        end
    end
    return t
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
    s.limits, s.timeouts = copy(LIMITS.defaults), copy(TIMEOUTS.defaults)
    s.http2 = copy(HTTP2.defaults)
    s.access_log = copy(ACCESS_LOG.defaults)
    s.dns = copy(DNS.defaults)
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
    fields(d, t, s, SETTINGS, "settings", { error_log = true }) -- workers
    -- access_log: a path, or { path =, fields = } (the names: logfields.c)
    if type(t.access_log) == "string" then
        s.access_log.path = check_value(d, t.access_log, "settings.access_log",
                                        ACCESS_LOG.checks.path) or s.access_log.path
    else
        s.access_log = field(d, t, "access_log", "settings",
                             SETTINGS.checks.access_log) or s.access_log
    end
    s.error_log = field(d, t, "error_log", "settings", SETTINGS.checks.error_log)
        or s.error_log
    s.log_level = field(d, t, "log_level", "settings", SETTINGS.checks.log_level)
        or s.log_level
    s.real_ip_header = field(d, t, "real_ip_header", "settings",
                             SETTINGS.checks.real_ip_header) or s.real_ip_header
    if t.trusted_proxies ~= nil then
        s.trusted_proxies = trusted_proxies(d, t.trusted_proxies)
    end
    if t.tracing ~= nil then
        s.tracing = tracing(d, t.tracing)
    end
    s.limits = field(d, t, "limits", "settings", SETTINGS.checks.limits) or s.limits
    s.timeouts = field(d, t, "timeouts", "settings", SETTINGS.checks.timeouts)
        or s.timeouts
    s.http2 = field(d, t, "http2", "settings", SETTINGS.checks.http2) or s.http2
    s.dns = field(d, t, "dns", "settings", SETTINGS.checks.dns) or s.dns
    if s.dns.min_ttl > s.dns.max_ttl then
        err(d, "settings.dns.min_ttl (%g s) is above max_ttl (%g s): a record " ..
            "cannot be asked again both sooner and later", s.dns.min_ttl / 1000,
            s.dns.max_ttl / 1000)
    end
    if c.budget then
        -- the rest of this file's run has the budget it sets
        c.budget.seconds = s.timeouts.load / 1000
        c.budget.memory = s.limits.lua_memory
    end
    if t.admin == false then
        s.admin.enabled = false
    else
        -- the address, the token rule and the names' form are checked in
        -- C, by admin.c's own rules, when the config is converted
        s.admin = field(d, t, "admin", "settings", SETTINGS.checks.admin) or s.admin
        s.admin.enabled = true
    end
    s.line, s.source = d.line, source_name(c, d.source)
    c.settings_value = s
end

-- gw.test { request = {...}, expect = {...} }: the config's own examples,
-- run by `moongate check` and before every reload.
local TEST_KEYS = { "name", "request", "expect" }
local TEST_REQUEST_KEYS = { "method", "path", "headers", "body", "host", "client",
                            "port", "tls", "upstream_response", "proxy_tlvs" }
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

-- listen.tls: { cert = "site.pem", key = "site.key" }, or several
-- certificates chosen by SNI: { certs = { { cert = .., key = .. }, .. } }
-- (the first is the default); min_version "TLSv1.2" (default) or
-- "TLSv1.3"; ciphers: an OpenSSL TLS 1.2 cipher list. The files are read
-- (and checked) when the config is converted for C (src/tls.c). The first
-- form is normalised into the second.
local function listen_tls(d, v)
    if type(v) ~= "table" then
        err(d, "listen.tls %s, got %s", LISTEN.expected.tls, describe(v))
        return nil
    end
    check_keys(d, v, TLS.keys, "listen.tls")
    if v.certs ~= nil and (v.cert ~= nil or v.key ~= nil) then
        err(d, "listen.tls takes either cert/key or certs = { ... }, not both")
        return nil
    end
    local nerr = #d.c.errors
    local out = { line = d.line, source = source_name(d.c, d.source) }
    for _, k in ipairs(TLS.keys) do
        local x = field(d, v, k, "listen.tls", TLS.checks[k])
        if x == nil and v.certs == nil and (k == "cert" or k == "key")
            and v[k] == nil then
            -- without certs, both are required
            err(d, "listen.tls.%s %s, got nil", k, TLS.expected[k])
        end
        out[k] = x
    end
    out.client_auth = out.client_auth or TLS.defaults.client_auth -- C reads the name
    -- client_auth and crl are about client certificates: client_ca turns them on
    for _, k in ipairs { "client_auth", "crl" } do
        if v[k] ~= nil and v.client_ca == nil then
            err(d, "listen.tls.%s needs client_ca (the PEM file of the CAs that sign " ..
                "client certificates)", k)
        end
    end
    if #d.c.errors > nerr then
        return nil
    end
    if not out.certs then
        out.certs = { { cert = out.cert, key = out.key } }
    end
    out.cert, out.key = nil, nil
    return out
end

function decl.listen(d, t)
    d.c.nlisten = d.c.nlisten + 1
    if not table_arg(d, t, "gw.listen", "{ port = 8080 }") then
        return
    end
    check_keys(d, t, LISTEN.keys, "gw.listen")
    local l = { host = LISTEN.defaults.host, line = d.line,
                source = source_name(d.c, d.source) }
    if t.port == nil then
        err(d, "listen.port is required (an integer 1-65535)")
    else
        l.port = field(d, t, "port", "listen", LISTEN.checks.port)
    end
    l.host = field(d, t, "host", "listen", LISTEN.checks.host) or l.host
    -- only when true: C's default is false
    l.proxy_protocol = field(d, t, "proxy_protocol", "listen",
                             LISTEN.checks.proxy_protocol) or nil
    l.escaped_slashes = field(d, t, "escaped_slashes", "listen",
                              LISTEN.checks.escaped_slashes)
        or LISTEN.defaults.escaped_slashes
    if t.tls ~= nil then
        l.tls = listen_tls(d, t.tls)
    end
    -- HTTP/2: by ALPN on a TLS listener unless turned off; h2c (prior
    -- knowledge) only when asked for
    l.http2 = field(d, t, "http2", "listen", LISTEN.checks.http2)
    if l.http2 == nil then
        l.http2 = t.tls ~= nil
    end
    if l.port then
        local listeners = d.c.listeners
        listeners[#listeners + 1] = { value = l, d = d }
    end
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

-- The warning `msg` at d's line (`moongate check` prints it, a reload logs
-- it; the config loads).
local function warn(d, msg)
    local w = d.c.warnings
    w[#w + 1] = { source = d.source, line = d.line, msg = msg }
end

-- A TLS client's options (`what` = "upstream.tls", "<policy>.redis.tls"):
-- true (the defaults: verify against the system bundle, SNI and the
-- checked name from each server's host) or { verify, ca, sni, cert, key,
-- min_version, ciphers, session_reuse }. The files are read (and checked)
-- when C builds the configuration (src/tls_client.c); verify = false is
-- accepted with a warning, that begins with `who` (the client's name).
local function client_tls(d, v, what, who)
    if v == true then
        v = {}
    end
    if type(v) ~= "table" then
        err(d, '%s must be true or a table like { ca = "certs/ca.pem" }, got %s', what,
            describe(v))
        return nil
    end
    check_keys(d, v, UPSTREAM_TLS.keys, what)
    local out = copy(UPSTREAM_TLS.defaults)
    fields(d, v, out, UPSTREAM_TLS, what)
    for _, k in ipairs({ "ca", "cert", "key" }) do
        if out[k] then
            out[k] = config_relative(d.c, out[k])
        end
    end
    if (out.cert == nil) ~= (out.key == nil) then
        err(d, "%s.%s is missing: a client certificate needs both cert and key", what,
            out.cert and "key" or "cert")
    end
    if out.min_version and out.min_version ~= "TLSv1.2" and out.min_version ~= "TLSv1.3" then
        err(d, '%s.min_version must be "TLSv1.2" or "TLSv1.3", got %s', what,
            describe(out.min_version))
    end
    if out.sni and host_kind(out.sni) == cdefs.HOST_BAD then
        err(d, "%s.sni must be a host name, got %s", what, describe(out.sni))
    end
    if out.verify == false then
        local key = who and "tls" or what
        warn(d, fmt("%s%s.verify = false: its certificates are not checked, so anyone on " ..
                    "the path can pose as it (give %s.ca the CA that signed them instead)",
                    who and who .. ": " or "", key, key))
    end
    return out
end

--- For clients made while a config loads (moongate.redis's `tls`): the
-- TLS options `v` checked and normalised as upstream.tls's are (paths from
-- the config's directory; verify = false is a warning at the user's line,
-- beginning with `who`, the client's name).
-- Returns the options, or nil and the list of what is wrong. Outside a
-- load, paths stay as given and nothing warns.
function _M.client_tls(v, what, who)
    local c = current or { file = "./", warnings = {} }
    local d = { c = { file = c.file, errors = {}, warnings = c.warnings },
                source = nil, line = 0 }
    if current then
        d.source, d.line = where()
    end
    local out = client_tls(d, v, what, who)
    if #d.c.errors > 0 then
        local msgs = {}
        for i, e in ipairs(d.c.errors) do msgs[i] = e.msg end
        return nil, msgs
    end
    return out
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
        -- "https://host[:port]" makes the upstream a TLS one (port 443);
        -- "srv://NAME": its SRV records are the targets (weights, ports)
        local host, port, scheme = parse_target(addr)
        if host then
            u.schemes = u.schemes or {}
            u.schemes[scheme == cdefs.TARGET_HTTPS and "https"
                or scheme == cdefs.TARGET_HTTP and "http" or "plain"] = true
        end
        if not host then
            err(d, "%s %s, got %s", what, port, describe(addr))
        elseif scheme == cdefs.TARGET_SRV and type(t) == "table" and t.weight ~= nil then
            err(d, "%s %s: an SRV name's records give the weights (remove weight)",
                what, quote(addr))
        else
            local srv = scheme == cdefs.TARGET_SRV or nil
            local key = host .. "|" .. port .. (srv and "|srv" or "")
            if seen[key] then
                err(d, "%s %s is listed twice (use weight instead)", what,
                    quote(addr))
            end
            seen[key] = true
            u.targets[#u.targets + 1] = { host = host, port = port,
                                          weight = weight, srv = srv }
        end
    end
end

-- upstream.balancer (src/balancer.c's names) and upstream.hash, the hash
-- balancer's key: "client", "path", { header = NAME }, { cookie = NAME },
-- { query = NAME } or a function(req) returning a string (or nil: no key).
-- Left for C as u.hash = { on = ..., name = ... }; a function stays in
-- u.hash_fn (route_hash_key runs it).
local KEY_EXPECTED = 'must be "client", "path", { header = NAME }, ' ..
    '{ cookie = NAME } or { query = NAME }'
local HASH_EXPECTED = 'must be "client", "path", { header = NAME }, ' ..
    '{ cookie = NAME }, { query = NAME } or a function(req) returning a string'
local HASH_NAMED = { header = true, cookie = true, query = true }

-- Is `name` a header (a token, RFC 9110 5.1), cookie or query argument name
-- the key reader (src/balancer_key.c) can look for?
local function key_name_ok(on, name)
    local ok = type(name) == "string" and name ~= ""
        and not find(name, "[%z%s;=]")
    if ok and on == "header" then
        ok = not find(name, "[^%w!#$%%&'*+%-.^_`|~]")
    end
    return ok
end

-- A request key read by src/balancer_key.c, named `what` in messages:
-- "client", "path", { header = NAME }, { cookie = NAME }, { query = NAME },
-- or (fn_ok) a function. Returns { on = ..., name = ... } (and the
-- function), or nil after an error.
local function request_key(d, v, what, expected, fn_ok)
    if v == "client" or v == "path" then
        return { on = v }
    elseif fn_ok and type(v) == "function" then
        return { on = "lua" }, v
    elseif type(v) == "table" then
        local on, name = next(v)
        if HASH_NAMED[on] and next(v, on) == nil then
            if key_name_ok(on, name) then
                return { on = on,
                         name = on == "header" and lower(name) or name }
            end
            err(d, "%s.%s must be a %s name, got %s", what, on,
                on == "query" and "query argument" or on, describe(name))
            return nil
        end
    end
    err(d, "%s %s, got %s", what, expected, describe(v))
end

local function upstream_hash(d, v)
    return request_key(d, v, "upstream.hash", HASH_EXPECTED, true)
end

-- A hash upstream's key function runs as the last policy of each route
-- declared with that upstream: after the others, which may set what it
-- reads. Its string goes to the balancer (req:set_hash_key); nil: no key
-- (round robin for that request). `fn`: the function, or (a route with a
-- split or canary) a map of upstream name -> function, of which the one
-- of the upstream the request goes to runs.
local function route_hash_key(r, fn)
    local ps = r.policies or {}
    local by_upstream = type(fn) == "table" and fn
    ps[#ps + 1] = { on_request = function(req)
        if by_upstream then
            fn = by_upstream[req.upstream]
            if not fn then
                return
            end
        end
        local k = fn(req)
        if k ~= nil then
            if type(k) ~= "string" then
                error("upstream.hash function must return a string or " ..
                      "nil, got " .. type(k), 0)
            end
            req:set_hash_key(k)
        end
    end }
    r.policies = ps
end

local function upstream_balancer(d, u, opts)
    local b = opts.balancer
    if b ~= nil then
        u.balancer = field(d, opts, "balancer", "upstream",
                           UPSTREAM.checks.balancer) or u.balancer
    end
    if opts.hash ~= nil then
        if b == nil then
            u.balancer = "hash" -- a key says which balancer
        elseif u.balancer ~= "hash" then
            err(d, 'upstream.hash is read by balancer = "hash" only (this ' ..
                "upstream's is %s): remove one of them", quote(u.balancer))
        end
        u.hash, u.hash_fn = upstream_hash(d, opts.hash)
    elseif u.balancer == "hash" then
        err(d, 'upstream balancer "hash" needs the key to hash: hash = ' ..
            '{ header = "x-user" } (or cookie, query, "client", "path", ' ..
            "a function)")
    end
end

function decl.upstream(d, name, targets, opts, ...)
    local c = d.c
    if select("#", ...) > 0 then
        err(d, "gw.upstream takes (name, targets[, options]), got %d " ..
            "arguments", 3 + select("#", ...))
    end
    local named = UPSTREAM.checks.name(name) ~= nil
    if not named then
        err(d, "upstream name %s, got %s", UPSTREAM.expected.name, describe(name))
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
            -- upstream.health: active checks, { path = "/health", interval
            -- = 5, timeout = 2, fall = 3, rise = 2 }; src/health.c runs them
            u.health = field(d, opts, "health", "upstream", UPSTREAM.checks.health)
            if opts.retries ~= nil then
                u.retries = retries_option(d, opts.retries, "upstream.retries")
            end
            if opts.outlier ~= nil then
                u.outlier = outlier_option(d, opts.outlier)
            end
            if opts.tls ~= nil then
                u.tls = client_tls(d, opts.tls, "upstream.tls", "upstream " .. tostring(name))
            end
            upstream_balancer(d, u, opts)
            -- "h1" (default), "h2" or "grpc": HTTP/2 (src/h2_upstream.c)
            if opts.protocol ~= nil then
                u.protocol = field(d, opts, "protocol", "upstream",
                                   UPSTREAM.checks.protocol) or u.protocol
            end
        end
    end
    local schemes = u.schemes or {}
    u.schemes = nil
    if schemes.https and (schemes.http or schemes.plain) then
        err(d, "upstream %s mixes https:// targets with plain ones (one upstream speaks " ..
            "one protocol: declare two upstreams)", quote(tostring(name)))
    elseif schemes.https and not u.tls then
        u.tls = client_tls(d, true, "upstream.tls", "upstream " .. tostring(name))
    elseif schemes.http and u.tls then
        err(d, "upstream %s has http:// targets and tls (write the targets " ..
            'as "https://host:port" or "host:port")', quote(tostring(name)))
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

function decl.shared_dict(d, name, opts, ...)
    local c = d.c
    if select("#", ...) > 0 then
        err(d, "gw.shared_dict takes (name, options), got %d arguments",
            2 + select("#", ...))
    end
    local named = SHARED_DICT.checks.name(name) ~= nil
    if not named then
        err(d, "shared_dict name %s, got %s", SHARED_DICT.expected.name, describe(name))
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

-- gw.metrics.counter(name, help, labels) / gauge(...) / histogram(name,
-- help, labels, buckets): checked by src/metrics_user.c's rules
-- (mg_ffi_umetric_check); the object hooks count through
-- (moongate.metrics) is returned, the same one for a declaration made
-- again the same way (a policy's constructor called twice).
local DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local DEFAULT_MAX_SERIES = 1000

local function same_metric(a, b)
    if a.kind ~= b.kind or a.help ~= b.help or a.max_series ~= b.max_series
        or #a.labels ~= #b.labels or #(a.buckets or {}) ~= #(b.buckets or {}) then
        return false
    end
    for i, l in ipairs(a.labels) do
        if b.labels[i] ~= l then return false end
    end
    for i, x in ipairs(a.buckets or {}) do
        if b.buckets[i] ~= x then return false end
    end
    return true
end

-- labels: nil, or a list of label names with max_series = N beside them
local function metric_labels(d, what, labels)
    if labels == nil then return {}, DEFAULT_MAX_SERIES end
    if type(labels) ~= "table" then
        err(d, '%s: labels must be a list of label names like { "route", ' ..
            'max_series = 100 }, got %s', what, describe(labels))
        return nil
    end
    local list, n = {}, #labels
    for k, v in pairs(labels) do
        if k == "max_series" then
            -- checked with the rest in C
        elseif not (is_int(k) and k >= 1 and k <= n) then
            err(d, "%s: unknown key %s in the labels (a list of names, and " ..
                "max_series)", what, key_str(k))
            return nil
        elseif type(v) ~= "string" then
            err(d, "%s: labels[%d] must be a label name (a string), got %s", what,
                k, describe(v))
            return nil
        end
    end
    for i = 1, n do list[i] = labels[i] end
    local max = labels.max_series
    if max ~= nil and type(max) ~= "number" then
        err(d, "%s: max_series must be an integer 1-100000, got %s", what,
            describe(max))
        return nil
    end
    return list, max or DEFAULT_MAX_SERIES
end

local function metric_decl(kind)
    return function(d, name, help, labels, buckets, ...)
        local c = d.c
        local what = "gw.metrics." .. kind
        local metrics = require "moongate.metrics"
        if select("#", ...) > 0 or (kind ~= "histogram" and buckets ~= nil) then
            err(d, "%s takes (name, help, labels%s)", what,
                kind == "histogram" and ", buckets" or "")
            return metrics.unbound(kind, name)
        end
        if type(name) ~= "string" then
            err(d, "%s: the name must be a string, got %s", what, describe(name))
            return metrics.unbound(kind, name)
        end
        if type(help) ~= "string" or help == "" then
            err(d, "%s(%s, help): help must be a non-empty string saying what it " ..
                "counts (Prometheus shows it), got %s", what, quote(name), describe(help))
            return metrics.unbound(kind, name)
        end
        local list, max_series = metric_labels(d, what, labels)
        if not list then return metrics.unbound(kind, name) end
        if kind == "histogram" then
            if buckets == nil then
                buckets = DEFAULT_BUCKETS
            elseif type(buckets) ~= "table" then
                err(d, "%s: buckets must be a list of upper bounds like { 0.1, 1, " ..
                    "10 }, got %s", what, describe(buckets))
                return metrics.unbound(kind, name)
            end
            for i, b in ipairs(buckets) do
                if type(b) ~= "number" then
                    err(d, "%s: buckets[%d] must be a number, got %s", what, i, describe(b))
                    return metrics.unbound(kind, name)
                end
            end
        else
            buckets = nil
        end
        local m = { name = name, help = help, kind = kind, labels = list,
                    buckets = buckets and { unpack(buckets) }, max_series = max_series,
                    line = d.line, source = source_name(c, d.source) }
        local why = metrics.check(kind, name, list, buckets, max_series)
        if why then
            err(d, "%s: %s", what, why)
            return metrics.unbound(kind, name)
        end
        local first = c.metric_by_name[name]
        if first then
            if same_metric(first.value, m) then return first.value.object end
            err(d, "%s %s is declared at %s otherwise (another type, help, labels, " ..
                "buckets or max_series): declare it once, or give it another name",
                what, quote(name), at(d, first.d))
            return metrics.unbound(kind, name)
        end
        m.object = metrics.object(m)
        local entry = { value = m, d = d }
        c.metric_by_name[name] = entry
        c.metrics[#c.metrics + 1] = entry
        return m.object
    end
end
decl["metrics.counter"] = metric_decl("counter")
decl["metrics.gauge"] = metric_decl("gauge")
decl["metrics.histogram"] = metric_decl("histogram")

local function route_methods(d, methods)
    if type(methods) ~= "table" then
        err(d, "route.methods %s, got %s", ROUTE.expected.methods, describe(methods))
        return nil
    end
    local f = ROUTE.field.methods
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
    if #out > f.max then
        err(d, "route.methods " .. f.too_many, #out, f.max)
    end
    return out
end

-- route.upgrades: the protocols a client may switch to through this route
-- (Upgrade tokens, lower-cased, without versions). Absent: { "websocket" },
-- filled in by src/config.c; {} allows none. h2c is never tunnelled: the
-- gateway removes it from every request, whatever the route says.
local function route_upgrades(d, list)
    if type(list) ~= "table" then
        err(d, "route.upgrades %s, got %s", ROUTE.expected.upgrades, describe(list))
        return nil
    end
    local f = ROUTE.field.upgrades
    local n = #list
    for _, k in ipairs(sorted_keys(list)) do
        if not (is_int(k) and k >= 1 and k <= n) then
            err(d, 'unknown key %s in route.upgrades (a list like { "websocket" })',
                key_str(k))
        end
    end
    local out, seen = {}, {}
    for i = 1, n do
        local p = check_value(d, list[i], fmt("route.upgrades[%d]", i),
                              ROUTE.item_checks.upgrades)
        if p == "h2c" then
            err(d, 'route.upgrades[%d] "h2c" cannot be allowed: the gateway ' ..
                "always removes HTTP/2 upgrades (remove it from the list)", i)
        elseif p and not seen[p] then
            seen[p] = true
            out[#out + 1] = p
        end
    end
    if #out > f.max then
        err(d, "route.upgrades " .. f.too_many, #out, f.max)
    end
    return out
end

local function route_headers(d, headers)
    return header_map(d, headers, "route.headers", ROUTE.field.headers)
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
    fields(d, v, out, CACHE, "route.cache", CACHE_LATER)
    out.statuses = field(d, v, "statuses", "route.cache", CACHE.checks.statuses)
        or out.statuses
    out.vary = field(d, v, "vary", "route.cache", CACHE.checks.vary) or out.vary
    if v.redis ~= nil then
        -- the same options as moongate.redis (checked by it)
        local ok, client = pcall(require("moongate.redis").new, v.redis,
                                 "route.cache.redis")
        if not ok then
            err(d, "%s", (gsub(tostring(client), "^[^\n]-:%d+: ", "")))
        else
            out.redis = { host = client.host, port = client.port,
                          password = client.password, username = client.username,
                          db = client.db,
                          pool = client.pool, timeout = client.timeout,
                          connect_timeout = client.connect_timeout,
                          tls = client.tls }
        end
    end
    out.dict = field(d, v, "dict", "route.cache", CACHE.checks.dict) or out.dict
    return out
end

local function route_rewrite(d, r, t, pinfo)
    local rw = field(d, t, "rewrite", "route", ROUTE.checks.rewrite)
    if not rw then
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

-- route.split: a list of { upstream = NAME, weight = N } (2 to
-- MG_MAX_SPLIT of them, weights 0-1000000 adding up to 1 or more) and an
-- optional key = (upstream.hash's forms but a function): the same key, the
-- same upstream. The names are resolved in finish() (upstream_name).
-- t.upstream, an upstream name that finish() resolves, into o.upstream_name
-- (`what`: t's name in messages). Returns true, or false after an error.
local function upstream_ref(d, t, what, o)
    if type(t.upstream) ~= "string" then
        err(d, "%s.upstream must be an upstream name (string), got %s", what,
            describe(t.upstream))
        return false
    end
    o.upstream_name = t.upstream
    return true
end

local SPLIT_EXPECTED = 'must be a list like { { upstream = "v1", weight = 90 }, ' ..
    '{ upstream = "v2", weight = 10 } }'
local MAX_SPLIT = 64 -- src/config.h MG_MAX_SPLIT

local function route_split(d, v)
    if type(v) ~= "table" or v[1] == nil then
        err(d, "route.split %s, got %s", SPLIT_EXPECTED, describe(v))
        return nil
    end
    local n = #v
    for _, k in ipairs(sorted_keys(v)) do
        if k ~= "key" and not (is_int(k) and k >= 1 and k <= n) then
            err(d, "unknown key %s in route.split (it lists { upstream = NAME, " ..
                "weight = N } entries, then key = { cookie = NAME } or another " ..
                "request key)", key_str(k))
        end
    end
    if n < 2 or n > MAX_SPLIT then
        err(d, "route.split lists %d upstream%s: it takes 2-%d (one alone: " ..
            "route.upstream)", n, n == 1 and "" or "s", MAX_SPLIT)
    end
    local out, total, seen = {}, 0, {}
    for i = 1, n do
        local what, e = fmt("route.split[%d]", i), v[i]
        if type(e) ~= "table" then
            err(d, '%s must be a table like { upstream = "v1", weight = 90 }, got %s',
                what, describe(e))
        else
            check_keys(d, e, SPLIT_ITEM.keys, what)
            local o = copy(SPLIT_ITEM.defaults)
            fields(d, e, o, SPLIT_ITEM, what)
            if upstream_ref(d, e, what, o) then
                if seen[e.upstream] then
                    err(d, "%s.upstream %s is listed twice (give it one entry, the " ..
                        "weights added up)", what, quote(e.upstream))
                end
                seen[e.upstream] = true
            end
            total = total + (o.weight or 0)
            out[#out + 1] = o
        end
    end
    if #out == n and total < 1 then
        err(d, "route.split's weights add up to 0: give at least one entry a weight")
    end
    if v.key ~= nil then
        out.key = request_key(d, v.key, "route.split.key", KEY_EXPECTED, false)
    end
    return out
end

-- route.canary = { header = NAME | cookie = NAME, value = nil|STRING,
-- upstream = NAME }: requests so marked go to that upstream.
local CANARY_EXAMPLE = '{ header = "x-canary", value = "1", upstream = "v2" }'

local function route_canary(d, v)
    if type(v) ~= "table" then
        err(d, "route.canary must be a table like %s, got %s", CANARY_EXAMPLE,
            describe(v))
        return nil
    end
    check_keys(d, v, CANARY.keys, "route.canary")
    local o = {}
    if (v.header == nil) == (v.cookie == nil) then
        err(d, "route.canary needs exactly one of header or cookie (what marks a " ..
            "canary request), got %s", v.header ~= nil and "both" or "neither")
    elseif v.header ~= nil then
        o.header = field(d, v, "header", "route.canary", CANARY.checks.header)
    elseif key_name_ok("cookie", v.cookie) then
        o.cookie = v.cookie
    else
        err(d, "route.canary.cookie must be a cookie name, got %s", describe(v.cookie))
    end
    o.value = field(d, v, "value", "route.canary", CANARY.checks.value)
    upstream_ref(d, v, "route.canary", o)
    return o
end

-- route.mirror = NAME or { upstream = NAME, body, concurrency, timeout,
-- percent } (src/mirror.c).
local function route_mirror(d, v)
    if type(v) == "string" then
        v = { upstream = v }
    end
    local o = object_option(d, v, MIRROR, "route.mirror",
                            '"shadow" or { upstream = "shadow", body = "64k" }')
    if o then
        upstream_ref(d, v, "route.mirror", o)
    end
    return o
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
    -- route.grpc: gRPC requests to a service (its path "/service/", any
    -- method) or one method ("/service/method"), POST only; the router
    -- also wants a gRPC content type (src/grpc.c)
    if t.grpc ~= nil then
        r.grpc = object_option(d, t.grpc, ROUTE_GRPC, "route.grpc",
                               '{ service = "helloworld.Greeter", method = "SayHello" }')
        if path ~= nil then
            err(d, "route.grpc gives the route its path (/service/method): " ..
                "remove route.path")
        end
        if t.methods ~= nil then
            err(d, "route.grpc routes take POST only (gRPC's method): " ..
                "remove route.methods")
        end
        -- its names are grpc.c's identifiers: the path is a valid pattern
        r.path = r.grpc and r.grpc.service and
            "/" .. r.grpc.service .. "/" .. (r.grpc.method or "") or "/"
        pinfo = parse_pattern(r.path)
        r.methods = { "POST" }
    elseif path == nil then
        err(d, 'route.path is required (a pattern like "/orders/**")')
    elseif field(d, t, "path", "route", ROUTE.checks.path) then
        local why
        pinfo, why = parse_pattern(path)
        if not pinfo then
            err(d, "route.path %s is not a valid pattern: %s", quote(path), why)
        end
        r.path = path
    end
    r.name = field(d, t, "name", "route", ROUTE.checks.name) or r.path

    local up, handler, split = t.upstream, t.handler, t.split
    if up == nil and handler == nil and split == nil then
        err(d, "route needs one of upstream (an upstream name), split (upstreams " ..
            "by weight) or handler (a function), got neither")
    elseif up ~= nil and handler ~= nil and split == nil then
        err(d, "route needs exactly one of upstream or handler, got both")
    elseif split ~= nil and (up ~= nil or handler ~= nil) then
        err(d, "route needs exactly one of upstream, split or handler, got " ..
            "split and %s", up ~= nil and "upstream" or "handler")
    elseif split ~= nil then
        r.split = route_split(d, split)
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

    if t.methods ~= nil and t.grpc == nil then
        r.methods = route_methods(d, t.methods)
    end
    if t.upgrades ~= nil then
        r.upgrades = route_upgrades(d, t.upgrades)
        if r.handler then
            err(d, "route.upgrades needs an upstream: a handler route's " ..
                "answers are made by Lua, never tunnelled")
        end
    end
    r.host = field(d, t, "host", "route", ROUTE.checks.host)
    r.headers = t.headers ~= nil and route_headers(d, t.headers) or {}
    r.listen = field(d, t, "listen", "route", ROUTE.checks.listen) or r.listen
    r.strip_prefix = field(d, t, "strip_prefix", "route", ROUTE.checks.strip_prefix)
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
    if t.canary ~= nil then
        r.canary = route_canary(d, t.canary)
    end
    if t.mirror ~= nil then
        r.mirror = route_mirror(d, t.mirror)
    end
    if (t.canary ~= nil or t.mirror ~= nil) and r.handler then
        err(d, "route.canary and route.mirror need an upstream: a handler " ..
            "route's answers are made by Lua")
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
                    concat(headers, "\0"), tostring(r.listen),
                    r.grpc and "grpc" or "" }, "\1")
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
    cfg.limits, cfg.timeouts, cfg.http2 = s.limits, s.timeouts, s.http2
    cfg.tracing = s.tracing
    cfg.resolver, cfg.dns = s.resolver, s.dns
    if s.trusted_proxies and s.trusted_proxies[1] then
        -- none: nothing is believed, and the header does not matter
        cfg.trusted_proxies, cfg.real_ip_header = s.trusted_proxies, s.real_ip_header
    end

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
        elseif l.proxy_protocol and not (s.trusted_proxies
                                         and s.trusted_proxies[1]) then
            err(d, "listen.proxy_protocol needs settings.trusted_proxies: the " ..
                "addresses of the proxies that send the PROXY header (any " ..
                "other peer is refused)")
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
    -- an upstream named by a route (`what`): its index, or nil
    local function resolve(d, t, what)
        local name = t.upstream_name
        t.upstream_name = nil
        local i = index[name]
        if not i then
            local declared = #names == 0 and "none declared" or
                "declared: " .. concat(names, ", ")
            err(d, "%s %s is not declared (%s%s)", what, quote(name),
                did_you_mean(name, names), declared)
        end
        return i
    end
    for i, e in ipairs(c.routes) do
        local r, d = e.value, e.d
        if r.upstream_name then
            r.upstream = resolve(d, r, "route.upstream")
            local up = cfg.upstreams[r.upstream]
            if up and up.hash_fn and not r.canary then
                route_hash_key(r, up.hash_fn)
            end
        end
        -- where the route sends requests: its upstream, split, canary
        local goes = {}
        if r.upstream then
            goes[r.upstream] = true
        end
        for j, sp in ipairs(r.split or {}) do
            if sp.upstream_name then
                sp.upstream = resolve(d, sp, fmt("route.split[%d].upstream", j))
                goes[sp.upstream or 0] = true
            end
        end
        if r.canary and r.canary.upstream_name then
            r.canary.upstream = resolve(d, r.canary, "route.canary.upstream")
            goes[r.canary.upstream or 0] = true
        end
        if r.split or r.canary then
            local fns, any = {}, false
            for ui in pairs(goes) do
                local up = cfg.upstreams[ui]
                if up and up.hash_fn then
                    fns[up.name], any = up.hash_fn, true
                end
            end
            if any then
                route_hash_key(r, fns)
            end
        end
        if r.mirror and r.mirror.upstream_name then
            local name = r.mirror.upstream_name
            r.mirror.upstream = resolve(d, r.mirror, "route.mirror.upstream")
            if goes[r.mirror.upstream] then
                err(d, "route.mirror.upstream %s is an upstream the route sends its " ..
                    "requests to: each would reach it twice (mirror to another one)",
                    quote(name))
            end
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
            elseif r.cache.dict == CACHE.defaults.dict then
                r.cache.dict_size = CACHE_DICT_SIZE
                local decl = { name = CACHE.defaults.dict, size = CACHE_DICT_SIZE,
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
    cfg.metrics = {}
    for i, e in ipairs(c.metrics) do
        cfg.metrics[i] = e.value
    end
    cfg.hooks = c.hooks
    -- in the order they were made: "file:line: warning: ..."
    for i, w in ipairs(c.warnings) do
        cfg.warnings = cfg.warnings or {}
        cfg.warnings[i] = fmt("%s:%d: warning: %s", source_name(c, w.source), w.line, w.msg)
    end
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
    return decl[kind](d, ...)
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
    for _, u in ipairs(cfg.upstreams or {}) do enable(u.hash_fn) end
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

--- For policies that read a data file while a config loads (basic_auth's
-- htpasswd file, key_auth's key file): PATH as given when absolute, else
-- taken from the config's directory; the running gateway then watches it
-- like the config's own files (a change reloads, rereading it). Outside a
-- load: PATH as is.
function _M.data_file(path)
    if not current then return path end
    if sub(path, 1, 1) ~= "/" then
        local dir = config_dir(current.file)
        if dir ~= "." then path = (dir == "/" and "" or dir) .. "/" .. path end
    end
    for _, f in ipairs(loaded_files) do
        if f == path then return path end
    end
    loaded_files[#loaded_files + 1] = path
    return path
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
