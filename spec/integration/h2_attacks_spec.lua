-- The published HTTP/2 attacks against the real binary, as raw frames
-- (spec/support/h2_attack.py): each one is bounded by a setting and
-- answered with the right GOAWAY, RST_STREAM or status, while other
-- clients (HTTP/2 and HTTP/1.1, during the attack) are still served and
-- the gateway's memory stays put. docs/http2.md lists the bounds.
local h = require "spec.support.helpers"

local ATTACK = h.UPSTREAM_PY:gsub("upstream%.py$", "h2_attack.py")
local ENHANCE_YOUR_CALM, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL = 11, 1, 7, 8
-- ASan keeps freed memory in quarantine: RSS says nothing there
local SANITIZED = os.getenv("MG_SANITIZED") == "1" or h.MG_BIN:find("asan", 1, true) ~= nil

local function assert_rss(gw, before, what)
    local grew = gw:rss() - before
    assert.is_true(SANITIZED or grew < 16 * 1024, what .. ": RSS grew by " .. grew .. " KiB")
end

describe("HTTP/2 attacks", function()
    local gw, up

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { workers = 1, access_log = "off",
              timeouts = { header = 1, send = 1 },
              http2 = { max_concurrent_streams = 100, max_resets = 200,
                        max_control_frames = 1000, rate_window = 10 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1", http2 = true }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/local", handler = function() return 200, "ok" end }
gw.route { path = "/**", upstream = "up" }
]], { workers = 1, vars = { UP = up } })
    end)

    teardown(h.cleanup)

    -- Starts an attack in the background; returns a function that waits
    -- for its JSON result.
    local function attack(name, count, path, seconds)
        local out = h.tmpfile("attack-" .. name .. ".json")
        os.execute(("/usr/bin/python3 %s --port %d --attack %s --count %d --path %s " ..
                    "--seconds %g >%s 2>&1 &"):format(h.shq(ATTACK), gw.port, name, count or 10000,
                                                       h.shq(path or "/local"),
                                                       (seconds or 5) * h.SLOW, h.shq(out)))
        return function()
            local res
            h.eventually(60, function()
                local s = h.read_file(out)
                if s and s:find("\n", 1, true) then
                    res = h.json(s)
                    return true
                end
            end, "the attacker's result")
            return res
        end
    end

    -- Other clients are served meanwhile (HTTP/2 on a connection of its
    -- own, and HTTP/1.1), and once it is over.
    local function others_served()
        assert.equal(200, h.http2(gw.port, { path = "/local" }).status)
        assert.equal(200, h.http(gw.port, { path = "/local" }).status)
        gw:assert_alive()
    end

    local function calmed(name, count, path)
        local rss = gw:rss()
        local done = attack(name, count, path)
        others_served()
        local r = done()
        assert.equal(ENHANCE_YOUR_CALM, r.goaway, require("cjson").encode(r))
        assert.is_true(r.closed)
        assert.is_true(r.sent < count, "all " .. count .. " were taken")
        others_served()
        assert_rss(gw, rss, name)
        return r
    end

    it("Rapid Reset (CVE-2023-44487): 10,000 HEADERS + RST_STREAM pairs get GOAWAY after max_resets", function()
        local before = up:stats().requests
        local r = calmed("rapid-reset", 10000, "/upstream")
        -- the streams taken before the GOAWAY are at most the bound's worth
        assert.is_true(r.last_stream_id <= 2 * 201 + 1, "last stream " .. r.last_stream_id)
        assert.is_true(up:stats().requests - before <= 201)
    end)

    it("CONTINUATION flood (CVE-2024-27316): GOAWAY after a few frames", function()
        calmed("continuation", 10000)
    end)

    it("SETTINGS flood: GOAWAY after max_control_frames", function()
        calmed("settings", 100000)
    end)

    it("PING flood: GOAWAY after max_control_frames", function()
        calmed("ping", 100000)
    end)

    it("PING flood that never reads the ACKs: GOAWAY when they pile up", function()
        local done = attack("ping-noread", 100000)
        others_served()
        local r = done()
        assert.equal(ENHANCE_YOUR_CALM, r.goaway, require("cjson").encode(r))
        assert.is_true(r.closed)
    end)

    it("PRIORITY flood: GOAWAY after max_control_frames", function()
        calmed("priority", 100000)
    end)

    it("WINDOW_UPDATE flood: GOAWAY after max_control_frames", function()
        calmed("window-update", 100000)
    end)

    it("empty DATA frames on an open stream: GOAWAY after max_control_frames", function()
        calmed("empty-data", 100000, "/upload")
    end)

    it("HPACK bomb: 4 KiB in the table named 10,000 times is 431, the connection goes on", function()
        local rss = gw:rss()
        local done = attack("hpack-bomb", 10000)
        others_served()
        local r = done()
        assert.is_nil(next(r.resets))
        assert.equal(1, r.statuses["431"])
        assert.equal(2, r.statuses["200"]) -- the requests before and after
        assert.is_false(r.closed)
        assert_rss(gw, rss, "hpack-bomb")
    end)

    it("oversized header list (100 KB across CONTINUATION frames): 431, the connection goes on", function()
        local r = attack("big-headers", 100000)()
        assert.equal(1, r.statuses["431"])
        assert.equal(1, r.statuses["200"])
        assert.is_false(r.closed)
        others_served()
    end)

    it("too many header fields (200 > limits.header_count): 431", function()
        local r = attack("many-headers", 200)()
        assert.equal(1, r.statuses["431"])
        assert.equal(1, r.statuses["200"])
    end)

    it("too many concurrent streams: past max_concurrent_streams they are refused", function()
        local done = attack("streams", 300, "/slow?delay=1")
        others_served()
        local r = done()
        -- refused one by one before the client acknowledged the setting,
        -- as a connection error after
        local refused = r.resets[tostring(REFUSED_STREAM)] or 0
        assert.truthy(refused >= 200 or r.goaway == PROTOCOL_ERROR, require("cjson").encode(r))
        assert.is_true((r.statuses["200"] or 0) <= 100)
    end)

    it("a zero-window reader: the stream is reset after timeouts.send, memory stays put", function()
        local rss = gw:rss()
        local done = attack("zero-window", 1, "/big?size=50000000", 4)
        others_served()
        local r = done()
        assert.equal(1, r.resets[tostring(CANCEL)])
        assert_rss(gw, rss, "zero-window")
    end)

    it("a header block left open (HEADERS without END_HEADERS): GOAWAY after timeouts.header", function()
        local done = attack("slow-headers", 1, "/local", 4)
        others_served()
        local r = done()
        assert.equal(PROTOCOL_ERROR, r.goaway)
        assert.is_true(r.closed)
        assert.is_true(r.elapsed < 4 * h.SLOW)
    end)
end)
