-- moongate.shared: shared dictionaries (src/shdict.c) from Lua.
--
-- A dictionary is declared in the config with gw.shared_dict(name,
-- { size = }) and created by the process before the workers start; every
-- worker's Lua state reaches the same one through shared.get(name) (or
-- gw.shared(name)), also after reloads. Values are numbers, strings and
-- booleans; times to live are seconds (fractions allowed, 0 or nil =
-- forever). When the dictionary is full, the least recently used entries of
-- the key's stripe make room.
--
-- Hot methods (get, set, incr) allocate nothing per call but the Lua
-- string of a string value: C fills scratch buffers made once per state.

local ffi = require "ffi"

local type, tostring, tonumber, error, setmetatable, pcall =
    type, tostring, tonumber, error, setmetatable, pcall
local ffi_new, ffi_string, ffi_cast = ffi.new, ffi.string, ffi.cast
local floor, huge = math.floor, math.huge

ffi.cdef [[
typedef struct mg_shdict_s mg_shdict_t;
mg_shdict_t *mg_ffi_shdict_find(const char *name, size_t name_len);
int mg_ffi_shdict_get(mg_shdict_t *d, const char *key, size_t key_len,
                      double *num, char *buf, size_t *len);
int mg_ffi_shdict_set(mg_shdict_t *d, const char *key, size_t key_len,
                      int type, double num, const char *str, size_t str_len,
                      uint64_t ttl_ms, int mode, const char **err);
int mg_ffi_shdict_incr(mg_shdict_t *d, const char *key, size_t key_len,
                       double by, int has_init, double init,
                       uint64_t init_ttl_ms, double *out, const char **err);
int mg_ffi_shdict_delete(mg_shdict_t *d, const char *key, size_t key_len);
int mg_ffi_shdict_keys(mg_shdict_t *d, int max, char *buf, size_t *len);
void mg_ffi_shdict_flush_all(mg_shdict_t *d);
size_t mg_ffi_shdict_capacity(mg_shdict_t *d);
size_t mg_ffi_shdict_free_space(mg_shdict_t *d);
]]


local _M = {}

-- value types and modes (src/shdict.h), errno codes (Linux)
local T_NIL, T_BOOLEAN, T_NUMBER, T_STRING = 0, 1, 3, 4
local SET, ADD, REPLACE = 0, 1, 2
local ENOENT, ENOMEM, EEXIST, ENOBUFS = 2, 12, 17, 105
local MAX_KEY = 65535
local KEEP_BUF = 1024 * 1024    -- a grown scratch buffer is kept up to this

-- The running binary exports the symbols (-Wl,-E); specs load the test
-- library instead.
local C = require("moongate.clib").require("mg_ffi_shdict_get")

-- scratch buffers of this Lua state (one worker thread: never shared)
local num_buf = ffi_new("double[1]")
local len_buf = ffi_new("size_t[1]")
local err_buf = ffi_new("const char *[1]")
local str_cap = 4096
local str_buf = ffi_new("char[?]", str_cap)

local function reason(rc)
    if rc == -EEXIST then
        return "exists"
    elseif rc == -ENOENT then
        return "not found"
    elseif rc == -ENOMEM then
        return "no memory"
    end
    return ffi_string(err_buf[0])
end

