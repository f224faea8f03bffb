-- spec/unit/compression_spec.lua: moongate.compression through the testing
-- kit (moongate.testing): the gateway's own Accept-Encoding negotiation
-- and head decision (src/compress.c, through the test library), answers
-- compressed as the gateway compresses them, and the options refused at
-- load with the config's file:line.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local t = require "moongate.testing"
local h = require "spec.support.helpers"
local cdefs = require "moongate.cdefs"

local HEAD = [[
local gw = require "moongate"
local compression = require "moongate.compression"
gw.listen { port = 8080 }
gw.upstream("up", { "127.0.0.1:9" })
]]
local NHEAD = select(2, HEAD:gsub("\n", ""))

local function config(body)
    local path = h.tmpdir() .. "/gateway.lua"
    h.write_file(path, HEAD .. body)
    return path
end

local function errors(body)
    local g, errs = t.load(config(body))
    assert.is_nil(g, "the config loaded")
    local out = {}
    for i, e in ipairs(errs) do
        local line, msg = e:match("^.-gateway%.lua:(%d+): (.*)$")
        assert(line, e)
        out[i] = (tonumber(line) - NHEAD) .. ": " .. msg
    end
    return out
end

-- body decoded by the system's gzip or python3-brotli
local function decode(enc, body)
    local f = h.tmpfile("body." .. enc, body)
    local cmd = enc == "gzip" and ("gzip -dc < " .. f)
        or ("/usr/bin/python3 -c 'import brotli,sys; sys.stdout.buffer.write(" ..
            "brotli.decompress(open(sys.argv[1],\"rb\").read()))' " .. f)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    return out
end

local TEXT = ("moongate compresses this line of text as it streams by.\n"):rep(100)

