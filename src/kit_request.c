/* kit_request.c: a request built in memory for the testing kit
 * (lua/moongate/testing/fake.lua), so that the kit's request object runs
 * the gateway's own header reads, edit lists and phase checks
 * (ffi_request.c, request.c) instead of a Lua copy of them.
 *
 * The kit keeps its model of the request (routing, the upstream's answer,
 * the clock, ids) in Lua and hands this request what those functions read:
 * the received head, the hook phase, whether the response started and
 * the upstream's answer head. Nothing here parses: the request line and
 * headers come as (offset, length) spans into the head's bytes, as the
 * protocol's parser left them (http_conn.c mg_ffi_head_check). The
 * pipeline's checks before any hook (pipeline.c mg_pipeline_checks: Host,
 * the target, escaped slashes) run on it too (mg_kit_request_step).
 *
 * For the head the upstream gets and the client's head of a proxied
 * answer (proxy.c mg_ffi_kit_upstream_head, mg_ffi_kit_response_head) the
 * request also owns what proxy.c's head builders read besides it: a
 * worker (only its scratch is used), a pool with the upstream's options
 * and target, the peer and a protocol telling TLS; mg_kit_request_run sets
 * them and r's fields from the kit's model for one call and puts r back.
 *
 * The gateway's own answers (errors, gw.respond, handlers) go through
 * request.c's mg_request_respond / mg_request_respond_error_with on r,
 * whose protocol here writes them as HTTP/1 writes them to a client
 * (h1_writer.c) and keeps the bytes (mg_ffi_kit_respond).
 *
 * A kit config (mg_kit_config_t) is what r->g gives a request: the config
 * the gateway would run (mg_config_load of the kit's file, or, for fake
 * requests without a file, the schema's default limits and the upstreams
 * and targets the kit names), so that the checks reading r->g->cfg
 * (set_upstream, set_target, the head's limits) run as in the gateway.
 *
 * Ownership: mg_ffi_kit_request_new returns a request that owns copies of
 * everything passed in (its buffer, header array, arena chunks and
 * upstream answer) and borrows its kit config, which must outlive it;
 * mg_ffi_kit_request_free frees what it owns. A kit config owns its
 * mg_config_t (mg_ffi_kit_config_free). Not used by the gateway itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compress.h"
#include "request.h"
#include "upstream.h"
#include "worker.h"
#include "router.h"
#include "header_names.h"
#include "h1_writer.h"
#include "config.h"
#include "lua_state.h"
#include "mg_ffi.h"
#include <lauxlib.h>
#include <lua.h>

/* What r->g is for a kit request: a generation with a config only. */
struct mg_kit_config_s {
    mg_wgen_t g;          /* its cfg and router */
    mg_config_t *cfg;
    mg_router_t *router;  /* the config's routes (escaped_slashes reads them) */
    char *errors;         /* mg_config_load's, when the file was refused */
};

typedef struct kit_req_s {
    mg_request_t r;  /* first: the request pointer is the kit_req_t one */
    char *buf;       /* the received head's bytes (r.data points here) */
    mg_upconn_t *up; /* the upstream's answer, once the kit has one */
    /* the head builders' surroundings (mg_kit_request_run), made on first
     * use: send->w is w, send->pool is &pool */
    mg_upconn_t *send;
    mg_worker_t *w;
    mg_pool_t pool;
    mg_upstream_t upstream;
    mg_target_t target;
    mg_peer_t peer;
    mg_route_t route; /* r->route when the model's route is none of the
                         config's: its upstream (or presence) is read */
    int tls;
    /* a gateway-made answer (run_answering): written into w's scratch,
     * answer_len bytes, head_len of them the head (framed as `frame`
     * says); -1: none was made (the response had started) */
    mg_h1w_frame_t frame;
    long answer_len;
    size_t head_len;
    /* the target as the pipeline's checks left it (in r.scratch) */
    const char *path, *query;
    size_t path_len, query_len;
} kit_req_t;

/* ---- kit configs ---------------------------------------------------------- */

static mg_kit_config_t *config_wrap(mg_config_t *cfg)
{
    mg_kit_config_t *kc = calloc(1, sizeof(*kc));
    const char *err;
    if (!kc || mg_router_build(&kc->router, cfg->routes, cfg->nroutes, &err) != 0) {
        free(kc);
        mg_config_free(cfg);
        return NULL;
    }
    kc->cfg = cfg;
    kc->g.cfg = cfg;
    kc->g.router = kc->router;
    return kc;
}

