-- moongate.metrics: a config's own metrics, gw.metrics.counter, gauge and
-- histogram (docs/metrics.md), counted in C (src/metrics_user.c) through
-- the FFI.
--
--   local hits = gw.metrics.counter("shop_orders_total", "Orders placed.",
--                                   { "tenant", max_series = 500 })
--   ... in a hook: hits:inc(1, req.ctx.tenant)
--
-- Declared while the config loads (moongate.config checks and records
-- them); the object a declaration returns is bound to its C metric once
-- the config runs: in a worker by runtime.init (the worker's shard of the
-- generation's metric, shared with every worker and kept across reloads),
-- in the testing kit and the REPL to a metric of their own. Counting
-- allocates nothing: the label values go to C as they are (strings; a
-- number or boolean is made a string first).
local ffi = require "ffi"

local type, tostring, select, error, setmetatable =
    type, tostring, select, error, setmetatable
local fmt = string.format
local huge = math.huge

ffi.cdef [[
typedef struct mg_umetric_handle_s mg_umetric_handle_t;
int mg_ffi_umetric_check(const char *kind, const char *name, const char *const *labels,
                         size_t nlabels, const double *buckets, size_t nbuckets,
                         double max_series, char *why, size_t cap);
void mg_ffi_umetric_update(mg_umetric_handle_t *h, int op, double v, const char *a, size_t al,
                           const char *b, size_t bl, const char *c, size_t cl, const char *d,
                           size_t dl);
void mg_ffi_umetric_updatev(mg_umetric_handle_t *h, int op, double v, const char *const *vals,
                            const size_t *lens);
int mg_ffi_umetric_read(mg_umetric_handle_t *h, const char *const *vals, const size_t *lens,
                        double *out);
mg_umetric_handle_t *mg_ffi_umetric_private(const char *kind, const char *name,
                                            const char *help, const char *const *labels,
                                            size_t nlabels, const double *buckets,
                                            size_t nbuckets, uint32_t max_series);
void mg_ffi_umetric_private_free(mg_umetric_handle_t *h);
]]

local C = require("moongate.clib").require("mg_ffi_umetric_update")
local update4, updatev, read = C.mg_ffi_umetric_update, C.mg_ffi_umetric_updatev,
    C.mg_ffi_umetric_read

local _M = {}

local ADD, SET, OBSERVE = 1, 2, 3 -- MG_FFI_UMETRIC_* (mg_ffi.h)
local MAX_LABELS = 16             -- MG_UMETRIC_MAX_LABELS (metrics_user.h)
local handle_t = ffi.typeof("mg_umetric_handle_t *")

-- scratch for five or more label values, and for reads (one thread per state)
local vptr = ffi.new("const char *[?]", MAX_LABELS)
local vlen = ffi.new("size_t[?]", MAX_LABELS)
local out = ffi.new("double[2]")
local why = ffi.new("char[256]")

--- The declaration's reason to be refused (src/metrics_user.c's rules:
-- names, labels, buckets, max_series), or nil.
function _M.check(kind, name, labels, buckets, max_series)
    local nb = buckets and #buckets or 0
    local cl = ffi.new("const char *[?]", #labels + 1, labels)
    local cb = ffi.new("double[?]", nb + 1, buckets or {})
    if C.mg_ffi_umetric_check(kind, name, cl, #labels, cb, nb, max_series, why, 256) ~= 0 then
        return ffi.string(why)
    end
    return nil
end

-- Misuse is raised at the hook's line (the levels count from the hook's
-- call of a method: hook, method, update or value_of, then these).
local function not_live(self)
    error(fmt("gw.metrics: %s counts from hooks, timers and handlers, not while the " ..
              "config loads", self.name), 4)
end

local function label_string(self, v, i, level)
    local tv = type(v)
    if tv == "number" or tv == "boolean" then return tostring(v) end
    error(fmt("gw.metrics: %s: label value %d (%s) must be a string, got %s", self.name,
              i, self.labels[i], tv), level)
end

local function wrong_count(self, n)
    error(fmt("gw.metrics: %s takes %d label value(s) (%s), got %d", self.name,
              #self.labels, table.concat(self.labels, ", "), n), 4)
end

-- Fills vptr/vlen with the label values (strings kept alive by the caller).
local function fill(self, n, ...)
    for i = 1, n do
        local v = select(i, ...)
        if type(v) ~= "string" then v = label_string(self, v, i, 5) end
        vptr[i - 1], vlen[i - 1] = v, #v
    end
end

-- One update: op with value v and n label values.
local function update(self, op, v, n, a, b, c, d, ...)
    local h = self._h
    if h == nil then not_live(self) end
    if n ~= self.nlabels then wrong_count(self, n) end
    if n <= 4 then
        if n > 0 and type(a) ~= "string" then a = label_string(self, a, 1, 4) end
        if n > 1 and type(b) ~= "string" then b = label_string(self, b, 2, 4) end
        if n > 2 and type(c) ~= "string" then c = label_string(self, c, 3, 4) end
        if n > 3 and type(d) ~= "string" then d = label_string(self, d, 4, 4) end
        update4(h, op, v, a, a and #a or 0, b, b and #b or 0, c, c and #c or 0, d,
                d and #d or 0)
        return
    end
    fill(self, n, a, b, c, d, ...)
    updatev(h, op, v, vptr, vlen)
end

local function bad_value(self, method, v, what)
    error(fmt("gw.metrics: %s:%s(v, ...): v must be %s, got %s", self.name, method, what,
              tostring(v)), 3)
end

local function finite(v)
    return type(v) == "number" and v == v and v ~= huge and v ~= -huge
end

-- Reads a series: out[0], out[1]; false when it has no values yet.
local function value_of(self, ...)
    local h = self._h
    if h == nil then not_live(self) end
    local n = select("#", ...)
    if n ~= self.nlabels then wrong_count(self, n) end
    fill(self, n, ...)
    return read(h, vptr, vlen, out) == 0
end

local Counter, Gauge, Histogram = {}, {}, {}

--- counter:inc(n, labelvalues...): adds n (>= 0, default 1).
function Counter.inc(self, n, ...)
    if n == nil then
        n = 1
    elseif not finite(n) or n < 0 then
        bad_value(self, "inc", n, "a finite number >= 0 (a counter never goes down)")
    end
    update(self, ADD, n, select("#", ...), ...)
end

--- counter:value(labelvalues...) -> its value (summed over the workers).
function Counter.value(self, ...)
    return value_of(self, ...) and out[0] or 0
end

--- gauge:set(v, labelvalues...)
function Gauge.set(self, v, ...)
    if not finite(v) then bad_value(self, "set", v, "a finite number") end
    update(self, SET, v, select("#", ...), ...)
end

--- gauge:inc(n, labelvalues...), gauge:dec(n, labelvalues...) (default 1)
function Gauge.inc(self, n, ...)
    if n == nil then n = 1 elseif not finite(n) then bad_value(self, "inc", n, "a finite number") end
    update(self, ADD, n, select("#", ...), ...)
end

function Gauge.dec(self, n, ...)
    if n == nil then n = 1 elseif not finite(n) then bad_value(self, "dec", n, "a finite number") end
    update(self, ADD, -n, select("#", ...), ...)
end

Gauge.value = Counter.value

--- histogram:observe(v, labelvalues...)
function Histogram.observe(self, v, ...)
    if not finite(v) then bad_value(self, "observe", v, "a finite number") end
    update(self, OBSERVE, v, select("#", ...), ...)
end

--- histogram:value(labelvalues...) -> count, sum
function Histogram.value(self, ...)
    if not value_of(self, ...) then return 0, 0 end
    return out[0], out[1]
end

local MT = { counter = { __index = Counter }, gauge = { __index = Gauge },
             histogram = { __index = Histogram } }

--- The object of declaration m (moongate.config's normalised one); it
-- counts once bound.
function _M.object(m)
    return setmetatable({ name = m.name, kind = m.kind, labels = m.labels,
                          nlabels = #m.labels, _h = nil }, MT[m.kind])
end

--- An object for a declaration that was refused (the load fails): it
-- never counts.
function _M.unbound(kind, name)
    return setmetatable({ name = tostring(name), kind = kind, labels = {}, nlabels = 0 },
                        MT[kind])
end

--- Binds the objects of cfg.metrics to the handles C made for this
-- worker (name -> light userdata, src/hooks.c).
function _M.bind(cfg, handles)
    for _, m in ipairs(cfg.metrics or {}) do
        local h = handles[m.name]
        if h and m.object then m.object._h = ffi.cast(handle_t, h) end
    end
end

--- Binds the objects of cfg.metrics to metrics of their own (the testing
-- kit's, the REPL's): nothing is shared with a running gateway.
function _M.bind_private(cfg)
    for _, m in ipairs(cfg.metrics or {}) do
        local nb = m.buckets and #m.buckets or 0
        local cl = ffi.new("const char *[?]", #m.labels + 1, m.labels)
        local cb = ffi.new("double[?]", nb + 1, m.buckets or {})
        local h = C.mg_ffi_umetric_private(m.kind, m.name, m.help, cl, #m.labels, cb, nb,
                                           m.max_series)
        if h == nil then error("gw.metrics: " .. m.name .. ": out of memory", 2) end
        m.object._h = ffi.gc(h, C.mg_ffi_umetric_private_free)
    end
end

--- gw.metrics.counter(name, help, labels), gauge(...), histogram(name,
-- help, labels, buckets): declarations, while the config loads.
-- (no tail calls: the config's errors count the frames up to the user's)
function _M.counter(...)
    local m = require("moongate.config").declare("metrics.counter", ...)
    return m
end

function _M.gauge(...)
    local m = require("moongate.config").declare("metrics.gauge", ...)
    return m
end

function _M.histogram(...)
    local m = require("moongate.config").declare("metrics.histogram", ...)
    return m
end

return _M
