/* pipeline.c: the steps of a request after its head, whatever protocol it
 * came by (pipeline.h): request id, Host and target checks, escaped
 * slashes, on_request, routing, on_route, the route's limits and policies
 * (on_access), then a handler route, the cache or the upstream; the end of
 * a request for the client (access log, metrics, on_log).
 *
 * It calls down into the hooks, the cache and the router, answers through
 * the request (request.h) and its protocol (r->proto), and reaches the
 * upstream side, which sits above it, through w->upstream. The hooks and
 * the cache come back to it through r->pipe.
 */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <lua.h>
#include "accesslog.h"
#include "cache.h"
#include "compress.h"
#include "hooks.h"
#include "lua_route.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "pipeline.h"
#include "tracing.h"
#include "client_addr.h"
#include "header_names.h"
#include "retry.h"
#include "split.h"
#include "upgrade.h"
#include "upstream.h"
#include "uri.h"
#include "worker.h"

static void hook_resumed(mg_request_t *r, int phase, int result);
static void cache_ready(mg_request_t *r, int serve);
static void serve_cached(mg_request_t *r);
static const mg_pipe_t pipeline = { hook_resumed, cache_ready };

static const char *header_get(void *ctx, const char *name, size_t name_len, size_t *value_len)
{
    mg_request_t *r = ctx;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_span_t n = r->headers[i].name;
        if (n.len == name_len && strncasecmp(mg_request_data(r, n), name, name_len) == 0) {
            *value_len = r->headers[i].value.len;
            return mg_request_data(r, r->headers[i].value);
        }
    }
    return NULL;
}

/* Splits the target into normalised path and query (both in scratch).
 * Returns 0, or -1 for a target we refuse (400). */
static int prepare_target(mg_request_t *r)
{
    const char *url = mg_request_data(r, r->url);
    size_t len = r->url.len;
    if (len == 0 || url[0] != '/')
        return -1; /* only origin-form: no absolute-form, authority or '*' */
    const char *q = memchr(url, '?', len);
    size_t plen = q ? (size_t)(q - url) : len;
    if (q && memchr(q, '#', len - plen))
        return -1; /* a fragment (RFC 9112 3.2: none in a request target) */
    char *path = r->scratch;
    size_t out_len = 0;
    if (mg_uri_normalize_path(url, plen, path, &out_len, 0) < 0)
        return -1;
    r->path = path;
    r->path_len = out_len;
    r->scratch_used = out_len + 1;
    r->query = q ? q : "";
    r->query_len = q ? len - plen : 0;
    return 0;
}

/* The request's Host value as received ("" when absent). */
static const char *request_host(mg_request_t *r, size_t *len)
{
    if (!r->known[MG_H_HOST]) {
        *len = 0;
        return "";
    }
    mg_span_t h = r->headers[r->known[MG_H_HOST] - 1].value;
    *len = h.len;
    return mg_request_data(r, h);
}

/* The escaped_slashes mode that applies to r: that of the route its path
 * reaches as received (escapes kept), else that of its listener. */
static int slashes_mode(mg_request_t *r)
{
    const mg_config_t *cfg = r->g->cfg;
    mg_route_match_t m;
    size_t host_len;
    const char *host = request_host(r, &host_len);
    if (mg_router_match(r->g->router, r->peer->local_port, mg_request_data(r, r->method), r->method.len,
                        host, host_len, r->path, r->path_len, header_get, r,
                        &m) == MG_ROUTE_OK &&
        m.route->escaped_slashes != MG_SLASHES_INHERIT)
        return m.route->escaped_slashes;
    return r->peer->listener < cfg->nlisteners ? cfg->listeners[r->peer->listener].escaped_slashes
                                         : MG_SLASHES_REJECT;
}

/* An escaped slash ("%2F", "%5C", any case) in the path is a separator to
 * an upstream that decodes it, so it could reach a resource that routing
 * here did not see ("/public/..%2Fsecure"). The escaped_slashes option says
 * what to do, and whatever it is, the path routed on is the path forwarded.
 * Nested encodings ("%252F") are refused in every mode but keep: decoding
 * them once leaves an escaped slash, twice changes what a correct upstream
 * would see. Returns 0 to go on (r->path may now be the decoded path), or 1
 * when the request was answered (400 or 307). */
