-- moongate.mtls and req.tls.client under the testing kit: the fields come
-- from C (src/cert_info.c) reading a PEM the test gives, as on a listener.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local t = require "moongate.testing"
local mtls = require "moongate.mtls"

local function sh(cmd)
    local p = io.popen(cmd .. " 2>&1; echo rc=$?")
    local out = p:read("a")
    p:close()
    assert(out:find("rc=0", 1, true), out)
    return out
end

local dir = sh("mktemp -d /tmp/moongate-mtls.XXXXXX"):match("^(%S+)")
local function cert(tag, subj, uri)
    sh(("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " ..
        "-days 1 -subj '%s' -addext 'subjectAltName=URI:%s' -set_serial 0x%s -keyout %s.key " ..
        "-out %s.pem"):format(dir, subj, uri, tag == "a" and "A1" or "B2", tag, tag))
    local f = assert(io.open(dir .. "/" .. tag .. ".pem"))
    local pem = f:read("a")
    f:close()
    return pem
end

describe("req.tls.client in the testing kit", function()
    local a = cert("a", "/O=Acme/CN=svc-a", "spiffe://acme.test/svc/a")
    local b = cert("b", "/O=Acme/CN=svc-b", "spiffe://acme.test/svc/b")
    local g = assert(t.load("spec/fixtures/testing/mtls.lua"))
    teardown(function() os.execute("rm -rf " .. dir) end)

    it("reads the fields of the PEM given", function()
        local d = g:request { path = "/info", tls = { client = a } }
        assert.equal("CN=svc-a,O=Acme", d.json.subject)
        assert.same({ "spiffe://acme.test/svc/a" }, d.json.uri)
        assert.equal("A1", d.json.serial)
        assert.is_true(d.json.verified)
        assert.equal(a, d.json.pem)
        assert.is_true(g:request { path = "/info", tls = true }.json.none)
    end)

    it("runs mtls.policy: allowed, forbidden, missing", function()
        local d = g:request { path = "/a/1", tls = { client = a },
                              headers = { ["x-client-cert"] = "forged" } }
        assert.equal(200, d.status)
        local fwd = d.upstream_request.headers["x-client-cert"]
        assert.equal(a, (fwd:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)))
        assert.equal(403, g:request { path = "/a/1", tls = { client = b } }.status)
        assert.equal(401, g:request { path = "/a/1", tls = true }.status)
        assert.equal(401, g:request { path = "/a/1" }.status)
    end)

    it("refuses a request whose client is not a PEM", function()
        assert.has_error(function() g:request { path = "/info", tls = { client = "junk" } } end)
    end)
end)

describe("mtls.policy options", function()
    it("are checked when the config loads", function()
        assert.has_error(function() mtls.policy {} end,
                         nil) -- allow is required
        local ok, e = pcall(mtls.policy, { allow = { san_url = "x" } })
        assert.is_false(ok)
        assert.truthy(tostring(e):find("did you mean 'san_uri'", 1, true), e)
        ok, e = pcall(mtls.policy, { allow = { subject = "CN=a" },
                                     forward = { header = "X-C", format = "der" } })
        assert.is_false(ok)
        assert.truthy(tostring(e):find('format must be "pem" or "xfcc"', 1, true), e)
    end)
end)
