-- moongate.repl: the sessions of `moongate repl` (docs/repl.md).
--
--   local repl = require "moongate.repl"
--   local s = repl.new { file = "gateway.lua" }
--   local out, more = s:feed('try { path = "/orders/1" }')
--
-- A session holds a config loaded with moongate.testing, an environment for
-- the user's chunks (the moongate API, try, reload, routes, ...) and the
-- lines of a chunk not complete yet. Nothing is printed: every call returns
-- its output as a string, so the same session serves the terminal
-- (src/repl.c) and the admin API's POST /repl (mg_repl_server_eval), where
-- it runs on the gateway's control thread against the newest generation.
--
-- Modes: offline (repl.new { file = }), server (repl.new { server = true }:
-- the config file is package.loaded["moongate.control"].file, which the
-- gateway sets; dict/upstreams/metrics/status ask that module), and
-- check_only (repl.new { check_only = true }: feed only says whether a chunk
-- is complete and hands it back, for `moongate repl --attach`).

local type, tostring, tonumber, pairs, ipairs, select, error, pcall, xpcall,
    next = type, tostring, tonumber, pairs, ipairs, select, error, pcall,
    xpcall, next
local setmetatable, getmetatable, rawget, setfenv, loadstring =
    setmetatable, getmetatable, rawget, setfenv, loadstring
local fmt, sub, gsub, find, match, byte, rep, lower =
    string.format, string.sub, string.gsub, string.find, string.match,
    string.byte, string.rep, string.lower
local concat, sort = table.concat, table.sort
local getinfo = debug.getinfo

-- a chunk's budget: CPU seconds of this thread (in a gateway the workers'
-- CPU does not count, nor time spent waiting on a socket)
local budget = require "moongate.budget"

local _M = {}


-- Pretty printing -----------------------------------------------------------

local KEYWORDS = {}
for w in ("and break do else elseif end false for function goto if in " ..
          "local nil not or repeat return then true until while"):gmatch("%S+")
do
    KEYWORDS[w] = true
end

local ESCAPES = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r",
                  ['"'] = '\\"', ["\\"] = "\\\\" }

