-- HTTP/2 from clients through the real binary, with real clients: curl
-- (--http2 over TLS, --http2-prior-knowledge for h2c), nghttp, h2load, and
-- python3-h2 (spec/support/h2_client.py) where a spec needs the frames:
-- ALPN, h2c, the RFC 9113 translation to an HTTP/1.1 upstream, bodies
-- both ways under flow control, local answers, the access log, GOAWAY on
-- shutdown, reload and idle connections.
local h = require "spec.support.helpers"
local pki = require "spec.support.pki"
local cjson = require "cjson"
-- ASan keeps freed memory in quarantine: RSS says little there
local SANITIZED = os.getenv("MG_SANITIZED") == "1" or h.MG_BIN:find("asan", 1, true) ~= nil

local CONFIG = [[
local gw = require "moongate"
gw.settings { workers = 1, access_log = "{{TMP}}/access.log",
              timeouts = { keepalive = {{KEEPALIVE}}, send = 2, body = 2, shutdown = 5 } }
gw.listen { port = {{PORT1}}, host = "127.0.0.1", tls = { cert = "{{CRT}}", key = "{{KEY}}" } }
gw.listen { port = {{PORT2}}, host = "127.0.0.1", http2 = true }
gw.listen { port = {{PORT3}}, host = "127.0.0.1" }
gw.listen { port = {{PORT4}}, host = "127.0.0.1", http2 = false,
            tls = { cert = "{{CRT}}", key = "{{KEY}}" } }
gw.upstream("up", { "{{UP}}" })
gw.upstream("sink", { "{{SINK}}" }, { send_timeout = 30, read_timeout = 30 })
gw.route { path = "/version", upstream = "up", policies = { function(req)
    return gw.respond(200, { version = req.http_version, scheme = req.scheme,
                             host = req:header("host"), id = req.id,
                             alpn = req.tls and req.tls.alpn or false })
end } }
gw.route { path = "/local", handler = function(req) return 200, "local words" end }
gw.route { path = "/small", upstream = "up", max_body = "1k" }
gw.route { path = "/readbody", upstream = "up", policies = { function(req)
    local b = req:body()
    req:set_header("x-body-len", #b)
end } }
gw.route { path = "/sink", upstream = "sink" }
gw.route { path = "/**", upstream = "up" }
]]

describe("HTTP/2 from clients", function()
    local gw, up, ca, crt, key, sink, sink_conns

    local function start(keepalive)
        local _, sink_port = sink:getsockname()
        return h.start_gateway(CONFIG, { ports = 4, workers = 1, vars = {
            UP = up, CRT = crt, KEY = key, SINK = "127.0.0.1:" .. sink_port,
            KEEPALIVE = keepalive or 60 } })
    end

    setup(function()
        ca = pki.ca("h2")
        crt, key = ca:issue("srv", { "localhost", "127.0.0.1" })
        up = h.start_upstream { name = "up" }
        -- an upstream that accepts and never reads: request bodies pile up
        -- against it (flow control must hold them at the client)
        sink = assert(require("socket").bind("127.0.0.1", 0))
        sink:settimeout(0)
        sink_conns = {}
        gw = start()
    end)

    teardown(function()
        for _, c in ipairs(sink_conns) do c:close() end
        sink:close()
        h.cleanup()
    end)

    local function curl(args)
        return h.sh("curl -sS --max-time 20 " .. args .. " 2>&1")
    end

    local function log_entries()
        local out = {}
        for line in (h.read_file(gw.vars.TMP .. "/access.log") or ""):gmatch("[^\n]+") do
            out[#out + 1] = cjson.decode(line)
        end
        return out
    end

    local function log_entry(id)
        local found
        h.eventually(5, function()
            for _, e in ipairs(log_entries()) do
                if e.request_id == id then found = e end
            end
            return found
        end, "access log line of " .. tostring(id))
        return found
    end

    describe("real clients", function()
        it("curl --http2 negotiates h2 by ALPN on a TLS listener", function()
            local out = curl(("--http2 --cacert %s -w '\\n%%{http_version} %%{http_code}' " ..
                              "https://localhost:%d/version"):format(h.shq(ca.crt), gw.port))
            local body, ver, code = out:match("^(.*)\n(%S+) (%d+)$")
            assert.equal("2", ver, out)
            assert.equal("200", code, out)
            local b = h.json(body)
            assert.equal(2, b.version)
            assert.equal("https", b.scheme)
            assert.equal("h2", b.alpn)
            assert.equal("localhost:" .. gw.port, b.host)
        end)

        it("curl --http2-prior-knowledge speaks h2c on a listener with http2 = true", function()
            local out = curl(("--http2-prior-knowledge -w '\\n%%{http_version}' " ..
                              "http://127.0.0.1:%d/orders/1?x=1"):format(gw.ports[2]))
            local body, ver = out:match("^(.*)\n(%S+)$")
            assert.equal("2", ver, out)
            local seen = h.json(body)
            assert.equal("/orders/1?x=1", seen.path)
            assert.equal("HTTP/1.1", seen.version) -- the upstream is spoken to in HTTP/1.1
            assert.equal("127.0.0.1:" .. gw.ports[2], seen.headers.host)
            assert.equal("http", seen.headers["x-forwarded-proto"])
        end)

        it("the same h2c listener still serves HTTP/1.1", function()
            local res = h.http(gw.ports[2], { path = "/version" })
            assert.equal(200, res.status)
            assert.equal(1.1, h.json(res.body).version)
        end)

        it("a listener without http2 refuses the preface as HTTP/1 (400) and serves HTTP/1.1", function()
            local c = h.connect(gw.ports[3])
            c:send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            local res = assert(c:read_response())
            assert.equal(400, res.status)
            c:close()
            assert.equal(200, h.http(gw.ports[3], { path = "/local" }).status)
        end)

        it("a TLS listener with http2 = false offers only http/1.1", function()
            local out = curl(("--http2 --cacert %s -w '\\n%%{http_version}' " ..
                              "https://localhost:%d/version"):format(h.shq(ca.crt), gw.ports[4]))
            local body, ver = out:match("^(.*)\n(%S+)$")
            assert.equal("1.1", ver, out)
            assert.equal("http/1.1", h.json(body).alpn)
        end)

        it("nghttp multiplexes 20 requests on one connection", function()
            local urls = {}
            for i = 1, 20 do urls[i] = ("http://127.0.0.1:%d/n/%d"):format(gw.ports[2], i) end
            local out = h.sh("timeout 20 nghttp -nv " .. table.concat(urls, " ") .. " 2>&1")
            local ok = 0
            for _ in out:gmatch(":status: 200") do ok = ok + 1 end
            assert.equal(20, ok, out:sub(-2000))
            local opened = 0
            for _ in out:gmatch("recv SETTINGS frame <length=%d+, flags=0x00") do
                opened = opened + 1
            end
            assert.equal(1, opened) -- one connection, one server preface
        end)

        it("h2load: 4 connections x 50 streams, 2000 requests, all 200", function()
            local out = h.sh(("timeout 60 h2load -n 2000 -c 4 -m 50 http://127.0.0.1:%d/local " ..
                              "2>&1"):format(gw.ports[2]))
            assert.truthy(out:find("2000 succeeded, 0 failed, 0 errored", 1, true), out)
            assert.truthy(out:find("2000 2xx", 1, true), out)
        end)

        it("h2load over TLS (ALPN h2)", function()
            local out = h.sh(("timeout 60 h2load -n 500 -c 2 -m 20 https://127.0.0.1:%d/local " ..
                              "2>&1"):format(gw.port))
            assert.truthy(out:find("500 succeeded, 0 failed", 1, true), out)
            assert.truthy(out:find("Application protocol: h2", 1, true), out)
        end)
    end)

    describe("requests and responses (RFC 9113 8.2, 8.3)", function()
        local c

        setup(function() c = h.h2_connect(gw.ports[2]) end)
        teardown(function() c:close() end)

        it("joins cookie crumbs, takes :authority as Host, drops connection headers of the answer", function()
            local res = c:request({ path = "/echo?hop=1", host = "api.example",
                                    headers = { { "cookie", "a=1" }, { "x-one", "1" },
                                                { "cookie", "b=2" }, { "cookie", "c=3" } } })
            assert.equal(200, res.status)
            local seen = h.json(res.body)
            assert.equal("a=1; b=2; c=3", seen.headers.cookie)
            assert.equal("api.example", seen.headers.host)
            local cookies = 0
            for _, kv in ipairs(seen.header_list) do
                if kv[1]:lower() == "cookie" then cookies = cookies + 1 end
            end
            assert.equal(1, cookies)
            -- the upstream's hop-by-hop fields are not passed on (and no
            -- HTTP/2 client would take Connection or Keep-Alive)
            assert.is_nil(res.headers.connection)
            assert.is_nil(res.headers["keep-alive"])
            assert.is_nil(res.headers["proxy-connection"])
            assert.is_nil(res.headers["x-foo"])
            assert.equal(tostring(#res.body), res.headers["content-length"])
            assert.truthy(res.headers["x-request-id"])
        end)

        it("keeps a Host equal to :authority once, refuses one that differs (400)", function()
            local res = c:request({ path = "/echo", host = "a.example",
                                    headers = { { "host", "A.example" } } })
            assert.equal(200, res.status)
            assert.equal("A.example", h.json(res.body).headers.host)
            res = c:request({ path = "/echo", host = "a.example", headers = { { "host", "b.example" } } })
            assert.equal(400, res.status)
            assert.equal("Host and :authority differ", h.json(res.body).error)
        end)

        it("refuses connection-specific fields and a TE other than trailers (stream error)", function()
            for _, hd in ipairs { { "connection", "keep-alive" }, { "transfer-encoding", "chunked" },
                                  { "upgrade", "websocket" }, { "keep-alive", "1" },
                                  { "te", "gzip" } } do
                local res = c:request({ path = "/echo", headers = { hd } })
                -- nghttp2 resets the stream (PROTOCOL_ERROR) before the gateway
                -- sees it; either way nothing goes upstream
                assert.truthy(res.reset == 1 or res.status == 400, hd[1])
            end
            local res = c:request({ path = "/echo", headers = { { "te", "trailers" } } })
            assert.equal(200, res.status)
            assert.is_nil(h.json(res.body).headers.te)
        end)

        it("refuses a request with neither :authority nor Host (400)", function()
            local res = c:request({ path = "/echo", host = false })
            -- nghttp2 resets it first (PROTOCOL_ERROR); the pipeline would say
            -- "missing Host header"
            assert.truthy(res.reset == 1 or (res.status == 400 and
                          h.json(res.body).error == "missing Host header"))
        end)

        it("answers HEAD with the length and no body", function()
            local res = c:request({ method = "HEAD", path = "/local" })
            assert.equal(200, res.status)
            assert.equal("11", res.headers["content-length"])
            assert.equal(0, res.body_len)
        end)

        it("gateway answers: gw.respond (also over TLS), 413, a handler", function()
            local tls = h.http2(gw.port, { path = "/version" }, { tls = true, ca = ca.crt })
            assert.equal(200, tls.status)
            assert.equal("h2", h.json(tls.body).alpn)
            local res = c:request({ method = "POST", path = "/small", body = string.rep("x", 5000) })
            assert.equal(413, res.status)
            res = c:request({ path = "/local" })
            assert.equal("local words", res.body)
            -- the connection goes on after a refused body
            assert.equal(200, c:request({ path = "/local" }).status)
        end)

        it("streams a request body up, with and without content-length", function()
            local body = string.rep("0123456789abcdef", 65536) -- 1 MiB
            local res = c:request({ method = "POST", path = "/upload", body = body,
                                    headers = { { "content-length", tostring(#body) } } })
            assert.equal(200, res.status)
            local seen = h.json(res.body)
            assert.equal(#body, seen.body_len)
            assert.is_false(seen.chunked)
            res = c:request({ method = "POST", path = "/upload", body = body })
            seen = h.json(res.body)
            assert.equal(#body, seen.body_len)
            assert.is_true(seen.chunked) -- no length given: chunked to HTTP/1.1
        end)

        it("streams a large answer down", function()
            local res = c:request({ path = "/big?size=5000000", timeout = 30 })
            assert.equal(200, res.status)
            assert.equal(5000000, res.body_len)
            local f = h.tmpfile("big.bin", res.body)
            assert.equal(h.upstream_sha256(5000000),
                         h.sh("sha256sum " .. h.shq(f)):match("^(%x+)"))
        end)

        it("req:body() in a hook reads the whole body", function()
            local res = c:request({ method = "POST", path = "/readbody", body = string.rep("z", 200000) })
            assert.equal(200, res.status)
            local seen = h.json(res.body)
            assert.equal("200000", seen.headers["x-body-len"])
            assert.equal(200000, seen.body_len)
        end)

        it("answers Expect: 100-continue with an interim 100", function()
            local res = c:request({ method = "POST", path = "/upload?continue=1",
                                    body = string.rep("e", 1000),
                                    headers = { { "expect", "100-continue" } } })
            assert.equal(200, res.status)
            assert.same({ 100 }, res.interim)
            assert.equal(1000, h.json(res.body).body_len)
        end)

        it("continues the client's trace and keeps its request id", function()
            local tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            local res = c:request({ path = "/trace", headers = { { "traceparent", tp },
                                                                { "x-request-id", "h2-req-1" } } })
            local seen = h.json(res.body)
            assert.equal("h2-req-1", res.headers["x-request-id"])
            assert.equal("h2-req-1", seen.headers["x-request-id"])
            assert.truthy(seen.headers.traceparent:find("4bf92f3577b34da6a3ce929d0e0e4736", 1, true))
        end)

        it("logs proto HTTP/2 (and HTTP/1.1 for the other protocol)", function()
            local res = c:request({ path = "/logged", headers = { { "x-request-id", "h2-logged" } } })
            assert.equal(200, res.status)
            local e = log_entry("h2-logged")
            assert.equal("HTTP/2", e.proto)
            assert.equal(200, e.status)
            assert.equal("/logged", e.path)
            assert.equal(res.body_len, e.bytes)
            h.http(gw.ports[2], { path = "/logged", headers = { ["X-Request-Id"] = "h1-logged" } })
            assert.equal("HTTP/1.1", log_entry("h1-logged").proto)
        end)
    end)

    describe("flow control against back-pressure", function()
        it("a client that does not read holds the upstream, not the gateway's memory", function()
            local before = gw:rss()
            -- the window stays shut after the first 64 KiB: the rest must
            -- wait in the upstream, not in the gateway
            local c = h.h2_connect(gw.ports[2], { no_read_body = true })
            local id = c:start({ path = "/slow?size=60000000" })
            h.sleep(1.5 * h.SLOW)
            local grew = gw:rss() - before
            assert.is_true(SANITIZED or grew < 8 * 1024, "RSS grew by " .. grew .. " KiB")
            -- timeouts.send later, the stream is reset (CANCEL); the
            -- gateway serves on (this client never opens its window again)
            local res = c:wait(id, 10)
            assert.equal(8, res.reset)
            c:close()
            assert.equal(200, h.http2(gw.ports[2], { path = "/local" }).status)
        end)

        it("an upstream that does not read holds the client's body at the window", function()
            local c = h.h2_connect(gw.ports[2])
            local before = gw:rss()
            local id = c:start({ method = "POST", path = "/sink", ["end"] = false })
            local s
            h.eventually(5, function()
                s = sink:accept()
                return s
            end, "the gateway connects the sink")
            sink_conns[#sink_conns + 1] = s
            local chunk = string.rep("b", 1024 * 1024)
            for _ = 1, 20 do c:data(id, chunk, false) end -- 20 MiB offered
            h.sleep(1.5 * h.SLOW)
            local grew = gw:rss() - before
            -- a window (64 KiB) and the sockets' buffers, not 20 MiB
            assert.is_true(SANITIZED or grew < 8 * 1024, "RSS grew by " .. grew .. " KiB")
            c:reset(id, 8)
            assert.equal(200, c:request({ path = "/local" }).status)
            c:close()
        end)
    end)

    describe("GOAWAY", function()
        it("an idle connection gets GOAWAY NO_ERROR after timeouts.keepalive", function()
            local g2 = start(0.5)
            local c = h.h2_connect(g2.ports[2])
            assert.equal(200, c:request({ path = "/local" }).status)
            local st
            h.eventually(5, function()
                st = c:state()
                return st.goaway ~= nil
            end, "GOAWAY on the idle connection")
            assert.equal(0, st.goaway)
            c:close()
            g2:stop()
        end)

        -- nghttp (nghttp2's client) takes a graceful GOAWAY as it is meant:
        -- streams below its last stream id go on (python-h2 closes on any)
        -- returns once the upstream has the request (the stream is in flight)
        local function nghttp_slow(port)
            local before = up:stats().requests
            local n = h.spawn(("exec nghttp -nv http://127.0.0.1:%d/slow?delay=1"):format(port),
                              "nghttp")
            h.eventually(5, function() return up:stats().requests > before end,
                         "the request upstream")
            return n
        end

        it("a reload sends GOAWAY and lets the stream in flight finish", function()
            local g2 = start()
            local n = nghttp_slow(g2.ports[2])
            g2:signal("HUP")
            assert.equal(0, n:wait_exit(10 * h.SLOW))
            local log = n:log()
            -- the notice (the highest id), then the last stream id, NO_ERROR both
            assert.truthy(log:find("recv GOAWAY frame.-last_stream_id=2147483647, " ..
                                   "error_code=NO_ERROR"), log)
            local sent = tonumber(log:match("send HEADERS frame <[^>]*stream_id=(%d+)>"))
            local last = {}
            for id in log:gmatch("recv GOAWAY frame <[^>]*>%s*%(last_stream_id=(%d+), " ..
                                 "error_code=NO_ERROR") do
                last[#last + 1] = tonumber(id)
            end
            assert.equal(2, #last, log)
            assert.is_true(last[2] >= sent and last[2] < 2147483647, log)
            assert.truthy(log:find(":status: 200", 1, true), log)
            -- a new connection is served by the new generation
            assert.equal(200, h.http2(g2.ports[2], { path = "/local" }).status)
            g2:stop()
        end)

        it("shutdown sends GOAWAY, finishes the stream in flight, then exits", function()
            local g2 = start()
            local n = nghttp_slow(g2.ports[2])
            g2:signal("TERM")
            assert.equal(0, n:wait_exit(10 * h.SLOW))
            local log = n:log()
            assert.truthy(log:find("recv GOAWAY frame.-error_code=NO_ERROR"), log)
            assert.truthy(log:find(":status: 200", 1, true), log)
            assert.equal(0, g2:wait_exit(10))
        end)
    end)
end)
