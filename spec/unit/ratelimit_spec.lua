-- spec/unit/ratelimit_spec.lua: lua/moongate/ratelimit.lua without the
-- gateway: options checked at load, decisions (local mode, through the
-- test library), key helpers, the policy on stand-in requests, and what
-- cluster mode decides when it cannot reach Redis.
local limit = require "moongate.ratelimit"
local runtime = require "moongate.runtime"

local THIS = debug.getinfo(1, "S").short_src:match("[^/]*$")

-- The error raised by f, which must be blamed on this file.
local function load_error(f)
    local ok, err = pcall(f)
    assert.is_false(ok, "no error raised")
    err = tostring(err)
    assert.matches(THIS .. ":%d+: ", err)
    return err:gsub("^.-:%d+: ", "")
end

local seq = 0
local function uniq(prefix)
    seq = seq + 1
    return (prefix or "u") .. seq .. "-" .. tostring(os.time())
end

describe("limit.new options", function()
    it("need a rate", function()
        assert.equal("limit.new.rate is required (requests per `per` seconds)",
                     load_error(function() limit.new {} end))
    end)

    it("are blamed on the caller's line", function()
        local line = debug.getinfo(1, "l").currentline + 1
        local ok, err = pcall(function() limit.new { rate = "100" } end)
        assert.is_false(ok)
        assert.matches(THIS .. ":" .. line .. ": limit.new.rate must be a number > 0 " ..
                       '%(requests per `per` seconds%), got string "100"', err)
    end)

    it("reject unknown keys, listing the valid ones", function()
        local err = load_error(function() limit.new { rate = 1, rat = 2 } end)
        assert.equal("unknown key 'rat' in limit.new (did you mean 'rate'? " ..
                     "valid: algorithm, burst, " ..
                     "dict, fallback, name, on_redis_error, per, rate, redis)", err)
    end)

    it("check each value", function()
        assert.matches("limit.new.per must be a number > 0",
                       load_error(function() limit.new { rate = 1, per = -1 } end))
        assert.matches('limit.new.algorithm must be "sliding" or "gcra", got string "fixed"',
                       load_error(function()
                           limit.new { rate = 1, algorithm = "fixed" } end))
        assert.matches('limit.new.burst only applies to algorithm = "gcra"',
                       load_error(function() limit.new { rate = 1, burst = 2 } end))
        assert.matches("limit.new.burst must be a number >= 1",
                       load_error(function()
                           limit.new { rate = 1, algorithm = "gcra", burst = 0.5 } end))
        assert.matches("limit.new.rate must be at least 1 for the sliding window, " ..
                       "got 0.5 %(for slower rates raise per: rate = 1, per = 2%)",
                       load_error(function() limit.new { rate = 0.5 } end))
        assert.matches("limit.new.dict must be a shared dict name",
                       load_error(function() limit.new { rate = 1, dict = "a b" } end))
        assert.matches("limit.new.name must be a non%-empty string",
                       load_error(function() limit.new { rate = 1, name = "" } end))
    end)

    it("keep Redis options for cluster mode", function()
        assert.matches("limit.new.fallback only applies with redis",
                       load_error(function()
                           limit.new { rate = 1, fallback = { rate = 1 } } end))
        assert.matches("limit.new.on_redis_error only applies with redis",
                       load_error(function()
                           limit.new { rate = 1, on_redis_error = "deny" } end))
        assert.matches('limit.new.on_redis_error must be "allow" or "deny"',
                       load_error(function()
                           limit.new { rate = 1, redis = {}, on_redis_error = "open" } end))
        assert.matches("limit.new.redis.port must be an integer 1%-65535, got number 0",
                       load_error(function()
                           limit.new { rate = 1, redis = { port = 0 } } end))
        assert.matches("unknown key 'hots' in limit.new.redis",
                       load_error(function()
                           limit.new { rate = 1, redis = { hots = "x" } } end))
        assert.matches('limit.new.redis must be "host:port", a URL like "rediss://' ..
                       'user:password@host:6380/0" or a table',
                       load_error(function() limit.new { rate = 1, redis = "x" } end))
        assert.matches("unknown key 'redis' in limit.new.fallback",
                       load_error(function()
                           limit.new { rate = 1, redis = {}, fallback = {
                               rate = 1, redis = {} } } end))
    end)
end)

