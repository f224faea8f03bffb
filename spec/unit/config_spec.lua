-- Specs for lua/moongate/config.lua (and the DSL surface of init.lua).
-- Run from the repository root:
--   luajit /usr/bin/busted spec/unit/config_spec.lua
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local config = require "moongate.config"

local DIR = "spec/fixtures/config/"

local function load(name)
    return config.load(DIR .. name .. ".lua")
end

-- The errors of fixture `name`, without the "file" prefix (kept as ":line:").
local function errors_of(name)
    local cfg, errs = load(name)
    assert.is_nil(cfg)
    assert.is_table(errs)
    local out = {}
    local prefix = DIR .. name .. ".lua"
    for i, e in ipairs(errs) do
        assert.equal(prefix, e:sub(1, #prefix))
        out[i] = e:sub(#prefix + 1)
    end
    return out
end

local function without_functions(t)
    if type(t) ~= "table" then
        return t
    end
    local out = {}
    for k, v in pairs(t) do
        if type(v) ~= "function" then
            out[k] = without_functions(v)
        end
    end
    return out
end

local ROUTE_KEYS = "(valid: name, path, upstream, handler, methods, host, " ..
    "headers, listen, strip_prefix, rewrite, max_body, policies, cache, " ..
    "upgrades, escaped_slashes, retries, timeouts, grpc, split, canary, mirror)"


describe("config normalisation", function()
    it("fills every default for a minimal config", function()
        local cfg = assert(load("minimal"))
        local file = DIR .. "minimal.lua"
        assert.same({
            file = file,
            workers = 0,
            access_log = { path = "stdout" },
            error_log = "stderr",
            log_level = "info",
            limits = { request_line = 8192, header_size = 32768,
                       header_count = 100, body = 10485760,
                       min_body_rate = 1024, lua_memory = 1073741824 },
            timeouts = { header = 10000, keepalive = 60000, body = 10000,
                         body_grace = 5000, body_rate_window = 5000,
                         send = 60000, shutdown = 10000, hook = 100,
                         load = 2000 },
            http2 = { max_concurrent_streams = 100, initial_window = 65535,
                      connection_window = 1048576, max_resets = 200,
                      max_control_frames = 1000, rate_window = 10000 },
            dns = { min_ttl = 1000, max_ttl = 300000, timeout = 1000,
                    attempts = 3, retry = 5000 },
            listeners = { { host = "0.0.0.0", port = 8080, line = 2,
                            source = file, escaped_slashes = "reject",
                            http2 = false } },
            upstreams = {},
            routes = { { name = "/", path = "/", headers = {}, listen = 0,
                         max_body = 10485760, line = 3, source = file } },
            shared_dicts = {},
            metrics = {},
            hooks = {},
            admin = { enabled = true, host = "127.0.0.1", port = 9901 },
            tests = {},
        }, without_functions(cfg))
    end)

    it("parses settings: sizes in bytes, times in integer ms", function()
        local cfg = assert(load("full"))
        assert.equal(2, cfg.workers)
        assert.same({ path = "stderr" }, cfg.access_log)
        assert.same({ request_line = 4096, header_size = 16384,
                      header_count = 50, body = 2097152,
                      min_body_rate = 1024, lua_memory = 1073741824 }, cfg.limits)
        assert.same({ header = 2500, keepalive = 30000, body = 250,
                      body_grace = 5000, body_rate_window = 5000,
                      send = 45000, shutdown = 3000, hook = 100,
                      load = 2000 }, cfg.timeouts)
    end)

    it("normalises listeners", function()
        local cfg = assert(load("full"))
        local file = DIR .. "full.lua"
        assert.same({
            { host = "0.0.0.0", port = 8080, line = 22, source = file,
              escaped_slashes = "reject", http2 = false },
            { host = "127.0.0.1", port = 8443, line = 23, source = file,
              escaped_slashes = "reject", http2 = false },
        }, cfg.listeners)
    end)

    it("normalises upstreams: targets, weights, option defaults", function()
        local cfg = assert(load("full"))
        local file = DIR .. "full.lua"
        assert.same({
            { name = "orders", line = 25, source = file,
              targets = { { host = "127.0.0.1", port = 8081, weight = 1 },
                          { host = "127.0.0.1", port = 8091, weight = 2 } },
              keepalive = 16, max_targets = 64, keepalive_timeout = 30000,
              connect_timeout = 500, send_timeout = 20000,
              read_timeout = 15000, fail_timeout = 7000, max_fails = 1,
              forwarded = true, request_id = true, override_headers = false,
              balancer = "round_robin", protocol = "h1" },
            { name = "users", line = 36, source = file,
              targets = { { host = "::1", port = 9000, weight = 1 },
                          { host = "users.internal", port = 9001,
                            weight = 1 } },
              keepalive = 64, max_targets = 64, keepalive_timeout = 60000,
              connect_timeout = 5000, send_timeout = 60000,
              read_timeout = 60000, fail_timeout = 10000, max_fails = 1,
              forwarded = true, request_id = true, override_headers = false,
              balancer = "round_robin", protocol = "h1" },
        }, cfg.upstreams)
    end)

    it("normalises routes: methods upper case, header names lower case",
       function()
        local cfg = assert(load("full"))
        local file = DIR .. "full.lua"
        assert.same({
            { name = "orders", path = "/orders/**", upstream = 1,
              methods = { "GET", "POST" }, host = "api.example.com",
              headers = { { name = "x-tenant", value = "acme" },
                          { name = "x-version", value = "2" } },
              listen = 8443, strip_prefix = "/orders", max_body = 1048576,
              line = 38, source = file },
            { name = "/users/:id/**", path = "/users/:id/**", upstream = 2,
              host = "*.example.com", headers = {}, listen = 0,
              rewrite = "/v1/users/:id/**", max_body = 2097152, line = 50,
              source = file },
            { name = "/hello", path = "/hello", headers = {}, listen = 0,
              max_body = 2097152, line = 57, source = file },
        }, without_functions(cfg.routes))
    end)

    it("keeps a route handler as the function", function()
        local cfg = assert(load("full"))
        local handler = cfg.routes[3].handler
        assert.is_function(handler)
        assert.is_nil(cfg.routes[3].upstream)
        local status, body, headers = handler({})
        assert.equal(200, status)
        assert.same({ hello = "world" }, body)
        assert.same({ ["x-demo"] = "1" }, headers)
    end)

    it("collects gw.on_* hooks and tolerates other gw fields", function()
        local cfg = assert(load("hooks"))
        assert.same({ "on_request", "on_response" },
                    (function()
                        local names = {}
                        for k, v in pairs(cfg.hooks) do
                            assert.is_function(v)
                            names[#names + 1] = k
                        end
                        table.sort(names)
                        return names
                    end)())
        assert.equal("request", cfg.hooks.on_request())
        assert.equal("response", cfg.hooks.on_response())
        -- the config's globals stay in the config's own environment
        assert.is_nil(rawget(_G, "ANSWER_SEEN"))
    end)

    it("exposes the hooks of the last load on the module", function()
        local cfg = assert(load("hooks"))
        local gw = require "moongate"
        assert.equal(cfg.hooks.on_request, gw.on_request)
        assert.equal(42, gw.answer)
        assert.is_function(gw.route)
    end)
end)


describe("config sizes and times", function()
    it("parses sizes", function()
        assert.equal(12, config.parse_size(12))
        assert.equal(512, config.parse_size("512"))
        assert.equal(32768, config.parse_size("32k"))
        assert.equal(10485760, config.parse_size("10M"))
        assert.equal(1073741824, config.parse_size("1g"))
        assert.is_nil(config.parse_size("32kb"))
        assert.is_nil(config.parse_size("1.5k"))
        assert.is_nil(config.parse_size(1.5))
        assert.is_nil(config.parse_size(-1))
        assert.is_nil(config.parse_size({}))
    end)

    it("parses times into integer milliseconds", function()
        assert.equal(1500, config.parse_time(1.5))
        assert.equal(60000, config.parse_time(60))
        assert.equal(1, config.parse_time(0.001))
        assert.is_nil(config.parse_time(0))
        assert.is_nil(config.parse_time(-1))
        assert.is_nil(config.parse_time(0.0001))
        assert.is_nil(config.parse_time(1 / 0))
        assert.is_nil(config.parse_time(0 / 0))
        assert.is_nil(config.parse_time("10"))
    end)
end)


describe("config errors", function()
    it("reports a syntax error with its line", function()
        assert.same({ ":3: '}' expected near 'handler'" },
                    errors_of("syntax_error"))
    end)

    it("reports a runtime error with its line, after earlier mistakes",
       function()
        assert.same({
            ":3: unknown key 'methds' in gw.route (did you mean 'methods'? " ..
                ROUTE_KEYS:sub(2),
            ":5: attempt to index local 't' (a nil value)",
        }, errors_of("runtime_error"))
    end)

    it("reports error() raised by the config at its line", function()
        assert.same({ ":4: something is off" }, errors_of("raised_error"))
    end)

    it("reports a missing file without a line", function()
        local cfg, errs = config.load(DIR .. "does_not_exist.lua")
        assert.is_nil(cfg)
        assert.same({ DIR .. "does_not_exist.lua: cannot read the config " ..
                      "file (No such file or directory)" }, errs)
    end)

    it("reports unknown keys in every table, with suggestions", function()
        assert.same({
            ":2: unknown key 'wokers' in gw.settings (did you mean " ..
                "'workers'? valid: workers, access_log, error_log, log_level, limits, " ..
                "timeouts, http2, admin, trusted_proxies, real_ip_header, tracing, resolver, dns)",
            ":2: unknown key 'bdy' in settings.limits (did you mean 'body'? " ..
                "valid: request_line, header_size, header_count, body, " ..
                "min_body_rate, lua_memory)",
            ":2: unknown key 'sned' in settings.timeouts (did you mean " ..
                "'send'? valid: header, keepalive, body, body_grace, " ..
                "body_rate_window, send, shutdown, hook, load)",
            ":3: unknown key 'hots' in gw.listen (did you mean 'host'? " ..
                "valid: port, host, tls, escaped_slashes, proxy_protocol, http2)",
            ":4: unknown key 'wieght' in upstream.targets[1] (did you mean " ..
                "'weight'? valid: a \"host:port\" first, then weight)",
            ":4: unknown key 'keepalve' in gw.upstream options (did you " ..
                "mean 'keepalive'? valid: keepalive, max_targets, keepalive_timeout, " ..
                "connect_timeout, send_timeout, read_timeout, fail_timeout, forwarded, " ..
                "request_id, override_headers, health, max_fails, balancer, hash, tls, retries, outlier, protocol)",
            ":5: unknown key 'pth' in gw.route (did you mean 'path'? " ..
                ROUTE_KEYS:sub(2),
            ':5: route.path is required (a pattern like "/orders/**")',
        }, errors_of("unknown_keys"))
    end)

    it("reports wrong types with the key, the value and what is valid",
       function()
        local size = 'must be a size: bytes as an integer, or a string ' ..
            'like "32k", "10m", "1g"'
        local secs = "must be a positive number of seconds (fractions " ..
            "allowed)"
        assert.same({
            ":2: settings.workers must be an integer 0-1024 (0 = one per " ..
                "CPU), got number 1.5",
            ':2: settings.access_log must be "off", "stdout", "stderr", ' ..
                'a file path or a table like { path = "logs/access.log", ' ..
                'fields = { "time", "status" } }, got number 1',
            ":2: settings.limits.header_size " .. size ..
                ', got string "32kb"',
            ":2: settings.limits.header_count must be an integer >= 1, " ..
                'got string "many"',
            ":2: settings.limits.body " .. size .. ", got number -1",
            ":2: settings.timeouts.header " .. secs .. ', got string "10s"',
            ":2: settings.timeouts.keepalive " .. secs .. ", got number 0",
            ':8: listen.port must be an integer 1-65535, got string "80"',
            ":9: listen.port must be an integer 1-65535, got number 70000",
            ":10: listen.host must be an IP address or a host name, got " ..
                'string "not a host"',
            ":11: upstream.keepalive must be an integer >= 0, got number -1",
            ":11: upstream.read_timeout " .. secs .. ', got string "1m"',
            ':12: route.path must be a pattern like "/orders/**", got ' ..
                "number 5",
            ':12: route.handler must be a function, got string "nope"',
            ':13: route.methods must be a list like { "GET", "POST" }, ' ..
                'got string "GET"',
            ':14: route.headers["X-A"] must be a string (no CR, LF or NUL), ' ..
                "got number 2",
            ':15: route.listen must be an integer 1-65535, got string "8080"',
            ":15: route.max_body " .. size .. ', got string "big"',
        }, errors_of("wrong_types"))
    end)

    it("reports bad addresses", function()
        local addr = 'upstream.targets[%d] must be "host:port", ' ..
            '"[ipv6]:port" or "srv://_service._proto.name" (%s), got string %s'
        assert.same({
            ":3: " .. addr:format(1, "port 1-65535", '"127.0.0.1:99999"'),
            ":4: " .. addr:format(1, 'missing ":port"', '"nohost"'),
            ":5: " .. addr:format(1, "missing host", '":80"'),
            ":6: " .. addr:format(1, "IPv6 addresses need [brackets]",
                                  '"::1:80"'),
            ":6: " .. addr:format(2, "bad IPv6 address", '"[zz]:80"'),
            ":6: " .. addr:format(3, "bad host", '"300.1.1.1:80"'),
            ':7: upstream.targets must be a non-empty list of "host:port" ' ..
                "strings, got a table without list entries",
        }, errors_of("bad_addresses"))
    end)

    it("reports duplicate listeners, upstreams, routes and settings",
       function()
        assert.same({
            ":3: duplicate listener 0.0.0.0:8080 (already declared at line 2)",
            ":4: listener 127.0.0.1:8080 overlaps 0.0.0.0:8080 (declared " ..
                "at line 2)",
            ':6: duplicate upstream "a" (already declared at line 5)',
            ":8: duplicate route: same path, host, methods, headers and " ..
                "listen as the route at line 7",
            ":11: gw.settings is called twice (first at line 10); merge them",
        }, errors_of("duplicates"))
    end)

    it("reports an unknown upstream at the route's line", function()
        assert.same({
            ':5: route.upstream "ordrs" is not declared (did you mean ' ..
                "'orders'? declared: orders, users)",
            ':6: route.upstream "billing" is not declared (declared: ' ..
                "orders, users)",
        }, errors_of("unknown_upstream"))
    end)

    it("reports route mistakes: upstream/handler, pattern, rewrite",
       function()
        assert.same({
            ":4: route needs one of upstream (an upstream name), split " ..
                "(upstreams by weight) or handler (a function), got neither",
            ":5: route needs exactly one of upstream or handler, got both",
            ':6: route.path "/a/**/b" is not a valid pattern: \'**\' must ' ..
                "be the last segment",
            ':7: route.rewrite "/v1/:oid" uses \':oid\' which route.path ' ..
                '"/o/:id" does not define (it defines id)',
            ':8: route.rewrite "/v1/**" uses \'**\' but route.path ' ..
                '"/p/:id" has no \'**\' or trailing \'/\'',
            ':9: route.strip_prefix "/z" is not a literal prefix of ' ..
                'route.path "/q/**"',
            ":10: route.listen 9999 is not a gw.listen port (listening " ..
                "on: 8080)",
            ':11: route.path "no-slash" is not a valid pattern: it must ' ..
                "start with '/'",
        }, errors_of("route_errors"))
    end)

    it("reports a config without gw.listen", function()
        assert.same({ ":1: no gw.listen in the config: add one, e.g. " ..
                      "gw.listen { port = 8080 }" }, errors_of("no_listen"))
    end)

    it("reports a hook that is not a function", function()
        assert.same({ ':4: gw.on_request must be a function, got string ' ..
                      '"not a function"' }, errors_of("bad_hook"))
    end)

    it("reports all of three different mistakes, each at its line",
       function()
        assert.same({
            ':4: listen.port must be an integer 1-65535, got string "8080"',
            ':8: route.upstream "ordres" is not declared (did you mean ' ..
                "'orders'? declared: orders)",
            ":10: unknown key 'mehtods' in gw.route (did you mean " ..
                "'methods'? " .. ROUTE_KEYS:sub(2),
        }, errors_of("three_mistakes"))
    end)

    it("blames the line in a user helper function, not moongate's",
       function()
        assert.same({ ':5: route.upstream "a" is not declared (none ' ..
                      "declared)" }, errors_of("helper"))
    end)

    it("names the file a declaration came from", function()
        local cfg, errs = load("include")
        assert.is_nil(cfg)
        assert.same({ DIR .. 'include_part.lua:3: route.upstream "missing" ' ..
                      "is not declared (none declared)" }, errs)
    end)

    it("keeps long file names whole (Lua truncates them in messages)",
       function()
        local dir = os.tmpname()
        os.remove(dir)
        dir = dir .. "-a-directory-name-long-enough-to-be-cut-by-lua"
        assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
        local function copy(name)
            local src = assert(io.open(DIR .. name .. ".lua"))
            local path = dir .. "/" .. name .. ".lua"
            local dst = assert(io.open(path, "w"))
            dst:write(src:read("*a"))
            src:close()
            dst:close()
            return path
        end
        local syntax, runtime = copy("syntax_error"), copy("raised_error")
        local _, errs = config.load(syntax)
        assert.same({ syntax .. ":3: '}' expected near 'handler'" }, errs)
        _, errs = config.load(runtime)
        assert.same({ runtime .. ":4: something is off" }, errs)
        os.remove(syntax)
        os.remove(runtime)
        os.remove(dir)
    end)
end)


-- Loads config `text` from a temporary file; returns cfg, or nil and the
-- errors without the file name (kept as ":line:").
local function load_text(text)
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(text)
    f:close()
    local cfg, errs = config.load(file)
    os.remove(file)
    if cfg then
        return cfg, file
    end
    for i, e in ipairs(errs) do
        assert.equal(file, e:sub(1, #file))
        errs[i] = e:sub(#file + 1)
    end
    return nil, errs
end

describe("config shared dicts", function()
    it("normalises gw.shared_dict declarations", function()
        local cfg, file = load_text([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.shared_dict("limits", { size = "10m" })
gw.shared_dict("cache.v2", { size = 65536 })
]])
        assert.is_table(cfg)
        assert.same({
            { name = "limits", size = 10485760, line = 3, source = file },
            { name = "cache.v2", size = 65536, line = 4, source = file },
        }, cfg.shared_dicts)
    end)

    it("reports each mistake at its line", function()
        local _, errs = load_text([[
local gw = require "moongate"
gw.listen { port = 8080 }
gw.shared_dict("", { size = "1m" })
gw.shared_dict(5, { size = "1m" })
gw.shared_dict("a b", { size = "1m" })
gw.shared_dict("nosize", {})
gw.shared_dict("badsize", { size = "10mb" })
gw.shared_dict("small", { size = 100 })
gw.shared_dict("typo", { size = "1m", sise = 1 })
gw.shared_dict("noopts")
gw.shared_dict("dup", { size = "1m" })
gw.shared_dict("dup", { size = "2m" })
gw.shared_dict("extra", { size = "1m" }, 3)
]])
        local name = "shared_dict name must be 1-64 letters, digits, '_', " ..
            "'-' or '.', got "
        assert.same({
            ":3: " .. name .. 'string ""',
            ":4: " .. name .. "number 5",
            ":5: " .. name .. 'string "a b"',
            ':6: shared_dict.size is required (bytes, or a string like "10m")',
            ":7: shared_dict.size must be a size: bytes as an integer, or " ..
                'a string like "32k", "10m", "1g", got string "10mb"',
            ":8: shared_dict.size must be at least 8192 bytes, got number 100",
            ":9: unknown key 'sise' in gw.shared_dict options (did you mean " ..
                "'size'? valid: size)",
            ':10: gw.shared_dict options must be a table like { size = "10m" ' ..
                "}, got nil",
            ':12: duplicate shared dict "dup" (already declared at line 11)',
            ":13: gw.shared_dict takes (name, options), got 3 arguments",
        }, errs)
    end)

    it("refuses gw.shared_dict outside a load, blaming the caller",
       function()
        local gw = require "moongate"
        local ok, err = pcall(function()
            gw.shared_dict("x", { size = "1m" })
        end)
        assert.is_false(ok)
        assert.matches("config_spec.lua:%d+: gw.shared_dict can only be " ..
                       "used while a config file is loading", err)
    end)
end)


describe("config reloads", function()
    it("gives independent results when one file is loaded twice", function()
        local a = assert(load("full"))
        local b = assert(load("full"))
        assert.are_not.equal(a, b)
        assert.are_not.equal(a.routes, b.routes)
        assert.same(without_functions(a), without_functions(b))
        b.routes[1].name = "changed"
        assert.equal("orders", a.routes[1].name)
    end)

    it("does not carry declarations from one load into the next", function()
        assert(load("full"))
        local cfg = assert(load("minimal"))
        assert.equal(1, #cfg.listeners)
        assert.equal(0, #cfg.upstreams)
        assert.equal(1, #cfg.routes)
        assert.same({}, cfg.hooks)
    end)

    it("does not carry errors or hooks into the next load", function()
        assert.is_nil((load("three_mistakes")))
        assert(load("hooks"))
        local cfg = assert(load("minimal"))
        assert.same({}, cfg.hooks)
        assert.same({ ":4: gw.on_request must be a function, got string " ..
                      '"not a function"' }, errors_of("bad_hook"))
    end)
end)


describe("config files that require modules", function()
    local saved = package.path
    before_each(function()
        package.path = DIR .. "lib/?.lua;" .. saved
    end)
    after_each(function()
        package.path = saved
    end)

    it("runs them again on every load", function()
        for _ = 1, 2 do
            local cfg = assert(load("modules"))
            assert.equal(1, #cfg.routes)
            assert.equal("/from-module", cfg.routes[1].path)
            assert.equal(DIR .. "lib/fixture_routes.lua", cfg.routes[1].source)
            assert.equal(3, cfg.routes[1].line)
        end
        assert.is_nil(package.loaded.fixture_routes)
    end)
end)


describe("the gw module outside a load", function()
    it("refuses declarations, blaming the caller", function()
        local gw = require "moongate"
        local ok, err = pcall(function() gw.route { path = "/" } end)
        assert.is_false(ok)
        assert.matches("config_spec.lua:%d+: gw.route can only be used " ..
                       "while a config file is loading", err)
    end)
end)

-- Policies are checked like every other table of a config: a mistake in
-- jwt.policy { ... } or limit.policy { ... } does not stop the load, so all
-- of them are reported at once, each at its line, unknown keys with a
-- suggestion.
describe("policy option errors", function()
    it("are all reported at once, with their lines and suggestions", function()
        local errs = errors_of("policy_errors")
        local function starts(i, s)
            assert.truthy(errs[i], "missing error " .. i .. ": " .. s)
            assert.equal(s, errs[i]:sub(1, #s))
        end
        assert.equal(7, #errs, table.concat(errs, "\n"))
        starts(1, ":5: unknown key 'secrte' in jwt.policy (did you mean 'secret'? " ..
                  "valid: algorithms, ")
        starts(2, ":5: jwt: no key: give secret")
        starts(3, ":6: unknown key 'pre' in limit.policy (did you mean 'per'? " ..
                  "valid: algorithm, body, ")
        starts(4, ":8: limit.policy.rate must be a number > 0")
        starts(5, ":8: limit.policy.status must be an integer 400-599, got number 200")
        starts(6, ':10: jwt: optional must be a boolean, got "yes"')
        starts(7, ':11: route.upstream "uu" is not declared')
    end)

    it("outside a config load still raise at the caller's line", function()
        local limit = require "moongate.ratelimit"
        local ok, err = pcall(function() return limit.policy { rate = 1, pre = 1 } end)
        assert.is_false(ok)
        assert.matches("config_spec.lua:%d+: unknown key 'pre' in limit.policy " ..
                       "%(did you mean 'per'%?", err)
    end)
end)

-- Each object's fields are declared once, in src/config.c (read through
-- mg_ffi_config_fields); route patterns are checked by src/router.c.
describe("the config schema", function()
    local cdefs = require "moongate.cdefs"

    it("declares every object's keys once, in the order errors list them",
       function()
        for _, object in ipairs { "settings", "limits", "timeouts", "http2", "admin",
                                  "listen", "upstream", "target", "health",
                                  "shared_dict", "cache", "redis" } do
            local seen = {}
            local fields = cdefs.config_fields(object)
            assert.is_true(#fields > 0, object)
            for _, f in ipairs(fields) do
                assert.is_nil(seen[f.name], object .. "." .. f.name)
                seen[f.name] = true
            end
        end
        assert.same({ "port", "host", "tls", "escaped_slashes", "proxy_protocol", "http2" },
                    (function()
                        local out = {}
                        for i, f in ipairs(cdefs.config_fields("listen")) do
                            out[i] = f.name
                        end
                        return out
                    end)())
    end)

    it("gives a config without gw.settings the declared defaults", function()
        local cfg = assert(load("minimal"))
        for object, got in pairs { limits = cfg.limits,
                                   timeouts = cfg.timeouts, http2 = cfg.http2 } do
            for _, f in ipairs(cdefs.config_fields(object)) do
                assert.equal(f.def, got[f.name], object .. "." .. f.name)
            end
        end
    end)

    it("reports the schema's and the router's reasons at their lines",
       function()
        assert.same({
            -- one line's mistakes in the order of the object's keys
            ':3: upstream.forwarded must be true or false, got string "yes"',
            ":3: upstream.max_fails must be an integer 0-1000 (0: never skip " ..
                "a target), got number 1001",
            ":4: route.cache.redis.pool must be an integer 1-64, got number 100",
            ":5: route.cache.stale must be a positive number of seconds " ..
                "(fractions allowed), got number -1",
            ":5: route.cache.authorized must be a boolean, got number 1",
            ':6: route.path "/p/:" is not a valid pattern: bad parameter ' ..
                "name \":\" (':' then a letter or '_', then letters, digits, " ..
                "'_')",
            ':7: route.path "/q/:id/:id" is not a valid pattern: duplicate ' ..
                "parameter ':id'",
            ':8: route.rewrite "/v/%zz" is not a valid template: bad ' ..
                "percent-escape (use %XX with upper-case hex digits)",
        }, errors_of("schema_errors"))
    end)
end)

describe("config balancers", function()
    local function upstream(opts)
        return load_text('local gw = require "moongate" gw.listen { port = 8080 }\n' ..
                         'gw.upstream("u", { "127.0.0.1:1", "127.0.0.1:2" }, ' .. opts .. ')\n')
    end

    it("normalises balancer and hash (a key alone says hash)", function()
        local cases = {
            { "{}", "round_robin", nil },
            { '{ balancer = "least_conn" }', "least_conn", nil },
            { '{ balancer = "p2c_ewma" }', "p2c_ewma", nil },
            { '{ hash = { header = "X-User" } }', "hash", { on = "header", name = "x-user" } },
            { '{ balancer = "hash", hash = { cookie = "sid" } }', "hash",
              { on = "cookie", name = "sid" } },
            { '{ hash = { query = "user" } }', "hash", { on = "query", name = "user" } },
            { '{ hash = "client" }', "hash", { on = "client" } },
            { '{ hash = "path" }', "hash", { on = "path" } },
            { "{ hash = function(req) return req.path end }", "hash", { on = "lua" } },
        }
        for _, c in ipairs(cases) do
            local cfg = assert(upstream(c[1]))
            assert.equal(c[2], cfg.upstreams[1].balancer, c[1])
            assert.same(c[3], cfg.upstreams[1].hash, c[1])
        end
    end)

    it("says what is wrong with a balancer or a key, at its line", function()
        local cases = {
            { '{ balancer = "ketama" }', ':2: upstream.balancer must be "round_robin", ' ..
                '"least_conn", "hash" or "p2c_ewma", got string "ketama"' },
            { '{ balancer = "hash" }', ':2: upstream balancer "hash" needs the key to hash: ' ..
                'hash = { header = "x-user" } (or cookie, query, "client", "path", a function)' },
            { '{ balancer = "least_conn", hash = "client" }', ':2: upstream.hash is read by ' ..
                'balancer = "hash" only (this upstream\'s is "least_conn"): remove one of them' },
            { '{ hash = "ip" }', ':2: upstream.hash must be "client", "path", { header = NAME }, ' ..
                '{ cookie = NAME }, { query = NAME } or a function(req) returning a string, ' ..
                'got string "ip"' },
            { '{ hash = { header = "x", cookie = "y" } }', ':2: upstream.hash must be ' ..
                '"client", "path", { header = NAME }, { cookie = NAME }, { query = NAME } or a ' ..
                'function(req) returning a string, got table' },
            { '{ hash = { header = "x user" } }',
              ':2: upstream.hash.header must be a header name, got string "x user"' },
            { '{ hash = { cookie = "" } }',
              ':2: upstream.hash.cookie must be a cookie name, got string ""' },
            { '{ hash = { query = 1 } }',
              ":2: upstream.hash.query must be a query argument name, got number 1" },
        }
        for _, c in ipairs(cases) do
            local cfg, errs = upstream(c[1])
            assert.is_nil(cfg, c[1])
            assert.same({ c[2] }, errs)
        end
    end)
end)
