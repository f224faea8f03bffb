-- spec/c/metrics_spec.lua: src/metrics.c through the FFI. Every test starts
-- from a fresh mg_metrics_init and ends with mg_metrics_free, so route ids
-- and counters do not leak from one test into the next.
local ffi = require "ffi"

ffi.cdef [[
int mg_metrics_init(int nworkers);
void mg_metrics_free(void);
uint32_t mg_metrics_route_id(const char *name);
void mg_metrics_request(int w, uint32_t route_id, int status, uint64_t total_us,
                        uint64_t upstream_us);
void mg_metrics_connections(int w, int delta);
uint32_t mg_metrics_target_id(const char *upstream, const char *target);
void mg_metrics_upstream(int w, uint32_t target_id, int status, uint64_t us);
uint32_t mg_metrics_hook_id(const char *phase, const char *policy);
void mg_metrics_hook(int w, uint32_t hook_id, uint64_t ns);
void mg_metrics_reload(int ok);
char *mg_metrics_render(const char *extra, size_t *len);
size_t mg_metrics_escape_label(char *out, size_t cap, const char *s);
int mg_test_metrics_threads(int nthreads, int n, uint32_t route);
void free(void *p);
]]

local lib = ffi.load(os.getenv("MG_TEST_LIB") or "build/libmgtest.so")

local len = ffi.new("size_t[1]")

local function render(extra)
    local p = lib.mg_metrics_render(extra, len)
    assert(p ~= nil, "render failed")
    local s = ffi.string(p, len[0])
    ffi.C.free(p)
    return s
end

-- The sample lines of `metric` (name prefix), in output order.
local function samples(text, metric)
    local out = {}
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, #metric) == metric then out[#out + 1] = line end
    end
    return out
end

-- The value of one exact series ("name{labels}"), or nil.
local function value(text, series)
    for line in text:gmatch("[^\n]+") do
        local s, v = line:match("^(.-) (%S+)$")
        if s == series then return tonumber(v) end
    end
end

local function escape(s)
    local buf = ffi.new("char[?]", 256)
    local n = lib.mg_metrics_escape_label(buf, 256, s)
    return ffi.string(buf), tonumber(n)
end

local US = 1