static int escaped_slashes(mg_request_t *r)
{
    int found = mg_uri_escaped_slashes(r->path, r->path_len);
    if (!found)
        return 0;
    int mode = slashes_mode(r);
    if (mode == MG_SLASHES_KEEP)
        return 0;
    if (mode == MG_SLASHES_REJECT || (found & MG_URI_NESTED_SLASH)) {
        r->response_close = 1;
        mg_request_respond_error(r, 400, (found & MG_URI_NESTED_SLASH)
                                          ? "encoded escaped slash (%252F, %255C) in path"
                                          : "escaped slash (%2F, %5C) in path");
        return 1;
    }
    /* decode or redirect: normalise the path as received again, with the
     * escaped slashes as separators (dot segments included) */
    const char *url = mg_request_data(r, r->url);
    size_t plen = (size_t)(r->query_len ? r->query - url : (ptrdiff_t)r->url.len), dlen;
    char *d = r->scratch + r->scratch_used;
    if (mg_uri_normalize_path(url, plen, d, &dlen, MG_URI_DECODE_SLASHES) < 0 ||
        mg_uri_escaped_slashes(d, dlen)) {
        r->response_close = 1;
        mg_request_respond_error(r, 400, "bad request target");
        return 1;
    }
    if (mode == MG_SLASHES_REDIRECT) {
        /* scratch holds it: path, decoded path and this are each below
         * the request line limit (request_fit) */
        char *loc = d + dlen + 1, *o = loc, body[160];
        memcpy(o, d, dlen);
        o += dlen;
        memcpy(o, r->query, r->query_len);
        o += r->query_len;
        int bn = snprintf(body, sizeof(body),
                          "{\"error\":\"escaped slash in path: see Location\",\"status\":307,"
                          "\"request_id\":\"%s\"}\n", r->request_id);
        r->state = MG_RS_LOCAL;
        r->response_close = 1; /* a body the client sent is not read */
        mg_hfield_t location = mg_hfield("Location", 8, loc, (size_t)(o - loc), MG_HN_OTHER);
        mg_request_respond(r, 307, "application/json", body, (size_t)bn, &location, 1);
        return 1;
    }
    r->path = d;
    r->path_len = dlen;
    r->scratch_used += dlen + 1;
    return 0;
}

/* Runs a hook phase; returns 1 when the pipeline stops here (the hook
 * waits, answered, or failed and was answered 500). */
static int run_phase(mg_request_t *r, int phase)
{
    const mg_proto_t *p = r->proto;
    void *conn = r->conn;
    uint32_t serial = r->serial;
    int rc = mg_hooks_run(r, phase);
    if (rc == MG_HOOK_DONE)
        return 0;
    if (rc == MG_HOOK_ERROR && mg_request_still(r, serial, p, conn))
        mg_request_respond_error(r, 500, "hook error");
    return 1;
}

static void respond_405(mg_request_t *r);

int mg_pipeline_routed(mg_request_t *r)
{
    if (!r->route && r->upstream_override < 0) {
        r->state = MG_RS_LOCAL;
        if (r->route_rc == MG_ROUTE_BAD_METHOD)
            respond_405(r);
        else
            mg_request_respond_error(r, 404, "no route");
        return 1;
    }
    uint64_t max_body = r->route ? r->route->max_body : r->g->cfg->limits.body;
    if (r->content_length > max_body) {
        r->response_close = 1;
        mg_request_respond_error(r, 413, "request body too large");
        return 1;
    }
    return 0;
}

/* The steps of a request after its head, each resumable after a hook that
 * waited: on_request, routing, on_route, route policies, then the handler or
 * the upstream. `done` is the last phase already finished. */
