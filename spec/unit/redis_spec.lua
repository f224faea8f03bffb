-- spec/unit/redis_spec.lua: lua/moongate/redis.lua's options, checked when
-- a client is made (no server): "host:port", redis[s]:// URLs, `tls` (the
-- TLS configuration is built through the test library, so its files are
-- read here), and what the messages never show.
local redis = require "moongate.redis"

local THIS = debug.getinfo(1, "S").short_src:match("[^/]*$")
local CA = "/etc/ssl/certs/ca-certificates.crt"

-- The error raised by f, which must be blamed on this file.
local function load_error(f)
    local ok, err = pcall(f)
    assert.is_false(ok, "no error raised")
    err = tostring(err)
    assert.matches(THIS .. ":%d+: ", err)
    return (err:gsub("^.-:%d+: ", ""))
end

local function fields(c)
    return { host = c.host, port = c.port, username = c.username, password = c.password,
             db = c.db, tls = c.tls ~= nil }
end

describe("redis.new", function()
    it("takes host:port and the defaults", function()
        assert.same({ host = "10.0.0.7", port = 6380, db = 0, tls = false },
                    fields(redis.new "10.0.0.7:6380"))
        assert.same({ host = "::1", port = 6379, db = 0, tls = false },
                    fields(redis.new "[::1]:6379"))
    end)

    it("reads a redis:// URL", function()
        assert.same({ host = "cache.internal", port = 6379, db = 0, tls = false },
                    fields(redis.new "redis://cache.internal"))
        assert.same({ host = "10.0.0.7", port = 7000, db = 3, password = "pw", tls = false },
                    fields(redis.new "redis://:pw@10.0.0.7:7000/3"))
        assert.same({ host = "::1", port = 6379, db = 0, tls = false },
                    fields(redis.new "redis://[::1]/"))
    end)

    it("reads a rediss:// URL as TLS, user and password unescaped", function()
        local c = redis.new "rediss://limiter:p%40ss:w@redis.example.com:6380/1"
        assert.same({ host = "redis.example.com", port = 6380, db = 1, username = "limiter",
                      password = "p@ss:w", tls = true }, fields(c))
        -- the defaults: verify against the system bundle
        assert.is_true(c.tls.verify)
        assert.is_nil(c.tls.ca)
        assert.is_true(c.tls.session_reuse)
    end)

    it("takes url beside the other options, and tls options with rediss", function()
        local c = redis.new { url = "rediss://127.0.0.1:6380", pool = 4, timeout = 0.5,
                              tls = { ca = CA, sni = "redis.internal" } }
        assert.same({ host = "127.0.0.1", port = 6380, db = 0, tls = true }, fields(c))
        assert.equal(4, c.pool)
        assert.equal(0.5, c.timeout)
        assert.equal(CA, c.tls.ca)
        assert.equal("redis.internal", c.tls.sni)
        -- tls without a url: TLS to host:port
        assert.is_true(redis.new({ host = "127.0.0.1", tls = true }).tls.verify)
    end)

    it("refuses what a URL cannot hold", function()
        assert.equal('x: give url or port, not both (the url holds host, port, username, ' ..
                     'password and db)',
                     load_error(function() redis.new({ url = "redis://h", port = 1 }, "x") end))
        assert.equal("x.tls needs a rediss:// url (redis:// is plain TCP)",
                     load_error(function() redis.new({ url = "redis://h", tls = true }, "x") end))
        assert.matches('^x.url has a user and no password',
                       load_error(function() redis.new("redis://user@h", "x") end))
        for _, bad in ipairs({ "http://h", "redis://", "redis://h:port", "redis://h/x",
                               "redis://h?db=1", "redis://[h" }) do
            assert.matches('^x.url must be a URL like "rediss://user:password@host:6380/0"',
                           load_error(function() redis.new(bad, "x") end), 1, false, bad)
        end
        assert.matches("x.port must be an integer 1%-65535",
                       load_error(function() redis.new("redis://h:0", "x") end))
    end)

    it("never shows a URL's password", function()
        local err = load_error(function() redis.new("rediss://u:hunter2@/x", "x") end)
        assert.is_nil(err:find("hunter2", 1, true), err)
        assert.truthy(err:find('"rediss://u:***@/x"', 1, true), err)
    end)

    it("checks tls as upstream.tls, and reads its files now", function()
        assert.equal("unknown key 'verfiy' in x.tls (did you mean 'verify'? valid: verify, " ..
                     "ca, sni, cert, key, min_version, ciphers, session_reuse)",
                     load_error(function()
                         redis.new({ host = "h", tls = { verfiy = false } }, "x") end))
        assert.equal("x.tls.key is missing: a client certificate needs both cert and key",
                     load_error(function()
                         redis.new({ host = "h", tls = { cert = CA } }, "x") end))
        assert.matches("^x.tls: cannot load the CA bundle '/nonexistent/ca.pem': No such file",
                       load_error(function()
                           redis.new({ host = "h", tls = { ca = "/nonexistent/ca.pem" } }, "x")
                       end))
        assert.equal('x.tls must be true or a table like { ca = "certs/ca.pem" }, got ' ..
                     'string "yes"',
                     load_error(function() redis.new({ host = "h", tls = "yes" }, "x") end))
    end)
end)
