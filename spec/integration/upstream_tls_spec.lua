-- TLS to upstreams (issue #15): a CA made with the openssl command in the
-- spec's temp dir (spec/support/pki.lua), HTTPS upstreams served by
-- Python's ssl module (spec/support/upstream.py --tls-cert) and by nginx
-- with `ssl`, a JWKS endpoint over HTTPS whose keys rotate, gw.http to
-- https:// URLs. Tokens are signed by a python3 one-liner: this process
-- loads none of moongate's C (busted's insulation would unload the library
-- under its finalizers).

local h = require "spec.support.helpers"
local pki = require "spec.support.pki"
local cjson = require "cjson"

local fmt = string.format

local CONFIG = [[
local gw = require "moongate"
local jwt = require "moongate.jwt"
gw.settings { admin = { port = {{ADMIN}} }, timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
local ca = "{{CA}}"
gw.upstream("good", { "https://localhost:{{GOOD}}" }, { tls = { ca = ca } })
gw.upstream("fresh", { "localhost:{{FRESH}}" }, { keepalive = 0, tls = { ca = ca } })
gw.upstream("fresh_full", { "localhost:{{FRESH}}" },
    { keepalive = 0, tls = { ca = ca, session_reuse = false } })
gw.upstream("mtls", { "localhost:{{MTLS}}" },
    { tls = { ca = ca, cert = "{{CLI_CRT}}", key = "{{CLI_KEY}}" } })
gw.upstream("mtls_nocert", { "localhost:{{MTLS}}" }, { max_fails = 0, tls = { ca = ca } })
gw.upstream("expired", { "localhost:{{OLD}}" }, { max_fails = 0, tls = { ca = ca } })
gw.upstream("wrong_name", { "localhost:{{WRONG}}" }, { max_fails = 0, tls = { ca = ca } })
gw.upstream("sni", { "127.0.0.1:{{WRONG}}" }, { tls = { ca = ca, sni = "elsewhere.test" } })
gw.upstream("unknown_ca", { "localhost:{{STRANGER}}" }, { max_fails = 0, tls = { ca = ca } })
gw.upstream("checked", { "localhost:{{CHECKED}}" },
    { tls = { ca = ca }, health = { path = "/health", interval = 0.2, fall = 1, rise = 1 } })
gw.upstream("checked_bad", { "localhost:{{STRANGER}}" },
    { tls = { ca = ca }, health = { path = "/health", interval = 0.2, fall = 1, rise = 1 } })
gw.upstream("nginx", { "localhost:{{NGINX}}" }, { tls = { ca = ca } })
gw.upstream("nginx_fresh", { "localhost:{{NGINX}}" }, { keepalive = 0, tls = { ca = ca } })
for _, name in ipairs { "good", "fresh", "fresh_full", "mtls", "mtls_nocert", "expired", "wrong_name", "sni",
                        "unknown_ca", "checked", "checked_bad", "nginx", "nginx_fresh" } do
    gw.route { path = "/" .. name .. "/**", upstream = name }
end
gw.route { path = "/tunnel", upstream = "good", upgrades = { "echo" } }

-- gw.http to https:// URLs, with the options a hook may give
local function fetch(url, opts)
    return function(req)
        local o = { url = url, timeout = 3 }
        for k, v in pairs(opts) do o[k] = v end
        local res, err = gw.http.request(o)
        return gw.respond(200, { status = res and res.status, err = err,
                                 body = res and res.body })
    end
end
gw.route { path = "/fetch/good", upstream = "good",
           policies = { fetch("https://localhost:{{STRANGER2}}/x", { ca = "{{CA2}}" }) } }
gw.route { path = "/fetch/bad", upstream = "good",
           policies = { fetch("https://localhost:{{STRANGER2}}/x", { ca = ca }) } }
gw.route { path = "/fetch/system", upstream = "good",
           policies = { fetch("https://localhost:{{STRANGER2}}/x", {}) } }
gw.route { path = "/fetch/noverify", upstream = "good",
           policies = { fetch("https://localhost:{{STRANGER2}}/x", { verify = false }) } }
gw.route { path = "/fetch/expired", upstream = "good",
           policies = { fetch("https://localhost:{{OLD}}/x", { ca = ca }) } }

gw.route { path = "/jwt/**", upstream = "good", policies = {
    jwt.policy { jwks_url = "https://localhost:{{JWKS}}/jwks", jwks_ca = ca,
                 jwks_min_refresh = 0.5, jwks_refresh = 3600, jwks_timeout = 2 },
} }
]]

-- nginx with `ssl`: says which connection and whether it resumed
local NGINX = [[
worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/nginx.err warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %s/tmp-body;
    proxy_temp_path %s/tmp-proxy;
    fastcgi_temp_path %s/tmp-fastcgi;
    uwsgi_temp_path %s/tmp-uwsgi;
    scgi_temp_path %s/tmp-scgi;
    keepalive_requests 10000;
    server {
        listen 127.0.0.1:%d ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location / {
            add_header X-Conn $connection always;
            add_header X-Conn-Requests $connection_requests always;
            add_header X-Reused $ssl_session_reused always;
            add_header X-Protocol $ssl_protocol always;
            add_header X-Alpn $ssl_alpn_protocol always;
            return 200 "nginx over TLS\n";
        }
    }
}
]]

