-- Integration-test harness: starts the real moongate binary and real
-- upstream servers (spec/support/upstream.py) and talks to them over real
-- sockets. Nothing is mocked.
--
--   local h = require "spec.support.helpers"
--   local up = h.start_upstream { name = "a" }
--   local gw = h.start_gateway([[ ... {{PORT}} ... {{UP}} ... ]],
--                              { vars = { UP = up } })
--   local res = h.http(gw.port, { path = "/x" })
--   teardown(h.cleanup)
--
-- Every read has a timeout (default 5 s), every process is killed in
-- h.cleanup() (and by a watchdog if the test runner itself dies), a gateway
-- that died, exited non-zero or printed a sanitizer report makes cleanup()
-- fail with the tail of its log; a failing test prints the log tail of the
-- running gateways.
--
-- Environment: MG_BIN (default build/moongate; a name containing "asan"
-- scales the timing asserts by 3), MG_SPEC_TIMEOUT (default read timeout),
-- MG_KEEP_TMP=1 (keep /tmp/moongate-spec.* with configs and logs),
-- MG_SPEC_TRACE=file (log every signal the harness sends).

local socket = require "socket"
local cjson = require "cjson"

local fmt = string.format
local concat = table.concat

local _M = {}

_M.MG_BIN = os.getenv("MG_BIN") or "build/moongate"
_M.TIMEOUT = tonumber(os.getenv("MG_SPEC_TIMEOUT") or "") or 5
-- the sanitizer build is ~3x slower: scale waits that are not protocol
-- timeouts under test
_M.SLOW = _M.MG_BIN:find("asan", 1, true) and 3 or 1

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
_M.UPSTREAM_PY = here .. "/upstream.py"

local now = socket.gettime
_M.now = now
_M.sleep = socket.sleep

---------------------------------------------------------------------------
-- small utilities

