-- moongate: the public module, `local gw = require "moongate"`.
--
-- At config time it offers the DSL of docs/config-dsl.md: gw.settings,
-- gw.listen, gw.upstream, gw.route and gw.shared_dict record declarations,
-- and `gw.on_<event> = function ... end` sets a hook. All of it is forwarded
-- to moongate.config, which owns the collector of the load in progress, so
-- this module stays a thin surface that can be required once per Lua state
-- and still serve any number of (re)loads. At run time gw.shared(name) hands
-- out the shared dictionaries (moongate.shared).

local getinfo, setmetatable, type, error, require =
    debug.getinfo, setmetatable, type, error, require

local config = require "moongate.config"


local _M = { _VERSION = "0.2.0" } -- src/version.h (spec/unit/package_spec.lua checks)

-- declarations from this file are blamed on the config line that called them
config.skip_source_dir(getinfo(1, "S").source)

--- gw.settings { workers =, access_log =, limits = {...}, timeouts = {...} }
function _M.settings(t, ...)
    config.declare("settings", t, ...)
end

--- gw.listen { port = 8080, host = "0.0.0.0" }; once per listener.
function _M.listen(t, ...)
    config.declare("listen", t, ...)
end

--- gw.upstream(name, { "host:port", { "host:port", weight = 2 } }, options)
function _M.upstream(name, targets, opts, ...)
    config.declare("upstream", name, targets, opts, ...)
end

--- gw.test { request = {...}, expect = {...} }: an example the config must
-- pass (moongate check, and before every reload).
function _M.test(t, ...)
    config.declare("test", t, ...)
end

--- gw.route { path =, upstream = | handler =, methods =, host =, ... }
function _M.route(t, ...)
    config.declare("route", t, ...)
end

--- gw.shared_dict(name, { size = "10m" }): a dictionary shared by every
-- worker, kept across reloads (use it with gw.shared).
function _M.shared_dict(name, opts, ...)
    config.declare("shared_dict", name, opts, ...)
end

local shared_get                -- moongate.shared's get, loaded on first use

--- gw.shared(name) -> the shared dictionary `name` (lua/moongate/shared.lua),
-- or nil and a reason when none was declared. For hooks and handlers: the
-- dictionaries are created once the config has been validated.
function _M.shared(name)
    if type(name) ~= "string" then
        error("gw.shared: name must be a string, got " .. type(name), 2)
    end
    if not shared_get then
        shared_get = require("moongate.shared").get
    end
    local dict, err = shared_get(name)
    return dict, err
end


-- Request-time API (inside hooks): see moongate.runtime.
local runtime = require "moongate.runtime"
_M.respond = runtime.respond
_M.redirect = runtime.redirect
_M.sleep = runtime.sleep
_M.now = runtime.now
_M.log = runtime.log
_M.worker_id = runtime.worker_id
_M.timer = { every = runtime.timer_every, after = runtime.timer_after }
_M.http = { request = runtime.http_request }
-- gw.metrics.counter / gauge / histogram: the config's own metrics
-- (declared while it loads, counted from hooks; docs/metrics.md)
_M.metrics = require "moongate.metrics"


-- Fields that are not functions of this module: `gw.on_<event> = f` sets a
-- hook of the config being loaded; other fields are kept for it as they are.
-- Functions defined on _M above (and any added later) are plain fields and
-- never reach these metamethods, so keep this the last statement before the
-- return.
setmetatable(_M, {
    __index = function(_, k)
        return config.get_field(k)
    end,
    __newindex = function(_, k, v)
        config.set_field(k, v)
    end,
})

return _M
