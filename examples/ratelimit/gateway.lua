-- examples/ratelimit: rate limits in local mode (one gateway, every worker
-- sharing each limit exactly through a shared dictionary). docs/ratelimit.md
-- has the whole story. Run from the repository root:
--
--   examples/ratelimit/run.sh                     (starts it, shows the limits)
--   build/moongate run -c examples/ratelimit/gateway.lua    (just the gateway)
--
--   :8080  the gateway
--          /api/**     5 requests per 10 s per client address (sliding window)
--          /burst/**   token bucket: 3 at once, then 1 per second, per client
--          /login      3 per minute per X-User header (else per address)
--          /search     in a hook: a query costs 1, "?deep=1" costs 5, of 20/min
--   :8081  the "api" service (a Lua handler of this same process)
local gw = require "moongate"
local limit = require "moongate.ratelimit"

local PORT = tonumber(os.getenv("PORT") or "8080")
local SERVICE = tonumber(os.getenv("SERVICE_PORT") or "8081")

gw.settings { access_log = "off" }
-- the counters: 1 MB holds ~10,000 keys (it is made with 16 MB if not declared)
gw.shared_dict("ratelimit", { size = "1m" })

gw.listen { port = PORT }
gw.upstream("api", { "127.0.0.1:" .. SERVICE })

-- the bundled policy: 429 + Retry-After beyond the limit, RateLimit-Limit,
-- -Remaining, -Reset on every answer
gw.route { path = "/api/**", upstream = "api", listen = PORT, policies = {
    limit.policy { rate = 5, per = 10 },
} }

gw.route { path = "/burst/**", upstream = "api", listen = PORT, policies = {
    limit.policy { rate = 1, per = 1, algorithm = "gcra", burst = 3 },
} }

gw.route { path = "/login", upstream = "api", listen = PORT, methods = { "POST" },
           policies = {
    limit.policy { rate = 3, per = 60, key = limit.key.header("X-User"),
                   name = "login" },
} }

-- a limiter in a hook of your own: made once here, used per request
local searches = limit.new { rate = 20, per = 60, name = "search" }
gw.route { path = "/search", upstream = "api", listen = PORT, policies = {
    function(req)
        local cost = req:arg("deep") == "1" and 5 or 1
        local ok, remaining, _, retry_after = searches:allow(req.client, cost)
        if not ok then
            return gw.respond(429, { error = "search quota spent", cost = cost },
                              { ["Retry-After"] = math.max(1, math.ceil(retry_after)) })
        end
        req:set_header("X-Search-Remaining", remaining)
    end,
} }

-- the service ---------------------------------------------------------------
gw.listen { port = SERVICE, host = "127.0.0.1" }
gw.route { path = "/**", listen = SERVICE, handler = function(req)
    return 200, { service = "api", path = req.path,
                  search_remaining = req.headers["x-search-remaining"] }
end }
