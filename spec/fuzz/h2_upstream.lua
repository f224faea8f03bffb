-- The gateway the h2_upstream fuzz target (h2_upstream.c) runs: routes to
-- one HTTP/2 upstream whose session the harness provides without a socket,
-- one of them with an on_response policy, one taking a body.
local gw = require "moongate"

gw.settings { access_log = "off", admin = false }

gw.listen { port = 18081, host = "127.0.0.1" } -- never opened by the harness

gw.upstream("svc", { "127.0.0.1:1" }, { protocol = "h2" })

gw.route { path = "/plain/**", upstream = "svc" }
gw.route { path = "/hooked/**", upstream = "svc", policies = { {
    on_response = function(req, res, policy)
        res:set_header("x-upstream-type", res:header("content-type") or "none")
        if res.status == 404 then
            res:set_status(410)
        elseif res:header("x-replace") then
            res:set_body({ replaced = true, was = res.status })
        end
    end,
} } }
gw.route { grpc = { service = "demo.Echo" }, upstream = "svc" }
