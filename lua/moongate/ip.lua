-- moongate.ip: allow and deny lists of CIDR ranges (IPv4 and IPv6) on the
-- client's address, as a route policy.
--
--   local ip = require "moongate.ip"
--   gw.route { path = "/admin/**", upstream = "admin", policies = {
--       ip.policy { allow = { "10.0.0.0/8", "2001:db8::/32" },
--                   deny = { "10.6.6.0/24" } } } }
--
-- The lists are CIDR sets of src/cidr.c (through mg_ffi_cidr_set_*):
-- built once while the config loads, ranges sorted and merged, and
-- searched by binary search, so a lookup costs O(log n) whatever the list
-- (10,000 entries: about 14 comparisons) and allocates nothing. An entry
-- the C parser refuses ("10.1.2.3/8", "300.1.1.1", "::/129") fails the
-- load with file:line and the reason. IPv4 is mapped into IPv6
-- (::ffff:0:0/96), so "::ffff:10.0.0.1" is 10.0.0.1.
--
-- The address checked is req.client: the real client's address once
-- trusted proxies are configured (README, "Trusted proxies").

local ffi = require "ffi"
local policy = require "moongate.policy"

local ipairs = ipairs
local ffi_string, ffi_gc = ffi.string, ffi.gc

ffi.cdef [[
typedef struct mg_cidr_set_s mg_cidr_set_t;
mg_cidr_set_t *mg_ffi_cidr_set_new(void);
int mg_ffi_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap);
int mg_ffi_cidr_set_build(mg_cidr_set_t *s);
int mg_ffi_cidr_set_contains(const mg_cidr_set_t *s, const char *text, size_t n);
size_t mg_ffi_cidr_set_count(const mg_cidr_set_t *s);
void mg_ffi_cidr_set_free(mg_cidr_set_t *s);
]]

local C = require("moongate.clib").load("mg_ffi_cidr_set_new")

local _M = {}

local errbuf = ffi.new("char[256]")

--- ip.set(list, what, checker) -> a built CIDR set of the strings in
-- `list`, or nil after noting each refused entry on `checker` (see
-- moongate.policy) as "<what>[i]: <the parser's reason>".
function _M.set(list, what, c)
    if not C then
        c:bad("%s: %s", what, "moongate's C library is not loaded")
        return nil
    end
    local s = ffi_gc(C.mg_ffi_cidr_set_new(), C.mg_ffi_cidr_set_free)
    local ok = true
    for i, e in ipairs(list) do
        -- blanks around an entry are a typo: refused by the parser too,
        -- but named here
        local rc = C.mg_ffi_cidr_set_add(s, e, #e, errbuf, 256)
        if rc ~= 0 then
            ok = false
            -- (the parser's reason quotes the entry)
            c:bad("%s[%d]: %s", what, i, rc == -1 and ffi_string(errbuf)
                  or policy.quoted(e) .. ": out of memory")
        end
    end
    if not ok then return nil end
    if C.mg_ffi_cidr_set_build(s) ~= 0 then
        c:bad("%s: out of memory", what)
        return nil
    end
    return s
end

--- ip.contains(set, address) -> true when the address (text) is in set,
-- false when not, nil when it is not an address.
function _M.contains(s, addr)
    local rc = C.mg_ffi_cidr_set_contains(s, addr, #addr)
    if rc < 0 then return nil end
    return rc == 1
end

local KEYS = { "allow", "deny", "status", "body" }

--- ip.policy { allow = { cidrs }, deny = { cidrs }, status = 403, body = }
-- -> a route policy. A client in `deny` is refused; with `allow`, so is
-- every client not in it (deny wins over allow). At least one list.
function _M.policy(opts)
    local c, o = policy.options(opts, "ip.policy", KEYS,
                                '{ allow = { "10.0.0.0/8" } }')
    local allow_list, deny_list = c:strings(o, "allow"), c:strings(o, "deny")
    local status = c:status(o, "status", 400, 599, 403)
    local body = c:body(o, "body")
    if c:ok() and not allow_list and not deny_list then
        c:bad("%s", "allow or deny is required (a list of CIDR ranges)")
    end
    local allow = allow_list and _M.set(allow_list, "allow", c)
    local deny = deny_list and _M.set(deny_list, "deny", c)
    local refused = c:done("ip")
    if refused then return refused end

    local respond = require("moongate.runtime").respond
    local b = body or { error = "forbidden", status = status }

    -- req:_client_in: the address C already holds, not req.client's text
    -- (no address, -1: a test request without one is refused, not let in)
    local function on_request(req)
        if (deny and req:_client_in(deny) ~= 0)
            or (allow and req:_client_in(allow) ~= 1) then
            return respond(status, b)
        end
    end

    return { name = "ip", on_request = on_request,
             allow_count = allow and tonumber(C.mg_ffi_cidr_set_count(allow)),
             deny_count = deny and tonumber(C.mg_ffi_cidr_set_count(deny)) }
end

setmetatable(_M, { __call = function(_, opts) return _M.policy(opts) end })

return _M
