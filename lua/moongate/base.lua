-- moongate.base: the helpers every module that checks options shares, so
-- that a config's tables all read alike (moongate.config, moongate.jwt,
-- moongate.redis, moongate.ratelimit):
--   quote, describe, key_str  a value or key as error messages show it;
--   sorted_keys, copy         a table's keys in a stable order, a shallow copy;
--   unknown_keys              "unknown key 'x' in <what> (did you mean 'y'? ...)";
--   raise, check_keys         an error blamed on the user's line, not ours;
--   is_int, parse_size, parse_time, value_check
--                             a value of a config schema field (src/config.c)
--                             checked and normalised, or what it must be.
-- Nothing here keeps state or touches the FFI (value_check is handed the
-- kind numbers, and a field's C parser or check, by moongate.cdefs).

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring,
    error
local fmt, sub, byte, match, gsub, lower = string.format, string.sub,
    string.byte, string.match, string.gsub, string.lower
local concat, sort = table.concat, table.sort
local min, floor, huge = math.min, math.floor, math.huge
local find, tonumber = string.find, tonumber
local getinfo = debug.getinfo

local _M = {}

--- `s` in double quotes, control characters escaped, cut to 60 characters.
function _M.quote(s)
    if #s > 60 then
        s = sub(s, 1, 57) .. "..."
    end
    s = gsub(s, '[%c"\\]', function(ch)
        local esc = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
                      ['"'] = '\\"', ["\\"] = "\\\\" }
        return esc[ch] or fmt("\\%d", byte(ch))
    end)
    return '"' .. s .. '"'
end
local quote = _M.quote

--- A value as "string \"x\"", "number 3", "boolean true" or its type name.
function _M.describe(v)
    local tv = type(v)
    if tv == "string" then
        return "string " .. quote(v)
    elseif tv == "number" or tv == "boolean" then
        return tv .. " " .. tostring(v)
    end
    return tv
end
local describe = _M.describe

--- A table key as messages name it: 'name', [3] or [<describe>].
function _M.key_str(k)
    if type(k) == "string" then
        return "'" .. k .. "'"
    end
    return "[" .. (type(k) == "number" and tostring(k) or describe(k)) .. "]"
end
local key_str = _M.key_str

-- Optimal string alignment distance (Levenshtein plus transpositions).
local function distance(a, b)
    local la, lb = #a, #b
    if la == 0 then return lb end
    if lb == 0 then return la end
    local d = {}
    for i = 0, la do
        d[i] = { [0] = i }
    end
    for j = 0, lb do
        d[0][j] = j
    end
    for i = 1, la do
        local ca = byte(a, i)
        for j = 1, lb do
            local cost = ca == byte(b, j) and 0 or 1
            local v = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and ca == byte(b, j - 1)
                and byte(a, i - 1) == byte(b, j) then
                v = min(v, d[i - 2][j - 2] + 1)
            end
            d[i][j] = v
        end
    end
    return d[la][lb]
end

--- The closest of the list `names` to `word`, if close enough to be a typo.
function _M.suggest(word, names)
    if type(word) ~= "string" then
        return nil
    end
    local lw = lower(word)
    local best, best_d
    for _, name in ipairs(names) do
        local dist = distance(lw, lower(name))
        local limit = #name <= 4 and 1 or (#name <= 8 and 2 or 3)
        if dist <= limit and dist < #name and (not best_d or dist < best_d) then
            best, best_d = name, dist
        end
    end
    return best
end

--- "did you mean 'x'? " when `word` looks like a typo of one of `names`.
function _M.did_you_mean(word, names)
    local s = _M.suggest(word, names)
    return s and fmt("did you mean '%s'? ", s) or ""
end

--- The keys of `t`, sorted by type then value.
function _M.sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
        local ta, tb = type(a), type(b)
        if ta ~= tb then
            return ta < tb
        end
        if ta == "string" or ta == "number" then
            return a < b
        end
        return tostring(a) < tostring(b)
    end)
    return keys
end

--- A shallow copy of table `t`.
function _M.copy(t)
    local out = {}
    for k, v in pairs(t) do
        out[k] = v
    end
    return out
end

