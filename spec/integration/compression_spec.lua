-- moongate.compression through the real binary: a Python upstream
-- (spec/support/compress_tool.py) streams text; curl --compressed, Python's
-- gzip/zlib and python3-brotli decode what the gateway sends back to the
-- original bytes; a 50 MiB answer goes through with the gateway's memory
-- flat while its client stops reading; the skips, Vary, and the cache
-- serving each client its encoding.
local h = require "spec.support.helpers"
local fmt = string.format

local PY = "/usr/bin/python3" -- Debian's: python3-brotli
local TOOL = "spec/support/compress_tool.py"

local CONFIG = [[
local gw = require "moongate"
local compression = require "moongate.compression"
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{U}}" }, { read_timeout = 30 })
local comp = compression.policy { min_size = 1000, types = { "text/*", "application/json" } }
gw.route { path = "/c/**", upstream = "up", policies = { comp } }
gw.route { path = "/cache/**", upstream = "up", policies = { comp }, cache = { ttl = 30 } }
gw.route { path = "/plain/**", upstream = "up" }
]]

local function sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    return out
end

describe("compression through the gateway", function()
    local gw, up, up_port

    setup(function()
        up_port = h.free_port()
        up = h.spawn(fmt("exec %s -u %s serve --port %d", PY, TOOL, up_port), "compress-upstream")
        h.eventually(10, function() return up:log():find("ready", 1, true) end, "upstream ready")
        gw = h.start_gateway(CONFIG, { workers = 1, vars = { U = "127.0.0.1:" .. up_port } })
    end)

    teardown(function()
        h.cleanup(gw, up)
    end)

    -- the Python client: one request, decoded as it is read
    local function get(path, ae, method)
        local out = sh(fmt("%s %s get %d %q %q %s 2>&1", PY, TOOL, gw.port, path, ae or "-",
                           method or "GET"))
        local ok, d = pcall(h.json, out)
        assert(ok and type(d) == "table", out)
        return d
    end
    local function hdr(d, name)
        local v = d.headers[name]
        return v and table.concat(v, ", ") or nil
    end

    it("gzip and brotli answers decode to the original (Python gzip, python3-brotli)", function()
        for _, path in ipairs({ "/c/t?size=300000", "/c/t?size=300000&chunked=1" }) do
            for _, ae in ipairs({ "gzip", "br", "gzip;q=1, br;q=0.5", "br, gzip" }) do
                local d = get(path, ae)
                local want = ae == "gzip;q=1, br;q=0.5" and "gzip" or ae == "br, gzip" and "br" or ae
                assert.equal(200, d.status)
                assert.equal(want, hdr(d, "content-encoding"), path .. " " .. ae)
                assert.is_nil(hdr(d, "content-length"))
                assert.equal("chunked", hdr(d, "transfer-encoding"))
                assert.equal("Accept-Encoding", hdr(d, "vary"))
                assert.equal(300000, d.body_len)
                assert.equal(d.expect_sha256, d.body_sha256)
                assert.is_true(d.wire_len < 300000 / 5, want .. " " .. d.wire_len)
            end
        end
        -- the client that wants neither gets the identity, with Vary
        local d = get("/c/t?size=300000", "identity")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.equal("300000", hdr(d, "content-length"))
        assert.equal("Accept-Encoding", hdr(d, "vary"))
        assert.equal(d.expect_sha256, d.body_sha256)
    end)

    it("curl --compressed gets the original bytes", function()
        local hfile = h.tmpfile("curl.head")
        local got = sh(fmt("curl -s --compressed -D %s 'http://127.0.0.1:%d/c/t?size=200000' | sha256sum",
                           hfile, gw.port)):match("^(%x+)")
        local want = sh(fmt("%s %s sha 200000", PY, TOOL)):match("^(%x+)")
        assert.equal(want, got)
        local head = h.read_file(hfile):lower()
        assert.matches("content%-encoding: [gb][zr]", head) -- curl asks for gzip and br
        assert.not_matches("content%-length", head)
    end)

    it("leaves alone encoded, no-transform, small, other-typed, HEAD, 304 and 206 answers", function()
        local function same(path, method, status)
            local d = get(path, "gzip, br", method)
            assert.equal(status or 200, d.status, path)
            return d
        end
        local d = same("/c/t?size=5000&hdr=Content-Encoding:identity2")
        assert.equal("identity2", hdr(d, "content-encoding"))
        assert.equal("5000", hdr(d, "content-length"))
        assert.is_nil(hdr(d, "vary"))
        d = same("/c/t?size=5000&hdr=Cache-Control:no-transform")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.equal("5000", hdr(d, "content-length"))
        d = same("/c/t?size=999")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.equal("999", hdr(d, "content-length"))
        d = same("/c/t?size=5000&ctype=image/png")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.is_nil(hdr(d, "vary"))
        d = same("/c/t?size=5000", "HEAD")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.equal("5000", hdr(d, "content-length"))
        d = same("/c/t?status=304", "GET", 304)
        assert.is_nil(hdr(d, "content-encoding"))
        d = same("/c/t?size=5000&status=206&hdr=Content-Range:bytes%200-4999/9000", "GET", 206)
        assert.is_nil(hdr(d, "content-encoding"))
        assert.equal("5000", hdr(d, "content-length"))
        -- a route without the policy: never
        d = same("/plain/t?size=5000")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.is_nil(hdr(d, "vary"))
    end)

    it("merges Vary and weakens the ETag of what it compresses", function()
        local d = get("/c/t?size=5000&hdr=Vary:Origin&hdr=ETag:%22v7%22", "gzip")
        assert.equal("gzip", hdr(d, "content-encoding"))
        assert.equal("Origin, Accept-Encoding", hdr(d, "vary"))
        assert.equal('W/"v7"', hdr(d, "etag"))
        d = get("/c/t?size=5000&hdr=Vary:Accept-Encoding,%20Origin&hdr=ETag:%22v7%22", "identity")
        assert.is_nil(hdr(d, "content-encoding"))
        assert.equal("Accept-Encoding, Origin", hdr(d, "vary"))
        assert.equal('"v7"', hdr(d, "etag"))
    end)

    it("the cache keeps the identity: a gzip client, then an identity and a brotli one, each get theirs", function()
        local function count()
            return tonumber(h.http(up_port, { path = "/__count" }).body)
        end
        local before = count()
        local path = "/cache/t?size=100000"
        local d1 = get(path, "gzip")
        assert.equal("gzip", hdr(d1, "content-encoding"))
        assert.equal(d1.expect_sha256, d1.body_sha256)
        local d2 = get(path, "identity")
        assert.is_nil(hdr(d2, "content-encoding"))
        assert.equal(100000, d2.wire_len)
        assert.equal(d2.expect_sha256, d2.body_sha256)
        assert.matches("hit", hdr(d2, "cache-status"))
        local d3 = get(path, "br")
        assert.equal("br", hdr(d3, "content-encoding"))
        assert.equal(d3.expect_sha256, d3.body_sha256)
        assert.matches("hit", hdr(d3, "cache-status"))
        assert.equal("Accept-Encoding", hdr(d3, "vary"))
        assert.equal(1, count() - before) -- one fetch for the three
    end)

    it("a client gone in the middle of a compressed answer costs nothing after (its stream freed)", function()
        for _, ae in ipairs({ "gzip", "br" }) do
            local flag = h.tmpfile("never-" .. ae)
            os.remove(flag)
            local client = h.spawn(fmt("env CT_PAUSE_AT=65536 CT_PAUSE_FILE=%s %s %s get %d %q %s",
                                       flag, PY, TOOL, gw.port, "/c/t?size=20000000&rand=1", ae),
                                   "compress-gone")
            h.eventually(60, function() return client:log():find("paused", 1, true) end,
                         "the client paused")
            client:kill("KILL")
            local d = get("/c/t?size=5000", ae)
            assert.equal(ae, hdr(d, "content-encoding"))
            assert.equal(d.expect_sha256, d.body_sha256)
        end
        gw:assert_alive()
    end)

    it("streams a 50 MiB answer with the gateway's memory flat, its client paused", function()
        -- text (25 times smaller on the wire: the socket buffers take much
        -- of it while the client pauses) and bytes that do not compress
        -- (the gateway must stop reading its upstream)
        for _, case in ipairs({ { "gzip", "" }, { "br", "" }, { "gzip", "&rand=1" } }) do
            local ae, rand = case[1], case[2]
            local size = 50 * 1024 * 1024
            local flag = h.tmpfile("go-" .. ae)
            os.remove(flag)
            local rss0 = gw:rss()
            local client = h.spawn(fmt("env CT_PAUSE_AT=65536 CT_PAUSE_FILE=%s %s %s get %d %q %s",
                                       flag, PY, TOOL, gw.port, "/c/t?size=" .. size .. "&chunked=1" .. rand, ae),
                                   "compress-client")
            h.eventually(60, function() return client:log():find("paused", 1, true) end,
                         "the client paused")
            -- while the client does not read: the gateway reads no further
            -- than its queues allow (sampled over a second)
            local during = 0
            for _ = 1, 20 do
                during = math.max(during, gw:rss())
                require("socket").sleep(0.05)
            end
            h.write_file(flag, "go")
            assert.equal(0, client:wait_exit(120 * h.SLOW), client:log())
            local d = h.json(client:log():match("(%b{})%s*$"))
            local after = gw:rss()
            print(fmt("\n%s%s 50 MiB: gateway RSS before %d KiB, during (client paused) %d KiB, " ..
                      "after %d KiB; %d bytes on the wire", ae, rand, rss0, during, after, d.wire_len))
            assert.equal(ae, hdr(d, "content-encoding"))
            assert.equal(size, d.body_len)
            assert.equal(d.expect_sha256, d.body_sha256)
            local bound = 20 * 1024 * h.SLOW
            assert.is_true(during - rss0 < bound, fmt("during: +%d KiB", during - rss0))
            assert.is_true(after - rss0 < bound, fmt("after: +%d KiB", after - rss0))
        end
    end)
end)
