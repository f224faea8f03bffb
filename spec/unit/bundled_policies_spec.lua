-- spec/unit/bundled_policies_spec.lua: the bundled policies (key_auth,
-- basic_auth, acl, cors, ip, headers, redirect, maintenance) through the
-- testing kit (moongate.testing): configs loaded with the gateway's own
-- router and checks, requests decided without sockets, and the options
-- each refuses at load, with the config's file:line.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local t = require "moongate.testing"
local h = require "spec.support.helpers"

local fmt = string.format

-- A config file of the given body (the policies required as locals);
-- returns its path.
local HEAD = [[
local gw = require "moongate"
local key_auth = require "moongate.key_auth"
local basic_auth = require "moongate.basic_auth"
local acl = require "moongate.acl"
local cors = require "moongate.cors"
local ip = require "moongate.ip"
local headers = require "moongate.headers"
local redirect = require "moongate.redirect"
local maintenance = require "moongate.maintenance"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
]]
local NHEAD = select(2, HEAD:gsub("\n", ""))

local function config(body, dir)
    local path = (dir or h.tmpdir()) .. "/gateway.lua"
    h.write_file(path, HEAD .. body)
    return path
end

local function load(body, dir)
    local path = config(body, dir)
    local g, errs = t.load(path)
    assert(g, errs and table.concat(errs, "\n"))
    return g
end

-- The load errors of body, without the path ("LINE: reason", line counted
-- in body).
local function errors(body, dir)
    local path = config(body, dir)
    local g, errs = t.load(path)
    assert.is_nil(g, "the config loaded")
    local out = {}
    for i, e in ipairs(errs) do
        local line, msg = e:match("^.-gateway%.lua:(%d+): (.*)$")
        assert(line, e)
        out[i] = (tonumber(line) - NHEAD) .. ": " .. msg
    end
    return out
end

local function hash(s)
    return require("moongate.key_auth").hash(s)
end

