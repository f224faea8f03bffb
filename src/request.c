/* request.c: the protocol-independent request object (request.h): its
 * life on the worker's free list, its arena, its headers as hooks changed
 * them, its id and trace context, and the gateway's own answers, which it
 * hands to the protocol (r->proto) as a status and fields to frame.
 *
 * Ownership: the worker owns the request structs (free list); a request
 * owns its scratch, header array, arena chunks and body buffer.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "compress.h"
#include "errlog.h"
#include "grpc.h"
#include "header_names.h"
#include "http.h"
#include "logfields.h"
#include "mg_ffi.h"
#include "request.h"
#include "targets.h"
#include "trace.h"
#include "worker.h"

/* ---- the request object ----------------------------------------------- */

/* Gives r room for the limits of generation g (a reload may raise them). */
int mg_request_fit(mg_request_t *r, const mg_limits_t *l)
{
    if (r->headers_cap < l->header_count + 1) {
        mg_header_t *h = realloc(r->headers, sizeof(mg_header_t) * (l->header_count + 1));
        if (!h)
            return -1;
        r->headers = h;
        uint8_t *t = realloc(r->htok, l->header_count + 1);
        if (!t)
            return -1;
        r->htok = t;
        r->headers_cap = (uint32_t)(l->header_count + 1);
    }
    /* normalised path + upstream path + slack; both are bounded by the
     * request line limit */
    size_t need = l->request_line * 3 + 512;
    if (r->scratch_cap < need) {
        char *p = realloc(r->scratch, need);
        if (!p)
            return -1;
        r->scratch = p;
        r->scratch_cap = need;
    }
    return 0;
}

mg_request_t *mg_request_new(mg_worker_t *w)
{
    mg_request_t *r = w->free_requests;
    const mg_limits_t *l = &w->g->cfg->limits;
    if (r) {
        w->free_requests = r->next_free;
    } else {
        r = calloc(1, sizeof(*r));
        if (!r)
            return NULL;
        r->slot = ++w->nrequests;
    }
    if (mg_request_fit(r, l) < 0) {
        r->next_free = w->free_requests;
        w->free_requests = r;
        return NULL;
    }
    mg_header_t *headers = r->headers;
    uint8_t *htok = r->htok;
    uint32_t headers_cap = r->headers_cap;
    char *scratch = r->scratch;
    size_t cap = r->scratch_cap;
    uint32_t slot = r->slot;
    /* the tracing state, the edit arrays and the inline arena after them
     * need no clearing */
    memset(r, 0, offsetof(mg_request_t, tspan));
    r->headers = headers;
    r->htok = htok;
    r->headers_cap = headers_cap;
    r->scratch = scratch;
    r->scratch_cap = cap;
    r->slot = slot;
    r->serial = ++w->request_serial;
    r->g = mg_wgen_hold(w->g);
    r->w = w;
    r->target = -1;
    r->upstream_override = -1;
    r->target_override = -1;
    r->http_major = 1;
    r->http_minor = 1; /* until the request line says otherwise */
    r->state = MG_RS_HEAD;
    r->start_ns = uv_hrtime();
    return r;
}

int mg_request_body_append(mg_request_t *r, const char *p, size_t n)
{
    if (r->body_len + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 16384;
        while (cap < r->body_len + n)
            cap *= 2;
        char *nb = realloc(r->body_buf, cap);
        if (!nb)
            return -1;
        r->body_buf = nb;
        r->body_cap = cap;
    }
    memcpy(r->body_buf + r->body_len, p, n);
    r->body_len += n;
    return 0;
}

void *mg_request_alloc(mg_request_t *r, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (r->arena_used + n <= MG_ARENA_INLINE) {
        void *p = r->arena + r->arena_used;
        r->arena_used += n;
        return p;
    }
    mg_arena_chunk_t *ch = malloc(sizeof(*ch) + n);
    if (!ch)
        return NULL;
    ch->next = r->arena_chunks;
    r->arena_chunks = ch;
    return ch->data;
}

void mg_request_arena_reset(mg_request_t *r)
{
    while (r->arena_chunks) {
        mg_arena_chunk_t *ch = r->arena_chunks;
        r->arena_chunks = ch->next;
        free(ch);
    }
    r->arena_used = 0;
}

const char *const mg_request_dup_reason[MG_H__COUNT] = {
    [MG_H_HOST] = "duplicate Host header",
    [MG_H_REQUEST_ID] = "duplicate X-Request-Id header",
    [MG_H_TRANSFER_ENCODING] = "duplicate Transfer-Encoding header",
    [MG_H_CONTENT_LENGTH] = "duplicate Content-Length header",
    [MG_H_AUTHORIZATION] = "duplicate Authorization header",
    [MG_H_PROXY_AUTHORIZATION] = "duplicate Proxy-Authorization header",
    [MG_H_CONTENT_TYPE] = "duplicate Content-Type header",
};