static void continue_request(mg_request_t *r, int done)
{
    if (done < MG_PHASE_REQUEST && mg_hooks_has(r->g, NULL, MG_PHASE_REQUEST) &&
        run_phase(r, MG_PHASE_REQUEST))
        return;
    if (done < MG_PHASE_ROUTE) {
        size_t host_len;
        const char *host = request_host(r, &host_len);
        const char *method = mg_request_data(r, r->method);
        size_t mlen = r->method.len;
        if (r->new_method) {
            method = r->new_method;
            mlen = r->new_method_len;
        }
        r->route_rc = mg_router_match(r->g->router, r->peer->local_port, method, mlen, host, host_len,
                                      r->path, r->path_len, header_get, r, &r->match);
        r->route = r->route_rc == MG_ROUTE_OK ? r->match.route : NULL;
        if (r->route && __builtin_expect(r->route->chooses, 0))
            mg_split_route(r); /* before on_route: hooks see the choice */
        if (mg_hooks_has(r->g, NULL, MG_PHASE_ROUTE) && run_phase(r, MG_PHASE_ROUTE))
            return;
    }
    mg_upgrade_settle(r); /* before policies: they decide on what goes */
    if (mg_pipeline_routed(r))
        return;
    if (done < MG_PHASE_ACCESS && r->route && mg_hooks_has(r->g, r->route, MG_PHASE_ACCESS) &&
        run_phase(r, MG_PHASE_ACCESS))
        return;
    if (r->route && r->route->has_handler && r->upstream_override < 0) {
        r->state = MG_RS_LOCAL;
        mg_lua_route_call(r);
        return;
    }
    if (r->route && r->route->cache && !mg_cache_looked(r)) {
        int todo = mg_cache_lookup(r);
        if (todo == MG_CACHE_SERVE) {
            serve_cached(r);
            return;
        }
        if (todo == MG_CACHE_WAIT)
            return; /* the cache calls r->pipe->cache_ready */
    }
    if (r->is_upgrade && r->has_body) {
        r->response_close = 1;
        mg_request_respond_error(r, 400, "upgrade request with a body");
        return;
    }
    if (r->proto->prepare_body(r) <= 0)
        return; /* answered, or the protocol calls mg_pipeline_continue */
    r->w->upstream->start(r);
}

static void hook_resumed(mg_request_t *r, int phase, int result)
{
    if (phase == MG_PHASE_RESPONSE) {
        if (r->up)
            r->w->upstream->hook_resumed(r->up, result);
        else if (mg_cache_holds(r) && result == MG_HOOK_ERROR)
            mg_request_respond_error(r, 500, "hook error");
        else if (mg_cache_holds(r))
            mg_cache_serve(r);
        return;
    }
    const mg_proto_t *p = r->proto;
    void *conn = r->conn;
    if (phase == MG_PHASE_LOG)
        return;
    if (result == MG_HOOK_DONE)
        continue_request(r, phase);
    else if (result == MG_HOOK_ERROR)
        mg_request_respond_error(r, 500, "hook error");
    p->proceed(conn, r); /* an answer may have left a body to drop */
}

int mg_pipeline_checks(mg_request_t *r)
{
    if (r->g->cfg->trusted_proxies)
        mg_client_addr_resolve(r); /* the real client, before any hook reads it */
    if ((r->http_minor == 1 || r->http_major == 2) && !r->known[MG_H_HOST]) {
        r->response_close = 1;
        mg_request_respond_error(r, 400, "missing Host header");
        return 1;
    }
    if (r->known[MG_H_HOST]) {
        mg_span_t h = r->headers[r->known[MG_H_HOST] - 1].value;
        if (!mg_uri_valid_host(mg_request_data(r, h), h.len)) {
            r->response_close = 1;
            mg_request_respond_error(r, 400, "invalid Host header");
            return 1;
        }
    }
    if (prepare_target(r) < 0) {
        r->response_close = 1;
        mg_request_respond_error(r, 400, "bad request target");
        return 1;
    }
    return escaped_slashes(r);
}

void mg_pipeline_head(mg_request_t *r)
{
    r->pipe = &pipeline;
    mg_request_assign_id(r);
    if (mg_pipeline_checks(r))
        return;
    continue_request(r, 0);
}

static void cache_ready(mg_request_t *r, int serve)
{
    if (serve)
        serve_cached(r);
    else
        continue_request(r, MG_PHASE_ACCESS);
}

/* Runs on_response hooks on the answer the cache holds, then sends it. */
static void serve_cached(mg_request_t *r)
{
    r->state = MG_RS_LOCAL;
    if (mg_hooks_has(r->g, r->route, MG_PHASE_RESPONSE)) {
        int rc = mg_hooks_run(r, MG_PHASE_RESPONSE);
        if (rc == MG_HOOK_WAIT)
            return; /* hook_resumed sends it */
        if (rc == MG_HOOK_ERROR) {
            mg_request_respond_error(r, 500, "hook error");
            return;
        }
    }
    mg_cache_serve(r);
}

/* 405 with the Allow header RFC 9110 (15.5.6) requires: the methods of the
 * routes that matched the request in all but its method. */