describe("key_auth", function()
    local g = load(fmt([[
gw.route { path = "/k/**", upstream = "up", policies = {
    key_auth.policy { query = "apikey", consumers = {
        { name = "shop", groups = { "partners" }, keys = { %q, %q } },
        { name = "blog", keys = { %q } } } } } }
gw.route { path = "/keep/**", upstream = "up", policies = {
    key_auth.policy { header = "X-Key", hide_credentials = false,
                      consumers = { { name = "shop", keys = { %q } } } } } }
]], hash("k-shop-1"), hash("k-shop-2"), hash("k-blog"), hash("k-shop-1")))

    it("hashes as sha256sum does", function()
        assert.equal("2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
                     hash("foo"))
    end)

    it("lets a known key through, with the consumer in req.ctx, the key not sent on", function()
        local d = g:request { path = "/k/1", headers = { ["X-Api-Key"] = "k-shop-2" } }
        assert.equal(200, d.status)
        assert.is_nil(d.upstream_request.headers["x-api-key"])
        local trace = d.trace[#d.trace]
        assert.truthy(table.concat(trace.changes, "\n"):find('ctx.consumer', 1, true))
    end)

    it("takes the key from the query argument and removes it", function()
        local d = g:request { path = "/k/1?a=1&apikey=k-blog&b=2" }
        assert.equal(200, d.status)
        assert.equal("/k/1?a=1&b=2", d.upstream_request.uri)
        assert.equal("/k/1", g:request { path = "/k/1?apikey=k-blog" }.upstream_request.uri)
        assert.equal("/k/1?b=1", g:request { path = "/k/1?b=1&api%6bey=k-blog" }.upstream_request.uri)
    end)

    it("keeps the header when hide_credentials = false", function()
        local d = g:request { path = "/keep/1", headers = { ["X-Key"] = "k-shop-1" } }
        assert.equal(200, d.status)
        assert.equal("k-shop-1", d.upstream_request.headers["x-key"])
    end)

    it("answers 401 with WWW-Authenticate without a key or with a wrong one", function()
        local d = g:request { path = "/k/1" }
        assert.equal(401, d.status)
        assert.equal("ApiKey", d.headers["www-authenticate"])
        assert.equal("missing API key", d.json.error)
        assert.is_nil(d.upstream_request)
        d = g:request { path = "/k/1", headers = { ["X-Api-Key"] = "k-shop-3" } }
        assert.equal(401, d.status)
        assert.equal("invalid API key", d.json.error)
        -- the hash is what is known, never the key: a digest is no key
        d = g:request { path = "/k/1", headers = { ["X-Api-Key"] = hash("k-blog") } }
        assert.equal(401, d.status)
    end)

    it("names each key's consumer again and again, past the keys it keeps (1024)", function()
        -- key_auth keeps keys it found valid by the key string; with more
        -- keys than it keeps it starts over: every key still finds its own
        -- consumer, an unknown one still none
        local many = load([[
local list = {}
for i = 1, 1100 do
    list[i] = { name = "c" .. i, keys = { key_auth.hash("k-" .. i) } }
end
gw.route { path = "/m/**", upstream = "up", policies = {
    key_auth.policy { consumers = list },
    function(req) req:set_header("X-Consumer", req.ctx.consumer.name) end } }
]])
        for round = 1, 2 do
            for i = 1, 1100, round == 1 and 1 or 7 do
                local d = many:request { path = "/m/1", headers = { ["X-Api-Key"] = "k-" .. i } }
                assert.equal(200, d.status)
                assert.equal("c" .. i, d.upstream_request.headers["x-consumer"])
            end
            assert.equal(401, many:request { path = "/m/1",
                                             headers = { ["X-Api-Key"] = "k-1101" } }.status)
        end
    end)

    it("refuses a key given twice, in any two places, and says how to send it", function()
        for _, spec in ipairs {
            { path = "/k/1?apikey=k-blog", headers = { ["X-Api-Key"] = "k-blog" } },
            { path = "/k/1?apikey=k-blog&apikey=k-blog" },
            { path = "/k/1?api%6Bey=k-shop-1&apikey=k-blog" },
            { path = "/k/1", headers = { ["X-Api-Key"] = { "k-blog", "k-shop-1" } } },
        } do
            local d = g:request(spec)
            assert.equal(400, d.status, spec.path)
            assert.equal("API key sent more than once", d.json.error)
            assert.matches("the X%-Api%-Key header or the apikey query argument", d.json.hint)
            assert.is_nil(d.upstream_request)
        end
    end)

    it("unit-tests the policy on a fake request", function()
        local ka = require "moongate.key_auth"
        local p = ka.policy { consumers = { { name = "a", keys = { hash("x") } } } }
        local req = t.fake_request { path = "/", headers = { ["X-Api-Key"] = "x" } }
        local r = t.call(p.on_request, req, p)
        assert.is_falsy(r.responded)
        assert.equal("a", req.ctx.consumer.name)
    end)

    it("reads a key file, reporting a broken line with its file and line", function()
        local dir = h.tmpdir()
        h.write_file(dir .. "/keys.txt", "# consumers\n\nops:" .. hash("k-ops") ..
                     ":staff,oncall\n")
        local g2 = load([[
gw.route { path = "/**", upstream = "up", policies = {
    key_auth.policy { file = "keys.txt" } } }
]], dir)
        assert.equal(200, g2:request { path = "/", headers = { ["X-Api-Key"] = "k-ops" } }.status)
        h.write_file(dir .. "/keys.txt", "ops:" .. hash("k-ops") .. "\nops-without-hash\n")
        local errs = errors([[
gw.route { path = "/**", upstream = "up", policies = {
    key_auth.policy { file = "keys.txt" } } }
]], dir)
        assert.equal(1, #errs)
        assert.matches('^2: key_auth.policy.file: .*/keys.txt:2: a line is "consumer:sha256"', errs[1])
    end)

    it("refuses plain keys and bad options at load, every one at its line", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = {
    key_auth.policy { consumers = { { name = "x", keys = { "plain-key" } } } } } }
gw.route { path = "/b", upstream = "up", policies = {
    key_auth.policy { header = false } } }
gw.route { path = "/c", upstream = "up", policies = {
    key_auth.policy { hedaer = "X", consumers = {} } } }
]])
        -- (no "consumers, file or redis is required" beside the unknown
        -- key: it may be a typo of one of them)
        assert.equal(3, #errs)
        assert.matches("^2: key_auth.policy.consumers%[1%].keys%[1%] must be the SHA%-256 of " ..
                       "the key as 64 hex digits %(printf %%s \"%$KEY\" | sha256sum%), got 9 " ..
                       "characters %(a plain key%? keys are stored hashed%)", errs[1])
        assert.matches("^4: key_auth.policy.header = false needs query", errs[2])
        assert.matches("^6: unknown key 'hedaer' in key_auth.policy %(did you mean 'header'%?", errs[3])
    end)
