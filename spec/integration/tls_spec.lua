-- TLS termination: real certificates (made with the openssl command at
-- setup), real TLS clients (Python's ssl module, curl), a real upstream.
local h = require "spec.support.helpers"

local TLS_CLIENT = h.UPSTREAM_PY:gsub("upstream%.py$", "tls_client.py")

-- A self-signed certificate for `names` (first = common name); returns the
-- certificate and key paths. The certificate is its own CA for the clients.
local function make_cert(tag, names)
    local dir = h.tmpdir()
    local crt, key = dir .. "/" .. tag .. ".pem", dir .. "/" .. tag .. ".key"
    local san = {}
    for i, n in ipairs(names) do
        san[i] = (n:match("^[%d.]+$") and "IP:" or "DNS:") .. n
    end
    local out = h.sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
        "-nodes -days 2 -subj %s -addext %s -keyout %s -out %s 2>&1; echo rc=$?"):format(
        h.shq("/CN=" .. names[1]), h.shq("subjectAltName=" .. table.concat(san, ",")),
        h.shq(key), h.shq(crt)))
    assert(out:find("rc=0", 1, true), out)
    return crt, key
end

-- Runs tls_client.py with `args` (a table of flag = value); returns its
-- JSON result.
local function tls(port, args)
    local parts = { h.shq(TLS_CLIENT), "--port", tostring(port) }
    for k, v in pairs(args or {}) do
        parts[#parts + 1] = "--" .. k
        if v ~= true then parts[#parts + 1] = h.shq(tostring(v)) end
    end
    local out = h.sh("python3 " .. table.concat(parts, " ") .. " 2>&1")
    return h.json(out)
end

local function get(path, extra)
    return "GET " .. path .. " HTTP/1.1\\r\\nHost: localhost\\r\\n" .. (extra or "") .. "\\r\\n"
end

describe("TLS termination", function()
    local gw, up, admin
    local a_crt, a_key, b_crt, b_key

    setup(function()
        a_crt, a_key = make_cert("a", { "a.test", "localhost", "127.0.0.1" })
        b_crt, b_key = make_cert("b", { "b.test" })
        up = h.start_upstream { name = "up" }
        admin = h.free_port()
        gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { timeouts = { header = 1, keepalive = 2 }, admin = { port = {{ADMIN}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1", tls = { certs = {
    { cert = "{{ACRT}}", key = "{{AKEY}}" },
    { cert = "{{BCRT}}", key = "{{BKEY}}" },
} } }
gw.listen { port = {{PORT2}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/tls-info", upstream = "up", policies = { function(req)
    return gw.respond(200, { scheme = req.scheme, tls = req.tls or false })
end } }
gw.route { path = "/upload", upstream = "up", max_body = "64m" }
gw.route { path = "/ws", upstream = "up", upgrades = { "websocket", "echo" } }
gw.route { path = "/**", upstream = "up" }
]], { ports = 2, vars = { UP = up, ADMIN = admin, ACRT = a_crt, AKEY = a_key,
                         BCRT = b_crt, BKEY = b_key } })
    end)

    teardown(h.cleanup)

    it("proxies a request over TLS, with X-Forwarded-Proto: https upstream", function()
        local r = tls(gw.port, { sni = "localhost", ca = a_crt, send = get("/orders/1") })
        assert.is_nil(r.error)
        local res = r.responses[1]
        assert.equal(200, res.status)
        local seen = h.json(res.body)
        assert.equal("/orders/1", seen.path)
        assert.equal("https", seen.headers["x-forwarded-proto"])
        assert.equal("a.test", r.subject)
    end)

    it("curl verifies the certificate and gets the answer", function()
        local out = h.sh(("curl -sS --cacert %s https://localhost:%d/x -w ' code=%%{http_code}' 2>&1")
            :format(h.shq(a_crt), gw.port))
        assert.truthy(out:find("code=200", 1, true), out)
        assert.truthy(out:find('"x-forwarded-proto": "https"', 1, true), out)
    end)

    it("req.tls and req.scheme tell hooks what the handshake agreed", function()
        -- (this client speaks HTTP/1.1 only: offered h2 too, the listener
        -- would choose it, spec/integration/h2_spec.lua)
        local r = tls(gw.port, { sni = "localhost", ca = a_crt, alpn = "http/1.1",
                                 send = get("/tls-info") })
        assert.is_nil(r.error)
        local info = h.json(r.responses[1].body)
        assert.equal("https", info.scheme)
        assert.equal(r.version, info.tls.version)
        assert.equal(r.cipher, info.tls.cipher)
        assert.equal("localhost", info.tls.sni)
        assert.equal("http/1.1", info.tls.alpn)
        assert.equal("http/1.1", r.alpn)
        assert.is_false(info.tls.resumed)
        -- the plain listener: no TLS table
        local plain = h.json(h.http(gw.ports[2], { path = "/tls-info" }))
        assert.equal("http", plain.scheme)
        assert.is_false(plain.tls)
    end)

    it("a client resuming its session is told so in req.tls.resumed", function()
        local r = tls(gw.port, { sni = "localhost", ca = a_crt, send = get("/tls-info"),
                                 resume = true })
        assert.is_nil(r.error)
        assert.is_true(r.session_reused)
        assert.is_true(h.json(r.responses[1].body).tls.resumed)
    end)

    it("TLS 1.2 works too", function()
        local r = tls(gw.port, { sni = "localhost", ca = a_crt, ["max-version"] = "1.2",
                                 send = get("/tls-info") })
        assert.is_nil(r.error)
        assert.equal("TLSv1.2", r.version)
        assert.equal("TLSv1.2", h.json(r.responses[1].body).tls.version)
    end)

    it("SNI picks the certificate for the name; an unknown name gets the first", function()
        local b = tls(gw.port, { sni = "b.test", ca = b_crt, send = get("/x") })
        assert.is_nil(b.error)
        assert.equal("b.test", b.subject)
        assert.equal(200, b.responses[1].status)
        local a = tls(gw.port, { sni = "a.test", ca = a_crt, send = get("/x") })
        assert.equal("a.test", a.subject)
        -- verification against b's certificate fails for another name
        local wrong = tls(gw.port, { sni = "nobody.test", ca = b_crt, send = get("/x") })
        assert.truthy(wrong.error and wrong.error:find("CERTIFICATE_VERIFY_FAILED", 1, true),
            tostring(wrong.error))
    end)

    it("keep-alive and pipelined requests are answered in order", function()
        local three = get("/p/1") .. get("/p/2") .. get("/p/3")
        local r = tls(gw.port, { send = three, responses = 3 })
        assert.is_nil(r.error)
        for i = 1, 3 do
            assert.equal("/p/" .. i, h.json(r.responses[i].body).path)
        end
    end)

    it("a 20 MiB upload and a 20 MiB download pass intact", function()
        local n = 20 * 1024 * 1024 -- the /upload route allows 64m
        local up_r = tls(gw.port, {
            send = "POST /upload HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: " .. n ..
                   "\\r\\n\\r\\n",
            upload = n, pieces = 300 })
        assert.is_nil(up_r.error)
        local seen = h.json(up_r.responses[1].body)
        assert.equal(n, seen.body_len)
        assert.equal(h.upstream_sha256(n), seen.body_sha256)
        local down = tls(gw.port, { send = get("/big?size=" .. n) })
        assert.is_nil(down.error)
        assert.equal(n, down.responses[1].body_len)
        assert.equal(h.upstream_sha256(n), down.responses[1].body_sha256)
    end)

    it("a plain HTTP request on the TLS port gets a readable 400 and the close", function()
        local c = h.connect(gw.port)
        c:send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        local res = assert(c:read_response())
        assert.equal(400, res.status)
        assert.truthy(res.body:find("use https://", 1, true), res.body)
        assert.equal("close", res.headers["connection"])
        assert.is_true(c:closed(3))
    end)

    it("garbage instead of a handshake closes the connection and is counted", function()
        local function failed()
            local m = h.admin(admin, { path = "/metrics" }).body
            return tonumber(m:match('moongate_tls_handshakes_total{result="failed"} (%d+)'))
        end
        local before = failed()
        local c = h.connect(gw.port)
        c:send("\22\3\1\0\5hello, not a ClientHello\0\0\0\0\0\0\0\0")
        -- a TLS alert may come first; then the close
        assert.is_not_nil(c:read_until_close(h.now() + 3))
        assert.equal(before + 1, failed())
        -- still serving
        local r = tls(gw.port, { send = get("/after") })
        assert.equal(200, r.responses[1].status)
    end)

    it("a client that connects and never finishes the handshake is dropped", function()
        local c = h.connect(gw.port)
        c:send("\22\3\1") -- the start of a record, then nothing
        local t0 = h.now()
        assert.is_true(c:closed(4))
        assert.truthy(h.now() - t0 < 3.5)
    end)

    it("a WebSocket upgrade over TLS tunnels both ways", function()
        local r = tls(gw.port, {
            send = "GET /ws HTTP/1.1\\r\\nHost: localhost\\r\\nUpgrade: echo\\r\\n" ..
                   "Connection: Upgrade\\r\\n\\r\\nraw bytes after the upgrade",
            responses = 1, ["read-raw"] = 27 })
        assert.is_nil(r.error)
        assert.equal(101, r.responses[1].status)
        assert.equal("raw bytes after the upgrade", r.raw)
    end)
