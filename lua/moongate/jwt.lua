-- moongate.jwt: JSON Web Token verification (RFC 7519 over RFC 7515 JWS
-- compact serialisation) and the bundled per-route `jwt` policy.
--
--   local jwt = require "moongate.jwt"
--   local v = jwt.new { secret = os.getenv("JWT_SECRET"), issuer = "idp" }
--   local claims, err = v:verify(token)           -- per request
--   gw.route { path = "/orders/**", upstream = "orders",
--              policies = { jwt.policy { jwks_url = "http://idp/jwks",
--                                        scopes = { "orders:read" } } } }
--
-- Options are checked once, when the config loads (unknown keys, bad keys
-- and bad values raise there, blamed on the config line); keys are parsed
-- into OpenSSL objects once (moongate.jwk, src/crypto.c). Per request a
-- verification costs one FFI call that checks the signature (HMAC in
-- constant time, without allocating) and decodes the payload into a
-- reused buffer, one cjson.decode of the payload and the claim checks. The
-- header segment's parse is cached (its bytes determine it entirely), and
-- so is a verified token's signature check and payload decoding, per
-- verifier and until its keys change; the claim checks (exp, nbf, iat,
-- iss, aud, scopes) run on every request, on a fresh copy of the claims.
--
-- What is refused, always: "alg" none, missing or unknown; an algorithm the
-- key was not made for (HS256 with an RSA key's PEM as the secret); a
-- "crit" header (no extension is understood, RFC 7515 §4.1.11); anything
-- but three segments of strict base64url; an empty signature; a header or
-- payload that is not a JSON object; a token over max_token_size bytes.
-- Keys named by the token itself (jku, x5u, jwk headers) are ignored.

local ffi = require "ffi"
local cjson = require("cjson").new()   -- raises: called through pcall
local jwk = require "moongate.jwk"
local config = require "moongate.config"   -- config.report
local base = require "moongate.base"       -- option errors read alike

local C = jwk.C
local ALG_ID, ALG_NAME = jwk.ALG_ID, jwk.ALG_NAME
local type, pairs, ipairs, tostring, error, pcall, select, setmetatable =
    type, pairs, ipairs, tostring, error, pcall, select, setmetatable
local find, sub, byte, lower, fmt = string.find, string.sub, string.byte,
    string.lower, string.format
local concat, sort = table.concat, table.sort
local ffi_new, ffi_string = ffi.new, ffi.string
local cjson_decode, null = cjson.decode, cjson.null
local huge = math.huge

local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end
local ok_clear, clear_tab = pcall(require, "table.clear")
if not ok_clear then
    clear_tab = function(t) for k in pairs(t) do t[k] = nil end end
end
local ok_clone, clone_tab = pcall(require, "table.clone")
if not ok_clone then
    clone_tab = function(t)
        local c = {}
        for k, v in pairs(t) do c[k] = v end
        return c
    end
end

cjson.decode_invalid_numbers(false)  -- no NaN, Infinity, hex
cjson.decode_max_depth(32)

-- cjson.safe's decode costs ~150 ns more than pcall around the plain one
local function json_decode(s)
    local ok, v = pcall(cjson_decode, s)
    if ok then return v end
    return nil
end

local _M = {}

local INVALID, FORBIDDEN, UNAVAILABLE = "invalid_token", "insufficient_scope",
    "unavailable"
_M.INVALID, _M.FORBIDDEN, _M.UNAVAILABLE = INVALID, FORBIDDEN, UNAVAILABLE

local DEFAULT_MAX_TOKEN = 8192

ffi.cdef [[
double mg_ffi_now(void);
double mg_ffi_monotonic(void);
]]

local function wall_clock() return C.mg_ffi_now() end
local function mono_clock() return C.mg_ffi_monotonic() end

-- Payload scratch: one per Lua state (a worker runs one verification at a
-- time), as large as the largest max_token_size of any verifier.
local pcap = DEFAULT_MAX_TOKEN
local pbuf = ffi_new("unsigned char[?]", pcap)
local plen = ffi_new("size_t[1]")
-- and for the claims tokeniser (mg_ffi_json_flat_object): tokens, and
-- room for unescaped strings (never more than the payload)
local MAX_TOKENS = 64
local toks = ffi_new("mg_json_tok_t[?]", MAX_TOKENS)
local sbuf = ffi_new("char[?]", pcap)

local function grow_payload_buffer(max_token)
    if max_token > pcap then
        pcap = max_token
        pbuf = ffi_new("unsigned char[?]", pcap)
        sbuf = ffi_new("char[?]", pcap)
    end
end


-- Headers ---------------------------------------------------------------------

-- Parsed headers by their base64url segment (a canonical encoding, so the
-- segment's bytes decide the result). Bounded: emptied when full.
local hcache, hcount, HCACHE_MAX = {}, 0, 256

-- An attacker's string, fit for a log line: quoted, control characters
-- and quotes escaped, at most 64 bytes.
local function shown(v)
    if type(v) ~= "string" then return type(v) end
    local s = #v > 64 and sub(v, 1, 64) .. "..." or v
    return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
        return fmt("\\x%02x", byte(c))
    end) .. '"'
end

local function is_ws(c) return c == 32 or c == 9 or c == 10 or c == 13 end

-- true when the JSON text S starts with '{' (after white space). (No loop
-- on the usual path: a loop inside a function called per request makes
-- LuaJIT start traces there that it then aborts.)
local function is_object_text_slow(s)
    for i = 1, #s do
        local c = byte(s, i)
        if not is_ws(c) then return c == 123 end
    end
    return false
end

local function is_object_text(s)
    local c = byte(s, 1)
    if c == 123 then return true end
    return c ~= nil and is_ws(c) and is_object_text_slow(s)
end

-- Claims ---------------------------------------------------------------------

local J_STRING, J_NUMBER, J_TRUE, J_FALSE, J_NULL = 1, 2, 3, 4, 5
local J_ARRAY, J_NUMTEXT = 6, 7
local J_ENOTFLAT = -31

-- One scalar token as a Lua value.
local function tok_value(t, text)
    local ty = t.type
    if ty == J_STRING then
        local base = t.val_esc ~= 0 and sbuf or text
        return ffi_string(base + t.val_off, t.val_len)
    elseif ty == J_NUMBER then
        return t.num
    elseif ty == J_TRUE then
        return true
    elseif ty == J_FALSE then
        return false
    elseif ty == J_NULL then
        return null
    end
    return tonumber(ffi_string(text + t.val_off, t.val_len))     -- J_NUMTEXT
end

-- A copy of an array of scalars.
local function copy_array(v)
    local m = #v
    local arr = new_tab(m, 0)
    for j = 1, m do arr[j] = v[j] end
    return arr
end

-- The claims table of the payload in pbuf (N bytes), or nil when it is not
-- a JSON object; and true when it is flat (scalars and arrays of scalars).
-- Flat objects (the usual claims) are tokenised in C and built here;
-- anything nested goes to cjson.
local function decode_claims(n)
    local text = pbuf
    local cnt = C.mg_ffi_json_flat_object(text, n, toks, MAX_TOKENS, sbuf, pcap)
    if cnt < 0 then
        if cnt ~= J_ENOTFLAT then return nil end
        local s = ffi_string(text, n)
        if not is_object_text(s) then return nil end
        local v = json_decode(s)
        return type(v) == "table" and v or nil
    end
    local claims = new_tab(0, cnt)
    local i = 0
    while i < cnt do
        local t = toks[i]
        local kbase = t.key_esc ~= 0 and sbuf or text
        local key = ffi_string(kbase + t.key_off, t.key_len)
        if t.type == J_ARRAY then
            local m = t.val_len
            local arr = new_tab(m, 0)
            for j = 1, m do arr[j] = tok_value(toks[i + j], text) end
            claims[key] = arr
            i = i + m + 1
        else
            claims[key] = tok_value(t, text)
            i = i + 1
        end
    end
    return claims, true
end

-- Verified tokens --------------------------------------------------------------

-- A verifier's tokens that passed the signature check, by their text:
-- token -> { claims =, arrays = { name, ... }, kid = } (their flat claims,
-- the names of those that are arrays). The token's bytes and the
-- verifier's keys decide the signature check and the payload entirely, so
-- a token seen again skips both; Verifier:_set_keys() forgets them all
-- when the keys change. Bounded: emptied when full. Only flat claims are
-- kept, and never handed out: each verification gets a copy (the policy
-- gives the claims to the request, req.ctx.jwt, where hooks may change
-- them). The copy is table.clone and no loop for the usual claims without
-- arrays: a loop on the hot path becomes a trace of its own, whose place
-- in the trace tree (and so the cost of a request) varies from process to
-- process.
local SEEN_MAX = 1024

local function remember(self, token, kid, claims)
    local seen = self.seen
    if not seen or self.nseen >= SEEN_MAX then
        seen = {}
        self.seen, self.nseen = seen, 0
    end
    local kept, arrays = clone_tab(claims), {}
    for k, v in pairs(kept) do
        if type(v) == "table" then
            arrays[#arrays + 1] = k
            kept[k] = copy_array(v)
        end
    end
    seen[token] = { claims = kept, arrays = arrays, kid = kid }
    self.nseen = self.nseen + 1
end

-- A fresh claims table from a remembered token's.
local function recall(e)
    local claims, arrays = clone_tab(e.claims), e.arrays
    for i = 1, #arrays do
        local k = arrays[i]
        claims[k] = copy_array(claims[k])
    end
    return claims
end

local function parse_header(seg)
    local raw = jwk.b64url_decode(seg)
    if not raw then return { err = "malformed header (not base64url)" } end
    local h = is_object_text(raw) and json_decode(raw)
    if type(h) ~= "table" then
        return { err = "header is not a JSON object" }
    end
    local alg = h.alg
    if alg == nil then return { err = "missing alg" } end
    if type(alg) ~= "string" then return { err = "alg is not a string" } end
    if lower(alg) == "none" then return { err = "alg none refused" } end
    local id = ALG_ID[alg]
    if not id then return { err = "unsupported alg " .. shown(alg) } end
    if h.crit ~= nil then
        -- RFC 7515 §4.1.11: we understand no extension, so any is unknown
        local names = {}
        if type(h.crit) == "table" then
            for i, v in ipairs(h.crit) do names[i] = shown(v) end
        end
        local list = #names > 0 and concat(names, ", ") or "(malformed crit)"
        return { err = "unknown crit header parameter(s): " .. list }
    end
    local kid = h.kid
    if kid ~= nil and type(kid) ~= "string" then
        return { err = "kid is not a string" }
    end
    local typ = h.typ
    if typ ~= nil and type(typ) ~= "string" then
        return { err = "typ is not a string" }
    end
    return { alg = alg, alg_id = id, kid = kid, typ = typ and lower(typ) }
end

local function header_of(seg)
    local hdr = hcache[seg]
    if hdr then return hdr end
    hdr = parse_header(seg)
    if hcount >= HCACHE_MAX then
        clear_tab(hcache)
        hcount = 0
    end
    hcache[seg] = hdr
    hcount = hcount + 1
    return hdr
end

-- Options ---------------------------------------------------------------------

local OPTIONS = {
    secret = true, pem = true, jwk = true, jwks = true, jwks_file = true,
    jwks_url = true, keys = true, kid = true, algorithms = true,
    issuer = true, audience = true, leeway = true, required = true,
    max_age = true, max_token_size = true, typ = true,
    scopes = true, scope_claim = true, roles = true, roles_claim = true,
    jwks_refresh = true, jwks_min_refresh = true, jwks_timeout = true, jwks_ca = true,
    clock = true, fetch = true,
}
local POLICY_OPTIONS = { optional = true, realm = true }

local sorted_keys = base.sorted_keys

local function describe(v)
    if type(v) == "string" then return fmt("%q", v) end
    return type(v) == "table" and "a table" or tostring(v)
end

local function bad(fmtstr, ...)
    error(fmt(fmtstr, ...), 0)
end

local OPTION_NAMES = sorted_keys(OPTIONS)
local POLICY_NAMES = sorted_keys(OPTIONS)
for _, k in ipairs(sorted_keys(POLICY_OPTIONS)) do
    POLICY_NAMES[#POLICY_NAMES + 1] = k
end
sort(POLICY_NAMES)

local function check_unknown(opts)
    local msgs = base.unknown_keys(opts, OPTION_NAMES, "jwt.new")
    if msgs[1] then bad("%s", msgs[1]) end
end

local function string_list(v, name, allow_single)
    if allow_single and type(v) == "string" then return { v } end
    if type(v) ~= "table" then
        bad("%s must be a %slist of strings, got %s", name,
            allow_single and "string or a " or "", describe(v))
    end
    local n = #v
    for k, x in pairs(v) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
            bad("%s must be a list (keys 1..n), found key %s", name,
                describe(k))
        end
        if type(x) ~= "string" or x == "" then
            bad("%s[%d] must be a non-empty string, got %s", name, k,
                describe(x))
        end
    end
    return v
end

local function set_of(list)
    local s = {}
    for _, x in ipairs(list) do s[x] = true end
    return s
end

local function number_opt(opts, name, default, min, max)
    local v = opts[name]
    if v == nil then return default end
    if type(v) ~= "number" or v ~= v or v < min or v > max then
        bad("%s must be a number %s-%s, got %s", name, tostring(min),
            tostring(max), describe(v))
    end
    return v
end

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then bad("jwks_file: cannot open %s", tostring(err)) end
    local s = f:read("*a")
    f:close()
    return s
end

-- One key from { secret = | pem = | jwk = , kid = , algorithms = } or a
-- bare JWK table (with kty).
local KEY_SPEC = { secret = true, pem = true, jwk = true, kid = true,
                   algorithms = true }

local function key_of(spec, where)
    local key, err
    if type(spec) ~= "table" then
        bad("%s must be a table, got %s", where, describe(spec))
    end
    if spec.kty ~= nil then
        key, err = jwk.from_jwk(spec)
    else
        check_unknown(spec, KEY_SPEC)
        local n = (spec.secret ~= nil and 1 or 0) + (spec.pem ~= nil and 1 or 0)
            + (spec.jwk ~= nil and 1 or 0)
        if n ~= 1 then
            bad("%s needs exactly one of secret, pem, jwk", where)
        end
        if spec.kid ~= nil and type(spec.kid) ~= "string" then
            bad("%s.kid must be a string, got %s", where, describe(spec.kid))
        end
        if spec.secret ~= nil then
            key, err = jwk.secret(spec.secret, spec.kid)
        elseif spec.pem ~= nil then
            key, err = jwk.pem(spec.pem, spec.kid)
        else
            key, err = jwk.from_jwk(spec.jwk)
            if key and spec.kid then key.kid = spec.kid end
        end
        if key and spec.algorithms ~= nil then
            local names = string_list(spec.algorithms,
                                      where .. ".algorithms", true)
            key, err = jwk.restrict(key, names)
        end
    end
    if not key then bad("%s: %s", where, err) end
    return key
end

-- The static keys of OPTS (not the JWKS URL's).
local function static_keys(opts)
    local keys = {}
    local function add(k) keys[#keys + 1] = k end
    if opts.kid ~= nil and type(opts.kid) ~= "string" then
        bad("kid must be a string, got %s", describe(opts.kid))
    end
    if opts.secret ~= nil then
        add(key_of({ secret = opts.secret, kid = opts.kid }, "secret"))
    end
    if opts.pem ~= nil then
        if type(opts.pem) == "table" then
            for i, p in ipairs(opts.pem) do
                add(key_of({ pem = p }, fmt("pem[%d]", i)))
            end
        else
            add(key_of({ pem = opts.pem, kid = opts.kid }, "pem"))
        end
    end
    if opts.jwk ~= nil then
        add(key_of({ jwk = opts.jwk, kid = opts.kid }, "jwk"))
    end
    local function add_set(set, where)
        local ks, err = jwk.from_jwks(set)
        if not ks then bad("%s: %s", where, err) end
        for _, k in ipairs(ks) do add(k) end
    end
    if opts.jwks ~= nil then add_set(opts.jwks, "jwks") end
    if opts.jwks_file ~= nil then
        if type(opts.jwks_file) ~= "string" then
            bad("jwks_file must be a path, got %s", describe(opts.jwks_file))
        end
        add_set(read_file(opts.jwks_file), "jwks_file " .. opts.jwks_file)
    end
    if opts.keys ~= nil then
        if type(opts.keys) ~= "table" then
            bad("keys must be a list of key tables, got %s",
                describe(opts.keys))
        end
        if opts.keys.keys ~= nil then
            add_set(opts.keys, "keys")            -- a JWK set given as keys
        else
            for i, spec in ipairs(opts.keys) do
                add(key_of(spec, fmt("keys[%d]", i)))
            end
        end
    end
    return keys
end

-- Verifier ----------------------------------------------------------------

local Verifier = {}
Verifier.__index = Verifier

-- Index the keys by kid; a duplicate kid is an error.
local function index_keys(keys, where)
    local by_kid = {}
    for _, k in ipairs(keys) do
        if k.kid then
            if by_kid[k.kid] then
                bad("%s: two keys with kid %q", where, k.kid)
            end
            by_kid[k.kid] = k
        end
    end
    return by_kid
end

local function build(opts)
    if type(opts) ~= "table" then
        bad("options must be a table, got %s", describe(opts))
    end
    local self = setmetatable({}, Verifier)

    self.static = static_keys(opts)
    local algs = opts.algorithms
    if algs ~= nil then
        algs = string_list(algs, "algorithms", true)
        for _, a in ipairs(algs) do
            if not ALG_ID[a] then
                bad("algorithms: unknown algorithm %q (known: %s)", a,
                    concat(sorted_keys(ALG_ID), ", "))
            end
        end
        for i, k in ipairs(self.static) do
            local ok, err = jwk.restrict(k, algs)
            if not ok then bad("key %d: %s", i, err) end
        end
    end
    self.algorithms = algs

    local url = opts.jwks_url
    if url ~= nil then
        if type(url) ~= "string" or not find(url, "^https?://[^/]") then
            bad("jwks_url must be an http:// or https:// URL, got %s",
                describe(url))
        end
        self.jwks_url = url
        self.refresh = number_opt(opts, "jwks_refresh", 300, 1, 86400 * 7)
        self.min_refresh = number_opt(opts, "jwks_min_refresh", 10, 0, 86400)
        self.timeout = number_opt(opts, "jwks_timeout", 5, 0.001, 120)
        if opts.fetch ~= nil and type(opts.fetch) ~= "function" then
            bad("fetch must be a function(url, timeout), got %s",
                describe(opts.fetch))
        end
        self.fetch = opts.fetch
        if opts.jwks_ca ~= nil and (type(opts.jwks_ca) ~= "string" or opts.jwks_ca == "") then
            bad("jwks_ca must be the path of a PEM file of CA certificates, got %s",
                describe(opts.jwks_ca))
        end
        self.jwks_ca = opts.jwks_ca
        self.fetched_at, self.attempt_at = -huge, -huge
        self.remote = {}
    else
        for _, k in ipairs { "jwks_refresh", "jwks_min_refresh",
                             "jwks_timeout", "jwks_ca", "fetch" } do
            if opts[k] ~= nil then bad("%s needs jwks_url", k) end
        end
        if #self.static == 0 then
            bad("no key: give secret, pem, jwk, jwks, jwks_file, keys or " ..
                "jwks_url")
        end
    end
    self.remote = self.remote or {}
    self:_set_keys()

    if opts.clock ~= nil then
        if type(opts.clock) ~= "function" then
            bad("clock must be a function returning seconds, got %s",
                describe(opts.clock))
        end
        self.now, self.mono = opts.clock, opts.clock
    else
        self.now, self.mono = wall_clock, mono_clock
    end

    if opts.issuer ~= nil then
        self.issuers = set_of(string_list(opts.issuer, "issuer", true))
    end
    if opts.audience ~= nil then
        self.audiences = set_of(string_list(opts.audience, "audience", true))
    end
    self.leeway = number_opt(opts, "leeway", 0, 0, 300)
    self.max_age = number_opt(opts, "max_age", nil, 1, huge)
    self.max_size = number_opt(opts, "max_token_size", DEFAULT_MAX_TOKEN,
                               64, 1048576)
    grow_payload_buffer(self.max_size)
    local required = { "exp" }
    if opts.required ~= nil then
        required = string_list(opts.required, "required")
    end
    if self.max_age then required[#required + 1] = "iat" end
    -- exp, nbf and iat are checked as flags, other claims in a loop
    for _, c in ipairs(required) do
        if c == "exp" or c == "nbf" or c == "iat" then
            self["need_" .. c] = true
        else
            self.required = self.required or {}
            self.required[#self.required + 1] = c
        end
    end
    if opts.typ ~= nil then
        if type(opts.typ) ~= "string" then
            bad("typ must be a string, got %s", describe(opts.typ))
        end
        self.typ = lower(opts.typ)
    end

    if opts.scopes ~= nil then
        self.scopes = string_list(opts.scopes, "scopes", true)
        for _, s in ipairs(self.scopes) do
            if find(s, "[ \t]") then bad("scopes: %q contains a space", s) end
        end
    end
    if opts.scope_claim ~= nil then
        local names = string_list(opts.scope_claim, "scope_claim", true)
        self.scope_claims = { names[1] }
    else
        self.scope_claims = { "scope", "scp", "scopes" }
    end
    if opts.roles ~= nil then
        self.roles = string_list(opts.roles, "roles", true)
    end
    local rc = opts.roles_claim or "roles"
    if type(rc) ~= "string" or rc == "" then
        bad("roles_claim must be a claim name (a.b for nested), got %s",
            describe(rc))
    end
    self.roles_path = {}
    for part in rc:gmatch("[^.]+") do
        self.roles_path[#self.roles_path + 1] = part
    end
    return self
end

-- Rebuilds the lookup of every usable key (static, then the JWKS URL's).
function Verifier:_set_keys()
    local all = {}
    for _, k in ipairs(self.static) do all[#all + 1] = k end
    for _, k in ipairs(self.remote) do all[#all + 1] = k end
    self.keys = all
    self.seen, self.nseen = nil, 0     -- verified under the old keys
    self.single = not self.jwks_url and #all == 1 and all[1] or nil
    self.by_kid = index_keys(self.static, "keys")
    for _, k in ipairs(self.remote) do
        if k.kid and not self.by_kid[k.kid] then self.by_kid[k.kid] = k end
    end
end

-- JWKS URL --------------------------------------------------------------------

local gw_mod                       -- require "moongate", when available

local function gw()
    if gw_mod == nil then
        local ok, m = pcall(require, "moongate")
        gw_mod = ok and m or false
    end
    return gw_mod or nil
end

local function log(level, msg)
    local g = gw()
    if g and g.log then pcall(g.log, level, msg) end
end

local function default_fetch(url, timeout, ca)
    local ok, http = pcall(require, "moongate.http")
    if not ok then
        return nil, "no HTTP client (moongate.http): " .. tostring(http)
    end
    return http.request { method = "GET", url = url, timeout = timeout, ca = ca,
                          headers = { Accept = "application/json" } }
end

-- Fetches the JWKS now (unless another fetch of this verifier is running,
-- which it waits for instead). Keeps the old keys when the fetch fails.
-- Returns true when the keys changed or were confirmed.
-- A fetch is running (its start time is self.inflight); one that never
-- came back (its coroutine was dropped) stops counting after the timeout.
function Verifier:_busy()
    local t = self.inflight
    return t and self.mono() - t < self.timeout + 1
end

function Verifier:refresh_jwks()
    if self:_busy() then
        -- one fetch at a time per worker: wait for the running one
        local g, deadline = gw(), self.mono() + self.timeout + 1
        while self:_busy() and self.mono() < deadline do
            if not (g and pcall(g.sleep, 0.005)) then break end
        end
        return not self:_busy() and self.fetched_at == self.attempt_at
    end
    local started = self.mono()
    self.inflight = started
    self.attempt_at = started
    local ok, res, err = pcall(self.fetch or default_fetch, self.jwks_url,
                               self.timeout, self.jwks_ca)
    if self.inflight == started then self.inflight = false end
    if not ok then res, err = nil, res end
    local keys, skipped
    if res and type(res) == "table" and res.status ~= 200 then
        err = "HTTP status " .. tostring(res.status)
    elseif res and type(res) == "table" then
        keys, err = jwk.from_jwks(res.body or "", true)
        skipped = not keys and {} or err
    elseif res ~= nil then
        err = "fetch returned " .. type(res)
    end
    if not keys then
        self.last_err = tostring(err)
        log("warn", fmt("jwt: JWKS %s not refreshed: %s (keeping %d key(s))",
                        self.jwks_url, self.last_err, #self.remote))
        return false
    end
    if #skipped > 0 then
        log("notice", fmt("jwt: JWKS %s: skipped %s", self.jwks_url,
                          concat(skipped, "; ")))
    end
    if self.algorithms then
        local usable = {}
        for _, k in ipairs(keys) do
            if jwk.restrict(k, self.algorithms) then usable[#usable + 1] = k end
        end
        keys = usable
    end
    self.remote = keys
    self.fetched_at = started
    self.last_err = nil
    self:_set_keys()
    return true
end

-- Called before picking a key: fetches when there are no keys yet, when
-- they are older than jwks_refresh, or when KID is unknown (then at most
-- once per jwks_min_refresh; a failing URL with no keys is retried at most
-- once a second).
function Verifier:_maybe_refresh(kid)
    local now = self.mono()
    local since = now - self.attempt_at
    if #self.remote == 0 then
        local retry = self.min_refresh < 1 and self.min_refresh or 1
        if since >= retry or self:_busy() then self:refresh_jwks() end
    elseif now - self.fetched_at >= self.refresh then
        if not self:_busy() and since >= self.min_refresh then
            self:refresh_jwks()
        end
    elseif kid and not self.by_kid[kid] and since >= self.min_refresh then
        self:refresh_jwks()
    end
end

--- verifier:start_refresh(): starts the periodic refresh of the JWKS URL
-- (gw.timer: once when the worker starts, then every jwks_refresh
-- seconds). jwt.new and jwt.policy call it when run at config load.
function Verifier:start_refresh()
    if not self.jwks_url or self.timer_started then return end
    local g = gw()
    local timer = g and g.timer
    if type(timer) ~= "table" or type(timer.every) ~= "function" then return end
    self.timer_started = true
    local function tick()
        if self.mono() - self.attempt_at >= self.min_refresh then
            self:refresh_jwks()
        end
    end
    if type(timer.after) == "function" then pcall(timer.after, 0, tick) end
    pcall(timer.every, self.refresh, tick)
end

-- Verification ----------------------------------------------------------------

local VERIFY_ERR = {
    [jwk.EALG] = "alg not allowed for this key",
    [jwk.ESIG64] = "malformed signature (not base64url)",
    [jwk.EPAYLOAD64] = "malformed payload (not base64url)",
    [jwk.ESPACE] = "payload too large",
    [jwk.ESHAPE] = "malformed token",
    [jwk.EINTERNAL] = "internal error in signature verification",
}

-- Checks the signature with the keys that may verify HDR's alg (the kid's
-- key when the token names a known kid). Returns true (payload in pbuf)
-- or nil, err.
function Verifier:_check_signature(token, len, d1, d2, hdr)
    local alg, kid = hdr.alg_id, hdr.kid
    local k = self.single
    if k and (not kid or not k.kid or k.kid == kid) and k.algs[alg] then
        -- one static key (the usual case): no loop on the hot path
        plen[0] = pcap
        local rc = C.mg_ffi_jws_verify(k.handle, alg, token, len, d1 - 1,
                                       d2 - 1, pbuf, plen)
        if rc == 1 then return true end
        if rc == 0 then return nil, "signature mismatch" end
        return nil, VERIFY_ERR[rc] or "verification failed"
    end
    if self.jwks_url then self:_maybe_refresh(kid) end
    k = kid and self.by_kid[kid]
    if k then
        if not k.algs[alg] then
            return nil, fmt("alg %s not allowed for key %s (%s)", hdr.alg,
                            shown(kid), jwk.describe(k))
        end
        plen[0] = pcap
        local rc = C.mg_ffi_jws_verify(k.handle, alg, token, len, d1 - 1,
                                       d2 - 1, pbuf, plen)
        if rc == 1 then return true end
        if rc == 0 then return nil, "signature mismatch" end
        return nil, VERIFY_ERR[rc] or "verification failed"
    end
    -- no key has that kid: try the keys without one (all keys when the
    -- token names none) that may verify the alg
    local keys, tried, rc = self.keys, 0, 0
    for i = 1, #keys do
        k = keys[i]
        if (not kid or not k.kid) and k.algs[alg] then
            tried = tried + 1
            plen[0] = pcap
            rc = C.mg_ffi_jws_verify(k.handle, alg, token, len, d1 - 1,
                                     d2 - 1, pbuf, plen)
            if rc == 1 then return true end
            if rc < 0 and rc ~= jwk.EALG then
                return nil, VERIFY_ERR[rc] or "verification failed"
            end
        end
    end
    if tried > 0 then return nil, "signature mismatch" end
    if #keys == 0 then
        return nil, "no keys (JWKS " .. tostring(self.jwks_url) .. ": " ..
            tostring(self.last_err or "not fetched yet") .. ")", UNAVAILABLE
    end
    if kid then
        for i = 1, #keys do
            if not keys[i].kid then
                return nil, fmt("alg %s not allowed for the configured " ..
                                "key(s)", hdr.alg)
            end
        end
        return nil, "unknown kid " .. shown(kid)
    end
    return nil, fmt("alg %s not allowed for the configured key(s)", hdr.alg)
end

-- The JWS checks: returns the parsed header (the payload decoded in pbuf,
-- plen[0] bytes), or nil, err, code.
function Verifier:_jws(token)
    if type(token) ~= "string" then return nil, "no token", INVALID end
    local len = #token
    if len > self.max_size then return nil, "token too large", INVALID end
    local d1 = find(token, ".", 1, true)
    local d2 = d1 and find(token, ".", d1 + 1, true)
    if not d2 then
        return nil, "malformed token (not three segments)", INVALID
    end
    if find(token, ".", d2 + 1, true) then
        return nil, "malformed token (more than three segments)", INVALID
    end
    local hdr = header_of(sub(token, 1, d1 - 1))
    if hdr.err then return nil, hdr.err, INVALID end
    if d2 == len then
        return nil, "unsigned token (empty signature)", INVALID
    end
    if self.typ and hdr.typ ~= self.typ then
        return nil, fmt("typ %s is not %q", shown(hdr.typ), self.typ), INVALID
    end
    local ok, err, code = self:_check_signature(token, len, d1, d2, hdr)
    if not ok then return nil, err, code or INVALID end
    return hdr
end

--- verifier:verify_jws(token) -> payload (a string), header; or nil, err.
-- The signature and the JWS structure only: no JSON payload, no claims.
function Verifier:verify_jws(token)
    local hdr, err, code = self:_jws(token)
    if not hdr then return nil, err, code end
    return ffi_string(pbuf, plen[0]), hdr
end

local function has_scope(claim, want)
    if type(claim) == "string" then
        local init, n, wn = 1, #claim, #want
        while true do
            local s = find(claim, want, init, true)
            if not s then return false end
            local e = s + wn
            if (s == 1 or byte(claim, s - 1) == 32)
                and (e > n or byte(claim, e) == 32) then
                return true
            end
            init = s + 1
        end
    elseif type(claim) == "table" then
        for i = 1, #claim do
            if claim[i] == want then return true end
        end
    end
    return false
end

-- Scopes (all required) and roles (any one suffices).
function Verifier:_authorize(claims)
    local scopes = self.scopes
    if scopes then
        local claim
        local names = self.scope_claims
        for i = 1, #names do
            claim = claims[names[i]]
            if claim ~= nil then break end
        end
        for i = 1, #scopes do
            if not has_scope(claim, scopes[i]) then
                return nil, fmt("missing scope %q", scopes[i])
            end
        end
    end
    local roles = self.roles
    if roles then
        local v = claims
        local path = self.roles_path
        for i = 1, #path do
            if type(v) ~= "table" then v = nil break end
            v = v[path[i]]
        end
        local found = false
        for i = 1, #roles do
            if has_scope(v, roles[i]) then found = true break end
        end
        if not found then
            return nil, "none of the roles " .. concat(roles, ", ")
        end
    end
    return true
end

local function in_set(v, set)
    if type(v) == "string" then return set[v] == true end
    if type(v) == "table" then
        for i = 1, #v do
            if type(v[i]) == "string" and set[v[i]] then return true end
        end
    end
    return false
end

--- verifier:verify(token) -> claims (a table); or nil, err, code. ERR is
-- a short reason for the operator ("expired", "signature mismatch", "alg
-- none refused", ...); CODE is "invalid_token", "insufficient_scope"
-- (signature and claims fine, scopes or roles missing) or "unavailable"
-- (the JWKS URL has given no key yet).
function Verifier:verify(token)
    -- the clock is read first: should the claims go to cjson (nested
    -- claims), LuaJIT stitches the trace around that C function, and an
    -- FFI call after it aborted the continuation trace
    local now = self.now()
    local seen = self.seen
    local e = seen and type(token) == "string" and seen[token]
    if e and self.jwks_url then
        -- the refresh a signature check would have asked for (its keys'
        -- age); new keys forget every token
        self:_maybe_refresh(e.kid)
        seen = self.seen
        e = seen and seen[token]
    end
    local claims
    if e then
        claims = recall(e)
    else
        local hdr, err, code = self:_jws(token)
        if not hdr then return nil, err, code end
        local flat
        claims, flat = decode_claims(plen[0])
        if not claims then
            return nil, "payload is not a JSON object", INVALID
        end
        if flat then remember(self, token, hdr.kid, claims) end
    end

    local req = self.required
    if req then
        for i = 1, #req do
            local v = claims[req[i]]
            if v == nil or v == null then
                return nil, "missing claim " .. req[i], INVALID
            end
        end
    end
    local leeway = self.leeway
    local exp, nbf, iat = claims.exp, claims.nbf, claims.iat
    if exp ~= nil then
        if type(exp) ~= "number" then
            return nil, "exp is not a number", INVALID
        end
        if now >= exp + leeway then return nil, "expired", INVALID end
    elseif self.need_exp then
        return nil, "missing claim exp", INVALID
    end
    if nbf ~= nil then
        if type(nbf) ~= "number" then
            return nil, "nbf is not a number", INVALID
        end
        if now + leeway < nbf then
            return nil, "not yet valid (nbf)", INVALID
        end
    elseif self.need_nbf then
        return nil, "missing claim nbf", INVALID
    end
    if iat == nil then
        if self.need_iat then return nil, "missing claim iat", INVALID end
    else
        if type(iat) ~= "number" then
            return nil, "iat is not a number", INVALID
        end
        if iat > now + leeway then
            return nil, "issued in the future (iat)", INVALID
        end
        if self.max_age and now - iat > self.max_age + leeway then
            return nil, "too old (iat + max_age)", INVALID
        end
    end
    local iss = claims.iss
    if self.issuers and not (type(iss) == "string" and self.issuers[iss]) then
        return nil, "issuer not allowed: " .. shown(claims.iss), INVALID
    end
    if self.audiences and not in_set(claims.aud, self.audiences) then
        return nil, "audience not allowed", INVALID
    end
    if self.scopes or self.roles then
        local ok, err = self:_authorize(claims)
        if not ok then return nil, err, FORBIDDEN end
    end
    return claims
end

-- Public API ------------------------------------------------------------------

-- (specs) the claims decoder on a string: a table, or nil
function _M._decode_claims(s)
    grow_payload_buffer(#s)
    ffi.copy(pbuf, s, #s)
    return (decode_claims(#s))
end

local function new(opts, level)
    local ok, v = pcall(function()
        if type(opts) == "table" then check_unknown(opts) end
        return build(opts)
    end)
    if not ok then error("jwt: " .. tostring(v), level + 1) end
    if coroutine.running() == nil then v:start_refresh() end
    return v
end

--- jwt.new(opts) -> a verifier with :verify(token). Raises on bad options
-- (at config load). See docs/jwt.md for the options.
function _M.new(opts)
    return new(opts, 2)
end

-- jwt.verify's verifiers, by options table, and by the value of options
-- made only of strings, numbers, booleans and lists of those (so that a
-- table written inline in a hook, new on every call, still finds its
-- verifier and its JWKS cache).
local by_table = setmetatable({}, { __mode = "k" })
local by_print, nprint = {}, 0

local function fingerprint(opts)
    local keys = {}
    for k, v in pairs(opts) do
        if type(k) ~= "string" then return nil end
        local t = type(v)
        if t == "table" then
            for i, x in pairs(v) do
                local tx = type(x)
                if type(i) ~= "number"
                    or (tx ~= "string" and tx ~= "number") then
                    return nil
                end
            end
        elseif t ~= "string" and t ~= "number" and t ~= "boolean" then
            return nil
        end
        keys[#keys + 1] = k
    end
    sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
        local v = opts[k]
        if type(v) == "table" then
            local xs = {}
            for j, x in ipairs(v) do
                xs[j] = type(x) .. ":" .. #tostring(x) .. ":" .. x
            end
            v = "{" .. concat(xs, ",") .. "}"
        else
            v = type(v) .. ":" .. #tostring(v) .. ":" .. tostring(v)
        end
        parts[i] = k .. "=" .. v
    end
    return concat(parts, "\n")
end

--- jwt.verify(token, opts) -> claims, or nil, err, code. The verifier for
-- OPTS is made on first use and kept; prefer jwt.new once at config load.
function _M.verify(token, opts)
    local v = by_table[opts]
    if not v then
        if type(opts) ~= "table" then
            error("jwt.verify: options must be a table, got " .. type(opts), 2)
        end
        local fp = fingerprint(opts)
        v = fp and by_print[fp]
        if not v then
            v = new(opts, 2)
            if fp then
                if nprint >= 64 then by_print, nprint = {}, 0 end
                by_print[fp] = v
                nprint = nprint + 1
            end
        end
        by_table[opts] = v
    end
    return v:verify(token)
end

--- jwt.sign(claims, { secret =, alg = "HS256", kid =, header = {} }) ->
-- a compact JWS signed with an HMAC secret (for tests, scripts and
-- internal tokens; asymmetric signing is left to the identity provider).
function _M.sign(claims, opts)
    if type(claims) ~= "table" and type(claims) ~= "string" then
        error("jwt.sign: claims must be a table or a string", 2)
    end
    if type(opts) ~= "table" then
        error("jwt.sign: options must be a table", 2)
    end
    local alg = opts.alg or "HS256"
    local id = ALG_ID[alg]
    if not id or id > 3 then
        error("jwt.sign: alg must be HS256, HS384 or HS512", 2)
    end
    local key, err = jwk.secret(opts.secret)
    if not key then error("jwt.sign: " .. err, 2) end
    local header = { alg = alg, typ = "JWT", kid = opts.kid }
    for k, v in pairs(opts.header or {}) do header[k] = v end
    local payload = type(claims) == "string" and claims or cjson.encode(claims)
    local input = jwk.b64url_encode(cjson.encode(header)) .. "." ..
        jwk.b64url_encode(payload)
    local mac = ffi_new("unsigned char[64]")
    local n = ffi_new("size_t[1]", 64)
    local rc = C.mg_ffi_crypto_hmac(key.handle, id, input, #input, mac, n)
    if rc ~= 0 then
        error("jwt.sign: " .. alg .. " needs a longer secret", 2)
    end
    return input .. "." .. jwk.b64url_encode(ffi_string(mac, n[0]))
end

-- Policy ----------------------------------------------------------------------

local bearer_token = require("moongate.runtime").bearer_token

--- jwt.bearer(req) -> the bearer token of the request's Authorization
-- header, or nil (the same as req:bearer()).
function _M.bearer(req)
    return bearer_token(req:header("authorization"))
end

local function quoted(s)
    return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
end

--- jwt.policy(opts) -> a route policy: checks the bearer token of every
-- request of the route; 401 (WWW-Authenticate: Bearer
-- error="invalid_token") when it is missing or invalid, 403 (error=
-- "insufficient_scope") when scopes or roles are missing, 503 when a JWKS
-- URL has not given any key yet. On success req.ctx.jwt = the claims.
-- Options: those of jwt.new, plus optional = true (requests without a
-- token pass, unauthenticated) and realm = "...". The module is callable
-- as the same: `jwt { ... }`.
-- The policy a config gets for options that were refused: the load fails
-- anyway (config.report), this only lets the file run on to its end.
local REFUSED = { name = "jwt", on_request = function()
    error("jwt.policy: its options were refused", 2)
end }

local function policy(opts, level)
    -- every mistake of the call, not only the first (config.report)
    local msgs, known = {}, opts
    if type(opts) == "table" then
        msgs = base.unknown_keys(opts, POLICY_NAMES, "jwt.policy")
        if msgs[1] then
            known = {}
            for k, x in pairs(opts) do
                if OPTIONS[k] or POLICY_OPTIONS[k] then known[k] = x end
            end
        end
    end
    local ok, v = pcall(build, known)
    if not ok then msgs[#msgs + 1] = "jwt: " .. tostring(v) end
    local optional = type(opts) == "table" and opts.optional or nil
    local realm = type(opts) == "table" and opts.realm or nil
    if optional ~= nil and type(optional) ~= "boolean" then
        msgs[#msgs + 1] = "jwt: optional must be a boolean, got " ..
            describe(optional)
    end
    if realm ~= nil
        and (type(realm) ~= "string" or find(realm, "[%c\"\\]")) then
        msgs[#msgs + 1] = "jwt: realm must be a string without quotes or " ..
            "control characters"
    end
    if msgs[1] then
        if config.report(msgs) then return REFUSED end
        error(msgs[1], level + 1)
    end
    if coroutine.running() == nil then v:start_refresh() end
    local g = require "moongate"
    local respond, glog = g.respond, g.log
    local rpart = realm and ("realm=" .. quoted(realm) .. ", ") or ""

    local h_missing = { ["WWW-Authenticate"] =
        realm and ("Bearer realm=" .. quoted(realm)) or "Bearer" }
    local h_invalid = { ["WWW-Authenticate"] =
        "Bearer " .. rpart .. 'error="invalid_token"' }
    local scope_attr = v.scopes
        and (", scope=" .. quoted(concat(v.scopes, " "))) or ""
    local h_forbidden = { ["WWW-Authenticate"] = "Bearer " .. rpart ..
                          'error="insufficient_scope"' .. scope_attr }
    local b_missing = { error = "missing_token" }
    local b_invalid = { error = "invalid_token" }
    local b_forbidden = { error = "insufficient_scope" }
    local b_unavailable = { error = "temporarily_unavailable" }

    local function on_request(req)
        local token = bearer_token(req:header("authorization"))
        if not token then
            if optional then return end
            glog("info", fmt("jwt: request %s refused (401): no bearer token",
                             req.id))
            return respond(401, b_missing, h_missing)
        end
        local claims, err, code = v:verify(token)
        if claims then
            req.ctx.jwt = claims
            return
        end
        if code == FORBIDDEN then
            glog("info", fmt("jwt: request %s refused (403): %s", req.id, err))
            return respond(403, b_forbidden, h_forbidden)
        elseif code == UNAVAILABLE then
            glog("warn", fmt("jwt: request %s refused (503): %s", req.id, err))
            return respond(503, b_unavailable, { ["Retry-After"] = "1" })
        end
        glog("info", fmt("jwt: request %s refused (401): %s", req.id, err))
        return respond(401, b_invalid, h_invalid)
    end

    return { name = "jwt", verifier = v, on_request = on_request }
end

function _M.policy(opts)
    return policy(opts, 2)
end

-- `jwt { ... }` is jwt.policy { ... }
setmetatable(_M, { __call = function(_, opts) return policy(opts, 2) end })

return _M
