-- The layers of src/, bottom first: a file may call (use a symbol defined
-- in) files of its own layer and of the layers below, never above. Where a
-- lower layer must reach an upper one it goes through a table of functions
-- the upper one fills in (request.h mg_proto_t and mg_pipe_t, upstream.h
-- mg_upstream_ops_t). spec/unit/layers_spec.lua checks the built objects
-- (nm) against this table; README "Layout" draws the same map.
--
-- Within a layer calls may go either way only where `cycles` says so; the
-- spec finds any other circle.
return {
    { name = "base", files = {
        "errlog", "wq", "uri", "trace", "http", "usage", "crypto", "shdict",
        "tls", "tls_client", "watch", "metrics", "metrics_user", "lua_state", "admin",
        "admin_client", "buf", "logfields",
        "header_names", "h1_response", "h1_writer", "grpc", "oneshot",
        "cidr", "proxy_protocol", "real_ip", "maglev", "cert_info", "sbuf",
        -- the DNS stub resolver (wire format, a client on a given loop)
        "dns",
        -- the balancers (balancer.h): pure picks over a target set
        "balancer", "balancer_rr", "balancer_least_conn", "balancer_hash",
        "balancer_p2c" } },
    { name = "config", files = { "config", "router" } },
    -- a generation, its targets at run time (slots, views), outlier state
    { name = "generation", files = { "generation", "outlier", "targets" } },
    -- HTTP/2 header blocks to and from the request (h2_headers); the spans
    -- a request records (tracing.h: request.c samples); its answers go out
    -- through the compression filter when a policy asked for it
    -- (mg_request_send_whole), which reads the request
    { name = "request", files = { "request", "h2_headers", "tracing", "compress" }, cycles = true },
    { name = "core", files = {
        "hooks", "upgrade", "lua_route", "redis", "cache", "ffi_request",
        "accesslog", "kit_request", "client_addr",
        "balancer_key", "retry", "split" } },
    { name = "pipeline", files = { "pipeline" } },
    -- the keep-alive pools and the balancer; an idle connection is closed
    -- through w->upstream (the proxy's table); an upstream connection's
    -- transport, plain or TLS
    { name = "pool", files = { "pool", "upconn_io" } },
    -- an HTTP/2 stream is an upstream connection whose events its session
    -- (h2_upstream) brings: the two call each other; and the gateway's own
    -- requests off the workers: health checks, spans
    { name = "upstream", files = { "proxy", "health", "h2_upstream", "otlp" }, cycles = true },
    -- gw.http over the proxy's connections; told of a lost one through
    -- u->client_lost. Route mirrors' copies go out through it; the proxy
    -- reaches the mirror through w->mirror
    { name = "client", files = { "http_client", "mirror" } },
    -- HTTP/1 (http_conn, which also keeps every client socket) and the
    -- HTTP/2 session it hands a connection to (h2_conn, which reaches the
    -- socket back through mg_h2_io_t)
    { name = "protocol", files = { "http_conn", "h2_conn" } },
    -- discovery: the control thread's lookups and admin target changes,
    -- published to the workers
    { name = "process", files = { "worker", "discovery", "control", "repl", "main" } },
}
