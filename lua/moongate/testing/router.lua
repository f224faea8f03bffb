-- moongate.testing.router: the real router (src/router.c) reached through
-- the FFI, for moongate.testing.
--
-- Inside the moongate binary the symbols are in ffi.C (linked with -Wl,-E);
-- elsewhere the test library is loaded (MG_TEST_LIB, default
-- build/libmgtest.so). A built router borrows the mg_route_t array and every
-- string it points to: the handle keeps them alive as long as it lives.
local ffi = require "ffi"
require "moongate.cdefs"   -- mg_ffi_now, mg_ffi_monotonic, mg_ffi_route_pattern

local type, ipairs, pcall, tostring, tonumber, error, setmetatable =
    type, ipairs, pcall, tostring, tonumber, error, setmetatable
local ffi_new, ffi_string, ffi_gc, ffi_cast =
    ffi.new, ffi.string, ffi.gc, ffi.cast
local lower, fmt, gsub = string.lower, string.format, string.gsub
local max = math.max

-- Every declaration used here, with the header it mirrors exactly
-- (spec/unit/cdefs_spec.lua checks them against the headers; their lines
-- are as long as the C ones).
local DECLS = {
    { "config.h", [[
typedef struct mg_route_header_s {
    char *name;
    char *value;
} mg_route_header_t;]] },
    { "config.h", "typedef struct mg_route_cache_s mg_route_cache_t;" },
    { "config.h", "typedef struct mg_retry_policy_s mg_retry_policy_t;" },
    { "config.h", "typedef struct mg_split_s mg_split_t;" },
    { "config.h", "typedef struct mg_canary_s mg_canary_t;" },
    { "config.h", "typedef struct mg_mirror_s mg_mirror_t;" },
    { "config.h", [[
typedef struct mg_route_timeouts_s {
    uint64_t connect;
    uint64_t first_byte;
    uint64_t idle;
    uint64_t total;
} mg_route_timeouts_t;]] },
    { "config.h", [[
typedef struct mg_route_s {
    char *name;
    char *path;
    char *host;
    char *methods[MG_MAX_METHODS];
    size_t nmethods;
    char *upgrades[MG_MAX_UPGRADES];
    size_t nupgrades;
    mg_route_header_t headers[MG_MAX_ROUTE_HEADERS];
    size_t nheaders;
    int upstream;
    int has_handler;
    char *strip_prefix;
    char *rewrite;
    uint64_t max_body;
    mg_route_cache_t *cache;
    uint16_t listen_port;
    uint32_t metric_id;
    int index;
    int line;
    int escaped_slashes;
    mg_retry_policy_t *retries;
    mg_route_timeouts_t timeouts;
    int retry_state;
    char *grpc_service;
    char *grpc_method;
    int chooses;
    mg_split_t *split;
    mg_canary_t *canary;
    mg_mirror_t *mirror;
} mg_route_t;]] },
    { "router.h", "typedef struct mg_router_s mg_router_t;" },
    { "router.h", [[
typedef const char *(*mg_header_get_fn)(void *ctx, const char *name, size_t name_len,
                                        size_t *value_len);]] },
    { "router.h", [[
typedef struct mg_route_match_s {
    const mg_route_t *route;
    size_t nparams;
    struct {
        const char *name;
        size_t name_len;
        const char *value;
        size_t value_len;
    } params[MG_ROUTER_MAX_PARAMS];
    const char *rest;
    size_t rest_len;
} mg_route_match_t;]] },
    { "router.h", [[
int mg_router_build(mg_router_t **out, const mg_route_t *routes, size_t nroutes,
                    const char **err);]] },
    { "router.h", "void mg_router_free(mg_router_t *r);" },
    { "router.h", [[
int mg_router_match(const mg_router_t *r, uint16_t local_port, const char *method,
                    size_t method_len, const char *host, size_t host_len,
                    const char *path, size_t path_len,
                    mg_header_get_fn get_header, void *get_header_ctx,
                    mg_route_match_t *m);]] },
    { "router.h", [[
long mg_router_upstream_path(const mg_route_match_t *m, const char *path,
                             size_t path_len, char *out, size_t cap);]] },
    { "shdict.h", "typedef struct mg_shdict_s mg_shdict_t;" },
    { "shdict.h", "mg_shdict_t *mg_shdict_open(const char *name, size_t cap);" },
}

local CONSTS = {
    MG_MAX_METHODS = 16, MG_MAX_UPGRADES = 8, MG_MAX_ROUTE_HEADERS = 8,
    MG_ROUTER_MAX_PARAMS = 8,
}

-- Specs declare the same types: a second identical struct is not an error.
for _, d in ipairs(DECLS) do
    local ok, err = pcall(ffi.cdef, (gsub(d[2], "MG_[%u_]+", CONSTS)))
    if not ok and not tostring(err):find("redefine", 1, true) then
        error(err)
    end
end


local _M = { DECLS = DECLS, CONSTS = CONSTS }

_M.OK, _M.NOT_FOUND, _M.BAD_METHOD = 0, -1, -2

local lib, lib_err = require("moongate.clib").load("mg_router_match")

