-- `moongate repl`, driven through stdin as a script would: offline with a
-- config (-c), and attached to a running gateway's admin API (--attach).
local h = require "spec.support.helpers"

local fmt = string.format
local FIX = "spec/fixtures/repl/"

-- Runs `moongate repl <args>` with `lines` on stdin. Returns the exit code,
-- stdout and stderr.
local function repl(args, lines, env)
    local input = h.tmpfile("repl.in", table.concat(lines, "\n") .. "\n")
    local out, err = h.tmpfile("repl.out"), h.tmpfile("repl.err")
    local cmd = fmt("%s timeout 30 %s repl %s <%s >%s 2>%s; echo $?",
                    env or "", h.shq(h.MG_BIN), args, h.shq(input),
                    h.shq(out), h.shq(err))
    local code = tonumber(h.sh(cmd):match("(%d+)%s*$"))
    return code, h.read_file(out) or "", h.read_file(err) or ""
end

local function has(out, text)
    assert(out:find(text, 1, true), fmt("expected %q in the output:\n%s",
                                        text, out))
end

local function has_not(out, text)
    assert(not out:find(text, 1, true), fmt("did not expect %q in:\n%s",
                                            text, out))
end

-- A REPL whose stdin stays open: lines are sent one at a time while the
-- test changes things around it.
local function open_repl(args)
    local out = h.tmpfile("repl-live.out")
    local p = assert(io.popen(fmt("exec timeout 30 %s repl %s >%s 2>&1",
                                  h.shq(h.MG_BIN), args, h.shq(out)), "w"))
    local s = { out = out }
    function s.send(line)
        p:write(line, "\n")
        p:flush()
    end
    -- waits until the output holds `text` `n` times (default once)
    function s.wait_for(text, n)
        local deadline = h.now() + 10 * h.SLOW
        repeat
            local got, count = h.read_file(out) or "", 0
            for _ in got:gmatch(text:gsub("%p", "%%%0")) do
                count = count + 1
            end
            if count >= (n or 1) then
                return got
            end
            h.sleep(0.02)
        until h.now() > deadline
        error(fmt("no %q in the REPL's output:\n%s", text,
                  h.read_file(out) or ""), 2)
    end
    function s.close()
        if p then
            p:close()
            p = nil
        end
        return h.read_file(out) or ""
    end
    return s
end

