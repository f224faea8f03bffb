-- The real client address behind load balancers (issue #14), with real
-- peers: HAProxy in front with send-proxy and send-proxy-v2 (also into a
-- TLS listener), nginx in front setting X-Forwarded-For, and clients with
-- distinct loopback source addresses (curl --interface 127.0.0.N, luasocket
-- bound to one). Only 127.0.0.1 (where HAProxy and nginx connect from) is
-- in trusted_proxies: every client address is untrusted.
local h = require "spec.support.helpers"
local socket = require "socket"
local cjson = require "cjson"

local CONFIG = [[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.settings { trusted_proxies = { "127.0.0.1", "::1" }, access_log = "{{LOG}}",
              timeouts = { header = 2, shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.listen { port = {{PORT2}}, host = "127.0.0.1", proxy_protocol = true }
gw.listen { port = {{PORT3}}, host = "127.0.0.1", proxy_protocol = true,
            tls = { certs = { { cert = "{{CRT}}", key = "{{KEY}}" } } } }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/who", upstream = "up", policies = { function(req)
    return gw.respond(200, { client = req.client, peer = req.peer,
                             unique_id = req:proxy_tlv(0x05) or false })
end } }
gw.route { path = "/who/tls", upstream = "up", policies = { function(req)
    return gw.respond(200, { client = req.client, authority = req:proxy_tlv(0x02),
                             version = req:proxy_tlv(0x21), cipher = req:proxy_tlv(0x23) })
end } }
-- per-client-address limits (the policy's default key: limit.key.client_ip)
gw.route { path = "/limited/v1", upstream = "up",
           policies = { limit.policy { rate = 2, per = 60, name = "v1" } } }
gw.route { path = "/limited/v2", upstream = "up",
           policies = { limit.policy { rate = 2, per = 60, name = "v2" } } }
gw.route { path = "/limited/xff", upstream = "up",
           policies = { limit.policy { rate = 2, per = 60, name = "xff" } } }
gw.route { path = "/limited/direct", upstream = "up",
           policies = { limit.policy { rate = 2, per = 60, name = "direct" } } }
gw.route { path = "/**", upstream = "up" }
]]

local HAPROXY = [[
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v1
    bind 127.0.0.1:{{HP1}}
    default_backend b1
frontend v2
    bind 127.0.0.1:{{HP2}}
    unique-id-format id-%ci
    default_backend b2
frontend tls
    bind 127.0.0.1:{{HP3}}
    default_backend b3
frontend tlsterm
    bind 127.0.0.1:{{HP4}} ssl crt {{PEM}}
    default_backend b4
backend b1
    server gw 127.0.0.1:{{GW2}} send-proxy
backend b2
    server gw 127.0.0.1:{{GW2}} send-proxy-v2 proxy-v2-options unique-id
backend b3
    server gw 127.0.0.1:{{GW3}} send-proxy-v2
backend b4
    server gw 127.0.0.1:{{GW2}} send-proxy-v2 proxy-v2-options ssl,ssl-cipher,authority
]]

local NGINX = [[
daemon off;
master_process off;
pid {{TMP}}/nginx.pid;
error_log {{TMP}}/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{TMP}}/nginx-body;
    proxy_temp_path {{TMP}}/nginx-proxy;
    fastcgi_temp_path {{TMP}}/nginx-fastcgi;
    uwsgi_temp_path {{TMP}}/nginx-uwsgi;
    scgi_temp_path {{TMP}}/nginx-scgi;
    server {
        listen 127.0.0.1:{{NG}};
        location / {
            proxy_pass http://127.0.0.1:{{GW}};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
    }
}
]]

local function subst(text, vars)
    return (text:gsub("{{(%w+)}}", function(k)
        return assert(vars[k], k) and tostring(vars[k])
    end))
end

local function wait_port(port, proc)
    local deadline = socket.gettime() + 10 * h.SLOW
    while socket.gettime() < deadline do
        local c = h.try_connect(port)
        if c then
            c.sock:close()
            return
        end
        assert(proc:alive(), proc.label .. " exited:\n" .. proc:log())
        socket.sleep(0.05)
    end
    error(proc.label .. " did not listen on " .. port .. ":\n" .. proc:log())
end

-- curl from source address `src`; returns the status and the body.
local function curl(url, src, extra)
    local body = h.tmpfile("curl.out")
    local out = h.sh(("curl -sk -o %s -w '%%{http_code}' --max-time %d --interface %s %s %s")
        :format(h.shq(body), 10 * h.SLOW, src, extra or "", h.shq(url)))
    local f = io.open(body)
    local b = f and f:read("*a") or ""
    if f then f:close() end
    return tonumber(out:match("(%d+)%s*$")), b
end

-- A raw connection from source address src to the gateway's port.
local function connect_from(src, port)
    local s = socket.tcp()
    assert(s:bind(src, 0))
    s:settimeout(5 * h.SLOW)
    assert(s:connect("127.0.0.1", port))
    return s
end

-- Everything the peer sends until it closes (or the deadline).
local function read_all(s, timeout)
    s:settimeout(timeout)
    local data, err, partial = s:receive("*a")
    s:close()
    return data or partial, err
end

local GET_WHO = "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

describe("the real client address", function()
    local gw, up, log, haproxy, nginx, ports

    local function log_lines()
        local f = io.open(log)
        local t = {}
        if f then
            for line in f:lines() do
                local ok, v = pcall(cjson.decode, line)
                if ok then t[#t + 1] = v end
            end
            f:close()
        end
        return t
    end

    -- polls the access log for a line of that path and client
    local function logged(path, client)
        local deadline = socket.gettime() + 10 * h.SLOW
        repeat
            for _, l in ipairs(log_lines()) do
                if l.path == path and l.client == client then return l end
            end
            socket.sleep(0.05)
        until socket.gettime() > deadline
        error("no access log line for " .. path .. " from " .. client)
    end

    setup(function()
        local dir = h.tmpdir()
        local crt, key = dir .. "/rip.pem", dir .. "/rip.key"
        local out = h.sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
            "-nodes -days 2 -subj /CN=localhost -keyout %s -out %s 2>&1; echo rc=$?")
            :format(h.shq(key), h.shq(crt)))
        assert(out:find("rc=0", 1, true), out)
        up = h.start_upstream { name = "up" }
        log = h.tmpfile("access.log")
        gw = h.start_gateway(CONFIG, { ports = 3,
            vars = { UP = up, LOG = log, CRT = crt, KEY = key } })
        ports = { GW = gw.ports[1], GW2 = gw.ports[2], GW3 = gw.ports[3],
                  HP1 = h.free_port(), HP2 = h.free_port(), HP3 = h.free_port(),
                  HP4 = h.free_port(), NG = h.free_port(), TMP = dir, PEM = dir .. "/rip-all.pem" }
        h.sh(("cat %s %s > %s"):format(h.shq(crt), h.shq(key), h.shq(ports.PEM)))
        local hcfg = h.tmpfile("haproxy.cfg", subst(HAPROXY, ports))
        haproxy = h.spawn("exec haproxy -db -f " .. h.shq(hcfg), "haproxy")
        local ncfg = h.tmpfile("nginx.conf", subst(NGINX, ports))
        nginx = h.spawn("exec nginx -p " .. h.shq(dir) .. " -c " .. h.shq(ncfg), "nginx")
        wait_port(ports.HP1, haproxy)
        wait_port(ports.HP2, haproxy)
        wait_port(ports.HP3, haproxy)
        wait_port(ports.HP4, haproxy)
        wait_port(ports.NG, nginx)
    end)

    teardown(h.cleanup)

    local function limited(url, a, b)
        local got = {}
        for i = 1, 3 do got[i] = curl(url, a) end
        assert.same({ 200, 200, 429 }, got)
        -- another client has its own budget
        assert.equal(200, (curl(url, b)))
    end

    it("HAProxy send-proxy (v1): each real client is limited separately", function()
        local url = "http://127.0.0.1:" .. ports.HP1
        limited(url .. "/limited/v1", "127.0.0.2", "127.0.0.3")
        local status, body = curl(url .. "/who", "127.0.0.2")
        assert.equal(200, status)
        assert.same({ client = "127.0.0.2", peer = "127.0.0.1", unique_id = false },
                    cjson.decode(body))
        local line = logged("/limited/v1", "127.0.0.3")
        assert.equal("127.0.0.1", line.peer)
        assert.equal(200, line.status)
        -- each worker writes its own lines: poll until the 429 is there
        local refused, deadline = 0, socket.gettime() + 10 * h.SLOW
        repeat
            refused = 0
            for _, l in ipairs(log_lines()) do
                if l.path == "/limited/v1" and l.client == "127.0.0.2" and l.status == 429 then
                    refused = refused + 1
                end
            end
            if refused == 0 then socket.sleep(0.05) end
        until refused > 0 or socket.gettime() > deadline
        assert.equal(1, refused)
    end)

    it("HAProxy send-proxy-v2: each real client is limited separately, TLVs readable", function()
        local url = "http://127.0.0.1:" .. ports.HP2
        limited(url .. "/limited/v2", "127.0.0.4", "127.0.0.5")
        local status, body = curl(url .. "/who", "127.0.0.4")
        assert.equal(200, status)
        assert.same({ client = "127.0.0.4", peer = "127.0.0.1", unique_id = "id-127.0.0.4" },
                    cjson.decode(body))
        assert.equal("127.0.0.1", logged("/limited/v2", "127.0.0.5").peer)
        -- upstream: the X-Forwarded-For hop is the PROXY header's client
        local _, seen = curl(url .. "/up", "127.0.0.4")
        assert.equal("127.0.0.4", cjson.decode(seen).headers["x-forwarded-for"])
    end)

    it("HAProxy send-proxy-v2 into a TLS listener: the header is read before TLS", function()
        local status, body = curl("https://127.0.0.1:" .. ports.HP3 .. "/who", "127.0.0.6")
        assert.equal(200, status)
        local who = cjson.decode(body)
        assert.equal("127.0.0.6", who.client)
        assert.equal("127.0.0.1", who.peer)
    end)

    it("HAProxy terminating TLS: the v2 SSL and authority TLVs reach the hooks", function()
        local status, body = curl("https://localhost:" .. ports.HP4 .. "/who/tls", "127.0.0.12",
                                  "--resolve localhost:" .. ports.HP4 .. ":127.0.0.1")
        assert.equal(200, status)
        local who = cjson.decode(body)
        assert.equal("127.0.0.12", who.client)
        assert.equal("localhost", who.authority)
        assert.truthy(tostring(who.version):find("^TLSv1%.[23]$"), tostring(who.version))
        assert.truthy(#tostring(who.cipher) > 4, tostring(who.cipher))
    end)

    it("nginx setting X-Forwarded-For: each real client is limited separately", function()
        local url = "http://127.0.0.1:" .. ports.NG
        limited(url .. "/limited/xff", "127.0.0.7", "127.0.0.8")
        local line = logged("/limited/xff", "127.0.0.8")
        assert.equal("127.0.0.1", line.peer)
        -- a client's own X-Forwarded-For, which nginx passes on with the
        -- client appended, changes nothing: the first untrusted hop counts
        local status, body = curl(url .. "/who", "127.0.0.7", "-H 'X-Forwarded-For: 127.0.0.1'")
        assert.equal(200, status)
        assert.same({ client = "127.0.0.7", peer = "127.0.0.1", unique_id = false },
                    cjson.decode(body))
        assert.equal(429, (curl(url .. "/limited/xff", "127.0.0.7",
                                "-H 'X-Forwarded-For: 10.9.9.9'")))
        -- upstream: the trusted list, then the proxy
        local _, seen = curl(url .. "/up", "127.0.0.7", "-H 'X-Forwarded-For: 10.9.9.9'")
        assert.equal("10.9.9.9, 127.0.0.7, 127.0.0.1",
                     cjson.decode(seen).headers["x-forwarded-for"])
    end)

    it("a spoofed X-Forwarded-For from an untrusted peer changes nothing", function()
        local url = "http://127.0.0.1:" .. ports.GW
        local status, body = curl(url .. "/who", "127.0.0.9", "-H 'X-Forwarded-For: 1.2.3.4'")
        assert.equal(200, status)
        assert.same({ client = "127.0.0.9", peer = "127.0.0.9", unique_id = false },
                    cjson.decode(body))
        local got = {}
        for i = 1, 3 do
            got[i] = curl(url .. "/limited/direct", "127.0.0.9",
                          "-H 'X-Forwarded-For: 10.0.0." .. i .. "'")
        end
        assert.same({ 200, 200, 429 }, got)
        -- and it is not passed on upstream as if it were a proxy's
        local _, seen = curl(url .. "/up", "127.0.0.9", "-H 'X-Forwarded-For: 1.2.3.4'")
        assert.equal("127.0.0.9", cjson.decode(seen).headers["x-forwarded-for"])
        assert.equal("127.0.0.9", logged("/who", "127.0.0.9").peer)
    end)

    it("refuses a PROXY header from an untrusted peer, and logs it", function()
        local s = connect_from("127.0.0.10", ports.GW2)
        s:send("PROXY TCP4 1.2.3.4 127.0.0.1 5555 80\r\n" .. GET_WHO)
        local data = read_all(s, 10 * h.SLOW)
        assert.equal("", data)
        local deadline = socket.gettime() + 10 * h.SLOW
        while not gw:log():find("connection from 127.0.0.10 refused", 1, true) do
            assert(socket.gettime() < deadline, "no log line about 127.0.0.10")
            socket.sleep(0.05)
        end
    end)

    it("keeps the socket's address for a v2 LOCAL header", function()
        local s = connect_from("127.0.0.1", ports.GW2)
        s:send("\r\n\r\n\0\r\nQUIT\n\32\0\0\0" .. GET_WHO)
        local data = read_all(s, 10 * h.SLOW)
        assert.truthy(data:find("^HTTP/1.1 200"), data)
        local who = cjson.decode(data:match("\r\n\r\n(.*)$"))
        assert.equal("127.0.0.1", who.client)
        assert.equal("127.0.0.1", who.peer)
    end)

    it("reads Forwarded (RFC 7239) or X-Real-IP when real_ip_header says so", function()
        local function who_behind(header, lines)
            local g = h.start_gateway(([[
local gw = require "moongate"
gw.settings { trusted_proxies = { "127.0.0.1" }, real_ip_header = "%s", access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.route { path = "/who", handler = function(req)
    return 200, { client = req.client, peer = req.peer }
end }
]]):format(header))
            local s = connect_from("127.0.0.1", g.port)
            s:send("GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" .. lines .. "\r\n")
            local data = read_all(s, 10 * h.SLOW)
            h.cleanup(g)
            assert.truthy(data:find("^HTTP/1.1 200"), data)
            return cjson.decode(data:match("\r\n\r\n(.*)$"))
        end
        assert.same({ client = "2001:db8::1", peer = "127.0.0.1" }, who_behind("Forwarded",
            "Forwarded: for=192.0.2.60;proto=http\r\n" ..
            "Forwarded: for=\"[2001:db8::1]:443\", for=127.0.0.1\r\n"))
        assert.same({ client = "192.0.2.7", peer = "127.0.0.1" }, who_behind("X-Real-IP",
            "X-Real-IP: 192.0.2.7\r\nX-Forwarded-For: 192.0.2.99\r\n"))
    end)

    describe("closes cleanly on a bad PROXY header", function()
        local function closed_without_answer(bytes, what)
            local s = connect_from("127.0.0.1", ports.GW2)
            s:send(bytes)
            local data, err = read_all(s, 10 * h.SLOW)
            assert.equal("", data, what)
            -- closed, not timed out (a reset if bytes were left unread)
            assert.truthy(err == "closed" or err == "connection reset by peer", what .. ": " ..
                          tostring(err))
        end

        it("garbage, HTTP without the header, a wrong v2 signature", function()
            closed_without_answer("hello there\r\n", "garbage")
            closed_without_answer(GET_WHO, "plain HTTP")
            closed_without_answer("\r\n\r\n\0\r\nQUIT\n\33\17\0\12" .. ("\0"):rep(12),
                                  "a bad v2 length for its family")
            closed_without_answer("PROXY TCP4 1.2.3.4 127.0.0.1 05 80\r\n" .. GET_WHO,
                                  "a port with a leading zero")
        end)

        it("an oversized v1 line", function()
            closed_without_answer("PROXY TCP4 " .. ("1"):rep(200) .. "\r\n", "long line")
        end)

        it("a truncated header the sender gives up on", function()
            local s = connect_from("127.0.0.1", ports.GW2)
            s:send("PROXY TCP4 1.2.3.4 127.0.0.1")
            s:shutdown("send")
            local data = read_all(s, 10 * h.SLOW)
            assert.equal("", data)
        end)

        it("a slow header: closed after timeouts.header", function()
            local s = connect_from("127.0.0.1", ports.GW2)
            local t0 = socket.gettime()
            s:send("PROXY TCP4 1.2.3.4 ")
            local data, err = read_all(s, 30 * h.SLOW)
            assert.equal("", data)
            assert.equal("closed", err)
            assert.is_true(socket.gettime() - t0 >= 1.5) -- header = 2 s
        end)

        it("and the gateway serves on", function()
            local status, body = curl("http://127.0.0.1:" .. ports.HP1 .. "/who", "127.0.0.11")
            assert.equal(200, status)
            assert.equal("127.0.0.11", cjson.decode(body).client)
            gw:assert_alive()
        end)
    end)
end)
