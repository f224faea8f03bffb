-- Specs for the config schema's named modes (src/config.c ENUM fields):
-- config.lua checks and normalises them with the C module's own parser
-- (settings.log_level: src/errlog.c, escaped_slashes: src/uri.c), and the
-- route fields' defaults come from the same table.
-- Run from the repository root with MG_TEST_LIB=build/libmgtest.so.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local config = require "moongate.config"
local cdefs = require "moongate.cdefs"

local function load_text(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write('local gw = require "moongate"\n', text)
    f:close()
    local cfg, errs = config.load(path)
    os.remove(path)
    return cfg, errs
end

local UP = 'gw.upstream("u", { "127.0.0.1:1" })\n'

describe("config schema: named modes", function()
    it("normalises log_level aliases to errlog.c's names", function()
        for written, level in pairs({ warning = "warn", err = "error", alert = "crit",
                                      emerg = "crit", debug = "debug" }) do
            local cfg = assert(load_text(('gw.settings { log_level = %q }\n'):format(written)
                .. 'gw.listen { port = 8080 }\n'))
            assert.equal(level, cfg.log_level)
        end
        local cfg = assert(load_text('gw.listen { port = 8080 }\n'))
        assert.equal("info", cfg.log_level)
    end)

    it("keeps each escaped_slashes mode on listeners and routes", function()
        for _, mode in ipairs({ "reject", "decode", "redirect", "keep" }) do
            local cfg = assert(load_text(('gw.listen { port = 8080, escaped_slashes = %q }\n')
                :format(mode) .. UP ..
                ('gw.route { path = "/a", upstream = "u", escaped_slashes = %q }\n'):format(mode)))
            assert.equal(mode, cfg.listeners[1].escaped_slashes)
            assert.equal(mode, cfg.routes[1].escaped_slashes)
        end
    end)

    it("gives a listener reject and a route none (the listener's) by default", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { path = "/a", upstream = "u" }\n'))
        assert.equal("reject", cfg.listeners[1].escaped_slashes)
        assert.is_nil(cfg.routes[1].escaped_slashes)
    end)

    it("refuses a mode name with a NUL in it", function()
        local cfg, errs = load_text('gw.listen { port = 8080, escaped_slashes = "keep\\0" }\n')
        assert.is_nil(cfg)
        assert.truthy(errs[1]:find('listen.escaped_slashes must be "reject", "decode", ' ..
            '"redirect" or "keep", got', 1, true))
    end)

    it("keeps an upstream's protocol (h1 by default; src/http.c's names)", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.upstream("g", { "127.0.0.1:2" }, { protocol = "grpc" })\n' ..
            'gw.upstream("h", { "127.0.0.1:3" }, { protocol = "h2" })\n'))
        assert.same({ "h1", "grpc", "h2" }, { cfg.upstreams[1].protocol,
            cfg.upstreams[2].protocol, cfg.upstreams[3].protocol })
        local _, errs = load_text('gw.listen { port = 8080 }\n' ..
            'gw.upstream("g", { "127.0.0.1:2" }, { protocol = "http2" })\n')
        assert.truthy(errs[1]:find(':3: upstream.protocol must be "h1", "h2" or "grpc", ' ..
            'got string "http2"', 1, true), errs[1])
    end)

    it("makes route.grpc the route's path and method (src/grpc.c checks the names)", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { grpc = { service = "pkg.v1.Svc", method = "Get" }, upstream = "u" }\n' ..
            'gw.route { grpc = { service = "pkg.v1.Svc" }, upstream = "u" }\n'))
        local a, b = cfg.routes[1], cfg.routes[2]
        assert.same({ "/pkg.v1.Svc/Get", { "POST" }, { service = "pkg.v1.Svc", method = "Get" } },
                    { a.path, a.methods, a.grpc })
        assert.same({ "/pkg.v1.Svc/", { "POST" } }, { b.path, b.methods })
        local _, errs = load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { grpc = { service = "pkg..Svc" }, upstream = "u" }\n')
        assert.truthy(errs[1]:find("route.grpc.service must be a gRPC service name", 1, true),
                      errs[1])
    end)
end)

