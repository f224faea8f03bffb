-- /etc/moongate/gateway.lua: the gateway's config (see
-- /usr/share/doc/moongate/config-dsl.md). `moongate check -c` this file
-- before `systemctl reload moongate`; a reload whose check fails is refused
-- and the running version keeps serving.
local gw = require "moongate"

gw.settings {
    access_log = "/var/log/moongate/access.log",
    error_log = "/var/log/moongate/error.log",
    log_level = "notice",
    -- the admin API stays on loopback (reload, metrics, the live REPL)
    admin = { host = "127.0.0.1", port = 9901 },
}

gw.listen { port = 8080 }

-- the services behind the gateway: replace with yours
gw.upstream("backend", { "127.0.0.1:8081" })

-- fails closed: only what is routed here reaches a service, the rest is 404
gw.route { name = "api", path = "/api/**", upstream = "backend" }

-- what the gateway must keep doing; `moongate check` runs these
gw.test { request = { path = "/api/health" },
          expect = { route = "api", upstream = "backend" } }
gw.test { request = { path = "/admin" }, expect = { status = 404 } }