-- Numbers are keys as their string form; other non-strings are misuse
-- (raised at the level of the method's caller).
local function key_string(key)
    if type(key) == "number" then
        return tostring(key)
    end
    error("shared dict key must be a string, got " .. type(key), 3)
end

local function key_error(klen)
    if klen == 0 then
        return "empty key"
    end
    return "key too long"
end

-- Seconds (nil or >= 0) to whole milliseconds; 0 stays 0 (forever). Misuse
-- is raised at `level` (of ttl_ms's caller's caller: 3).
local function ttl_ms(ttl, what, level)
    if ttl == nil then
        return 0
    end
    if type(ttl) ~= "number" or not (ttl >= 0) or ttl == huge then
        error(what .. " must be a number of seconds >= 0, got " ..
              tostring(ttl), level)
    end
    if ttl == 0 then
        return 0
    end
    local ms = floor(ttl * 1000 + 0.5)
    return ms >= 1 and ms or 1
end

-- get() of a string longer than the scratch buffer: retry with a buffer of
-- the size C asks for (the value may grow in between).
local function get_long(d, key, klen)
    while true do
        local need = tonumber(len_buf[0])
        local cap, buf = need, nil
        if need <= KEEP_BUF then
            while str_cap < need do
                str_cap = str_cap * 2
            end
            str_buf = ffi_new("char[?]", str_cap)
            cap, buf = str_cap, str_buf
        else
            buf = ffi_new("char[?]", need)
        end
        len_buf[0] = cap
        local t = C.mg_ffi_shdict_get(d, key, klen, num_buf, buf, len_buf)
        if t == T_STRING then
            return ffi_string(buf, tonumber(len_buf[0]))
        elseif t == T_NUMBER then
            return num_buf[0]
        elseif t == T_BOOLEAN then
            return num_buf[0] ~= 0
        elseif t == T_NIL then
            return nil
        end
    end
end

local dict_mt = {}
local methods = {}
dict_mt.__index = methods

--- dict:get(key) -> the value, or nil when absent or expired (nil and a
-- reason for an empty or too long key).
function methods.get(self, key)
    if type(key) ~= "string" then
        key = key_string(key)
    end
    local klen = #key
    if klen == 0 or klen > MAX_KEY then
        return nil, key_error(klen)
    end
    len_buf[0] = str_cap
    local t = C.mg_ffi_shdict_get(self.cdata, key, klen, num_buf, str_buf,
                                  len_buf)
    if t == T_NUMBER then
        return num_buf[0]
    elseif t == T_NIL then
        return nil
    elseif t == T_STRING then
        return ffi_string(str_buf, tonumber(len_buf[0]))
    elseif t == T_BOOLEAN then
        return num_buf[0] ~= 0
    end
    return get_long(self.cdata, key, klen)
end

-- set/add/replace; misuse is raised at the level of the method's caller.
local function store(self, key, value, ttl, mode)
    if type(key) ~= "string" then
        if type(key) ~= "number" then
            error("shared dict key must be a string, got " .. type(key), 3)
        end
        key = tostring(key)
    end
    local klen = #key
    if klen == 0 or klen > MAX_KEY then
        return nil, key_error(klen)
    end
    local vt, num, str, slen = T_NIL, 0, nil, 0
    local tv = type(value)
    if tv == "number" then
        vt, num = T_NUMBER, value
    elseif tv == "string" then
        vt, str, slen = T_STRING, value, #value
    elseif tv == "boolean" then
        vt, num = T_BOOLEAN, value and 1 or 0
    elseif tv ~= "nil" then
        error("shared dict values are strings, numbers or booleans, got " ..
              tv, 3)
    elseif mode ~= SET then
        error("shared dict add/replace need a value, got nil", 3)
    end
    local ms = ttl_ms(ttl, "ttl", 4)
    local rc = C.mg_ffi_shdict_set(self.cdata, key, klen, vt, num, str, slen,
                                   ms, mode, err_buf)
    if rc == 0 then
        return true
    end
    return nil, reason(rc)
end

--- dict:set(key, value, ttl) -> true, or nil and "no memory" (the value is
-- bigger than one stripe of the dictionary). A nil value deletes the key.
function methods.set(self, key, value, ttl)
    local ok, err = store(self, key, value, ttl, SET)
    return ok, err
end

--- dict:add(key, value, ttl) -> true, or nil and "exists" when the key is
-- present and not expired.
function methods.add(self, key, value, ttl)
    local ok, err = store(self, key, value, ttl, ADD)
    return ok, err
end

--- dict:replace(key, value, ttl) -> true, or nil and "not found" when the
-- key is absent or expired.
function methods.replace(self, key, value, ttl)
    local ok, err = store(self, key, value, ttl, REPLACE)
    return ok, err
end

--- dict:incr(key, by, init, ttl) -> the new value, atomically. An absent or
-- expired key becomes init + by (living ttl seconds, default forever) when
-- init is given, else nil, "not found"; nil, "not a number" when the value
-- is not a number. The time to live of a present key is kept.
function methods.incr(self, key, by, init, ttl)
    if type(key) ~= "string" then
        key = key_string(key)
    end
    if type(by) ~= "number" then
        error("dict:incr: by must be a number, got " .. type(by), 2)
    end
    local has_init, init_v = 0, 0
    if init ~= nil then
        if type(init) ~= "number" then
            error("dict:incr: init must be a number, got " .. type(init), 2)
        end
        has_init, init_v = 1, init
    elseif ttl ~= nil then
        error("dict:incr: ttl only applies with init", 2)
    end
    local klen = #key
    if klen == 0 or klen > MAX_KEY then
        return nil, key_error(klen)
    end
    local ms = ttl_ms(ttl, "dict:incr: ttl", 3)
    local rc = C.mg_ffi_shdict_incr(self.cdata, key, klen, by, has_init,
                                    init_v, ms, num_buf, err_buf)
    if rc == 0 then
        return num_buf[0]
    end
    return nil, reason(rc)
end

--- dict:delete(key) -> true (also when absent).
function methods.delete(self, key)
    if type(key) ~= "string" then
        key = key_string(key)
    end
    local klen = #key
    if klen == 0 or klen > MAX_KEY then
        return nil, key_error(klen)
    end
    C.mg_ffi_shdict_delete(self.cdata, key, klen)
    return true
end

--- dict:keys(max) -> array of up to max live keys (default 1024, 0 = all),
-- in no useful order. Walks the whole dictionary: not for hot paths.
function methods.keys(self, max)
    if max == nil then
        max = 1024
    elseif type(max) ~= "number" or max < 0 or max % 1 ~= 0 then
        error("dict:keys: max must be an integer >= 0, got " .. tostring(max),
              2)
    end
    if max > 2147483647 then
        max = 0
    end
    local cap, buf = str_cap, str_buf
    local n
    while true do
        len_buf[0] = cap
        n = C.mg_ffi_shdict_keys(self.cdata, max, buf, len_buf)
        if n >= 0 then
            break
        end
        cap = tonumber(len_buf[0]) * 2
        buf = ffi_new("char[?]", cap)
    end
    local out, p, pos = {}, ffi_cast("const uint8_t *", buf), 0
    for i = 1, n do
        local klen = p[pos] * 256 + p[pos + 1]
        out[i] = ffi_string(p + pos + 2, klen)
        pos = pos + 2 + klen
    end
    return out
end

--- dict:flush_all(): removes every entry.
function methods.flush_all(self)
    C.mg_ffi_shdict_flush_all(self.cdata)
end

--- dict:capacity() -> the declared size in bytes.
function methods.capacity(self)
    return tonumber(C.mg_ffi_shdict_capacity(self.cdata))
end

--- dict:free_space() -> bytes not used by entries (expired entries that
-- were not reclaimed yet count as used).
function methods.free_space(self)
    return tonumber(C.mg_ffi_shdict_free_space(self.cdata))
end


local dicts = {}                -- name -> dict object of this Lua state

--- shared.get(name) -> the dictionary declared as `name`, or nil and a
-- reason. Dictionaries live as long as the process, so the object is cached.
function _M.get(name)
    if type(name) ~= "string" then
        error("shared dict name must be a string, got " .. type(name), 2)
    end
    local dict = dicts[name]
    if dict then
        return dict
    end
    local d = C.mg_ffi_shdict_find(name, #name)
    if d == nil then
        return nil, "no shared dict '" .. name ..
            "' (declare it with gw.shared_dict)"
    end
    dict = setmetatable({ name = name, cdata = d }, dict_mt)
    dicts[name] = dict
    return dict
end

return _M
