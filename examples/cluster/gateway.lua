-- examples/cluster: one of several gateways sharing their rate limits
-- through Redis (cluster mode, docs/ratelimit.md). Every instance runs this
-- same file; the environment tells them apart:
--
--   NAME          instance name, echoed by its service ("gw1")
--   PORT          gateway port (8080)
--   SERVICE_PORT  this instance's "api" service, a Lua handler (8081)
--   ADMIN_PORT    admin API (9901)
--   REDIS         the shared Redis, host:port (127.0.0.1:6390)
--
-- examples/cluster/run.sh starts Redis and two instances on loopback and
-- shows the shared limit with curl.
--
--   /api/**   10 requests per 10 s per X-User header (else per address),
--             counted in Redis across all instances; while Redis is down,
--             each instance limits on its own to 5 per 10 s (fallback)
--   /strict/**  2 per 10 s per client, and nothing passes while Redis is
--             down (on_redis_error = "deny")
--   /catalog/** answers kept 30 s in the same Redis: what one gateway
--             fetched, the others serve (Cache-Status: hit)
local gw = require "moongate"
local limit = require "moongate.ratelimit"

local NAME = os.getenv("NAME") or "gw1"
local PORT = tonumber(os.getenv("PORT") or "8080")
local SERVICE = tonumber(os.getenv("SERVICE_PORT") or "8081")
local REDIS = os.getenv("REDIS") or "127.0.0.1:6390"

gw.settings { access_log = "off",
              admin = { port = tonumber(os.getenv("ADMIN_PORT") or "9901") } }
gw.listen { port = PORT }
gw.upstream("api", { "127.0.0.1:" .. SERVICE })

-- checked here, at load: a typo is reported as this file and line
local redis = { host = REDIS:match("^(.*):"), port = tonumber(REDIS:match(":(%d+)$")),
                timeout = 0.1, connect_timeout = 0.5 }

gw.route { path = "/api/**", upstream = "api", listen = PORT, policies = {
    limit.policy { rate = 10, per = 10, key = limit.key.header("X-User"),
                   redis = redis, fallback = { rate = 5, per = 10 } },
} }

gw.route { path = "/strict/**", upstream = "api", listen = PORT, policies = {
    limit.policy { rate = 2, per = 10, redis = redis, on_redis_error = "deny" },
} }

gw.route { path = "/catalog/**", upstream = "api", listen = PORT,
           cache = { ttl = 30, redis = redis } }

-- this instance's service
gw.listen { port = SERVICE, host = "127.0.0.1" }
gw.route { path = "/**", listen = SERVICE, handler = function(req)
    return 200, { service = "api", instance = NAME, path = req.path }
end }
