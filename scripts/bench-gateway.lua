-- The config `make bench` runs moongate with, under scripts/bench/peers.sh
-- and counts.sh (the same contract as ../shared/bench's harness, so it runs
-- there too). Ports and upstreams come from the harness's environment
-- (scripts/bench/README.md); each workload it asks for gets its own
-- listener and routes.
local gw = require "moongate"

local function port(name)
    local v = os.getenv(name)
    return v and v ~= "" and tonumber(v) or nil
end

-- Under callgrind (counts.sh) the first requests, which compile the JIT
-- traces, run ~50x slower and would overrun the 100 ms hook budget (500);
-- the budget's value does not change what a request costs afterwards.
local slow = os.getenv("BENCH_UNDER_VALGRIND") == "1"
-- BENCH_TRACING=URL (a GW_VARIANTS variant): every request traced (ratio 1)
-- and exported to the collector at URL (docs/tracing.md)
local tracing = os.getenv("BENCH_TRACING")
gw.settings { workers = 1, access_log = "off", admin = false,
              timeouts = slow and { hook = 10 } or nil,
              tracing = tracing and tracing ~= "" and { endpoint = tracing, sample = 1 } or nil }

local a = os.getenv("BENCH_UPSTREAM_A") or "127.0.0.1:1"
local b = os.getenv("BENCH_UPSTREAM_B") or "127.0.0.1:2"
-- The peers' configs add no X-Forwarded-* and (but for W2/W3) no request
-- id upstream; moongate adds both by default, so the W1/W4 upstream turns
-- them off to do the same work as the peers. W2/W3 keep the request id
-- (their contract asks for it).
gw.upstream("a", { a }, { keepalive = 256, forwarded = false, request_id = false })
gw.upstream("ab", { a, b }, { keepalive = 256, forwarded = false })

