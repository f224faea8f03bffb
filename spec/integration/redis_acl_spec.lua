-- Rate limits through a redis-server that has an ACL user and the default
-- user off (as managed Redis services do): AUTH username password.
local h = require "spec.support.helpers"

local fmt = string.format

describe("Redis with an ACL user", function()
    local port, gw, up

    setup(function()
        port = h.free_port()
        local dir = h.tmpdir()
        local acl = dir .. "/users.acl"
        local f = io.open(acl, "w")
        f:write("user limiter on >s3cret-pass ~* &* +@all\nuser default off\n")
        f:close()
        local p = h.spawn(fmt("exec redis-server --port %d --bind 127.0.0.1 --save '' " ..
                              "--appendonly no --dir %s --aclfile %s --daemonize no",
                              port, h.shq(dir), h.shq(acl)), "redis-acl")
        local deadline = h.now() + 10
        while not h.sh(fmt("redis-cli -p %d --user limiter --pass s3cret-pass PING 2>&1",
                           port)):find("PONG", 1, true) do
            assert(p:alive() and h.now() < deadline, "redis-server did not start:\n" .. p:log())
            h.sleep(0.02)
        end
        -- the default user is really off
        assert.truthy(h.sh(fmt("redis-cli -p %d PING 2>&1", port)):find("NOAUTH", 1, true))
        up = h.start_upstream { name = "up" }
        gw = h.start_gateway([[
local gw = require "moongate"
local limit = require "moongate.ratelimit"
gw.settings { workers = 1 }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("up", { "{{UP}}" })
gw.route { path = "/good", upstream = "up", policies = { limit.policy { rate = 2, per = 60,
    key = function() return "k" end, on_redis_error = "deny",
    redis = { port = {{R}}, username = "limiter", password = "s3cret-pass", timeout = 2 } } } }
gw.route { path = "/bad", upstream = "up", policies = { limit.policy { rate = 2, per = 60,
    key = function() return "k" end, on_redis_error = "deny",
    redis = { port = {{R}}, username = "limiter", password = "wrong", timeout = 2 } } } }
]], { vars = { UP = up, R = port } })
    end)

    teardown(h.cleanup)

    it("limits through the ACL user", function()
        assert.equal(200, h.http(gw.port, { path = "/good" }).status)
        assert.equal(200, h.http(gw.port, { path = "/good" }).status)
        assert.equal(429, h.http(gw.port, { path = "/good" }).status)
        local keys = h.sh(fmt("redis-cli -p %d --user limiter --pass s3cret-pass --no-auth-warning " ..
                              "--scan 2>&1", port))
        assert.truthy(keys:match("%S"), "no key in redis: " .. keys)
    end)

    it("refuses a wrong password with a clear log line", function()
        -- on_redis_error = "deny": refused as over the limit
        assert.equal(429, h.http(gw.port, { path = "/bad" }).status)
        local deadline, log = h.now() + 10, ""
        repeat
            log = gw:log()
            if log:find("WRONGPASS", 1, true) then break end
            h.sleep(0.05)
        until h.now() > deadline
        assert.truthy(log:find("redis 127.0.0.1:" .. port .. " unavailable (refused: WRONGPASS",
                               1, true), log)
        -- the password itself is never logged
        assert.is_nil(log:find("s3cret", 1, true))
    end)
end)
