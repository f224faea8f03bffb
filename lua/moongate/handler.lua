-- moongate.handler: runs a route's Lua handler for the C core and turns
-- its answer into what the core sends (status, body bytes, header list).
local cjson = require "cjson.safe"
if cjson.encode_escape_forward_slash then cjson.encode_escape_forward_slash(false) end

local type, tostring, pairs, rawset = type, tostring, pairs, rawset
local traceback = debug.traceback

local _M = {}

local NO_HEADERS = {} -- shared, never written: no table per answer

local function header_block(headers)
    if headers == nil then return NO_HEADERS, nil end
    if type(headers) ~= "table" then
        return nil, "headers must be a table, got " .. type(headers)
    end
    local out, ctype = {}, nil
    for name, value in pairs(headers) do
        name, value = tostring(name), tostring(value)
        if name:find("[^%w%-]") or value:find("[\r\n%z]") then
            return nil, "invalid header " .. name
        end
        local lname = name:lower()
        if lname == "content-type" then
            ctype = value
        elseif lname ~= "content-length" and lname ~= "connection"
            and lname ~= "transfer-encoding" and lname ~= "x-request-id" then
            out[#out + 1] = name
            out[#out + 1] = value
        end
    end
    return out, ctype
end

local function run(fn, req)
    local status, body, headers = fn(req)
    if status == nil then status = 200 end
    if not require("moongate.runtime").final_status(status) then
        error(require("moongate.runtime").status_refused("handler", status), 0)
    end
    local ctype
    if type(body) == "table" then
        local s, err = cjson.encode(body)
        if not s then error("handler body is not JSON: " .. err, 0) end
        body, ctype = require("moongate.runtime").json_text(s), "application/json"
    elseif body == nil then
        body, ctype = "", "text/plain"
    elseif type(body) == "string" then
        ctype = "text/plain; charset=utf-8"
    else
        error("handler body must be a string or a table, got " .. type(body), 0)
    end
    local block, hctype = header_block(headers)
    if not block then error(hctype, 0) end
    return status, body, block, hctype or ctype
end

local function done(req, fresh, ...)
    if fresh then rawset(req, "_r", nil) end  -- kept, it says "request is over"
    return ...
end

-- Returns true, status, body, header list { name, value, ... }, content_type
-- or false, error message with traceback. From lua_route.c, `req` is the
-- request struct (a lightuserdata) and `co` the coroutine of its hooks (or
-- nil): the handler gets the request object hooks get.
function _M.invoke(fn, req, co)
    if type(req) == "userdata" then
        local fresh
        req, fresh = require("moongate.runtime").handler_request(req, co)
        return done(req, fresh, xpcall(run, traceback, fn, req))
    end
    return xpcall(run, traceback, fn, req)
end

return _M