end)

describe("basic_auth", function()
    local dir = h.tmpdir()
    local function crypt(pw, method)
        if method == "bcrypt" then
            return h.sh(fmt([[python3 -W ignore -c "import crypt; print(crypt.crypt('%s', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"]], pw)):match("%S+")
        end
        return h.sh(fmt("openssl passwd -%s %s", method, pw)):match("%S+")
    end
    local bc = crypt("pw-alice", "bcrypt")
    h.write_file(dir .. "/users", "# htpasswd\nalice:" .. bc:gsub("^%$2b", "$2y") ..
                 "\nbob:" .. crypt("pw-bob", "6") .. "\ncarol:" .. crypt("pw-carol", "5") .. "\n")
    local g = load([[
gw.route { path = "/**", upstream = "up", policies = {
    basic_auth.policy { file = "users", realm = "ops", groups = { admins = { "alice" } } },
    acl.policy { allow = { "admins" } } } }
gw.route { path = "/open/**", upstream = "up", policies = {
    basic_auth.policy { file = "users" } } }
]], dir)
    local function auth(up) return "Basic " .. h.sh("printf %s '" .. up .. "' | base64 -w0") end

    it("verifies bcrypt ($2y$), SHA-512 and SHA-256 crypt hashes", function()
        assert.equal(200, g:request { path = "/", headers = { Authorization = auth("alice:pw-alice") } }.status)
        assert.equal(200, g:request { path = "/open/", headers = { Authorization = auth("bob:pw-bob") } }.status)
        assert.equal(200, g:request { path = "/open/", headers = { Authorization = auth("carol:pw-carol") } }.status)
    end)

    it("answers 401 with WWW-Authenticate: Basic for no, wrong or malformed credentials", function()
        for _, a in ipairs { false, auth("alice:nope"), auth("nobody:pw-bob"), "Basic !!!!",
                             "Basic " .. h.sh("printf alice | base64 -w0"), "Bearer x" } do
            local d = g:request { path = "/open/", headers = { Authorization = a or nil } }
            assert.equal(401, d.status, tostring(a))
            assert.equal('Basic realm="moongate", charset="UTF-8"', d.headers["www-authenticate"])
        end
    end)

    it("does not send the credentials upstream; the user is req.ctx.consumer (acl uses its groups)", function()
        local d = g:request { path = "/open/", headers = { Authorization = auth("bob:pw-bob") } }
        assert.is_nil(d.upstream_request.headers.authorization)
        -- bob is not in admins
        assert.equal(403, g:request { path = "/", headers = { Authorization = auth("bob:pw-bob") } }.status)
    end)

    it("refuses a broken htpasswd line at load with the file's line", function()
        h.write_file(dir .. "/bad", "dave:$apr1$abc$defghijklmnopqrstuvwx\n\nerin\nfrank:hunter2\n" ..
                     "gus:$2y$10$tooshort\nhal:$2y$12$" .. ("a"):rep(53) .. "\n")
        local errs = errors('gw.route { path = "/**", upstream = "up", policies = {\n' ..
                            '    basic_auth.policy { file = "bad" } } }\n', dir)
        assert.equal(5, #errs)
        assert.matches('^2: basic_auth.policy.file: .*/bad:1: user "dave": MD5 hashes are refused', errs[1])
        assert.matches('^2: basic_auth.policy.file: .*/bad:6: user "hal": bcrypt cost 12 takes ~200 ms ' ..
                       'of the worker per check, over the hook budget: make the line again with ' ..
                       '`htpasswd %-B %-C 10`', errs[5])
        assert.matches('^2: basic_auth.policy.file: .*/bad:3: a line is "user:hash"', errs[2])
        assert.matches('^2: basic_auth.policy.file: .*/bad:4: user "frank": not a bcrypt', errs[3])
        assert.matches('^2: basic_auth.policy.file: .*/bad:5: user "gus": a bcrypt hash is 60 characters', errs[4])
    end)
end)

describe("acl", function()
    local g = load(fmt([[
local ka = key_auth.policy { consumers = {
    { name = "p", groups = { "partners" }, keys = { %q } },
    { name = "b", groups = { "partners", "banned" }, keys = { %q } } } }
gw.route { path = "/allow", upstream = "up", policies = { ka, acl.policy { allow = { "partners" } } } }
gw.route { path = "/deny", upstream = "up", policies = { ka, acl.policy { deny = { "banned" } } } }
gw.route { path = "/claim", upstream = "up", policies = {
    function(req) req.ctx.jwt = { scope = "read write", realm_access = { roles = { "admin" } } } end,
    acl.policy { claim = "scope", allow = { "write" } },
    acl.policy { claim = "realm_access.roles", allow = { "admin" } } } }
gw.route { path = "/claim-no", upstream = "up", policies = {
    function(req) req.ctx.jwt = { scope = "read" } end,
    acl.policy { claim = "scope", allow = { "write" } } } }
gw.route { path = "/nobody", upstream = "up", policies = { acl.policy { allow = { "x" } } } }
]], hash("kp"), hash("kb")))
    local function get(path, key)
        return g:request { path = path, headers = { ["X-Api-Key"] = key } }.status
    end

    it("allows and denies by consumer group", function()
        assert.equal(200, get("/allow", "kp"))
        assert.equal(200, get("/deny", "kp"))
        assert.equal(403, get("/deny", "kb"))
    end)

    it("allows by a JWT claim: a space-separated string, a nested array", function()
        assert.equal(200, get("/claim"))
        assert.equal(403, get("/claim-no"))
    end)

    it("refuses a request no policy identified", function()
        assert.equal(403, get("/nobody"))
    end)

    it("needs a list at load", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = { acl.policy { claim = "a..b", allow = "x" } } }
gw.route { path = "/b", upstream = "up", policies = { acl.policy { } } }
]])
        assert.same({ "1: acl.policy.claim must be a claim name (dotted for a nested one: " ..
                      '"realm_access.roles"), got string "a..b"',
                      "2: acl.policy.allow or deny is required (a list of groups, roles or " ..
                      "claim values)" }, errs)
    end)