local function shq(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
_M.shq = shq

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end
_M.read_file = read_file

local function write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end
_M.write_file = write_file

local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close() return true end
    return false
end

local function sh_output(cmd)
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("*a")
    p:close()
    return out
end
_M.sh = sh_output

local function self_pid()
    local s = read_file("/proc/self/stat")
    return tonumber(s:match("^(%d+)"))
end
local OWNER = self_pid()

local tmpdir
function _M.tmpdir()
    if not tmpdir then
        tmpdir = sh_output("mktemp -d /tmp/moongate-spec.XXXXXX"):gsub("%s+$", "")
        assert(tmpdir ~= "", "mktemp failed")
    end
    return tmpdir
end

local seq = 0
function _M.tmpfile(name, content)
    seq = seq + 1
    local path = fmt("%s/%d-%s", _M.tmpdir(), seq, name or "file")
    if content then write_file(path, content) end
    return path
end

-- the real python (a pyenv shim costs ~100 ms per start)
local python
local function python_bin()
    if not python then
        python = sh_output("python3 -c 'import sys; print(sys.executable)' 2>/dev/null")
            :gsub("%s+$", "")
        if python == "" then python = "python3" end
    end
    return python
end

-- The lines of a jit.v log (text) where a trace through one of the files
-- matched by the patterns of `where` (string.find patterns on the line)
-- aborted, but for the harmless reasons: "leaving loop in root trace"
-- (LuaJIT declined to start a second trace at a function the loop's trace
-- already covers), "return to lower frame" (a trace reached the hook
-- dispatch), "symbol not in cache" (the recorder met a C function before
-- its first call resolved it, and records it again once it has).
function _M.trace_aborts(log, where)
    local bad = {}
    for line in log:gmatch("[^\n]+") do
        local ours = false
        for _, pat in ipairs(where) do
            if line:find(pat) then ours = true end
        end
        if ours and line:find("TRACE ---", 1, true) and
            not line:find("return to lower frame", 1, true) and
            not line:find("leaving loop in root trace", 1, true) and
            not line:find("symbol not in cache", 1, true) then
            bad[#bad + 1] = line
        end
    end
    return bad
end

function _M.json(s)
    if type(s) == "table" then s = s.body end
    local ok, v = pcall(cjson.decode, s)
    if not ok then
        error("not JSON: " .. tostring(s):sub(1, 300), 2)
    end
    return v
end

function _M.tail(path, n)
    local s = read_file(path) or ""
    local lines = {}
    for l in s:gmatch("[^\n]*\n?") do
        if l ~= "" then lines[#lines + 1] = l end
    end
    local from = math.max(1, #lines - (n or 30) + 1)
    return concat(lines, "", from)
end

---------------------------------------------------------------------------
-- ports

math.randomseed(OWNER * 7919 + math.floor(now() * 1000) % 100000)
local used_ports = {}

-- A port that is free right now, below the kernel's ephemeral range (so an
-- outgoing connection cannot be holding it), and not handed out before.
function _M.free_port()
    for _ = 1, 200 do
        local port = math.random(20000, 32000)
        if not used_ports[port] then
            local s = socket.tcp()
            local ok = s:bind("127.0.0.1", port)
            s:close()
            if ok then
                used_ports[port] = true
                return port
            end
        end
    end
    error("no free port found")
end

-- "127.0.0.1:PORT" where nothing listens
function _M.dead_addr()
    return "127.0.0.1:" .. _M.free_port()
end

---------------------------------------------------------------------------
-- processes

local procs = {}      -- live processes, in start order
_M.procs = procs

local Proc = {}
Proc.__index = Proc

-- Runs `cmd` (a shell command line) in the background. Its stdout+stderr go
-- to a log file; a wrapper shell records its exit code; a watchdog kills it
-- if this test process goes away.
local function spawn(cmd, label)
    seq = seq + 1
    local base = fmt("%s/%d-%s", _M.tmpdir(), seq, label)
    local p = setmetatable({
        label = label, log_path = base .. ".log", pid_path = base .. ".pid",
        rc_path = base .. ".rc", cmd = cmd,
    }, Proc)
    local script = fmt([[
%s >%s 2>&1 </dev/null &
p=$!
echo $p >%s.tmp && mv %s.tmp %s
( while kill -0 %d 2>/dev/null; do sleep 0.5; done; kill -9 $p ) >/dev/null 2>&1 &
w=$!
wait $p
echo $? >%s.tmp && mv %s.tmp %s
kill $w
]], cmd, shq(p.log_path), shq(p.pid_path), shq(p.pid_path), shq(p.pid_path),
        OWNER, shq(p.rc_path), shq(p.rc_path), shq(p.rc_path))
    os.execute("sh -c " .. shq(script) .. " >/dev/null 2>&1 &")
    local deadline = now() + 5
    while now() < deadline do
        local s = read_file(p.pid_path)
        if s and s:match("%d+") then
            p.pid = tonumber(s:match("%d+"))
            break
        end
        socket.sleep(0.005)
    end
    if not p.pid then error("could not start: " .. cmd) end
    procs[#procs + 1] = p
    return p
end
_M.spawn = spawn

-- exit code (128+N when killed by signal N) or nil while running
function Proc:exit_code()
    if self.code then return self.code end
    local s = read_file(self.rc_path)
    if s and s:match("%d+") then
        self.code = tonumber(s:match("%d+"))
    end
    return self.code
end

function Proc:alive()
    return self:exit_code() == nil
end

local TRACE = os.getenv("MG_SPEC_TRACE")

function Proc:signal(sig)
    if self:alive() then
        if TRACE then
            local f = io.open(TRACE, "a")
            f:write(fmt("%.3f signal %s -> %d (%s)\n%s\n", now(), sig or "TERM", self.pid,
                self.label, debug.traceback()))
            f:close()
        end
        os.execute(fmt("kill -%s %d 2>/dev/null", sig or "TERM", self.pid))
    end
end

function Proc:wait_exit(timeout)
    local deadline = now() + (timeout or 10)
    repeat
        local code = self:exit_code()
        if code then return code end
        socket.sleep(0.01)
    until now() > deadline
    return self:exit_code()
end

function Proc:log()
    return read_file(self.log_path) or ""
end

function Proc:log_tail(n)
    return _M.tail(self.log_path, n)
end

function Proc:rss()
    local s = read_file(fmt("/proc/%d/status", self.pid))
    if not s then return nil end
    return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local function unregister(p)
    for i = #procs, 1, -1 do
        if procs[i] == p then table.remove(procs, i) end
    end
end

-- Stops the process (SIGTERM, then SIGKILL after `timeout`); returns its
-- exit code. Never raises.
function Proc:kill(sig, timeout)
    local was_alive = self:alive()
    Proc.signal(self, sig or "TERM")
    local code = self:wait_exit(timeout or 5)
    if not code then
        Proc.signal(self, "KILL")
        code = self:wait_exit(5)
        self.hung = true
    end
    self.died_early = not was_alive
    unregister(self)
    return code
end

local SANITIZER = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                    "runtime error:", "WARNING: ThreadSanitizer",
                    "AddressSanitizer:DEADLYSIGNAL" }

local function sanitizer_report(log)
    for _, pat in ipairs(SANITIZER) do
        if log:find(pat, 1, true) then return pat end
    end
end

---------------------------------------------------------------------------
-- upstreams

local Upstream = setmetatable({}, { __index = Proc })
Upstream.__index = Upstream

local function spawn_upstream(opts)
    local port = opts.port or _M.free_port()
    local name = opts.name or "up"
    local host = opts.host or "127.0.0.1"
    local cmd = fmt("exec %s%s -u %s --host %s --port %d --name %s --delay %g",
        opts.nice and "nice -n 19 " or "", shq(python_bin()), shq(_M.UPSTREAM_PY), host, port,
        shq(name), opts.delay or 0)
    if opts.ids then cmd = cmd .. " --ids " .. shq(opts.ids) end
    if opts.bodies then cmd = cmd .. " --bodies " .. shq(opts.bodies) end
    local control
    if opts.tls then -- HTTPS: { cert =, key =, client_ca = }; stats on a plain port
        control = _M.free_port()
        cmd = cmd .. fmt(" --tls-cert %s --tls-key %s --control-port %d", shq(opts.tls.cert),
            shq(opts.tls.key), control)
        if opts.tls.client_ca then
            cmd = cmd .. " --tls-client-ca " .. shq(opts.tls.client_ca)
        end
    end
    local p = spawn(cmd, "upstream-" .. name)
    setmetatable(p, Upstream)
    p.port, p.name, p.host, p.addr = port, name, host, host .. ":" .. port
    p.control_port = control
    return p
end

local function wait_ready(p)
    local deadline = now() + 10
    while now() < deadline do
        if p:log():find("ready", 1, true) then return p end
        if not p:alive() then break end
        socket.sleep(0.01)
    end
    local log = p:log()
    p:kill("KILL")
    error(fmt("upstream %s did not start on port %d:\n%s", p.name, p.port, log), 3)
end

-- opts: name, port, host (an address of lo, 127.0.0.1 by default), delay
-- (seconds before every answer), tls ({ cert =, key =, client_ca = }: HTTPS, see
-- upstream.py), ids / bodies (files: each request's id / id, method, path and
-- body digest, upstream.py --ids / --bodies), nice (run at the lowest CPU
-- priority: a server whose own CPU is not what a spec measures). Returns { port, pid, addr = "127.0.0.1:PORT", name,
-- stop(), stats() } once the server is ready.
function _M.start_upstream(opts)
    return wait_ready(spawn_upstream(opts or {}))
end

-- Polls until f() is true, every 50 ms, for `seconds` (scaled by SLOW);
-- raises "not within N s: what" at the caller otherwise.
function _M.eventually(seconds, f, what)
    local deadline = now() + seconds * _M.SLOW
    while now() < deadline do
        if f() then return end
        socket.sleep(0.05)
    end
    error("not within " .. seconds .. " s: " .. what, 2)
end

-- Starts several upstreams in parallel: names is a list of names (or of
-- opts tables); returns the list of upstreams, plus each by name.
function _M.start_upstreams(names)
    local list = {}
    for i, n in ipairs(names) do
        list[i] = spawn_upstream(type(n) == "table" and n or { name = n })
    end
    for i, p in ipairs(list) do
        wait_ready(p)
        list[p.name] = p
    end
    return list
end

function Upstream:stop()
    return self:kill("TERM", 3)
end

-- {requests=, connections=, bad=, last={...}} asked directly (not through
-- the gateway); control requests are not counted
function Upstream:stats()
    local res = _M.http(self.control_port or self.port, { path = "/__stats", host_addr = self.host })
    return _M.json(res.body)
end

function _M.upstream_sha256(n)
    return sh_output(fmt("%s %s --sha256 %d", shq(python_bin()),
        shq(_M.UPSTREAM_PY), n)):gsub("%s+$", "")
end

---------------------------------------------------------------------------
-- gateway

local Gateway = setmetatable({}, { __index = Proc })
Gateway.__index = Gateway

-- Checks that the gateway is still running and its log has no sanitizer
-- report; raises with the log tail otherwise.
function Gateway:assert_alive()
    local code = self:exit_code()
    if code then
        error(fmt("gateway (pid %d) died with exit code %d; log tail:\n%s",
            self.pid, code, self:log_tail(40)), 2)
    end
    local san = sanitizer_report(self:log())
    if san then
        error(fmt("gateway log has a sanitizer report (%s):\n%s", san,
            self:log_tail(60)), 2)
    end
end

-- Sends a signal on behalf of a test (which then checks the exit itself:
-- stop() will only look for sanitizer reports).
function Gateway:signal(sig)
    self.signalled = true
    Proc.signal(self, sig)
end

-- Sends `sig` (default TERM) and waits for the exit. With check ~= false
-- (default), raises (with the log tail) if the gateway had already died,
-- did not exit within the timeout, exited non-zero or reported a sanitizer
-- error. Returns the exit code.
function Gateway:stop(sig, timeout, check)
    if self.stopped then return self.code end
    self.stopped = true
    local code = self:kill(sig or "TERM", timeout or 15 * _M.SLOW)
    if check == false then return code end
    local problem
    if self.signalled then
        local san = sanitizer_report(self:log())
        if san then problem = "sanitizer report in gateway log: " .. san end
    elseif self.died_early then
        problem = fmt("gateway died during the tests (exit code %s)", code)
    elseif self.hung then
        problem = "gateway did not exit on SIG" .. (sig or "TERM")
    elseif code ~= 0 then
        problem = fmt("gateway exited with code %s on SIG%s", code, sig or "TERM")
    else
        local san = sanitizer_report(self:log())
        if san then problem = "sanitizer report in gateway log: " .. san end
    end
    if problem then
        error(fmt("%s (pid %d, config %s); log tail:\n%s", problem, self.pid,
            self.config_path, self:log_tail(60)), 2)
    end
    return code
end

local function can_connect(port)
    local s = socket.tcp()
    s:settimeout(0.2)
    local ok = s:connect("127.0.0.1", port)
    s:close()
    return ok ~= nil
end
_M.can_connect = can_connect

local function subst(text, vars)
    return (text:gsub("{{([%w_]+)}}", function(k)
        local v = vars[k]
        if v == nil then error("config template: unknown variable {{" .. k .. "}}", 4) end
        if type(v) == "table" then v = v.addr or v.port end
        return tostring(v)
    end))
end

-- Lua source for a value (tables with sorted keys; h.raw(text) verbatim)
local RAW = {}
function _M.raw(text)
    return setmetatable({ text = text }, RAW)
end

local function lua_value(v)
    local t = type(v)
    if t == "string" then return fmt("%q", v) end
    if t == "number" or t == "boolean" then return tostring(v) end
    if t ~= "table" then error("cannot write a " .. t .. " into a config", 3) end
    if getmetatable(v) == RAW then return v.text end
    local parts, n = {}, #v
    for i = 1, n do parts[#parts + 1] = lua_value(v[i]) end
    local keys = {}
    for k in pairs(v) do
        if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k
            or ("[" .. lua_value(k) .. "]")
        parts[#parts + 1] = key .. " = " .. lua_value(v[k])
    end
    return "{ " .. concat(parts, ", ") .. " }"
end
_M.lua_value = lua_value

-- Renders a config table as Lua config text:
--   { settings = {...}, listen = { {...}, ... } (default: one listener on
--     {{PORT}} at 127.0.0.1), upstreams = { { "name", { targets }, opts }, ... },
--     routes = { { path = ..., handler = h.raw("function(req) ... end") }, ... },
--     extra = "raw Lua appended" }
-- Strings may hold {{VAR}} templates (e.g. targets = { "{{UP}}" }).
function _M.config_text(t)
    local out = { 'local gw = require "moongate"' }
    if t.settings then out[#out + 1] = "gw.settings " .. lua_value(t.settings) end
    local listen = t.listen or { { port = _M.raw("{{PORT}}"), host = "127.0.0.1" } }
    if listen.port then listen = { listen } end
    for _, l in ipairs(listen) do out[#out + 1] = "gw.listen " .. lua_value(l) end
    for _, u in ipairs(t.upstreams or {}) do
        out[#out + 1] = fmt("gw.upstream(%s, %s%s)", lua_value(u[1]), lua_value(u[2]),
            u[3] and (", " .. lua_value(u[3])) or "")
    end
    for _, r in ipairs(t.routes or {}) do out[#out + 1] = "gw.route " .. lua_value(r) end
    if t.extra then out[#out + 1] = t.extra end
    return concat(out, "\n") .. "\n"
end

-- Starts `MG_BIN run -c <tmpfile>` with `config` (Lua text, or a table for
-- h.config_text). In the text,
-- {{PORT}} (also {{PORT1}}) is a free port for the main listener,
-- {{PORT2}}.. more free ports (opts.ports = how many, default 1), {{TMP}}
-- the temp dir, and opts.vars entries (an upstream table gives its
-- "127.0.0.1:PORT"). opts.workers (default 2) or opts.args replaces the
-- `--workers 2` argument (`--admin off` is added unless the config sets
-- settings.admin or args say --admin); opts.env is prepended ("VAR=x ..."); opts.wait_ports
-- lists the ports to wait for (default: all). Waits until every listen port
-- accepts (10 s) and returns the gateway object
-- { port, ports, pid, log_path, config_path, stop(sig), rss(), wait_exit(t),
--   alive(), assert_alive(), log_tail(n) }.
function _M.start_gateway(config, opts)
    opts = opts or {}
    local vars = { TMP = _M.tmpdir() }
    local ports = {}
    for i = 1, opts.ports or 1 do
        ports[i] = _M.free_port()
        vars["PORT" .. i] = ports[i]
    end
    vars.PORT = ports[1]
    for k, v in pairs(opts.vars or {}) do vars[k] = v end
    if type(config) == "table" then config = _M.config_text(config) end
    local text = subst(config, vars)
    local path = _M.tmpfile("gateway.lua", text)
    local args = opts.args or ("--workers " .. (opts.workers or 2))
    -- a gateway whose admin API cannot listen does not start, and the
    -- default 127.0.0.1:9901 is shared by every gateway on the machine: a
    -- config that does not set settings.admin runs without one
    if not text:find("admin%s*=") and not args:find("--admin", 1, true) then
        args = args .. " --admin off"
    end
    local env = opts.env or ""
    local cmd = fmt("exec %s%s run -c %s %s", env ~= "" and ("env " .. env .. " ") or "",
        shq(_M.MG_BIN), shq(path), args)
    local p = spawn(cmd, "gateway")
    setmetatable(p, Gateway)
    p.port, p.ports, p.config_path, p.vars = ports[1], ports, path, vars
    local wait_ports = opts.wait_ports or ports
    local deadline = now() + 10 * _M.SLOW
    local pending = {}
    for i, port in ipairs(wait_ports) do pending[i] = port end
    -- the admin API starts after the listeners: wait for it too, so that a
    -- spec's first admin request does not race it
    local admin_port = text:match("admin%s*=%s*{[^}]-port%s*=%s*(%d+)")
    if admin_port and not opts.wait_ports then pending[#pending + 1] = tonumber(admin_port) end
    while #pending > 0 do
        if can_connect(pending[#pending]) then
            pending[#pending] = nil
        else
            if not p:alive() or now() > deadline then
                local code = p:kill("KILL")
                error(fmt("gateway did not start listening on %s (exit code %s)\n" ..
                    "command: %s\nconfig:\n%s\nlog tail:\n%s",
                    concat(pending, ","), tostring(code), cmd, text,
                    p:log_tail(40)), 2)
            end
            socket.sleep(0.02)
        end
    end
    return p
end

-- Runs `MG_BIN args...` to completion; returns exit code, combined output.
function _M.run_bin(args, timeout)
    local out = _M.tmpfile("run.out")
    local cmd = fmt("timeout %d %s %s >%s 2>&1; echo $?", timeout or 20,
        shq(_M.MG_BIN), args, shq(out))
    local code = tonumber(sh_output(cmd):match("(%d+)%s*$"))
    return code, read_file(out) or ""
end

-- Writes `text` as a config file and runs `MG_BIN check -c` on it; returns
-- exit code, output, path.
function _M.check_config(text, name)
    local path = _M.tmpfile(name or "check.lua", text)
    local code, out = _M.run_bin("check -c " .. shq(path))
    return code, out, path
end

-- Stops the given processes, or every live one (gateways first). Raises
-- once at the end if a gateway had a problem (see Gateway:stop).
function _M.cleanup(...)
    local list = select("#", ...) > 0 and { ... } or {}
    if #list == 0 then
        for i = #procs, 1, -1 do list[#list + 1] = procs[i] end
        table.sort(list, function(a, b)
            return (getmetatable(a) == Gateway and 0 or 1) <
                   (getmetatable(b) == Gateway and 0 or 1)
        end)
    end
    local errs = {}
    for _, p in ipairs(list) do
        if getmetatable(p) == Gateway then
            local ok, err = pcall(p.stop, p)
            if not ok then errs[#errs + 1] = tostring(err) end
        else
            p:kill("TERM", 3)
        end
    end
    if #errs > 0 then error(concat(errs, "\n\n"), 2) end
end

-- On a failed test, print the tail of every running gateway's log.
do
    local ok, busted = pcall(require, "busted")
    if ok and type(busted) == "table" and busted.subscribe then
        pcall(busted.subscribe, { "test", "end" }, function(element, _, status)
            if status == "failure" or status == "error" then
                for _, p in ipairs(procs) do
                    if getmetatable(p) == Gateway then
                        io.stderr:write(fmt(
                            "\n--- %s: gateway pid %d (%s), log tail:\n%s---\n",
                            element.name or "?", p.pid,
                            p:alive() and "running" or ("exited " ..
                                tostring(p:exit_code())),
                            p:log_tail(15)))
                    end
                end
            end
            return nil, true
        end)
    end
end

-- last resort when the module goes away (end of the spec file, or the Lua
-- state closing): kill what is left, remove the temp dir (kept with
-- MG_KEEP_TMP=1)
_M._sentinel = newproxy(true)
getmetatable(_M._sentinel).__gc = function()
    for _, p in ipairs(procs) do
        pcall(os.execute, fmt("kill -9 %d 2>/dev/null", p.pid))
    end
    if tmpdir and not os.getenv("MG_KEEP_TMP") then
        pcall(os.execute, "rm -rf " .. shq(tmpdir))
    end
end

---------------------------------------------------------------------------
-- HTTP/1.1 client on luasocket

local Conn = {}
Conn.__index = Conn

-- Opens a connection to 127.0.0.1:port; returns conn or nil, err.
function _M.try_connect(port, opts)
    opts = opts or {}
    local s = socket.tcp()
    s:settimeout(opts.connect_timeout or 2)
    local ok, err = s:connect(opts.host or "127.0.0.1", port)
    if not ok then
        s:close()
        return nil, err
    end
    s:setoption("tcp-nodelay", true)
    return setmetatable({ sock = s, buf = "", timeout = opts.timeout or _M.TIMEOUT,
                          port = port }, Conn)
end

-- Like try_connect but raises on failure.
function _M.connect(port, opts)
    local c, err = _M.try_connect(port, opts)
    if not c then error(fmt("connect to port %s: %s", port, err), 2) end
    return c
end

-- Sends all of `data`; returns true or nil, err (never raises: the peer
-- may legitimately have closed).
function Conn:send(data)
    local s = self.sock
    s:settimeout(self.timeout)
    local i = 1
    while i <= #data do
        local last, err, partial = s:send(data, i)
        if last then
            i = last + 1
        elseif err == "timeout" then
            return nil, "send timeout"
        else
            return nil, err
        end
        if partial then i = partial + 1 end
    end
    return true
end

-- Sends `data` one piece at a time with `gap` seconds between pieces.
function Conn:trickle(data, piece, gap)
    for i = 1, #data, piece do
        local ok, err = self:send(data:sub(i, i + piece - 1))
        if not ok then return nil, err end
        socket.sleep(gap)
    end
    return true
end

-- Reads more bytes into the buffer before `deadline`. Returns true, or
-- nil, "closed" | "timeout".
function Conn:fill(deadline)
    if self.eof then return nil, "closed" end
    local s = self.sock
    while true do
        local remaining = deadline - now()
        if remaining <= 0 then return nil, "timeout" end
        if not s:dirty() then
            local r = socket.select({ s }, nil, remaining)
            if not r or #r == 0 then
                if now() >= deadline then return nil, "timeout" end
            end
        end
        s:settimeout(0)
        local data, err, partial = s:receive(65536)
        local got = data or partial
        if got and #got > 0 then
            self.buf = self.buf .. got
            if err and err ~= "timeout" then self.eof, self.err = true, err end
            return true
        end
        if err and err ~= "timeout" then
            self.eof, self.err = true, err
            return nil, "closed"
        end
    end
end

local function deadline_of(self, opts)
    return now() + ((opts and opts.timeout) or self.timeout)
end

-- Reads one CRLF-terminated line (without the CRLF). A bare LF is an error.
function Conn:read_line(deadline)
    while true do
        local i = self.buf:find("\n", 1, true)
        if i then
            if i == 1 or self.buf:byte(i - 1) ~= 13 then
                return nil, "bare LF in: " .. self.buf:sub(1, i):sub(1, 200)
            end
            local line = self.buf:sub(1, i - 2)
            self.buf = self.buf:sub(i + 1)
            return line
        end
        if #self.buf > 65536 then return nil, "line too long" end
        local ok, err = self:fill(deadline)
        if not ok then return nil, err end
    end
end

-- Reads exactly n bytes (to the sink if given). Returns the bytes (or true
-- with a sink), or nil, err, partial.
function Conn:read_exact(n, deadline, sink)
    deadline = deadline or now() + self.timeout
    local parts = {}
    while n > 0 do
        if #self.buf == 0 then
            local ok, err = self:fill(deadline)
            if not ok then return nil, err, concat(parts) end
        end
        local take = math.min(n, #self.buf)
        local piece = self.buf:sub(1, take)
        self.buf = self.buf:sub(take + 1)
        n = n - take
        if sink then sink(piece) else parts[#parts + 1] = piece end
    end
    return sink and true or concat(parts)
end

-- Reads until the peer closes; returns everything (or true with a sink),
-- and nil, "timeout", partial on timeout.
function Conn:read_until_close(deadline, sink)
    deadline = deadline or now() + self.timeout
    local parts = {}
    while true do
        if #self.buf > 0 then
            if sink then sink(self.buf) else parts[#parts + 1] = self.buf end
            self.buf = ""
        end
        local ok, err = self:fill(deadline)
        if not ok then
            if err == "closed" then return sink and true or concat(parts) end
            return nil, err, concat(parts)
        end
    end
end

-- Returns whatever arrives within `timeout` seconds (or "" if nothing).
function Conn:read_available(timeout)
    if #self.buf == 0 then self:fill(now() + (timeout or 0.2)) end
    local b = self.buf
    self.buf = ""
    return b
end

local function parse_head(self, deadline)
    local line, err = self:read_line(deadline)
    if not line then return nil, err end
    local version, status, reason = line:match("^(HTTP/%d%.%d) (%d%d%d) ?(.*)$")
    if not version then return nil, "bad status line: " .. line:sub(1, 200) end
    local res = { version = version, status = tonumber(status), reason = reason,
                  headers = {}, all_headers = {}, header_list = {} }
    while true do
        local h
        h, err = self:read_line(deadline)
        if not h then return nil, "in response head: " .. err end
        if h == "" then break end
        local name, value = h:match("^([^:%s]+):[ \t]*(.-)[ \t]*$")
        if not name then return nil, "bad header line: " .. h:sub(1, 200) end
        local lname = name:lower()
        res.header_list[#res.header_list + 1] = { name, value }
        local all = res.all_headers[lname]
        if not all then
            all = {}
            res.all_headers[lname] = all
        end
        all[#all + 1] = value
        res.headers[lname] = res.headers[lname] and
            (res.headers[lname] .. ", " .. value) or value
    end
    return res
end

local function read_chunked(self, res, deadline, sink)
    local parts = {}
    local out = sink or function(p) parts[#parts + 1] = p end
    local total = 0
    while true do
        local line, err = self:read_line(deadline)
        if not line then return nil, "in chunk size: " .. err end
        local hex = line:match("^(%x+)[ \t]*;?.*$")
        if not hex or #hex > 15 then return nil, "bad chunk size line: " .. line end
        local size = tonumber(hex, 16)
        if size == 0 then break end
        local ok, err2 = self:read_exact(size, deadline, function(p)
            total = total + #p
            out(p)
        end)
        if not ok then return nil, "in chunk data: " .. err2 end
        local crlf, err3 = self:read_exact(2, deadline)
        if crlf ~= "\r\n" then return nil, "chunk not followed by CRLF: " .. tostring(err3) end
    end
    res.trailers = {}
    while true do
        local line, err = self:read_line(deadline)
        if not line then return nil, "in trailers: " .. err end
        if line == "" then break end
        local n, v = line:match("^([^:]+):%s*(.-)%s*$")
        if n then res.trailers[n:lower()] = v end
    end
    res.body_len = total
    if not sink then res.body = concat(parts) end
    return true
end

-- Reads one response head (may be a 1xx interim one); no body.
function Conn:read_head(opts)
    return parse_head(self, deadline_of(self, opts))
end

-- Reads one response. opts: method (the request's, for HEAD), timeout,
-- sink (function(piece): the body is streamed to it instead of stored).
-- 1xx interim responses (except 101) are collected in res.interim.
-- Returns res = { status, reason, version, headers (lower-case name ->
-- value, repeats joined with ", "), all_headers (name -> {values}),
-- header_list, body, body_len, framing = "length"|"chunked"|"close"|"none",
-- trailers, interim } or nil, err.
function Conn:read_response(opts)
    opts = opts or {}
    local deadline = deadline_of(self, opts)
    local interim = {}
    local res, err
    while true do
        res, err = parse_head(self, deadline)
        if not res then return nil, err end
        if res.status >= 200 or res.status == 101 then break end
        interim[#interim + 1] = res
    end
    res.interim = interim
    local status = res.status
    if opts.method == "HEAD" or status == 101 or status == 204 or status == 304 then
        res.framing, res.body, res.body_len = "none", "", 0
        return res
    end
    local te = res.headers["transfer-encoding"]
    local sink = opts.sink
    if te then
        if te:lower():match("chunked%s*$") then
            res.framing = "chunked"
            local ok, cerr = read_chunked(self, res, deadline, sink)
            if not ok then return nil, cerr, res end
            return res
        end
    elseif res.headers["content-length"] then
        local cls = res.all_headers["content-length"]
        for i = 2, #cls do
            if cls[i] ~= cls[1] then return nil, "differing Content-Length" end
        end
        local n = tonumber(cls[1])
        if not n then return nil, "bad Content-Length: " .. cls[1] end
        res.framing = "length"
        local total = 0
        local body, rerr = self:read_exact(n, deadline, sink and function(p)
            total = total + #p
            sink(p)
        end)
        if not body then return nil, "in body: " .. rerr, res end
        res.body_len = sink and total or #body
        if not sink then res.body = body end
        return res
    end
    res.framing = "close"
    local total, parts = 0, {}
    local body, rerr = self:read_until_close(deadline, function(p)
        total = total + #p
        if sink then sink(p) else parts[#parts + 1] = p end
    end)
    if not body then return nil, "in close-delimited body: " .. rerr, res end
    res.body_len = total
    if not sink then res.body = concat(parts) end
    return res
end

-- True if the peer closes the connection within `timeout` seconds (and no
-- data arrives first); false if data arrives or the connection stays open.
function Conn:closed(timeout)
    if #self.buf > 0 then return false end
    if self.eof then return true end
    local ok, err = self:fill(now() + (timeout or self.timeout))
    if ok then return false end
    return err == "closed"
end

function Conn:close()
    self.sock:close()
    self.eof = true
end

-- "Connection reset" vs orderly close, after closed() returned true
function Conn:close_reason()
    return self.err
end

---------------------------------------------------------------------------
-- requests

-- A request's headers as a list of { name, value } in order: req.headers is
-- a list of pairs, or a map (sorted by name).
local function header_list(req)
    local list = {}
    if req.headers then
        if req.headers[1] then
            for _, kv in ipairs(req.headers) do list[#list + 1] = kv end
        else
            local names = {}
            for k in pairs(req.headers) do names[#names + 1] = k end
            table.sort(names)
            for _, k in ipairs(names) do list[#list + 1] = { k, req.headers[k] } end
        end
    end
    return list
end

-- Builds a raw request. req: method (GET), path (/), version ("HTTP/1.1"),
-- headers (map or list of {name, value}; Host defaults to "localhost",
-- host = false omits it), body (adds Content-Length unless framing given).
function _M.request_text(req)
    req = req or {}
    local lines = { fmt("%s %s %s", req.method or "GET", req.path or "/",
        req.version or "HTTP/1.1") }
    local have = {}
    local list = header_list(req)
    for _, kv in ipairs(list) do have[kv[1]:lower()] = true end
    if not have.host and req.host ~= false then
        lines[#lines + 1] = "Host: " .. (req.host or "localhost")
    end
    for _, kv in ipairs(list) do
        if kv[2] ~= false then lines[#lines + 1] = kv[1] .. ": " .. kv[2] end
    end
    if req.body and not have["content-length"] and not have["transfer-encoding"] then
        lines[#lines + 1] = "Content-Length: " .. #req.body
    end
    return concat(lines, "\r\n") .. "\r\n\r\n" .. (req.body or "")
end

-- One request on a new connection (Connection: close unless the request
-- says otherwise) to 127.0.0.1:port (req.host_addr: another address);
-- returns res, raises if no response arrives.
function _M.http(port, req)
    req = req or {}
    local c = _M.connect(port, { timeout = req.timeout, host = req.host_addr })
    local headers = req.headers or {}
    local has_conn = false
    if headers[1] then
        for _, kv in ipairs(headers) do
            if kv[1]:lower() == "connection" then has_conn = true end
        end
        if not has_conn then
            headers = { unpack(headers) }
            headers[#headers + 1] = { "Connection", "close" }
        end
    else
        for k in pairs(headers) do
            if k:lower() == "connection" then has_conn = true end
        end
        if not has_conn then
            local copy = {}
            for k, v in pairs(headers) do copy[k] = v end
            copy.Connection = "close"
            headers = copy
        end
    end
    local r2 = {}
    for k, v in pairs(req) do r2[k] = v end
    r2.headers = headers
    c:send(_M.request_text(r2))
    local res, err = c:read_response({ method = req.method, timeout = req.timeout,
                                       sink = req.sink })
    c:close()
    if not res then
        error(fmt("%s %s: no response: %s", req.method or "GET", req.path or "/",
            tostring(err)), 2)
    end
    return res
end

-- The headers moongate's own clients send to the admin API on
-- 127.0.0.1:port (src/admin_client.c): a Host naming it and, for a POST or
-- DELETE, the Content-Type its endpoint needs; a page in a browser cannot
-- send the latter without a preflight (README, "Admin API").
function _M.admin_headers(port, method, path)
    local hdrs = { Host = "127.0.0.1:" .. port }
    if method == "POST" or method == "PUT" or method == "DELETE" then
        hdrs["Content-Type"] = (path or ""):match("^/repl") and "text/x-lua"
            or "application/json"
    end
    return hdrs
end

-- One request to the admin API on 127.0.0.1:port, as moongate's own
-- clients send it (admin_headers; req.headers, a map, adds or replaces).
function _M.admin(port, req)
    req = req or {}
    local hdrs = _M.admin_headers(port, req.method, req.path)
    for k, v in pairs(req.headers or {}) do hdrs[k] = v end
    local r2 = {}
    for k, v in pairs(req) do r2[k] = v end
    r2.headers = hdrs
    if (req.method == "POST" or req.method == "PUT" or req.method == "DELETE") and not r2.body then
        r2.body = ""
    end
    return _M.http(port, r2)
end

-- GET /upstreams on the admin API at port: upstream `name`'s targets as
-- { ["10.0.0.1:80"] = target }, and the upstream itself (docs/discovery.md).
function _M.upstream_targets(port, name)
    local res = _M.admin(port, { path = "/upstreams" })
    assert(res.status == 200, "GET /upstreams: " .. res.status)
    for _, u in ipairs(_M.json(res.body).upstreams) do
        if u.name == name then
            local out = {}
            for _, t in ipairs(u.targets) do out[t.target] = t end
            return out, u
        end
    end
    error("no upstream " .. name .. " in /upstreams", 2)
end

-- The keys of t, sorted.
function _M.sorted_keys(t)
    local out = {}
    for k in pairs(t) do out[#out + 1] = k end
    table.sort(out)
    return out
end

-- Same as http() but on an existing connection (keep-alive).
function Conn:request(req)
    self:send(_M.request_text(req))
    local res, err = self:read_response({ method = req.method, timeout = req.timeout })
    if not res then
        error(fmt("%s %s: no response: %s", req.method or "GET", req.path or "/",
            tostring(err)), 2)
    end
    return res
end

-- Asserts a gateway error answer: status, JSON body with error/status/
-- request_id, Content-Type application/json, X-Request-Id = request_id.
-- Returns the decoded body.
function _M.assert_error(res, status)
    assert(res, "no response")
    local from_upstream = res.headers["x-upstream-name"]
    if from_upstream then
        error(fmt("expected a gateway %d, got a %d from upstream %q (the request was " ..
            "forwarded): %s", status, res.status, from_upstream,
            tostring(res.body):sub(1, 300)), 2)
    end
    if res.status ~= status then
        error(fmt("expected status %d, got %d: %s", status, res.status,
            tostring(res.body):sub(1, 300)), 2)
    end
    local ct = res.headers["content-type"] or ""
    if not ct:find("application/json", 1, true) then
        error("error answer without Content-Type application/json: " .. ct, 2)
    end
    local ok, body = pcall(cjson.decode, res.body or "")
    if not ok or type(body) ~= "table" then
        error("error answer body is not a JSON object: " .. tostring(res.body), 2)
    end
    if body.status ~= status then
        error(fmt("error body status %s ~= %d", tostring(body.status), status), 2)
    end
    if type(body.error) ~= "string" or body.error == "" then
        error("error body without 'error' string: " .. res.body, 2)
    end
    if type(body.request_id) ~= "string" or body.request_id == "" then
        error("error body without request_id: " .. res.body, 2)
    end
    if res.headers["x-request-id"] ~= body.request_id then
        error(fmt("X-Request-Id %s ~= body request_id %s",
            tostring(res.headers["x-request-id"]), body.request_id), 2)
    end
    return body
end

---------------------------------------------------------------------------
-- generated bodies (the same bytes upstream.py generates for ?size=N)

local BLOCK
function _M.block()
    if not BLOCK then
        local t = {}
        for i = 0, 65535 do t[i + 1] = string.char(i % 251) end
        BLOCK = concat(t)
    end
    return BLOCK
end

-- sink that checks a streamed body against the generated pattern;
-- returns sink, state { len, bad_at (first mismatching offset or nil) }
function _M.pattern_checker()
    local pp = _M.block() .. _M.block()
    local st = { len = 0 }
    local function sink(piece)
        local i = 1
        while i <= #piece do
            local o = st.len % 65536
            local take = math.min(#piece - i + 1, 65536)
            if piece:sub(i, i + take - 1) ~= pp:sub(o + 1, o + take) and not st.bad_at then
                st.bad_at = st.len
            end
            st.len = st.len + take
            i = i + take
        end
    end
    return sink, st
end

---------------------------------------------------------------------------
-- WebSocket frames

local band, bor, bxor = bit.band, bit.bor, bit.bxor

-- client frame (masked unless mask == false)
function _M.ws_frame(opcode, payload, mask)
    local n = #payload
    local b1 = string.char(bor(0x80, opcode))
    local mbit = mask == false and 0 or 0x80
    local len
    if n < 126 then
        len = string.char(bor(mbit, n))
    elseif n < 65536 then
        len = string.char(bor(mbit, 126), math.floor(n / 256), n % 256)
    else
        local t = { string.char(bor(mbit, 127)) }
        for i = 7, 0, -1 do t[#t + 1] = string.char(math.floor(n / 2 ^ (8 * i)) % 256) end
        len = concat(t)
    end
    if mask == false then return b1 .. len .. payload end
    local key = { 0x12, 0x34, 0x56, 0x78 }
    local out = {}
    for i = 1, n do
        out[i] = string.char(bxor(payload:byte(i), key[(i - 1) % 4 + 1]))
    end
    return b1 .. len .. string.char(unpack(key)) .. concat(out)
end

-- Reads one frame: { fin, opcode, payload, masked } or nil, err.
function Conn:read_ws_frame(timeout)
    local deadline = now() + (timeout or self.timeout)
    local h, err = self:read_exact(2, deadline)
    if not h then return nil, err end
    local b1, b2 = h:byte(1, 2)
    local n = band(b2, 0x7f)
    if n == 126 then
        local e = self:read_exact(2, deadline)
        if not e then return nil, "short frame" end
        n = e:byte(1) * 256 + e:byte(2)
    elseif n == 127 then
        local e = self:read_exact(8, deadline)
        if not e then return nil, "short frame" end
        n = 0
        for i = 1, 8 do n = n * 256 + e:byte(i) end
    end
    local key
    if band(b2, 0x80) ~= 0 then key = self:read_exact(4, deadline) end
    local payload, perr = self:read_exact(n, deadline)
    if not payload then return nil, perr end
    if key then
        local out = {}
        for i = 1, n do
            out[i] = string.char(bxor(payload:byte(i), key:byte((i - 1) % 4 + 1)))
        end
        payload = concat(out)
    end
    return { fin = band(b1, 0x80) ~= 0, opcode = band(b1, 0x0f), payload = payload,
             masked = key ~= nil }
end

---------------------------------------------------------------------------
-- paced load (spec/support/load.py)

local LOAD_PY = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/load.py"
local nloads = 0

-- An HS256 JWT for sub signed with secret, valid for ttl seconds (300),
-- minted by python3 (the spec process loads none of moongate's C).
local HS256 = [[
import base64, hashlib, hmac, json, sys
secret, sub, exp = sys.argv[1], sys.argv[2], int(sys.argv[3])
e = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = e(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = e(json.dumps({"sub": sub, "exp": exp}).encode())
sig = e(hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest())
print(head + "." + body + "." + sig)
]]
function _M.hs256(secret, sub, ttl)
    return (sh_output(fmt("python3 -c %s %s %s %d", shq(HS256), shq(secret), shq(sub),
                          os.time() + (ttl or 300))):gsub("%s+$", ""))
end

-- Starts load.py in the background with o = { ports, paths, headers, rate,
-- duration, conns, count_header, timeline, method, body_size, timeout };
-- returns a function that waits
-- for it and returns its decoded report.
function _M.load_start(o)
    nloads = nloads + 1
    local out = _M.tmpfile(fmt("load%d.json", nloads))
    local args = { "-u", shq(LOAD_PY) }
    for _, p in ipairs(o.ports) do args[#args + 1] = "--port " .. p end
    for _, p in ipairs(o.paths or { "/" }) do args[#args + 1] = "--path " .. shq(p) end
    for _, hd in ipairs(o.headers or {}) do args[#args + 1] = "--header " .. shq(hd) end
    args[#args + 1] = fmt("--rate %d --duration %g --conns %d", o.rate or 1000,
                          o.duration or 5, o.conns or 20)
    if o.count_header then args[#args + 1] = "--count-header " .. shq(o.count_header) end
    if o.timeline then args[#args + 1] = "--timeline" end
    if o.method then args[#args + 1] = "--method " .. shq(o.method) end
    if o.timeout then args[#args + 1] = fmt("--timeout %g", o.timeout) end
    if o.body_size then args[#args + 1] = fmt("--body-size %d", o.body_size) end
    local started = now()
    os.execute(fmt("%s %s >%s 2>&1 &", shq(python_bin()), concat(args, " "), shq(out)))
    return function()
        local deadline = started + (o.duration or 5) + 30 * _M.SLOW
        while true do
            local s = read_file(out)
            if s and s:find("\n", 1, true) then
                local ok, r = pcall(require("cjson").decode, s)
                if not ok then error("load.py: " .. s) end
                return r
            end
            if now() > deadline then error("load.py did not finish: " .. (s or "")) end
            socket.sleep(0.05)
        end
    end
end

---------------------------------------------------------------------------
-- HTTP/2 client: spec/support/h2_client.py (Debian's python3-h2) on one
-- connection, driven over a control socket

_M.H2_CLIENT_PY = here .. "/h2_client.py"

local H2 = {}
H2.__index = H2

-- The headers of a request for HTTP/2 (as header_list; false values left
-- out, the others as strings); the host goes as :authority (h2_command).
local function h2_headers(req)
    local out = {}
    for _, kv in ipairs(header_list(req)) do
        if kv[2] ~= false then out[#out + 1] = { kv[1], tostring(kv[2]) } end
    end
    return out
end

-- Opens an HTTP/2 connection to 127.0.0.1:port: h2c with prior knowledge,
-- or h2 by ALPN with opts.tls (opts.ca: verify against it; opts.sni).
-- opts.window: the client's stream window; opts.no_read_body: never give
-- the window back (a zero-window reader). Returns the client; raises if it
-- cannot connect.
function _M.h2_connect(port, opts)
    opts = opts or {}
    local args = { "--port", tostring(port) }
    if opts.tls then args[#args + 1] = "--tls" end
    if opts.ca then args[#args + 1] = "--ca " .. shq(opts.ca) end
    if opts.sni then args[#args + 1] = "--sni " .. shq(opts.sni) end
    if opts.window then args[#args + 1] = "--window " .. opts.window end
    if opts.no_read_body then args[#args + 1] = "--no-read-body" end
    local p = spawn(fmt("exec /usr/bin/python3 -u %s %s", shq(_M.H2_CLIENT_PY),
                        concat(args, " ")), "h2-client")
    local deadline, ctl = now() + 10 * _M.SLOW
    while now() < deadline do
        ctl = p:log():match("ready (%d+)")
        if ctl or not p:alive() then break end
        socket.sleep(0.01)
    end
    if not ctl then
        local log = p:log()
        p:kill("KILL")
        error("h2_client.py did not start: " .. log, 2)
    end
    local s = socket.tcp()
    s:settimeout(10 * _M.SLOW)
    assert(s:connect("127.0.0.1", tonumber(ctl)))
    return setmetatable({ proc = p, sock = s }, H2)
end

function H2:call(cmd, timeout)
    local cjson = require "cjson"
    self.sock:settimeout((timeout or 10) * _M.SLOW + 5)
    assert(self.sock:send(cjson.encode(cmd) .. "\n"))
    local line, err = self.sock:receive("*l")
    if not line then error("h2_client.py: " .. tostring(err) .. "\n" .. self.proc:log(), 2) end
    return cjson.decode(line)
end

-- Sends a request (req as _M.http's: method, path, headers, body; host as
-- :authority; scheme; end = false leaves the stream open for :data); returns
-- its stream id.
local function h2_command(op, req)
    local cmd = { op = op, method = req.method or "GET", path = req.path or "/",
                  headers = h2_headers(req), scheme = req.scheme,
                  ["end"] = req["end"] ~= false }
    cmd.authority = req.host == false and require("cjson").null or req.host or "localhost"
    if req.body then cmd.body_b64 = require("mime").b64(req.body) end
    return cmd
end

function H2:start(req)
    return self:call(h2_command("request", req or {})).id
end

function H2:data(id, body, last)
    return self:call({ op = "data", id = id, body_b64 = require("mime").b64(body),
                       ["end"] = last ~= false })
end

function H2:reset(id, code)
    return self:call({ op = "reset", id = id, code = code or 8 })
end

-- Waits for the stream's end; returns res = { status, version = "HTTP/2",
-- headers (lower-case name -> value, repeats joined with ", "), all_headers,
-- header_list, body, body_len, trailers (name -> value), reset (the
-- RST_STREAM code, or nil), interim (1xx statuses) } or nil, err.
local function h2_result(r)
    if r.error then return nil, r.error end
    local res = { version = "HTTP/2", status = r.status, headers = {}, all_headers = {},
                  header_list = {}, trailers = {}, interim = r.interim,
                  reset = r.reset ~= require("cjson").null and r.reset or nil,
                  body = require("mime").unb64(r.body_b64) or "", body_len = r.body_len }
    for _, kv in ipairs(r.headers) do
        local n, v = kv[1], kv[2]
        if n:sub(1, 1) ~= ":" then
            res.header_list[#res.header_list + 1] = { n, v }
            res.all_headers[n] = res.all_headers[n] or {}
            local all = res.all_headers[n]
            all[#all + 1] = v
            res.headers[n] = res.headers[n] and (res.headers[n] .. ", " .. v) or v
        end
    end
    for _, kv in ipairs(r.trailers) do res.trailers[kv[1]] = kv[2] end
    return res
end

function H2:wait(id, timeout)
    return h2_result(self:call({ op = "wait", id = id, timeout = (timeout or 10) * _M.SLOW },
                               timeout))
end

-- One request and its answer (in one round trip to the helper); raises
-- when none comes.
function H2:request(req)
    req = req or {}
    local cmd = h2_command("fetch", req)
    cmd.timeout = (req.timeout or 10) * _M.SLOW
    local res, err = h2_result(self:call(cmd, req.timeout))
    if not res then error(fmt("HTTP/2 %s %s: %s", req.method or "GET", req.path or "/",
                              tostring(err)), 2) end
    return res
end

-- Every request of the list on a stream of its own, at most `most` at once
-- (default: what the server allows); returns their answers in order once
-- all ended (raises otherwise).
function H2:batch(reqs, timeout, most)
    local cmds = {}
    for i, req in ipairs(reqs) do cmds[i] = h2_command("request", req) end
    local r = self:call({ op = "batch", requests = cmds, timeout = (timeout or 10) * _M.SLOW,
                          max = most }, timeout)
    if r.error then error("HTTP/2 batch: " .. r.error, 2) end
    local out = {}
    for i, x in ipairs(r.results) do out[i] = assert(h2_result(x)) end
    return out
end

-- { goaway = code or nil, last_stream_id, closed, settings }
function H2:state()
    local st = self:call({ op = "state" })
    if st.goaway == require("cjson").null then st.goaway = nil end
    return st
end

function H2:close()
    pcall(self.call, self, { op = "close" })
    self.sock:close()
    self.proc:kill("TERM", 3)
end

-- One request on a new HTTP/2 connection (as _M.http is over HTTP/1.1);
-- opts as h2_connect's.
function _M.http2(port, req, opts)
    local c = _M.h2_connect(port, opts)
    local ok, res = pcall(c.request, c, req or {})
    c:close()
    if not ok then error(res, 2) end
    return res
end

-- Starts a real prometheus (Debian's) scraping 127.0.0.1:admin_port every
-- second, with `flags` added to its command line; returns its web port.
-- Each one has a storage of its own (two in a file would share a lock).
function _M.start_prometheus(admin_port, flags)
    local web = _M.free_port()
    local dir = _M.tmpfile("prometheus")
    _M.sh("mkdir -p " .. shq(dir))
    local conf = _M.tmpfile("prometheus.yml", fmt([[
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: moongate
    static_configs:
      - targets: ["127.0.0.1:%d"]
]], admin_port))
    spawn(fmt("exec prometheus --config.file=%s --storage.tsdb.path=%s/tsdb %s"
        .. "--web.listen-address=127.0.0.1:%d", shq(conf), shq(dir),
        flags and (flags .. " ") or "", web), "prometheus")
    return web
end

-- Asks the prometheus on port `web` the instant query `query` (URL-encoded)
-- until it has a result: the first one's value, or nil after 30 s.
function _M.prometheus_value(web, query)
    local deadline = _M.now() + 30 * _M.SLOW
    while _M.now() < deadline do
        local ok, res = pcall(_M.http, web, { path = "/api/v1/query?query=" .. query })
        if ok and res.status == 200 then
            local r = _M.json(res.body).data.result
            if r[1] then return tonumber(r[1].value[2]) end
        end
        _M.sleep(0.2)
    end
end

-- The value of one exact series ("name{labels}") in a /metrics text, or nil.
function _M.metric(text, series)
    for line in text:gmatch("[^\n]+") do
        local s, v = line:match("^(.-) (%S+)$")
        if s == series then return tonumber(v) end
    end
end

-- Counts the answers of load report r (load_start with timeline = true)
-- for path index pi (0-based) sent in [from, to) seconds after `at` (a
-- wall clock time), by status: { ["200"] = n, ... }.
function _M.load_window(r, pi, at, from, to)
    local counts = {}
    local offset = at - r.t0
    for _, e in ipairs(r.timeline) do
        local t = e[1] - offset
        if e[2] == pi and t >= from and t < to then
            local s = tostring(e[3])
            counts[s] = (counts[s] or 0) + 1
        end
    end
    return counts
end

return _M