/* ---- headers as hooks see them ------------------------------------------ */

int mg_edits_header(const mg_edit_t *edits, int nedits, const mg_header_t *orig, uint32_t norig,
                    const char *data, const char *name, size_t nlen, int nth, const char **p,
                    size_t *len)
{
    int from = 0; /* first edit that still counts */
    int replaced = 0;
    for (int e = nedits - 1; e >= 0; e--) {
        const mg_edit_t *ed = &edits[e];
        if (ed->op != MG_EDIT_ADD && ed->name_len == nlen &&
            strncasecmp(ed->name, name, nlen) == 0) {
            replaced = 1;
            from = e;
            break;
        }
    }
    if (replaced) {
        if (edits[from].op == MG_EDIT_SET && nth-- == 0) {
            *p = edits[from].value;
            *len = edits[from].value_len;
            return 1;
        }
        from++;
    } else {
        for (uint32_t i = 0; orig && i < norig; i++) {
            mg_span_t n = orig[i].name;
            if (n.len == nlen && strncasecmp(data + n.off, name, nlen) == 0 && nth-- == 0) {
                *p = data + orig[i].value.off;
                *len = orig[i].value.len;
                return 1;
            }
        }
    }
    for (int e = from; e < nedits; e++) {
        const mg_edit_t *ed = &edits[e];
        if (ed->op == MG_EDIT_ADD && ed->name_len == nlen &&
            strncasecmp(ed->name, name, nlen) == 0 && nth-- == 0) {
            *p = ed->value;
            *len = ed->value_len;
            return 1;
        }
    }
    return 0;
}

int mg_request_header(const mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len)
{
    return mg_edits_header(r->req_edits, r->nreq_edits, r->headers, r->nheaders, *r->data, name,
                           nlen, nth, p, len);
}


int mg_request_upstream(const mg_request_t *r)
{
    if (r->upstream_override >= 0)
        return r->upstream_override;
    if (r->split_upstream)
        return r->split_upstream - 1;
    return r->route ? r->route->upstream : -1;
}

/* ---- request id and trace context ---------------------------------------- */

/* A client's X-Request-Id is kept only if it is short and plain (it goes
 * into logs and headers). Also the testing kit's check (mg_ffi.h). */
int mg_ffi_request_id_check(const char *s, size_t n)
{
    if (n == 0 || n > MG_REQID_MAX)
        return MG_FFI_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return MG_FFI_EINVAL;
    }
    return 0;
}

/* Continues the client's trace or starts one; the gateway's span is new. */
static void assign_trace(mg_request_t *r)
{
    mg_worker_t *w = r->w;
    r->traced = 1;
    if (r->known[MG_H_TRACEPARENT] && !r->trace_bad) {
        mg_span_t v = r->headers[r->known[MG_H_TRACEPARENT] - 1].value;
        r->trace_continued = mg_trace_parse(mg_request_data(r, v), v.len, r->trace_id,
                                            r->tspan.parent_id, r->trace_flags) == 0;
    }
    if (!r->trace_continued) {
        mg_trace_random_hex(&w->trace_rng, r->trace_id, sizeof(r->trace_id));
        memcpy(r->trace_flags, "01", 2); /* a new trace is recorded (sampled) */
    }
    mg_trace_random_hex(&w->trace_rng, r->span_id, sizeof(r->span_id));
    if (r->g->cfg->tracing) /* spans leave: the sampler decides the flag */
        mg_tracing_sample(r);
}

void mg_request_assign_id(mg_request_t *r)
{
    if (!r->traced)
        assign_trace(r);
    if (r->known[MG_H_REQUEST_ID]) {
        mg_span_t v = r->headers[r->known[MG_H_REQUEST_ID] - 1].value;
        if (mg_ffi_request_id_check(mg_request_data(r, v), v.len) == 0) {
            memcpy(r->request_id, mg_request_data(r, v), v.len);
            r->request_id_len = v.len;
            r->request_id[v.len] = 0;
            return;
        }
    }
    mg_worker_t *w = r->w;
    memcpy(r->request_id, w->reqid_prefix, 12);
    mg_hex16(++w->reqid_counter, r->request_id + 12);
    r->request_id_len = 28;
    r->request_id[28] = 0;
}

/* ---- the access log's res.header fields ----------------------------------- */