describe("compression: Accept-Encoding", function()
    local GZ, BR = 2, 4
    local function pick(v, allowed)
        local n = cdefs.C.mg_compress_negotiate(v, #v, allowed or GZ + BR)
        return ({ [0] = "identity", "gzip", "br" })[n]
    end

    it("takes the highest q, br before gzip at equal q, and honours q=0, * and identity", function()
        assert.equal("br", pick("gzip, br"))
        assert.equal("br", pick("br;q=0.8, gzip;q=0.8"))
        assert.equal("gzip", pick("gzip;q=1, br;q=0.5"))
        assert.equal("gzip", pick("br;q=0, gzip"))
        assert.equal("gzip", pick("gzip", GZ + BR))
        assert.equal("gzip", pick("br, gzip", GZ)) -- brotli off
        assert.equal("br", pick("*"))
        assert.equal("gzip", pick("*;q=0.5, gzip;q=0.6, br;q=0.4"))
        assert.equal("identity", pick("*;q=0"))
        assert.equal("identity", pick("gzip;q=0, br;q=0"))
        assert.equal("identity", pick("deflate, compress"))
        assert.equal("identity", pick(""))
        assert.equal("identity", pick("identity;q=1, gzip;q=0.5"))
        assert.equal("gzip", pick("identity;q=0, gzip;q=0.5"))
        assert.equal("gzip", pick(" GZIP ; Q=0.9 ,br;q=0.1"))
        assert.equal("gzip", pick("x-gzip"))
        -- a malformed q drops its element only
        assert.equal("gzip", pick("br;q=2, gzip"))
        assert.equal("gzip", pick("br;q=0.1234, gzip;q=0.1"))
        assert.equal("gzip", pick("br;q=abc, gzip;q=0.001"))
    end)
end)

describe("compression through the testing kit", function()
    local g = assert(t.load(config([[
gw.route { path = "/c/**", upstream = "up", policies = {
    compression.policy { min_size = 1000, types = { "text/*", "application/json" } } } }
gw.route { path = "/gz/**", upstream = "up", policies = {
    compression.policy { brotli = false, gzip = { level = 9 } } } }
]])))
    local function req(path, ae, up, method)
        return g:request { path = path, method = method,
                           headers = { ["Accept-Encoding"] = ae },
                           upstream_response = up or { status = 200, body = TEXT,
                               headers = { ["Content-Type"] = "text/plain; charset=utf-8",
                                           ETag = '"v1"' } } }
    end

    it("compresses to what decodes to the original; chunked, Vary, a weak ETag", function()
        for _, enc in ipairs({ "gzip", "br" }) do
            local d = req("/c/x", enc)
            assert.equal(200, d.status)
            assert.equal(enc, d.headers["content-encoding"])
            assert.equal("Accept-Encoding", d.headers.vary)
            assert.equal('W/"v1"', d.headers.etag)
            assert.is_nil(d.headers["content-length"])
            assert.equal("chunked", d.headers["transfer-encoding"])
            assert.is_true(#d.body < #TEXT / 4, enc)
            assert.equal(TEXT, decode(enc, d.body))
        end
        local d = req("/gz/x", "br, gzip")
        assert.equal("gzip", d.headers["content-encoding"])
        assert.equal(TEXT, decode("gzip", d.body))
    end)

    it("sends the identity with Vary to a client that asks for no coding", function()
        local d = req("/c/x", "identity")
        assert.is_nil(d.headers["content-encoding"])
        assert.equal("Accept-Encoding", d.headers.vary)
        assert.equal('"v1"', d.headers.etag)
        assert.equal(tostring(#TEXT), d.headers["content-length"])
        assert.equal(TEXT, d.body)
    end)

    it("merges Vary: adds Accept-Encoding once, keeps one that names it or *", function()
        local function vary(v)
            return req("/c/x", "gzip", { status = 200, body = TEXT, headers = {
                ["Content-Type"] = "text/html", Vary = v } }).headers.vary
        end
        assert.equal("Origin, Accept-Encoding", vary("Origin"))
        assert.equal("accept-encoding", vary("accept-encoding"))
        assert.equal("*", vary("*"))
    end)

    it("leaves alone small, other-typed, encoded, no-transform, HEAD, 204, 304 and 206 answers", function()
        local function up(status, extra, body)
            local hd = { ["Content-Type"] = "text/plain" }
            for k, v in pairs(extra or {}) do hd[k] = v end
            return { status = status, headers = hd, body = body or TEXT }
        end
        local cases = {
            { "small", up(200, nil, ("x"):rep(999)) },
            { "image", up(200, { ["Content-Type"] = "image/png" }) },
            { "untyped", { status = 200, headers = {}, body = TEXT } },
            { "encoded", up(200, { ["Content-Encoding"] = "gzip" }) },
            { "no-transform", up(200, { ["Cache-Control"] = "public, no-transform" }) },
            { "partial", up(206, { ["Content-Range"] = "bytes 0-5599/9999" }) },
            { "no content", up(204, nil, "") },
            { "not modified", up(304, nil, "") },
        }
        for _, c in ipairs(cases) do
            local d = req("/c/x", "gzip, br", c[2])
            -- the upstream's own coding only, its body as it came
            assert.equal(c[1] == "encoded" and "gzip" or nil, d.headers["content-encoding"], c[1])
            assert.equal(c[2].body, d.body, c[1])
            assert.is_nil(d.headers.vary, c[1])
        end
        local d = req("/c/x", "gzip", nil, "HEAD")
        assert.is_nil(d.headers["content-encoding"])
        assert.equal(tostring(#TEXT), d.headers["content-length"])
    end)
end)

describe("compression's options at load", function()
    it("refuses bad ones, every one at its line", function()
        local errs = errors([[
gw.route { path = "/a", upstream = "up", policies = {
    compression.policy { gzip = { level = 10 }, brotli = { quality = 12, window = 30 } } } }
gw.route { path = "/b", upstream = "up", policies = {
    compression.policy { types = { "text/html", "json" }, min_size = -1 } } }
gw.route { path = "/c", upstream = "up", policies = {
    compression.policy { gzip = false, brotli = false } } }
gw.route { path = "/d", upstream = "up", policies = {
    compression.policy { level = 1, gzip = { levl = 1 } } } }
gw.route { path = "/e", upstream = "up", policies = { compression.policy "gzip" } }
]])
        assert.equal(9, #errs)
        assert.equal("2: compression.policy.gzip.level must be an integer 1-9, got number 10", errs[1])
        assert.equal("2: compression.policy.brotli.quality must be an integer 0-11, got number 12", errs[2])
        assert.equal("2: compression.policy.brotli.window must be an integer 10-24, got number 30", errs[3])
        assert.equal('4: compression.policy.types[2] "json" is not a media type like "text/html" ' ..
                     'or "text/*"', errs[4])
        assert.matches("^4: compression.policy.min_size must be an integer 0%-", errs[5])
        assert.equal("6: compression.policy.gzip and brotli are both false: nothing to compress with",
                     errs[6])
        assert.matches("^8: unknown key 'level' in compression.policy", errs[7])
        assert.matches("^8: unknown key 'levl' in compression.policy.gzip", errs[8])
        assert.matches("^9: compression.policy takes a table like ", errs[9])
    end)
end)
