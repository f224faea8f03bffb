-- W3C trace context: what a real upstream receives in `traceparent`, what
-- hooks and the access log see.
local cjson = require "cjson"
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { access_log = "{{LOG}}" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/drop", upstream = "up", policies = {
    function(req) req:remove_header("traceparent") end } }
gw.route { path = "/own", upstream = "up", policies = {
    function(req) req:set_header("traceparent", "00-" .. string.rep("ab", 16) .. "-" ..
                                 string.rep("cd", 8) .. "-00") end } }
gw.route { path = "/**", upstream = "up", policies = { {
    on_response = function(req, res)
        res:set_header("x-trace-id", req.trace_id)
        res:set_header("x-span-id", req.span_id)
    end } } }
]]

local TID = "4bf92f3577b34da6a3ce929d0e0e4736"
local PID = "00f067aa0ba902b7"

describe("trace context", function()
    local gw, up, log

    setup(function()
        up = h.start_upstream { name = "up" }
        log = h.tmpfile("access.log")
        gw = h.start_gateway(CONFIG, { vars = { UP = up.addr, LOG = log }, workers = 1 })
    end)

    teardown(h.cleanup)

    -- what the upstream received: its traceparent split, and its tracestate
    local function sent(headers, path)
        local res = h.http(gw.port, { path = path or "/x", headers = headers })
        assert.equal(200, res.status)
        local got = h.json(res.body).headers
        local tp = got.traceparent
        if not tp then return nil, got, res end
        local v, tid, sid, flags = tp:match("^(%x%x)%-(%x+)%-(%x+)%-(%x%x)$")
        assert.truthy(v, tp)
        return { version = v, trace_id = tid, span_id = sid, flags = flags }, got, res
    end

    it("starts a trace for a request that has none, sampled", function()
        local tp, _, res = sent()
        assert.equal("00", tp.version)
        assert.truthy(tp.trace_id:match("^[0-9a-f]+$") and #tp.trace_id == 32)
        assert.truthy(tp.span_id:match("^[0-9a-f]+$") and #tp.span_id == 16)
        assert.equal("01", tp.flags)
        -- hooks see the same ids
        assert.equal(tp.trace_id, res.headers["x-trace-id"])
        assert.equal(tp.span_id, res.headers["x-span-id"])
        -- a new trace for each request
        local again = sent()
        assert.are_not.equal(tp.trace_id, again.trace_id)
    end)

    it("continues the client's trace with a span of its own", function()
        local tp, got = sent({ traceparent = "00-" .. TID .. "-" .. PID .. "-01",
                               tracestate = "vendor=abc" })
        assert.equal(TID, tp.trace_id)
        assert.are_not.equal(PID, tp.span_id)
        assert.equal("01", tp.flags)
        assert.equal("vendor=abc", got.tracestate)
        -- not sampled stays not sampled
        assert.equal("00", sent({ traceparent = "00-" .. TID .. "-" .. PID .. "-00" }).flags)
    end)

    it("starts over when the client's traceparent is invalid, and drops its tracestate", function()
        for _, bad in ipairs({ "00-" .. TID:upper() .. "-" .. PID .. "-01",
                               "00-" .. string.rep("0", 32) .. "-" .. PID .. "-01",
                               "ff-" .. TID .. "-" .. PID .. "-01", "garbage" }) do
            local tp, got = sent({ traceparent = bad, tracestate = "vendor=abc" })
            assert.are_not.equal(TID, tp.trace_id, bad)
            assert.is_nil(got.tracestate, bad)
        end
        -- two traceparent headers are no trace either
        local tp = sent({ { "traceparent", "00-" .. TID .. "-" .. PID .. "-01" },
                          { "traceparent", "00-" .. TID .. "-" .. PID .. "-01" } })
        assert.are_not.equal(TID, tp.trace_id)
    end)

    it("lets a hook remove or replace it", function()
        assert.is_nil((sent({ traceparent = "00-" .. TID .. "-" .. PID .. "-01" }, "/drop")))
        local tp = sent({ traceparent = "00-" .. TID .. "-" .. PID .. "-01" }, "/own")
        assert.equal(string.rep("ab", 16), tp.trace_id)
        assert.equal(string.rep("cd", 8), tp.span_id)
    end)

    it("writes trace_id and span_id in the access log", function()
        local tp, _, res = sent({ traceparent = "00-" .. TID .. "-" .. PID .. "-01" })
        local id = res.headers["x-request-id"]
        local deadline = h.now() + 3 * h.SLOW
        local entry
        repeat
            for l in (h.read_file(log) or ""):gmatch("[^\n]+") do
                local ok, e = pcall(cjson.decode, l)
                if ok and type(e) == "table" and e.request_id == id then entry = e end
            end
            if not entry then h.sleep(0.02) end
        until entry or h.now() > deadline
        assert.truthy(entry, "no access log line for " .. id)
        assert.equal(TID, entry.trace_id)
        assert.equal(tp.span_id, entry.span_id)
    end)
end)
