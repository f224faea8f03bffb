-- moongate.compression: answers compressed with gzip or brotli, as a
-- route policy, by the client's Accept-Encoding, the answer's type and
-- size, streamed (src/compress.c: never the whole body in memory).
--
--   local compression = require "moongate.compression"
--   gw.route { path = "/api/**", upstream = "api", policies = {
--       compression.policy { types = { "application/json", "text/*" },
--                            min_size = 1024,
--                            gzip = { level = 1 }, brotli = { quality = 4 } } } }
--
-- The policy only hands its options to the core (req:compress, in
-- on_response); the core picks the coding from Accept-Encoding (q-values,
-- "*", identity;q=0; br before gzip at equal q) and decides on the final
-- head: it leaves alone HEAD, 204, 304, 206, an answer already having a
-- Content-Encoding, one with Cache-Control: no-transform, a type not in
-- `types`, a known length below min_size (an answer of unknown length is
-- compressed). A compressed answer loses Content-Length (chunked), its
-- ETag becomes weak, Vary gets Accept-Encoding (every compressible answer,
-- whoever asked for it). The response cache keeps the identity and
-- compresses on serve. docs/policies.md says more.

local policy = require "moongate.policy"
local base = require "moongate.base"
local cdefs = require "moongate.cdefs"
local ffi = require "ffi"

local type, ipairs, concat, lower = type, ipairs, table.concat, string.lower

local _M = {}

local KEYS = { "types", "min_size", "gzip", "brotli" }

-- what is worth compressing and is text, by default
_M.TYPES = { "text/html", "text/plain", "text/css", "text/javascript",
             "text/xml", "text/csv", "application/json", "application/javascript",
             "application/xml", "application/problem+json", "image/svg+xml" }

local TYPE = "^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+$"
local WILD = "^[%w!#$&^_.+-]+/%*$"

-- gzip = false | { level = 1-9 } -> level (0: off)
local function gzip_opts(c, v)
    if v == nil then return 1 end
    if v == false then return 0 end
    local cc, o = policy.options(v, "compression.policy.gzip", { "level" },
                                 "{ level = 1 }")
    local level = cc:integer(o, "level", 1, 9, 1)
    for _, m in ipairs(cc.msgs) do c.msgs[#c.msgs + 1] = m end
    return level
end

-- brotli = false | { quality = 0-11, window = 10-24 } -> quality (-1:
-- off), window
local function brotli_opts(c, v)
    if v == nil then return 4, 18 end
    if v == false then return -1, 18 end
    local cc, o = policy.options(v, "compression.policy.brotli",
                                 { "quality", "window" }, "{ quality = 4 }")
    local q = cc:integer(o, "quality", 0, 11, 4)
    local w = cc:integer(o, "window", 10, 24, 18)
    for _, m in ipairs(cc.msgs) do c.msgs[#c.msgs + 1] = m end
    return q, w
end

--- compression.policy { types = { ... }, min_size = 256,
-- gzip = { level = 1 } | false, brotli = { quality = 4, window = 18 } |
-- false } -> a route policy.
function _M.policy(opts)
    local c, o = policy.options(opts, "compression.policy", KEYS,
        '{ types = { "application/json" }, gzip = { level = 1 } }')
    local types = c:strings(o, "types") or _M.TYPES
    for i, t in ipairs(types) do
        if not (t:find(TYPE) or t:find(WILD)) or t:find(",") then
            c:bad("types[%d] %s is not a media type like \"text/html\" or " ..
                  "\"text/*\"", i, policy.quoted(t))
        end
    end
    local min_size = c:integer(o, "min_size", 0, 2 ^ 40, 256)
    local level = gzip_opts(c, o.gzip)
    local quality, window = brotli_opts(c, o.brotli)
    if c:ok() and level == 0 and quality < 0 then
        c:bad("%s", "gzip and brotli are both false: nothing to compress with")
    end
    local refused = c:done("compression")
    if refused then return refused end

    local list = {}
    for i, t in ipairs(types) do list[i] = lower(t) end
    local s = concat(list, ",")
    local conf = cdefs.C.mg_ffi_compress_conf_new(level, quality, window,
                                                  min_size, s, #s)
    if conf == nil then base.raise("compression.policy: out of memory") end
    conf = ffi.gc(conf, cdefs.C.mg_ffi_compress_conf_free)

    local p = { name = "compression", conf = conf }
    function p.on_response(req)
        req:compress(conf)
    end
    return p
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