end)

describe("cors", function()
    local g = load([[
gw.route { path = "/c/**", upstream = "up", policies = {
    cors.policy { origins = { "https://app.example.com", "https://*.example.org" },
                  credentials = true, max_age = 600, headers = { "X-Api-Key", "Content-Type" },
                  expose_headers = { "X-Request-Id" } } } }
gw.route { path = "/any/**", upstream = "up", policies = {
    cors.policy { origins = { "*" } } } }
]])
    local function preflight(path, origin, method, hdrs)
        return g:request { method = "OPTIONS", path = path, headers = {
            Origin = origin, ["Access-Control-Request-Method"] = method,
            ["Access-Control-Request-Headers"] = hdrs } }
    end

    it("answers an allowed preflight itself: 204 and the Allow headers", function()
        local d = preflight("/c/x", "https://app.example.com", "PUT", "x-api-key, content-type")
        assert.equal(204, d.status)
        assert.equal("policy 1 (cors)", d.responded_by)
        assert.is_nil(d.upstream_request)
        assert.equal("https://app.example.com", d.headers["access-control-allow-origin"])
        assert.equal("true", d.headers["access-control-allow-credentials"])
        assert.equal("GET, HEAD, POST, PUT, PATCH, DELETE", d.headers["access-control-allow-methods"])
        assert.equal("X-Api-Key, Content-Type", d.headers["access-control-allow-headers"])
        assert.equal("600", d.headers["access-control-max-age"])
        assert.matches("^Origin", d.headers.vary)
    end)

    it("refuses a preflight for another origin, method or header, without Allow headers", function()
        for _, d in ipairs {
            preflight("/c/x", "https://evil.example", "GET"),
            preflight("/c/x", "https://app.example.com", "TRACE"),
            preflight("/c/x", "https://app.example.com", "GET", "x-evil"),
        } do
            assert.equal(403, d.status)
            assert.is_nil(d.headers["access-control-allow-origin"])
            assert.is_nil(d.upstream_request)
        end
    end)

    it("matches a pattern on whole labels", function()
        assert.equal(204, preflight("/c/x", "https://a.b.example.org", "GET").status)
        assert.equal(403, preflight("/c/x", "https://example.org", "GET").status)
        assert.equal(403, preflight("/c/x", "https://evil.com/.example.org", "GET").status)
        assert.equal(403, preflight("/c/x", "https://evilexample.org", "GET").status)
    end)

    it("adds Allow-Origin to an allowed origin's answer and Vary: Origin to every answer", function()
        local d = g:request { path = "/c/x", headers = { Origin = "https://app.example.com" } }
        assert.equal(200, d.status)
        assert.equal("https://app.example.com", d.headers["access-control-allow-origin"])
        assert.equal("X-Request-Id", d.headers["access-control-expose-headers"])
        assert.equal("Origin", d.headers.vary)
        d = g:request { path = "/c/x" }
        assert.is_nil(d.headers["access-control-allow-origin"])
        assert.equal("Origin", d.headers.vary)
        -- the upstream's own Vary is kept, Origin added beside it (named
        -- twice when it is there already: a list, the same meaning)
        d = g:request { path = "/c/x", headers = { Origin = "https://app.example.com" },
                        upstream_response = { status = 200, headers = { Vary = "Accept-Encoding" } } }
        assert.same({ "Accept-Encoding", "Origin" }, d.headers.vary)
        d = g:request { path = "/c/x", headers = { Origin = "https://app.example.com" },
                        upstream_response = { status = 200, headers = { Vary = "accept, origin" } } }
        assert.same({ "accept, origin", "Origin" }, d.headers.vary)
        -- decided in on_request: the policy runs no response phase
        assert.is_nil(require("moongate.cors").policy {
            origins = { "https://app.example.com" } }.on_response)
    end)

    it("never echoes a malformed Origin", function()
        for _, o in ipairs { "https://app.example.com/x", "https://app.example.com, https://x.example.org",
                             "null", "https://a..example.org", "https://app.example.com:99999",
                             "app.example.com", "https://a.example.org:1/" } do
            local d = g:request { path = "/c/x", headers = { Origin = o } }
            assert.equal(200, d.status)
            assert.is_nil(d.headers["access-control-allow-origin"], o)
            assert.equal(403, preflight("/c/x", o, "GET").status, o)
        end
        local d = g:request { path = "/c/x", headers = { { "Origin", "https://app.example.com" },
                                                         { "Origin", "https://app.example.com" } } }
        assert.is_nil(d.headers["access-control-allow-origin"])
    end)

    it("answers '*' without Vary when any origin is allowed without credentials", function()
        local d = g:request { path = "/any/x", headers = { Origin = "https://x.test" } }
        assert.equal("*", d.headers["access-control-allow-origin"])
        assert.is_nil(d.headers.vary)
    end)

    it("refuses what browsers would refuse, at load", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = { cors.policy { origins = { "*" }, credentials = true } } }