/* mg_config_load, with the kit's own Lua path: outside the binary the
 * library is where the kit found it, not where the binary would look. */
static int config_load(const char *file, const char *lua_path, mg_config_t **cfg, char **errors)
{
    lua_State *L = mg_lua_open();
    if (!L)
        return -1;
    if (lua_path) {
        lua_getglobal(L, "package");
        lua_pushstring(L, lua_path);
        lua_setfield(L, -2, "path");
        lua_pop(L, 1);
    }
    int rc = mg_config_run_lua(L, file, errors);
    if (rc == 0)
        rc = mg_config_convert(L, lua_gettop(L), file, cfg, errors);
    lua_close(L);
    return rc;
}

mg_kit_config_t *mg_ffi_kit_config_load(const char *file, const char *lua_path)
{
    mg_config_t *cfg = NULL;
    char *errors = NULL;
    if (config_load(file, lua_path, &cfg, &errors) != 0) {
        mg_kit_config_t *kc = calloc(1, sizeof(*kc));
        if (!kc) {
            free(errors);
            return NULL;
        }
        kc->errors = errors ? errors : strdup("out of memory\n");
        return kc;
    }
    free(errors);
    return config_wrap(cfg);
}

mg_kit_config_t *mg_ffi_kit_config_new(void)
{
    mg_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    /* the schema's defaults (config.c's table; every limit is a uint64_t) */
    size_t n;
    const mg_ffi_config_field_t *f = mg_ffi_config_fields("limits", &n);
    for (size_t i = 0; i < n; i++) {
        if (f[i].ctype && f[i].def == f[i].def &&
            f[i].offset + sizeof(uint64_t) <= sizeof(cfg->limits))
            *(uint64_t *)(void *)((char *)&cfg->limits + f[i].offset) = (uint64_t)f[i].def;
    }
    return config_wrap(cfg);
}

const char *mg_ffi_kit_config_errors(const mg_kit_config_t *kc)
{
    return kc->cfg ? NULL : kc->errors;
}

void mg_ffi_kit_config_free(mg_kit_config_t *kc)
{
    if (!kc)
        return;
    mg_router_free(kc->router);
    mg_config_free(kc->cfg);
    free(kc->errors);
    free(kc);
}

int mg_ffi_kit_config_upstream(mg_kit_config_t *kc, const char *name, size_t len)
{
    mg_config_t *cfg = kc->cfg;
    if (!cfg)
        return MG_FFI_EINVAL;
    mg_upstream_t *u = realloc(cfg->upstreams, (cfg->nupstreams + 1) * sizeof(*u));
    if (!u)
        return MG_FFI_ENOMEM;
    cfg->upstreams = u;
    u += cfg->nupstreams;
    memset(u, 0, sizeof(*u));
    if (!(u->name = strndup(name, len)))
        return MG_FFI_ENOMEM;
    return (int)cfg->nupstreams++;
}

int mg_ffi_kit_config_target(mg_kit_config_t *kc, int upstream, const char *name, size_t len)
{
    mg_config_t *cfg = kc->cfg;
    if (!cfg || upstream < 0 || (size_t)upstream >= cfg->nupstreams)
        return MG_FFI_EINVAL;
    mg_upstream_t *u = &cfg->upstreams[upstream];
    mg_target_t *t = realloc(u->targets, (u->ntargets + 1) * sizeof(*t));
    if (!t)
        return MG_FFI_ENOMEM;
    u->targets = t;
    t += u->ntargets;
    memset(t, 0, sizeof(*t));
    if (!(t->name = strndup(name, len)))
        return MG_FFI_ENOMEM;
    t->weight = 1;
    return (int)u->ntargets++;
}

const char *mg_ffi_kit_config_name(const mg_kit_config_t *kc, int upstream, int target)
{
    const mg_config_t *cfg = kc->cfg;
    if (!cfg || upstream < 0 || (size_t)upstream >= cfg->nupstreams)
        return NULL;
    const mg_upstream_t *u = &cfg->upstreams[upstream];
    if (target < 0)
        return u->name;
    return (size_t)target < u->ntargets ? u->targets[target].name : NULL;
}

