-- Client certificates on TLS listeners (mTLS): a CA, client certificates
-- and a CRL made with the openssl command in the spec's temp dir; curl as
-- the client; a real upstream that echoes what it received.
local h = require "spec.support.helpers"

local fmt = string.format

local function run(script)
    local out = h.sh("set -e; " .. script .. " 2>&1; echo rc=$?")
    assert(out:find("rc=0", 1, true), out)
    return out
end

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

local function make_ca(dir, name)
    run(fmt("cd %s && openssl req -x509 %s -days 2 -subj %s -keyout %s.key -out %s.pem " ..
            "-addext basicConstraints=critical,CA:TRUE " ..
            "-addext keyUsage=critical,keyCertSign,cRLSign", h.shq(dir), EC,
            h.shq("/O=Spec/CN=" .. name), name, name))
end

-- a client certificate `tag` signed by CA `ca`, with the given SANs
local function make_client(dir, ca, tag, subj, san, serial)
    local f = io.open(dir .. "/" .. tag .. ".ext", "w")
    f:write("subjectAltName=" .. san .. "\nextendedKeyUsage=clientAuth\n")
    f:close()
    run(fmt("cd %s && openssl req %s -subj %s -keyout %s.key -out %s.csr && " ..
            "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -set_serial %s -days 2 " ..
            "-extfile %s.ext -out %s.pem", h.shq(dir), EC, h.shq(subj), tag, tag, tag, ca, ca,
            serial, tag, tag))
end

-- openssl's own reading of a certificate, for comparison
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
local function iso(d) -- "Dec  2 05:41:37 2026 GMT"
    local mon, day, time, year = d:match("^(%a+)%s+(%d+) (%d+:%d+:%d+) (%d+) GMT$")
    return fmt("%s-%02d-%02dT%sZ", year, MONTHS[mon], tonumber(day), time)
end
local function openssl_fields(pem)
    local out = run("openssl x509 -in " .. h.shq(pem) .. " -noout -subject -issuer -serial " ..
                    "-fingerprint -sha256 -dates -ext subjectAltName -nameopt RFC2253")
    local t = { dns = {}, uri = {}, email = {} }
    t.subject = out:match("subject=([^\n]*)")
    t.issuer = out:match("issuer=([^\n]*)")
    t.serial = out:match("serial=(%x+)")
    t.fingerprint = out:match("sha256 Fingerprint=([%x:]+)"):gsub(":", ""):lower()
    t.not_before = iso(out:match("notBefore=([^\n]*)"))
    t.not_after = iso(out:match("notAfter=([^\n]*)"))
    local sans = out:match("Subject Alternative Name:%s*\n%s*([^\n]*)")
    for kind, v in sans:gmatch("(%a+):([^,]+)") do
        local key = ({ DNS = "dns", URI = "uri", email = "email" })[kind]
        table.insert(t[key], v)
    end
    return t
end