gw.route { path = "/b", upstream = "up", policies = { cors.policy { origins = { "https://A.example/", "https://x.*.com" } } } }
]])
        assert.same({ '1: cors.policy.credentials = true with origins "*": browsers refuse that; list the origins',
                      '2: cors.policy.origins[1] "https://A.example/" is not an origin: scheme://host[:port], ' ..
                      'lower case, no path (e.g. "https://app.example.com")',
                      '2: cors.policy.origins[2] "https://x.*.com": a pattern is scheme://*.domain ("*." first, once)' },
                    errs)
    end)
end)

describe("ip", function()
    local g = load([[
gw.route { path = "/i/**", upstream = "up", policies = {
    ip.policy { allow = { "10.0.0.0/8", "2001:db8::/32" }, deny = { "10.6.6.0/24" } } } }
]])
    local function status(client) return g:request { path = "/i/x", client = client }.status end

    it("allows the allow list but the deny list, IPv4 and IPv6", function()
        assert.equal(200, status("10.1.2.3"))
        assert.equal(403, status("10.6.6.7"))
        assert.equal(403, status("192.168.0.1"))
        assert.equal(200, status("2001:db8::1"))
        assert.equal(403, status("2001:db9::1"))
        assert.equal(200, status("::ffff:10.1.2.3"))
    end)

    it("refuses an invalid CIDR at load with the parser's reason", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = {
    ip.policy { allow = { "10.1.2.3/8", "300.0.0.1", "::/129" } } } }
gw.route { path = "/b", upstream = "up", policies = { ip.policy { } } }
]])
        assert.equal(4, #errs)
        assert.matches('^2: ip.policy.allow%[1%]: "10.1.2.3/8": .*did you mean 10.0.0.0/8', errs[1])
        assert.matches('^2: ip.policy.allow%[2%]: "300.0.0.1": not an IPv4 or IPv6 address', errs[2])
        assert.matches('^2: ip.policy.allow%[3%]: "::/129": ', errs[3])
        assert.equal("3: ip.policy.allow or deny is required (a list of CIDR ranges)", errs[4])
    end)

    it("holds 10,000 ranges", function()
        -- halves of /24s: nothing to merge, 10,000 ranges searched
        local list = {}
        for i = 0, 9999 do
            list[#list + 1] = fmt("10.%d.%d.0/25", math.floor(i / 256), i % 256)
        end
        local p = require("moongate.ip").policy { deny = list }
        assert.equal(10000, p.deny_count)
        for client, refused in pairs { ["10.0.0.1"] = true, ["10.0.0.128"] = false,
                                       ["10.39.15.127"] = true, ["10.39.15.200"] = false,
                                       ["10.39.16.1"] = false, ["10.20.30.64"] = true } do
            local req = t.fake_request { path = "/", client = client }
            local r = t.call(p.on_request, req, p)
            assert.equal(refused, r.responded == true, client)
        end
    end)
end)

