-- Installing moongate like a server: `make install` puts a binary that
-- finds its Lua library by itself (no LUA_PATH, any working directory), an
-- example config that passes `moongate check`, a systemd unit that
-- systemd-analyze accepts; `make uninstall` takes it away again; `make deb`
-- builds a package that lintian finds no error in.
local h = require "spec.support.helpers"

local function sh(cmd)
    local out = h.sh("(" .. cmd .. ") 2>&1; echo \"rc=$?\"")
    return tonumber(out:match("rc=(%d+)%s*$")), out
end

local function have(cmd)
    return sh("command -v " .. cmd .. " >/dev/null") == 0
end

describe("make install", function()
    local prefix = h.tmpdir() .. "/prefix"

    it("installs a binary that finds its library from any directory", function()
        local rc, out = sh("make --no-print-directory install PREFIX=" .. h.shq(prefix))
        assert(rc == 0, out)
        for _, f in ipairs({ "bin/moongate", "share/moongate/lua/moongate/init.lua",
                             "share/moongate/lua/moongate/jwt.lua",
                             "share/moongate/examples/msa/gateway.lua",
                             "share/doc/moongate/README.md", "etc/moongate/gateway.lua",
                             "etc/logrotate.d/moongate", "lib/systemd/system/moongate.service",
                             "lib/sysusers.d/moongate.conf" }) do
            assert(h.read_file(prefix .. "/" .. f), "missing " .. f)
        end
        rc, out = sh("cd / && env -u LUA_PATH -u MOONGATE_LUA_DIR " .. h.shq(prefix) ..
                     "/bin/moongate check -c " .. h.shq(prefix) .. "/etc/moongate/gateway.lua")
        assert(rc == 0, out)
        assert.truthy(out:find("gateway.lua: ok", 1, true), out)
    end)

    it("writes a unit with reload, restart, a user and the hardening", function()
        local unit = assert(h.read_file(prefix .. "/lib/systemd/system/moongate.service"))
        for _, want in ipairs({
            "ExecReload=" .. prefix .. "/bin/moongate reload -c " .. prefix ..
                "/etc/moongate/gateway.lua",
            "Restart=on-failure", "User=moongate", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
        }) do
            assert.truthy(unit:find("\n" .. want .. "\n", 1, true), want)
        end
        if have("systemd-analyze") then
            local rc, out = sh("systemd-analyze verify " .. h.shq(prefix) ..
                               "/lib/systemd/system/moongate.service")
            assert(rc == 0, out)
        end
    end)

    it("keeps an edited config on a second install and leaves it on uninstall", function()
        local conf = prefix .. "/etc/moongate/gateway.lua"
        h.write_file(conf, h.read_file(conf) .. "-- edited\n")
        local rc, out = sh("make --no-print-directory install PREFIX=" .. h.shq(prefix))
        assert(rc == 0, out)
        assert.truthy(h.read_file(conf):find("-- edited", 1, true))
        rc, out = sh("make --no-print-directory uninstall PREFIX=" .. h.shq(prefix))
        assert(rc == 0, out)
        assert.is_nil(h.read_file(prefix .. "/bin/moongate"))
        assert.is_nil(h.read_file(prefix .. "/share/moongate/lua/moongate/init.lua"))
        assert.truthy(h.read_file(conf))
    end)
end)

describe("make deb", function()
    local it_deb = (have("dpkg-deb") and have("lintian")) and it or pending

    it_deb("builds a package with runtime dependencies, a conffile and no lintian error", function()
        local rc, out = sh("make --no-print-directory deb")
        assert(rc == 0, out)
        assert.is_nil(out:find("\nE: "), out)
        local deb = assert(out:match("deb: (build/moongate_[^%s]+%.deb)"), out)
        local _, depends = sh("dpkg-deb -f " .. deb .. " Depends")
        for _, lib in ipairs({ "libc6", "libuv1", "libluajit", "libssl3", "libhiredis",
                               "lua-cjson" }) do
            assert.truthy(depends:find(lib, 1, true), lib .. " not in " .. depends)
        end
        assert.is_nil(depends:find("-dev", 1, true), depends)
        local _, files = sh("dpkg-deb -c " .. deb)
        for _, f in ipairs({ "./usr/bin/moongate", "./etc/moongate/gateway.lua",
                             "./lib/systemd/system/moongate.service",
                             "./usr/share/moongate/lua/moongate/init.lua",
                             "./etc/logrotate.d/moongate", "./usr/share/doc/moongate/copyright" }) do
            assert.truthy(files:find(f, 1, true), f)
        end
        local _, conffiles = sh("dpkg-deb --ctrl-tarfile " .. deb .. " | tar -xOf - ./conffiles")
        assert.truthy(conffiles:find("/etc/moongate/gateway.lua", 1, true), conffiles)
    end)
end)
