-- The config `make bench` runs moongate with, under ../shared/bench/peers.sh.
-- Ports and upstreams come from the harness's environment (see its README);
-- each workload it asks for gets its own listener and routes.
local gw = require "moongate"

local function port(name)
    local v = os.getenv(name)
    return v and v ~= "" and tonumber(v) or nil
end

gw.settings { workers = 1, access_log = "off" }

local a = os.getenv("BENCH_UPSTREAM_A") or "127.0.0.1:1"
local b = os.getenv("BENCH_UPSTREAM_B") or "127.0.0.1:1"
gw.upstream("a", { a }, { keepalive = 256 })
gw.upstream("ab", { a, b }, { keepalive = 256 })

-- W1: any path proxied to upstream A through the keep-alive pool
local w1 = port("GW_W1_PORT") or port("GW_PORT")
if w1 then
    gw.listen { port = w1, host = "127.0.0.1" }
    gw.route { name = "w1", path = "/**", upstream = "a", listen = w1 }
end
