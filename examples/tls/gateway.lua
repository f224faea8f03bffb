-- examples/tls: HTTPS in front of two instances of a service, with active
-- health checks. run.sh makes a self-signed certificate in certs/ first.
local gw = require "moongate"

local port = tonumber(os.getenv("PORT") or "") or 8443
local s1 = tonumber(os.getenv("SERVICE_PORT") or "") or 8081

gw.settings { workers = 2, access_log = "off", admin = { port = port + 1000 } }

gw.listen { port = port, host = "127.0.0.1",
            tls = { cert = "certs/localhost.pem", key = "certs/localhost.key" } }
-- the two "instances" are Lua handlers of this same process
gw.listen { port = s1, host = "127.0.0.1" }
gw.listen { port = s1 + 1, host = "127.0.0.1" }

-- instance 2 answers its health check with 503 while the file down.flag exists
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local function down() local f = io.open(here .. "down.flag") if f then f:close() return true end end

gw.upstream("orders", { "127.0.0.1:" .. s1, "127.0.0.1:" .. (s1 + 1) }, {
    health = { path = "/health", interval = 0.5, timeout = 1, fall = 2, rise = 2 },
})

gw.route { path = "/health", listen = s1, handler = function() return 200, "ok" end }
gw.route { path = "/health", listen = s1 + 1, handler = function()
    if down() then return 503, "draining" end
    return 200, "ok"
end }
gw.route { path = "/orders/**", listen = s1, handler = function(req)
    return 200, { instance = 1, path = req.path, scheme = req.headers["x-forwarded-proto"] }
end }
gw.route { path = "/orders/**", listen = s1 + 1, handler = function(req)
    return 200, { instance = 2, path = req.path, scheme = req.headers["x-forwarded-proto"] }
end }

-- the public side: HTTPS only; hooks see req.tls
gw.route { path = "/orders/**", listen = port, upstream = "orders", policies = { {
    on_response = function(req, res)
        res:set_header("X-TLS", req.tls and (req.tls.version .. " " .. req.tls.cipher) or "none")
    end,
} } }