end)

describe("TLS config", function()
    teardown(h.cleanup)

    local function check(tls_text)
        return h.check_config(([[
local gw = require "moongate"
gw.listen { port = 8443, tls = %s }
gw.route { path = "/", handler = function() return 200, "ok" end }
]]):format(tls_text))
    end

    it("a missing certificate file is refused with file:line and the path", function()
        local code, out, path = check('{ cert = "missing.pem", key = "missing.key" }')
        assert.equal(1, code)
        assert.truthy(out:find(path .. ":2: listen.tls: cannot load certificate", 1, true), out)
        assert.truthy(out:find("missing.pem", 1, true), out)
    end)

    it("a key that does not belong to the certificate is refused", function()
        local a_crt = make_cert("c1", { "c1.test" })
        local _, other_key = make_cert("c2", { "c2.test" })
        local code, out = check(('{ cert = %q, key = %q }'):format(a_crt, other_key))
        assert.equal(1, code)
        assert.truthy(out:find("does not belong to the certificate", 1, true), out)
    end)

    it("wrong shapes are named", function()
        local code, out = check('{ cert = "x.pem" }')
        assert.equal(1, code)
        assert.truthy(out:find("listen.tls.key must be the path of a PEM file", 1, true), out)
        code, out = check('{ cert = "x.pem", key = "x.key", min_version = "SSLv3" }')
        assert.truthy(out:find('min_version must be "TLSv1.2" or "TLSv1.3"', 1, true), out)
        code, out = check('"cert.pem"')
        assert.truthy(out:find("listen.tls must be a table", 1, true), out)
        code, out = check('{ cert = "x.pem", key = "x.key", certfile = 1 }')
        assert.truthy(out:find("unknown key 'certfile' in listen.tls", 1, true), out)
    end)

    it("relative paths are read next to the config file", function()
        local dir = h.tmpdir() .. "/relcfg"
        h.sh("mkdir -p " .. h.shq(dir .. "/certs"))
        local crt, key = make_cert("rel", { "rel.test" })
        h.sh(("cp %s %s/certs/site.pem && cp %s %s/certs/site.key"):format(
            h.shq(crt), h.shq(dir), h.shq(key), h.shq(dir)))
        local path = dir .. "/gw.lua"
        h.write_file(path, [[
local gw = require "moongate"
gw.listen { port = 8443, tls = { cert = "certs/site.pem", key = "certs/site.key" } }
gw.route { path = "/", handler = function() return 200, "ok" end }
]])
        local code, out = h.run_bin("check -c " .. h.shq(path))
        assert.equal(0, code, out)
    end)

    it("a reload swaps the certificate; a broken one keeps the old serving", function()
        local old_crt, old_key = make_cert("r1", { "localhost" })
        local new_crt, new_key = make_cert("r2", { "localhost" })
        local dir = h.tmpdir()
        local crt, key = dir .. "/live.pem", dir .. "/live.key"
        h.sh(("cp %s %s && cp %s %s"):format(h.shq(old_crt), h.shq(crt), h.shq(old_key),
            h.shq(key)))
        local admin = h.free_port()
        local gw = h.start_gateway(([[
local gw = require "moongate"
gw.settings { admin = { port = %d } }
gw.listen { port = {{PORT}}, host = "127.0.0.1", tls = { cert = %q, key = %q } }
gw.route { path = "/", handler = function() return 200, "ok" end }
]]):format(admin, crt, key))
        local r = tls(gw.port, { sni = "localhost", ca = old_crt, send = get("/") })
        assert.is_nil(r.error)
        -- a broken certificate: the reload is refused, the old one serves
        h.write_file(crt, "not a certificate\n")
        local res = h.admin(admin, { method = "POST", path = "/reload" })
        assert.is_not.equal(200, res.status)
        assert.truthy(res.body:find("cannot load certificate", 1, true), res.body)
        r = tls(gw.port, { sni = "localhost", ca = old_crt, send = get("/") })
        assert.is_nil(r.error)
        -- the new pair: new handshakes get it
        h.sh(("cp %s %s && cp %s %s"):format(h.shq(new_crt), h.shq(crt), h.shq(new_key),
            h.shq(key)))
        assert.equal(200, h.admin(admin, { method = "POST", path = "/reload" }).status)
        r = tls(gw.port, { sni = "localhost", ca = new_crt, send = get("/") })
        assert.is_nil(r.error)
        assert.equal(200, r.responses[1].status)
        local stale = tls(gw.port, { sni = "localhost", ca = old_crt, send = get("/") })
        assert.truthy(stale.error and stale.error:find("CERTIFICATE_VERIFY_FAILED", 1, true),
            tostring(stale.error))
    end)
end)