static void respond_405(mg_request_t *r)
{
    const char *host = NULL;
    size_t host_len = 0;
    if (r->known[MG_H_HOST]) {
        mg_span_t h = r->headers[r->known[MG_H_HOST] - 1].value;
        host = mg_request_data(r, h);
        host_len = h.len;
    }
    char allow[2048];
    long n = mg_router_allowed(r->g->router, r->peer->local_port, host, host_len, r->path,
                               r->path_len, header_get, r, allow, sizeof(allow));
    mg_hfield_t f = mg_hfield("Allow", 5, allow, (size_t)n, MG_HN_OTHER);
    mg_request_respond_error_with(r, 405, "method not allowed", &f, 1);
}

/* The testing kit's steps (mg_ffi.h), on its in-memory request. */
long mg_ffi_kit_step(mg_request_t *r, const mg_ffi_kit_head_t *m, int step, const char **out,
                     size_t *head_len)
{
    return mg_kit_request_step(r, m, step == MG_FFI_KIT_ROUTED ? mg_pipeline_routed
                                                               : mg_pipeline_checks,
                               out, head_len);
}

void mg_pipeline_log(mg_request_t *r)
{
    r->total_ns = uv_hrtime() - r->start_ns;
    mg_accesslog_request(r->w, r);
    mg_metrics_request(r->w->id, r->route ? r->route->metric_id : 0, r->status,
                       r->total_ns / 1000, r->upstream_ns / 1000);
    if (r->trace_sampled)
        mg_tracing_request_end(r);
    if (!r->hook_waiting && mg_hooks_has(r->g, r->route, MG_PHASE_LOG))
        mg_hooks_run(r, MG_PHASE_LOG);
}

void mg_pipeline_upstream_failed(mg_request_t *r, int status, const char *message)
{
    if (r->response_started) {
        r->proto->abort(r);
        return;
    }
    if (status >= 502 && status <= 504 && mg_cache_use_stale(r)) {
        serve_cached(r);
        return;
    }
    mg_request_respond_error(r, status, message);
}

/* ---- req:body() ------------------------------------------------------------ */

static int push_body(struct lua_State *co, void *arg)
{
    mg_request_t *r = arg;
    lua_pushlstring(co, r->body_buf ? r->body_buf : "", r->body_len);
    return 1;
}

static void cancel_body(void *arg)
{
    mg_request_t *r = arg;
    r->body_hc = NULL;
}

/* req:body(): 1 with the body when it is all here, 0 when the hook must
 * wait for it (it is resumed with the body), or an MG_FFI_* error. */
int mg_ffi_req_read_body(mg_request_t *r, const char **p, size_t *len)
{
    if (r->body_buffered || !r->has_body) {
        *p = r->body_buf ? r->body_buf : "";
        *len = r->body_len;
        return 1;
    }
    if (r->up || r->response_started || r->state != MG_RS_UPSTREAM || r->body_hc)
        return MG_FFI_EPHASE;
    r->body_hc = mg_hook_wait_begin(cancel_body, r);
    if (!r->body_hc)
        return MG_FFI_EPHASE;
    r->state = MG_RS_BUFFER;
    return r->proto->read_body(r) < 0 ? MG_FFI_EPHASE : 0;
}

void mg_pipeline_body_read(mg_request_t *r)
{
    if (r->body_hc) {
        mg_hook_wake_later(r->body_hc, push_body, r);
        r->body_hc = NULL;
    } else if (r->buffering) {
        /* read whole so that a retry can send it again (retry.h) or a
         * mirror copy carry it (mirror.h) */
        r->buffering = 0;
        r->w->upstream->start(r);
    }
}

void mg_pipeline_free(mg_request_t *r)
{
    mg_worker_t *w = r->w;
    if (r->up) {
        w->upstream->detach(r->up, 0);
        r->up = NULL;
    }
    if (r->tpool) /* its target's count of users (targets.h), a store: inline */
        mg_pool_use(r, NULL);
    if (r->retry)
        mg_retry_end(r);
    mg_hooks_release(r);
    mg_cache_release(r);
    mg_compress_release(r);
    mg_request_arena_reset(r);
    free(r->body_buf);
    r->body_buf = NULL;
    mg_wgen_release(r->g);
    r->g = NULL;
    r->proto = NULL;
    r->conn = NULL;
    r->next_free = w->free_requests;
    w->free_requests = r;
}
