-- Bodies stream through the gateway in both directions without being
-- buffered: 50 MiB up and down with the gateway's RSS (VmRSS) sampled
-- before, during and after. Also the re-framing of chunked and
-- close-delimited upstream responses for HTTP/1.1 and HTTP/1.0 clients.
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings {
  limits = { body = "64m" },
  timeouts = { shutdown = 2 },
}
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/**", upstream = "up" }
]]

local MIB = 1024 * 1024
local N = 50 * MIB
local BIG_TIMEOUT = 60 * h.SLOW
-- KiB the RSS may grow by while 50 MiB pass through
local RSS_LIMIT = tonumber(os.getenv("MG_RSS_LIMIT_KB") or "") or 8 * 1024

describe("streaming", function()
    local gw, up, expected_sha

    setup(function()
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway(CONFIG, { vars = { UP = up }, workers = 1 })
        expected_sha = h.upstream_sha256(N)
    end)

    teardown(h.cleanup)

    -- RSS tracking: base after a warm-up, peak sampled while streaming
    local function tracker()
        local t = { base = assert(gw:rss(), "no VmRSS for the gateway") }
        t.peak = t.base
        function t.sample()
            local r = gw:rss()
            if r and r > t.peak then t.peak = r end
        end
        function t.check()
            t.sample()
            local grew = t.peak - t.base
            assert.is_true(grew < RSS_LIMIT, string.format(
                "gateway RSS grew by %d KiB (base %d KiB, peak %d KiB, limit %d KiB)",
                grew, t.base, t.peak, RSS_LIMIT))
        end
        return t
    end

    local function warm_up()
        -- let buffers and pools reach their working size first
        local block = h.block()
        local c = h.connect(gw.port)
        c:send("POST /warm HTTP/1.1\r\nHost: localhost\r\nContent-Length: " .. 16 * 65536 ..
               "\r\n\r\n")
        for _ = 1, 16 do c:send(block) end
        assert(c:read_response())
        local sink = h.pattern_checker()
        c:send(h.request_text { path = "/warm?size=" .. 4 * MIB })
        assert(c:read_response { sink = sink })
        c:close()
    end

    local function upload(chunked)
        warm_up()
        local t = tracker()
        local c = h.connect(gw.port)
        local head = "POST /upload HTTP/1.1\r\nHost: localhost\r\n" ..
            (chunked and "Transfer-Encoding: chunked\r\n\r\n" or
                ("Content-Length: " .. N .. "\r\n\r\n"))
        assert(c:send(head))
        local block = h.block()
        local piece = chunked and ("10000\r\n" .. block .. "\r\n") or block
        for i = 1, N / 65536 do
            local ok, err = c:send(piece)
            assert(ok, "send failed after " .. (i - 1) * 65536 .. " bytes: " .. tostring(err))
            if i % 32 == 0 then t.sample() end
        end
        if chunked then c:send("0\r\n\r\n") end
        local res, err = c:read_response { timeout = BIG_TIMEOUT }
        assert(res, "no response: " .. tostring(err))
        assert.equal(200, res.status)
        local seen = h.json(res.body)
        c:close()
        return seen, t
    end

    it("a 50 MiB Content-Length request body reaches the upstream intact", function()
        local seen, t = upload(false)
        assert.equal(N, seen.body_len)
        assert.equal(expected_sha, seen.body_sha256)
        t.check()
    end)

    it("a 50 MiB chunked request body reaches the upstream intact", function()
        local seen, t = upload(true)
        assert.equal(N, seen.body_len)
        assert.equal(expected_sha, seen.body_sha256)
        t.check()
    end)

    it("a 50 MiB response arrives intact", function()
        warm_up()
        local t = tracker()
        local c = h.connect(gw.port)
        local check, st = h.pattern_checker()
        local next_sample = 0
        c:send(h.request_text { path = "/download?size=" .. N })
        local res, err = c:read_response { timeout = BIG_TIMEOUT, sink = function(p)
            check(p)
            if st.len >= next_sample then
                t.sample()
                next_sample = next_sample + 2 * MIB
            end
        end }
        assert(res, "no response: " .. tostring(err))
        assert.equal(200, res.status)
        assert.equal(N, st.len)
        assert.is_nil(st.bad_at, "body differs at offset " .. tostring(st.bad_at))
        t.check()
        c:close()
    end)

    it("a slow reader does not make the gateway buffer the response", function()
        warm_up()
        local t = tracker()
        local c = h.connect(gw.port)
        local check, st = h.pattern_checker()
        local paused = false
        c:send(h.request_text { path = "/slowread?size=" .. N })
        local res, err = c:read_response { timeout = BIG_TIMEOUT, sink = function(p)
            check(p)
            if not paused and st.len >= MIB then
                paused = true
                -- the upstream keeps writing; only back-pressure stops it
                for _ = 1, 10 do
                    h.sleep(0.1)
                    t.sample()
                end
            end
        end }
        assert(res, "no response: " .. tostring(err))
        assert.equal(N, st.len)
        assert.is_nil(st.bad_at)
        t.check()
        c:close()
    end)

    describe("re-framing to HTTP/1.1 clients", function()
        it("a chunked upstream response arrives chunked or with a length", function()
            local c = h.connect(gw.port)
            local res = c:request { path = "/rf?chunked=1" }
            assert.equal(200, res.status)
            assert.is_true(res.framing == "chunked" or res.framing == "length", res.framing)
            assert.equal("/rf?chunked=1", h.json(res.body).path)
            c:close()
        end)

        it("a close-delimited upstream response arrives chunked or with a length", function()
            local c = h.connect(gw.port)
            local res = c:request { path = "/rf?close=1" }
            assert.equal(200, res.status)
            assert.is_true(res.framing == "chunked" or res.framing == "length", res.framing)
            assert.equal("/rf?close=1", h.json(res.body).path)
            c:close()
        end)

        it("the client connection stays usable after a close-delimited upstream response",
        function()
            local c = h.connect(gw.port)
            assert.equal(200, c:request { path = "/rf?close=1" }.status)
            local res = c:request { path = "/rf-next" }
            assert.equal("/rf-next", h.json(res.body).path)
            c:close()
        end)

        it("a large chunked upstream response arrives intact", function()
            local check, st = h.pattern_checker()
            local res = h.http(gw.port, { path = "/rf?chunked=1&chunk=1000&size=3000000",
                                          sink = check })
            assert.equal(200, res.status)
            assert.equal(3000000, st.len)
            assert.is_nil(st.bad_at)
        end)

        it("a large close-delimited upstream response arrives intact", function()
            local check, st = h.pattern_checker()
            local res = h.http(gw.port, { path = "/rf?close=1&size=3000000", sink = check })
            assert.equal(200, res.status)
            assert.equal(3000000, st.len)
            assert.is_nil(st.bad_at)
        end)
    end)

    describe("re-framing to HTTP/1.0 clients", function()
        local function get10(path)
            local c = h.connect(gw.port)
            c:send("GET " .. path .. " HTTP/1.0\r\nHost: localhost\r\n\r\n")
            local res = assert(c:read_response())
            return res, c
        end

        it("a chunked upstream response is sent close-delimited", function()
            local res, c = get10("/ten?chunked=1")
            assert.equal(200, res.status)
            assert.is_nil(res.headers["transfer-encoding"])
            assert.equal("/ten?chunked=1", h.json(res.body).path)
            assert.is_true(c:closed(2))
        end)

        it("a close-delimited upstream response is sent close-delimited", function()
            local res, c = get10("/ten?close=1")
            assert.equal(200, res.status)
            assert.is_nil(res.headers["transfer-encoding"])
            assert.equal("/ten?close=1", h.json(res.body).path)
            assert.is_true(c:closed(2))
        end)

        it("a large chunked upstream response arrives intact", function()
            local c = h.connect(gw.port)
            local check, st = h.pattern_checker()
            c:send("GET /ten?chunked=1&size=3000000 HTTP/1.0\r\nHost: localhost\r\n\r\n")
            local res = assert(c:read_response { sink = check })
            assert.is_nil(res.headers["transfer-encoding"])
            assert.equal(3000000, st.len)
            assert.is_nil(st.bad_at)
        end)
    end)
end)