void mg_request_log_capture(mg_request_t *r, const mg_resp_t *res)
{
    const mg_logformat_t *fmt = r->g->cfg->log_format;
    if (!fmt || !fmt->nres)
        return;
    if (!r->log_res && !(r->log_res = mg_request_alloc(r, fmt->nres * sizeof(mg_logcap_t))))
        return;
    for (size_t k = 0; k < fmt->nres; k++) {
        const mg_logfield_t *f = fmt->res[k];
        mg_logcap_t *c = &r->log_res[k];
        size_t total = 0, nvals = 0;
        *c = (mg_logcap_t){ 0 };
        for (size_t i = 0; i < res->nheaders; i++) {
            const mg_hfield_t *h = &res->headers[i];
            if (h->name_len == f->arg_len && strncasecmp(h->name, f->arg, f->arg_len) == 0)
                total += h->value_len + (nvals++ ? 2 : 0);
        }
        if (!nvals)
            continue;
        size_t keep = total < MG_LOG_VALUE_MAX ? total : MG_LOG_VALUE_MAX;
        char *p = mg_request_alloc(r, keep ? keep : 1);
        if (!p)
            continue;
        size_t at = 0;
        for (size_t i = 0, seen = 0; i < res->nheaders && at < keep; i++) {
            const mg_hfield_t *h = &res->headers[i];
            if (h->name_len != f->arg_len || strncasecmp(h->name, f->arg, f->arg_len) != 0)
                continue;
            if (seen++) {
                size_t n = keep - at < 2 ? keep - at : 2;
                memcpy(p + at, ", ", n);
                at += n;
            }
            size_t n = keep - at < h->value_len ? keep - at : h->value_len;
            memcpy(p + at, h->value, n);
            at += n;
        }
        *c = (mg_logcap_t){ .p = p, .len = (uint32_t)at, .cut = total > keep };
    }
}

/* ---- the gateway's own answers ------------------------------------------ */

int mg_request_send_whole(mg_request_t *r, const mg_resp_t *res, const char *body,
                          size_t body_len)
{
    mg_resp_t coded;
    /* moongate.compression (a cached answer: the cache keeps the identity) */
    if (r->compress_conf)
        res = mg_compress_head(r, res, &coded);
    mg_request_log_capture(r, res); /* as the client gets it */
    if (r->proto->start_response(r, res) < 0)
        return -1;
    uv_buf_t b = uv_buf_init((char *)body, (unsigned)body_len);
    if ((r->compress ? mg_compress_send(r, &b, body_len ? 1 : 0, 1)
                     : r->proto->send_body(r, &b, body_len ? 1 : 0, 1)) < 0)
        return 0; /* the connection closed: r ended */
    r->proto->answered(r);
    return 0;
}

#define RESPOND_FIELDS 16 /* on the stack; more come from the arena */

static void respond(mg_request_t *r, int status, const char *ctype, const char *body,
                    size_t body_len, const mg_hfield_t *extra, size_t nextra);

size_t mg_request_answer(const mg_request_t *r, int status, const char *ctype, size_t body_len,
                         const mg_hfield_t *extra, size_t nextra, mg_hfield_t *f, mg_resp_t *res)
{
    /* 204 and 304 have no body, so no Content-Type either (a 304 keeps the
     * validators a hook gave in `extra`) */
    int has_body = mg_status_has_body(status);
    size_t n = 0;
    if (has_body)
        f[n++] = mg_hfield("Content-Type", 12, ctype, strlen(ctype), MG_HN_CONTENT_TYPE);
    f[n++] = mg_hfield("X-Request-Id", 12, r->request_id, r->request_id_len, MG_HN_X_REQUEST_ID);
    for (size_t i = 0; i < nextra; i++)
        f[n++] = extra[i];
    if (!has_body)
        body_len = 0;
    *res = (mg_resp_t){ .status = status, .headers = f, .nheaders = n, .body_len = body_len };
    return body_len;
}

int mg_request_grpc(const mg_request_t *r)
{
    if (!r->known[MG_H_CONTENT_TYPE])
        return 0;
    mg_span_t v = r->headers[r->known[MG_H_CONTENT_TYPE] - 1].value;
    return mg_grpc_content_type(mg_request_data(r, v), v.len);
}

/* A gateway-made answer to a gRPC request is a gRPC answer: 200 and no
 * body, grpc-status (grpc.c's one table) and grpc-message in the head
 * (HTTP/2 sends that as trailers-only), the answer's extra fields
 * (WWW-Authenticate, Retry-After, ...) kept. */