describe("config schema: route fields", function()
    it("declares route.listen 1-65535 with C's 'any port' 0 as its default", function()
        local listen
        for _, f in ipairs(cdefs.config_fields("route")) do
            if f.name == "listen" then listen = f end
        end
        assert.same({ 1, 65535, 0 }, { listen.min, listen.max, listen.def })
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { path = "/a", upstream = "u" }\n'))
        assert.equal(0, cfg.routes[1].listen)
    end)
end)

describe("config schema: strings", function()
    it("gives settings.admin its host default and keeps a token of 16 bytes", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n'))
        assert.equal("127.0.0.1", cfg.admin.host)
        assert.is_nil(cfg.admin.token)
        cfg = assert(load_text('gw.settings { admin = { token = "0123456789abcdef" } }\n' ..
            'gw.listen { port = 8080 }\n'))
        assert.equal("0123456789abcdef", cfg.admin.token)
        local _, errs = load_text('gw.settings { admin = { token = "0123456789abcde" } }\n' ..
            'gw.listen { port = 8080 }\n')
        assert.truthy(errs[1]:find("settings.admin.token must be a string of at least " ..
            "16 characters, got", 1, true))
    end)
end)

local function field_of(object, name)
    for _, f in ipairs(cdefs.config_fields(object)) do
        if f.name == name then return f end
    end
end

