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