local function wait_port(port, proc)
    local deadline = h.now() + 10 * h.SLOW
    while h.now() < deadline do
        local c = h.try_connect(port)
        if c then
            c:close()
            return
        end
        h.sleep(0.02)
    end
    error(fmt("nothing listens on %d:\n%s", port, proc and proc:log() or ""))
end

local function b64url(s)
    return (require("mime").b64(s):gsub("=+$", ""):gsub("%+", "-"):gsub("/", "_"))
end

-- an HS256 token with a kid (header {"alg":"HS256","typ":"JWT","kid":KID})
local SIGN = [[
import base64, hashlib, hmac, json, sys
kid, secret, sub, exp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
e = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = e(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
body = e(json.dumps({"sub": sub, "exp": exp}).encode())
sig = e(hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest())
print(head + "." + body + "." + sig)
]]
local function hs256(kid, secret, sub)
    return (h.sh(fmt("python3 -c %s %s %s %s %d", h.shq(SIGN), h.shq(kid), h.shq(secret),
                     h.shq(sub), os.time() + 300)):gsub("%s+$", ""))
end

describe("TLS to upstreams", function()
    local gw, admin, ups, ca, ca2, nginx_port, jwks, jwks_path

    local function metric(pattern)
        local res = h.admin(admin, { path = "/metrics" })
        assert.equal(200, res.status)
        return tonumber(res.body:match(pattern)) or 0
    end

    local function failures(upstream, reason)
        return metric(fmt('moongate_upstream_tls_failures_total{upstream="%s",reason="%s"} (%%d+)',
                          upstream, reason))
    end

    local function handshakes(upstream, result)
        return metric(fmt('moongate_upstream_tls_handshakes_total{upstream="%s",result="%s"} (%%d+)',
                          upstream, result))
    end

    -- polls until the gateway's log has `text` (a plain string)
    local function log_has(text)
        local deadline = h.now() + 5 * h.SLOW
        while h.now() < deadline do
            if gw:log():find(text, 1, true) then return true end
            h.sleep(0.02)
        end
        return false, gw:log_tail(20)
    end

    setup(function()
        ca = pki.ca("main")
        ca2 = pki.ca("other")
        local crt, key = ca:issue("srv", { "localhost", "127.0.0.1" })
        local old_crt, old_key = ca:issue("old", { "localhost" }, { expired = true })
        local wrong_crt, wrong_key = ca:issue("wrong", { "elsewhere.test" })
        local str_crt, str_key = ca2:issue("stranger", { "localhost" })
        local cli_crt, cli_key = ca:issue("gateway", { "gateway" }, { client = true })
        local srv = { cert = crt, key = key }
        ups = h.start_upstreams {
            { name = "good", tls = srv }, { name = "fresh", tls = srv },
            { name = "mtls", tls = { cert = crt, key = key, client_ca = ca.crt } },
            { name = "old", tls = { cert = old_crt, key = old_key } },
            { name = "wrong", tls = { cert = wrong_crt, key = wrong_key } },
            { name = "stranger", tls = { cert = str_crt, key = str_key } },
            { name = "stranger2", tls = { cert = str_crt, key = str_key } },
            { name = "checked", tls = srv },
        }
        -- nginx
        local dir = h.tmpdir() .. "/nginx"
        h.sh("mkdir -p " .. h.shq(dir))
        nginx_port = h.free_port()
        local conf = h.tmpfile("nginx.conf", fmt(NGINX, dir, dir, dir, dir, dir, dir, dir,
                                                 nginx_port, crt, key))
        local nginx = h.spawn(fmt("exec nginx -p %s -e %s/nginx.err -c %s", h.shq(dir),
                                  h.shq(dir), h.shq(conf)), "nginx")
        wait_port(nginx_port, nginx)
        -- a JWKS endpoint over HTTPS, with one HMAC key (kid k1)
        jwks_path = h.tmpfile("jwks.json", cjson.encode { keys = {
            { kty = "oct", kid = "k1", use = "sig", alg = "HS256", k = b64url("secret-one-0123456789abcdefghijklmnop") } } })
        local jp, jc = h.free_port(), h.free_port()
        jwks = h.spawn(fmt("exec python3 -u spec/fixtures/jwt/jwks_server.py --port %d --file %s " ..
                           "--tls-cert %s --tls-key %s --control-port %d", jp, h.shq(jwks_path),
                           h.shq(crt), h.shq(key), jc), "jwks")
        jwks.port, jwks.control = jp, jc
        wait_port(jc, jwks)
        admin = h.free_port()
        gw = h.start_gateway(CONFIG, { workers = 1, vars = {
            ADMIN = admin, CA = ca.crt, CA2 = ca2.crt, CLI_CRT = cli_crt, CLI_KEY = cli_key,
            GOOD = ups.good.port, FRESH = ups.fresh.port, MTLS = ups.mtls.port,
            OLD = ups.old.port, WRONG = ups.wrong.port, STRANGER = ups.stranger.port,
            STRANGER2 = ups.stranger2.port, CHECKED = ups.checked.port, NGINX = nginx_port,
            JWKS = jp } })
    end)

    teardown(h.cleanup)

    it("reaches an HTTPS upstream with its certificate verified (an https:// target)", function()
        local res = h.http(gw.port, { path = "/good/orders/1" })
        assert.equal(200, res.status, res.body)
        local seen = h.json(res.body)
        assert.equal("/good/orders/1", seen.path)
        assert.equal("TLSv1.3", seen.tls.version)
        assert.equal("full", handshakes("good", "full") > 0 and "full" or "none")
    end)

    it("streams large bodies both ways over TLS", function()
        local N = 5000000
        local res = h.http(gw.port, { path = "/good/big?size=" .. N, timeout = 20 })
        assert.equal(200, res.status)
        assert.equal(N, #res.body)
        local f = h.tmpfile("download", res.body)
        assert.equal(h.upstream_sha256(N), (h.sh("sha256sum " .. h.shq(f)):match("^(%x+)")))
        local body = string.rep("0123456789abcdef", 4 * 65536) -- 4 MiB
        f = h.tmpfile("upload", body)
        res = h.http(gw.port, { method = "POST", path = "/good/up", body = body, timeout = 20 })
        assert.equal(200, res.status, res.body)
        local seen = h.json(res.body)
        assert.equal(#body, seen.body_len)
        assert.equal(h.sh("sha256sum " .. h.shq(f)):match("^(%x+)"), seen.body_sha256)
    end)

    it("a client that stops reading holds the TLS upstream back, then gets it all", function()
        local N = 8000000
        local c = h.connect(gw.port, { timeout = 20 })
        c:send("GET /good/slow?size=" .. N .. " HTTP/1.1\r\nHost: localhost\r\n\r\n")
        h.sleep(0.5) -- socket buffers fill: the gateway stops reading the upstream
        local res = assert(c:read_response({ timeout = 20 }))
        c:close()
        assert.equal(200, res.status)
        assert.equal(N, #res.body)
        local f = h.tmpfile("slow", res.body)
        assert.equal(h.upstream_sha256(N), (h.sh("sha256sum " .. h.shq(f)):match("^(%x+)")))
    end)

    it("tunnels an upgraded connection over TLS", function()
        local c = h.connect(gw.port)
        c:send("GET /tunnel HTTP/1.1\r\nHost: localhost\r\nUpgrade: echo\r\n" ..
               "Connection: Upgrade\r\n\r\n")
        assert.equal(101, assert(c:read_response()).status)
        for _, msg in ipairs { "raw bytes\0\1\2", string.rep("x", 200000) } do
            c:send(msg)
            assert.equal(msg, assert(c:read_exact(#msg)))
        end
        c:close()
    end)

    it("pools TLS connections: N requests on one connection and one handshake", function()
        local c = h.connect(gw.port)
        assert.equal(200, c:request({ path = "/good/warm" }).status) -- one pooled connection
        local before = ups.good:stats()
        local conns = {}
        for i = 1, 8 do
            local res = c:request { path = "/good/n/" .. i }
            assert.equal(200, res.status)
            conns[h.json(res.body).conn] = true
        end
        c:close()
        local n = 0
        for _ in pairs(conns) do n = n + 1 end
        assert.equal(1, n, "one upstream connection carried them all")
        local after = ups.good:stats()
        assert.equal(before.tls_handshakes, after.tls_handshakes, "no new handshake")
        assert.equal(before.requests + 8, after.requests)
    end)

    it("resumes the TLS session on new connections (keepalive = 0)", function()
        local before = ups.fresh:stats()
        for i = 1, 6 do
            assert.equal(200, h.http(gw.port, { path = "/fresh/" .. i }).status)
        end
        local after = ups.fresh:stats()
        local made = after.tls_handshakes - before.tls_handshakes
        local resumed = after.tls_resumed - before.tls_resumed
        assert.equal(6, made, "one connection per request")
        -- the first may be a full handshake; every later one resumes
        assert.is_true(resumed >= 5, fmt("%d of %d resumed", resumed, made))
        assert.is_true(handshakes("fresh", "resumed") >= 5)
        -- session_reuse = false: full handshakes only
        before = ups.fresh:stats()
        for i = 1, 3 do
            assert.equal(200, h.http(gw.port, { path = "/fresh_full/" .. i }).status)
        end
        after = ups.fresh:stats()
        assert.equal(3, after.tls_handshakes - before.tls_handshakes)
        assert.equal(0, after.tls_resumed - before.tls_resumed)
        assert.equal(3, handshakes("fresh_full", "full"))
    end)

    it("nginx with ssl: verified, pooled, and resumed on new connections", function()
        local c = h.connect(gw.port)
        local first
        for i = 1, 5 do
            local res = c:request { path = "/nginx/" .. i }
            assert.equal(200, res.status, res.body)
            assert.equal("nginx over TLS\n", res.body)
            first = first or res.headers["x-conn"]
            assert.equal(first, res.headers["x-conn"], "the pooled connection")
            assert.equal(tostring(i), res.headers["x-conn-requests"])
            assert.equal("http/1.1", res.headers["x-alpn"], "ALPN offered http/1.1")
        end
        c:close()
        local reused = {}
        for i = 1, 4 do
            local res = h.http(gw.port, { path = "/nginx_fresh/" .. i })
            assert.equal(200, res.status, res.body)
            reused[i] = res.headers["x-reused"]
        end
        -- the first of these may be full; the others offer the kept session
        assert.same({ "r", "r", "r" }, { reused[2], reused[3], reused[4] })
    end)

    -- each verification failure: 502, OpenSSL's reason in the error log,
    -- counted by reason; the request never reaches the server
    for _, case in ipairs {
        { "an expired certificate", "expired", "old", "certificate has expired", "expired" },
        { "a certificate for another name", "wrong_name", "wrong", "hostname mismatch",
          "hostname" },
        { "a certificate from an unknown CA", "unknown_ca", "stranger",
          "unable to get local issuer certificate", "unknown_ca" },
    } do
        local what, upstream, server, reason, label = unpack(case)
        it(what .. ": 502, the reason logged and counted", function()
            local before = ups[server]:stats().requests
            local res = h.http(gw.port, { path = "/" .. upstream .. "/x" })
            assert.equal(502, res.status)
            assert.truthy(log_has(fmt("upstream %s, target localhost:%d: upstream TLS " ..
                                      "handshake failed: TLS certificate verify failed: %s",
                                      upstream, ups[server].port, reason)))
            assert.is_true(failures(upstream, label) >= 1)
            assert.equal(before, ups[server]:stats().requests, "nothing was sent to it")
        end)
    end

    it("tls.sni names the name the certificate is for", function()
        assert.equal(200, h.http(gw.port, { path = "/sni/x" }).status)
    end)

    it("a client certificate for an upstream that requires one", function()
        local res = h.http(gw.port, { path = "/mtls/x" })
        assert.equal(200, res.status, res.body)
        assert.equal("gateway", h.json(res.body).tls.client)
        -- without it the server refuses the handshake (a TLS 1.3 server does
        -- so after the client's side of it ended: Python's closes the
        -- connection), and the request never reaches it
        local before = ups.mtls:stats().requests
        res = h.http(gw.port, { path = "/mtls_nocert/x" })
        assert.equal(502, res.status)
        assert.truthy(log_has("upstream mtls_nocert, target localhost:" .. ups.mtls.port))
        assert.equal(before, ups.mtls:stats().requests)
    end)

    it("health checks run over TLS and fail on a bad certificate", function()
        local deadline = h.now() + 10 * h.SLOW
        local checks = 0
        while h.now() < deadline do
            checks = h.json(h.http(ups.checked.control_port, { path = "/__health" }).body).checks
            if checks >= 2 then break end
            h.sleep(0.05)
        end
        assert.is_true(checks >= 2, "checks seen: " .. checks)
        assert.truthy(log_has("upstream checked_bad: target localhost:" .. ups.stranger.port ..
                              " taken out: TLS certificate verify failed"))
    end)

    it("gw.http to https:// URLs: verified, and a bad certificate refused", function()
        local function get(path)
            local res = h.http(gw.port, { path = path })
            assert.equal(200, res.status, res.body)
            return h.json(res.body)
        end
        local ok = get("/fetch/good")
        assert.equal(200, ok.status, ok.err)
        assert.equal("TLSv1.3", h.json(ok.body).tls.version)
        local bad = get("/fetch/bad")
        assert.is_nil(bad.status)
        assert.matches("certificate verify failed: unable to get local issuer certificate", bad.err,
                       1, true)
        local system = get("/fetch/system") -- Debian's bundle does not know the spec's CA
        assert.is_nil(system.status)
        assert.matches("certificate verify failed", system.err, 1, true)
        local expired = get("/fetch/expired")
        assert.matches("certificate has expired", expired.err, 1, true)
        -- verify = false is the caller's explicit choice
        assert.equal(200, get("/fetch/noverify").status)
        assert.is_true(failures("gw.http", "unknown_ca") >= 2)
    end)

    it("JWKS over https: verifies, and follows a key rotation mid-test", function()
        local token = hs256
        local function get(tok)
            return h.http(gw.port, { path = "/jwt/x", headers = { Authorization = "Bearer " .. tok } })
        end
        local function count()
            return tonumber(h.http(jwks.control, { path = "/__count" }).body)
        end
        assert.equal(200, get(token("k1", "secret-one-0123456789abcdefghijklmnop", "ann")).status)
        -- the identity provider rotates to k2
        h.write_file(jwks_path, cjson.encode { keys = {
            { kty = "oct", kid = "k2", use = "sig", alg = "HS256", k = b64url("secret-two-0123456789abcdefghijklmnop") } } })
        h.sleep(0.6 * h.SLOW) -- past jwks_min_refresh
        local before = count()
        assert.equal(200, get(token("k2", "secret-two-0123456789abcdefghijklmnop", "bob")).status)
        assert.equal(before + 1, count(), "the new kid made one fetch, over https")
        h.sleep(0.6 * h.SLOW)
        assert.equal(401, get(token("k1", "secret-one-0123456789abcdefghijklmnop", "ann")).status)
    end)

    it("the gateway is still healthy", function()
        gw:assert_alive()
    end)
end)

describe("a reload that turns on TLS for an upstream", function()
    teardown(h.cleanup)

    it("does not reuse the plain connections pooled before it", function()
        local ca = pki.ca("reload")
        local up = h.start_upstream { name = "plain" }
        local admin = h.free_port()
        local text = [[
local gw = require "moongate"
gw.settings { admin = { port = {{ADMIN}} } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("x", { "localhost:{{UPP}}" }%s)
gw.route { path = "/**", upstream = "x" }
]]
        local gw = h.start_gateway(text:format(""), { workers = 1,
            vars = { ADMIN = admin, UPP = up.port } })
        local c = h.connect(gw.port)
        assert.equal(200, c:request({ path = "/a" }).status) -- a pooled plain connection
        c:close()
        local new = text:format(fmt(', { connect_timeout = 0.5, tls = { ca = "%s" } }', ca.crt))
            :gsub("{{ADMIN}}", tostring(admin)):gsub("{{PORT}}", tostring(gw.port))
            :gsub("{{UPP}}", tostring(up.port))
        h.write_file(gw.config_path .. ".tmp", new)
        assert(os.rename(gw.config_path .. ".tmp", gw.config_path))
        local rc, out = h.run_bin("reload --admin 127.0.0.1:" .. admin)
        assert.equal(0, rc, out)
        -- the new generation speaks TLS to a plain server (which waits for a
        -- request head: the handshake times out), never over the old
        -- plaintext connection
        local deadline, status = h.now() + 10 * h.SLOW, nil
        repeat
            status = h.http(gw.port, { path = "/b" }).status
        until status == 504 or h.now() > deadline
        assert.equal(504, status)
        local seen = up:stats().requests
        assert.equal(504, h.http(gw.port, { path = "/c" }).status)
        assert.equal(seen, up:stats().requests)
        assert.truthy(gw:log():find("upstream TLS handshake timed out", 1, true))
    end)
end)

describe("a hook stopped by its time budget inside gw.http.request", function()
    teardown(h.cleanup)

    -- Reading a big CA bundle (a `ca` not seen before) takes the call past a
    -- 1 ms budget: the hook is stopped right after the request started, and
    -- that request must be cancelled, not left to wake the dropped hook.
    it("cancels the request it started (the gateway lives on)", function()
        local ca = pki.ca("budget")
        local crt, key = ca:issue("srv", { "localhost" })
        local up = h.start_upstream { name = "b", tls = { cert = crt, key = key } }
        local gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { timeouts = { hook = 0.001 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("plain", { "127.0.0.1:{{UPC}}" })
gw.route { path = "/slow", upstream = "plain", policies = { function(req)
    gw.http.request { url = "https://localhost:{{UPP}}/x", ca = "{{BUNDLE}}", timeout = 5 }
end } }
gw.route { path = "/**", upstream = "plain" }
]], { workers = 1, vars = { UPP = up.port, UPC = up.control_port,
                            BUNDLE = "/etc/ssl/certs/ca-certificates.crt" } })
        assert.equal(500, h.http(gw.port, { path = "/slow" }).status)
        -- the request would have ended (and woken the hook) within this
        h.sleep(0.5 * h.SLOW)
        gw:assert_alive()
        assert.equal(200, h.http(gw.port, { path = "/after" }).status)
        assert.truthy(gw:log():find("hook exceeded its time budget", 1, true))
    end)
end)

describe("upstream.tls in the config", function()
    teardown(h.cleanup)

    it("moongate check warns about verify = false", function()
        local code, out = h.check_config([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.upstream("api", { "localhost:8443" }, { tls = { verify = false } })
gw.route { path = "/**", upstream = "api" }
]])
        assert.equal(0, code, out)
        assert.matches("check.lua:3: warning: upstream api: tls.verify = false", out, 1, true)
    end)

    it("refuses a missing CA file, half a client certificate, bad values and mixed targets",
       function()
        local function check(upstream)
            local code, out = h.check_config('local gw = require "moongate"\n' ..
                "gw.listen { port = 8080 }\n" .. upstream .. "\n" ..
                'gw.route { path = "/**", upstream = "api" }\n')
            assert.equal(1, code, out)
            return out
        end
        assert.matches('check.lua:3: upstream api: tls: cannot load the CA bundle ' ..
                       '\'/nonexistent/ca.pem\'', check(
            'gw.upstream("api", { "localhost:8443" }, { tls = { ca = "/nonexistent/ca.pem" } })'),
            1, true)
        assert.matches("upstream.tls.key is missing", check(
            'gw.upstream("api", { "localhost:8443" }, { tls = { cert = "/x.pem" } })'), 1, true)
        assert.matches("upstream.tls.verify must be true or false", check(
            'gw.upstream("api", { "localhost:8443" }, { tls = { verify = "no" } })'), 1, true)
        assert.matches("upstream.tls must be true or a table", check(
            'gw.upstream("api", { "localhost:8443" }, { tls = "yes" })'), 1, true)
        assert.matches("unknown key 'verfy' in upstream.tls", check(
            'gw.upstream("api", { "localhost:8443" }, { tls = { verfy = false } })'), 1, true)
        assert.matches('upstream.tls.min_version must be "TLSv1.2" or "TLSv1.3"', check(
            'gw.upstream("api", { "localhost:8443" }, { tls = { min_version = "SSLv3" } })'),
            1, true)
        assert.matches("mixes https:// targets with plain ones", check(
            'gw.upstream("api", { "https://a:8443", "b:8080" })'), 1, true)
    end)

    it("refuses a client key that does not belong to its certificate", function()
        local ca = pki.ca("keys")
        local crt = ca:issue("one", { "gateway" }, { client = true })
        local _, other_key = ca:issue("two", { "gateway" }, { client = true })
        local code, out = h.check_config(fmt([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.upstream("api", { "localhost:8443" }, { tls = { ca = "%s", cert = "%s", key = "%s" } })
gw.route { path = "/**", upstream = "api" }
]], ca.crt, crt, other_key))
        assert.equal(1, code, out)
        assert.matches("check.lua:3: upstream api: tls: cannot use the client key", out, 1, true)
    end)
end)
