/* kit_request.c: a request built in memory for the testing kit
 * (lua/moongate/testing/fake.lua), so that the kit's request object runs
 * the gateway's own header reads, edit lists and phase checks
 * (ffi_request.c, request.c) instead of a Lua copy of them.
 *
 * The kit keeps its model of the request (routing, the upstream's answer,
 * the clock, ids) in Lua and hands this request what those functions read:
 * the received headers, the hook phase, whether the response started and
 * the upstream's answer head. Nothing here parses: the headers come as
 * (offset, length) spans into bytes the kit passes, as the protocol's
 * parser would leave them.
 *
 * The head of an answer the gateway makes (mg_ffi_kit_answer_head) is
 * request.c's answer written by h1_writer.c, as the gateway sends it.
 * For the head the upstream gets and the client's head of a proxied
 * answer (proxy.c mg_ffi_kit_upstream_head, mg_ffi_kit_response_head) the
 * request also owns what proxy.c's head builders read besides it: a
 * worker (only its scratch is used), a pool with the upstream's options
 * and target, the peer and a protocol telling TLS; mg_kit_request_run sets
 * them and r's fields from the kit's model for one call and puts r back.
 *
 * Ownership: mg_ffi_kit_request_new returns a request that owns copies of
 * everything passed in (its buffer, header array, arena chunks and
 * upstream answer); mg_ffi_kit_request_free frees it all. Not used by the
 * gateway itself.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "request.h"
#include "upstream.h"
#include "worker.h"
#include "router.h"
#include "header_names.h"
#include "h1_writer.h"
#include "mg_ffi.h"

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
    mg_route_t route; /* r->route when the model has a match: only its
                         presence is read */
    int tls;
} kit_req_t;

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

mg_request_t *mg_ffi_kit_request_new(const char *buf, size_t len, const uint32_t *spans, size_t n)
{
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
    k->r.data = &k->buf;
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
    mg_request_arena_reset(r);
    free(r->headers);
    free(r->htok);
    free(k->buf);
    free(k);
}

void mg_ffi_kit_request_state(mg_request_t *r, int phase, int response_started)
{
    r->hook_phase = (uint8_t)phase;
    r->response_started = response_started ? 1 : 0;
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
    r->route = m->match ? &k->route : NULL;
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
    r->peer = &k->peer;
    r->proto = &kit_proto;
    k->tls = m->tls;
    k->upstream.forwarded = m->forwarded;
    k->upstream.request_id = m->send_request_id;
    k->upstream.override_headers = m->override_headers;
    k->target.name = (char *)(m->target ? m->target : "");
    r->res_status = m->res_status;
    r->res_body_set = m->res_body_set ? 1 : 0;
    r->res_body_len = m->res_body_len;
    r->http_minor = (uint8_t)m->http_minor;
    r->keep_alive = 1; /* the kit has no client connection to close */
}

/* Makes the head builders' surroundings on first use; 0 or -1. */
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
    *r = saved;
    *scratch = k->w->scratch;
    return n;
}

long mg_ffi_kit_answer_head(mg_request_t *r, int status, const char *ctype, size_t body_len,
                            const char *const *kv, const size_t *kv_len, size_t n,
                            const char *request_id, int http_minor, int head_method,
                            const char **out)
{
    kit_req_t *k = (kit_req_t *)r;
    mg_hfield_t *extra = malloc((n ? n : 1) * sizeof(*extra)), *f = malloc((n + 2) * sizeof(*f));
    if (!extra || !f || surroundings(k) < 0) {
        free(extra);
        free(f);
        *out = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        extra[i] = mg_hfield(kv[2 * i], kv_len[2 * i], kv[2 * i + 1], kv_len[2 * i + 1],
                             mg_hname_lookup(kv[2 * i], kv_len[2 * i]));
    mg_request_t saved = *r; /* the model's fields are the call's only */
    size_t idl = request_id ? strlen(request_id) : 0;
    if (idl > MG_REQID_MAX)
        idl = MG_REQID_MAX;
    memcpy(r->request_id, request_id ? request_id : "", idl);
    r->request_id[idl] = 0;
    r->request_id_len = idl;
    r->http_minor = (uint8_t)http_minor;
    r->head_method = head_method ? 1 : 0;
    r->keep_alive = 1; /* the kit has no client connection to close */
    r->response_close = 0;
    r->is_upgrade = 0;
    mg_resp_t res;
    mg_h1w_frame_t fr;
    mg_request_answer(r, status, ctype, body_len, extra, n, f, &res);
    long len = mg_h1w_response_head(r, 0, &res, &k->w->scratch, &k->w->scratch_cap, &fr);
    *r = saved;
    free(extra);
    free(f);
    *out = len < 0 ? "response head too large" : k->w->scratch;
    return len;
}
