-- settings.access_log = { path =, fields = { ... } } at load: the names are
-- src/logfields.c's (checked through the schema by config.lua, compiled by
-- the C loader, which the testing kit's t.load runs too).
-- Run from the repository root with MG_TEST_LIB=build/libmgtest.so.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local config = require "moongate.config"
local t = require "moongate.testing"

local cf = require "spec.support.config_file"

local function lua_errors(text) return cf.load(config.load, text) end
local function c_errors(text) return cf.load(t.load, text) end

local FIELD = "must be a field: a built-in one (time, request_id, trace_id, span_id, " ..
    "client, peer, method, path, query, proto, status, bytes, route, upstream, target, " ..
    "upstream_time, split, mirror, cache, total_time, upstream_attempts, " ..
    "upstream_connect_time, " ..
    "upstream_tls_time, upstream_first_byte_time), \"req.header.NAME\", " ..
    "\"res.header.NAME\" or \"req.ctx.KEY\", optionally written under another key as " ..
    "\"KEY=...\" (a key: printable ASCII but spaces, quotes, backslashes and '=', 64 " ..
    "bytes at most)"

describe("access log fields at load", function()
    it("keeps a plain path as { path = }", function()
        local cfg = assert(lua_errors('gw.settings { access_log = "off" }\n'))
        assert.same({ path = "off" }, cfg.access_log)
    end)

    it("keeps the fields as given, header names in lower case", function()
        local cfg = assert(lua_errors('gw.settings { access_log = { path = "stderr", fields = ' ..
            '{ "time", "u=req.header.X-User", "res.header.Content-Type", "req.ctx.Tenant" } } }\n'))
        assert.same({ path = "stderr", fields = { "time", "u=req.header.x-user",
                                                  "res.header.content-type",
                                                  "req.ctx.Tenant" } }, cfg.access_log)
    end)

    it("refuses an unknown name, saying what is valid", function()
        local _, errs = lua_errors('gw.settings { access_log = { fields = { "time", "statsu" } } }\n')
        assert.same({ '3: settings.access_log.fields[2] ' .. FIELD .. ', got string "statsu"' },
                    errs)
    end)

    it("refuses malformed prefixed names and keys", function()
        for _, bad in ipairs { "req.header.", "req.header.x y", "res.header.a:b", "req.ctx.",
                               "req.ctx.a b", "req.ctx.a\"b", "req.body", "=status",
                               "a b=status", "k\\=status", ("k"):rep(65) .. "=status",
                               "req.ctx." .. ("k"):rep(65), "status\0" } do
            local _, errs = lua_errors(('gw.settings { access_log = { fields = { %q } } }\n')
                :format(bad))
            assert.is_table(errs, bad)
            assert.truthy(errs[1]:find("settings.access_log.fields[1] must be a field", 1, true),
                          errs[1])
        end
    end)

    it("refuses a table that is not a list, an empty list, more than 64 fields", function()
        local _, errs = lua_errors('gw.settings { access_log = { fields = "time" } }\n')
        assert.truthy(errs[1]:find("settings.access_log.fields must be a list of fields", 1,
                                   true), errs[1])
        _, errs = lua_errors('gw.settings { access_log = { fields = {} } }\n')
        assert.truthy(errs[1]:find("settings.access_log.fields must be a list of fields", 1,
                                   true), errs[1])
        local many = {}
        for i = 1, 65 do many[i] = ("%q"):format("k" .. i .. "=status") end
        _, errs = lua_errors('gw.settings { access_log = { fields = { ' ..
            table.concat(many, ", ") .. ' } } }\n')
        assert.same({ "3: settings.access_log.fields lists 65 fields (at most 64)" }, errs)
    end)

    it("refuses an unknown key and a bad path in the table", function()
        local _, errs = lua_errors('gw.settings { access_log = { feilds = { "time" } } }\n')
        assert.truthy(errs[1]:find("unknown key 'feilds' in settings.access_log (did you mean " ..
                                   "'fields'?", 1, true), errs[1])
        _, errs = lua_errors('gw.settings { access_log = { path = 5 } }\n')
        assert.same({ '3: settings.access_log.path must be "off", "stdout", "stderr" or a ' ..
                      'file path, got number 5' }, errs)
    end)

    it("refuses two fields under one key, in the C loader", function()
        local _, errs = c_errors('gw.settings { access_log = { fields = { "status", ' ..
            '"req.header.x-a", "status=req.header.x-status" } } }\n')
        assert.same({ '3: settings.access_log.fields[3]: the key "status" is fields[1]\'s ' ..
                      'too (give one of them another: "other_key=req.header.x-status")' }, errs)
        -- the same name twice is two fields under one key too
        _, errs = c_errors('gw.settings { access_log = { fields = { "time", "time" } } }\n')
        assert.truthy(errs and errs[1]:find('fields[2]: the key "time"', 1, true))
    end)

    it("loads a config with every kind of field in the C loader", function()
        assert(c_errors('gw.settings { access_log = { path = "off", fields = { "time", ' ..
            '"upstream_attempts", "upstream_connect_time", "upstream_tls_time", ' ..
            '"upstream_first_byte_time", "req.header.x-a", "b=res.header.x-b", ' ..
            '"req.ctx.c", "peer" } } }\n'))
    end)
end)