describe("moongate repl -c FILE (stdin)", function()
    local cfg = FIX .. "gateway.lua"

    it("try stops a hook that loops with the gateway's hook budget", function()
        local t0 = h.now()
        local code, out = repl("-c spec/fixtures/testing/loops.lua", {
            'try { path = "/spin-pcall" }', 'print("after")',
        })
        assert.equal(0, code, out)
        has(out, "loops.lua:10: hook exceeded its time budget of 100 ms")
        has(out, "500")
        has(out, "after")
        assert.is_true(h.now() - t0 < 10 * h.SLOW)
    end)

    it("try traces a request: hooks, route, target, final status and headers", function()
        local code, out = repl("-c " .. cfg, {
            'try { path = "/orders/7", headers = { ["x-api-key"] = "secret" } }',
        })
        assert.equal(0, code, out)
        has(out, "GET /orders/7")
        has(out, "route: orders  params id=7")
        has(out, "policy 1 (api-key)")
        has(out, "set header x-consumer: alice")
        has(out, "upstream: orders  target 127.0.0.1:9")
        has(out, "on_response")
        has(out, "set response header x-served-by: moongate")
        has(out, "=> 200  answered by upstream")
        has(out, "x-served-by: moongate")
        assert.truthy(out:find("policy 1 %(api%-key%)%s+[%d.]+ ms"), out)
    end)

    it("try shows the policy that answered", function()
        local _, out = repl("-c " .. cfg, { 'try "/orders/7"' })
        has(out, "=> 401  answered by policy 1 (api-key)")
        has(out, "respond 401")
        has_not(out, "upstream: orders")
    end)

    it("keeps the decision in `last`", function()
        local _, out = repl("-c " .. cfg, {
            'try "/health"', "last.status", "last.route", "last.json",
        })
        has(out, "=> 200  answered by handler")
        has(out, '\n200\n"health"\n{ ok = true }\n')
    end)

    it("a syntax error does not end the session; the exit code is 1", function()
        local code, out = repl("-c " .. cfg, {
            "if then", 'print("still here")', 'try "/health"',
        })
        assert.equal(1, code, out)
        has(out, "stdin:1: unexpected symbol near 'then'")
        has(out, "still here")
        has(out, "=> 200")
    end)

    it("a runtime error prints file:line: message and the session goes on", function()
        local code, out = repl("-c " .. cfg, { "nope()", "40 + 2" })
        assert.equal(1, code, out)
        has(out, "stdin:1: attempt to call global 'nope' (a nil value)")
        has(out, "\n42\n")
    end)

    it("takes a chunk over several lines", function()
        local _, out = repl("-c " .. cfg, {
            "function double(x)",
            "    return x * 2",
            "end",
            "double(21)",
            "t = {",
            "  1, 2,",
            "}",
            "#t",
        })
        has(out, "42\n2\n")
        has_not(out, "<eof>")
    end)

    it("reports a chunk left open at the end of input, exit code 1", function()
        local code, out = repl("-c " .. cfg, { "function f()" })
        assert.equal(1, code, out)
        has(out, "stdin:1: 'end' expected near '<eof>'")
    end)

    it("exits 0 when every chunk ran, a hook's 401 included", function()
        local code, out, err = repl("-c " .. cfg, { 'try "/orders/1"', "1 + 1" })
        assert.equal(0, code, out .. err)
        has(out, "=> 401")
    end)

    it("exits 1 when the config file is missing, after running the chunks", function()
        local code, out, err = repl("-c " .. FIX .. "no-such-file.lua", { "1 + 1" })
        assert.equal(1, code, out .. err)
        has(err, "no-such-file.lua: cannot read the config file")
        assert.equal("2\n", out)
    end)

    it("exit and quit end the session without printing anything", function()
        for _, word in ipairs { "exit", "quit", "exit()", "  quit  " } do
            local code, out, err = repl("-c " .. cfg, { "1 + 1", word, "2 + 2" })
            assert.equal(0, code, word .. ": " .. out .. err)
            assert.equal("2\n", out, word)
        end
    end)

    it("pretty-prints values: sorted keys, nesting, quoted strings, cycles", function()
        local _, out = repl("-c " .. cfg, {
            't = { b = { 2, 1 }, a = "x\\ty", [10] = true }',
            "t",
            "t.self = t",
            "t",
            "1, nil, 'two'",
        })
        has(out, '{ [10] = true, a = "x\\ty", b = { 2, 1 } }\n')
        has(out, '{ [10] = true, a = "x\\ty", b = { 2, 1 }, self = <cycle> }\n')
        has(out, '1\tnil\t"two"\n')
    end)

    it("lists routes and upstreams with where they are declared", function()
        local _, out = repl("-c " .. cfg, { "routes()", "upstreams()" })
        assert.truthy(out:find("orders%s+%*%s+/orders/:id%s+%-> orders%s+1%s+" ..
                               cfg:gsub("%p", "%%%0") .. ":20"), out)
        assert.truthy(out:find("health%s+%*%s+/health%s+handler"), out)
        assert.truthy(out:find("orders%s+127%.0%.0%.1:9%s+keepalive 64"), out)
    end)

    it("lists split routes and shows the split's choice in try", function()
        local code, out = repl("-c spec/fixtures/testing/split.lua", {
            "routes()", 'try { path = "/s/x", headers = { ["X-Canary"] = "1" } }',
            'try "/s/x"', 'last.upstream, last.split',
        })
        assert.equal(0, code, out)
        has(out, "-> v1 3, v2 1 canary v2 mirror shadow")
        has(out, "-> v1 1, v2 1 by key")
        has(out, "-> v1 canary v2")
        has(out, "  canary -> v2\n")
        has(out, "  mirror: a copy to shadow (its answer dropped)\n")
        has(out, "  split -> v1 (by weight)\n")
        has(out, '"v1"\t"weight"\n')
    end)

    it("has the moongate API and require", function()
        local _, out = repl("-c " .. cfg, {
            "type(gw.route), type(gw.respond)",
            'require("moongate.testing") == testing',
        })
        has(out, '"function"\t"function"\n')
        has(out, "\ntrue\n")
    end)

    it("reload() re-reads the file after it changed", function()
        local file = h.tmpfile("repl-gw.lua", h.read_file(cfg))
        local s = open_repl("-c " .. h.shq(file))
        finally(s.close)
        s.send('try "/health"')
        s.wait_for("answered by handler")
        h.write_file(file, (h.read_file(cfg):gsub('{ ok = true }',
                                                  '{ ok = "v2" }')))
        s.send("reload()")
        s.wait_for("reloaded " .. file .. " (2 routes, 1 upstreams)")
        s.send('try "/health"')
        local out = s.wait_for("answered by handler", 2)
        has(out, '{"ok":"v2"}')
        -- a broken version is refused with its file:line; the last good one stays
        h.write_file(file, h.read_file(FIX .. "broken.lua"))
        s.send("reload()")
        out = s.wait_for("reload failed")
        has(out, file .. ":6:")
        has(out, "the previous config stays")
        s.send('try "/health"')
        s.wait_for("answered by handler", 3)
        out = s.close()
        assert.equal(2, select(2, out:gsub('{"ok":"v2"}', "")), out)
    end)

    it("starts with a config that does not load and reports its errors", function()
        local code, out, err = repl("-c " .. FIX .. "broken.lua", {
            "1 + 1", 'try "/x"',
        })
        assert.equal(1, code, out .. err)
        has(err, FIX .. "broken.lua:6:")
        has(err, "ordres")
        assert.truthy(out:find("^2\n"), out)
        has(out, "stdin:1: try: no config loaded")
    end)

    describe("try { real = true }", function()
        local up
        setup(function()
            up = h.start_upstream { name = "real-orders" }
        end)
        teardown(h.cleanup)

        it("sends the request to the chosen target and traces the real answer", function()
            local _, out = repl("-c " .. cfg, {
                'try { path = "/orders/3", headers = { ["x-api-key"] = "secret" }, ' ..
                    "real = true }",
                'last.headers["x-upstream-name"]',
            }, "REPL_UPSTREAM=" .. up.addr)
            has(out, "target " .. up.addr)
            has(out, "real upstream " .. up.addr .. ": 200")
            has(out, "X-Upstream-Name: real-orders")
            has(out, "x-served-by: moongate")
            has(out, '\n"real-orders"\n')
            local last = up:stats().last
            assert.equal("/orders/3", last[#last].path)
        end)

        it("reads a chunked answer with the gateway's own response parser", function()
            local _, out = repl("-c " .. cfg, {
                'try { path = "/orders/4?chunked=1", headers = { ["x-api-key"] = "secret" }, ' ..
                    "real = true }",
                'last.upstream_response.body:match(\'"path": ?"([^"]*)"\')',
                "#last.upstream_response.body == #last.body",
                'last.headers["transfer-encoding"]',
            }, "REPL_UPSTREAM=" .. up.addr)
            has(out, "real upstream " .. up.addr .. ": 200")
            -- the echo, unframed: its JSON whole, no chunk sizes in it
            has(out, '\n"/orders/4?chunked=1"\ntrue\nnil\n')
        end)

        it("says when the request was answered before the upstream", function()
            local _, out = repl("-c " .. cfg, { 'try { path = "/orders/3", real = true }' },
                                "REPL_UPSTREAM=" .. up.addr)
            has(out, "real = true: nothing was sent upstream (answered by policy 1 (api-key))")
        end)

        it("reports an upstream that refuses the connection", function()
            local dead = h.dead_addr()
            local _, out = repl("-c " .. cfg, {
                'try { path = "/orders/3", headers = { ["x-api-key"] = "secret" }, ' ..
                    "real = true }",
            }, "REPL_UPSTREAM=" .. dead)
            has(out, "real upstream " .. dead .. " failed: connect:")
            has(out, "=> 502")
        end)
    end)
end)

-- Runs `moongate repl <args>` on a pseudo-terminal (spec/support/pty_run.py)
-- and goes through `steps` as a person at the keyboard would: { "send",
-- text }, { "intr" } (Ctrl-C), { "eof" } (Ctrl-D), { "expect", text },
-- { "exit" } (waits for the end). Returns { ok, error, output, status,
-- signal }.
local function terminal(args, steps)
    local cjson = require "cjson"
    local script = h.tmpfile("pty.json", cjson.encode(steps))
    local home = h.tmpdir()
    local cmd = fmt("PTY_TIMEOUT=%d python3 spec/support/pty_run.py %s -- env HOME=%s %s repl %s",
                    10 * h.SLOW, h.shq(script), h.shq(home), h.shq(h.MG_BIN), args)
    local res = cjson.decode(h.sh(cmd))
    if res.status == cjson.null then res.status = nil end
    if res.signal == cjson.null then res.signal = nil end
    return res
end

local function ended_well(res)
    assert(res.ok, tostring(res.error) .. ":\n" .. res.output)
    assert.is_nil(res.signal, res.output)
    assert.equal(0, res.status, res.output)
end

describe("moongate repl at a terminal", function()
    local cfg = "-c " .. FIX .. "gateway.lua"

    it("Ctrl-C at the continuation prompt cancels the chunk, not the REPL", function()
        local res = terminal(cfg, {
            { "expect", "moongate> " }, { "send", "function f()\n" },
            { "expect", "...> " }, { "intr" },
            { "expect", "moongate> " }, { "send", "f == nil\n" },
            { "expect", "true" }, { "expect", "moongate> " },
            { "send", "exit\n" }, { "exit" },
        })
        ended_well(res)
        has_not(res.output, "<eof>")
    end)

    it("Ctrl-C at an empty prompt says how to quit and goes on", function()
        local res = terminal(cfg, {
            { "expect", "moongate> " }, { "intr" },
            { "expect", "(to quit: exit, quit or Ctrl-D)" },
            { "expect", "moongate> " }, { "send", "40 + 2\n" },
            { "expect", "42" }, { "expect", "moongate> " },
            { "eof" }, { "exit" },
        })
        ended_well(res)
    end)

    it("Ctrl-C stops a chunk that runs; the session keeps its globals", function()
        local res = terminal(cfg, {
            { "expect", "moongate> " },
            -- Ctrl-C only once the loop runs: the chunk says so on stderr
            -- (not gathered by the session; upper() so that the echo of the
            -- typed line does not match)
            { "send", 'n = 0 io.stderr:write(("run" .. "ning\\n"):upper()) ' ..
                      "while true do n = n + 1 end\n" },
            { "expect", "RUNNING" }, { "intr" },
            { "expect", "interrupted" }, { "expect", "moongate> " },
            { "send", "n > 0\n" }, { "expect", "true" },
            { "expect", "moongate> " }, { "send", "quit\n" }, { "exit" },
        })
        ended_well(res)
    end)

    it("exit prints nothing, not nil", function()
        local res = terminal(cfg, {
            { "expect", "moongate> " }, { "send", "exit\n" }, { "exit" },
        })
        ended_well(res)
        has_not(res.output:match("exit\n(.*)$") or "", "nil")
    end)

    it("Tab completes gw., req:, res: and the REPL's commands", function()
        local res = terminal(cfg, {
            { "expect", "moongate> " }, { "send", "gw.ht\t" },
            { "expect", "gw.http" }, { "send", ".req\t" },
            { "expect", "gw.http.request" }, { "intr" },
            { "expect", "moongate> " }, { "send", "req:set_hea\t" },
            { "expect", "req:set_header" }, { "intr" },
            { "expect", "moongate> " }, { "send", "res:set_st\t" },
            { "expect", "res:set_status" }, { "intr" },
            { "expect", "moongate> " }, { "send", "rou\t" },
            { "expect", "routes" }, { "send", "()\n" },
            { "expect", "orders" }, { "expect", "moongate> " },
            { "send", "exit\n" }, { "exit" },
        })
        ended_well(res)
    end)
end)

describe("moongate repl --attach", function()
    local TOKEN = "repl-spec-token-0123456789"
    local CONFIG = [[
local gw = require "moongate"
gw.settings { admin = { port = {{PORT2}}%s }, access_log = "off" }
gw.listen { port = {{PORT}}, host = "127.0.0.1" }
gw.shared_dict("hits", { size = "1m" })
gw.upstream("orders", { "127.0.0.1:9" })
gw.route { name = "hit", path = "/hit", handler = function(req)
    return 200, { hits = gw.shared("hits"):incr("count", 1, 0) }
end }
gw.route { name = "orders", path = "/orders/:id", upstream = "orders",
           policies = { function(req)
    if not req:header("x-api-key") then
        return gw.respond(401, "no key")
    end
end } }
]]

    describe("without a token", function()
        local gw, admin
        setup(function()
            gw = h.start_gateway(fmt(CONFIG, ""), { ports = 2 })
            admin = "127.0.0.1:" .. gw.ports[2]
        end)
        teardown(h.cleanup)

        it("runs try against the gateway's config", function()
            local code, out, err = repl("--attach " .. admin, {
                'try "/orders/1"',
                'try { path = "/orders/1", headers = { ["x-api-key"] = "k" } }',
            })
            assert.equal(0, code, out .. err)
            has(out, "route: orders  params id=1")
            has(out, "=> 401  answered by policy 1")
            has(out, "upstream: orders  target 127.0.0.1:9")
            gw:assert_alive()
        end)

        it("a syntax error does not end the session; chunks span lines", function()
            local code, out = repl("--attach " .. admin, {
                "if then",
                "function triple(x)",
                "    return x * 3",
                "end",
                "triple(14)",
            })
            assert.equal(1, code, out)
            has(out, "repl:1: unexpected symbol near 'then'")
            has(out, "\n42\n")
        end)

        it("stops a chunk that loops; the gateway keeps serving", function()
            local t0 = h.now()
            local _, out = repl("--attach " .. admin, {
                "while true do end", 'print("after")',
            })
            has(out, "repl:1: stopped: the chunk ran more than 3 s")
            has(out, "after")
            -- the 3 s budget plus the REPL's start and attach: 10 s was outrun twice
            -- on a machine running eight other builds and suites at once
            assert.is_true(h.now() - t0 < 15 * h.SLOW)
            assert.equal(200, h.http(gw.port, { path = "/hit" }).status)
            gw:assert_alive()
        end)

        it("reads shared dictionaries the workers wrote", function()
            local before = h.json(h.http(gw.port, { path = "/hit" })).hits
            for _ = 1, 2 do
                assert.equal(200, h.http(gw.port, { path = "/hit" }).status)
            end
            local _, out = repl("--attach " .. admin, { 'dict("hits")' })
            has(out, fmt("{ count = %d }", before + 2))
        end)

        it("shows status, upstream health and metrics", function()
            local _, out = repl("--attach " .. admin, {
                "status()", "upstreams()", "metrics()",
            })
            has(out, "generation = {")
            -- the table upstreams() prints offline, with each target's health
            assert.truthy(out:find("name%s+targets%s+options\n%s+orders%s+127%.0%.0%.1:9 up%s+" ..
                "keepalive 64, connect 5s, read 60s\n"), out)
            has(out, "moongate_generation")
        end)

        it("follows the newest generation after a reload", function()
            h.write_file(gw.config_path, h.read_file(gw.config_path) ..
                'gw.route { name = "added", path = "/added", handler = ' ..
                'function() return 200, "new" end }\n')
            local res = h.admin(gw.ports[2], { method = "POST", path = "/reload" })
            assert.equal(200, res.status, res.body)
            local _, out = repl("--attach " .. admin, { "routes()", 'try "/added"' })
            assert.truthy(out:find("added%s+%*%s+/added%s+handler"), out)
            has(out, "=> 200  answered by handler")
        end)
    end)

    describe("with a token", function()
        local gw, admin
        setup(function()
            gw = h.start_gateway(fmt(CONFIG, fmt(", token = %q", TOKEN)), { ports = 2 })
            admin = "127.0.0.1:" .. gw.ports[2]
        end)
        teardown(h.cleanup)

        it("refuses to start without it (exit 1)", function()
            local code, out, err = repl("--attach " .. admin, { "1 + 1" })
            assert.equal(1, code, out .. err)
            has(err, "401")
            has_not(out, "2")
        end)

        it("works with --token", function()
            local code, out, err = repl("--attach " .. admin .. " --token " .. TOKEN,
                                        { "1 + 1" })
            assert.equal(0, code, out .. err)
            assert.equal("2\n", out)
        end)
    end)

    it("exits 1 when nothing listens there", function()
        local code, out, err = repl("--attach " .. h.dead_addr(), { "1" })
        assert.equal(1, code, out .. err)
        has(err, "moongate repl: 127.0.0.1:")
    end)
end)