describe("a limiter", function()
    it("has defaults: sliding, per 1 s, limit = rate", function()
        local l = limit.new { rate = 10 }
        assert.same({ "sliding", 1, 10, "ratelimit" },
                    { l.algorithm, l.per, l.limit, l.dict })
        local g = limit.new { rate = 10, per = 60, algorithm = "gcra" }
        assert.same({ 10, 10 }, { g.burst, g.limit })
        assert.equal(1, limit.new { rate = 0.5, algorithm = "gcra" }.burst)
    end)

    it("is named by its parameters unless given a name", function()
        assert.equal("s100/1:", limit.new { rate = 100 }._ns)
        assert.equal("s100/0.5:", limit.new { rate = 100, per = 0.5 }._ns)
        assert.equal("g5/1/2:", limit.new { rate = 5, algorithm = "gcra", burst = 2 }._ns)
        assert.equal("login:", limit.new { rate = 5, name = "login" }._ns)
        local c = limit.new { rate = 5, redis = { prefix = "x:" } }
        assert.equal("x:s5/1:", c._rkey)
        assert.equal("127.0.0.1", c.redis.host)
        assert.equal(6379, c.redis.port)
        assert.equal("10.0.0.7", limit.new { rate = 5, redis = "10.0.0.7:6380" }.redis.host)
    end)

    it("answers allowed, remaining, reset and retry_after", function()
        local l = limit.new { rate = 3, per = 10, name = uniq() }
        for i = 1, 3 do
            local ok, remaining, reset, retry = l:allow("k")
            assert.same({ true, 3 - i, 0 }, { ok, remaining, retry })
            assert.is_true(reset > 9.9 and reset <= 10)
        end
        local ok, remaining, reset, retry = l:allow("k")
        assert.same({ false, 0 }, { ok, remaining })
        assert.is_true(reset > 9.9 and reset <= 10)
        assert.is_true(retry > 13.2 and retry <= 13.34)
        assert.is_true((l:allow("other")))
        assert.is_true((l:allow(42)))
    end)

    it("decides at a given time with allow_at", function()
        local l = limit.new { rate = 2, per = 1, algorithm = "gcra", burst = 1,
                              name = uniq() }
        assert.is_true((l:allow_at("k", 1, 1000)))
        assert.is_false((l:allow_at("k", 1, 1499)))
        assert.is_true((l:allow_at("k", 1, 1500)))
    end)

    it("refuses bad keys and costs", function()
        local l = limit.new { rate = 3, name = uniq() }
        assert.has_error(function() l:allow({}) end,
                         "rate limit key must be a string, got table")
        assert.has_error(function() l:allow("k", 4) end)
        assert.has_error(function() l:allow("k", -1) end)
    end)

    it("stays compiled on the local path", function()
        local aborts = {}
        local l = limit.new { rate = 1e9, name = uniq() }
        local g = limit.new { rate = 1e9, algorithm = "gcra", name = uniq() }
        jit.flush()
        jit.attach(function(what, tr, func, pc, code, info)
            if what == "abort" then
                local fi = require("jit.util").funcinfo(func, pc)
                if (fi.source or ""):find("ratelimit.lua", 1, true) then
                    local why = require("jit.vmdef").traceerr[code] or tostring(code)
                    if type(info) == "number" then why = why:format(info) end
                    aborts[#aborts + 1] = tostring(fi.loc) .. ": " .. why
                end
            end
        end, "trace")
        for _ = 1, 2000 do l:allow("hot") end
        for _ = 1, 2000 do g:allow("hot") end
        jit.attach(function() end)
        assert.same({}, aborts)
    end)
end)

describe("limit.allow", function()
    it("makes one limiter per options table, or per content", function()
        local opts = { rate = 2, per = 10, name = uniq() }
        assert.is_true((limit.allow("k", opts)))
        assert.is_true((limit.allow("k", opts)))
        assert.is_false((limit.allow("k", opts)))
        -- a new table with the same content: the same limiter
        assert.is_false((limit.allow("k", { rate = 2, per = 10, name = opts.name })))
    end)

    it("checks its options", function()
        assert.matches("limit.allow.rate is required",
                       load_error(function() limit.allow("k", {}) end))
        assert.matches("opts must be a table",
                       load_error(function() limit.allow("k") end))
    end)
end)

-- A stand-in request: what the policy and key helpers use.
local function fake_req(t)
    t = t or {}
    local req = { client = t.client or "10.0.0.1", id = "req-1", ctx = {},
                  route = t.route, headers = t.headers or {} }
    function req:header(name) return self.headers[name] end
    function req:_respond(status, body, headers)
        self.answer = { status = status, body = body, headers = headers }
        return runtime.RESPONDED_MARK
    end
    return req
end

local function fake_res()
    local res = { headers = {}, sets = 0 }
    function res:set_header(k, v)
        self.headers[k] = v
        self.sets = self.sets + 1
    end
    return res
end

-- Runs a hook function as the gateway does: in a coroutine serving req.
local function run(fn, req, ...)
    local co = coroutine.create(fn)
    runtime.co_req[co] = req
    local ok, v = coroutine.resume(co, req, ...)
    assert(ok, v)
    return v
end

describe("limit.key", function()
    it("client_ip and route", function()
        assert.equal("10.0.0.1", limit.key.client_ip(fake_req()))
        assert.equal("orders", limit.key.route(fake_req { route = "orders" }))
    end)

    it("header(name): the header, else the client", function()
        local k = limit.key.header("X-Api-Key")
        assert.equal("abc", k(fake_req { headers = { ["x-api-key"] = "abc" } }))
        assert.equal("ip:10.0.0.1", k(fake_req()))
        assert.matches("name must be a header name",
                       load_error(function() limit.key.header("bad name") end))
    end)

    it("jwt_sub: the verified sub claim, else the client", function()
        local req = fake_req()
        req.ctx.jwt = { sub = "alice" }
        assert.equal("alice", limit.key.jwt_sub(req))
        req.ctx.jwt = { sub = 42 }
        assert.equal("42", limit.key.jwt_sub(req))
        assert.equal("ip:10.0.0.1", limit.key.jwt_sub(fake_req()))
    end)
end)

describe("limit.policy", function()
    it("checks its own options too", function()
        assert.matches("limit.policy.key must be a function",
                       load_error(function() limit.policy { rate = 1, key = "ip" } end))
        assert.matches("limit.policy.status must be an integer 400%-599",
                       load_error(function() limit.policy { rate = 1, status = 200 } end))
        assert.matches("limit.policy.headers must be a boolean",
                       load_error(function() limit.policy { rate = 1, headers = 1 } end))
    end)

    it("admits, noting the numbers for the response headers", function()
        local p = limit.policy { rate = 2, per = 10, name = uniq() }
        local req = fake_req()
        assert.is_nil(run(p.on_request, req, p))
        assert.same({ 2, 1, 10 }, { req.ctx.ratelimit_limit,
            req.ctx.ratelimit_remaining, req.ctx.ratelimit_reset })
        local res = fake_res()
        p.on_response(req, res, p)
        assert.same({ ["RateLimit-Limit"] = "2", ["RateLimit-Remaining"] = "1",
                      ["RateLimit-Reset"] = "10" }, res.headers)
        p.on_response(req, res, p)          -- a second limit: set once
        assert.equal(3, res.sets)
    end)

    it("refuses with 429, Retry-After and RateLimit headers", function()
        local p = limit.policy { rate = 1, per = 10, name = uniq() }
        run(p.on_request, fake_req(), p)
        local req = fake_req()
        assert.equal(runtime.RESPONDED_MARK, run(p.on_request, req, p))
        assert.equal(429, req.answer.status)
        assert.same({ error = "too many requests", status = 429, request_id = "req-1" },
                    req.answer.body)
        assert.same({ ["Retry-After"] = "20", ["RateLimit-Limit"] = "1",
                      ["RateLimit-Remaining"] = "0", ["RateLimit-Reset"] = "10" },
                    req.answer.headers)
    end)

    it("headers = false: Retry-After only; custom status and body", function()
        local p = limit.policy { rate = 1, per = 10, name = uniq(), headers = false,
                                 status = 503, body = "slow down" }
        assert.is_nil(p.on_response)
        run(p.on_request, fake_req(), p)
        local req = fake_req()
        run(p.on_request, req, p)
        assert.same({ status = 503, body = "slow down",
                      headers = { ["Retry-After"] = "20" } }, req.answer)
    end)

    it("a key function returning nil skips the limit", function()
        local p = limit.policy { rate = 1, name = uniq(), key = function() end }
        for _ = 1, 3 do
            local req = fake_req()
            assert.is_nil(run(p.on_request, req, p))
            assert.is_nil(req.answer)
        end
    end)
end)

describe("cluster mode when Redis cannot be reached", function()
    -- outside a worker there is no Redis client: the failure policy decides
    it('on_redis_error = "allow" lets requests through (no numbers)', function()
        local l = limit.new { rate = 1, redis = { port = 1 }, name = uniq() }
        for _ = 1, 3 do
            local ok, remaining, reset, retry, err = l:allow("k")
            assert.same({ true, nil, nil, 0 }, { ok, remaining, reset, retry })
            assert.matches("^redis: ", err)
        end
    end)

    it('on_redis_error = "deny" refuses them', function()
        local l = limit.new { rate = 1, redis = { port = 1 }, name = uniq(),
                              on_redis_error = "deny" }
        local ok, remaining, reset, retry = l:allow("k")
        assert.same({ false, 0, 1, 1 }, { ok, remaining, reset, retry })
    end)

    it("fallback: a local limit decides", function()
        local l = limit.new { rate = 100, redis = { port = 1 }, name = uniq(),
                              on_redis_error = "deny",
                              fallback = { rate = 2, per = 10, name = uniq() } }
        assert.is_true((l:allow("k")))
        assert.is_true((l:allow("k")))
        local ok, remaining, _, retry, err = l:allow("k")
        assert.same({ false, 0 }, { ok, remaining })
        assert.is_true(retry > 0)
        assert.matches("^redis: ", err)
    end)

    it("the policy then sends no RateLimit numbers when it lets requests through",
       function()
        local p = limit.policy { rate = 1, redis = { port = 1 }, name = uniq() }
        local req = fake_req()
        assert.is_nil(run(p.on_request, req, p))
        assert.is_nil(req.ctx.ratelimit_remaining)
        local res = fake_res()
        p.on_response(req, res, p)
        assert.same({}, res.headers)
    end)
end)