mg_wgen_t *mg_kit_config_gen(mg_kit_config_t *kc)
{
    return &kc->g;
}

const char *mg_ffi_kit_known_header(int k)
{
    for (int t = 0; k >= 0 && k < MG_H__COUNT && t < MG_HN__COUNT; t++) {
        if (mg_hnames[t].known == k)
            return mg_hnames[t].name;
    }
    return NULL;
}

/* ---- kit requests --------------------------------------------------------- */

/* Copies len bytes and n headers (spans: name off, name len, value off,
 * value len, each into buf) into a new buffer and header array. */
static int copy_head(const char *buf, size_t len, const uint32_t *spans, size_t n, char **out,
                     mg_header_t **headers)
{
    *out = malloc(len ? len : 1);
    *headers = calloc(n ? n : 1, sizeof(**headers));
    if (!*out || !*headers) {
        free(*out);
        free(*headers);
        return -1;
    }
    memcpy(*out, buf, len);
    for (size_t i = 0; i < n; i++) {
        const uint32_t *s = spans + 4 * i;
        if ((size_t)s[0] + s[1] > len || (size_t)s[2] + s[3] > len) {
            free(*out);
            free(*headers);
            return -1;
        }
        (*headers)[i].name = (mg_span_t){ .off = s[0], .len = s[1] };
        (*headers)[i].value = (mg_span_t){ .off = s[2], .len = s[3] };
    }
    return 0;
}

