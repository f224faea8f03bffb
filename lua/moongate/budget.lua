-- moongate.budget: CPU-time and memory budgets for Lua that runs outside a
-- worker's request hooks: loading a config file, its gw.test examples, the
-- testing kit's requests, REPL chunks (src/hooks.c has the workers' own).
--
--   local budget = require "moongate.budget"
--   local ok, err = budget.call({ seconds = 2, what = "loading" }, f, ...)
--
-- A debug count hook looks at this thread's CPU clock (and the state's
-- heap) every few thousand instructions. Past a limit it fires on every
-- instruction and raises "file:line: <what> took longer than N s" in each
-- one that is not moongate's own code: a pcall, an xpcall handler or a
-- coroutine of the user's code cannot swallow it for good, while moongate's
-- modules (error handlers, the kit's pipeline) run on and report it.
-- Budgets nest (a kit request inside the examples of a config): each has
-- its own limit, and the first one exceeded is reported.
--
-- LuaJIT calls hooks only while it interprets: with `interpret = true` the
-- JIT is off while the call runs (loops compiled before are not affected;
-- config.lua keeps the config's own looping functions interpreted).
-- The hook is per Lua state: a state runs one budgeted call stack at a time.
local ffi = require "ffi"

local type, error, pcall, select, unpack, tostring =
    type, error, pcall, select, unpack, tostring
local fmt, sub, match = string.format, string.sub, string.match
local sethook, getinfo = debug.sethook, debug.getinfo
local collectgarbage = collectgarbage

local _M = {}

local CHECK_EVERY = 1000        -- instructions between two looks at the clock

-- CPU seconds of this thread: in a gateway the workers' CPU must not count,
-- nor time spent waiting (the kit's waits are virtual anyway).
local clock = os.clock
if ffi.os == "Linux" and pcall(ffi.cdef, [[
typedef struct { long sec; long nsec; } mg_budget_timespec_t;
int clock_gettime(int clk, mg_budget_timespec_t *ts);
]]) then
    local ts = ffi.new("mg_budget_timespec_t")
    local C = ffi.C
    clock = function()
        C.clock_gettime(3, ts)          -- CLOCK_THREAD_CPUTIME_ID
        return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
    end
end
_M.clock = clock

-- moongate's own modules: the directory of this file
local OURS = match(getinfo(1, "S").source, "^(@.*[/\\])") or "\0"

local frames, n = {}, 0          -- the budgets in force, outermost first
local tripped, tripped_at        -- the message of the first one exceeded

local function over(f, now)
    if now - f.start > f.opts.seconds then
        return f.opts.message or fmt("%s took longer than %g s%s",
            f.opts.what or "running", f.opts.seconds,
            f.opts.hint and " " .. f.opts.hint or "")
    end
    local mem = f.opts.memory
    if mem and collectgarbage("count") * 1024 > mem then
        collectgarbage()            -- garbage does not count
        if collectgarbage("count") * 1024 > mem then
            return fmt("%s used more than %d MB of memory%s",
                       f.opts.what or "running", mem / 1048576,
                       f.opts.hint and " " .. f.opts.hint or "")
        end
    end
    return nil
end

local function hook()
    if not tripped then
        local now = clock()
        for i = 1, n do
            local why = over(frames[i], now)
            if why then
                tripped, tripped_at = why, i
                sethook(hook, "", 1)
                break
            end
        end
        if not tripped then
            return
        end
    end
    local info = getinfo(2, "Sl")
    if not info or sub(info.source, 1, #OURS) == OURS then
        return
    end
    error(fmt("%s:%d: %s", info.short_src, info.currentline, tripped), 0)
end

local function pack(...)
    return { n = select("#", ...), ... }
end

--- budget.call(opts, f, ...) -> true, f's results | false, error.
-- Runs f(...) protected, within opts.seconds of CPU time (a number of
-- seconds, read at every check: the caller may change it while f runs) and,
-- when opts.memory is given, with the state's heap under that many bytes.
-- opts.what names the work in the message ("loading"), opts.hint follows
-- it ("(a loop at the top level?)"), or opts.message replaces the whole
-- message of the time limit; opts.interpret turns the JIT off.
function _M.call(opts, f, ...)
    if type(opts) ~= "table" or type(opts.seconds) ~= "number" then
        error("budget.call: opts.seconds must be a number", 2)
    end
    local jit_was = false
    if opts.interpret and jit and jit.status() then
        jit_was = true
        jit.off()
    end
    -- the hook may fire between any two lines: frames[1..n] always exist
    frames[n + 1] = { opts = opts, start = clock() }
    n = n + 1
    if n == 1 then
        sethook(hook, "", CHECK_EVERY)
    end
    local res = pack(pcall(f, ...))
    n = n - 1
    frames[n + 1] = nil
    if tripped and tripped_at > n then
        tripped, tripped_at = nil, nil
        if n > 0 then
            sethook(hook, "", CHECK_EVERY)
        end
    end
    if n == 0 then
        sethook()
    end
    if jit_was then
        jit.on()
    end
    return unpack(res, 1, res.n)
end

--- xpcall for the config's code (config.lua puts it in the file's
-- environment): LuaJIT runs an error handler for an error raised in a hook
-- with hooks off, so a handler that loops could not be stopped; once a
-- budget (this module's, or a worker's) is exceeded the user's handler is
-- not called.
local raw_xpcall = xpcall
-- in a worker, src/hooks.c's budget (a handler, or a coroutine a hook made,
-- gets the error raised from a hook too)
local C_over
do
    local ok, cdefs = pcall(require, "moongate.cdefs")
    if ok and cdefs.C then
        C_over = cdefs.C.mg_ffi_budget_over
    end
end
function _M.xpcall(f, handler, ...)
    if type(handler) ~= "function" then
        return raw_xpcall(f, handler, ...)
    end
    return raw_xpcall(f, function(e)
        if tripped or (C_over and C_over() ~= 0) then
            return e
        end
        return handler(e)
    end, ...)
end

--- The message of the budget exceeded right now, or nil (for callers that
-- report a failure and want to say why).
function _M.exceeded()
    return tripped
end

return _M
