-- moongate.testing.trace: renders a moongate.testing decision for people
-- (the REPL's `try` prints it): each hook called with what it changed and
-- its time, the route and the target chosen, what went upstream, and the
-- final status and headers.
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local fmt, sub, gsub = string.format, string.sub, string.gsub
local concat, sort = table.concat, table.sort

local _M = {}

-- Where each kind of line goes in the pipeline: hooks by phase, and the
-- lines the core adds between them.
local STAGE = {
    ["on_request"] = 1, route = 2, ["on_route"] = 3,
    ["route policy on_request"] = 4, handler = 4, upstream = 5,
    ["on_response"] = 6, final = 7, ["on_log"] = 8,
}

local function preview(s, n)
    s = gsub(s, "[%c]", " ")
    if #s > n then
        return sub(s, 1, n - 3) .. "..."
    end
    return s
end

local function add_headers(out, list, indent)
    for _, h in ipairs(list or {}) do
        out[#out + 1] = indent .. h[1] .. ": " .. h[2]
    end
end

local function hook_lines(out, e)
    local head = fmt("  %-34s %9.3f ms", e.hook, e.time_ms or 0)
    if (e.wait_ms or 0) > 0 then
        head = head .. fmt(" (+%g ms virtual wait)", e.wait_ms)
    end
    if e.source then
        head = head .. "  " .. e.source
    end
    out[#out + 1] = head
    for _, c in ipairs(e.changes or {}) do
        out[#out + 1] = "      " .. c
    end
    if e.error then
        out[#out + 1] = "      ERROR " .. e.error
    end
end

local function route_line(out, d)
    if d.route then
        local params = {}
        for k, v in pairs(d.params or {}) do
            params[#params + 1] = k .. "=" .. v
        end
        sort(params)
        out[#out + 1] = fmt("  route: %s%s", d.route,
                            #params > 0 and "  params " .. concat(params, " ")
                            or "")
        if d.split then
            out[#out + 1] = d.split == "canary"
                and fmt("  canary -> %s", tostring(d.upstream))
                or fmt("  split -> %s (by %s)", tostring(d.upstream), d.split)
        end
    else
        out[#out + 1] = "  route: none"
    end
end

local function upstream_lines(out, d)
    local u = d.upstream_request
    out[#out + 1] = fmt("  upstream: %s  target %s", tostring(d.upstream),
                        tostring(d.target))
    out[#out + 1] = fmt("    > %s %s", u.method, u.uri)
    add_headers(out, u.header_list, "    > ")
    if #u.body > 0 then
        out[#out + 1] = "    > (body " .. #u.body .. " bytes)"
    end
    local r = d.upstream_response
    if r then
        out[#out + 1] = fmt("    < %d (%d bytes)", r.status, #r.body)
    end
    if d.mirror then
        out[#out + 1] = fmt("  mirror: a copy to %s (its answer dropped)", d.mirror)
    end
end

local function final_lines(out, d)
    out[#out + 1] = fmt("  => %s  answered by %s", tostring(d.status),
                        tostring(d.responded_by))
    add_headers(out, d.header_list, "     ")
    if type(d.body) == "string" and #d.body > 0 then
        out[#out + 1] = "     " .. preview(d.body, 72)
    end
end

--- The decision `d` of moongate.testing as text (lines end with "\n").
function _M.format(d)
    local out = {}
    local r = d.request or {}
    out[1] = fmt("%s %s  (request %s, client %s%s, port %s)",
                 tostring(r.method), tostring(r.uri), tostring(d.id),
                 tostring(r.client), r.peer and r.peer ~= r.client
                     and " via " .. tostring(r.peer) or "", tostring(r.port))
    local stage = 0
    -- prints the core's lines of every stage before `upto`
    local function reach(upto)
        while stage < upto do
            stage = stage + 1
            if stage == STAGE.route and d.routed then
                route_line(out, d)
            elseif stage == STAGE.upstream and d.upstream_request then
                upstream_lines(out, d)
            elseif stage == STAGE.final and d.status then
                final_lines(out, d)
            end
        end
    end
    for _, e in ipairs(d.trace or {}) do
        reach((STAGE[e.phase] or 1) - 1)
        hook_lines(out, e)
    end
    reach(STAGE.on_log)
    if d.error then
        out[#out + 1] = "  error: " .. d.error
    end
    out[#out + 1] = fmt("  total %.3f ms%s", d.time_ms or 0,
                        (d.wait_ms or 0) > 0 and
                        fmt(", %g ms virtual wait", d.wait_ms) or "")
    return concat(out, "\n") .. "\n"
end

return _M