--- The C namespace, or nil and why it could not be loaded.
function _M.lib()
    return lib, lib_err
end

--- Seconds on a monotonic clock (for hook timings).
function _M.monotonic()
    return lib.mg_ffi_monotonic()
end

--- Seconds since the epoch, millisecond resolution (what gw.now gives).
function _M.now()
    return lib.mg_ffi_now()
end

local pattern_why = ffi_new("char[256]")

--- mg_ffi_route_pattern (the router's own parser): nil when `pattern` is
-- valid, else the reason.
function _M.check_pattern(pattern)
    if lib.mg_ffi_route_pattern(pattern, #pattern, nil, pattern_why, 256) == 0 then
        return nil
    end
    return ffi_string(pattern_why)
end

--- Opens (creates) shared dictionary `name` of `size` bytes, as the process
-- does before its workers start. Returns true or nil.
function _M.open_shared_dict(name, size)
    return lib.mg_shdict_open(name, size) ~= nil or nil
end


-- Routers -------------------------------------------------------------------

local Router = {}
local router_mt = { __index = Router }

--- Builds the router of normalised config `cfg` (moongate.config) exactly
-- as src/config.c lays the routes out. Returns a router, or nil and the C
-- reason.
function _M.build(cfg)
    local keep = {}
    local function str(s)
        if s == nil then
            return nil
        end
        local b = ffi_new("char[?]", #s + 1, s)
        keep[#keep + 1] = b
        return b
    end
    local list = cfg.routes
    local routes = ffi_new("mg_route_t[?]", max(#list, 1))
    for i, t in ipairs(list) do
        local r = routes[i - 1]
        r.name = str(t.name)
        r.path = str(t.path)
        r.host = str(t.host)
        local methods = t.methods or {}
        for j, m in ipairs(methods) do
            r.methods[j - 1] = str(m)
        end
        r.nmethods = #methods
        for j, h in ipairs(t.headers or {}) do
            r.headers[j - 1].name = str(h.name)
            r.headers[j - 1].value = str(h.value)
        end
        r.nheaders = #(t.headers or {})
        r.upstream = t.upstream and t.upstream - 1 or -1
        r.has_handler = type(t.handler) == "function" and 1 or 0
        r.strip_prefix = str(t.strip_prefix)
        r.rewrite = str(t.rewrite)
        r.max_body = t.max_body or 0
        r.listen_port = t.listen or 0
        r.index = i - 1
        r.line = t.line or 0
    end
    local out = ffi_new("mg_router_t *[1]")
    local err = ffi_new("const char *[1]")
    if lib.mg_router_build(out, routes, #list, err) ~= 0 then
        return nil, err[0] ~= nil and ffi_string(err[0])
            or "router build failed"
    end
    return setmetatable({
        r = ffi_gc(out[0], lib.mg_router_free),
        routes = routes,
        keep = keep,
    }, router_mt)
end

-- The headers of the request being matched: a list of { name, value } as
-- received. C asks by lower-case name for the first of that name.
local match_headers
local get_header

local function lookup(ctx, name, name_len, value_len)
    local want = ffi_string(name, name_len)
    local hs = match_headers
    if hs then
        for i = 1, #hs do
            local h = hs[i]
            if lower(h[1]) == want then
                value_len[0] = #h[2]
                return h[2]
            end
        end
    end
    return nil
end

-- C calls back into Lua from mg_router_match: never from a compiled trace.
local function do_match(self, port, method, host, path_buf, path_len, m)
    return lib.mg_router_match(self.r, port, method, #method, host,
                               host and #host or 0, path_buf, path_len,
                               get_header, nil, m)
end
jit.off(do_match)

--- Matches a request on normalised path `path` (a string). `headers` is
-- the received header list. Returns the router code, the filled
-- mg_route_match_t (route NULL unless OK) and the buffer holding the path
-- its params point into (keep it alive with the match).
function Router.match(self, port, method, host, path, headers)
    if not get_header then
        get_header = ffi_cast("mg_header_get_fn", lookup)
    end
    local buf = ffi_new("char[?]", #path + 1, path)
    local m = ffi_new("mg_route_match_t")
    match_headers = headers
    local rc = do_match(self, port, method, host, buf, #path, m)
    match_headers = nil
    return rc, m, buf
end

--- mg_router_upstream_path for match `m` and the current path `path`.
function Router.upstream_path(self, m, path)
    local cap = 2 * #path + 256
    while true do
        local out = ffi_new("char[?]", cap)
        local n = tonumber(lib.mg_router_upstream_path(m, path, #path, out,
                                                       cap))
        if n >= 0 then
            return ffi_string(out, n)
        end
        cap = cap * 4
    end
end

--- The params of a match as a list of { name, value } (pattern order) and
-- the rest ("**" or prefix) or nil.
function _M.params(m)
    local list = {}
    for i = 0, tonumber(m.nparams) - 1 do
        local p = m.params[i]
        list[#list + 1] = { ffi_string(p.name, p.name_len),
                            ffi_string(p.value, p.value_len) }
    end
    local rest
    if m.rest ~= nil then
        rest = ffi_string(m.rest, m.rest_len)
    end
    return list, rest
end

return _M
