-- The gateway the accesslog fuzz target (accesslog.c) runs: its hooks set
-- the request's path, query and method from the fuzz input (read through
-- ffi.C from the harness), so that the access log writes what hooks set.
local gw = require "moongate"
local ffi = require "ffi"

ffi.cdef [[ const char *mg_fuzz_input(size_t *len); ]]
local C = ffi.C
local n = ffi.new("size_t[1]")

gw.settings { access_log = "/dev/null", admin = false }

gw.listen { port = 18082, host = "127.0.0.1" } -- never opened by the harness

gw.upstream("svc \"quoted\" \\ é", { "127.0.0.1:1" })

gw.route { name = "weird \"name\" \\ \1 é", path = "/", handler = function(req)
    return 200, "ok"
end }

-- input: one byte (how many times the path is repeated), then path,
-- query and method separated by '\n'
local function fields()
    local s = ffi.string(C.mg_fuzz_input(n), n[0])
    local reps = s:byte(1) or 1
    local path, query, method = s:sub(2):match("^([^\n]*)\n?([^\n]*)\n?([^\n]*)")
    return reps, path or "", query or "", method or ""
end

function gw.on_request(req)
    local reps, path, query, method = fields()
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
