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
gw.settings { workers = 1, access_log = "off", admin = false,
              timeouts = slow and { hook = 10 } or nil }

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
local w1 = port("GW_W1_PORT") or port("GW_PORT")
if w1 then
    gw.listen { port = w1, host = "127.0.0.1" }
    gw.route { name = "w1", path = "/**", upstream = balancer and balancer ~= "" and "w1" or "a",
               listen = w1 }
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
    policy_routes(w6, tonumber(os.getenv("BENCH_W2_LIMIT") or "") or 1e9, "w6", false, {
        cors.policy { origins = { "https://app.example.com" }, credentials = true },
        ip.policy { allow = ranges },
        key_auth.policy { consumers = { { name = "bench", groups = { "bench" },
                                          keys = { key_auth.hash(key) } } } },
    })
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