-- W1: any path proxied to upstream A through the keep-alive pool. With
-- BENCH_BALANCER (scripts/bench.sh's GW_VARIANTS), over A and B with that
-- balancer instead (hash: by the path), to see what a balancer costs.
local balancer = os.getenv("BENCH_BALANCER")
if balancer and balancer ~= "" then
    gw.upstream("w1", { a, b }, { keepalive = 256, forwarded = false, request_id = false,
                                  balancer = balancer,
                                  hash = balancer == "hash" and "path" or nil })
end
-- BENCH_TRAFFIC (docs/traffic.md): "route" adds a second route beside
-- W1's, which W1's requests do not take, and "other" the same route with a
-- split, a canary and a mirror: the two cost W1 the same (split and mirror
-- cost a route without them nothing; the second route costs the router a
-- little); "split" sends W1 through a 50/50 split over A and B (against
-- mg-rr2, the round robin over both); "mirror" copies each W1 request to B
-- (its answer read and dropped).
local traffic = os.getenv("BENCH_TRAFFIC") or ""
if traffic ~= "" then
    gw.upstream("w1a", { a }, { keepalive = 256, forwarded = false, request_id = false })
    gw.upstream("w1b", { b }, { keepalive = 256, forwarded = false, request_id = false })
end
local w1 = port("GW_W1_PORT") or port("GW_PORT")
if w1 then
    gw.listen { port = w1, host = "127.0.0.1" }
    local up = balancer and balancer ~= "" and "w1" or "a"
    if traffic == "split" then
        gw.route { name = "w1", path = "/**", listen = w1,
                   split = { { upstream = "w1a", weight = 1 }, { upstream = "w1b", weight = 1 } } }
    elseif traffic == "mirror" then
        gw.route { name = "w1", path = "/**", upstream = up, listen = w1,
                   mirror = { upstream = "w1b", concurrency = 64 } }
    else
        gw.route { name = "w1", path = "/**", upstream = up, listen = w1 }
    end
    if traffic == "route" then
        gw.route { name = "w1-other", path = "/other/**", listen = w1, upstream = "w1a" }
    elseif traffic == "other" then
        gw.route { name = "w1-other", path = "/other/**", listen = w1,
                   split = { { upstream = "w1a", weight = 90 }, { upstream = "w1b", weight = 10 } },
                   canary = { header = "x-canary", upstream = "w1b" },
                   mirror = "ab" }
    end
end

-- H2 (scripts/bench-h2.sh): W1 over HTTP/2 from the client, h2c with prior
-- knowledge (h2load), proxied over HTTP/1.1 to A through the same pool
local h2 = port("GW_H2_PORT")
if h2 then
    gw.listen { port = h2, host = "127.0.0.1", http2 = true }
    gw.route { name = "h2", path = "/**", upstream = "a", listen = h2 }
end

-- W4: two hooks; the request hook reads X-Tenant and X-Client, sets
-- X-Tenant-Checked upstream and keeps "tenant/client" in req.ctx; the
-- response hook adds X-Gateway-Ctx from it
local w4 = port("GW_W4_PORT")
if w4 then
    gw.listen { port = w4, host = "127.0.0.1" }
    gw.route { name = "w4", path = "/**", upstream = "a", listen = w4, policies = { {
        on_request = function(req)
            local tenant, client = req:header("x-tenant"), req:header("x-client")
            req:set_header("X-Tenant-Checked", tenant)
            req.ctx.gw = tenant .. "/" .. client
        end,
        on_response = function(req, res)
            res:set_header("X-Gateway-Ctx", req.ctx.gw)
        end,
    } } }
end

-- W5: W1 to origin A over TLS: the certificate verified against the bench's
-- CA and name, TLS connections pooled (as nginx's proxy_ssl + keepalive)
local w5 = port("GW_W5_PORT")
local a_tls = os.getenv("BENCH_UPSTREAM_A_TLS")
if w5 and a_tls then
    -- scripts/bench-upstream-tls.sh sets BENCH_W5_KEEPALIVE=0 (a new TLS
    -- connection per request) and BENCH_W5_SESSION_REUSE=0 (full handshakes)
    gw.upstream("a_tls", { a_tls }, {
        keepalive = tonumber(os.getenv("BENCH_W5_KEEPALIVE") or "") or 256,
        forwarded = false, request_id = false,
        tls = { ca = os.getenv("BENCH_TLS_CA"), sni = os.getenv("BENCH_TLS_NAME"),
                session_reuse = os.getenv("BENCH_W5_SESSION_REUSE") ~= "0" } })
    gw.listen { port = w5, host = "127.0.0.1" }
    gw.route { name = "w5", path = "/**", upstream = "a_tls", listen = w5 }
end

-- W2 / W3: JWT (HS256, signature and exp) verified on every request, then a
-- per-`sub` rate limit (W2: never triggers but is counted; W3: 100/s, 429
-- beyond), routing by prefix, round robin over A and B.
local ok_jwt, jwt = pcall(require, "moongate.jwt")
local ok_rl, limit = pcall(require, "moongate.ratelimit")
local secret = os.getenv("BENCH_JWT_SECRET") or "moongate-bench-secret-0123456789abcdef"

-- (W6: `before` goes in front of the chain)
local function policy_routes(p, rate, name, headers, before)
    if not (ok_jwt and ok_rl) then
        error("W2/W3 need moongate.jwt and moongate.ratelimit")
    end
    gw.listen { port = p, host = "127.0.0.1" }
    local auth = jwt.policy { secret = secret, leeway = 5 }
    local rl = limit.policy { name = name, rate = rate, per = 1,
                              key = limit.key.jwt_sub, headers = headers }
    local chain = {}
    for _, x in ipairs(before or {}) do chain[#chain + 1] = x end
    chain[#chain + 1], chain[#chain + 2] = auth, rl
    for _, prefix in ipairs { "/orders", "/payments", "/delivery" } do
        gw.route { name = name .. prefix, path = prefix .. "/**", upstream = "ab",
                   listen = p, policies = chain }
    end
end

local w2 = port("GW_W2_PORT")
if w2 then
    policy_routes(w2, tonumber(os.getenv("BENCH_W2_LIMIT") or "") or 1e9, "w2", false)
end
local w3 = port("GW_W3_PORT")
if w3 then
    policy_routes(w3, tonumber(os.getenv("BENCH_W3_LIMIT") or "") or 100, "w3", true)
end

-- W6: the W2 chain behind cors (one origin, credentials), ip (an
-- allow-list of 10,000 CIDR ranges, BENCH_W6_CIDRS) and key_auth (one
-- consumer, its key known by its SHA-256)
local w6 = port("GW_W6_PORT")
if w6 then
    local cors, ip = require "moongate.cors", require "moongate.ip"
    local key_auth = require "moongate.key_auth"
    local ranges = {}
    local f = os.getenv("BENCH_W6_CIDRS") and io.open(os.getenv("BENCH_W6_CIDRS"))
    if f then
        for line in f:lines() do ranges[#ranges + 1] = line end
        f:close()
    else        -- the same list as scripts/bench/tool.py cidrs
        for i = 0, 9999 do
            ranges[#ranges + 1] = string.format("10.%d.%d.0/25", math.floor(i / 256), i % 256)
        end
        ranges[#ranges + 1] = "127.0.0.0/8"
    end
    local key = os.getenv("BENCH_API_KEY") or "moongate-bench-api-key-0123456789"
    local before = {
        cors.policy { origins = { "https://app.example.com" }, credentials = true },
        ip.policy { allow = ranges },
        key_auth.policy { consumers = { { name = "bench", groups = { "bench" },
                                          keys = { key_auth.hash(key) } } } },
    }
    -- BENCH_W6_ONLY="cors,ip" (a GW_VARIANTS knob): only those of the three,
    -- to see what each costs ("none": W2's chain on W6's requests)
    local only = os.getenv("BENCH_W6_ONLY")
    if only and only ~= "" then
        local kept = {}
        for _, p in ipairs(before) do
            if (("," .. only .. ","):find("," .. p.name .. ",", 1, true)) then
                kept[#kept + 1] = p
            end
        end
        before = kept
    end
    -- BENCH_JIT_LOG=file: jit.v's log of the worker (a timer starts it:
    -- timers run in workers only), to see which traces of the chain abort
    local jit_log = os.getenv("BENCH_JIT_LOG")
    if jit_log and jit_log ~= "" then
        gw.timer.after(0, function() require("jit.v").start(jit_log) end)
    end
    policy_routes(w6, tonumber(os.getenv("BENCH_W2_LIMIT") or "") or 1e9, "w6", false, before)
end

-- G1 (scripts/bench-grpc.sh): gRPC unary calls, HTTP/2 both ways: an h2c
-- listener, an upstream with protocol = "grpc", the service's route
local g1, grpc_backend = port("GW_G1_PORT"), os.getenv("BENCH_GRPC_UPSTREAM")
if g1 and grpc_backend then
    gw.listen { port = g1, host = "127.0.0.1", http2 = true }
    gw.upstream("grpc", { grpc_backend }, { protocol = "grpc", forwarded = false,
                                            request_id = false })
    gw.route { name = "g1", grpc = { service = "demo.Echo" }, upstream = "grpc", listen = g1 }
end

-- W7: W1 for 8 KiB of JSON, compressed with gzip level 1 (as nginx's gzip
-- on; gzip_comp_level 1; gzip_min_length 20)
local w7 = port("GW_W7_PORT")
if w7 then
    local compression = require "moongate.compression"
    gw.listen { port = w7, host = "127.0.0.1" }
    gw.route { name = "w7", path = "/**", upstream = "a", listen = w7, policies = {
        compression.policy { types = { "application/json" }, min_size = 20,
                             gzip = { level = 1 }, brotli = false } } }
end