mg_request_t *mg_ffi_kit_request_new(mg_kit_config_t *kc, const char *buf, size_t len,
                                     const uint32_t *line, const uint32_t *spans, size_t n)
{
    if (!kc->cfg || (size_t)line[0] + line[1] > len || (size_t)line[2] + line[3] > len)
        return NULL;
    kit_req_t *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    if (copy_head(buf, len, spans, n, &k->buf, &k->r.headers) != 0) {
        free(k);
        return NULL;
    }
    /* each name's token, as the protocol's parser leaves them */
    if (!(k->r.htok = malloc(n ? n : 1))) {
        free(k->r.headers);
        free(k->buf);
        free(k);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        k->r.htok[i] = (uint8_t)mg_hname_lookup(k->buf + k->r.headers[i].name.off,
                                                k->r.headers[i].name.len);
    k->r.nheaders = k->r.headers_cap = (uint32_t)n;
    k->r.method = (mg_span_t){ .off = line[0], .len = line[1] };
    k->r.url = (mg_span_t){ .off = line[2], .len = line[3] };
    if (mg_request_fit(&k->r, &kc->cfg->limits) != 0) {
        mg_ffi_kit_request_free(&k->r);
        return NULL;
    }
    k->r.data = &k->buf;
    k->r.g = &kc->g;
    k->r.target = -1;
    k->r.upstream_override = -1;
    k->r.target_override = -1;
    return &k->r;
}

static void drop_upstream(kit_req_t *k)
{
    if (!k->up)
        return;
    free(k->up->buf.data);
    free(k->up->headers);
    free(k->up->htok);
    free(k->up);
    k->up = NULL;
    k->r.up = NULL;
}

void mg_ffi_kit_request_free(mg_request_t *r)
{
    kit_req_t *k = (kit_req_t *)r;
    if (!k)
        return;
    drop_upstream(k);
    if (k->w)
        free(k->w->scratch);
    free(k->w);
    free(k->send);
    mg_compress_release(r);
    mg_request_arena_reset(r);
    free(r->headers);
    free(r->scratch);
    free(r->htok);
    free(k->buf);
    free(k);
}

void mg_ffi_kit_request_state(mg_request_t *r, int phase, int response_started,
                              int route_upstream, int upstream_override, int target_override)
{
    kit_req_t *k = (kit_req_t *)r;
    r->hook_phase = (uint8_t)phase;
    r->response_started = response_started ? 1 : 0;
    /* only the route's upstream is read of it (mg_request_upstream) */
    k->route.upstream = route_upstream;
    r->route = route_upstream >= -1 ? &k->route : NULL;
    r->upstream_override = upstream_override;
    r->target_override = target_override;
}

void mg_ffi_kit_request_overrides(const mg_request_t *r, int *upstream, int *target)
{
    *upstream = r->upstream_override;
    *target = r->target_override;
}

int mg_ffi_kit_request_upstream(mg_request_t *r, int status, const char *buf, size_t len,
                                const uint32_t *spans, size_t n)
{
    kit_req_t *k = (kit_req_t *)r;
    drop_upstream(k);
    if (status <= 0)
        return 0;
    mg_upconn_t *u = calloc(1, sizeof(*u));
    if (!u || copy_head(buf, len, spans, n, &u->buf.data, &u->headers) != 0) {
        free(u);
        return MG_FFI_ENOMEM;
    }
    /* each name's token and the Content-Length, as the response parser
     * leaves them (h1_response.c) */
    if (!(u->htok = malloc(n ? n : 1))) {
        free(u->buf.data);
        free(u->headers);
        free(u);
        return MG_FFI_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        u->htok[i] = (uint8_t)mg_hname_lookup(u->buf.data + u->headers[i].name.off,
                                              u->headers[i].name.len);
        if (u->htok[i] == MG_HN_CONTENT_LENGTH) {
            /* its value frames the client's answer (proxy.c) */
            const char *v = u->buf.data + u->headers[i].value.off;
            uint64_t cl = 0;
            for (uint32_t j = 0; j < u->headers[i].value.len && v[j] >= '0' && v[j] <= '9'; j++)
                cl = cl * 10 + (uint64_t)(v[j] - '0');
            u->h1.has_length = 1;
            u->h1.content_length = cl;
        }
    }
    u->nheaders = (uint32_t)n;
    u->buf.len = u->buf.cap = (uint32_t)len;
    u->h1.status = status;
    k->up = r->up = u;
    return 0;
}

/* The kit's TLS: the head builders only ask whether there is one. */
static struct mg_tls_conn_s *kit_tls(const mg_request_t *r)
{
    return ((const kit_req_t *)r)->tls ? (struct mg_tls_conn_s *)(uintptr_t)1 : NULL;
}

static const mg_proto_t kit_proto = { .tls = kit_tls };

/* r's fields from the model (pointers into m's strings: for the call). */
static void apply_model(kit_req_t *k, const mg_ffi_kit_head_t *m)
{
    mg_request_t *r = &k->r;
    /* the method goes as new_method: r->method would be a span into
     * r->data, which here holds the headers only */
    r->new_method = m->new_method ? m->new_method : m->method;
    r->new_method_len = m->new_method ? m->new_method_len : m->method_len;
    r->path = (char *)m->path;
    r->path_len = m->path_len;
    r->query = m->query;
    r->query_len = m->query_len;
    r->new_query = m->new_query;
    r->new_query_len = m->new_query_len;
    r->path_rewritten = m->path_rewritten ? 1 : 0;
    const mg_config_t *cfg = r->g->cfg;
    if (m->route_index >= 0 && (size_t)m->route_index < cfg->nroutes)
        r->route = &cfg->routes[m->route_index];
    else
        r->route = m->match ? &k->route : NULL;
    r->route_rc = m->route_rc;
    if (m->match)
        r->match = *(const mg_route_match_t *)m->match;
    memcpy(r->known, m->known, sizeof(r->known));
    size_t n = m->request_id ? strlen(m->request_id) : 0;
    if (n > MG_REQID_MAX)
        n = MG_REQID_MAX;
    memcpy(r->request_id, m->request_id ? m->request_id : "", n);
    r->request_id[n] = 0;
    r->request_id_len = n;
    r->traced = m->trace_id && m->span_id && m->trace_flags;
    if (r->traced) {
        memcpy(r->trace_id, m->trace_id, sizeof(r->trace_id));
        memcpy(r->span_id, m->span_id, sizeof(r->span_id));
        memcpy(r->trace_flags, m->trace_flags, sizeof(r->trace_flags));
    }
    r->trace_continued = m->trace_continued ? 1 : 0;
    r->head_method = m->head_method ? 1 : 0;
    r->body_buffered = m->body_buffered ? 1 : 0;
    r->has_body = m->has_body ? 1 : 0;
    r->chunked = m->chunked ? 1 : 0;
    r->body_len = m->body_len;
    r->content_length = m->content_length;
    r->is_upgrade = 0; /* the kit has no upgrades */
    snprintf(k->peer.client_ip, sizeof(k->peer.client_ip), "%s",
             m->client_ip ? m->client_ip : "");
    k->peer.local_port = (uint16_t)m->local_port;
    k->peer.listener = (uint16_t)m->listener;
    r->peer = &k->peer;
    r->proto = &kit_proto;
    k->tls = m->tls;
    k->upstream.forwarded = m->forwarded;
    k->upstream.request_id = m->send_request_id;
    k->upstream.override_headers = m->override_headers;
    r->xff_trusted = m->xff_trusted ? 1 : 0;
    r->xff_drop = m->xff_drop ? 1 : 0;
    k->target.name = (char *)(m->target ? m->target : "");
    r->res_status = m->res_status;
    r->res_body_set = m->res_body_set ? 1 : 0;
    r->res_body_len = m->res_body_len;
    r->http_minor = (uint8_t)m->http_minor;
    r->keep_alive = 1; /* the kit has no client connection to close */
}

/* The head builders' and the answers' surroundings, made on first use. */
static int surroundings(kit_req_t *k)
{
    if (k->send)
        return 0;
    k->w = calloc(1, sizeof(*k->w));
    k->send = calloc(1, sizeof(*k->send));
    if (!k->w || !k->send) {
        free(k->w);
        free(k->send);
        k->w = NULL;
        k->send = NULL;
        return -1;
    }
    k->pool.w = k->w;
    k->pool.u = &k->upstream;
    k->pool.t = &k->target;
    k->send->w = k->w;
    k->send->pool = &k->pool;
    k->send->r = &k->r;
    return 0;
}

long mg_kit_request_run(mg_request_t *r, const mg_ffi_kit_head_t *m,
                        long (*fn)(struct mg_upconn_s *u), int res, const char **scratch)
{
    kit_req_t *k = (kit_req_t *)r;
    if (res && !k->up) {
        *scratch = "no upstream answer";
        return -1;
    }
    if (surroundings(k) < 0) {
        *scratch = "out of memory";
        return -1;
    }
    mg_upconn_t *u = k->send;
    if (res) {
        u = k->up;
        u->w = k->w;
        u->pool = &k->pool;
        u->r = r;
    }
    mg_request_t saved = *r; /* the model's fields are the call's only */
    apply_model(k, m);
    long n = fn(u);
    /* what the call made that outlives it: its arena allocations, a
     * compression stream (mg_ffi_kit_compress_body) */
    saved.arena_chunks = r->arena_chunks;
    saved.arena_used = r->arena_used;
    saved.compress = r->compress;
    *r = saved;
    *scratch = k->w->scratch;
    return n;
}

/* The kit's protocol for a gateway-made answer: the HTTP/1 head a client
 * gets (h1_writer.c) into the worker's scratch, then the body bytes that
 * go after it. */
static int kit_start(mg_request_t *r, const mg_resp_t *res)
{
    kit_req_t *k = (kit_req_t *)r;
    mg_worker_t *w = k->w;
    long n = mg_h1w_response_head(r, 0, res, &w->scratch, &w->scratch_cap, &k->frame);
    if (n < 0)
        return -1;
    k->head_len = (size_t)n;
    k->answer_len = n;
    return 0;
}

static int kit_send_body(mg_request_t *r, const uv_buf_t *bufs, unsigned n, int last)
{
    kit_req_t *k = (kit_req_t *)r;
    mg_worker_t *w = k->w;
    for (unsigned i = 0; i < n && !k->frame.no_body && k->answer_len >= 0; i++) {
        size_t need = (size_t)k->answer_len + bufs[i].len;
        if (need > w->scratch_cap) {
            char *p = realloc(w->scratch, need);
            if (!p) {
                k->answer_len = -1;
                return -1;
            }
            w->scratch = p;
            w->scratch_cap = need;
        }
        memcpy(w->scratch + k->answer_len, bufs[i].base, bufs[i].len);
        k->answer_len += (long)bufs[i].len;
    }
    return 0;
}

static void kit_answered(mg_request_t *r) { (void)r; }

/* The response had started (or its head could not be written): the
 * gateway closes the connection. */
static void kit_abort(mg_request_t *r)
{
    ((kit_req_t *)r)->answer_len = -1;
}

static const mg_proto_t kit_answer_proto = { .tls = kit_tls, .start_response = kit_start,
                                             .send_body = kit_send_body,
                                             .answered = kit_answered, .abort = kit_abort };

/* Runs fn(r, arg) on r set from m, with the kit's protocol taking any
 * answer it makes. */
static void run_answering(kit_req_t *k, const mg_ffi_kit_head_t *m,
                          int (*fn)(mg_request_t *r, const void *arg), const void *arg)
{
    mg_request_t *r = &k->r;
    mg_request_t saved = *r;
    apply_model(k, m);
    r->w = k->w;
    r->proto = &kit_answer_proto;
    k->answer_len = -1;
    k->head_len = 0;
    k->path = k->query = NULL;
    if (fn(r, arg) == 0) { /* went on: the target it left */
        k->path = r->path;
        k->path_len = r->path_len;
        k->query = r->query;
        k->query_len = r->query_len;
    }
    *r = saved;
}

typedef struct answer_s {
    int status;
    const char *ctype, *body;
    size_t body_len;
    const mg_hfield_t *extra;
    size_t nextra;
} answer_t;

static int make_answer(mg_request_t *r, const void *arg)
{
    const answer_t *a = arg;
    if (a->ctype)
        mg_request_respond(r, a->status, a->ctype, a->body, a->body_len, a->extra, a->nextra);
    else /* the JSON error answer: body is its message */
        mg_request_respond_error_with(r, a->status, a->body, a->extra, a->nextra);
    return 1;
}

long mg_ffi_kit_respond(mg_request_t *r, const mg_ffi_kit_head_t *m, int status,
                        const char *ctype, const char *body, size_t body_len,
                        const char *const *fields, const size_t *lens, size_t nfields,
                        const char **out, size_t *head_len)
{
    kit_req_t *k = (kit_req_t *)r;
    /* the fields as hooks.c makes them of a Lua answer's list */
    mg_hfield_t *f = calloc(nfields ? nfields : 1, sizeof(*f));
    if (!f || surroundings(k) < 0) {
        free(f);
        *out = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < nfields; i++)
        f[i] = mg_hfield(fields[2 * i], lens[2 * i], fields[2 * i + 1], lens[2 * i + 1],
                         mg_hname_lookup(fields[2 * i], lens[2 * i]));
    answer_t a = { status, ctype, body, body_len, f, nfields };
    run_answering(k, m, make_answer, &a);
    free(f);
    *out = k->answer_len < 0 ? "the response has started" : k->w->scratch;
    *head_len = k->head_len;
    return k->answer_len;
}

static int run_step(mg_request_t *r, const void *arg)
{
    int (*const *step)(mg_request_t *) = arg;
    return (*step)(r);
}

long mg_kit_request_step(mg_request_t *r, const mg_ffi_kit_head_t *m,
                         int (*step)(mg_request_t *r), const char **out, size_t *head_len)
{
    kit_req_t *k = (kit_req_t *)r;
    if (surroundings(k) < 0) {
        *out = "out of memory";
        return -1;
    }
    run_answering(k, m, run_step, &step);
    if (k->path)
        return 0;
    *out = k->answer_len < 0 ? "no answer" : k->w->scratch;
    *head_len = k->head_len;
    return k->answer_len;
}

void mg_ffi_kit_request_target(const mg_request_t *r, const char **path, size_t *path_len,
                               const char **query, size_t *query_len)
{
    const kit_req_t *k = (const kit_req_t *)r;
    *path = k->path ? k->path : "";
    *path_len = k->path ? k->path_len : 0;
    *query = k->query ? k->query : "";
    *query_len = k->query ? k->query_len : 0;
}

int mg_ffi_kit_lb_key(mg_request_t *r, const mg_ffi_kit_head_t *m, const char *on,
                      const char *name, uint64_t *key)
{
    kit_req_t *k = (kit_req_t *)r;
    mg_upstream_t u = { .hash_on = mg_hash_on_parse(on), .hash_name = (char *)name };
    if (u.hash_on < 0 || (!name && (u.hash_on == MG_HASH_HEADER || u.hash_on == MG_HASH_COOKIE ||
                                    u.hash_on == MG_HASH_QUERY)))
        return 0;
    mg_request_t saved = *r; /* the model's fields are the call's only */
    apply_model(k, m);
    int found = mg_lb_key(r, &u, key);
    *r = saved;
    return found;
}
