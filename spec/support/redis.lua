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

local h = require "spec.support.helpers"

local fmt = string.format

local _M = {}

local Redis = {}
Redis.__index = function(self, k)
    return Redis[k] or self._proc[k]
end

local function ping(port)
    local out = h.sh(fmt("redis-cli -h 127.0.0.1 -p %d PING 2>&1", port))
    return out:find("PONG", 1, true) ~= nil
end

--- redis.start { port = N } -> server, once it answers PING (10 s at most).
function _M.start(opts)
    opts = opts or {}
    local port = opts.port or h.free_port()
    local dir = h.tmpdir()
    local cmd = fmt("exec redis-server --port %d --bind 127.0.0.1 --save '' " ..
                    "--appendonly no --dir %s --loglevel warning " ..
                    "--daemonize no", port, h.shq(dir))
    local p = h.spawn(cmd, "redis")
    local deadline = h.now() + 10
    while not ping(port) do
        if not p:alive() or h.now() > deadline then
            local log = p:log()
            p:kill("KILL")
            error(fmt("redis-server did not start on port %d:\n%s", port, log),
                  2)
        end
        h.sleep(0.02)
    end
    return setmetatable({ _proc = p, port = port, pid = p.pid,
                          addr = "127.0.0.1:" .. port }, Redis)
end

--- server:cli(args...) -> redis-cli's output, trimmed.
function Redis:cli(...)
    local args = {}
    for i = 1, select("#", ...) do args[i] = h.shq(select(i, ...)) end
    return (h.sh(fmt("redis-cli -h 127.0.0.1 -p %d %s 2>&1", self.port,
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
    return _M.start { port = self.port }
end

return _M