describe("metrics", function()
    before_each(function()
        lib.mg_metrics_free()   -- names other specs' configs interned
        assert.equal(0, lib.mg_metrics_init(2))
    end)
    after_each(function()
        lib.mg_metrics_free()
    end)

    describe("route ids", function()
        it("gives 0 to no route and stable ids to names", function()
            assert.equal(0, lib.mg_metrics_route_id(nil))
            assert.equal(0, lib.mg_metrics_route_id(""))
            local a = lib.mg_metrics_route_id("orders")
            local b = lib.mg_metrics_route_id("payments")
            assert.is_true(a > 0 and b > 0 and a ~= b)
            assert.equal(a, lib.mg_metrics_route_id("orders"))
            assert.equal(b, lib.mg_metrics_route_id("payments"))
        end)

        it("keeps names interned before init", function()
            lib.mg_metrics_free()
            local id = lib.mg_metrics_route_id("early")
            assert.equal(0, lib.mg_metrics_init(1))
            assert.equal(id, lib.mg_metrics_route_id("early"))
            lib.mg_metrics_request(0, id, 200, 10, 0)
            assert.equal(1, value(render(),
                'moongate_requests_total{route="early",status="200"}'))
        end)

        it("puts names beyond the table into (other)", function()
            local ids = {}
            for i = 1, 4100 do ids[i] = lib.mg_metrics_route_id("r" .. i) end
            local other = ids[4100]
            assert.equal(other, ids[4095])      -- 4094 named ids, then other
            assert.is_true(ids[4094] ~= other)
            assert.equal(other, lib.mg_metrics_route_id("(other)"))
            lib.mg_metrics_request(0, ids[4099], 200, 10, 0)
            lib.mg_metrics_request(1, ids[4100], 200, 10, 0)
            lib.mg_metrics_request(1, 999999, 200, 10, 0)  -- out of range
            lib.mg_metrics_request(0, ids[1], 200, 10, 0)
            local t = render()
            assert.equal(3, value(t,
                'moongate_requests_total{route="(other)",status="200"}'))
            assert.equal(1, value(t,
                'moongate_requests_total{route="r1",status="200"}'))
        end)

        it("refuses a second init", function()
            assert.is_true(lib.mg_metrics_init(2) < 0)
        end)
    end)

    describe("requests_total", function()
        it("sums workers and sorts by route name then status", function()
            local z = lib.mg_metrics_route_id("zeta")
            local a = lib.mg_metrics_route_id("alpha")
            lib.mg_metrics_request(0, z, 200, 10, 0)
            lib.mg_metrics_request(1, z, 200, 10, 0)
            lib.mg_metrics_request(1, a, 503, 10, 0)
            lib.mg_metrics_request(0, a, 200, 10, 0)
            lib.mg_metrics_request(0, 0, 404, 10, 0)
            lib.mg_metrics_request(1, a, 404, 10, 0)
            assert.same({
                'moongate_requests_total{route="",status="404"} 1',
                'moongate_requests_total{route="alpha",status="200"} 1',
                'moongate_requests_total{route="alpha",status="404"} 1',
                'moongate_requests_total{route="alpha",status="503"} 1',
                'moongate_requests_total{route="zeta",status="200"} 2',
            }, samples(render(), "moongate_requests_total{"))
        end)

        it("has HELP and TYPE lines even with no requests", function()
            local t = render()
            assert.truthy(t:find("# HELP moongate_requests_total ", 1, true))
            assert.truthy(t:find("# TYPE moongate_requests_total counter\n", 1, true))
            assert.same({}, samples(t, "moongate_requests_total{"))
        end)

        it("counts statuses outside 100..999 as 0", function()
            lib.mg_metrics_request(0, 0, 0, 10, 0)
            lib.mg_metrics_request(0, 0, 1000, 10, 0)
            lib.mg_metrics_request(0, 0, -5, 10, 0)
            assert.same({ 'moongate_requests_total{route="",status="0"} 3' },
                samples(render(), "moongate_requests_total{"))
        end)

        it("counts statuses beyond 32 distinct ones by class", function()
            local r = lib.mg_metrics_route_id("many")
            for st = 200, 239 do lib.mg_metrics_request(0, r, st, 10, 0) end
            lib.mg_metrics_request(0, r, 200, 10, 0)     -- an exact one again
            local rows = samples(render(), 'moongate_requests_total{route="many"')
            assert.equal(33, #rows)                      -- 32 exact + "2xx"
            assert.equal(2, value(render(),
                'moongate_requests_total{route="many",status="200"}'))
            assert.equal(8, value(render(),
                'moongate_requests_total{route="many",status="2xx"}'))
            assert.equal('moongate_requests_total{route="many",status="2xx"} 8',
                rows[#rows])                             -- after "2.." ones
        end)

        it("ignores a worker index it does not have", function()
            lib.mg_metrics_request(2, 0, 200, 10, 0)
            lib.mg_metrics_request(-1, 0, 200, 10, 0)
            lib.mg_metrics_connections(7, 1)
            assert.same({}, samples(render(), "moongate_requests_total{"))
        end)
    end)

    describe("label escaping", function()
        it("escapes backslash, double quote and line feed", function()
            assert.equal([[a\\b]], escape("a\\b"))
            assert.equal([[say \"hi\"]], escape('say "hi"'))
            assert.equal([[l1\nl2]], escape("l1\nl2"))
            assert.equal("tab\tand/slash{}=,", escape("tab\tand/slash{}=,"))
            assert.equal("", escape(""))
        end)

        it("returns the full length and truncates like snprintf", function()
            local buf = ffi.new("char[4]")
            assert.equal(5, tonumber(lib.mg_metrics_escape_label(buf, 4, '"x"')))
            assert.equal([[\"x]], ffi.string(buf))
            assert.equal(4, tonumber(lib.mg_metrics_escape_label(nil, 0, '\n\n')))
        end)

        it("escapes route names in the output", function()
            local id = lib.mg_metrics_route_id('we"ird\\route\nname')
            lib.mg_metrics_request(0, id, 200, 10, 0)
            assert.same(
                { [[moongate_requests_total{route="we\"ird\\route\nname",status="200"} 1]] },
                samples(render(), "moongate_requests_total{"))
        end)

        it("handles a long route name", function()
            local name = ('"'):rep(300)
            local id = lib.mg_metrics_route_id(name)
            lib.mg_metrics_request(1, id, 201, 10, 0)
            assert.equal(1, value(render(), 'moongate_requests_total{route="' ..
                ('\\"'):rep(300) .. '",status="201"}'))
        end)
    end)

    describe("histograms", function()
        local H = "moongate_request_duration_seconds"
        local U = "moongate_upstream_duration_seconds"
        local LE = { "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                     "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf" }

        local function buckets(t, name)
            local out = {}
            for i, le in ipairs(LE) do
                out[i] = value(t, name .. '_bucket{le="' .. le .. '"}')
            end
            return out
        end

        it("has every bucket, cumulative, and +Inf equal to _count", function()
            local t = render()
            assert.truthy(t:find("# TYPE " .. H .. " histogram\n", 1, true))
            assert.truthy(t:find("# HELP " .. H .. " ", 1, true))
            assert.same({ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
                buckets(t, H))
            assert.equal(0, value(t, H .. "_count"))
            assert.equal(0, value(t, H .. "_sum"))
        end)

        it("puts a value equal to a bound in that bound's bucket", function()
            lib.mg_metrics_request(0, 0, 200, 500 * US, 0)       -- le 0.0005
            lib.mg_metrics_request(0, 0, 200, 501 * US, 0)       -- le 0.001
            lib.mg_metrics_request(1, 0, 200, 0, 0)              -- le 0.0005
            lib.mg_metrics_request(1, 0, 200, 10000000, 0)       -- le 10
            lib.mg_metrics_request(0, 0, 200, 10000001, 0)       -- +Inf only
            lib.mg_metrics_request(0, 0, 200, 30000, 0)          -- le 0.05
            local t = render()
            assert.same({ 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5, 6 },
                buckets(t, H))
            assert.equal(6, value(t, H .. "_count"))
        end)

        it("sums exact seconds from microseconds", function()
            lib.mg_metrics_request(0, 0, 200, 1, 0)
            lib.mg_metrics_request(1, 0, 200, 2500000, 0)
            local t = render()
            assert.truthy(t:find("\n" .. H .. "_sum 2.500001\n", 1, true))
        end)

        it("observes upstream time only when there was some", function()
            lib.mg_metrics_request(0, 0, 200, 3000, 0)
            lib.mg_metrics_request(0, 0, 200, 3000, 2000)
            lib.mg_metrics_request(1, 0, 502, 300000, 250000)
            local t = render()
            assert.equal(3, value(t, H .. "_count"))
            assert.equal(2, value(t, U .. "_count"))
            assert.same({ 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2 },
                buckets(t, U))
            assert.truthy(t:find("\n" .. U .. "_sum 0.252000\n", 1, true))
        end)
    end)

    describe("per target", function()
        local H = "moongate_upstream_request_duration_seconds"
        local R = "moongate_upstream_responses_total"
        local LE = { "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                     "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf" }
        local function labels(u, t) return ('{upstream="%s",target="%s"'):format(u, t) end
        local function buckets(t, u, target)
            local out = {}
            for i, le in ipairs(LE) do
                out[i] = value(t, H .. "_bucket" .. labels(u, target) .. ',le="' .. le .. '"}')
            end
            return out
        end

        it("gives each (upstream, target) pair its own stable id", function()
            local a = lib.mg_metrics_target_id("svc", "10.0.0.1:80")
            local b = lib.mg_metrics_target_id("svc", "10.0.0.2:80")
            local c = lib.mg_metrics_target_id("other", "10.0.0.1:80")
            assert.is_true(a > 0 and b > 0 and c > 0 and a ~= b and b ~= c and a ~= c)
            assert.equal(a, lib.mg_metrics_target_id("svc", "10.0.0.1:80"))
            assert.equal(0, lib.mg_metrics_target_id(nil, "x:1"))
        end)

        it("has HELP and TYPE lines and no series before any attempt", function()
            lib.mg_metrics_target_id("svc", "10.0.0.1:80")
            local t = render()
            assert.truthy(t:find("# TYPE " .. H .. " histogram\n", 1, true))
            assert.truthy(t:find("# TYPE " .. R .. " counter\n", 1, true))
            assert.same({}, samples(t, H .. "_bucket{"))
            assert.same({}, samples(t, R .. "{"))
        end)

        it("sums workers into buckets and status classes per target", function()
            local a = lib.mg_metrics_target_id("svc", "10.0.0.1:80")
            local b = lib.mg_metrics_target_id("svc", "10.0.0.2:80")
            lib.mg_metrics_upstream(0, a, 200, 400)      -- le 0.0005
            lib.mg_metrics_upstream(1, a, 204, 3000)     -- le 0.005
            lib.mg_metrics_upstream(1, a, 503, 20000000) -- +Inf
            lib.mg_metrics_upstream(0, a, 0, 0)          -- no answer: error, untimed
            lib.mg_metrics_upstream(0, b, 404, 1000)     -- le 0.001
            lib.mg_metrics_upstream(1, b, -200, 0)       -- dropped answer: class, untimed
            local t = render()
            assert.same({ 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3 },
                buckets(t, "svc", "10.0.0.1:80"))
            assert.equal(3, value(t, H .. "_count" .. labels("svc", "10.0.0.1:80") .. "}"))
            assert.truthy(t:find("\n" .. H .. "_sum" .. labels("svc", "10.0.0.1:80") ..
                "} 20.003400\n", 1, true))
            assert.same({ 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
                buckets(t, "svc", "10.0.0.2:80"))
            assert.same({
                R .. labels("svc", "10.0.0.1:80") .. ',code_class="2xx"} 2',
                R .. labels("svc", "10.0.0.1:80") .. ',code_class="5xx"} 1',
                R .. labels("svc", "10.0.0.1:80") .. ',code_class="error"} 1',
                R .. labels("svc", "10.0.0.2:80") .. ',code_class="2xx"} 1',
                R .. labels("svc", "10.0.0.2:80") .. ',code_class="4xx"} 1',
            }, samples(t, R .. "{"))
        end)

        it("escapes upstream names and counts unknown ids under (other)", function()
            local id = lib.mg_metrics_target_id('a"b', "h:1")
            lib.mg_metrics_upstream(0, id, 200, 10)
            lib.mg_metrics_upstream(1, 5000, 200, 10) -- out of range
            local t = render()
            assert.equal(1, value(t, R .. labels('a\\"b', "h:1") .. ',code_class="2xx"}'))
            assert.equal(1, value(t, R .. labels("(other)", "(other)") .. ',code_class="2xx"}'))
        end)

        it("puts pairs beyond the table into (other)", function()
            local ids = {}
            for i = 1, 1030 do ids[i] = lib.mg_metrics_target_id("u", "t" .. i) end
            assert.is_true(ids[1023] > 0)
            assert.equal(0, ids[1024])
            lib.mg_metrics_upstream(0, ids[1030], 200, 10)
            lib.mg_metrics_upstream(1, ids[1023], 200, 10)
            local t = render()
            assert.equal(1, value(t, R .. labels("(other)", "(other)") .. ',code_class="2xx"}'))
            assert.equal(1, value(t, R .. labels("u", "t1023") .. ',code_class="2xx"}'))
        end)
    end)

    describe("hooks", function()
        local C = "moongate_hook_calls_total"
        local S = "moongate_hook_seconds_total"
        local function hl(phase, policy) return ('{phase="%s",policy="%s"}'):format(phase, policy) end

        it("sums calls and exact seconds over workers per (phase, policy)", function()
            local jwt = lib.mg_metrics_hook_id("on_request", "jwt")
            local glob = lib.mg_metrics_hook_id("on_log", "(global)")
            assert.is_true(jwt > 0 and glob > 0 and jwt ~= glob)
            assert.equal(jwt, lib.mg_metrics_hook_id("on_request", "jwt"))
            assert.is_true(lib.mg_metrics_hook_id("on_response", "jwt") ~= jwt)
            lib.mg_metrics_hook(0, jwt, 1500)
            lib.mg_metrics_hook(1, jwt, 1000000000)
            lib.mg_metrics_hook(1, glob, 7)
            local t = render()
            assert.truthy(t:find("# TYPE " .. C .. " counter\n", 1, true))
            assert.truthy(t:find("# TYPE " .. S .. " counter\n", 1, true))
            assert.equal(2, value(t, C .. hl("on_request", "jwt")))
            assert.truthy(t:find("\n" .. S .. hl("on_request", "jwt") .. " 1.000001500\n", 1, true))
            assert.equal(1, value(t, C .. hl("on_log", "(global)")))
            assert.is_nil(value(t, C .. hl("on_response", "jwt"))) -- never ran
        end)

        it("puts pairs beyond the table and bad ids into (other)", function()
            local ids = {}
            for i = 1, 260 do ids[i] = lib.mg_metrics_hook_id("on_request", "p" .. i) end
            assert.is_true(ids[255] > 0)
            assert.equal(0, ids[256])
            lib.mg_metrics_hook(0, ids[260], 10)
            lib.mg_metrics_hook(0, 9999, 10)
            assert.equal(2, value(render(), C .. hl("(other)", "(other)")))
        end)
    end)

    describe("gauges and reloads", function()
        it("sums open connections over workers", function()
            lib.mg_metrics_connections(0, 1)
            lib.mg_metrics_connections(0, 1)
            lib.mg_metrics_connections(1, 1)
            lib.mg_metrics_connections(0, -1)
            local t = render()
            assert.truthy(t:find("# TYPE moongate_connections_open gauge\n", 1, true))
            assert.equal(2, value(t, "moongate_connections_open"))
        end)

        it("counts reloads by result", function()
            lib.mg_metrics_reload(1)
            lib.mg_metrics_reload(1)
            lib.mg_metrics_reload(0)
            local t = render()
            assert.truthy(t:find("# TYPE moongate_reloads_total counter\n", 1, true))
            assert.equal(2, value(t, 'moongate_reloads_total{result="ok"}'))
            assert.equal(1, value(t, 'moongate_reloads_total{result="failed"}'))
        end)

        it("appends the caller's text at the end", function()
            local extra = "# TYPE x gauge\nx 1\n"
            local t = render(extra)
            assert.equal(extra, t:sub(-#extra))
            local _, n = render():gsub("\n", "")
            local _, m = t:gsub("\n", "")
            assert.equal(n + 2, m)
        end)

        it("renders only well-formed lines", function()
            lib.mg_metrics_request(0, lib.mg_metrics_route_id("a"), 200, 5, 5)
            for line in render():gmatch("[^\n]*\n?") do
                if line ~= "" then
                    assert.truthy(line:match("\n$"), line)
                    assert.truthy(line:match("^# HELP [a-z_]+ .+\n$") or
                        line:match("^# TYPE [a-z_]+ [a-z]+\n$") or
                        line:match("^[a-z_]+{.*} %d[%d.]*\n$") or
                        line:match("^[a-z_]+ %d[%d.]*\n$"), line)
                end
            end
        end)
    end)

    describe("from threads", function()
        it("loses no count with 2 workers and a concurrent reader", function()
            local r = lib.mg_metrics_route_id("busy")
            local n = 200000
            assert.is_true(lib.mg_test_metrics_threads(2, n, r) > 0)
            local t = render()
            assert.equal(n, value(t,
                'moongate_requests_total{route="busy",status="200"}'))
            assert.equal(n, value(t,
                'moongate_requests_total{route="busy",status="404"}'))
            assert.equal(2 * n, value(t, "moongate_request_duration_seconds_count"))
            assert.equal(n, value(t, "moongate_upstream_duration_seconds_count"))
            assert.equal(0, value(t, "moongate_connections_open"))
            assert.truthy(t:find("\nmoongate_request_duration_seconds_sum 400.000000\n",
                1, true))
        end)
    end)
end)