describe("config schema: host syntax (src/uri.c mg_ffi_host_kind)", function()
    local C = cdefs.C
    local function kind(s) return C.mg_ffi_host_kind(s, #s) end

    it("reads addresses as inet_pton does and names per RFC 1123", function()
        for s, k in pairs({ ["127.0.0.1"] = cdefs.HOST_IPV4, ["::1"] = cdefs.HOST_IPV6,
                            ["::ffff:10.0.0.1"] = cdefs.HOST_IPV6,
                            ["api.example.com"] = cdefs.HOST_NAME,
                            ["api.example.com."] = cdefs.HOST_NAME,
                            ["orders_db"] = cdefs.HOST_NAME, ["1-2.example"] = cdefs.HOST_NAME,
                            ["300.1.1.1"] = cdefs.HOST_BAD, ["1.2.3"] = cdefs.HOST_BAD,
                            ["010.0.0.1"] = cdefs.HOST_BAD, ["1:2:3"] = cdefs.HOST_BAD,
                            ["[::1]"] = cdefs.HOST_BAD, ["a..b"] = cdefs.HOST_BAD,
                            ["-a.b"] = cdefs.HOST_BAD, ["a-.b"] = cdefs.HOST_BAD,
                            ["a b"] = cdefs.HOST_BAD, [""] = cdefs.HOST_BAD,
                            ["."] = cdefs.HOST_BAD, ["a\0b"] = cdefs.HOST_BAD,
                            [("a"):rep(64) .. ".b"] = cdefs.HOST_BAD,
                            [("a"):rep(63) .. ".b"] = cdefs.HOST_NAME,
                            [("abc."):rep(64)] = cdefs.HOST_BAD }) do
            assert.equal(k, kind(s), s)
        end
    end)

    it("gives listen.host, targets and route hosts the same grammar", function()
        local cfg = assert(load_text('gw.listen { port = 8080, host = "[::1]" }\n' ..
            'gw.listen { port = 8081, host = "gw_1.internal" }\n' ..
            'gw.upstream("u", { "orders_db:80", "[::1]:81" })\n' ..
            'gw.route { path = "/a", upstream = "u", host = "Orders_DB.Example" }\n' ..
            'gw.route { path = "/b", upstream = "u", host = "*.Example.COM" }\n' ..
            'gw.route { path = "/c", upstream = "u", host = "[::1]" }\n' ..
            'gw.route { path = "/d", upstream = "u", host = "::1" }\n'))
        assert.equal("::1", cfg.listeners[1].host)
        assert.equal("gw_1.internal", cfg.listeners[2].host)
        assert.equal("orders_db", cfg.upstreams[1].targets[1].host)
        assert.equal("::1", cfg.upstreams[1].targets[2].host)
        assert.equal("orders_db.example", cfg.routes[1].host)
        assert.equal("*.example.com", cfg.routes[2].host)
        assert.equal("[::1]", cfg.routes[3].host)
        assert.equal("[::1]", cfg.routes[4].host) -- as the Host header writes it
        local _, errs = load_text('gw.listen { port = 8080, host = "[gw.internal]" }\n' ..
            'gw.listen { port = 8081, host = "010.0.0.1" }\n' ..
            'gw.upstream("u", { "1:2:3:80" })\n' ..
            'gw.route { path = "/a", upstream = "u", host = "*.1.2.3.4" }\n')
        assert.equal(4, #errs)
        assert.truthy(errs[1]:find(":2: listen.host must be an IP address or a host name", 1,
                                   true), errs[1])
        assert.truthy(errs[2]:find(":3: listen.host must be", 1, true), errs[2])
        assert.truthy(errs[3]:find("IPv6 addresses need [brackets]", 1, true), errs[3])
        assert.truthy(errs[4]:find(":5: route.host must be a host name", 1, true), errs[4])
    end)
end)

describe("config schema: strings checked by their module", function()
    it("declares the check with the field", function()
        assert.equal(cdefs.FIELD_STRING, field_of("listen", "host").kind)
        assert.is_function(field_of("listen", "host").check)
        assert.equal("0.0.0.0", field_of("listen", "host").def)
        assert.equal("stdout", field_of("access_log", "path").def)
        assert.equal("stderr", field_of("settings", "error_log").def)
    end)

    it("keeps log names and takes a relative log path from the config's directory",
       function()
        local cfg = assert(load_text('gw.settings { access_log = "logs/a.log", ' ..
            'error_log = "/var/log/e.log" }\ngw.listen { port = 8080 }\n'))
        local dir = cfg.file:match("^(.*/)")
        assert.equal(dir .. "logs/a.log", cfg.access_log.path)
        assert.equal("/var/log/e.log", cfg.error_log)
        for _, name in ipairs({ "off", "stdout", "stderr" }) do
            cfg = assert(load_text(('gw.settings { access_log = %q }\n'):format(name) ..
                'gw.listen { port = 8080 }\n'))
            assert.equal(name, cfg.access_log.path)
        end
        local _, errs = load_text('gw.settings { error_log = "off", access_log = "a\\0b" }\n' ..
            'gw.listen { port = 8080 }\n')
        assert.same({ 'settings.access_log must be "off", "stdout", "stderr" or a file ' ..
                          'path, got string "a\\0b"',
                      'settings.error_log must be "stderr" or a file path, got string "off"' },
                    { errs[1]:match(":2: (.*)"), errs[2]:match(":2: (.*)") })
    end)

    it("takes certificate paths from the config's directory", function()
        local cfg = assert(load_text('gw.listen { port = 8443, tls = { cert = "c.pem", ' ..
            'key = "/k.pem", min_version = "TLSv1.3" } }\n'))
        local dir = cfg.file:match("^(.*/)")
        assert.same({ { cert = dir .. "c.pem", key = "/k.pem" } }, cfg.listeners[1].tls.certs)
        assert.equal("TLSv1.3", cfg.listeners[1].tls.min_version)
    end)
end)

describe("config schema: nested tables and lists", function()
    it("declares listen.tls as a table whose certs are a list of tables", function()
        local tls = field_of("listen", "tls")
        assert.same({ cdefs.FIELD_OBJECT, "tls" }, { tls.kind, tls.object })
        local certs = field_of("tls", "certs")
        assert.same({ cdefs.FIELD_LIST, 1, 32, cdefs.FIELD_OBJECT, "tls_cert" },
                    { certs.kind, certs.min, certs.max, certs.item.kind, certs.item.object })
        local statuses = field_of("cache", "statuses")
        assert.same({ cdefs.FIELD_LIST, cdefs.FIELD_INT, 200, 599 },
                    { statuses.kind, statuses.item.kind, statuses.item.min, statuses.item.max })
        assert.equal(cdefs.FIELD_UNIQUE, bit.band(statuses.flags, cdefs.FIELD_UNIQUE))
    end)

    it("names a mistake inside a list of tables by its place", function()
        local _, errs = load_text('gw.listen { port = 8443, tls = { certs = { ' ..
            '{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", ky = "b.key" }, 7 } } }\n')
        assert.same({
            ":2: unknown key 'ky' in listen.tls.certs[2] (did you mean 'key'? valid: cert, key)",
            ":2: listen.tls.certs[2].key must be the path of a PEM file, got nil",
            ":2: listen.tls.certs[3] must be a table like { cert = \"certs/site.pem\", " ..
                "key = \"certs/site.key\" }, got number 7",
        }, { errs[1]:match("(:2: .*)"), errs[2]:match("(:2: .*)"), errs[3]:match("(:2: .*)") })
        local many = {}
        for i = 1, 33 do many[i] = ('{ cert = "%d.pem", key = "%d.key" }'):format(i, i) end
        _, errs = load_text('gw.listen { port = 8443, tls = { certs = { ' ..
            table.concat(many, ", ") .. ' } } }\n')
        assert.truthy(errs[1]:find(":2: listen.tls.certs holds 33 certificates; at most 32",
                                   1, true), errs[1])
    end)

    it("drops repeated list items once normalised and counts the rest", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { path = "/a", upstream = "u", cache = { statuses = { 200, 404, 200 },' ..
            ' vary = { "Accept", "accept", "X-Lang" } } }\n'))
        assert.same({ 200, 404 }, cfg.routes[1].cache.statuses)
        assert.same({ "accept", "x-lang" }, cfg.routes[1].cache.vary)
        local st = {}
        for i = 1, 17 do st[i] = tostring(199 + i) end
        local _, errs = load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { path = "/a", upstream = "u", cache = { statuses = { ' ..
            table.concat(st, ", ") .. ', 200 } } }\n')
        assert.same({ ":4: route.cache.statuses lists 17 statuses (at most 16)" },
                    { errs[1]:match("(:4: .*)") })
    end)

    it("judges a list whose items have no words of their own as a whole", function()
        local cfg = assert(load_text('gw.settings { admin = { names = { "gw1.internal" } } }\n' ..
            'gw.listen { port = 8080 }\n'))
        assert.same({ "gw1.internal" }, cfg.admin.names)
        assert.is_true(cfg.admin.enabled)
        for _, bad in ipairs({ '"gw1"', '{ "a", 2 }', '{ "a", x = "b" }' }) do
            local _, errs = load_text(('gw.settings { admin = { names = %s } }\n'):format(bad) ..
                'gw.listen { port = 8080 }\n')
            assert.equal(1, #errs)
            assert.truthy(errs[1]:find(":2: settings.admin.names must be a list of host " ..
                "names like { \"gw1.internal\" }, got", 1, true), errs[1])
        end
    end)

    it("reports a required field of a nested table that is absent", function()
        local _, errs = load_text('gw.listen { port = 8080 }\n' ..
            'gw.upstream("u", { "127.0.0.1:1" }, { health = { interval = 1 } })\n')
        assert.same({ ':3: upstream.health.path must be a path like "/health" (no spaces), ' ..
                      "got nil" }, { errs[1]:match("(:3: .*)") })
    end)
end)

describe("config schema: moongate.redis options", function()
    local redis = require "moongate.redis"

    it("checks a client's host with the config's host grammar and its numbers by the table",
       function()
        assert.equal("::1", redis.new("[::1]:6379").host)
        assert.equal("127.0.0.1", redis.new({}).host)
        assert.equal(0.2, redis.new({}).timeout)
        local ok, e = pcall(redis.new, { host = "a b" })
        assert.is_false(ok)
        assert.truthy(tostring(e):find('redis.new.host must be an address or host name, ' ..
                                       'got string "a b"', 1, true), e)
        ok, e = pcall(redis.new, { pool = 65 })
        assert.truthy(tostring(e):find("redis.new.pool must be an integer 1-64, got number 65",
                                       1, true), e)
        ok, e = pcall(redis.new, { timeout = 0 })
        assert.truthy(tostring(e):find("redis.new.timeout must be a number of seconds > 0, " ..
                                       "got number 0", 1, true), e)
    end)
end)

describe("config schema: positional values (MG_FIELD_INTERNAL)", function()
    it("declares them without making them keys the user may write", function()
        local name = field_of("shared_dict", "name")
        assert.equal(cdefs.FIELD_INTERNAL, bit.band(name.flags, cdefs.FIELD_INTERNAL))
        local _, errs = load_text('gw.listen { port = 8080 }\n' ..
            'gw.shared_dict("ok", { size = "1m", name = "x" })\n' ..
            'gw.shared_dict("a b", { size = "1m" })\n' ..
            'gw.upstream("", { "127.0.0.1:1" })\n')
        assert.same({
            ":3: unknown key 'name' in gw.shared_dict options (valid: size)",
            ":4: shared_dict name must be 1-64 letters, digits, '_', '-' or '.', " ..
                'got string "a b"',
            ':5: upstream name must be a non-empty string, got string ""',
        }, { errs[1]:match("(:3: .*)"), errs[2]:match("(:4: .*)"), errs[3]:match("(:5: .*)") })
    end)

    it("gives route.cache.dict and the rate limiter the dictionary name rule", function()
        local _, errs = load_text('gw.listen { port = 8080 }\n' .. UP ..
            'gw.route { path = "/a", upstream = "u", cache = { dict = "a b" } }\n')
        assert.truthy(errs[1]:find(':4: route.cache.dict must be a shared dict name, ' ..
                                   'got string "a b"', 1, true), errs[1])
        local limit = require "moongate.ratelimit"
        local ok, e = pcall(limit.new, { rate = 1, dict = "a/b" })
        assert.is_false(ok)
        assert.truthy(tostring(e):find("dict must be a shared dict name", 1, true), e)
    end)
end)

describe("config schema: retries, outlier and route timeouts", function()
    it("fills in the defaults of config.c's tables, times in ms", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' ..
            'gw.upstream("u", { "127.0.0.1:1" }, { retries = {}, outlier = {} })\n' ..
            'gw.route { path = "/a", upstream = "u", timeouts = { total = 1.5 } }\n'))
        local u = cfg.upstreams[1]
        assert.same({ attempts = 2, on = { "connect", "reset", "502", "503" },
                      per_try_timeout = 0, backoff = { base = 25, max = 250, jitter = true },
                      budget = 0.2, min_retries = 3, non_idempotent = false, body = 65536 },
                    u.retries)
        assert.same({ consecutive_5xx = 5, consecutive_gateway_failures = 3, latency_factor = 0,
                      base_ejection_time = 10000, max_ejection_time = 300000,
                      max_ejection_percent = 50 }, u.outlier)
        assert.same({ connect = 0, first_byte = 0, idle = 0, total = 1500 }, cfg.routes[1].timeouts)
    end)

    it("knows retries.on's names from C (mg_ffi_retry_on_parse)", function()
        for i, name in ipairs { "connect", "reset", "timeout", "502", "503", "504" } do
            assert.equal(2 ^ (i - 1), cdefs.C.mg_ffi_retry_on_parse(name))
        end
        assert.equal(-1, cdefs.C.mg_ffi_retry_on_parse("500"))
        local _, errs = load_text('gw.listen { port = 8080 }\n' ..
            'gw.upstream("u", { "127.0.0.1:1" }, { retries = { on = { "connect", "5xx" } } })\n')
        assert.truthy(errs[1]:find(':3: upstream.retries.on must be a list of "connect"', 1, true),
                      errs[1])
    end)
end)

describe("config schema: HTTP/2", function()
    it("gives listen.http2 on to TLS listeners, off to plain ones, and keeps what is written", function()
        local cfg = assert(load_text('gw.listen { port = 8080 }\n' ..
            'gw.listen { port = 8081, http2 = true }\n'))
        assert.is_false(cfg.listeners[1].http2)
        assert.is_true(cfg.listeners[2].http2)
        local _, errs = load_text('gw.listen { port = 8080, http2 = "yes" }\n')
        assert.truthy(errs[1]:find('listen.http2 must be true or false, got string "yes"', 1, true),
                      errs[1])
    end)

    it("takes settings.http2 sizes, counts and times with their defaults", function()
        local cfg = assert(load_text('gw.settings { http2 = { initial_window = "32k", ' ..
            'max_resets = 50, rate_window = 2.5 } }\ngw.listen { port = 8080 }\n'))
        assert.same({ max_concurrent_streams = 100, initial_window = 32768,
                      connection_window = 1048576, max_resets = 50, max_control_frames = 1000,
                      rate_window = 2500 }, cfg.http2)
    end)

    it("refuses what no SETTINGS frame can say", function()
        local _, errs = load_text('gw.settings { http2 = { initial_window = "4g", ' ..
            'max_concurrent_streams = 0, connection_window = 100 } }\ngw.listen { port = 8080 }\n')
        local all = table.concat(errs, "\n")
        assert.truthy(all:find("settings.http2.max_concurrent_streams must be an integer " ..
                               "1-1000000, got number 0", 1, true), all)
        assert.truthy(all:find("settings.http2.initial_window must be at most 2147483647 bytes",
                               1, true), all)
        assert.truthy(all:find("settings.http2.connection_window must be at least 65535 bytes",
                               1, true), all)
        _, errs = load_text('gw.settings { http2 = { max_reset = 1 } }\ngw.listen { port = 8080 }\n')
        assert.truthy(errs[1]:find("unknown key 'max_reset' in settings.http2 (did you mean " ..
                                   "'max_resets'?", 1, true), errs[1])
    end)
end)

describe("config schema: route split, canary and mirror", function()
    local UPS = 'gw.listen { port = 8080 }\n' ..
        'gw.upstream("v1", { "127.0.0.1:1" })\ngw.upstream("v2", { "127.0.0.1:2" })\n' ..
        'gw.upstream("shadow", { "127.0.0.1:3" })\n'

    it("normalises them with config.c's defaults, upstreams as indices", function()
        local cfg = assert(load_text(UPS ..
            'gw.route { path = "/a", split = { { upstream = "v1", weight = 9 }, ' ..
            '{ upstream = "v2" }, key = { header = "X-User" } },\n' ..
            '  canary = { header = "X-Canary", value = "1", upstream = "v2" }, mirror = "shadow" }\n' ..
            'gw.route { path = "/b", upstream = "v1", canary = { cookie = "beta", upstream = "v2" },\n' ..
            '  mirror = { upstream = "shadow", body = "1k", concurrency = 4, timeout = 0.5, percent = 12.5 } }\n'))
        local a, b = cfg.routes[1], cfg.routes[2]
        assert.is_nil(a.upstream)
        assert.same({ { upstream = 1, weight = 9 }, { upstream = 2, weight = 1 },
                      key = { on = "header", name = "x-user" } }, a.split)
        assert.same({ header = "x-canary", value = "1", upstream = 2 }, a.canary)
        assert.same({ upstream = 3, body = 65536, concurrency = 32, timeout = 10000, percent = 100 },
                    a.mirror)
        assert.same({ cookie = "beta", upstream = 2 }, b.canary)
        assert.same({ upstream = 3, body = 1024, concurrency = 4, timeout = 500, percent = 12.5 },
                    b.mirror)
    end)

    it("says what is wrong with each, at its line", function()
        local cases = {
            { 'split = { { upstream = "v1" } }', "route.split lists 1 upstream: it takes 2-64" },
            { 'split = { { upstream = "v1" }, { upstream = "v9" } }',
              'route.split[2].upstream "v9" is not declared (did you mean \'v1\'?' },
            { 'split = { { upstream = "v1", weight = 0 }, { upstream = "v2", weight = 0 } }',
              "route.split's weights add up to 0" },
            { 'split = { { upstream = "v1", weight = -1 }, { upstream = "v2" } }',
              "route.split[1].weight must be an integer 0-1000000, got number -1" },
            { 'split = { { upstream = "v1" }, { upstream = "v1" } }',
              'route.split[2].upstream "v1" is listed twice' },
            { 'split = { { upstream = "v1" }, { upstream = "v2" }, key = function() end }',
              'route.split.key must be "client", "path", { header = NAME }, { cookie = NAME } ' ..
              "or { query = NAME }, got function" },
            { 'split = { { upstream = "v1" }, { upstream = "v2" }, by = "x" }',
              "unknown key 'by' in route.split" },
            { 'upstream = "v1", split = { { upstream = "v1" }, { upstream = "v2" } }',
              "route needs exactly one of upstream, split or handler, got split and upstream" },
            { 'upstream = "v1", canary = { upstream = "v2" }',
              "route.canary needs exactly one of header or cookie (what marks a canary " ..
              "request), got neither" },
            { 'upstream = "v1", canary = { header = "x c", upstream = "v2" }',
              'route.canary.header must be a header name, got string "x c"' },
            { 'upstream = "v1", canary = { cookie = "a;b", upstream = "v2" }',
              'route.canary.cookie must be a cookie name, got string "a;b"' },
            { 'upstream = "v1", canary = { header = "x", upstream = 2 }',
              "route.canary.upstream must be an upstream name (string), got number 2" },
            { 'upstream = "v1", mirror = "nope"',
              'route.mirror.upstream "nope" is not declared' },
            { 'upstream = "v1", mirror = "v1"',
              'route.mirror.upstream "v1" is an upstream the route sends its requests to' },
            { 'upstream = "v1", canary = { header = "x", upstream = "v2" }, mirror = "v2"',
              'route.mirror.upstream "v2" is an upstream the route sends its requests to' },
            { 'upstream = "v1", mirror = { upstream = "shadow", concurrency = 0 }',
              "route.mirror.concurrency must be an integer 1-1000000, got number 0" },
            { 'upstream = "v1", mirror = { upstream = "shadow", percent = 101 }',
              "route.mirror.percent must be a number 0-100, got number 101" },
            { 'upstream = "v1", mirror = { upstream = "shadow", bodies = "1k" }',
              "unknown key 'bodies' in route.mirror (valid: upstream, body, concurrency, timeout, " ..
              "percent)" },
            { 'handler = function() end, mirror = "shadow"',
              "route.canary and route.mirror need an upstream" },
        }
        for _, c in ipairs(cases) do
            local cfg, errs = load_text(UPS .. 'gw.route { path = "/a", ' .. c[1] .. ' }\n')
            assert.is_nil(cfg, c[1])
            local all = table.concat(errs, "\n")
            assert.truthy(all:find(":6: " .. c[2], 1, true), c[1] .. " -> " .. all)
        end
    end)
end)

describe("config schema: settings.tracing", function()
    it("fills in the defaults of config.c's table, times in ms", function()
        local cfg = assert(load_text('gw.settings { tracing = { endpoint = "http://c:4318/" } }\n'
            .. 'gw.listen { port = 8080 }\n'))
        assert.same({ endpoint = "http://c:4318", sample = 1, parent_based = true,
                      service_name = "moongate", resource = {}, headers = {},
                      batch = { size = 512, interval = 1000 }, queue = 2048, timeout = 10000,
                      policy_spans = false }, cfg.tracing)
        assert.is_nil(assert(load_text('gw.listen { port = 8080 }\n')).tracing)
    end)

    it("keeps resource and headers maps as sorted lists, header names in lower case", function()
        local cfg = assert(load_text('gw.settings { tracing = { endpoint = "https://c/p", ' ..
            'resource = { ["b.x"] = "2", ["a.x"] = "1" }, headers = { ["X-Key"] = "k" } } }\n' ..
            'gw.listen { port = 8080 }\n'))
        assert.same({ { name = "a.x", value = "1" }, { name = "b.x", value = "2" } },
                    cfg.tracing.resource)
        assert.same({ { name = "x-key", value = "k" } }, cfg.tracing.headers)
        assert.equal("https://c/p", cfg.tracing.endpoint)
    end)

    it("refuses a bad endpoint, ratio, queue and maps with the key's words", function()
        local _, errs = load_text('gw.settings { tracing = { endpoint = "http://c:4318?x=1", ' ..
            'sample = 1.5, queue = 8, resource = { a = 1 }, headers = { ["a b"] = "x" }, ' ..
            'batch = { size = 0 } } }\n')
        local all = table.concat(errs, "\n")
        for _, want in ipairs {
            'settings.tracing.endpoint must be a collector URL like "http://127.0.0.1:4318"',
            "settings.tracing.sample must be a number 0-1",
            "settings.tracing.queue must be an integer 16-1048576",
            'settings.tracing.resource["a"] must be a string, got number 1',
            "settings.tracing.headers key 'a b' must be a header name",
            "settings.tracing.batch.size must be an integer 1-65536" } do
            assert.truthy(all:find(want, 1, true), want .. "\nin:\n" .. all)
        end
        for _, bad in ipairs { "ftp://c", "http://", "http://a b", "http://u@c", "c:4318" } do
            local _, e = load_text(('gw.settings { tracing = { endpoint = %q } }\n'):format(bad))
            assert.truthy(e and table.concat(e, "\n"):find("settings.tracing.endpoint must be",
                                                           1, true), bad)
        end
        local _, e = load_text('gw.settings { tracing = {} }\n')
        assert.truthy(table.concat(e, "\n"):find("settings.tracing.endpoint must be a " ..
                                                 "collector URL", 1, true))
    end)
end)
