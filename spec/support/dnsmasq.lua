-- spec/support/dnsmasq.lua: a real DNS server for specs (Debian's
-- dnsmasq-base, /usr/sbin/dnsmasq) on a free port of 127.0.0.1, answering
-- from a hosts file of its own (reread on SIGHUP) and SRV records given at
-- start, authoritative for .test (a name it does not know is NXDOMAIN).
-- Stopped by h.cleanup() like every process the helpers start.
--
--   local dnsmasq = require "spec.support.dnsmasq"
--   local d = dnsmasq.start { hosts = { ["api.test"] = { "127.0.0.2" } },
--                             srv = { { "_http._tcp.svc.test", "a.test", 8080, 1, 3 } } }
--   d.addr                              -- "127.0.0.1:PORT", for settings.resolver
--   d:set_hosts { ["api.test"] = { "127.0.0.3" } }  -- rewritten, SIGHUP: the wall time
--   d:kill()                            -- SIGKILL: the resolver is down
--   d = d:restart { srv = ... }         -- a new one on the same port

local h = require "spec.support.helpers"

local fmt = string.format

local _M = {}

local Dnsmasq = {}
Dnsmasq.__index = function(self, k)
    return Dnsmasq[k] or self._proc[k]
end

local function hosts_text(hosts)
    local names = {}
    for name in pairs(hosts or {}) do names[#names + 1] = name end
    table.sort(names)
    local lines = {}
    for _, name in ipairs(names) do
        for _, addr in ipairs(hosts[name]) do lines[#lines + 1] = addr .. " " .. name end
    end
    return table.concat(lines, "\n") .. "\n"
end

--- dnsmasq.start { port, hosts = { name = { addr... } }, srv = { { name,
-- target, port, priority, weight }... }, host_records = { "name,addr" } }
-- -> server, once it says it started (10 s at most).
function _M.start(opts)
    opts = opts or {}
    local port = opts.port or h.free_port()
    local hosts = opts.hosts_path or h.tmpfile("dnsmasq.hosts", hosts_text(opts.hosts))
    local args = {
        "--port=" .. port, "--listen-address=127.0.0.1", "--bind-interfaces",
        "--no-resolv", "--no-hosts", "--addn-hosts=" .. h.shq(hosts), "--local=/test/",
        "--local-ttl=1", "--keep-in-foreground", "--log-facility=-",
        "--pid-file=" .. h.shq(h.tmpfile("dnsmasq.pid")),
        -- keep the user that started it: its hosts file stays readable on SIGHUP
        "--user=" .. h.sh("id -un"):gsub("%s+$", ""),
    }
    for _, s in ipairs(opts.srv or {}) do
        args[#args + 1] = fmt("--srv-host=%s,%s,%d,%d,%d", s[1], s[2], s[3], s[4] or 0, s[5] or 0)
    end
    for _, r in ipairs(opts.host_records or {}) do args[#args + 1] = "--host-record=" .. r end
    local p = h.spawn("exec /usr/sbin/dnsmasq " .. table.concat(args, " "), "dnsmasq")
    local deadline = h.now() + 10 * h.SLOW
    while not p:log():find("started, version", 1, true) do
        if not p:alive() or h.now() > deadline then
            local log = p:log()
            p:kill("KILL")
            error(fmt("dnsmasq did not start on port %d:\n%s", port, log), 2)
        end
        h.sleep(0.02)
    end
    return setmetatable({ _proc = p, port = port, pid = p.pid, hosts_path = hosts,
                          addr = "127.0.0.1:" .. port, opts = opts }, Dnsmasq)
end

--- server:set_hosts(hosts): the hosts file rewritten and reread (SIGHUP).
-- Returns the wall time of the signal, once dnsmasq logged the new read.
function Dnsmasq:set_hosts(hosts)
    local before = select(2, self._proc:log():gsub("read " .. self.hosts_path:gsub("%p", "%%%0"), ""))
    h.write_file(self.hosts_path, hosts_text(hosts))
    local t = h.now()
    self._proc:signal("HUP")
    h.eventually(5, function()
        local n = select(2, self._proc:log():gsub("read " .. self.hosts_path:gsub("%p", "%%%0"), ""))
        return n > before
    end, "dnsmasq rereads its hosts file")
    return t
end

function Dnsmasq:kill()
    return self._proc:kill("KILL", 5)
end

--- server:restart(opts) -> a new server on the same port with opts (the old
-- one killed first if it still runs); the hosts file is kept unless
-- opts.hosts is given.
function Dnsmasq:restart(opts)
    if self._proc:alive() then self:kill() end
    opts = opts or self.opts
    local o = { port = self.port, srv = opts.srv, host_records = opts.host_records }
    if opts.hosts then o.hosts = opts.hosts else o.hosts_path = self.hosts_path end
    return _M.start(o)
end

return _M
