-- moongate.selftest: runs a config's own examples (gw.test) through the
-- real router and hooks (moongate.testing), for `moongate check` and before
-- every reload. A reload whose tests fail is refused.
local testing = require "moongate.testing"
local budget = require "moongate.budget"

local fmt, concat, pairs, ipairs, type, tostring =
    string.format, table.concat, pairs, ipairs, type, tostring
local find, lower = string.find, string.lower

local _M = {}
local run_all

local function describe(v)
    if type(v) == "string" then return fmt("%q", v) end
    return tostring(v)
end

-- Compares one decision with `expect`; returns a list of mismatches.
local function compare(d, exp)
    local bad = {}
    local function check(what, want, got)
        if want ~= nil and want ~= got then
            bad[#bad + 1] = fmt("expected %s %s, got %s", what, describe(want),
                                describe(got))
        end
    end
    check("status", exp.status, d.status)
    check("upstream", exp.upstream, d.upstream)
    check("route", exp.route, d.route)
    check("target", exp.target, d.target)
    if exp.body ~= nil then check("body", exp.body, d.body) end
    if exp.body_contains ~= nil and not find(d.body or "", exp.body_contains, 1, true) then
        bad[#bad + 1] = fmt("expected the body to contain %s, got %s",
                            describe(exp.body_contains), describe(d.body))
    end
    for name, want in pairs(exp.headers or {}) do
        local got = d.headers and d.headers[lower(name)]
        if want == false then
            if got ~= nil then
                bad[#bad + 1] = fmt("expected no header %s, got %s", name, describe(got))
            end
        elseif got ~= want then
            bad[#bad + 1] = fmt("expected header %s: %s, got %s", name,
                                describe(want), describe(got))
        end
    end
    local ureq = d.upstream_request
    if exp.upstream_path ~= nil then
        local got = ureq and (ureq.path .. ((ureq.query and ureq.query ~= "")
                                             and ("?" .. ureq.query) or ""))
        check("upstream path", exp.upstream_path, got)
    end
    for name, want in pairs(exp.upstream_headers or {}) do
        local got = ureq and ureq.headers and ureq.headers[lower(name)]
        if want == false then
            if got ~= nil then
                bad[#bad + 1] = fmt("expected no upstream header %s, got %s", name,
                                    describe(got))
            end
        elseif got ~= want then
            bad[#bad + 1] = fmt("expected upstream header %s: %s, got %s", name,
                                describe(want), describe(got))
        end
    end
    return bad
end

--- Runs the gw.test examples of config `file`. Returns the number of tests,
-- a list of "file:line: gw.test ...: reason" failures (empty when all
-- pass) and the normalised config; or nil and the load errors.
function _M.run(file)
    -- examples are not traffic: a user's on_log (often an access log of
    -- its own) must not record them at every start and reload
    local gwt, errs = testing.load(file, { on_log = false })
    if not gwt then
        return nil, errs
    end
    local failures = {}
    local tests = gwt.cfg.tests or {}
    -- all the examples together within timeouts.load (each request also
    -- within the hook budget): a reload must not hang on them
    local limit = { seconds = gwt.cfg.timeouts.load / 1000,
                    memory = gwt.cfg.limits.lua_memory, interpret = true,
                    what = "the gw.test examples",
                    hint = "(settings.timeouts.load)" }
    budget.call(limit, run_all, gwt, file, tests, failures)
    return #tests, failures, gwt.cfg
end

-- Runs the examples in order; stops at the first the budget stopped.
run_all = function(gwt, file, tests, failures)
    for _, t in ipairs(tests) do
        local label = t.name and fmt("gw.test %q", t.name) or "gw.test"
        local where = fmt("%s:%d", t.source or file, t.line or 0)
        local ok, d = pcall(gwt.request, gwt, t.request)
        local stop = budget.exceeded()
        if stop then
            failures[#failures + 1] = fmt("%s: %s: not run to its end: %s",
                                          where, label, stop)
            break
        elseif not ok then
            failures[#failures + 1] = fmt("%s: %s: could not run: %s", where, label,
                                          tostring(d))
        else
            local bad = compare(d, t.expect)
            if #bad > 0 then
                local msg = concat(bad, "; ")
                if d.error then msg = msg .. " (hook error: " .. tostring(d.error) .. ")" end
                failures[#failures + 1] = fmt("%s: %s %s %s: %s", where, label,
                    t.request.method or "GET", t.request.path, msg)
            end
        end
    end
end

return _M