describe("headers", function()
    local g = load(fmt([[
gw.route { path = "/h/**", upstream = "up", policies = {
    key_auth.policy { consumers = { { name = "shop", keys = { %q } } } },
    headers.policy {
        request = { set = { ["X-Consumer"] = "${ctx.consumer.name}@${client}",
                            ["X-Missing"] = "${ctx.nothing}", ["X-Dollar"] = "$$5 ${method}" },
                    add = { ["X-Via-Arg"] = "${arg.q}" },
                    remove = { "X-Debug" }, rename = { ["X-Old"] = "X-New" } },
        response = { set = { ["X-Status"] = "${status} ${route}" }, remove = { "Server" },
                     rename = { ["X-Up"] = "X-Upstream-Said" } } } } }
]], hash("k")))

    it("edits the request and the response, from templates", function()
        local d = g:request { path = "/h/x?q=a%20b", headers = { ["X-Api-Key"] = "k", ["X-Debug"] = "1",
                                                              ["X-Old"] = { "o1", "o2" } },
                              upstream_response = { status = 201, headers = { Server = "x", ["X-Up"] = "u" } } }
        local uh = d.upstream_request.headers
        assert.equal("shop@127.0.0.1", uh["x-consumer"])
        assert.equal("$5 GET", uh["x-dollar"])
        assert.equal("a b", uh["x-via-arg"])
        assert.is_nil(uh["x-missing"])
        assert.is_nil(uh["x-debug"])
        assert.is_nil(uh["x-old"])
        assert.same({ "o1", "o2" }, uh["x-new"])
        assert.equal("201 /h/**", d.headers["x-status"])
        assert.is_nil(d.headers.server)
        assert.equal("u", d.headers["x-upstream-said"])
    end)

    it("refuses bad templates and core-owned headers at load", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = { headers.policy {
    request = { set = { ["X-A"] = "${nope}", ["Content-Length"] = "1", ["X-B"] = "${status}" } } } } }
]])
        assert.equal(3, #errs)
        assert.matches("^1: headers.policy.request.set: 'Content%-Length' is not a header a policy may set", errs[1])
        assert.matches('^1: headers.policy.request.set%["X%-A"%]: unknown field %${nope}', errs[2])
        assert.matches('^1: headers.policy.request.set%["X%-B"%]: %${status} is only known in a response', errs[3])
    end)
