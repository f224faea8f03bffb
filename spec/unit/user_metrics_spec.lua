-- gw.metrics.counter / gauge / histogram: the declarations' checks at load
-- (src/metrics_user.c's rules through moongate.config: file:line:
-- reason), and counting through the testing kit, which binds them to
-- metrics of its own in C (the same code the gateway counts with).
-- Run from the repository root with MG_TEST_LIB=build/libmgtest.so.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local config = require "moongate.config"
local t = require "moongate.testing"

local cf = require "spec.support.config_file"

-- config.load's errors ("3: reason"), the load refused
local function errors(text)
    local cfg, errs = cf.load(config.load, text)
    assert.is_nil(cfg, "loaded")
    return errs
end

local function kit(text)
    local g, errs = cf.load(t.load, text)
    return assert(g, errs and table.concat(errs, "\n"))
end

describe("gw.metrics declarations", function()
    it("are normalised into cfg.metrics, the defaults filled in", function()
        local path = cf.write([[
gw.metrics.counter("a_total", "A.")
gw.metrics.gauge("b", "B.", { "x", "y", max_series = 7 })
gw.metrics.histogram("c_seconds", "C.", { "k" })
gw.metrics.histogram("d_seconds", "D.", nil, { 1, 2 })
]])
        local cfg = assert(config.load(path))
        os.remove(path)
        local got = {}
        for i, m in ipairs(cfg.metrics) do
            got[i] = { m.name, m.kind, m.labels, m.max_series, m.buckets, m.line }
        end
        assert.same({
            { "a_total", "counter", {}, 1000, nil, 3 },
            { "b", "gauge", { "x", "y" }, 7, nil, 4 },
            { "c_seconds", "histogram", { "k" }, 1000,
              { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }, 5 },
            { "d_seconds", "histogram", {}, 1000, { 1, 2 }, 6 },
        }, got)
    end)

    it("refuse names Prometheus and promtool refuse, at their line", function()
        local cases = {
            { 'gw.metrics.counter("shopOrders_total", "x")', "must be lower-case snake_case" },
            { 'gw.metrics.counter("1x_total", "x")', "must be lower-case snake_case" },
            { 'gw.metrics.counter("a:b_total", "x")', "must be lower-case snake_case" },
            { 'gw.metrics.counter("moongate_x_total", "x")', "moongate_ is the gateway's own" },
            { 'gw.metrics.counter("orders", "x")',
              'a counter\'s name ends in _total (Prometheus): did you mean "orders_total"?' },
            { 'gw.metrics.gauge("inflight_total", "x")', "only a counter's name ends in _total" },
            { 'gw.metrics.gauge("hits_count", "x")', "_count, _sum and _bucket end a histogram" },
            { 'gw.metrics.gauge("queue_gauge", "x")', "names the metric's type" },
            { 'gw.metrics.histogram("work_ms", "x")', '"ms" is an abbreviated unit' },
            { 'gw.metrics.histogram("work_milliseconds", "x")', "is a scaled unit" },
            { 'gw.metrics.gauge("uptime_hours", "x")', "is not a base unit" },
        }
        for _, c in ipairs(cases) do
            local errs = errors(c[1] .. "\n")
            assert.equal(1, #errs, c[1])
            assert.truthy(errs[1]:find("^3: gw%.metrics%.%a+: ") and
                          errs[1]:find(c[2], 1, true), errs[1])
        end
    end)

    it("refuse bad labels, buckets, max_series and help", function()
        local cases = {
            { 'gw.metrics.counter("a_total", "x", { "le" })', 'label "le" is reserved' },
            { 'gw.metrics.counter("a_total", "x", { "__x" })', "are Prometheus's own" },
            { 'gw.metrics.counter("a_total", "x", { "a-b" })', "must be letters, digits and '_'" },
            { 'gw.metrics.counter("a_total", "x", { "a", "a" })', 'label "a" comes twice' },
            { 'gw.metrics.counter("a_total", "x", { "a", max = 3 })',
              "unknown key 'max' in the labels" },
            { 'gw.metrics.counter("a_total", "x", { 5 })', "labels[1] must be a label name" },
            { 'gw.metrics.counter("a_total", "x", "tenant")', "labels must be a list" },
            { 'gw.metrics.counter("a_total", "x", { "a", max_series = 0 })',
              "max_series must be an integer 1-100000" },
            { 'gw.metrics.counter("a_total", "x", { "a", max_series = 1.5 })',
              "max_series must be an integer 1-100000" },
            { 'gw.metrics.counter("a_total", "x", { "a", max_series = "9" })',
              "max_series must be an integer 1-100000" },
            { 'gw.metrics.histogram("h_seconds", "x", nil, { 1, 1 })', "buckets must increase" },
            { 'gw.metrics.histogram("h_seconds", "x", nil, { 1, math.huge })',
              "+Inf is always the last bucket" },
            { 'gw.metrics.histogram("h_seconds", "x", nil, {})', "buckets must list 1-64" },
            { 'gw.metrics.histogram("h_seconds", "x", nil, { "1" })', "buckets[1] must be a number" },
            { 'gw.metrics.counter("a_total")', "help must be a non-empty string" },
            { 'gw.metrics.counter("a_total", "")', "help must be a non-empty string" },
            { 'gw.metrics.counter("a_total", "x", nil, { 1 })', "takes (name, help, labels)" },
            { "gw.metrics.gauge(5, 'x')", "the name must be a string" },
        }
        for _, c in ipairs(cases) do
            local errs = errors(c[1] .. "\n")
            assert.equal(1, #errs, c[1] .. ": " .. table.concat(errs, " | "))
            assert.truthy(errs[1]:find(c[2], 1, true), errs[1])
        end
    end)

    it("refuse a name declared twice otherwise", function()
        assert.same({ '4: gw.metrics.counter "a_total" is declared at line 3 otherwise ' ..
                      "(another type, help, labels, buckets or max_series): declare it " ..
                      "once, or give it another name" },
                    errors('gw.metrics.counter("a_total", "x")\n' ..
                           'gw.metrics.counter("a_total", "x", { "l" })\n'))
        -- a histogram "work" writes work_count: no gauge may be named so
        assert.truthy(errors('gw.metrics.histogram("work", "x")\n' ..
                             'gw.metrics.gauge("work_count", "y")\n')[1]
                      :find("_count, _sum and _bucket end a histogram's series", 1, true))
    end)

    it("give the same object for the same declaration made again", function()
        local path = cf.write([[
local a = gw.metrics.counter("a_total", "x", { "l" })
local b = gw.metrics.counter("a_total", "x", { "l" })
assert(a == b, "two objects")
]])
        local cfg, errs = config.load(path)
        os.remove(path)
        assert(cfg, errs and errs[1])
        assert.equal(1, #cfg.metrics)
    end)

    it("are for load time: a hook declaring one raises; counting at load raises", function()
        local g = kit([[
gw.route { path = "/late", handler = function(req)
    gw.metrics.counter("late_total", "x")
    return 200, "no"
end }
]])
        assert.equal(500, g:request { path = "/late" }.status)
        assert.same({ "4: gw.metrics: early_total counts from hooks, timers and handlers, " ..
                      "not while the config loads" },
                    errors('local c = gw.metrics.counter("early_total", "x")\nc:inc()\n'))
    end)
end)

describe("gw.metrics in the testing kit", function()
    local g = kit([[
local orders = gw.metrics.counter("orders_total", "Orders.", { "tenant", max_series = 2 })
local busy = gw.metrics.gauge("busy", "Busy.")
local work = gw.metrics.histogram("work_seconds", "Work.", { "kind" }, { 0.5, 2 })
local wide = gw.metrics.counter("wide_total", "Six labels.", { "a", "b", "c", "d", "e", "f" })
gw.metrics.counter("empty_total", "An empty label value.", { "v" })
gw.route { path = "/o/:t", handler = function(req)
    orders:inc(1, req.params.t)
    busy:set(7)
    busy:inc(3)
    busy:dec()
    work:observe(1, "x")
    work:observe(0.25, "x")
    wide:inc(2, "1", "2", "3", "4", "5", 6)
    return 200, "ok"
end }
gw.route { path = "/bad/count", handler = function(req) orders:inc(1) end }
gw.route { path = "/bad/label", handler = function(req) orders:inc(1, {}) end }
gw.route { path = "/bad/value", handler = function(req) orders:inc(-1, "a") end }
]])
    local function obj(name) return assert(g:metric(name)) end

    it("counts through C and reads the values back", function()
        for _, tenant in ipairs { "a", "b", "a" } do
            assert.equal(200, g:request { path = "/o/" .. tenant }.status)
        end
        assert.equal(2, obj("orders_total"):value("a"))
        assert.equal(1, obj("orders_total"):value("b"))
        assert.equal(0, obj("orders_total"):value("zzz"))
        assert.equal(9, obj("busy"):value())
        local count, sum = obj("work_seconds"):value("x")
        assert.equal(6, count)
        assert.equal(3 * 1.25, sum)
        assert.equal(6, obj("wide_total"):value("1", "2", "3", "4", "5", "6"))
        assert.is_nil(g:metric("nope_total"))
        -- an empty value is a value like another
        obj("empty_total"):inc(1, "")
        obj("empty_total"):inc(2, "")
        assert.equal(3, obj("empty_total"):value(""))
        assert.equal(0, obj("empty_total"):value("(other)"))
    end)

    it("counts label sets past max_series in the overflow series", function()
        g:request { path = "/o/c" }
        g:request { path = "/o/d" }
        assert.equal(2, obj("orders_total"):value("(other)"))
        assert.equal(0, obj("orders_total"):value("c"))
    end)

    it("raises a misuse at the hook's line", function()
        for _, p in ipairs { "/bad/count", "/bad/label", "/bad/value" } do
            local d = g:request { path = p }
            assert.equal(500, d.status, p)
        end
        local ok, e = pcall(obj("orders_total").inc, obj("orders_total"), 1)
        assert.is_false(ok)
        assert.truthy(tostring(e):find("orders_total takes 1 label value(s) (tenant), got 0", 1,
                                       true), e)
        ok, e = pcall(obj("orders_total").inc, obj("orders_total"), 1, {})
        assert.truthy(tostring(e):find("label value 1 (tenant) must be a string, got table", 1,
                                       true), e)
        ok, e = pcall(obj("busy").set, obj("busy"), 0 / 0)
        assert.truthy(tostring(e):find("v must be a finite number", 1, true), e)
    end)
end)
