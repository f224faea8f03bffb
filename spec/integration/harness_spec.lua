-- The harness itself (client, upstream.py, process handling), checked
-- against the test upstream directly, without the gateway: when these fail,
-- the other integration specs cannot be trusted.
local h = require "spec.support.helpers"

describe("harness", function()
    local up

    setup(function()
        up = h.start_upstream { name = "self" }
    end)

    teardown(h.cleanup)

    it("upstream answers JSON describing the request", function()
        local res = h.http(up.port, { method = "POST", path = "/x?y=1", body = "hello",
                                      headers = { ["X-A"] = "b" } })
        assert.equal(200, res.status)
        assert.equal("self", res.headers["x-upstream-name"])
        local seen = h.json(res.body)
        assert.equal("POST", seen.method)
        assert.equal("/x?y=1", seen.path)
        assert.equal("b", seen.headers["x-a"])
        assert.equal(5, seen.body_len)
        assert.equal(h.sh("printf hello | sha256sum"):match("^%x+"), seen.body_sha256)
    end)

    it("keep-alive, pipelining and per-connection ids", function()
        local c = h.connect(up.port)
        c:send(h.request_text { path = "/1" } .. h.request_text { path = "/2" })
        local a = h.json(assert(c:read_response()).body)
        local b = h.json(assert(c:read_response()).body)
        assert.equal("/1", a.path)
        assert.equal("/2", b.path)
        assert.equal(a.conn, b.conn)
        assert.equal(a.conn_requests + 1, b.conn_requests)
        c:close()
    end)

    it("reads chunked, close-delimited and length bodies", function()
        local c = h.connect(up.port)
        local r1 = c:request { path = "/?chunked=1" }
        assert.equal("chunked", r1.framing)
        assert.equal("/?chunked=1", h.json(r1.body).path)
        local r2 = c:request { path = "/?size=1000" }
        assert.equal("length", r2.framing)
        assert.equal(h.block():sub(1, 1000), r2.body)
        local r3 = c:request { path = "/?close=1&size=70000" }
        assert.equal("close", r3.framing)
        assert.equal(70000, #r3.body)
        assert.is_true(c:closed(1))
    end)

    it("a chunked upload is hashed like the generated pattern", function()
        local c = h.connect(up.port)
        local block = h.block()
        c:send("POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
               "10000\r\n" .. block .. "\r\n10000\r\n" .. block .. "\r\n0\r\n\r\n")
        local seen = h.json(assert(c:read_response()).body)
        assert.equal(131072, seen.body_len)
        assert.is_true(seen.chunked)
        assert.equal(h.upstream_sha256(131072), seen.body_sha256)
    end)

    it("pattern_checker finds a corrupted body", function()
        local sink, st = h.pattern_checker()
        sink(h.block():sub(1, 100))
        sink(h.block():sub(102, 200))
        assert.equal(100, st.bad_at)
    end)

    it("WebSocket and raw echo upgrades", function()
        local c = h.connect(up.port)
        c:send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        local res = assert(c:read_response())
        assert.equal(101, res.status)
        assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", res.headers["sec-websocket-accept"])
        c:send(h.ws_frame(1, "hi"))
        assert.equal("hi", assert(c:read_ws_frame()).payload)
        c:close()
        c = h.connect(up.port)
        c:send("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nab")
        assert.equal(101, assert(c:read_response()).status)
        assert.equal("ab", c:read_exact(2))
        c:close()
    end)

    it("1xx interim responses are collected", function()
        local c = h.connect(up.port)
        c:send("POST /?continue=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" ..
               "Expect: 100-continue\r\n\r\n")
        assert.equal(100, assert(c:read_head()).status)
        c:send("ok")
        local res = assert(c:read_response())
        assert.equal(200, res.status)
        c:close()
    end)

    it("reads time out instead of hanging", function()
        local c = h.connect(up.port)
        c:send(h.request_text { path = "/?delay=2" })
        local t0 = h.now()
        local res, err = c:read_response { timeout = 0.3 }
        assert.is_nil(res)
        assert.equal("timeout", err)
        assert.is_true(h.now() - t0 < 1)
        c:close()
    end)

    it("reset and abort are seen as closed connections", function()
        local c = h.connect(up.port)
        c:send(h.request_text { path = "/?reset=1" })
        assert.is_nil((c:read_response()))
        c = h.connect(up.port)
        c:send(h.request_text { path = "/?size=10000&abort=100" })
        assert.is_nil((c:read_response()))
    end)

    it("stats count requests but not control requests", function()
        local before = up:stats()
        h.http(up.port, { path = "/counted" })
        local after = up:stats()
        assert.equal(before.requests + 1, after.requests)
        assert.equal(before.connections + 1, after.connections)
    end)

    it("a spawned process is tracked and its exit code recorded", function()
        local p = h.spawn("exec sh -c 'sleep 0.1; exit 3'", "exit3")
        assert.equal(3, p:wait_exit(3))
        local q = h.spawn("exec sleep 30", "sleeper")
        assert.is_true(q:alive())
        assert.equal(128 + 15, q:kill("TERM", 2))
    end)

    it("free ports are distinct and bindable", function()
        local seen = {}
        for _ = 1, 20 do
            local p = h.free_port()
            assert.is_nil(seen[p])
            seen[p] = true
        end
    end)
end)

describe("harness config tables", function()
    it("render to the Lua calls of the config DSL", function()
        local text = h.config_text {
            settings = { timeouts = { header = 1 }, limits = { body = "1m" } },
            upstreams = { { "up", { "{{UP}}", { "127.0.0.1:2", weight = 2 } },
                            { read_timeout = 0.5 } } },
            routes = {
                { path = "/a/**", upstream = "up", headers = { ["X-V"] = "2" } },
                { path = "/h", handler = h.raw("function(req) return 200, 'x' end") },
            },
        }
        text = text:gsub("{{PORT}}", "8080")
        local calls = {}
        local fake = setmetatable({}, { __index = function(_, name)
            return function(...) calls[#calls + 1] = { name, ... } end
        end })
        local env = { require = function() return fake end }
        local chunk = assert(loadstring(text))
        setfenv(chunk, env)
        chunk()
        assert.equal("settings", calls[1][1])
        assert.same({ header = 1 }, calls[1][2].timeouts)
        assert.same({ "listen", { port = 8080, host = "127.0.0.1" } }, calls[2])
        assert.same({ "upstream", "up", { "{{UP}}", { "127.0.0.1:2", weight = 2 } },
                      { read_timeout = 0.5 } }, calls[3])
        assert.same({ "route", { path = "/a/**", upstream = "up",
                                 headers = { ["X-V"] = "2" } } }, calls[4])
        assert.equal("function", type(calls[5][2].handler))
    end)
end)
