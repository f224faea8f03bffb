-- access_log = { path =, fields = { ... } } through the real binary: the
-- fields chosen by name (built-ins, request and response headers, req.ctx
-- values a policy set, the upstream's phases), each line checked by a
-- strict parser (Python: the bytes decoded as UTF-8 with errors raised,
-- then json.loads, which refuses raw control characters), one object per
-- line whatever the values: quotes, control characters, bytes that are not
-- UTF-8, values far over the cap of one value and of one line.
local h = require "spec.support.helpers"
local pki = require "spec.support.pki"
local cjson = require "cjson"

local fmt, rep = string.format, string.rep

local CONFIG = [[
local gw = require "moongate"
gw.settings { access_log = { path = "{{LOG}}", fields = {
    "request_id", "status", "method", "path",
    "user=req.header.x-user", "req.header.x-multi", "req.header.x-big",
    "out=res.header.x-out", "res.header.x-set", "res.header.content-type",
    "tenant=req.ctx.tenant", "req.ctx.raw", "req.ctx.num", "req.ctx.int", "req.ctx.flag",
    "req.ctx.tbl", "req.ctx.nan", "req.ctx.missing",
    "req.header.x-pad1", "req.header.x-pad2", "req.header.x-pad3",
    "upstream", "target", "upstream_attempts", "upstream_connect_time", "upstream_tls_time",
    "upstream_first_byte_time", "upstream_time", "total_time",
} }, timeouts = { shutdown = 2 },
    limits = { request_line = "64k", header_size = "256k" } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.upstream("fresh", { "{{UP}}" }, { keepalive = 0 })
gw.upstream("tls", { "localhost:{{TLS}}" }, { keepalive = 0, tls = { ca = "{{CA}}" } })
gw.upstream("pooled_tls", { "localhost:{{TLS}}" }, { tls = { ca = "{{CA}}" } })
gw.upstream("half", { "{{DEAD}}", "{{UP}}" }, { max_fails = 0 })

-- what the log shows of req.ctx: the client chooses the bytes (?raw=,
-- decoded), the policy the types
local function keep(req)
    local ctx = req.ctx
    ctx.tenant = req:header("x-tenant")
    ctx.raw = req:arg("raw")
    ctx.num, ctx.int, ctx.flag, ctx.tbl, ctx.nan = 42.5, 7, true, {}, 0 / 0
end
local function set_out(req, res)
    local v = req:arg("set")
    if v then res:set_header("X-Set", v) end
end
local policies = { { name = "keep", on_request = keep, on_response = set_out } }
gw.route { path = "/api/**", upstream = "up", policies = policies }
gw.route { path = "/fresh/**", upstream = "fresh", policies = policies }
gw.route { path = "/tls/**", upstream = "tls" }
gw.route { path = "/pooled_tls/**", upstream = "pooled_tls" }
gw.route { path = "/half/**", upstream = "half" }
gw.route { path = "/local", handler = function(req) return 200, "here" end }
]]

-- Every line of the file as Python's strict reading decodes it: a list
-- of objects, or an error naming the first bad line.
local STRICT = [[
import json, sys
data = open(sys.argv[1], "rb").read()
out = []
if data and not data.endswith(b"\n"):
    sys.exit("the file does not end with a newline")
for i, raw in enumerate(data.split(b"\n")[:-1], 1):
    try:
        v = json.loads(raw.decode("utf-8"))   # strict: invalid UTF-8 raises
    except Exception as e:
        sys.exit("line %d: %s: %r" % (i, e, raw[:200]))
    if not isinstance(v, dict):
        sys.exit("line %d: not an object" % i)
    v["_bytes"] = len(raw)
    out.append(v)
print(json.dumps(out, ensure_ascii=True))
]]

local function strict_lines(path)
    local out = h.sh(fmt("/usr/bin/python3 -c %s %s 2>&1", h.shq(STRICT), h.shq(path)))
    local ok, lines = pcall(cjson.decode, out)
    assert(ok and type(lines) == "table", "not strict JSON lines: " .. out:sub(1, 2000))
    return lines
end

-- The strictly decoded line of request `id` in the log at `path` (waits
-- for the writer).
local function entry_in(path, id)
    local found
    h.eventually(5, function()
        for _, e in ipairs(strict_lines(path)) do
            if e.request_id == id then found = e end
        end
        return found ~= nil
    end, "an access log line for request " .. id)
    return found
end

describe("access log fields", function()
    local gw, up, log, ca

    setup(function()
        ca = pki.ca("log")
        local crt, key = ca:issue("srv", { "localhost" })
        up = h.start_upstream { name = "up" }
        local tls = h.start_upstream { name = "tls", tls = { cert = crt, key = key } }
        log = h.tmpfile("access.log")
        gw = h.start_gateway(CONFIG, { vars = { UP = up.addr, TLS = tls.port, CA = ca.crt,
                                                LOG = log, DEAD = h.dead_addr() } })
    end)

    teardown(h.cleanup)

    local function entry(id) return entry_in(log, id) end

    local function get(path, headers)
        local res = h.http(gw.port, { path = path, headers = headers or {} })
        return res, entry(res.headers["x-request-id"])
    end

    it("writes the fields it lists, in order, under their keys", function()
        local res, e = get("/api/a?hdr=X-Out:out-value",
                           { { "X-User", "alice" }, { "X-Tenant", "acme" } })
        assert.equal(200, res.status)
        assert.equal(200, e.status)
        assert.equal("GET", e.method)
        assert.equal("/api/a", e.path)
        assert.equal("alice", e.user)
        assert.equal("out-value", e.out)
        assert.equal("application/json", e["res.header.content-type"])
        assert.equal("acme", e.tenant)
        assert.equal("up", e.upstream)
        assert.equal(up.addr, e.target)
        assert.equal(1, e.upstream_attempts)
        -- the keys are the list's, in its order: nothing else
        local line = h.read_file(log):match("[^\n]*" .. e.request_id .. "[^\n]*")
        local keys = {}
        for k in line:gmatch('[{,]"([^"]+)":') do keys[#keys + 1] = k end
        assert.same({ "request_id", "status", "method", "path", "user", "req.header.x-multi",
                      "req.header.x-big", "out", "res.header.x-set",
                      "res.header.content-type", "tenant", "req.ctx.raw", "req.ctx.num",
                      "req.ctx.int", "req.ctx.flag", "req.ctx.tbl", "req.ctx.nan",
                      "req.ctx.missing", "req.header.x-pad1", "req.header.x-pad2",
                      "req.header.x-pad3", "upstream", "target", "upstream_attempts",
                      "upstream_connect_time", "upstream_tls_time",
                      "upstream_first_byte_time", "upstream_time", "total_time" }, keys)
    end)

    it("writes req.ctx numbers, booleans and strings as such, anything else safely", function()
        local _, e = get("/api/types", { { "X-Tenant", "t1" } })
        assert.equal(42.5, e["req.ctx.num"])
        assert.equal(7, e["req.ctx.int"])
        assert.equal(true, e["req.ctx.flag"])
        assert.equal("table", e["req.ctx.tbl"])
        assert.equal(cjson.null, e["req.ctx.nan"])     -- JSON has no NaN
        assert.equal(cjson.null, e["req.ctx.missing"])
        assert.equal(cjson.null, e["req.ctx.raw"])     -- no ?raw=
    end)

    it("joins a repeated request header with \", \"", function()
        local _, e = get("/api/multi", { { "X-Multi", "one" }, { "X-Multi", "two" } })
        assert.equal("one, two", e["req.header.x-multi"])
        assert.equal(cjson.null, e.user)               -- absent: null
    end)

    it("escapes quotes, backslashes and control characters", function()
        local raw = 'q"b\\s\1\2\31\127 tab\tnl\ncr\r end'
        local _, e = get("/api/esc?raw=" .. raw:gsub("[^%w]", function(c)
            return fmt("%%%02X", c:byte())
        end), { { "X-User", 'a "quoted" \\ value' } })
        assert.equal(raw, e["req.ctx.raw"])
        assert.equal('a "quoted" \\ value', e.user)
        local line = h.read_file(log):match("[^\n]*" .. e.request_id .. "[^\n]*")
        assert.truthy(line:find('"req.ctx.raw":"q\\"b\\\\s\\u0001\\u0002\\u001f\\u007f tab\\tnl\\ncr\\r end"',
                                1, true), line)
    end)

    it("writes bytes that are not UTF-8 as U+FFFD, and keeps the UTF-8 that is", function()
        -- valid: é (2 bytes), € (3), 😀 (4); not: a lone 0xff, a stray
        -- continuation byte, an overlong '/', a surrogate, a cut sequence
        local bytes = "\195\169\226\130\172\240\159\152\128|\255|\128|\192\175|\237\160\128|\226\130"
        local pct = bytes:gsub(".", function(c) return fmt("%%%02X", c:byte()) end)
        local _, e = get("/api/utf8?raw=" .. pct, { { "X-User", "\255\254 caf\195\169" } })
        local R = "\239\191\189" -- U+FFFD in UTF-8 (cjson decodes \ufffd to it)
        assert.equal("\195\169\226\130\172\240\159\152\128|" .. R .. "|" .. R .. "|" ..
                     R .. R .. "|" .. R .. R .. R .. "|" .. R .. R, e["req.ctx.raw"])
        assert.equal(R .. R .. " caf\195\169", e.user)
    end)

    it("cuts a value at 4 KiB of JSON with \"...\", and a line at 32 KiB", function()
        local big = rep("b", 20000)
        local _, e = get("/api/big?hdr=X-Out:" .. rep("o", 9000) .. "&raw=" .. rep("r", 9000),
                         { { "X-Big", big }, { "X-User", rep("u", 9000) },
                           { "X-Tenant", rep("t", 9000) } })
        assert.equal(rep("b", 4096) .. "...", e["req.header.x-big"])
        assert.equal(rep("u", 4096) .. "...", e.user)
        assert.equal(rep("o", 4096) .. "...", e.out)
        assert.equal(rep("t", 4096) .. "...", e.tenant)
        assert.equal(rep("r", 4096) .. "...", e["req.ctx.raw"])
        -- every field is still there, the numbers after the long values too
        assert.equal(200, e.status)
        assert.is_number(e.total_time)
        assert.is_true(e._bytes <= 32 * 1024, tostring(e._bytes))
    end)

    it("cuts the later values of a line that would pass 32 KiB, and stays one object", function()
        -- ten values of 4 KiB or more (escaped: \u0001 is 6 bytes)
        local pct = rep("%01", 3000)
        local _, e = get("/api/huge?raw=" .. pct .. "&hdr=X-Out:" .. rep("o", 5000) ..
                         "&set=" .. rep("s", 5000),
                         { { "X-Big", rep("b", 5000) }, { "X-User", rep("u", 5000) },
                           { "X-Multi", rep("m", 5000) }, { "X-Tenant", rep("t", 5000) },
                           { "X-Pad1", rep("1", 5000) }, { "X-Pad2", rep("2", 5000) },
                           { "X-Pad3", rep("3", 5000) } })
        assert.is_true(e._bytes <= 32 * 1024, tostring(e._bytes))
        assert.is_true(e._bytes > 31 * 1024, tostring(e._bytes)) -- it was full
        -- the first values whole up to their own cap, the last ones shorter
        assert.equal(rep("u", 4096) .. "...", e.user)
        assert.equal(rep("m", 4096) .. "...", e["req.header.x-multi"])
        local last = e["req.header.x-pad3"]
        assert.is_true(#last < 4096 and last:sub(-3) == "...", #last)
        -- every field is there, the numbers after the long values too
        assert.equal(200, e.status)
        assert.equal("up", e.upstream)
        assert.is_number(e.total_time)
    end)

    it("times the phases of an attempt on a new connection", function()
        local _, e = get("/fresh/slow?delay=0.2")
        assert.equal("fresh", e.upstream)
        assert.equal(1, e.upstream_attempts)
        assert.is_number(e.upstream_connect_time)
        assert.equal(cjson.null, e.upstream_tls_time) -- plain HTTP
        assert.is_true(e.upstream_first_byte_time >= 0.19, tostring(e.upstream_first_byte_time))
        assert.is_true(e.upstream_time >= e.upstream_first_byte_time)
        assert.is_true(e.total_time >= e.upstream_time)
    end)

    it("has no connect time on a pooled connection", function()
        local c = h.connect(gw.port)
        c:request { path = "/api/pool1" }
        local second = c:request { path = "/api/pool2" }
        c:close()
        local e = entry(second.headers["x-request-id"])
        assert.equal(cjson.null, e.upstream_connect_time)
        assert.is_number(e.upstream_first_byte_time)
    end)

    it("times the TLS handshake of a new TLS connection", function()
        local _, e = get("/tls/x")
        assert.equal("tls", e.upstream)
        assert.is_number(e.upstream_connect_time)
        assert.is_number(e.upstream_tls_time)
        assert.is_true(e.upstream_tls_time > 0)
        local c = h.connect(gw.port)
        c:request { path = "/pooled_tls/1" }
        local res = c:request { path = "/pooled_tls/2" }
        c:close()
        e = entry(res.headers["x-request-id"])
        assert.equal(cjson.null, e.upstream_tls_time) -- a resumed keep-alive connection
    end)

    it("counts the attempts of a retried request", function()
        -- round robin over a dead target and a live one: one of the two
        -- requests tries the dead one first, then the live one
        local counts = {}
        for i = 1, 2 do
            local res, e = get("/half/" .. i)
            assert.equal(200, res.status)
            counts[#counts + 1] = e.upstream_attempts
        end
        table.sort(counts)
        assert.same({ 1, 2 }, counts)
    end)

    it("logs 0 attempts and null phases for an answer made by the gateway", function()
        local _, e = get("/local")
        assert.equal(0, e.upstream_attempts)
        assert.equal(cjson.null, e.upstream)
        assert.equal(cjson.null, e.upstream_connect_time)
        assert.equal(cjson.null, e.upstream_first_byte_time)
        assert.equal(cjson.null, e.upstream_time)
        assert.equal("text/plain; charset=utf-8", e["res.header.content-type"])
    end)

    it("writes one line per request", function()
        local before = #strict_lines(log)
        local ids = {}
        for i = 1, 20 do
            local res = h.http(gw.port, { path = "/api/n" .. i,
                                          headers = { { "X-User", "\255" .. i } } })
            ids[#ids + 1] = res.headers["x-request-id"]
        end
        for _, id in ipairs(ids) do entry(id) end
        assert.equal(before + 20, #strict_lines(log))
    end)
end)

describe("access log fields of the client's protocol, splits and mirrors", function()
    local gw, log

    setup(function()
        local up = h.start_upstream { name = "up" }
        log = h.tmpfile("access-proto.log")
        gw = h.start_gateway([[
local gw = require "moongate"
gw.settings { access_log = { path = "{{LOG}}", fields = {
    "request_id", "proto", "how=split", "mirror", "upstream", "status" } } }
gw.listen { port = {{PORT}}, host = "127.0.0.1", http2 = true }
gw.upstream("a", { "{{UP}}" })
gw.upstream("shadow", { "{{UP}}" })
gw.route { path = "/split/**", split = { { upstream = "a", weight = 1 },
                                         { upstream = "shadow", weight = 1 } } }
gw.route { path = "/mirrored/**", upstream = "a", mirror = { upstream = "shadow" } }
gw.route { path = "/plain/**", upstream = "a" }
]], { vars = { UP = up.addr, LOG = log } })
    end)

    teardown(h.cleanup)

    local function entry(id) return entry_in(log, id) end

    it("writes proto, split and mirror when listed; null where a route has none", function()
        local res = h.http(gw.port, { path = "/split/x" })
        assert.equal(200, res.status)
        local e = entry(res.headers["x-request-id"])
        assert.same({ "HTTP/1.1", "weight", cjson.null, 200 }, { e.proto, e.how, e.mirror, e.status })
        assert.truthy(e.upstream == "a" or e.upstream == "shadow", e.upstream)
        res = h.http(gw.port, { path = "/mirrored/x" })
        e = entry(res.headers["x-request-id"])
        assert.same({ "HTTP/1.1", cjson.null, "sent", "a" }, { e.proto, e.how, e.mirror, e.upstream })
        res = h.http2(gw.port, { path = "/plain/x" })
        assert.equal(200, res.status)
        e = entry(res.headers["x-request-id"])
        assert.same({ "HTTP/2", cjson.null, cjson.null, "a" }, { e.proto, e.how, e.mirror, e.upstream })
    end)
end)

describe("access log fields at load", function()
    teardown(h.cleanup)

    it("refuses an unknown field with file:line and what is valid", function()
        local code, out, path = h.check_config([[
local gw = require "moongate"
gw.settings { access_log = { path = "stdout", fields = { "time", "statsu" } } }
gw.listen { port = 8080 }
]])
        assert.equal(1, code, out)
        assert.truthy(out:find(path .. ":2: settings.access_log.fields[2] must be a field: " ..
                               "a built-in one (time, request_id,", 1, true), out)
        assert.truthy(out:find('got string "statsu"', 1, true), out)
    end)

    it("refuses two fields under one key", function()
        local code, out, path = h.check_config([[
local gw = require "moongate"
gw.settings { access_log = { fields = { "status", "status=req.header.x-status" } } }
gw.listen { port = 8080 }
]])
        assert.equal(1, code, out)
        assert.truthy(out:find(path .. ':2: settings.access_log.fields[2]: the key "status" ' ..
                               "is fields[1]'s too", 1, true), out)
    end)
end)