--- The messages for every key of table `t` not in the list `valid`:
-- "unknown key 'x' in <what> (did you mean 'y'? valid: ...)", in key order.
function _M.unknown_keys(t, valid, what)
    local set, out = {}, {}
    for _, k in ipairs(valid) do
        set[k] = true
    end
    local names = concat(valid, ", ")
    for _, k in ipairs(_M.sorted_keys(t)) do
        if not set[k] then
            out[#out + 1] = fmt("unknown key %s in %s (%svalid: %s)", key_str(k),
                                what, _M.did_you_mean(k, valid), names)
        end
    end
    return out
end

-- Errors raised here are blamed on the first caller outside moongate's Lua
-- (this directory), i.e. the user's line.
local our_dir = match(getinfo(1, "S").source, "^(@.*[/\\])") or "@"

--- error(msg) at the nearest frame that is not moongate's own Lua.
function _M.raise(msg)
    local level = 2
    while true do
        local info = getinfo(level, "S")
        if not info then
            level = 1
            break
        end
        if info.what ~= "C" and sub(info.source, 1, #our_dir) ~= our_dir then
            break
        end
        level = level + 1
    end
    error(msg, level)
end

--- Raises (see raise) the first unknown key of `t`, `valid` being a list
-- or a table of names, in any order.
function _M.check_keys(t, valid, what)
    local names = {}
    for _, v in pairs(valid) do names[#names + 1] = v end
    sort(names)
    local msgs = _M.unknown_keys(t, names, what)
    if msgs[1] then _M.raise(msgs[1]) end
end


-- Value checkers: return the normalised value, or nil and what is expected --

local MAX_INT = 2 ^ 53          -- largest integer a double holds exactly

--- Whether v is an integer a double holds exactly.
function _M.is_int(v)
    return type(v) == "number" and v % 1 == 0 and v >= -MAX_INT
        and v <= MAX_INT
end
local is_int = _M.is_int

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

local function time_or_zero(v)
    if v == 0 then
        return 0
    end
    return _M.parse_time(v)
end

--- The checker of a scalar or string field f of a config schema (as
-- moongate.cdefs.config_fields gives it; K: moongate.cdefs, for the kind
-- numbers): v -> the normalised value (and true when it is a file path),
-- or nil and what v must be. nil for the kinds it does not check (OBJECT,
-- LIST: moongate.config's; OTHER: by hand).
function _M.value_check(f, K)
    local kind, lo, hi, expected = f.kind, f.min, f.max, f.expected
    if kind == K.FIELD_SIZE then
        if lo <= 0 then
            return _M.parse_size
        end
        return function(v)
            local n, why = _M.parse_size(v)
            if n and n < lo then
                return nil, fmt("must be at least %d bytes", lo)
            end
            if n and n > hi then
                return nil, fmt("must be at most %d bytes", hi)
            end
            return n, why
        end
    elseif kind == K.FIELD_TIME then
        return lo == 0 and time_or_zero or _M.parse_time
    elseif kind == K.FIELD_SECONDS then
        expected = expected or "must be a number of seconds > 0"
        return function(v)
            if type(v) == "number" and v > 0 and v < huge then
                return v
            end
            return nil, expected
        end
    elseif kind == K.FIELD_NUMBER then
        return function(v)
            if type(v) == "number" and v >= lo and v <= hi then
                return v
            end
            return nil, expected
        end
    elseif kind == K.FIELD_INT then
        return function(v)
            if is_int(v) and v >= lo and v <= hi then
                return v
            end
            return nil, expected
        end
    elseif kind == K.FIELD_BOOL then
        expected = expected or "must be true or false"
        return function(v)
            if type(v) == "boolean" then
                return v
            end
            return nil, expected
        end
    elseif kind == K.FIELD_ENUM then
        local parse = f.parse -- the module's parser: the canonical name or nil
        return function(v)
            local name = type(v) == "string" and not find(v, "%z") and parse(v)
            if name then
                return name
            end
            return nil, expected
        end
    elseif kind == K.FIELD_STRING then
        local check = f.check -- the module's check: normalised, is_file; or nil
        return function(v)
            if type(v) == "string" and #v >= lo then
                if not check then
                    return v
                end
                local out, is_file = check(v)
                if out then
                    return out, nil, is_file
                end
            end
            return nil, expected
        end
    end
    return nil
end

return _M
