-- moongate: the public module, `local gw = require "moongate"`.
--
-- At config time it offers the DSL of docs/config-dsl.md: gw.settings,
-- gw.listen, gw.upstream and gw.route record declarations, and
-- `gw.on_<event> = function ... end` sets a hook. All of it is forwarded to
-- moongate.config, which owns the collector of the load in progress, so this
-- module stays a thin surface that can be required once per Lua state and
-- still serve any number of (re)loads.

local getinfo, setmetatable = debug.getinfo, setmetatable

local config = require "moongate.config"


local _M = { _VERSION = "0.1.0" }

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

--- gw.route { path =, upstream = | handler =, methods =, host =, ... }
function _M.route(t, ...)
    config.declare("route", t, ...)
end


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
