-- The gateway the h2_conn fuzz target (h2_conn.c) feeds HTTP/2 frames to:
-- a listener with http2 = true, small limits (so that fuzzed inputs reach
-- them, and the flood bounds too), routes answered by Lua (one reading
-- the whole body), routes to an upstream whose connections the harness
-- provides without sockets, and hooks that read and change the request.
local gw = require "moongate"

gw.settings {
    access_log = "off",
    admin = false,
    limits = { request_line = 1024, header_size = 2048, header_count = 16, body = 4096 },
    http2 = { max_concurrent_streams = 8, initial_window = 4096, connection_window = 65535,
              max_resets = 8, max_control_frames = 32 },
}

gw.listen { port = 18080, host = "127.0.0.1", http2 = true } -- never opened by the harness

gw.upstream("svc", { "127.0.0.1:1" }, { keepalive = 4 })

gw.route { path = "/svc/**", upstream = "svc" }
gw.route { path = "/small/**", upstream = "svc", max_body = 512 }
gw.route { path = "/echo", handler = function() return 204 end, policies = {
    function(req)
        local body = req:body() -- the whole body, read before the handler
        return gw.respond(200, { len = #body, method = req.method, path = req.path })
    end,
} }
gw.route { path = "/hello", methods = { "GET", "HEAD" }, handler = function(req)
    return 200, "hello\n", { ["cache-control"] = "no-store", ["Connection"] = "close" }
end }

function gw.on_request(req)
    if req:header("x-deny") then
        return gw.respond(403, { error = "denied" })
    end
    local v = req:header("x-set")
    if v then req:set_header("x-seen", v) end
end