-- A string as a Lua literal on one line: control bytes escaped, and
-- strings longer than `max` cut (their length said).
local function quote(s, max)
    local cut = ""
    if max and #s > max then
        cut = fmt("... (%d bytes)", #s)
        s = sub(s, 1, max)
    end
    s = gsub(s, '[%c"\\]', function(c)
        return ESCAPES[c] or fmt("\\%03d", byte(c))
    end)
    return '"' .. s .. '"' .. cut
end

local function is_ident(k)
    return type(k) == "string" and find(k, "^[%a_][%w_]*$") ~= nil
        and not KEYWORDS[k]
end

local function function_name(f)
    local info = getinfo(f, "S")
    if not info or info.what == "C" then
        return "function: builtin"
    end
    local src = info.source
    src = sub(src, 1, 1) == "@" and sub(src, 2) or info.short_src
    return fmt("function: %s:%d", src, info.linedefined)
end

local TYPE_ORDER = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then
        return (TYPE_ORDER[ta] or 9) < (TYPE_ORDER[tb] or 9)
            or ((TYPE_ORDER[ta] or 9) == (TYPE_ORDER[tb] or 9) and ta < tb)
    end
    if ta == "number" or ta == "string" then
        return a < b
    end
    return tostring(a) < tostring(b)
end

local pretty

local function scalar(v, o)
    local tv = type(v)
    if tv == "string" then
        return quote(v, o.max_string)
    elseif tv == "function" then
        return function_name(v)
    end
    return tostring(v)
end

local function table_text(t, o, depth, indent, seen)
    if seen[t] then
        return "<cycle>"
    end
    local mt = getmetatable(t)
    if type(mt) == "table" and rawget(mt, "__tostring") then
        local ok, s = pcall(tostring, t)
        if ok then
            return tostring(s)
        end
    end
    if next(t) == nil then
        return "{}"
    end
    if depth >= o.depth then
        return "{...}"
    end
    seen[t] = true
    local items, n = {}, 0
    while t[n + 1] ~= nil do
        n = n + 1
    end
    local keys = {}
    for k in pairs(t) do
        if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
            keys[#keys + 1] = k
        end
    end
    sort(keys, key_less)
    local inner = indent .. "  "
    local total, shown = n + #keys, 0
    for i = 1, n do
        if shown >= o.max_items then
            break
        end
        shown = shown + 1
        items[shown] = pretty(t[i], o, depth + 1, inner, seen)
    end
    for _, k in ipairs(keys) do
        if shown >= o.max_items then
            break
        end
        shown = shown + 1
        local ks = is_ident(k) and k
            or "[" .. pretty(k, o, depth + 1, inner, seen) .. "]"
        items[shown] = ks .. " = " .. pretty(t[k], o, depth + 1, inner, seen)
    end
    if total > shown then
        items[#items + 1] = fmt("... (%d more)", total - shown)
    end
    seen[t] = nil
    local one = "{ " .. concat(items, ", ") .. " }"
    if #one + #indent <= o.width and not find(one, "\n", 1, true) then
        return one
    end
    -- several lines: the list part flows, each key = value on its own
    local lines, cur = {}, nil
    for i, item in ipairs(items) do
        local flows = i <= math.min(n, shown) and not find(item, "\n", 1, true)
        if flows and cur and #inner + #cur + #item + 2 <= o.width then
            cur = cur .. " " .. item .. ","
        else
            if cur then
                lines[#lines + 1] = cur
            end
            cur = item .. ","
            if not flows then
                lines[#lines + 1] = cur
                cur = nil
            end
        end
    end
    lines[#lines + 1] = cur
    return "{\n" .. inner .. concat(lines, "\n" .. inner) .. "\n" ..
        indent .. "}"
end

pretty = function(v, o, depth, indent, seen)
    if type(v) == "table" then
        return table_text(v, o, depth, indent, seen)
    end
    return scalar(v, o)
end

local PRETTY_DEFAULTS = { depth = 5, max_items = 100, max_string = 500,
                          width = 78 }

--- repl.pretty(v [, opts]) -> v as Lua-like text: tables with their keys
-- sorted, on several lines when long, cycles shown as <cycle>, nesting cut
-- at opts.depth (default 5) as {...}, at most opts.max_items (100) entries
-- per table, strings quoted (cut after opts.max_string bytes, 500).
function _M.pretty(v, opts)
    local o = PRETTY_DEFAULTS
    if opts then
        o = {}
        for k, d in pairs(PRETTY_DEFAULTS) do
            o[k] = opts[k] or d
        end
    end
    return pretty(v, o, 0, "", {})
end
local to_text = _M.pretty


-- Chunks --------------------------------------------------------------------

-- A syntax error that only says the input stopped too early: more lines
-- may complete it. A short string cannot span lines (unless the line ends
-- with a backslash), so an unfinished one is a mistake now.
local function incomplete(err, src)
    if not err or not find(err, "near '<eof>'$") then
        return false
    end
    if find(err, "unfinished string near", 1, true) then
        return sub(src, -1) == "\\"
    end
    return true
end

-- Compiles `src` the way the standard REPL does: "return <src>" first (an
-- expression prints its values), then as statements. Returns fn, or nil,
-- the syntax error and whether more input could complete it.
local function compile(src, chunkname)
    local expr = match(src, "^%s*=(.*)$")       -- Lua 5.1 style "=expr"
    local fn, rerr = loadstring("return " .. (expr or src), chunkname)
    if fn then
        -- run as select(1, ...): every value, and no tail call, so that an
        -- error raised by a function called here says "stdin:1:"
        return loadstring("return select(1, " .. (expr or src) .. "\n)",
                          chunkname) or fn
    end
    if expr then
        return nil, rerr, incomplete(rerr, src)
    end
    local serr
    fn, serr = loadstring(src, chunkname)
    if fn then
        return fn
    end
    return nil, serr, incomplete(serr, src) or incomplete(rerr, src)
end

--- repl.complete(src) -> false when `src` is a chunk that more lines could
-- still complete (an open block, string, bracket or expression), true
-- otherwise (a valid chunk, or one with a definite syntax error).
function _M.complete(src)
    local fn, _, more = compile(src, "=repl")
    return fn ~= nil or not more
end


-- The real upstream (try { real = true }) -------------------------------------

local function split_target(target)
    local host, port = match(target, "^%[(.+)%]:(%d+)$")
    if not host then
        host, port = match(target, "^(.+):(%d+)$")
    end
    return host, tonumber(port)
end

-- The upstream's answer, read from sock until the gateway's own upstream
-- response parser (src/h1_response.c, mg_ffi_h1_response) says it is
-- complete: { status, headers = list, body (unframed) }. Raises the
-- reason when it is refused, cut short or late.
local ffi = require "ffi"
local MAX_HEADERS = 128
local a_status, a_nheaders = ffi.new("int[1]"), ffi.new("uint32_t[1]")
local a_spans = ffi.new("uint32_t[?]", 4 * MAX_HEADERS)
local a_off, a_len, a_err = ffi.new("size_t[1]"), ffi.new("size_t[1]"),
    ffi.new("const char *[1]")

local function read_answer(sock, method, timeout)
    local socket = require "socket"
    local cdefs = require "moongate.cdefs"
    local C = cdefs.C or require("moongate.clib").require("mg_ffi_now")
    local deadline = socket.gettime() + timeout
    local data, eof = "", false
    sock:settimeout(0)
    while true do
        -- the parser unframes in place: a fresh copy each time
        local buf = ffi.new("char[?]", #data + 1)
        ffi.copy(buf, data, #data)
        local n = tonumber(C.mg_ffi_h1_response(buf, #data, eof and 1 or 0,
            method == "HEAD" and 1 or 0, a_status, a_spans, MAX_HEADERS, a_nheaders,
            a_off, a_len, a_err))
        if n >= 0 then
            local list = {}
            for i = 0, tonumber(a_nheaders[0]) - 1 do
                local sp = a_spans + 4 * i
                list[#list + 1] = { ffi.string(buf + sp[0], sp[1]),
                                    ffi.string(buf + sp[2], sp[3]) }
            end
            return { status = a_status[0], headers = list,
                     body = ffi.string(buf + a_off[0], a_len[0]) }
        elseif n ~= cdefs.AGAIN then
            error("not a valid HTTP answer: " .. ffi.string(a_err[0]), 0)
        end
        local left = deadline - socket.gettime()
        if left <= 0 then
            error("reading the answer: timeout", 0)
        end
        local readable = socket.select({ sock }, nil, left)
        if readable and readable[1] then
            local got, err, partial = sock:receive(65536)
            data = data .. (got or partial or "")
            if err == "closed" then
                eof = true
            elseif err and err ~= "timeout" then
                error("reading the answer: " .. err, 0)
            end
        end
    end
end

-- The answer as the kit's fake upstream gives it: the body decoded, so
-- a chunked one loses its Transfer-Encoding (the kit frames the decoded
-- body with a Content-Length).
local function as_fake(res)
    local kept = {}
    for _, h in ipairs(res.headers) do
        if lower(h[1]) ~= "transfer-encoding" then
            kept[#kept + 1] = h
        end
    end
    res.headers = kept
    return res
end

-- Sends upstream request `ureq` (a moongate.testing upstream_request: its
-- head as the gateway would write it, and its body) to its target with a
-- blocking socket. Returns { status, headers = list, body }, or nil and a
-- reason.
local function real_request(ureq, timeout)
    local socket = require "socket"
    local host, port = split_target(ureq.target or "")
    if not host then
        return nil, "no target to connect to"
    end
    local sock = find(host, ":", 1, true) and socket.tcp6() or socket.tcp()
    sock:settimeout(timeout)
    local ok, err = sock:connect(host, port)
    if not ok then
        sock:close()
        return nil, "connect: " .. tostring(err)
    end
    ok, err = sock:send(ureq.head .. (ureq.body or ""))
    if not ok then
        sock:close()
        return nil, "send: " .. tostring(err)
    end
    local rok, res = pcall(read_answer, sock, ureq.method, timeout)
    sock:close()
    if not rok then
        return nil, tostring(res)
    end
    return as_fake(res)
end


-- Sessions ------------------------------------------------------------------

local Session = {}
local session_mt = { __index = Session }

local HELP = [[
moongate repl: Lua with the config loaded and the moongate API.
  try { method =, path =, headers =, body =, query =, real = }
                     run a request through the router and the hooks (fake
                     upstream; real = true: the upstream chosen, for real)
                     and print the trace; `last` is the decision table
  try "/path"        the same for GET /path
  reload([file])     re-read the config files (or load another one)
  routes()           the routes, in file order
  upstreams()        the upstreams and their targets
  dict(name [, n])   a shared dictionary's keys and values (first n, 100)
  pp(value)          pretty-print a value
  gw, testing, gwt   require "moongate", require "moongate.testing" and the
                     gateway it loaded (gwt:request{...} returns a decision)
  exit, quit         end the session (also Ctrl-D)
An expression prints its value (also "=expr"); a chunk may span lines.
Locals last one chunk: use globals to keep values. Tab completes names
(gw., req:, res:, the commands); Ctrl-C cancels the chunk being typed.]]

local HELP_SERVER = [[
  status()           the gateway's status
  metrics()          the gateway's metrics
(live: this session runs in the gateway, against its newest config; try
runs the hooks for real on shared dictionaries; reload() re-reads the file
for this session only, `moongate reload` reloads the gateway)]]

-- The gateway's control module (server mode), or nil.
local function control_module()
    local ok, m = pcall(require, "moongate.control")
    if ok and type(m) == "table" then
        return m
    end
    return nil
end

-- Calls control.<name>() and returns its value (the admin API's JSON
-- decoded to a table), or nil and "name(): not available ...".
local function control_value(name)
    local c = control_module()
    local fn = c and c[name]
    if type(fn) ~= "function" then
        return nil, name .. "(): not available"
    end
    local ok, v = pcall(fn)
    if not ok then
        return nil, name .. "(): not available (" .. tostring(v) .. ")"
    end
    if type(v) == "string" and find(v, "^%s*{") then
        local okj, cjson = pcall(require, "cjson.safe")
        local t = okj and cjson.decode(v)
        if type(t) == "table" then
            v = t
        end
    end
    return v
end

-- Calls control.<name>() and returns its text, or "not available".
local function ask_control(name)
    local v, why = control_value(name)
    if v == nil then
        return why
    end
    if type(v) == "string" then
        return (gsub(v, "\n$", ""))
    end
    return to_text(v)
end

function Session.emit(self, s)
    local out = self.out
    out[#out + 1] = s
end

function Session.print(self, ...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do
        parts[i] = tostring((select(i, ...)))
    end
    self:emit(concat(parts, "\t") .. "\n")
end

-- Takes the output gathered so far.
local function take(self)
    local s = concat(self.out)
    self.out = {}
    if s ~= "" and sub(s, -1) ~= "\n" then
        s = s .. "\n"
    end
    return s
end

local function summary(g)
    local cfg = g.cfg
    return fmt("%d routes, %d upstreams", #cfg.routes, #cfg.upstreams)
end

--- session:load(file) -> true, or false with the config's "file:line:
-- reason" errors emitted (the gateway loaded before stays).
function Session.load(self, file)
    local t = require "moongate.testing"
    local g, errs = t.load(file)
    if not g then
        for _, e in ipairs(errs or {}) do
            self:emit(e .. "\n")
        end
        return false
    end
    self.file, self.gwt, self.env.gwt = file, g, g
    return true
end

-- Server mode: follows the gateway's newest config (control.file, and
-- control.generation when the gateway sets it).
function Session.follow(self)
    local c = control_module()
    local file = c and c.file
    if type(file) ~= "string" then
        return
    end
    local gen = c.generation
    if file == self.file and gen == self.generation and self.gwt then
        return
    end
    self.generation = gen
    self.file = file            -- also when it fails: banner() says why
    if self:load(file) then
        self:emit(fmt("(config %s%s: %s)\n", file,
                      gen and " generation " .. tostring(gen) or "",
                      summary(self.gwt)))
    end
end

-- try { ... }: see HELP.
local function try(self, spec, level)
    if type(spec) == "string" then
        spec = { path = spec }
    elseif type(spec) ~= "table" then
        error("try: expects { method =, path =, headers =, body =, " ..
              "real = } or a path, got " .. type(spec), level)
    end
    local g = self.gwt
    if not g then
        error("try: no config loaded (moongate repl -c FILE, or " ..
              "reload(\"file.lua\"))", level)
    end
    local real, timeout = spec.real, spec.timeout or 5
    local kspec = {}
    for k, v in pairs(spec) do
        if k ~= "real" and k ~= "timeout" then
            kspec[k] = v
        end
    end
    local asked, note
    if real then
        kspec.upstream = function(ureq)
            asked = true
            local socket = require "socket"
            local w0 = socket.gettime()
            local res, err = real_request(ureq, timeout)
            local ms = (socket.gettime() - w0) * 1000
            if res then
                note = fmt("real upstream %s: %d (%d bytes) in %.1f ms",
                           tostring(ureq.target), res.status, #res.body, ms)
                return res
            end
            -- what the gateway would answer itself; shown as the
            -- upstream's answer so that the hooks' view stays complete
            local status = find(err, "timeout", 1, true) and 504 or 502
            note = fmt("real upstream %s failed: %s (the gateway would " ..
                       "answer %d itself, without on_response; shown here " ..
                       "as the upstream's answer)", tostring(ureq.target),
                       err, status)
            return { status = status,
                     headers = { { "Content-Type", "application/json" } },
                     body = fmt('{"error":"upstream failed","status":%d}',
                                status) }
        end
    end
    local ok, d = pcall(g.request, g, kspec)
    if not ok then
        error("try: " .. match(tostring(d), "^[^\n]*"), level)
    end
    self.env.last = d
    local t = require "moongate.testing"
    self:emit(t.format_trace(d))
    if real then
        if note then
            self:emit("  " .. note .. "\n")
        elseif d.upstream_request and not asked then
            self:emit("  real = true: this moongate.testing does not take " ..
                      "an upstream function; the answer above is its fake " ..
                      "upstream's\n")
        else
            self:emit("  real = true: nothing was sent upstream (answered " ..
                      "by " .. tostring(d.responded_by) .. ")\n")
        end
    end
end

local function pad(s, n)
    return s .. rep(" ", n - #s)
end

-- Rows of cells as aligned columns.
local function columns(rows)
    local width = {}
    for _, row in ipairs(rows) do
        for i, cell in ipairs(row) do
            width[i] = math.max(width[i] or 0, #cell)
        end
    end
    local out = {}
    for r, row in ipairs(rows) do
        local cells = {}
        for i, cell in ipairs(row) do
            cells[i] = i < #row and pad(cell, width[i]) or cell
        end
        out[r] = "  " .. concat(cells, "  ") .. "\n"
    end
    return concat(out)
end

local function routes(self)
    local g = self.gwt
    if not g then
        return self:emit("routes(): no config loaded\n")
    end
    local cfg = g.cfg
    local rows = { { "name", "methods", "path", "to", "policies", "where" } }
    for _, r in ipairs(cfg.routes) do
        local to
        if r.handler then
            to = "handler"
        elseif r.split then
            local parts = {}
            for i, e in ipairs(r.split) do
                parts[i] = fmt("%s %d", tostring(cfg.upstreams[e.upstream].name), e.weight)
            end
            to = "-> " .. concat(parts, ", ") .. (r.split.key and " by key" or "")
        else
            to = "-> " .. tostring(cfg.upstreams[r.upstream].name)
        end
        if r.canary then
            to = to .. " canary " .. tostring(cfg.upstreams[r.canary.upstream].name)
        end
        if r.mirror then
            to = to .. " mirror " .. tostring(cfg.upstreams[r.mirror.upstream].name)
        end
        if r.rewrite then
            to = to .. " rewrite " .. r.rewrite
        elseif r.strip_prefix then
            to = to .. " strip " .. r.strip_prefix
        end
        local path = r.path
        if r.host then
            path = r.host .. path
        end
        local methods = r.methods and #r.methods > 0 and
            concat(r.methods, ",") or "*"
        rows[#rows + 1] = {
            r.name, methods, path, to, tostring(#(r.policies or {})),
            fmt("%s:%d", r.source or cfg.file, r.line),
        }
    end
    self:emit(columns(rows))
end

-- upstreams(): one table offline and live alike: name, targets
-- (host:port, *weight when not 1), options (from the config). `live` (GET
-- /upstreams' table, in a running gateway) adds each target's health, why
-- it is down, and its idle connections.
local function upstream_table(cfg, live)
    local rows = { { "name", "targets", "options" } }
    local by_name = {}
    for _, u in ipairs(cfg and cfg.upstreams or {}) do
        by_name[u.name] = u
    end
    local function options(u)
        return u and fmt("keepalive %d, connect %gs, read %gs", u.keepalive,
            u.connect_timeout / 1000, u.read_timeout / 1000) or ""
    end
    if live then
        for _, u in ipairs(live.upstreams or {}) do
            local targets = {}
            for i, t in ipairs(u.targets or {}) do
                local why = t.checks and t.checks.last_error
                targets[i] = tostring(t.target) ..
                    ((t.weight or 1) ~= 1 and "*" .. t.weight or "") .. " " ..
                    tostring(t.health) ..
                    (t.health == "down" and type(why) == "string" and
                        " (" .. why .. ")" or "") ..
                    ((t.idle_connections or 0) > 0 and
                        fmt(", %d idle", t.idle_connections) or "")
            end
            rows[#rows + 1] = { tostring(u.name), concat(targets, ", "),
                                options(by_name[u.name]) }
        end
    else
        for _, u in ipairs(cfg.upstreams) do
            local targets = {}
            for i, t in ipairs(u.targets) do
                local host = find(t.host, ":", 1, true) and "[" .. t.host .. "]"
                    or t.host
                targets[i] = fmt("%s:%d", host, t.port) ..
                    (t.weight ~= 1 and "*" .. t.weight or "")
            end
            rows[#rows + 1] = { u.name, concat(targets, ", "), options(u) }
        end
    end
    return columns(rows)
end

local function upstreams(self)
    local cfg = self.gwt and self.gwt.cfg
    if self.server then
        local live, why = control_value("upstreams")
        if type(live) == "table" then
            return self:emit(upstream_table(cfg, live))
        end
        self:emit(tostring(why or "upstreams(): not available") .. "\n")
        if not cfg then
            return
        end
        self:emit("as configured:\n")
    elseif not cfg then
        return self:emit("upstreams(): no config loaded\n")
    end
    self:emit(upstream_table(cfg))
end

local function dict(name, max, level)
    if type(name) ~= "string" then
        error("dict: expects a shared dictionary's name", level)
    end
    max = max or 100
    local d, err = require("moongate.shared").get(name)
    if not d then
        error("dict: " .. tostring(err), level)
    end
    local keys = d:keys(max + 1)
    sort(keys)
    local out, more = {}, #keys > max
    for i = 1, math.min(#keys, max) do
        local k = keys[i]
        out[k] = d:get(k)
    end
    return out, more
end

local function reload(self, file)
    file = file or self.file
    if type(file) ~= "string" then
        return self:emit("reload: no config file (reload(\"file.lua\"))\n")
    end
    if self:load(file) then
        self:emit(fmt("reloaded %s (%s)\n", file, summary(self.gwt)))
    else
        self:emit("reload failed; " .. (self.gwt and
                  "the previous config stays" or "no config loaded") .. "\n")
    end
end

local function make_env(self)
    local env = setmetatable({ xpcall = budget.xpcall }, { __index = _G })
    local t = require "moongate.testing"
    env.gw = require "moongate"
    env.testing = t
    env.print = function(...) self:print(...) end
    env.pp = function(...)
        local n = select("#", ...)
        local parts = {}
        for i = 1, n do
            parts[i] = to_text((select(i, ...)))
        end
        self:emit(concat(parts, "\n") .. "\n")
    end
    env.help = function()
        self:emit(HELP .. "\n" .. (self.server and HELP_SERVER .. "\n" or ""))
    end
    env.try = function(spec) try(self, spec, 3) end
    env.reload = function(file) reload(self, file) end
    env.routes = function() routes(self) end
    env.upstreams = function() upstreams(self) end
    env.dict = function(name, max)
        local out, more = dict(name, max, 3)
        if more then
            self:emit(fmt("(%d keys shown, there are more: dict(name, n))\n",
                          max or 100))
        end
        return out
    end
    local offline = "not available offline (moongate repl --attach)"
    env.status = function()
        self:emit((self.server and ask_control("status")
                   or "status(): " .. offline) .. "\n")
    end
    env.metrics = function()
        self:emit((self.server and ask_control("metrics")
                   or "metrics(): " .. offline) .. "\n")
    end
    return env
end

--- repl.new(opts) -> a session. opts:
--   file        config file to load (offline mode)
--   server      true: follow package.loaded["moongate.control"].file
--   check_only  true: feed() only gathers complete chunks (--attach)
--   chunkname   name in error messages (default "stdin", "repl" in server)
--   budget      seconds of CPU a chunk may use (default: none; 3 in
--               server mode, where a loop would stall the control thread)
-- A config that does not load is not an error here: its "file:line:
-- reason" lines are in session:banner(), and reload() may follow.
function _M.new(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        error("repl.new: expects a table of options", 2)
    end
    if opts.file ~= nil and type(opts.file) ~= "string" then
        error("repl.new: file must be a string", 2)
    end
    local self = setmetatable({
        out = {}, buf = {}, check_only = opts.check_only and true or false,
        failed = 0, quit = false,
        server = opts.server and true or false,
        chunkname = "=" .. (opts.chunkname or
                            (opts.server and "repl" or "stdin")),
        budget = opts.budget or (opts.server and 3 or nil),
    }, session_mt)
    if self.check_only then
        return self
    end
    self.env = make_env(self)
    if opts.file then
        self.file = opts.file
        self.loaded = self:load(opts.file)
        self.load_errors = take(self)
    elseif self.server then
        self:follow()
        self.load_errors = take(self)
    end
    return self
end

--- session:banner() -> the text to greet the user with.
function Session.banner(self)
    local head = self.server and "moongate live repl" or "moongate repl"
    if self.gwt then
        head = fmt("%s: %s (%s%s)", head, self.file, summary(self.gwt),
                   self.generation and ", generation " ..
                   tostring(self.generation) or "")
    elseif self.file then
        head = fmt("%s: %s did not load:\n%s(fix it, then reload())", head,
                   self.file, self.load_errors or "")
    else
        head = head .. ": no config loaded"
    end
    return head .. "\nhelp() lists the commands\n"
end

local function pack(...)
    return { n = select("#", ...), ... }
end

-- Message of an error value as file:line: message.
local function error_text(e)
    if type(e) == "string" then
        return e
    end
    local mt = getmetatable(e)
    if type(mt) == "table" and rawget(mt, "__tostring") then
        return tostring(e)
    end
    return "error: " .. to_text(e)
end

-- Runs compiled chunk `fn` in the session's environment; output (print,
-- results, error) is gathered. `print` and `io.write` of the whole state
-- write into the session while it runs, so that the config's hooks are
-- seen in the output too.
function Session.run(self, fn)
    setfenv(fn, self.env)
    if jit and jit.off then
        jit.off(fn, true)       -- interpreted: the budget hook can stop it
    end
    local G, io = _G, io
    local saved_print, saved_write = G.print, io.write
    G.print = self.env.print
    io.write = function(...)
        local n = select("#", ...)
        for i = 1, n do
            self:emit(tostring((select(i, ...))))
        end
        return io
    end
    local res
    if self.budget then
        -- budget.call's own pcall succeeds: drop its `true`
        res = pack(select(2, budget.call({ seconds = self.budget,
            message = fmt("stopped: the chunk ran more than %g s", self.budget) },
            xpcall, fn, error_text)))
    else
        res = pack(xpcall(fn, error_text))
    end
    G.print, io.write = saved_print, saved_write
    if not res[1] then
        self.failed = self.failed + 1
        self:emit(tostring(res[2]) .. "\n")
        return
    end
    local texts, multi = {}, false
    for i = 2, res.n do
        texts[#texts + 1] = to_text(res[i])
        multi = multi or find(texts[#texts], "\n", 1, true) ~= nil
    end
    if #texts > 0 then
        self:emit(concat(texts, multi and "\n" or "\t") .. "\n")
    end
end

-- Runs a compiled chunk (or reports its syntax error); returns the output.
local function run_chunk(self, fn, err)
    if self.server then
        self:follow()
    end
    if fn then
        self:run(fn)
    else
        self.failed = self.failed + 1
        self:emit(err .. "\n")
    end
    return take(self)
end

-- `exit` or `quit` alone on a line (also called: `exit()`) ends the
-- session: the terminal reads session.quit.
local function is_quit(line)
    local w = match(line, "^%s*(%a+)%s*%(?%s*%)?%s*;?%s*$")
    return (w == "exit" or w == "quit") and
        (find(line, "(", 1, true) ~= nil) == (find(line, ")", 1, true) ~= nil)
end

--- session:feed(line [, opts]) -> output, more. Adds one line of input;
-- when the chunk gathered so far is complete it runs (output: what it
-- printed, its values, or its "file:line: message" error) and more is
-- false; when more lines could complete it, output is "" and more is true.
-- With opts.check_only (or a check_only session) nothing runs: output is
-- the complete chunk's source (nil for a blank line or while more is true).
function Session.feed(self, line, opts)
    if type(line) ~= "string" then
        error("session:feed: expects a string, got " .. type(line), 2)
    end
    local check = self.check_only or (opts and opts.check_only)
    local buf = self.buf
    if #buf == 0 and not find(line, "%S") then
        return (not check) and "" or nil, false
    end
    if #buf == 0 and is_quit(line) then
        self.quit = true
        return (not check) and "" or nil, false
    end
    buf[#buf + 1] = line
    local src = concat(buf, "\n")
    local fn, err, more = compile(src, self.chunkname)
    if more then
        return (not check) and "" or nil, true
    end
    self.buf = {}
    if check then
        if not fn then
            self.failed = self.failed + 1   -- the gateway will say why
        end
        return src, false
    end
    return run_chunk(self, fn, err), false
end

--- session:cancel(): drops the chunk typed so far (Ctrl-C at the prompt).
function Session.cancel(self)
    self.buf = {}
end

-- The names a value offers after "." (every key) or ":" (the functions),
-- its metatable's __index table included (objects with methods).
local function member_names(v, colon, names)
    for _ = 1, 3 do
        if type(v) ~= "table" then
            return
        end
        for k, x in pairs(v) do
            if is_ident(k) and sub(k, 1, 1) ~= "_" and
                (not colon or type(x) == "function") then
                names[k] = true
            end
        end
        local mt = getmetatable(v)
        v = type(mt) == "table" and rawget(mt, "__index") or nil
    end
end

-- A hook's req and res are not globals, but their names say what they are.
local function hook_object(name)
    local rt = require "moongate.runtime"
    return name == "req" and rt.request_api or name == "res" and
        rt.response_api or nil
end

--- session:completions(word) -> the sorted list of names that complete
-- `word` (Tab): globals and the REPL's commands ("tr" -> "try"), fields of
-- a dotted path ("gw.ht" -> "gw.http"), methods after ":" ("gwt:req"),
-- and the fields and methods of a hook's req and res ("req:set_").
function Session.completions(self, word)
    if type(word) ~= "string" then
        return {}
    end
    self.env = self.env or make_env(self)
    local base, sep, part = match(word, "^(.-)([.:])([%w_]*)$")
    local names = {}
    if not base then
        base, sep, part = "", "", word
        if not find(word, "^[%a_]?[%w_]*$") then
            return {}
        end
        member_names(self.env, false, names)
        member_names(_G, false, names)
        names.exit, names.quit = true, true
        for k in pairs(KEYWORDS) do
            names[k] = true
        end
    else
        local api = hook_object(base)
        if api then
            member_names(sep == ":" and api.methods or api.fields, false, names)
        else
            local v = self.env
            for seg in (base .. "."):gmatch("(.-)%.") do
                if not is_ident(seg) or type(v) ~= "table" then
                    return {}
                end
                local ok, x = pcall(function() return v[seg] end)
                v = ok and x or nil
            end
            member_names(v, sep == ":", names)
        end
    end
    local list = {}
    for k in pairs(names) do
        if sub(k, 1, #part) == part then
            list[#list + 1] = base .. sep .. k
        end
    end
    sort(list)
    return list
end

--- session:eval(code) -> output of a whole chunk (POST /repl). An
-- incomplete chunk is a syntax error here; a blank one answers the banner.
function Session.eval(self, code)
    if type(code) ~= "string" then
        error("session:eval: expects a string, got " .. type(code), 2)
    end
    self.buf = {}
    if not find(code, "%S") then
        if self.server then
            self:follow()
        end
        take(self)
        return self:banner()
    end
    code = gsub(code, "\n$", "")
    local fn, err = compile(code, self.chunkname)
    return run_chunk(self, fn, err)
end

--- session:finish() -> at the end of input: the syntax error of a chunk
-- left incomplete ("" when none), which is dropped.
function Session.finish(self)
    if #self.buf == 0 then
        return ""
    end
    local src = concat(self.buf, "\n")
    self.buf = {}
    self.failed = self.failed + 1
    local _, err = loadstring(src, self.chunkname)
    return (err or "incomplete input") .. "\n"
end

--- session:pending() -> true while a chunk waits for more lines.
function Session.pending(self)
    return #self.buf > 0
end

return _M
