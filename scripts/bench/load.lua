-- wrk script for every workload of scripts/bench/peers.sh, chosen by
-- BENCH_WL:
--   W0, W1, W5  GET /orders/123 (wrk builds the request once)
--   W4      the same with X-Tenant: acme and X-Client: bench
--   W2      rotates /orders/123, /payments/123, /delivery/123 with
--           Authorization: Bearer $BENCH_JWT
--   W6      as W2, plus X-Api-Key: $BENCH_API_KEY and Origin:
--           https://app.example.com
--   W7      GET /text/orders with Accept-Encoding: gzip
--   W3      GET /orders/123 with the token; each connection waits
--           BENCH_DELAY_MS after every answer; counts 200 / 429 / other
-- At the end one line for the harness:
--   RESULT requests= seconds= rps= p50_us= p99_us= errors= [s200= s429= sother=]
local wl = os.getenv("BENCH_WL") or "W1"
local token = os.getenv("BENCH_JWT")

if wl == "W7" then
    wrk.headers["Accept-Encoding"] = "gzip"
elseif wl == "W4" then
    wrk.headers["X-Tenant"] = "acme"
    wrk.headers["X-Client"] = "bench"
elseif wl == "W2" or wl == "W6" then
    local reqs, i = {}, 0
    local h = { Authorization = "Bearer " .. token }
    if wl == "W6" then
        h["X-Api-Key"] = os.getenv("BENCH_API_KEY") or "moongate-bench-api-key-0123456789"
        h["Origin"] = "https://app.example.com"
    end
    function init()
        for _, p in ipairs { "/orders/123", "/payments/123", "/delivery/123" } do
            reqs[#reqs + 1] = wrk.format("GET", p, h)
        end
    end
    function request()
        i = i % #reqs + 1
        return reqs[i]
    end
elseif wl == "W3" then
    local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "10")
    wrk.headers["Authorization"] = "Bearer " .. token
    counts = { 0, 0, 0 }     -- global: read from each thread by done()
    function delay() return pause end
    function response(status)
        local k = status == 200 and 1 or status == 429 and 2 or 3
        counts[k] = counts[k] + 1
    end
end

local threads = {}
function setup(t) threads[#threads + 1] = t end

function done(s, latency)
    local e = s.errors
    io.write(string.format("RESULT requests=%d seconds=%.6f rps=%.1f p50_us=%d p99_us=%d errors=%d",
        s.requests, s.duration / 1e6, s.requests / (s.duration / 1e6),
        latency:percentile(50), latency:percentile(99),
        e.connect + e.read + e.write + e.status + e.timeout))
    if wl == "W3" then
        local t = { 0, 0, 0 }
        for _, th in ipairs(threads) do
            local c = th:get("counts")
            for k = 1, 3 do t[k] = t[k] + c[k] end
        end
        io.write(string.format(" s200=%d s429=%d sother=%d", t[1], t[2], t[3]))
    end
    io.write("\n")
end
