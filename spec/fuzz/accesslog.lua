-- The gateway the accesslog fuzz target (accesslog.c) runs: its hooks set
-- the request's path, query, method, a request header, req.ctx values and
-- (the handler) a response header from the fuzz input (read through ffi.C
-- from the harness), so that the access log writes what hooks set, in a
-- line of every built-in field and each kind of chosen one.
local gw = require "moongate"
local ffi = require "ffi"

ffi.cdef [[ const char *mg_fuzz_input(size_t *len); ]]
local C = ffi.C
local n = ffi.new("size_t[1]")

gw.settings { access_log = { path = "/dev/null", fields = {
    "time", "request_id", "trace_id", "span_id", "client", "peer", "method", "path", "query", "proto",
    "status", "bytes", "route", "upstream", "target", "upstream_time", "split", "mirror", "cache",
    "total_time",
    "upstream_attempts", "upstream_connect_time", "upstream_tls_time",
    "upstream_first_byte_time", "req.header.x-fuzz", "h2=req.header.x-fuzz",
    "res.header.x-fuzz", "req.ctx.s", "req.ctx.n", "req.ctx.t", "req.ctx.s2", "req.ctx.s3",
} }, admin = false }

gw.listen { port = 18082, host = "127.0.0.1" } -- never opened by the harness

gw.upstream("svc \"quoted\" \\ é", { "127.0.0.1:1" })

-- input: one byte (how many times the path is repeated), then path,
-- query, method, a header value and a req.ctx value separated by '\n'
local function fields()
    local s = ffi.string(C.mg_fuzz_input(n), n[0])
    local reps = s:byte(1) or 1
    local path, query, method, header, value =
        s:sub(2):match("^([^\n]*)\n?([^\n]*)\n?([^\n]*)\n?([^\n]*)\n?(.*)")
    return reps, path or "", query or "", method or "", header or "", value or ""
end

-- the answer has the header value as its X-Fuzz (when a response may)
local function answer(req)
    local _, _, _, _, header = fields()
    if header:find("^[^%c]*$") then return 200, "ok", { ["X-Fuzz"] = header } end
    return 200, "ok"
end
gw.route { name = "weird \"name\" \\ \1 é", path = "/", handler = answer }
gw.route { name = "r", path = "/r", handler = answer }

function gw.on_request(req)
    local reps, path, query, method, header, value = fields()
    -- any bytes as values (a long one up to 255 x 4 KiB: past a line's cap)
    local ctx = req.ctx
    ctx.s, ctx.s2, ctx.s3 = value, value:rep(reps), header:rep(reps % 8 + 1)
    ctx.n = tonumber(value) or #value
    ctx.t = reps % 3 == 0 and {} or reps % 3 == 1 or nil
    pcall(req.set_header, req, "X-Fuzz", header:rep(reps % 4 + 1))
    if reps % 2 == 0 then
        pcall(req.set_path, req, path:rep(reps % 64 + 1))
    end
    pcall(req.set_query, req, query)
    if method ~= "" then pcall(req.set_method, req, method) end
end

function gw.on_route(req, route)
    local reps, path = fields()
    if reps % 2 == 1 then
        -- after routing: sent (and logged) as set
        pcall(req.set_path, req, path:rep(reps))
    end
end
