-- moongate.headers: add, set, remove or rename request and response
-- headers, as a route policy; values are templates over the request and
-- req.ctx (moongate.template), compiled while the config loads.
--
--   local headers = require "moongate.headers"
--   gw.route { path = "/api/**", upstream = "api", policies = {
--       key_auth.policy { ... },
--       headers.policy {
--           request = { set = { ["X-Consumer"] = "${ctx.consumer.name}",
--                               ["X-Client"] = "${client}" },
--                       remove = { "X-Debug" },
--                       rename = { ["X-Old-Name"] = "X-New-Name" } },
--           response = { add = { ["X-Served-By"] = "moongate ${route}" },
--                        remove = { "Server" } } } } }
--
-- In each direction the steps run in this order: remove, rename, set
-- (replaces every value), add (one more value). A template whose field has
-- no value (ctx.consumer unset, a missing header) sets nothing. Names the
-- core owns (framing, hop-by-hop: Content-Length, Connection, ...) are
-- refused at load, by the same check the request API makes
-- (mg_ffi_header_edit_check).

local policy = require "moongate.policy"
local template = require "moongate.template"
local base = require "moongate.base"
local cdefs = require "moongate.cdefs"

local type, ipairs = type, ipairs
local lower = string.lower

local _M = {}

local KEYS = { "request", "response" }
local STEP_KEYS = { "remove", "rename", "set", "add" }

local C = cdefs.C

local function name_ok(name, op)
    return type(name) == "string" and name ~= "" and
        C.mg_ffi_header_edit_check(op, name, #name, "x", 1) == 0
end

-- The steps of one direction as flat lists, or nil.
local function compile(t, what, c, response)
    if t == nil then return nil end
    local cc, o = policy.options(t, what, STEP_KEYS,
                                 '{ set = { ["X-Name"] = "${client}" } }')
    local steps = { remove = {}, rename_from = {}, rename_to = {},
                    set_name = {}, set_value = {}, add_name = {},
                    add_value = {} }
    local remove = cc:strings(o, "remove") or {}
    for i, name in ipairs(remove) do
        if not name_ok(name, cdefs.EDIT_REMOVE) then
            cc:bad("remove[%d] %s is not a header a policy may remove", i,
                   policy.quoted(name))
        end
        steps.remove[i] = lower(name)
    end
    for _, key in ipairs({ "rename", "set", "add" }) do
        local map = o[key]
        if map ~= nil and type(map) ~= "table" then
            cc:bad("%s must be a table { [\"Header-Name\"] = %s }, got %s",
                   key, key == "rename" and '"New-Name"' or '"template"',
                   base.describe(map))
        elseif map ~= nil then
            for _, name in ipairs(base.sorted_keys(map)) do
                local v = map[name]
                local op = key == "add" and cdefs.EDIT_ADD or cdefs.EDIT_SET
                if not name_ok(name, op) then
                    cc:bad("%s: %s is not a header a policy may %s", key,
                           base.key_str(name), key)
                elseif key == "rename" then
                    if not name_ok(v, cdefs.EDIT_ADD) then
                        cc:bad("rename[%q] must be a header name a policy " ..
                               "may set, got %s", name, base.describe(v))
                    end
                    local n = #steps.rename_from + 1
                    steps.rename_from[n], steps.rename_to[n] = lower(name), v
                else
                    local fn, why = template.compile(v, response)
                    if not fn then
                        cc:bad("%s[%q]: %s", key, name, why)
                    else
                        local n = #steps[key .. "_name"] + 1
                        steps[key .. "_name"][n] = name
                        steps[key .. "_value"][n] = fn
                    end
                end
            end
        end
    end
    for _, m in ipairs(cc.msgs) do c.msgs[#c.msgs + 1] = m end
    return steps
end

-- values of a renamed header, between reading and writing them (the
-- steps never yield, so one list per Lua state is enough)
local scratch = {}

-- Applies STEPS to OBJ (the request or the response object).
local function apply(steps, obj, req, res)
    local remove = steps.remove
    for i = 1, #remove do obj:remove_header(remove[i]) end
    local from, to = steps.rename_from, steps.rename_to
    for i = 1, #from do
        local n = 0
        local v = obj:header(from[i])
        while v ~= nil do
            n = n + 1
            scratch[n] = v
            v = obj:header(from[i], n + 1)
        end
        if n > 0 then
            obj:remove_header(from[i])
            for j = 1, n do
                obj:add_header(to[i], scratch[j])
                scratch[j] = nil
            end
        end
    end
    local sn, sv = steps.set_name, steps.set_value
    for i = 1, #sn do
        local v = sv[i](req, res)
        if v ~= nil then obj:set_header(sn[i], v) end
    end
    local an, av = steps.add_name, steps.add_value
    for i = 1, #an do
        local v = av[i](req, res)
        if v ~= nil then obj:add_header(an[i], v) end
    end
end

--- headers.policy { request = steps, response = steps } -> a route
-- policy; steps = { remove = { names }, rename = { old = new },
-- set = { name = template }, add = { name = template } }.
function _M.policy(opts)
    local c, o = policy.options(opts, "headers.policy", KEYS,
        '{ request = { set = { ["X-Client"] = "${client}" } } }')
    if c:ok() and o.request == nil and o.response == nil then
        c:bad("%s", "request or response is required (the steps: remove, " ..
              "rename, set, add)")
    end
    local rq = compile(o.request, "headers.policy.request", c, false)
    local rs = compile(o.response, "headers.policy.response", c, true)
    local refused = c:done("headers")
    if refused then return refused end
    local p = { name = "headers" }
    if rq then
        function p.on_request(req) apply(rq, req, req, nil) end
    end
    if rs then
        function p.on_response(req, res) apply(rs, res, req, res) end
    end
    return p
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
