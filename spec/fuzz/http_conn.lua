-- The gateway the http_conn fuzz target (http_conn.c) feeds requests to:
-- small limits (so that fuzzed inputs reach them), routes answered by Lua
-- (one reading the whole body), routes to an upstream whose connections
-- the harness provides without sockets, and hooks that read and change
-- the request.
local gw = require "moongate"

gw.settings {
    access_log = "off",
    admin = false,
    limits = { request_line = 1024, header_size = 2048, header_count = 16, body = 4096 },
}

gw.listen { port = 18080, host = "127.0.0.1" } -- never opened by the harness

gw.upstream("svc", { "127.0.0.1:1" }, { keepalive = 4 })

gw.route { path = "/svc/**", upstream = "svc" }
-- what a path with %2F / %5C gets, per route (the listener rejects it)
gw.route { path = "/dec/**", upstream = "svc", escaped_slashes = "decode" }
gw.route { path = "/red/**", upstream = "svc", escaped_slashes = "redirect" }
gw.route { path = "/keep/**", upstream = "svc", escaped_slashes = "keep" }
gw.route { path = "/v1/items/:id", upstream = "svc", rewrite = "/items/:id",
           methods = { "GET", "HEAD", "POST", "PUT" }, max_body = 512 }
gw.route { path = "/api/", upstream = "svc", strip_prefix = "/api", host = "*.example.com" }
gw.route { path = "/echo", handler = function() return 204 end, policies = {
    function(req)
        local body = req:body() -- the whole body, read before the handler
        return gw.respond(200, { len = #body, method = req.method, path = req.path })
    end,
} }
gw.route { path = "/hello", methods = { "GET", "HEAD" }, handler = function(req)
    return 200, "hello\n", { ["cache-control"] = "no-store" }
end }

function gw.on_request(req)
    if req:header("x-deny") then
        return gw.respond(403, { error = "denied" })
    end
    local v = req:header("x-set")
    if v then req:set_header("x-seen", v) end
    if req:header("x-drop") then req:set_header("user-agent", nil) end
end