describe("client certificates (mTLS)", function()
    local dir, gw, up

    -- curl over TLS to `port`; with cert = tag, that client certificate
    local function curl(port, path, cert, headers)
        local args = { "curl -s --max-time 10 --cacert", h.shq(dir .. "/srv.pem") }
        if cert then
            args[#args + 1] = fmt("--cert %s --key %s", h.shq(dir .. "/" .. cert .. ".pem"),
                                  h.shq(dir .. "/" .. cert .. ".key"))
        end
        for _, hd in ipairs(headers or {}) do args[#args + 1] = "-H " .. h.shq(hd) end
        args[#args + 1] = fmt("-w '\\n%%{http_code}' https://127.0.0.1:%d%s", port, path)
        local out = h.sh(table.concat(args, " ") .. " 2>/dev/null")
        local body, code = out:match("^(.-)\n?(%d%d%d)$")
        return tonumber(code), body -- 0: no HTTP answer (the handshake failed)
    end

    setup(function()
        dir = h.tmpdir() .. "/mtls"
        run("mkdir -p " .. h.shq(dir))
        make_ca(dir, "ca")
        make_ca(dir, "other")
        run(fmt("cd %s && openssl req -x509 %s -days 2 -subj /CN=localhost " ..
                "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout srv.key " ..
                "-out srv.pem", h.shq(dir), EC))
        make_client(dir, "ca", "a", "/O=Acme/CN=svc-a",
                    "URI:spiffe://acme.test/svc/a,DNS:a.acme.test,DNS:a2.acme.test," ..
                    "email:a@acme.test", "0x1001")
        make_client(dir, "ca", "b", "/O=Acme/CN=svc-b", "URI:spiffe://acme.test/svc/b", "0x1002")
        make_client(dir, "ca", "revoked", "/O=Acme/CN=gone", "URI:spiffe://acme.test/svc/a",
                    "0x1003")
        make_client(dir, "other", "stranger", "/O=Evil/CN=svc-a",
                    "URI:spiffe://acme.test/svc/a", "0x1001")
        local f = io.open(dir .. "/ca.cnf", "w")
        f:write("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n" ..
                "default_md = sha256\ndefault_crl_days = 2\n")
        f:close()
        run(fmt("cd %s && : > index.txt && echo 01 > crlnumber && " ..
                "openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -revoke revoked.pem " ..
                "-batch && openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -gencrl " ..
                "-out crl.pem", h.shq(dir)))
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway([[
local gw = require "moongate"
local mtls = require "moongate.mtls"
gw.settings { workers = 1 }
gw.listen { port = {{PORT}}, host = "127.0.0.1", tls = { cert = "{{D}}/srv.pem",
    key = "{{D}}/srv.key", client_ca = "{{D}}/ca.pem", crl = "{{D}}/crl.pem" } }
gw.listen { port = {{PORT2}}, host = "127.0.0.1", tls = { cert = "{{D}}/srv.pem",
    key = "{{D}}/srv.key", client_ca = "{{D}}/ca.pem", client_auth = "optional" } }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/info", upstream = "up", policies = { function(req)
    local c = req.tls.client
    if not c then return gw.respond(200, { none = true }) end
    return gw.respond(200, { verified = c.verified, subject = c.subject, issuer = c.issuer,
        serial = c.serial, fingerprint = c.fingerprint, not_before = c.not_before,
        not_after = c.not_after, dns = c.dns, uri = c.uri, email = c.email, pem = c.pem() })
end } }
gw.route { path = "/a/**", upstream = "up", policies = {
    mtls.policy { allow = { san_uri = "spiffe://acme.test/svc/a" },
                  forward = { header = "X-Client-Cert" } } } }
gw.route { path = "/xfcc/**", upstream = "up", policies = {
    mtls.forward { header = "X-Forwarded-Client-Cert", format = "xfcc" } } }
gw.route { path = "/**", upstream = "up" }
]], { ports = 2, vars = { D = dir, UP = up } })
    end)

    teardown(h.cleanup)

    it("refuses a client without a certificate on a client_auth = require listener", function()
        assert.equal(0, curl(gw.port, "/info"))
        assert.equal(200, (curl(gw.port, "/info", "a")))
    end)

    it("refuses a certificate from another CA, on both listeners", function()
        assert.equal(0, curl(gw.port, "/info", "stranger"))
        assert.equal(0, curl(gw.ports[2], "/info", "stranger"))
    end)

    it("refuses a revoked certificate when a CRL is given", function()
        assert.equal(0, curl(gw.port, "/info", "revoked"))
        -- the optional listener has no CRL: the same certificate passes
        assert.equal(200, (curl(gw.ports[2], "/info", "revoked")))
    end)

    it("gives req.tls.client fields that match openssl x509's", function()
        local code, body = curl(gw.port, "/info", "a")
        assert.equal(200, code)
        local got, want = h.json(body), openssl_fields(dir .. "/a.pem")
        assert.is_true(got.verified)
        for _, k in ipairs { "subject", "issuer", "serial", "fingerprint", "not_before",
                             "not_after" } do
            assert.equal(want[k], got[k], k)
        end
        assert.same({ "a.acme.test", "a2.acme.test" }, want.dns)
        assert.same(want.dns, got.dns)
        assert.same(want.uri, got.uri)
        assert.same(want.email, got.email)
        assert.equal(io.open(dir .. "/a.pem"):read("a"), got.pem)
    end)

    it("lets the optional listener through without a certificate, for the hooks to decide",
       function()
        local code, body = curl(gw.ports[2], "/info")
        assert.equal(200, code)
        assert.is_true(h.json(body).none)
        -- the policy answers 401 when there is none
        code, body = curl(gw.ports[2], "/a/x")
        assert.equal(401, code)
        assert.equal("client_certificate_required", h.json(body).error)
    end)

    it("mtls.policy allows one SPIFFE id and refuses another with 403", function()
        local code = curl(gw.ports[2], "/a/x", "a")
        assert.equal(200, code)
        local body
        code, body = curl(gw.ports[2], "/a/x", "b")
        assert.equal(403, code)
        assert.equal("client_certificate_forbidden", h.json(body).error)
        assert.equal(403, (curl(gw.port, "/a/x", "b")))
    end)

    it("forwards the certificate upstream URL-encoded, dropping a client's own header",
       function()
        local code, body = curl(gw.port, "/a/x", "a", { "X-Client-Cert: forged" })
        assert.equal(200, code)
        local seen = h.json(body).headers["x-client-cert"]
        assert.is_string(seen)
        local decoded = seen:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
        assert.equal(io.open(dir .. "/a.pem"):read("a"), decoded)
        assert.is_nil(seen:find("forged", 1, true))
    end)

    it("forwards Envoy's X-Forwarded-Client-Cert form", function()
        local code, body = curl(gw.ports[2], "/xfcc/x", "a",
                                { "X-Forwarded-Client-Cert: Hash=forged" })
        assert.equal(200, code)
        local seen = h.json(body).headers["x-forwarded-client-cert"]
        local want = openssl_fields(dir .. "/a.pem")
        assert.equal("Hash=" .. want.fingerprint, seen:match("^Hash=%x+"))
        assert.truthy(seen:find(';Subject="CN=svc-a,O=Acme"', 1, true))
        assert.truthy(seen:find(";URI=spiffe://acme.test/svc/a", 1, true))
        local cert = seen:match('Cert="([^"]*)"')
        local decoded = cert:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
        assert.equal(io.open(dir .. "/a.pem"):read("a"), decoded)
        -- without a certificate the forged header is still gone
        code, body = curl(gw.ports[2], "/xfcc/x", nil, { "X-Forwarded-Client-Cert: Hash=forged" })
        assert.equal(200, code)
        assert.is_nil(h.json(body).headers["x-forwarded-client-cert"])
    end)

    it("refuses broken client certificate settings with file:line and the fix", function()
        local function check(tls)
            return h.check_config(fmt([[
local gw = require "moongate"
gw.listen { port = 8443, tls = { cert = "%s/srv.pem", key = "%s/srv.key", %s } }
gw.route { path = "/", handler = function() return 200, "ok" end }
]], dir, dir, tls))
        end
        local code, out = check('client_auth = "sometimes", client_ca = "' .. dir .. '/ca.pem"')
        assert.equal(1, code)
        assert.truthy(out:find(':2: listen.tls.client_auth must be "require" or "optional"', 1,
                               true), out)
        code, out = check('crl = "' .. dir .. '/crl.pem"')
        assert.equal(1, code)
        assert.truthy(out:find(":2: listen.tls.crl needs client_ca", 1, true), out)
        code, out = check('client_ca = "' .. dir .. '/missing.pem"')
        assert.equal(1, code)
        assert.truthy(out:find(":2: listen.tls: cannot read client_ca '" .. dir ..
                               "/missing.pem': No such file or directory", 1, true), out)
        code, out = check('client_ca = "' .. dir .. '/ca.pem", crl = "' .. dir .. '/a.key"')
        assert.equal(1, code)
        assert.truthy(out:find(":2: listen.tls: cannot load crl", 1, true), out)
    end)
end)
