-- The nginx-lua peer's policies (scripts/bench/conf/nginx-lua.conf): what a
-- Lua gateway on OpenResty does for W2/W3 and W4, written as tightly as such
-- a plugin would be, so the comparison is with a good Lua gateway, not a
-- slow one. Routing and balancing stay in nginx's C (locations, upstream{}),
-- which Kong and APISIX do in Lua: this is a lower bound for them.
--
-- JWT: HMAC-SHA256 through LuaJIT's FFI into the libcrypto nginx is linked
-- with; the key is set once per worker (an HMAC_CTX reset per request keeps
-- its ipad/opad), the signature is compared after base64url-encoding it.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local base64 = require "ngx.base64"

ffi.cdef [[
typedef struct hmac_ctx_st HMAC_CTX;
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
HMAC_CTX *HMAC_CTX_new(void);
int HMAC_Init_ex(HMAC_CTX *ctx, const void *key, int len, const EVP_MD *md, void *engine);
int HMAC_Update(HMAC_CTX *ctx, const unsigned char *data, size_t len);
int HMAC_Final(HMAC_CTX *ctx, unsigned char *md, unsigned int *len);
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]

local lib = ffi.C
if not pcall(function() return lib.HMAC_CTX_new end) then
    lib = ffi.load("crypto")          -- not in nginx's global symbols
end

local byte_ptr = ffi.typeof("const unsigned char *")
local mac_buf, mac_len = ffi.new("unsigned char[32]"), ffi.new("unsigned int[1]")
local find, sub, floor, type = string.find, string.sub, math.floor, type
local b64_decode, b64_encode = base64.decode_base64url, base64.encode_base64url
local decode = cjson.decode
local var, now, time, exit = ngx.var, ngx.now, ngx.time, ngx.exit
local set_header = ngx.req.set_header

local M = {}
local hmac, limits
local keys = {}          -- W6: SHA-256 of a key (32 bytes) -> its consumer

function M.start(secret, key_sha256)
    if key_sha256 then
        keys[(key_sha256:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))] =
            { name = "bench", groups = { "bench" } }
    end
    hmac = lib.HMAC_CTX_new()
    assert(hmac ~= nil and lib.HMAC_Init_ex(hmac, secret, #secret, lib.EVP_sha256(), nil) == 1,
           "bench_gw: HMAC set-up failed")
    limits = ngx.shared.bench_limits
end

-- claims of a valid token, or nil: three parts, alg HS256, signature, exp
local function verify(token)
    if type(token) ~= "string" then return nil end
    local dot1 = find(token, ".", 1, true)
    local dot2 = dot1 and find(token, ".", dot1 + 1, true)
    if not dot2 or find(token, ".", dot2 + 1, true) then return nil end
    local header = decode(b64_decode(sub(token, 1, dot1 - 1)) or "")
    if type(header) ~= "table" or header.alg ~= "HS256" then return nil end
    if lib.HMAC_Init_ex(hmac, nil, 0, nil, nil) ~= 1
        or lib.HMAC_Update(hmac, ffi.cast(byte_ptr, token), dot2 - 1) ~= 1
        or lib.HMAC_Final(hmac, mac_buf, mac_len) ~= 1 then
        return nil
    end
    if b64_encode(ffi.string(mac_buf, mac_len[0])) ~= sub(token, dot2 + 1) then return nil end
    local claims = decode(b64_decode(sub(token, dot1 + 1, dot2 - 1)) or "")
    if type(claims) ~= "table" or type(claims.exp) ~= "number" or claims.exp <= time()
        or type(claims.sub) ~= "string" then
        return nil
    end
    return claims
end

-- W1: an access handler that does nothing
function M.nothing() end

-- W2/W3: token, then a fixed one-second window per consumer (Kong's "local"
-- rate-limiting policy, APISIX's limit-count)
function M.policy(limit)
    local auth = var.http_authorization
    local claims = auth and sub(auth, 1, 7) == "Bearer " and verify(sub(auth, 8))
    if not claims then
        ngx.header["WWW-Authenticate"] = "Bearer"
        return exit(401)
    end
    local n = limits:incr(claims.sub .. "/" .. floor(now()), 1, 0, 2)
    if n and n > limit then
        return exit(429)
    end
end

-- W6: CORS (one origin, credentials; preflights answered here), the
-- client against 10,000 CIDR ranges (nginx's geo radix tree), an API key
-- by its SHA-256, then the W2 chain
local ORIGIN = "https://app.example.com"
local sha_buf = ffi.new("unsigned char[32]")
local clear_header = ngx.req.clear_header

function M.chain(limit)
    local origin = var.http_origin
    if ngx.req.get_method() == "OPTIONS" and var.http_access_control_request_method then
        if origin ~= ORIGIN then return exit(403) end
        local h = ngx.header
        h["Access-Control-Allow-Origin"] = origin
        h["Access-Control-Allow-Methods"] = "GET, HEAD, POST, PUT, PATCH, DELETE"
        h["Access-Control-Allow-Credentials"] = "true"
        h["Vary"] = "Origin"
        return exit(204)
    end
    if var.bench_w6_allowed ~= "1" then return exit(403) end
    local key = var.http_x_api_key
    if not key then return exit(401) end
    lib.SHA256(key, #key, sha_buf)
    local consumer = keys[ffi.string(sha_buf, 32)]
    if not consumer then return exit(401) end
    local ctx = ngx.ctx
    ctx.consumer = consumer
    ctx.cors = origin == ORIGIN
    clear_header("X-Api-Key")
    return M.policy(limit)
end

function M.cors_response()
    local h = ngx.header
    local vary = h["Vary"]
    if not vary then
        h["Vary"] = "Origin"
    elseif not find(vary:lower(), "origin", 1, true) then
        h["Vary"] = vary .. ", Origin"
    end
    if ngx.ctx.cors then
        h["Access-Control-Allow-Origin"] = ORIGIN
        h["Access-Control-Allow-Credentials"] = "true"
    end
end

-- W4: request hook (access phase) and response hook (header filter)
function M.on_request()
    local tenant, client = var.http_x_tenant, var.http_x_client
    if tenant then set_header("X-Tenant-Checked", tenant) end
    ngx.ctx.bench = (tenant or "") .. "/" .. (client or "")
end

function M.on_response()
    local v = ngx.ctx.bench
    if v then ngx.header["X-Gateway-Ctx"] = v end
end

return M
