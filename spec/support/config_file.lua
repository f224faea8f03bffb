-- Config text as a file, and what a loader makes of it, for unit specs:
--
--   local cf = require "spec.support.config_file"
--   local v, errs = cf.load(require("moongate.config").load, 'gw.settings { ... }\n')
--
-- load() writes `require "moongate"`, a listener and the text (so the
-- text's first line is line 3), runs loader(path), removes the file and
-- returns the loader's result, or nil and its errors without the file name
-- ("3: reason").
local _M = {}

_M.HEAD = 'local gw = require "moongate"\ngw.listen { port = 8080 }\n'

function _M.write(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(_M.HEAD, text)
    f:close()
    return path
end

function _M.load(loader, text)
    local path = _M.write(text)
    local v, errs = loader(path)
    os.remove(path)
    if v then return v end
    local out = {}
    for i, e in ipairs(errs or {}) do out[i] = e:sub(#path + 2) end
    return nil, out
end

return _M
