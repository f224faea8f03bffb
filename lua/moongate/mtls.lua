-- moongate.mtls: policies over the client certificate of a TLS listener
-- with `client_ca` (req.tls.client, read by src/cert_info.c).
--
--   local mtls = require "moongate.mtls"
--   gw.route { path = "/b2b/**", upstream = "partners", policies = {
--       mtls.policy { allow = { san_uri = "spiffe://acme.test/ns/prod/sa/*" },
--                     forward = { header = "X-Client-Cert", format = "pem" } } } }
--
-- allow: every key given must match (AND); a key's value is a string or a
-- list of strings (any one matching, OR); a string ending in "*" matches
-- the prefix before it, any other matches exactly. Keys: san_uri, san_dns,
-- san_email (any of the certificate's SANs of that kind), subject, issuer
-- (RFC 2253 text: "CN=client,O=Acme").
-- Answers: no certificate (a client_auth = "optional" listener) -> 401
-- {"error":"client_certificate_required"}; a certificate not allowed ->
-- 403 {"error":"client_certificate_forbidden"}; both logged at info with
-- the reason.
--
-- forward = { header = NAME, format = "pem" | "xfcc" } (also on its own:
-- mtls.forward { ... }): the header a client sent under that name is
-- always removed first, then the certificate is sent upstream as its
-- URL-encoded PEM (like nginx's $ssl_client_escaped_cert) or in Envoy's
-- X-Forwarded-Client-Cert form (Hash, Cert, Subject, URI, DNS).
local base = require "moongate.base"
local config = require "moongate.config"

local describe, fmt, concat = base.describe, string.format, table.concat
local byte, gsub, sub = string.byte, string.gsub, string.sub

local _M = {}

local ALLOW_SAN = { san_uri = "uri", san_dns = "dns", san_email = "email" }
local ALLOW_NAMES = { "issuer", "san_dns", "san_email", "san_uri", "subject" }
local POLICY_NAMES = { "allow", "forward" }
local FORWARD_NAMES = { "format", "header" }

local function escape(s)
    return (gsub(s, "[^%w%-%._~]", function(c) return fmt("%%%02X", byte(c)) end))
end

-- one matcher per allow value: a string or a non-empty list of strings
local function matcher(key, v, msgs)
    local list = type(v) == "string" and { v } or v
    if type(list) ~= "table" or list[1] == nil then
        msgs[#msgs + 1] = fmt("mtls.policy: allow.%s must be a string or a list of " ..
                              "strings, got %s", key, describe(v))
        return nil
    end
    local exact, prefixes = {}, {}
    for i, s in ipairs(list) do
        if type(s) ~= "string" or s == "" then
            msgs[#msgs + 1] = fmt("mtls.policy: allow.%s[%d] must be a non-empty string, " ..
                                  "got %s", key, i, describe(s))
            return nil
        end
        if sub(s, -1) == "*" then
            prefixes[#prefixes + 1] = sub(s, 1, -2)
        else
            exact[s] = true
        end
    end
    return function(value)
        if value == nil then return false end
        if exact[value] then return true end
        for _, p in ipairs(prefixes) do
            if sub(value, 1, #p) == p then return true end
        end
        return false
    end
end

local function check_forward(f, what, msgs)
    if type(f) ~= "table" then
        msgs[#msgs + 1] = fmt('%s must be a table like { header = "X-Client-Cert", ' ..
                              'format = "pem" }, got %s', what, describe(f))
        return nil
    end
    for _, m in ipairs(base.unknown_keys(f, FORWARD_NAMES, what)) do msgs[#msgs + 1] = m end
    if type(f.header) ~= "string" or not f.header:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
        msgs[#msgs + 1] = fmt("%s.header must be a header name, got %s", what,
                              describe(f.header))
        return nil
    end
    local format = f.format == nil and "pem" or f.format
    if format ~= "pem" and format ~= "xfcc" then
        msgs[#msgs + 1] = fmt('%s.format must be "pem" or "xfcc", got %s', what,
                              describe(f.format))
        return nil
    end
    return { header = f.header, format = format }
end

local function quoted(s)
    return '"' .. gsub(s, '[\\"]', "\\%0") .. '"'
end

local function xfcc(c)
    local parts = { "Hash=" .. c.fingerprint, "Cert=" .. quoted(escape(c.pem())),
                    "Subject=" .. quoted(c.subject or "") }
    for _, u in ipairs(c.uri) do parts[#parts + 1] = "URI=" .. u end
    for _, d in ipairs(c.dns) do parts[#parts + 1] = "DNS=" .. d end
    return concat(parts, ";")
end

-- The request step of forwarding: drop the client's header, set ours.
local function forwarder(f)
    return function(req)
        req:remove_header(f.header)
        local c = req.tls and req.tls.client
        if c then
            req:set_header(f.header, f.format == "xfcc" and xfcc(c) or escape(c.pem()))
        end
    end
end

local REFUSED = { name = "mtls", on_request = function()
    error("mtls.policy: its options were refused", 2)
end }

local function finish(msgs, what)
    if msgs[1] then
        if config.report(msgs) then return false end
        base.raise(msgs[1])
    end
    return true
end

function _M.policy(opts)
    local msgs = {}
    if type(opts) ~= "table" then
        msgs[1] = "mtls.policy takes a table like { allow = { san_uri = " ..
                  '"spiffe://example.org/service" } }, got ' .. describe(opts)
        return finish(msgs) and nil or REFUSED
    end
    for _, m in ipairs(base.unknown_keys(opts, POLICY_NAMES, "mtls.policy")) do
        msgs[#msgs + 1] = m
    end
    local rules = {}
    if type(opts.allow) ~= "table" or next(opts.allow) == nil then
        msgs[#msgs + 1] = "mtls.policy: allow is required: a table of san_uri, san_dns, " ..
                          "san_email, subject, issuer (it decides who passes; none " ..
                          "would let every certificate in)"
    else
        for _, m in ipairs(base.unknown_keys(opts.allow, ALLOW_NAMES, "mtls.policy allow")) do
            msgs[#msgs + 1] = m
        end
        for _, k in ipairs(ALLOW_NAMES) do
            if opts.allow[k] ~= nil then
                local m = matcher(k, opts.allow[k], msgs)
                if m then rules[#rules + 1] = { key = k, match = m } end
            end
        end
    end
    local fwd = opts.forward ~= nil and check_forward(opts.forward, "mtls.policy forward", msgs)
    if not finish(msgs) then return REFUSED end

    local g = require "moongate"
    local respond, glog = g.respond, g.log
    local b_missing = { error = "client_certificate_required" }
    local b_forbidden = { error = "client_certificate_forbidden" }
    local forward = fwd and forwarder(fwd)

    local function allowed(c)
        for _, r in ipairs(rules) do
            local san = ALLOW_SAN[r.key]
            local ok = false
            if san then
                for _, v in ipairs(c[san]) do
                    if r.match(v) then ok = true break end
                end
            else
                ok = r.match(c[r.key])
            end
            if not ok then return false, r.key end
        end
        return true
    end

    local function on_request(req)
        if forward then req:remove_header(fwd.header) end
        local c = req.tls and req.tls.client
        if not c then
            glog("info", fmt("mtls: request %s refused (401): no client certificate", req.id))
            return respond(401, b_missing)
        end
        local ok, key = c.verified, "verification"
        if ok then ok, key = allowed(c) end
        if not ok then
            glog("info", fmt("mtls: request %s refused (403): certificate %s (subject %s) " ..
                             "does not match allow.%s", req.id, c.serial or "?",
                             c.subject or "?", key))
            return respond(403, b_forbidden)
        end
        if forward then forward(req) end
    end

    return { name = "mtls", on_request = on_request }
end

function _M.forward(opts)
    local msgs = {}
    local f = check_forward(opts, "mtls.forward", msgs)
    if not finish(msgs) then return REFUSED end
    return { name = "mtls.forward", on_request = forwarder(f) }
end

return _M
