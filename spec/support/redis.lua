-- spec/support/redis.lua: a real redis-server for specs, on a free port of
-- 127.0.0.1, without persistence, stopped by h.cleanup() like every process
-- the helpers start.
--
--   local redis = require "spec.support.redis"
--   local r = redis.start()            -- { port, addr, pid, ... }
--   r:cli("GET", "k")                  -- redis-cli output (trimmed)
--   r:kill()                           -- SIGKILL, like a crash
--   r = r:restart()                    -- a new server on the same port
--   r:pause() / r:resume()             -- SIGSTOP / SIGCONT: a stuck server
--   redis.start { tls = { cert, key, ca }, acl = "user u on >p ~* +@all" }

local h = require "spec.support.helpers"

local fmt = string.format

local _M = {}

local Redis = {}
Redis.__index = function(self, k)
    return Redis[k] or self._proc[k]
end

-- redis-cli's connection options for server settings o (TLS: the CA, the
-- client certificate when the server wants one; an ACL user).
local function cli_args(o)
    local a = fmt("-h 127.0.0.1 -p %d", o.port)
    if o.tls then
        a = a .. fmt(" --tls --cacert %s", h.shq(o.tls.ca))
        if o.tls.client_cert then
            a = a .. fmt(" --cert %s --key %s", h.shq(o.tls.client_cert),
                         h.shq(o.tls.client_key))
        end
    end
    if o.user then
        a = a .. fmt(" --user %s --pass %s --no-auth-warning", h.shq(o.user), h.shq(o.pass))
    end
    return a
end

local function ping(o)
    local out = h.sh(fmt("redis-cli %s PING 2>&1", cli_args(o)))
    return out:find("PONG", 1, true) ~= nil
end

--- redis.start { port = N, tls = { cert, key, ca, auth_clients = "yes",
-- client_cert, client_key (redis-cli's) }, acl = "user ... (ACL file
-- lines)", user, pass (redis-cli's) } -> server, once it answers PING (10 s
-- at most). With tls the server listens with TLS only (--port 0).
function _M.start(opts)
    opts = opts or {}
    local o = { port = opts.port or h.free_port(), tls = opts.tls, acl = opts.acl,
                user = opts.user, pass = opts.pass }
    local dir = h.tmpdir()
    local listen = fmt("--port %d", o.port)
    if o.tls then
        listen = fmt("--port 0 --tls-port %d --tls-cert-file %s --tls-key-file %s " ..
                     "--tls-ca-cert-file %s --tls-auth-clients %s", o.port,
                     h.shq(o.tls.cert), h.shq(o.tls.key), h.shq(o.tls.ca),
                     o.tls.auth_clients or "no")
    end
    local acl = ""
    if o.acl then
        local path = fmt("%s/users-%d.acl", dir, o.port)
        local f = assert(io.open(path, "w"))
        f:write(o.acl)
        f:close()
        acl = "--aclfile " .. h.shq(path)
    end
    local cmd = fmt("exec redis-server %s %s --bind 127.0.0.1 --save '' " ..
                    "--appendonly no --dir %s --loglevel warning " ..
                    "--daemonize no", listen, acl, h.shq(dir))
    local p = h.spawn(cmd, "redis")
    local deadline = h.now() + 10 * h.SLOW
    while not ping(o) do
        if not p:alive() or h.now() > deadline then
            local log = p:log()
            p:kill("KILL")
            error(fmt("redis-server did not start on port %d:\n%s", o.port, log),
                  2)
        end
        h.sleep(0.02)
    end
    return setmetatable({ _proc = p, _opts = o, port = o.port, pid = p.pid,
                          addr = "127.0.0.1:" .. o.port }, Redis)
end

--- server:cli(args...) -> redis-cli's output, trimmed.
function Redis:cli(...)
    local args = {}
    for i = 1, select("#", ...) do args[i] = h.shq(select(i, ...)) end
    return (h.sh(fmt("redis-cli %s %s 2>&1", cli_args(self._opts),
                     table.concat(args, " "))):gsub("%s+$", ""))
end

function Redis:kill()
    return self._proc:kill("KILL", 5)
end

function Redis:stop()
    return self._proc:kill("TERM", 5)
end

function Redis:pause()
    self._proc:signal("STOP")
end

function Redis:resume()
    self._proc:signal("CONT")
end

--- server:restart() -> a fresh server on the same port (the old one is
-- killed first if it still runs).
function Redis:restart()
    if self._proc:alive() then self:kill() end
    return _M.start(self._opts)
end

return _M
