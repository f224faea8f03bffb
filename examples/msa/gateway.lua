-- The demo: one gateway in front of three small services.
--
--   :8080  the gateway            /orders/** -> orders (2 instances, round robin)
--                                 /payments/** -> payments (POST and GET)
--                                 /delivery/:id -> delivery (answers cached 5 s)
--   :8081, :8091  orders service instances
--   :8082  payments service
--   :8083  delivery service
--
-- The services are Lua handlers served by this same process (routes bound to
-- their listener with `listen = PORT`), so the demo needs no other program.
local gw = require "moongate"

gw.settings { access_log = "stdout" }

gw.listen { port = 8080 }

-- upstreams: named groups of targets
gw.upstream("orders",   { "127.0.0.1:8081", "127.0.0.1:8091" })
gw.upstream("payments", { "127.0.0.1:8082" })
gw.upstream("delivery", { "127.0.0.1:8083" })

-- routes: the most specific match wins; `listen = 8080` keeps them off the
-- demo services' own ports below
gw.route { name = "orders",   path = "/orders/**", upstream = "orders", listen = 8080 }
gw.route { name = "payments", path = "/payments/**", upstream = "payments", listen = 8080,
           methods = { "GET", "POST" } }
gw.route { name = "delivery", path = "/delivery/:id", upstream = "delivery", listen = 8080,
           rewrite = "/shipments/:id",
           -- the second request within 5 s is answered by the gateway: see the
           -- Cache-Status and Age headers (DELETE localhost:9901/cache purges)
           cache = { ttl = 5 } }

-- the demo services --------------------------------------------------------
local function service(name, port)
    gw.listen { port = port, host = "127.0.0.1" }
    gw.route { name = name .. "-" .. port, path = "/**", listen = port,
               handler = function(req)
                   return 200, {
                       service = name,
                       instance = port,
                       method = req.method,
                       path = req.path,
                       request_id = req.headers["x-request-id"],
                   }
               end }
end

service("orders", 8081)
service("orders", 8091)
service("payments", 8082)
service("delivery", 8083)
