-- The request head the upstream gets, byte for byte, when it is large: the
-- head is built piece by piece into room reserved for exactly that piece
-- (src/proxy.c, "the head writer"), so a head near the client-side limits,
-- or one a hook made larger than the gateway's scratch, goes out whole
-- instead of being refused by an estimate (the old one counted the URL
-- three times and a 512-byte margin, and refused past half the scratch).
local h = require "spec.support.helpers"

local CONFIG = [[
local gw = require "moongate"
gw.settings { limits = { header_size = 61440 }, timeouts = { shutdown = 2 } }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.upstream("mirror", { "{{MIRROR}}" })
gw.route { path = "/hooked/**", upstream = "mirror", policies = { function(req)
    req:set_header("x-added", string.rep("v", 200000))
    req:remove_header("x-pad-1")
end } }
gw.route { path = "/**", upstream = "mirror" }
]]

-- An upstream that answers each request with the exact bytes of its head
-- (up to and including the blank line) as the body, then closes.
local function start_mirror()
    local port = h.free_port()
    local p = h.spawn(("python3 -c %s"):format(h.shq(([[
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(64); print("ready", flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(1 << 20)
        if not d:
            break
        data += d
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %%d\r\nConnection: close\r\n\r\n"
              %% len(head) + head)
    c.close()
]]):format(port))), "mirror")
    local deadline = h.now() + 5 * h.SLOW
    while not p:log():find("ready", 1, true) and h.now() < deadline do h.sleep(0.02) end
    return "127.0.0.1:" .. port
end

local rep, concat = string.rep, table.concat

-- The upstream's head with its traceparent (a fresh span id) replaced by
-- "traceparent: *"; fails unless there is exactly one, well formed.
local function masked(head)
    local out, n = head:gsub("\r\ntraceparent: 00%-%x+%-%x+%-%x%x\r\n",
        "\r\ntraceparent: *\r\n")
    assert.equal(1, n)
    return out
end

describe("a large request head", function()
    local gw

    setup(function()
        gw = h.start_gateway(CONFIG, { vars = { MIRROR = start_mirror() } })
    end)

    teardown(h.cleanup)

    -- 20 pad headers of 2,000 bytes, a long X-Forwarded-For chain and ten
    -- long X-Forwarded-Host values: ~60k of headers (limit 61,440) and a
    -- 7,000-byte target, which the old estimate put above half the scratch
    local target = "/big/" .. rep("p", 7000) .. "?q=" .. rep("1", 20)
    local xff = {}
    for i = 1, 400 do xff[#xff + 1] = "10.0." .. (i % 250) .. "." .. (i % 200) end
    xff = concat(xff, ", ")
    local function client_headers()
        local hs = { { "X-Request-Id", "spec-head-1" }, { "X-Forwarded-For", xff } }
        for i = 1, 10 do hs[#hs + 1] = { "X-Forwarded-Host", rep("h", 1500) .. i } end
        for i = 1, 20 do hs[#hs + 1] = { "X-Pad-" .. i, rep(string.char(96 + i), 2000) } end
        return hs
    end

    -- What the upstream must get for the client headers hs (in order): the
    -- client's end-to-end headers, then the gateway's own.
    local function expected(path, hs, extra)
        local lines = { "GET " .. path .. " HTTP/1.1", "Host: localhost" }
        for _, kv in ipairs(hs) do
            local n = kv[1]:lower()
            if n ~= "x-forwarded-for" and n ~= "x-forwarded-host" and n ~= "x-request-id"
                and not (extra and extra.removed == n) then
                lines[#lines + 1] = kv[1] .. ": " .. kv[2]
            end
        end
        lines[#lines + 1] = "X-Forwarded-For: " .. xff .. ", 127.0.0.1"
        lines[#lines + 1] = "X-Forwarded-Proto: http"
        lines[#lines + 1] = "X-Forwarded-Host: localhost"
        lines[#lines + 1] = "Forwarded: for=127.0.0.1;proto=http;host=localhost"
        lines[#lines + 1] = "traceparent: *"
        lines[#lines + 1] = "X-Request-Id: spec-head-1"
        for _, kv in ipairs(extra and extra.added or {}) do
            lines[#lines + 1] = kv[1] .. ": " .. kv[2]
        end
        return concat(lines, "\r\n") .. "\r\n\r\n"
    end

    it("near the client-side limits goes to the upstream whole, byte for byte", function()
        local hs = client_headers()
        local res = h.http(gw.port, { path = target, headers = hs })
        assert.equal(200, res.status)
        assert.equal(expected(target, hs), masked(res.body))
    end)

    it("made larger than the gateway's scratch by a hook goes out whole", function()
        local hs = client_headers()
        local path = "/hooked/x"
        local res = h.http(gw.port, { path = path, headers = hs })
        assert.equal(200, res.status)
        assert.equal(expected(path, hs, { removed = "x-pad-1",
            added = { { "x-added", rep("v", 200000) } } }), masked(res.body))
        -- and the next request is built in the grown scratch as before
        res = h.http(gw.port, { path = "/small", headers = { { "X-Request-Id", "spec-head-1" },
            { "X-Forwarded-For", xff } } })
        assert.equal(200, res.status)
        assert.equal(expected("/small", {}), masked(res.body))
    end)
end)