end)

describe("redirect and maintenance", function()
    local g = load([[
gw.route { path = "/old/**", upstream = "up", policies = { redirect.policy { https = true, status = 308 } } }
gw.route { path = "/port/**", upstream = "up", policies = { redirect.policy { https = true, https_port = 8443 } } }
gw.route { path = "/to/:id", upstream = "up", policies = {
    redirect.policy { to = "https://new.example${path}?from=${host}", status = 302 } } }
gw.route { path = "/shop/**", upstream = "up", policies = {
    maintenance.policy { retry_after = 120, allow = { "10.0.0.0/8" } } } }
gw.route { path = "/off/**", upstream = "up", policies = { maintenance.policy { enabled = false } } }
]])

    it("redirects plain HTTP to HTTPS, keeping path and query, with the status asked", function()
        local d = g:request { path = "/old/a?b=1", host = "shop.example:8080" }
        assert.equal(308, d.status)
        assert.equal("https://shop.example/old/a?b=1", d.headers.location)
        assert.is_nil(d.upstream_request)
        assert.equal(200, g:request { path = "/old/a", tls = true }.status)
        assert.equal("https://localhost:8443/port/a", g:request { path = "/port/a" }.headers.location)
        assert.equal(301, g:request { path = "/port/a" }.status)
    end)

    it("redirects to a template", function()
        local d = g:request { path = "/to/7" }
        assert.equal(302, d.status)
        assert.equal("https://new.example/to/7?from=localhost", d.headers.location)
    end)

    it("answers 503 with Retry-After in maintenance, but to the allow list", function()
        local d = g:request { path = "/shop/x" }
        assert.equal(503, d.status)
        assert.equal("120", d.headers["retry-after"])
        assert.equal(200, g:request { path = "/shop/x", client = "10.2.3.4" }.status)
        assert.equal(200, g:request { path = "/off/x" }.status)
    end)

    it("refuses bad options at load", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = { redirect.policy { https = true, status = 300 } } }
gw.route { path = "/b", upstream = "up", policies = { redirect.policy { } } }
gw.route { path = "/c", upstream = "up", policies = { maintenance.policy { retry_after = "soon", allow = { "10.0.0.1/8" } } } }
]])
        assert.equal(4, #errs)
        assert.equal("1: redirect.policy.status must be 301, 302, 303, 307 or 308, got number 300", errs[1])
        assert.equal('2: redirect.policy.https = true or to = "<url template>" is required', errs[2])
        assert.matches('^3: maintenance.policy.retry_after must be seconds or an HTTP%-date', errs[3])
        assert.matches('^3: maintenance.policy.allow%[1%]: "10.0.0.1/8": ', errs[4])
    end)
end)