static void respond_grpc(mg_request_t *r, int status, const char *message,
                         const mg_hfield_t *extra, size_t nextra)
{
    char code[4], msg[256];
    int code_len = snprintf(code, sizeof(code), "%d", mg_grpc_status_of_http(status));
    if (!message)
        message = mg_status_text(status);
    size_t msg_len = mg_grpc_message_encode(message, strlen(message), msg, sizeof(msg));
    mg_hfield_t local[RESPOND_FIELDS], *f = local;
    size_t n = nextra + 2;
    if (n > RESPOND_FIELDS && !(f = mg_request_alloc(r, n * sizeof(*f)))) {
        f = local; /* out of memory: the answer goes without its extras */
        n = 2;
    }
    f[0] = mg_hfield("grpc-status", 11, code, (size_t)code_len, MG_HN_OTHER);
    f[1] = mg_hfield("grpc-message", 12, msg, msg_len, MG_HN_OTHER);
    for (size_t i = 2; i < n; i++)
        f[i] = extra[i - 2];
    respond(r, 200, "application/grpc", "", 0, f, n);
}

void mg_request_respond(mg_request_t *r, int status, const char *ctype, const char *body,
                        size_t body_len, const mg_hfield_t *extra, size_t nextra)
{
    if (status >= 300 && status <= 599 && !r->response_started && mg_request_grpc(r)) {
        respond_grpc(r, status, NULL, extra, nextra);
        return;
    }
    respond(r, status, ctype, body, body_len, extra, nextra);
}

static void respond(mg_request_t *r, int status, const char *ctype, const char *body,
                    size_t body_len, const mg_hfield_t *extra, size_t nextra)
{
    mg_worker_t *w = r->w;
    if (r->response_started) {
        r->proto->abort(r);
        return;
    }
    if (status < 200 || status > 599) {
        /* an interim answer would leave the request unanswered (and a 101
         * the connection in limbo): the 1xx the gateway sends are its own
         * (100-continue, a proxied 101). gw.respond and handlers refuse
         * them first with the hook's file:line; this is the last guard. */
        mg_log(MG_LOG_ERROR, "worker %d: request %s: gateway-made answer with status %d "
                             "refused (only 200-599)", w->id, r->request_id, status);
        mg_request_respond_error(r, 500, "invalid answer status");
        return;
    }
    if (status == 400 || status == 408)
        r->response_close = 1;
    /* an upgrade we do not tunnel: the parser stopped at its end, and the
     * client may already be speaking the protocol it asked for */
    if (r->is_upgrade)
        r->response_close = 1;
    /* A body we stopped streaming would be taken for the next request. */
    if (r->has_body && (r->state == MG_RS_HEAD || r->state == MG_RS_BODY ||
                        (r->state == MG_RS_UPSTREAM && r->up)))
        r->response_close = 1;
    mg_hfield_t local[RESPOND_FIELDS], *f = local;
    if (nextra + 2 > RESPOND_FIELDS && !(f = mg_request_alloc(r, (nextra + 2) * sizeof(*f)))) {
        r->response_close = 1;
        f = local; /* out of memory: the answer goes without its extras */
        nextra = 0;
    }
    mg_resp_t res;
    body_len = mg_request_answer(r, status, ctype, body_len, extra, nextra, f, &res);
    if (mg_request_send_whole(r, &res, body, body_len) < 0)
        r->proto->abort(r); /* a head too large to send */
}

/* The gateway's own JSON error answer, with extra fields (may be NULL). */
void mg_request_respond_error_with(mg_request_t *r, int status, const char *message,
                                   const mg_hfield_t *extra, size_t nextra)
{
    if (r->request_id_len == 0)
        mg_request_assign_id(r);
    if (status >= 300 && status <= 599 && !r->response_started && mg_request_grpc(r)) {
        respond_grpc(r, status, message, extra, nextra);
        return;
    }
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":%d,\"request_id\":\"%s\"}\n",
                     message, status, r->request_id);
    mg_request_respond(r, status, "application/json", body, (size_t)n, extra, nextra);
}

void mg_request_respond_error(mg_request_t *r, int status, const char *message)
{
    mg_request_respond_error_with(r, status, message, NULL, 0);
}

const mg_target_t *mg_request_target_of(const mg_request_t *r, int ui, int ti)
{
    if (!r->g->gen) /* the testing kit: the declared targets */
        return &r->g->cfg->upstreams[ui].targets[ti];
    return &r->g->gen->tsets[ui].slot[ti].t;
}

const char *mg_request_target_name(const mg_request_t *r)
{
    int ui = mg_request_upstream(r);
    if (ui < 0 || r->target < 0)
        return "-";
    const char *n = mg_request_target_of(r, ui, r->target)->name;
    return n ? n : "-";
}
