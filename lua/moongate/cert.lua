-- moongate.cert: a client certificate as hooks see it (req.tls.client),
-- read from C (src/cert_info.c) through the FFI. The gateway's requests
-- (runtime.lua) and the testing kit's (testing/fake.lua, from a PEM the
-- test gives) build it with the same function, so the fields and their
-- formats are C's in both.
--
-- info(get, verified) -> { verified, subject, issuer, serial, fingerprint,
-- not_before, not_after, dns = {..}, uri = {..}, email = {..}, pem() };
-- get() returns the X509 pointer (or nil): it is called for every read,
-- because the connection's certificate may only be used while the request
-- lives (pem() after the request ended raises an error).
local ffi = require "ffi"
local cdefs = require "moongate.cdefs"

local C = cdefs.C
local ffi_string = ffi.string

local _M = {}

local SUBJECT, ISSUER, SERIAL, FINGERPRINT = 1, 2, 3, 4
local NOT_BEFORE, NOT_AFTER, PEM, DNS, URI, EMAIL = 5, 6, 7, 8, 9, 10

local room = 4096
local buf = ffi.new("char[?]", room)

-- One field's text, or nil when the certificate has none.
local function field(x, what, idx)
    local n = C.mg_ffi_cert_field(x, what, idx or 0, buf, room)
    if n < 0 then
        return nil
    end
    if n > room then
        room = n
        buf = ffi.new("char[?]", room)
        n = C.mg_ffi_cert_field(x, what, idx or 0, buf, room)
    end
    return ffi_string(buf, n)
end

local function sans(x, what)
    local list = {}
    while true do
        local v = field(x, what, #list)
        if v == nil then
            return list
        end
        list[#list + 1] = v
    end
end

function _M.info(get, verified)
    local x = get()
    if x == nil then
        return nil
    end
    return {
        verified = verified,
        subject = field(x, SUBJECT), issuer = field(x, ISSUER),
        serial = field(x, SERIAL), fingerprint = field(x, FINGERPRINT),
        not_before = field(x, NOT_BEFORE), not_after = field(x, NOT_AFTER),
        dns = sans(x, DNS), uri = sans(x, URI), email = sans(x, EMAIL),
        pem = function()
            local now = get()
            if now == nil then
                error("the client certificate is gone with its request", 2)
            end
            return field(now, PEM)
        end,
    }
end

--- from_pem(text) -> a certificate pointer (freed when collected), or nil
-- and a reason: the testing kit's client certificates.
function _M.from_pem(text)
    if type(text) ~= "string" then
        return nil, "a client certificate must be a PEM string"
    end
    local x = C.mg_ffi_cert_from_pem(text, #text)
    if x == nil then
        return nil, "no PEM certificate in the text given"
    end
    return ffi.gc(x, C.mg_ffi_cert_free)
end

return _M
