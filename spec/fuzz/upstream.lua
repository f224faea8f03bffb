-- The gateway the upstream fuzz target (upstream.c) runs: routes to one
-- upstream whose connections the harness provides without sockets, one
-- of them cached, one whose policy changes the answer in on_response.
local gw = require "moongate"

gw.settings { access_log = "off", admin = false }

gw.listen { port = 18081, host = "127.0.0.1" } -- never opened by the harness

gw.shared_dict("cache", { size = "4m" })

gw.upstream("svc", { "127.0.0.1:1" }, { keepalive = 4 })

gw.route { path = "/plain/**", upstream = "svc" }
gw.route { path = "/cached/**", upstream = "svc",
           cache = { ttl = 30, stale = 60, vary = { "Accept" }, lock = 0 } }
gw.route { path = "/ws", upstream = "svc" }
gw.route { path = "/hooked/**", upstream = "svc", policies = { {
    on_response = function(req, res, policy)
        local ct = res:header("content-type")
        res:set_header("x-upstream-type", ct or "none")
        res:remove_header("etag")
        if res.status == 404 then
            res:set_status(410)
        elseif res:header("x-replace") then
            res:set_body({ replaced = true, was = res.status })
        end
    end,
} } }
