-- moongate's Lua library for LuaRocks: the DSL (`require "moongate"`), the
-- policies (moongate.jwt, moongate.ratelimit, ...) and the offline testing
-- kit, with the C core they reach through LuaJIT's FFI (moongate.core, the
-- same sources as the gateway binary without its main.c).
-- Needs LuaJIT 2.1 (the modules use `ffi`): install with
--   luarocks --lua-version 5.1 make --tree TREE moongate-VERSION-1.rockspec
-- (Debian: luarocks, luajit, libluajit2-5.1-dev, libuv1-dev, libssl-dev,
-- libhiredis-dev, libedit-dev, node-llhttp, zlib1g-dev, libbrotli-dev). spec/unit/package_spec.lua
-- checks that every module under lua/moongate/ and every C source is listed.
rockspec_format = "3.0"
package = "moongate"
version = "0.2.0-1"
source = {
   url = "git+file:///dev/null",
   tag = "v0.2.0",
}
description = {
   summary = "A programmable API gateway: a C core with LuaJIT hooks",
   detailed = [[
The Lua side of moongate: its configuration DSL, bundled policies (JWT with
JWKS, rate limits), shared dictionaries, Redis client and the offline
testing kit, usable from plain LuaJIT to test configs and policies without
a running gateway. Requires LuaJIT 2.1 (FFI).]],
   homepage = "https://moongate.invalid",
   license = "MIT",
   labels = { "gateway", "http", "proxy", "luajit" },
}
supported_platforms = { "linux" }
dependencies = {
   "lua == 5.1", -- LuaJIT 2.1 (luajit2): the modules use its ffi library
   "lua-cjson",
}
build = {
   type = "builtin",
   modules = {
      ["moongate.acl"] = "lua/moongate/acl.lua",
      ["moongate.base"] = "lua/moongate/base.lua",
      ["moongate.basic_auth"] = "lua/moongate/basic_auth.lua",
      ["moongate.budget"] = "lua/moongate/budget.lua",
      ["moongate.cert"] = "lua/moongate/cert.lua",
      ["moongate.cdefs"] = "lua/moongate/cdefs.lua",
      ["moongate.clib"] = "lua/moongate/clib.lua",
      ["moongate.config"] = "lua/moongate/config.lua",
      ["moongate.cors"] = "lua/moongate/cors.lua",
      ["moongate.handler"] = "lua/moongate/handler.lua",
      ["moongate.headers"] = "lua/moongate/headers.lua",
      ["moongate.http"] = "lua/moongate/http.lua",
      ["moongate"] = "lua/moongate/init.lua",
      ["moongate.ip"] = "lua/moongate/ip.lua",
      ["moongate.jwk"] = "lua/moongate/jwk.lua",
      ["moongate.jwt"] = "lua/moongate/jwt.lua",
      ["moongate.key_auth"] = "lua/moongate/key_auth.lua",
      ["moongate.maintenance"] = "lua/moongate/maintenance.lua",
      ["moongate.compression"] = "lua/moongate/compression.lua",
      ["moongate.mtls"] = "lua/moongate/mtls.lua",
      ["moongate.policy"] = "lua/moongate/policy.lua",
      ["moongate.ratelimit"] = "lua/moongate/ratelimit.lua",
      ["moongate.redirect"] = "lua/moongate/redirect.lua",
      ["moongate.redis"] = "lua/moongate/redis.lua",
      ["moongate.repl"] = "lua/moongate/repl.lua",
      ["moongate.runtime"] = "lua/moongate/runtime.lua",
      ["moongate.selftest"] = "lua/moongate/selftest.lua",
      ["moongate.shared"] = "lua/moongate/shared.lua",
      ["moongate.template"] = "lua/moongate/template.lua",
      ["moongate.testing"] = "lua/moongate/testing.lua",
      ["moongate.testing.fake"] = "lua/moongate/testing/fake.lua",
      ["moongate.testing.router"] = "lua/moongate/testing/router.lua",
      ["moongate.testing.trace"] = "lua/moongate/testing/trace.lua",
      ["moongate.core"] = {
         sources = {
            "src/accesslog.c",
            "src/admin.c",
            "src/admin_client.c",
            "src/balancer.c",
            "src/balancer_hash.c",
            "src/balancer_key.c",
            "src/balancer_least_conn.c",
            "src/balancer_p2c.c",
            "src/balancer_rr.c",
            "src/buf.c",
            "src/cache.c",
            "src/cert_info.c",
            "src/cidr.c",
            "src/client_addr.c",
            "src/config.c",
            "src/control.c",
            "src/crypto.c",
            "src/discovery.c",
            "src/dns.c",
            "src/errlog.c",
            "src/ffi_request.c",
            "src/generation.c",
            "src/h1_response.c",
            "src/h1_writer.c",
            "src/header_names.c",
            "src/health.c",
            "src/hooks.c",
            "src/http.c",
            "src/http_client.c",
            "src/http_conn.c",
            "src/kit_request.c",
            "src/lua_route.c",
            "src/lua_state.c",
            "src/maglev.c",
            "src/metrics.c",
            "src/outlier.c",
            "src/pipeline.c",
            "src/pool.c",
            "src/proxy.c",
            "src/proxy_protocol.c",
            "src/real_ip.c",
            "src/redis.c",
            "src/repl.c",
            "src/request.c",
            "src/retry.c",
            "src/sbuf.c",
            "src/compress.c",
            "src/router.c",
            "src/shdict.c",
            "src/targets.c",
            "src/tls.c",
            "src/tls_client.c",
            "src/trace.c",
            "src/upconn_io.c",
            "src/upgrade.c",
            "src/uri.c",
            "src/usage.c",
            "src/watch.c",
            "src/worker.c",
            "src/wq.c",
            "/usr/share/llhttp/llhttp.c", "/usr/share/llhttp/api.c",
            "/usr/share/llhttp/http.c",
         },
         defines = { "_GNU_SOURCE", "LLHTTP_STRICT_MODE=1", "_FILE_OFFSET_BITS=64" },
         incdirs = { "src", "/usr/share/include/llhttp", "/usr/include/luajit-2.1",
                     "/usr/include/hiredis", "/usr/include/editline" },
         libraries = { "luajit-5.1", "uv", "ssl", "crypto", "hiredis", "edit",
                       "pthread", "m", "dl", "crypt", "z", "brotlienc" },
      },
   },
   copy_directories = { "docs", "examples" },
}
