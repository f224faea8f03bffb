-- examples/jwt: JWT authentication and authorization with the bundled
-- `jwt` policy (docs/jwt.md). Run from the repository root:
--
--   build/moongate run -c examples/jwt/gateway.lua
--
--   :8080  the gateway
--          /orders/**  HS256 token with scope "orders:read"      -> orders
--          /admin/**   HS256 token with role "admin"              -> orders
--          /public/**  token optional (identity forwarded if any) -> orders
--          /rs/**      EdDSA token checked against the identity
--                      provider's keys (a JWKS URL)               -> orders
--   :8081  the "orders" service: answers with the identity headers it got
--   :8082  a stand-in identity provider publishing
--          examples/jwt/.idp/jwks.json (examples/jwt/idp.sh makes the key,
--          mints tokens, rotates the key)
--
-- The HMAC secret comes from JWT_SECRET (at least 32 bytes); mint tokens
-- with examples/jwt/mint.sh (openssl only), see examples/jwt/README.md.
local gw = require "moongate"
local jwt = require "moongate.jwt"

local SECRET = os.getenv("JWT_SECRET")
    or "moongate-example-secret-change-me-0123456789"
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local PORT = tonumber(os.getenv("PORT") or "8080")

gw.settings { access_log = "stdout" }
gw.listen { port = PORT }
gw.upstream("orders", { "127.0.0.1:8081" })

-- A second policy after `jwt`: the verified claims are in req.ctx.jwt;
-- pass the identity on to the service as headers.
local forward_identity = {
    on_request = function(req)
        local claims = req.ctx.jwt
        if claims then
            local scope = claims.scope
            req:set_header("X-User", claims.sub or "")
            req:set_header("X-Scopes", type(scope) == "string" and scope or "")
        else
            req:remove_header("X-User")    -- never trust a client's own
            req:remove_header("X-Scopes")
        end
    end,
}

-- Options are checked here, once, when the config loads.
local function hs(extra)
    local t = { secret = SECRET, issuer = "example-idp",
                audience = "orders-api", leeway = 5 }
    for k, v in pairs(extra) do t[k] = v end
    return t
end

-- (`listen = PORT` keeps these routes off the service ports below.)
gw.route { path = "/orders/**", upstream = "orders", listen = PORT,
           policies = { jwt.policy(hs { scopes = { "orders:read" } }),
                        forward_identity } }
gw.route { path = "/admin/**", upstream = "orders", listen = PORT,
           policies = { jwt.policy(hs { roles = { "admin" } }),
                        forward_identity } }
gw.route { path = "/public/**", upstream = "orders", listen = PORT,
           policies = { jwt.policy(hs { optional = true }),
                        forward_identity } }
gw.route { path = "/rs/**", upstream = "orders", listen = PORT,
           policies = {
               jwt.policy {
                   jwks_url = "http://127.0.0.1:8082/.well-known/jwks.json",
                   jwks_refresh = 300, jwks_min_refresh = 2,
                   issuer = "example-idp",
               },
               forward_identity,
           } }

-- the "orders" service -------------------------------------------------
gw.listen { port = 8081, host = "127.0.0.1" }
gw.route { name = "orders-service", path = "/**", listen = 8081,
           handler = function(req)
               return 200, { service = "orders", path = req.path,
                             user = req.headers["x-user"],
                             scopes = req.headers["x-scopes"] }
           end }

-- the identity provider's JWKS endpoint --------------------------------
gw.listen { port = 8082, host = "127.0.0.1" }
gw.route { name = "idp-jwks", path = "/.well-known/jwks.json", listen = 8082,
           handler = function()
               local f = io.open(HERE .. "/.idp/jwks.json", "rb")
               if not f then
                   return 404,
                       { error = "no keys yet: run examples/jwt/idp.sh" }
               end
               local body = f:read("*a")
               f:close()
               return 200, body, { ["Content-Type"] = "application/json" }
           end }

-- examples the config must pass at every load and reload (gw.test) ------
local function bearer(claims)
    local c = { iss = "example-idp", aud = "orders-api", exp = os.time() + 600 }
    for k, v in pairs(claims) do c[k] = v end
    return { Authorization = "Bearer " .. jwt.sign(c, { secret = SECRET }) }
end
gw.test { request = { path = "/orders/1" }, expect = { status = 401 } }
gw.test { request = { path = "/orders/1",
                      headers = bearer { sub = "t", scope = "orders:read" } },
          expect = { status = 200, upstream = "orders",
                     upstream_headers = { ["x-user"] = "t" } } }
gw.test { request = { path = "/orders/1",
                      headers = bearer { sub = "t", scope = "other" } },
          expect = { status = 403 } }
