/* proxy.c: the upstream side of a proxied request.
 *
 * mg_proxy_start() picks a target, takes a pooled keep-alive connection or
 * opens one, writes the rewritten request head, and lets the protocol stream
 * the body. The response is parsed by h1_response.c; its head becomes the
 * client's response (response.h: a status, the end-to-end fields by their
 * tokens, header_names.h, hook changes applied, the body's length) that the
 * client's protocol frames (mg_proto_t.start_response), and its unframed
 * body goes on as it arrives (send_body), with back-pressure both ways.
 * Nothing here writes the client's wire format. A finished connection goes
 * back to its pool when it is safe to reuse, else it is closed.
 *
 * Ownership: an upstream connection belongs to the request using it
 * (r->up, u->r) or to its pool while idle; it is freed in its close
 * callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "compress.h"
#include "http.h"
#include "pipeline.h"
#include "upstream.h"
#include "h1_response.h"
#include "h1_writer.h"
#include "header_names.h"
#include "hooks.h"
#include "errlog.h"
#include "upgrade.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "outlier.h"
#include "retry.h"
#include "h2_upstream.h"
#include "grpc.h"
#include "targets.h"


static void up_close(mg_upconn_t *u);
static void up_parse(mg_upconn_t *u);
static void up_start_reading(mg_upconn_t *u);
static void up_failed(mg_upconn_t *u, int status, const char *why, int retryable, unsigned on,
                      int err);
static void target_failed(mg_upconn_t *u, int max_fails);
static void retry_later(mg_request_t *r);
static void log_retry(const mg_request_t *r, const char *why, int err);
static void send_head(mg_upconn_t *u);

/* ---- deadlines (same lazy scheme as the client side) ------------------- */

static void on_up_timer(uv_timer_t *t);

/* ms, or less: never past the request's deadline (route timeouts.total) */
static __attribute__((noinline)) uint64_t deadline_clamp(const mg_upconn_t *u, uint64_t now,
                                                         uint64_t ms)
{
    uint64_t left = mg_retry_left(u->r, now);
    return ms < left ? ms : left;
}

/* u's timer fires ms after now (lazily: a later deadline only is noted) */
static inline void up_arm(mg_upconn_t *u, uint64_t now, uint64_t ms)
{
    u->deadline = now + ms;
    if (!u->timer_armed || u->deadline < u->timer_expiry) {
        uv_timer_start(&u->timer, on_up_timer, ms, 0);
        u->timer_armed = 1;
        u->timer_expiry = u->deadline;
    }
}

static inline void up_deadline(mg_upconn_t *u, uint64_t ms)
{
    uint64_t now = uv_now(&u->w->loop);
    if (u->r && u->r->retry)
        ms = deadline_clamp(u, now, ms);
    up_arm(u, now, ms);
}

/* The timeouts of u's request: its route's (route.timeouts), else its
 * upstream's; the first byte's wait also at most retries.per_try_timeout.
 * (A route with timeouts has a retry state on its requests: without one,
 * the upstream's own apply, at no cost.) */
enum { WAIT_CONNECT, WAIT_FIRST_BYTE, WAIT_IDLE, WAIT_SEND };
static uint64_t route_timeout(const mg_upconn_t *u, int which)
{
    const mg_route_t *rt = u->r->route;
    const mg_upstream_t *up = u->pool->u;
    uint64_t ms = which == WAIT_SEND ? up->send_timeout
                  : which == WAIT_CONNECT
                      ? (rt && rt->timeouts.connect ? rt->timeouts.connect : up->connect_timeout)
                  : which == WAIT_FIRST_BYTE
                      ? (rt && rt->timeouts.first_byte ? rt->timeouts.first_byte : up->read_timeout)
                      : (rt && rt->timeouts.idle ? rt->timeouts.idle : up->read_timeout);
    const mg_retry_policy_t *pol = u->r->retry->pol;
    if (which == WAIT_FIRST_BYTE && pol && pol->per_try_timeout && pol->per_try_timeout < ms)
        ms = pol->per_try_timeout;
    return ms;
}

/* u's request (there is one) waits to connect, for the upstream to take
 * what was written, for the first byte of the answer or between two reads
 * of it. */
static __attribute__((noinline)) void up_wait_routed(mg_upconn_t *u, uint64_t now, int which)
{
    up_arm(u, now, deadline_clamp(u, now, route_timeout(u, which)));
}

static inline void up_wait(mg_upconn_t *u, int which)
{
    uint64_t now = uv_now(&u->w->loop);
    if (__builtin_expect(u->r->retry != NULL, 0))
        up_wait_routed(u, now, which);
    else
        up_arm(u, now, which == WAIT_CONNECT ? u->pool->u->connect_timeout
                       : which == WAIT_SEND  ? u->pool->u->send_timeout
                                             : u->pool->u->read_timeout);
}

static void on_up_timer(uv_timer_t *t)
{
    mg_upconn_t *u = mg_container_of(t, mg_upconn_t, timer);
    uint64_t now = uv_now(&u->w->loop);
    u->timer_armed = 0;
    if (u->closing)
        return;
    if (now < u->deadline) {
        uv_timer_start(&u->timer, on_up_timer, u->deadline - now, 0);
        u->timer_armed = 1;
        u->timer_expiry = u->deadline;
        return;
    }
    if (u->client)
        return; /* a gw.http operation times itself */
    if (!u->r) {
        up_close(u); /* idle too long in the pool */
        return;
    }
    if (u->tunnel) {
        u->r->proto->abort(u->r);
        return;
    }
    if (u->r->retry && mg_retry_left(u->r, now) == 0) {
        up_failed(u, 504, "request deadline passed (route timeouts.total)", 0, 0, 0);
        return;
    }
    if (!u->got_response_bytes)
        target_failed(u, 1); /* no answer at all: counts for max_fails */
    if (!u->connected)
        up_failed(u, 504, u->tls ? "upstream TLS handshake timed out" : "upstream connect timed out",
                  0, MG_RETRY_ON_CONNECT, 0);
    else if (!u->got_response_bytes)
        up_failed(u, 504, "upstream timed out before the first byte", 0, MG_RETRY_ON_TIMEOUT, 0);
    else
        up_failed(u, 504, "upstream timed out between reads (idle)", 0, 0, 0);
}

/* ---- response parsing --------------------------------------------------- */

static const char *up_data(mg_upconn_t *u, mg_span_t s) { return u->buf.data + s.off; }

/* Body bytes gathered while one read is parsed, handed to the protocol in
 * one send_body after it (with the head a start_response left waiting for
 * it): head and body leave in one write. The bytes stay in u->buf, the
 * hooks' arena or the cache until then. */
#define OUT_MAX 24
typedef struct {
    uv_buf_t iov[OUT_MAX];
    unsigned n;
    uint8_t head; /* a head waits for the next send_body */
    uint8_t last; /* the body is complete */
} out_t;
static _Thread_local out_t *cur_out;

static void out_flush(mg_upconn_t *u)
{
    out_t *o = cur_out;
    if (!o || !u->r || (o->n == 0 && !o->head && !o->last))
        return;
    unsigned n = o->n;
    int last = o->last;
    o->n = o->head = o->last = 0;
    if (u->r->compress)
        mg_compress_send(u->r, o->iov, n, last);
    else
        u->r->proto->send_body(u->r, o->iov, n, last);
}

static void out_add(mg_upconn_t *u, const char *p, size_t len)
{
    out_t *o = cur_out;
    if (o->n == OUT_MAX)
        out_flush(u);
    o->iov[o->n++] = uv_buf_init((char *)p, (unsigned)len);
}

#define OUT_INIT(o) (o).n = (o).head = (o).last = 0 /* not zeroed whole: large */

/* What a Connection value names beyond itself: bit 1 a token other than
 * keep-alive and close (then each header must be looked up in it), bit 2
 * "close" (a header of that name goes too). Nearly every message says only
 * keep-alive or close: one pass, not one per header. */
enum { CONN_LISTS_OTHERS = 1, CONN_LISTS_CLOSE = 2 };
static int connection_lists(const char *v, size_t vl)
{
    int lists = 0;
    const char *t;
    size_t at = 0, l;
    if (vl == 10 && mg_hname_is(v, vl, MG_HN_KEEP_ALIVE))
        return 0; /* nearly every answer */
    while (mg_token_next(v, vl, &at, &t, &l)) {
        if (l == 5 && strncasecmp(t, "close", 5) == 0)
            lists |= CONN_LISTS_CLOSE;
        else if (!(l == 10 && strncasecmp(t, "keep-alive", 10) == 0))
            lists |= CONN_LISTS_OTHERS;
    }
    return lists;
}

/* Is `name` named in one of the response's Connection headers? */
static int listed_in_connection(mg_upconn_t *u, mg_span_t name)
{
    for (uint32_t i = 0; i < u->nheaders; i++)
        if (u->htok[i] == MG_HN_CONNECTION &&
            mg_token_listed(up_data(u, u->headers[i].value), u->headers[i].value.len,
                            up_data(u, name), name.len))
            return 1;
    return 0;
}

/* connection_lists() over all of the response's Connection headers. */
static int response_connection_lists(mg_upconn_t *u)
{
    int lists = 0;
    for (uint32_t i = 0; i < u->nheaders; i++)
        if (u->htok[i] == MG_HN_CONNECTION)
            lists |= connection_lists(up_data(u, u->headers[i].value), u->headers[i].value.len);
    return lists;
}

/* Is response header i hop-by-hop, by its name or because a Connection
 * header (summed up in `lists`) names it? An accepted 101 keeps Upgrade. */
static int response_hop(mg_upconn_t *u, uint32_t i, int lists, int upgrade)
{
    int tok = u->htok[i];
    if (tok == MG_HN_UPGRADE && upgrade)
        return 0;
    return (mg_hname_flags(tok) & MG_HNF_HOP) ||
           ((lists & CONN_LISTS_CLOSE) && tok == MG_HN_CLOSE) ||
           ((lists & CONN_LISTS_OTHERS) && listed_in_connection(u, u->headers[i].name));
}

int mg_upconn_header_forwarded(mg_upconn_t *u, uint32_t i)
{
    if (mg_hname_flags(u->htok[i]) & MG_HNF_HOP)
        return 0;
    for (uint32_t j = 0; j < u->nheaders; j++)
        if (u->htok[j] == MG_HN_CONNECTION)
            return !listed_in_connection(u, u->headers[i].name);
    return 1;
}

/* ---- the request head writer ----------------------------------------------
 * The upstream's request head is written into the worker's scratch, each
 * piece after it reserved its exact length: the scratch grows when a head
 * needs more than it holds (rarely: it starts at header_size + 3 request
 * lines + 64k), so no estimate can be wrong. Nothing else points into the
 * scratch while a head is built; it is handed on (mg_wq_write copies what
 * it cannot send) only once complete. */
#define HEAD_MAX (4u << 20) /* no upstream takes a larger head */

typedef struct {
    mg_worker_t *w;
    size_t len;
    int failed; /* a head beyond HEAD_MAX, or out of memory */
} head_t;

/* Makes room for n more bytes; returns 0, or -1 (h->failed). */
static __attribute__((noinline)) int head_grow(head_t *h, size_t n)
{
    mg_worker_t *w = h->w;
    size_t need = h->len + n;
    size_t cap = w->scratch_cap * 2 > need ? w->scratch_cap * 2 : need;
    char *p = need <= HEAD_MAX ? realloc(w->scratch, cap) : NULL;
    if (!p) {
        h->failed = 1;
        return -1;
    }
    w->scratch = p;
    w->scratch_cap = cap;
    return 0;
}

/* Where n more bytes go (then h->len += n), or NULL when they cannot. */
static inline char *head_room(head_t *h, size_t n)
{
    if (h->len + n > h->w->scratch_cap && (h->failed || head_grow(h, n) < 0))
        return NULL;
    return h->w->scratch + h->len;
}

static inline void head_put(head_t *h, const char *s, size_t n)
{
    char *o = head_room(h, n);
    if (o) {
        memcpy(o, s, n);
        h->len += n;
    }
}
#define HEAD_PUTS(h, lit) head_put((h), (lit), sizeof(lit) - 1)

static inline void head_header(head_t *h, const char *n, size_t nl, const char *v, size_t vl)
{
    char *o = head_room(h, nl + vl + 4);
    if (o)
        h->len = (size_t)(mg_put_header(o, n, nl, v, vl) - h->w->scratch);
}

static void head_number(head_t *h, const char *name_colon_sp, unsigned long long v)
{
    char num[24];
    int k = snprintf(num, sizeof(num), "%llu", v);
    head_put(h, name_colon_sp, strlen(name_colon_sp));
    head_put(h, num, (size_t)k);
    HEAD_PUTS(h, "\r\n");
}

/* A hook's SET and ADD edits, in their order. */
static void head_edits(head_t *h, const mg_edit_t *edits, int n)
{
    for (int i = 0; i < n; i++)
        if (edits[i].op != MG_EDIT_REMOVE)
            head_header(h, edits[i].name, edits[i].name_len, edits[i].value, edits[i].value_len);
}

/* ---- the client's response ----------------------------------------------
 * The upstream's head and the hooks' changes become a status, a field list
 * and the body's length (response.h); the protocol frames them. */

/* What follows the head the client gets. */
typedef struct {
    int upgrade;  /* a 101: a tunnel */
    int no_body;  /* the upstream sends no body (HEAD, 1xx, 204, 304) */
    int replaced; /* the client gets the hooks' body (or none), and the
                     upstream's is read and dropped */
} resp_frame_t;

/* Room for the fields of a response head: the upstream's, the hooks'
 * edits, Cache-Status and X-Request-Id. */
#define RESP_FIELDS (MG_UP_MAX_HEADERS + MG_MAX_EDITS + 2)

/* The client's response from u's head and the hooks' changes, for the
 * gateway (emit_head) and the testing kit alike: res's fields go to
 * fields (RESP_FIELDS), the Cache-Status value to line (96 bytes). */
static void response_head(mg_upconn_t *u, mg_resp_t *res, mg_hfield_t *fields, char *line,
                          resp_frame_t *f)
{
    mg_request_t *r = u->r;
    int status = u->h1.status;
    f->upgrade = status == 101;
    f->no_body = r->head_method || !mg_status_has_body(status) || f->upgrade;
    /* A hook's status frames what the client gets: a 204 or 304 made of a
     * 200 sends no body (the upstream's is read and dropped); a 200 made
     * of a 204 or 304 has an empty one. */
    int own = r->res_status && !f->upgrade;
    int out_status = own ? r->res_status : status;
    int out_no_body = !f->upgrade && !mg_status_has_body(out_status);
    f->replaced = (r->res_body_set || (out_no_body && !f->no_body)) && !f->upgrade;
    res->status = out_status;
    res->reason = own || u->h2s ? NULL : up_data(u, u->status_text); /* HTTP/2 has none */
    res->reason_len = own ? 0 : u->status_text.len;
    if (f->replaced)
        res->body_len = r->res_body_set ? r->res_body_len : 0;
    else if (f->no_body && !f->upgrade && !r->head_method)
        res->body_len = 0;
    else if (u->h1.has_length)
        res->body_len = u->h1.content_length; /* a HEAD's too: the GET's length */
    else
        res->body_len = MG_BODY_UNKNOWN;
    /* the upstream's end-to-end fields the hooks did not replace (its
     * framing is the protocol's), the hooks' SET and ADD edits in their
     * order, then the gateway's own */
    size_t n = 0;
    int lists = response_connection_lists(u);
    const char *b = u->buf.data;
    int unfolded = !u->h1.folded;
    for (uint32_t i = 0; i < u->nheaders; i++) {
        mg_span_t hn = u->headers[i].name, hv = u->headers[i].value;
        int tok = u->htok[i];
        /* (a name the table does not know, when Connection lists nothing
         * else, is end-to-end: most of them) */
        if (((tok || lists) &&
             (response_hop(u, i, lists, f->upgrade) || (mg_hname_flags(tok) & MG_HNF_RES_DROP) ||
              tok == MG_HN_CONTENT_LENGTH)) ||
            (r->nres_edits &&
             mg_edits_replace(r->res_edits, r->nres_edits, tok, b + hn.off, hn.len)))
            continue;
        mg_hfield_t *fd = &fields[n++];
        fd->name = b + hn.off;
        fd->value = b + hv.off;
        fd->name_len = hn.len;
        fd->value_len = hv.len;
        fd->tok = (uint8_t)tok;
        /* still "Name: value\r\n" as the upstream wrote it (not another
         * separator, trailing blanks, or a head with folds: the buffer was
         * rewritten)? Then an HTTP/1 client gets it copied as it is. (The
         * parser saw ':' after the name, '\n' after every CR.) */
        fd->line = unfolded && hv.off == hn.off + hn.len + 2 && b[hn.off + hn.len + 1] == ' ' &&
                   b[hv.off + hv.len] == '\r';
    }
    for (int i = 0; i < r->nres_edits; i++) {
        const mg_edit_t *e = &r->res_edits[i];
        if (e->op != MG_EDIT_REMOVE)
            fields[n++] = mg_hfield(e->name, e->name_len, e->value, e->value_len, e->tok);
    }
    size_t cl = mg_cache_state(r) ? mg_cache_status_value(r, line, 96) : 0;
    if (cl)
        fields[n++] = mg_hfield("Cache-Status", 12, line, cl, MG_HN_OTHER);
    fields[n++] = mg_hfield("X-Request-Id", 12, r->request_id, r->request_id_len,
                            MG_HN_X_REQUEST_ID);
    res->headers = fields;
    res->nheaders = n;
}

/* Hands the client's response head to the protocol; the hooks' body (if
 * any) follows it. Returns 0, 1 (no body follows), 2 (upgrade) or -1. */
static int emit_head(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    mg_hfield_t fields[RESP_FIELDS];
    char line[96];
    mg_resp_t res, coded;
    resp_frame_t f;
    response_head(u, &res, fields, line, &f);
    /* moongate.compression: the head of the answer it compresses */
    const mg_resp_t *out = r->compress_conf && !f.upgrade ? mg_compress_head(r, &res, &coded) : &res;
    mg_request_log_capture(r, out); /* as the client gets it */
    if (r->proto->start_response(r, out) < 0)
        return -1; /* response head beyond what the protocol takes */
    cur_out->head = 1;
    if (f.replaced) {
        if (r->res_body_set && r->res_body_len)
            out_add(u, r->res_body, r->res_body_len); /* not sent for HEAD, 204, 304 */
        r->res_dropping = 1; /* the upstream's own body is read and dropped */
    }
    if (f.upgrade) {
        out_flush(u);
        u->tunnel = 1;
        return 2;
    }
    return f.no_body ? 1 : 0;
}

/* A 101 opens a tunnel only for an upgrade request (one the core kept,
 * upgrade.h), to a protocol it offered. */
static int upgrade_accepted(mg_upconn_t *u)
{
    const mg_request_t *r = u->r;
    int seen = 0;
    if (!r->is_upgrade)
        return 0;
    for (uint32_t i = 0; i < u->nheaders; i++) {
        if (u->htok[i] != MG_HN_UPGRADE)
            continue;
        if (seen++ || !mg_upgrade_accepted(r, up_data(u, u->headers[i].value),
                                           u->headers[i].value.len))
            return 0;
    }
    return seen == 1;
}

/* What the response head means for the exchange. */
enum { HEAD_BODY, HEAD_INTERIM, HEAD_PAUSED, HEAD_TUNNEL, HEAD_FAILED, HEAD_RETRY };

/* The whole upstream head is in: act on it (interim answers, upgrades,
 * the cache's revalidation, on_response hooks), then write the client's
 * head. Returns HEAD_*; for HEAD_FAILED u->h1.err says why. */
/* (inlined into both its callers, up_parse's loop and the HTTP/2
 * stream's head: W1's path keeps it without a call) */
static inline __attribute__((always_inline)) int on_head(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    int status = u->h1.status;
    u->nheaders = u->h1.nheaders;
    u->status_text = (mg_span_t){ u->h1.status_text_off, u->h1.status_text_len };
    if (status >= 100 && status < 200 && status != 101)
        return HEAD_INTERIM; /* interim answers (103, stray 100) are not
                              * forwarded, and end with their head (RFC 9110
                              * 15.2): a body one announced would reach the
                              * client ahead of any status line */
    mg_pool_answered(u->pool);
    mg_pool_observe(u->pool, r->upstream_start_ns);
    if (r->retry) {
        uint64_t us = (uv_hrtime() - r->upstream_start_ns) / 1000;
        int ui = mg_request_upstream(r);
        mg_outlier_answer(&r->g->gen->outlier[ui], r->g->ups[ui].view, (size_t)r->target, status,
                          us, uv_now(&u->w->loop));
        unsigned on = status == 502 ? MG_RETRY_ON_502 : status == 503 ? MG_RETRY_ON_503
                    : status == 504 ? MG_RETRY_ON_504 : 0;
        if (on && mg_retry_allowed(r, on, 1))
            return HEAD_RETRY; /* this answer is dropped, another target asked */
    }
    if (status == 101 && !upgrade_accepted(u)) {
        u->h1.err = "a 101 the request did not ask for";
        return HEAD_FAILED; /* 502: no tunnel the client and route did not ask for */
    }
    if (status == 304 && mg_cache_revalidating(r) && mg_cache_revalidated(u, mg_upconn_header_forwarded)) {
        /* the answer to the cache's own conditional request: the kept
         * answer is served once this one (no body) is read */
        u->revalidated = 1;
        return HEAD_BODY;
    }
    if (mg_cache_state(r) || mg_cache_unsafe(r))
        mg_cache_capture_head(u, mg_upconn_header_forwarded);
    if (status != 101 && mg_hooks_has(r->g, r->route, MG_PHASE_RESPONSE)) {
        int rc = mg_hooks_run(r, MG_PHASE_RESPONSE);
        if (rc == MG_HOOK_WAIT) {
            /* go on when the hook is done (mg_proxy_hook_resumed) */
            u->hook_paused = 1;
            return HEAD_PAUSED;
        }
        if (rc == MG_HOOK_ERROR) {
            u->hook_failed = 1;
            return HEAD_FAILED;
        }
    }
    int rc = emit_head(u);
    if (rc < 0)
        u->h1.err = "response head too large";
    return rc < 0 ? HEAD_FAILED : rc == 2 ? HEAD_TUNNEL : HEAD_BODY;
}

static inline __attribute__((always_inline)) void on_resp_body(mg_upconn_t *u, const char *at,
                                                                size_t len)
{
    mg_request_t *r = u->r;
    if (mg_cache_capturing(r))
        mg_cache_capture_body(r, at, len);
    if (!r->res_dropping)
        out_add(u, at, len);
}

static void on_resp_complete(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    cur_out->last = 1;
    if (mg_cache_capturing(r))
        mg_cache_capture_end(r);
    u->got_response_bytes = 2; /* 2: the whole response arrived */
    /* timed and counted before its last bytes go to the client (the
     * caller's out_flush): whoever saw the answer end sees it counted */
    r->upstream_ns = uv_hrtime() - r->upstream_start_ns;
    mg_metrics_upstream(r->w->id, u->pool->t->metric_id, u->h1.status, r->upstream_ns / 1000);
    if (r->trace_sampled)
        mg_tracing_attempt_end(r, u->h1.status, NULL);
}

/* ---- the connection ----------------------------------------------------- */

static void on_up_closed(uv_handle_t *h)
{
    mg_upconn_t *u = h->data;
    if (--u->handles_open > 0)
        return;
    if (u->buf.data)
        mg_buf_put(&u->w->bufs, &u->buf);
    free(u->headers);
    free(u);
}

void mg_upconn_close(mg_upconn_t *u) { up_close(u); }

/* r starts using u, or u's request lets go of it: the balancer's
 * in-flight count of u's target follows (balancer.h). Every place that
 * ties a request to an upstream connection or unties it goes through here. */
static void up_bind(mg_upconn_t *u, mg_request_t *r)
{
    u->r = r;
    r->up = u;
    mg_pool_acquire(u->pool);
}

static void up_unbind(mg_upconn_t *u)
{
    if (!u->r)
        return;
    mg_pool_release(u->pool);
    u->r->up = NULL;
    u->r = NULL;
}

static void up_close(mg_upconn_t *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    mg_h2up_stream_close(u); /* a stream: reset if still open, off its session */
    mg_upconn_io_close(u); /* close_notify while the queue still takes it */
    u->wq.closed = 1;
    if (u->idle)
        mg_pool_forget(u);
    mg_pool_closing(u);
    if (u->client) {
        void *client = u->client;
        u->client = NULL;
        u->client_lost(client); /* http_client.c, a layer up */
    }
    up_unbind(u);
    uv_close((uv_handle_t *)&u->timer, on_up_closed);
    uv_close((uv_handle_t *)&u->tcp, on_up_closed);
}

/* Ends the request's use of u: back to the pool, or closed. */
void mg_proxy_detach(mg_upconn_t *u, int reusable)
{
    up_unbind(u);
    if (!reusable || u->closing || u->wq.pending > 0 || u->tunnel || u->h2s) {
        up_close(u);
        return;
    }
    if (u->buf.data) {
        u->buf.len = u->buf.parsed = 0;
        mg_buf_put(&u->w->bufs, &u->buf);
    }
    mg_pool_put_idle(u->pool, u);
    if (!u->idle) {
        up_close(u); /* pool full */
        return;
    }
    up_arm(u, uv_now(&u->w->loop), u->pool->u->keepalive_timeout);
    up_start_reading(u); /* an idle read means the server closed or misbehaved */
}

void mg_upconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    mg_upconn_t *u = h->data;
    if (!u->buf.data)
        mg_buf_get(&u->w->bufs, &u->buf);
    if (!u->buf.data || u->buf.len == u->buf.cap) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(u->buf.data + u->buf.len, u->buf.cap - u->buf.len);
}

static void up_finish_response(mg_upconn_t *u, int extra_bytes)
{
    mg_request_t *r = u->r;
    int reusable = mg_h1_response_reusable(&u->h1, extra_bytes, r->state == MG_RS_WAIT);
    int revalidated = u->revalidated;
    u->requests++;
    u->revalidated = 0;
    up_unbind(u);
    mg_proxy_detach(u, reusable);
    if (revalidated)
        r->pipe->cache_ready(r, 1); /* nothing was sent yet: the kept answer goes */
    else
        r->proto->response_done(r);
}

/* What parsing the bytes in u->buf came to. */
enum { PARSE_MORE, PARSE_DONE, PARSE_PAUSED, PARSE_TUNNEL, PARSE_FAILED, PARSE_RETRY };

/* Parses heads (skipping interim ones) and body from u->buf.parsed on,
 * forwarding as it goes; u->buf.parsed ends past what was consumed. */
static int parse_response(mg_upconn_t *u)
{
    mg_buf_t *b = &u->buf;
    for (;;) {
        if (u->h1.state == MG_H1_HEAD) {
            long n = mg_h1r_head(&u->h1, b->data, b->parsed, b->len, u->headers, u->htok,
                                 MG_UP_MAX_HEADERS, u->r->head_method);
            if (n == MG_H1_AGAIN && b->len == b->cap)
                u->h1.err = "response head too large";
            if (n == MG_H1_AGAIN)
                return b->len == b->cap ? PARSE_FAILED : PARSE_MORE;
            if (n < 0)
                return PARSE_FAILED;
            b->parsed += (uint32_t)n;
            int rc = on_head(u);
            if (rc == HEAD_INTERIM) {
                u->h1.state = MG_H1_HEAD;
                continue;
            }
            if (rc != HEAD_BODY)
                return rc == HEAD_PAUSED   ? PARSE_PAUSED
                       : rc == HEAD_TUNNEL ? PARSE_TUNNEL
                       : rc == HEAD_RETRY  ? PARSE_RETRY
                                           : PARSE_FAILED;
        }
        const char *data;
        size_t used, dlen;
        int rc = mg_h1r_body(&u->h1, b->data + b->parsed, b->len - b->parsed, &used, &data, &dlen);
        if (rc < 0)
            return PARSE_FAILED;
        if (dlen)
            on_resp_body(u, data, dlen);
        b->parsed += (uint32_t)used;
        if (rc == 1) {
            on_resp_complete(u);
            return PARSE_DONE;
        }
        if (used == 0 || b->parsed == b->len)
            return PARSE_MORE;
    }
}

/* The tunnel begins: bytes after the 101's head are the server's first. */
static void start_tunnel(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    size_t rest = u->buf.len - u->buf.parsed;
    if (rest > 0) {
        uv_buf_t b = uv_buf_init(u->buf.data + u->buf.parsed, (unsigned)rest);
        if (r->proto->send_body(r, &b, 1, 0) < 0)
            return;
    }
    u->buf.len = u->buf.parsed = 0;
    r->proto->start_tunnel(r);
}

static void stop_reading(mg_upconn_t *u)
{
    if (u->reading) {
        mg_upconn_read_stop(u);
        u->reading = 0;
    }
}

/* Parses what arrived; forwards it; returns after a complete response, on
 * error, or when all bytes are consumed. */
static void up_parse(mg_upconn_t *u)
{
    if (u->hook_paused)
        return;
    out_t out;
    OUT_INIT(out);
    cur_out = &out;
    mg_request_t *r = u->r;
    int rc = parse_response(u);
    out_flush(u);
    cur_out = NULL;
    switch (rc) {
    case PARSE_MORE:
        /* body bytes were written or copied: reuse the space (a piece of a
         * chunk line moves to the front), but keep a head still incomplete */
        if (r->response_started && u->buf.parsed > 0) {
            u->buf.len -= u->buf.parsed;
            memmove(u->buf.data, u->buf.data + u->buf.parsed, u->buf.len);
            u->buf.parsed = 0;
        }
        if (u->r && r->proto->pending(r) > 0)
            stop_reading(u);
        return;
    case PARSE_PAUSED: stop_reading(u); return; /* until the hook is done */
    case PARSE_DONE: up_finish_response(u, u->buf.parsed < u->buf.len); return;
    case PARSE_TUNNEL:
        if (r->trace_sampled) /* the exchange ends with the 101; the tunnel is no attempt */
            mg_tracing_attempt_end(r, 101, NULL);
        start_tunnel(u);
        return;
    case PARSE_RETRY: {
        int status = u->h1.status;
        /* an answer, though retried: counted by its class, untimed */
        mg_metrics_upstream(r->w->id, u->pool->t->metric_id, -status, 0);
        if (r->trace_sampled)
            mg_tracing_attempt_end(r, status, NULL);
        /* the answer retried is not read on: its connection goes */
        up_close(u);
        log_retry(r, status == 502   ? "upstream answered 502"
                     : status == 503 ? "upstream answered 503"
                                     : "upstream answered 504", 0);
        retry_later(r);
        return;
    }
    default:
        if (u->hook_failed)
            up_failed(u, 500, "hook error", 0, 0, 0);
        else
            up_failed(u, 502, "invalid upstream response", 0, 0, 0);
    }
}

void mg_proxy_hook_resumed(mg_upconn_t *u, int result)
{
    u->hook_paused = 0;
    if (result == MG_HOOK_ERROR) {
        up_failed(u, 500, "hook error", 0, 0, 0);
        return;
    }
    out_t out;
    OUT_INIT(out);
    cur_out = &out;
    int rc = emit_head(u);
    out_flush(u);
    cur_out = NULL;
    if (rc < 0) {
        u->h1.err = "response head too large";
        up_failed(u, 502, "invalid upstream response", 0, 0, 0);
        return;
    }
    if (u->h2s) {
        mg_h2up_hook_resumed(u); /* what the stream held meanwhile */
        return;
    }
    up_parse(u); /* the body, or the end of a message without one */
    if (u->r)
        up_start_reading(u);
}

/* The upstream closed while u had a request: the end of a close-delimited
 * answer, or a failure. */
static void up_eof(mg_upconn_t *u, ssize_t nread)
{
    if (nread == UV_EOF && u->got_response_bytes && u->h1.state != MG_H1_HEAD &&
        mg_h1r_eof(&u->h1) == 0) {
        out_t out;
        OUT_INIT(out);
        cur_out = &out;
        on_resp_complete(u);
        out_flush(u);
        cur_out = NULL;
        if (u->r)
            up_finish_response(u, 0);
        return;
    }
    if (nread == UV_EPROTO)
        u->h1.err = mg_upconn_tls_error(u); /* a broken TLS record: OpenSSL's reason */
    int retry = !u->got_response_bytes && u->requests > 0;
    /* a fresh connection closed without an answer counts for max_fails;
     * a reused one may just have hit the keep-alive race (outlier
     * detection counts both: a streak of them is not a race) */
    if (!u->got_response_bytes)
        target_failed(u, u->requests == 0);
    up_failed(u, 502,
              nread == UV_ECONNRESET ? "upstream reset the connection"
                                     : "upstream closed the connection",
              retry, u->got_response_bytes ? 0 : MG_RETRY_ON_RESET, nread == UV_EOF ? 0 : (int)nread);
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mg_upconn_t *u = s->data;
    if (nread == 0)
        return;
    if (!u->r) {
        if (u->client) /* a gw.http operation's (http_client.c) */
            u->client_read(s, nread, b);
        else
            up_close(u); /* idle: data or EOF from the server means it is gone */
        return;
    }
    mg_request_t *r = u->r;
    if (nread < 0) {
        if (u->tunnel)
            r->proto->abort(r);
        else
            up_eof(u, nread);
        return;
    }
    if (!u->got_response_bytes)
        mg_proxy_answer_began(u);
    u->buf.len += (uint32_t)nread;
    if (u->tunnel) {
        up_deadline(u, u->pool->u->read_timeout); /* a tunnel's idle time */
        uv_buf_t out = uv_buf_init(u->buf.data, u->buf.len);
        u->buf.len = 0;
        if (r->proto->send_body(r, &out, 1, 0) < 0)
            return;
        if (r->proto->pending(r) > 0) {
            mg_upconn_read_stop(u);
            u->reading = 0;
        }
        return;
    }
    up_wait(u, WAIT_IDLE);
    up_parse(u);
}

static void up_start_reading(mg_upconn_t *u)
{
    if (!u->reading && !u->closing && !u->h2s) { /* a stream's session reads */
        /* a connection without a socket (mg_upconn_feed) only notes it */
        if (u->wq.sink || mg_upconn_read_start(u, mg_upconn_alloc, up_read) == 0)
            u->reading = 1;
    }
}

size_t mg_upconn_feed(mg_upconn_t *u, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init(NULL, 0);
    size_t done = 0;
    if (!p) {
        if (u->reading)
            up_read((uv_stream_t *)&u->tcp, UV_EOF, &b);
        return 0;
    }
    while (done < n && u->reading && !u->closing) {
        mg_upconn_alloc((uv_handle_t *)&u->tcp, n - done, &b);
        if (b.len == 0) {
            up_read((uv_stream_t *)&u->tcp, UV_ENOBUFS, &b);
            break;
        }
        size_t k = n - done < b.len ? n - done : b.len;
        memcpy(b.base, p + done, k);
        done += k;
        up_read((uv_stream_t *)&u->tcp, (ssize_t)k, &b);
    }
    return done;
}

void mg_proxy_client_drained(mg_upconn_t *u)
{
    if (u->h2s)
        mg_h2up_client_drained(u); /* the stream's window opens */
    else if (u->r)
        up_start_reading(u);
}

void mg_proxy_read_for_client(mg_upconn_t *u) { up_start_reading(u); }

/* Has the whole request been handed to the upstream connection? Until
 * then the wait for the answer has not begun: a long upload is timed by the
 * client's body timeouts and by send_timeout, never by read_timeout. */
static int request_out(const mg_request_t *r)
{
    return r->state == MG_RS_WAIT || r->state == MG_RS_DONE;
}

void mg_proxy_request_sent(mg_upconn_t *u)
{
    if (!u)
        return;
    if (__builtin_expect(u->h2s != NULL, 0)) {
        if (mg_h2up_body_end(u) < 0 || u->closing || !u->r)
            return; /* the stream failed (its session told the request) */
        up_wait(u, WAIT_FIRST_BYTE);
        return;
    }
    /* a streamed chunked body ends with the last chunk (a body read whole
     * went with a Content-Length) */
    if (__builtin_expect(u->r && u->r->chunked && !u->r->body_buffered, 0)) {
        uv_buf_t end = uv_buf_init("0\r\n\r\n", 5);
        if (mg_upconn_write(u, &end, 1) < 0) {
            up_failed(u, 502, "upstream write failed", 0, MG_RETRY_ON_RESET, 0);
            return;
        }
    }
    if (u->wq.pending == 0)
        up_wait(u, WAIT_FIRST_BYTE);
    /* else up_drained starts it once the last bytes are out */
}

/* The upstream took everything we wrote: the client may send more, or the
 * wait is for the answer. */
static void up_drained(mg_wq_t *q)
{
    mg_upconn_t *u = mg_container_of(q, mg_upconn_t, wq);
    if (!u->r)
        return;
    if (!request_out(u->r))
        up_wait(u, WAIT_SEND);
    else
        up_wait(u, u->got_response_bytes ? WAIT_IDLE : WAIT_FIRST_BYTE);
    u->r->proto->throttle(u->r, 0);
}

static void up_write_error(mg_wq_t *q, int status)
{
    mg_upconn_t *u = mg_container_of(q, mg_upconn_t, wq);
    if (u->r && u->tunnel) {
        u->r->proto->abort(u->r);
        return;
    }
    up_failed(u, 502, "upstream write failed", 0, u->got_response_bytes ? 0 : MG_RETRY_ON_RESET,
              status);
}

/* Body bytes as HTTP/1.1 frames them for the upstream: a chunk each time
 * when the client's body is chunked (and not read whole first). */
static int write_body(mg_upconn_t *u, uv_buf_t *bufs, unsigned n)
{
    const mg_request_t *r = u->r;
    if (!r || !r->chunked || r->body_buffered || u->tunnel)
        return mg_upconn_write(u, bufs, n);
    uv_buf_t iov[8];
    char pre[24];
    size_t total = 0;
    if (n > 6)
        return -1; /* (the protocols hand one or two pieces) */
    for (unsigned i = 0; i < n; i++) {
        total += bufs[i].len;
        iov[i + 1] = bufs[i];
    }
    if (total == 0)
        return 0; /* an empty chunk would end the body */
    iov[0] = uv_buf_init(pre, (unsigned)snprintf(pre, sizeof(pre), "%zx\r\n", total));
    iov[n + 1] = uv_buf_init("\r\n", 2);
    return mg_upconn_write(u, iov, n + 2);
}

int mg_proxy_send_body(mg_upconn_t *u, uv_buf_t *bufs, unsigned n)
{
    if (u->h2s) {
        up_deadline(u, u->pool->u->send_timeout);
        return mg_h2up_send_body(u, bufs, n); /* throttles the client itself */
    }
    if (!u->tunnel)
        up_deadline(u, u->pool->u->send_timeout); /* only stored: see up_deadline */
    if (write_body(u, bufs, n) < 0)
        return -1;
    if (u->wq.pending > 0 && u->r) {
        /* the upstream is not reading: send_timeout until it does */
        up_deadline(u, u->pool->u->send_timeout);
        u->r->proto->throttle(u->r, 1);
    }
    return 0;
}

int mg_proxy_tunnel_write(mg_upconn_t *u, const char *data, size_t len)
{
    up_deadline(u, u->pool->u->read_timeout);
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return mg_proxy_send_body(u, &b, 1);
}

/* ---- failures and retries ----------------------------------------------- */

static void connect_target(mg_request_t *r, int ti);

/* A 502 or 504 is the gateway's own answer: the operator needs to know
 * why. One error-log line names the route, the upstream, the target, what
 * failed (`why`, the libuv error `err` when there is one, the parser's reason
 * for a bad response) and the request id. */
static void log_failure(const mg_request_t *r, int status, const char *why, int err,
                        const char *detail)
{
    int ui = mg_request_upstream(r);
    const mg_upstream_t *up = ui >= 0 ? &r->g->cfg->upstreams[ui] : NULL;
    mg_log(MG_LOG_ERROR,
           "worker %d: %d: route %s, upstream %s, target %s: %s%s%s%s%s%s (request %s)%s\n",
           r->w->id, status, r->route ? r->route->name : "-", up ? up->name : "-",
           up ? mg_request_target_name(r) : "-", why, err ? " (" : "",
           err ? uv_err_name(err) : "", err ? ")" : "", detail ? ": " : "", detail ? detail : "",
           r->request_id, mg_cache_can_serve_stale(r) ? "; answered with the stale cached copy" : "");
}

/* A try on u's target got no answer at all: the shared outlier detection
 * (outlier.h) hears of it, and the worker's max_fails count when
 * `max_fails` (not for a reused connection that closed: it may just have
 * met the keep-alive race, a server closing it as the request went out). */
static void target_failed(mg_upconn_t *u, int max_fails)
{
    if (max_fails)
        mg_pool_failed(u->pool);
    mg_request_t *r = u->r;
    if (r && r->retry) {
        int ui = mg_request_upstream(r);
        mg_outlier_gateway_failure(&r->g->gen->outlier[ui], r->g->ups[ui].view, (size_t)r->target,
                                   uv_now(&u->w->loop));
    }
}

/* The next try: another target than the last when one is up. */
static void retry_go(mg_request_t *r)
{
    connect_target(r, mg_balancer_pick(r->g, mg_request_upstream(r), r, r->target));
}

/* A retry allowed by retry.c: after its backoff (a timer), or at once. */
static void retry_later(mg_request_t *r)
{
    uint64_t ms = mg_retry_backoff(r);
    if (ms == 0 || mg_retry_wait(r, ms, retry_go) < 0)
        retry_go(r);
}

/* A failed try that is retried: an info line, so that an operator sees
 * what the retries hide from clients. */
static void log_retry(const mg_request_t *r, const char *why, int err)
{
    int ui = mg_request_upstream(r);
    const mg_upstream_t *up = &r->g->cfg->upstreams[ui];
    mg_log(MG_LOG_INFO,
           "worker %d: retrying after try %u of %d: route %s, upstream %s, target %s: %s%s%s%s "
           "(request %s)\n",
           r->w->id, r->retry->tries, r->retry->pol->attempts, r->route ? r->route->name : "-",
           up->name, mg_request_target_name(r), why, err ? " (" : "",
           err ? uv_err_name(err) : "", err ? ")" : "", r->request_id);
}

/* A try failed with `status` (502, 504: logged) because of `why`. With a
 * retry policy, retry.c decides on its class `on` (MG_RETRY_ON_*, 0: never
 * retried); without one, a `retryable` failure (the connect, or a reused
 * connection that died before answering) is tried once more. */
static void up_failed(mg_upconn_t *u, int status, const char *why, int retryable, unsigned on,
                      int err)
{
    mg_request_t *r = u->r;
    if (!r) {
        up_close(u);
        return;
    }
    int prev = r->target;
    int sent = u->connected;
    /* the parser's reason goes before the connection does */
    const char *detail = u->h1.err;
    /* an attempt without a whole answer; a hook's error (500) on one the
     * target did give counts by the answer's status, with no latency */
    mg_metrics_upstream(r->w->id, u->pool->t->metric_id, status == 500 ? -u->h1.status : 0, 0);
    if (r->trace_sampled)
        mg_tracing_attempt_end(r, status == 500 ? u->h1.status : 0, why);
    up_close(u);
    int ui = mg_request_upstream(r);
    if (r->retry && r->retry->pol) {
        if (on && mg_retry_allowed(r, on, sent)) {
            log_retry(r, why, err);
            retry_later(r);
            return;
        }
    } else if (retryable && r->retries < 1 && !r->body_started && !r->response_started &&
               r->target_override < 0 && (r->idempotent || !sent)) {
        r->retries++;
        connect_target(r, mg_balancer_pick(r->g, ui, r, prev));
        return;
    }
    if (status == 502 || status == 504)
        log_failure(r, status, why, err, detail);
    mg_pipeline_upstream_failed(r, status, why);
}

/* ---- connecting and sending the head ------------------------------------ */

/* The TLS handshake of a new connection ended (upconn_io.c); a failure is
 * a failed connect, with OpenSSL's reason in the log. */
static void on_tls_ready(mg_upconn_t *u, const char *err)
{
    if (u->closing)
        return;
    if (err) {
        target_failed(u, 1);
        u->h1.err = err; /* the log line's detail */
        up_failed(u, 502, "upstream TLS handshake failed", 1, MG_RETRY_ON_CONNECT, 0);
        return;
    }
    mg_request_t *r = u->r;
    r->up_tls_ns = uv_hrtime() - r->up_phase_start_ns;
    r->up_phases |= MG_UP_TLS_DONE;
    u->connected = 1;
    send_head(u);
}

static void on_connect(uv_connect_t *req, int status)
{
    mg_upconn_t *u = req->data;
    if (u->closing)
        return;
    if (status < 0) {
        target_failed(u, 1);
        up_failed(u, 502,
                  status == UV_ECONNREFUSED ? "upstream refused the connection"
                                            : "upstream connect failed",
                  1, MG_RETRY_ON_CONNECT, status);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    /* the access log's phases: a clock read per new connection only */
    mg_request_t *r = u->r;
    uint64_t now = uv_hrtime();
    r->up_connect_ns = now - r->up_phase_start_ns;
    r->up_phase_start_ns = now;
    r->up_phases |= MG_UP_CONNECTED;
    int tls = mg_upconn_tls_start(u, on_tls_ready); /* the connect timeout covers it */
    if (tls != 0) {
        if (tls < 0)
            up_failed(u, 502, "upstream TLS setup failed", 1, MG_RETRY_ON_CONNECT, tls);
        return;
    }
    u->connected = 1;
    send_head(u);
}

mg_upconn_t *mg_upconn_new(mg_pool_t *p)
{
    mg_worker_t *w = p->w;
    mg_upconn_t *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    /* the headers and their tokens, in one block */
    u->headers = malloc((sizeof(mg_header_t) + 1) * MG_UP_MAX_HEADERS);
    if (!u->headers) {
        free(u);
        return NULL;
    }
    u->htok = (uint8_t *)(u->headers + MG_UP_MAX_HEADERS);
    u->w = w;
    mg_pool_move(u, p); /* counted in p (targets.h: a slot is free once no
                           connection of it is left) */
    mg_list_init(&u->link);
    uv_tcp_init(&w->loop, &u->tcp);
    uv_timer_init(&w->loop, &u->timer);
    u->tcp.data = u;
    u->timer.data = u;
    u->handles_open = 2;
    mg_wq_init(&u->wq, (uv_stream_t *)&u->tcp, up_drained, up_write_error);
    return u;
}

/* A request to an HTTP/2 upstream: a new stream on one of the pool's
 * sessions (h2_upstream.c), which calls mg_proxy_stream_go when it can. */
static void connect_stream(mg_request_t *r, mg_pool_t *p)
{
    if (!p->addr_ok) {
        mg_metrics_upstream(r->w->id, p->t->metric_id, 0, 0);
        log_failure(r, 502, "upstream address does not resolve", 0, NULL);
        mg_pipeline_upstream_failed(r, 502, "upstream address does not resolve");
        return;
    }
    mg_upconn_t *u = mg_upconn_new(p);
    if (!u) {
        mg_pipeline_upstream_failed(r, 503, "out of memory");
        return;
    }
    up_bind(u, r);
    up_wait(u, WAIT_CONNECT);
    int rc = mg_h2up_attach(u);
    if (rc < 0 && !u->closing) {
        target_failed(u, 1);
        up_failed(u, 502, "upstream connect failed", 1, MG_RETRY_ON_CONNECT, rc);
    }
}

static void connect_target(mg_request_t *r, int ti)
{
    int ui = mg_request_upstream(r);
    if (ti < 0) {
        /* the view has no target to pick: names not resolved (yet), or
         * every target removed or draining (targets.h) */
        const char *why = r->g->ups[ui].view->n ? "upstream has no target to take the request "
                                                  "(all draining)"
                                                : "upstream has no target (its names do not "
                                                  "resolve, or all were removed)";
        log_failure(r, 503, why, 0, NULL);
        mg_pipeline_upstream_failed(r, 503, why);
        return;
    }
    mg_pool_t *p = r->g->ups[ui].pools[ti];
    r->target = ti;
    r->up_phases = 0; /* the phases logged are the last attempt's */
    if (r->up_attempts < UINT8_MAX)
        r->up_attempts++;
    mg_pool_use(r, p);
    if (r->retry) {
        uint64_t now = uv_now(&r->w->loop);
        r->retry->tries++;
        if (r->retry->deadline && mg_retry_left(r, now) == 0) {
            log_failure(r, 504, "request deadline passed (route timeouts.total)", 0, NULL);
            mg_pipeline_upstream_failed(r, 504, "request deadline passed (route timeouts.total)");
            return;
        }
        mg_outlier_attempt(&r->g->gen->outlier[ui], (size_t)ti, now);
    }
    if (r->trace_sampled)
        mg_tracing_attempt_start(r, ui, ti);
    if (__builtin_expect(p->u->protocol != MG_UP_H1, 0)) {
        connect_stream(r, p);
        return;
    }
    mg_upconn_t *u = mg_pool_take_idle(p);
    if (u) {
        up_bind(u, r);
        u->got_response_bytes = 0;
        send_head(u);
        return;
    }
    if (!p->addr_ok) {
        mg_metrics_upstream(r->w->id, p->t->metric_id, 0, 0);
        if (r->trace_sampled)
            mg_tracing_attempt_end(r, 0, "upstream address does not resolve");
        log_failure(r, 502, "upstream address does not resolve", 0, NULL);
        mg_pipeline_upstream_failed(r, 502, "upstream address does not resolve");
        return;
    }
    u = mg_upconn_new(p);
    if (!u) {
        mg_pipeline_upstream_failed(r, 503, "out of memory");
        return;
    }
    up_bind(u, r);
    u->connect_req.data = u;
    r->up_phase_start_ns = uv_hrtime();
    int rc = uv_tcp_connect(&u->connect_req, &u->tcp, (struct sockaddr *)&p->addr, on_connect);
    if (rc < 0) {
        target_failed(u, 1);
        up_failed(u, 502, "upstream connect failed", 1, MG_RETRY_ON_CONNECT, rc);
        return;
    }
    up_wait(u, WAIT_CONNECT);
}


/* ---- the upstream's request head ------------------------------------------ */

/* Headers that make some frameworks serve another URL or method than the
 * request line says (IIS/Symfony X-Original-URL and X-Rewrite-URL, the
 * X-HTTP-Method-Override family). Routing, the policies and the cache key
 * all see the request line, so an upstream honouring them would answer
 * (and the cache keep) something else: a known bypass and cache-poisoning
 * vector. The client's copies are not forwarded unless the upstream says
 * override_headers = true (then the cache key holds them, cache.c). The
 * list is the table's MG_HNF_OVERRIDE names. */

/* Is the client's header (token tok) one the gateway does not forward:
 * hop-by-hop, written by the gateway itself, or refused (see DESIGN)? The
 * client's Forwarded, X-Forwarded-* and X-Request-Id go through unchanged
 * when the upstream is set not to get the gateway's own. */
static int skip_request_header(const mg_request_t *r, int tok, const mg_upstream_t *up)
{
    unsigned f = mg_hname_flags(tok);
    if (f & (MG_HNF_HOP | MG_HNF_REQ_DROP))
        return 1;
    if ((f & MG_HNF_OVERRIDE) && !up->override_headers)
        return 1;
    if ((f & MG_HNF_REQ_FORWARDED) && up->forwarded)
        return 1;
    switch (tok) {
    /* a tracestate belongs to the trace it came with, not to one the
     * gateway had to start */
    case MG_HN_TRACESTATE: return !r->trace_continued;
    case MG_HN_X_REQUEST_ID: return up->request_id;
    case MG_HN_IF_NONE_MATCH:
    case MG_HN_IF_MODIFIED_SINCE:
        /* a fetch for the cache wants the whole answer (or asks its own) */
        return (mg_cache_state(r) == MG_CACHE_MISS || mg_cache_state(r) == MG_CACHE_EXPIRED) &&
               !r->head_method;
    default: return 0;
    }
}

/* connection_lists() over all of the request's Connection headers. */
static int request_connection_lists(const mg_request_t *r)
{
    int lists = 0;
    if (!r->known[MG_H_CONNECTION])
        return 0;
    for (uint32_t i = r->known[MG_H_CONNECTION] - 1; i < r->nheaders; i++) {
        const mg_header_t *h = &r->headers[i];
        if (r->htok[i] == MG_HN_CONNECTION)
            lists |= connection_lists(mg_request_data(r, h->value), h->value.len);
    }
    return lists;
}

/* Is `name` named in one of the request's Connection headers? */
static int in_connection_tokens(const mg_request_t *r, mg_span_t name)
{
    for (uint32_t i = r->known[MG_H_CONNECTION] - 1; i < r->nheaders; i++) {
        const mg_header_t *h = &r->headers[i];
        if (r->htok[i] == MG_HN_CONNECTION &&
            mg_token_listed(mg_request_data(r, h->value), h->value.len, mg_request_data(r, name),
                            name.len))
            return 1;
    }
    return 0;
}

/* Did a hook set or remove this request header? Then the client's copy
 * (and the gateway's own value for it) is not sent. */
#define EDITED(r, tok, lit)                                                                    \
    ((r)->nreq_edits && mg_edits_replace((r)->req_edits, (r)->nreq_edits, (tok), (lit), sizeof(lit) - 1))

/* "METHOD target HTTP/1.1": the hook's method, the route's rewrite and the
 * hook's query when there are. Returns -1 for a rewrite too long. */
static int head_request_line(head_t *h, mg_request_t *r)
{
    if (r->new_method)
        head_put(h, r->new_method, r->new_method_len);
    else
        head_put(h, mg_request_data(r, r->method), r->method.len);
    HEAD_PUTS(h, " ");
    /* a rewrite's length is known once written: try the room there is,
     * grow and try again while it does not fit */
    long pl;
    size_t want = r->path_len + 1;
    char *o;
    while ((o = head_room(h, want)) && (pl = mg_request_upstream_path(r, o, want)) < 0)
        want *= 2;
    if (!o)
        return -1;
    h->len += (size_t)pl;
    if (r->new_query) {
        if (r->new_query_len) {
            HEAD_PUTS(h, "?");
            head_put(h, r->new_query, r->new_query_len);
        }
    } else {
        head_put(h, r->query, r->query_len);
    }
    HEAD_PUTS(h, " HTTP/1.1\r\n");
    return 0;
}

/* The client's headers upstream `up` gets, as they came. */
static void head_client_headers(head_t *h, mg_request_t *r, const mg_upstream_t *up)
{
    int lists = request_connection_lists(r);
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_header_t *hd = &r->headers[i];
        const char *n = mg_request_data(r, hd->name);
        int tok = r->htok[i]; /* looked up at parse */
        if (skip_request_header(r, tok, up))
            continue;
        if (((lists & CONN_LISTS_CLOSE) && tok == MG_HN_CLOSE) ||
            ((lists & CONN_LISTS_OTHERS) && in_connection_tokens(r, hd->name)))
            continue;
        if (r->nreq_edits && mg_edits_replace(r->req_edits, r->nreq_edits, tok, n, hd->name.len))
            continue;
        head_header(h, n, hd->name.len, mg_request_data(r, hd->value), hd->value.len);
    }
}

/* RFC 7239 "Forwarded: for=...;proto=...;host=..." for this hop only (the
 * client's own Forwarded is not sent: it could say anything). An IPv6 node
 * and a host that is not a token are quoted; a valid Host (uri.h) holds no
 * '"' or '\\'. */
static void head_forwarded(head_t *h, const mg_request_t *r, mg_span_t host)
{
    int v6 = strchr(r->peer->client_ip, ':') != NULL;
    HEAD_PUTS(h, "Forwarded: for=");
    if (v6)
        HEAD_PUTS(h, "\"[");
    if (r->peer->client_ip[0])
        head_put(h, r->peer->client_ip, strlen(r->peer->client_ip));
    else
        HEAD_PUTS(h, "unknown"); /* RFC 7239 6.2: no address known */
    if (v6)
        HEAD_PUTS(h, "]\"");
    if (r->proto->tls(r))
        HEAD_PUTS(h, ";proto=https");
    else
        HEAD_PUTS(h, ";proto=http");
    if (host.len) {
        const char *hv = mg_request_data(r, host);
        int quote = 0;
        for (uint32_t i = 0; i < host.len && !quote; i++)
            quote = !mg_token_char((unsigned char)hv[i]);
        HEAD_PUTS(h, ";host=");
        if (quote)
            HEAD_PUTS(h, "\"");
        head_put(h, hv, host.len);
        if (quote)
            HEAD_PUTS(h, "\"");
    }
    HEAD_PUTS(h, "\r\n");
}

/* Every X-Forwarded-For line of r, each followed by ", ": the list a
 * trusted proxy sent (client_addr.h), which real_ip.c read as one. */
static void head_xff_lines(head_t *h, const mg_request_t *r)
{
    for (uint32_t i = r->known[MG_H_XFF] ? r->known[MG_H_XFF] - 1u : r->nheaders;
         i < r->nheaders; i++) {
        const mg_header_t *hd = &r->headers[i];
        if (hd->value.len == 0 ||
            mg_hname_lookup(mg_request_data(r, hd->name), hd->name.len) != MG_HN_X_FORWARDED_FOR)
            continue;
        head_put(h, mg_request_data(r, hd->value), hd->value.len);
        HEAD_PUTS(h, ", ");
    }
}

/* X-Forwarded-For/-Proto/-Host and Forwarded, unless a hook set its own. */
static void head_forwarding(head_t *h, mg_request_t *r)
{
    mg_span_t host = { 0, 0 };
    if (r->known[MG_H_HOST])
        host = r->headers[r->known[MG_H_HOST] - 1].value;
    if (!EDITED(r, MG_HN_X_FORWARDED_FOR, "x-forwarded-for")) {
        HEAD_PUTS(h, "X-Forwarded-For: ");
        if (r->xff_trusted) {
            head_xff_lines(h, r); /* a trusted proxy's whole list */
        } else if (r->known[MG_H_XFF] && !r->xff_drop) {
            mg_span_t xff = r->headers[r->known[MG_H_XFF] - 1].value;
            if (xff.len) {
                head_put(h, mg_request_data(r, xff), xff.len);
                HEAD_PUTS(h, ", ");
            }
        }
        head_put(h, r->peer->client_ip, strlen(r->peer->client_ip));
        HEAD_PUTS(h, "\r\n");
    }
    if (!EDITED(r, MG_HN_X_FORWARDED_PROTO, "x-forwarded-proto")) {
        if (r->proto->tls(r))
            HEAD_PUTS(h, "X-Forwarded-Proto: https\r\n");
        else
            HEAD_PUTS(h, "X-Forwarded-Proto: http\r\n");
    }
    if (host.len && !EDITED(r, MG_HN_X_FORWARDED_HOST, "x-forwarded-host"))
        head_header(h, "X-Forwarded-Host", 16, mg_request_data(r, host), host.len);
    if (!EDITED(r, MG_HN_FORWARDED, "forwarded"))
        head_forwarded(h, r, host);
}

/* The headers the gateway adds for a target of pool p: Host when the
 * client sent none, the forwarding headers, the cache's validators,
 * traceparent, X-Request-Id. */
static void head_gateway_request(head_t *h, mg_request_t *r, const mg_pool_t *p)
{
    const mg_upstream_t *up = p->u;
    if (!r->known[MG_H_HOST] && !EDITED(r, MG_HN_HOST, "host")) {
        const char *auth = mg_target_authority(p->t);
        head_header(h, "Host", 4, auth, strlen(auth));
    }
    if (up->forwarded)
        head_forwarding(h, r);
    if (mg_cache_revalidating(r)) {
        char *o = head_room(h, mg_cache_validators_len(r)); /* its bound */
        if (o)
            h->len += mg_cache_validators(r, o);
    }
    if (r->traced && !EDITED(r, MG_HN_TRACEPARENT, "traceparent")) {
        char *o = head_room(h, 16 + sizeof(r->trace_id) + 1 + sizeof(r->span_id) + 1 + 2 + 2);
        if (o) {
            char *s = o;
            memcpy(o, "traceparent: 00-", 16);
            o += 16;
            memcpy(o, r->trace_id, sizeof(r->trace_id));
            o += sizeof(r->trace_id);
            *o++ = '-';
            /* a sampled request's parent there is this attempt's client span */
            memcpy(o, r->trace_sampled ? r->tspan.client_id : r->span_id, sizeof(r->span_id));
            o += sizeof(r->span_id);
            *o++ = '-';
            memcpy(o, r->trace_flags, 2);
            memcpy(o + 2, "\r\n", 2);
            h->len += (size_t)(o + 4 - s);
        }
    }
    if (up->request_id && !EDITED(r, MG_HN_X_REQUEST_ID, "x-request-id"))
        head_header(h, "X-Request-Id", 12, r->request_id, r->request_id_len);
}

/* How the body goes: an upgrade's Connection/Upgrade, or its framing. */
static void head_body_framing(head_t *h, mg_request_t *r)
{
    if (r->is_upgrade) {
        /* the protocols the route allows, not the client's whole list */
        HEAD_PUTS(h, "Connection: upgrade\r\nUpgrade: ");
        size_t n = mg_upgrade_value(r, NULL);
        char *o = head_room(h, n);
        if (o)
            h->len += mg_upgrade_value(r, o);
        HEAD_PUTS(h, "\r\n");
    } else if (r->body_buffered) {
        if (r->body_len > 0 || r->has_body)
            head_number(h, "Content-Length: ", r->body_len);
    } else if (r->chunked) {
        HEAD_PUTS(h, "Transfer-Encoding: chunked\r\n");
    } else if (r->content_length > 0) {
        head_number(h, "Content-Length: ", (unsigned long long)r->content_length);
    }
    HEAD_PUTS(h, "\r\n");
}

/* Writes r's request head for a target of pool p into the worker's
 * scratch (h starts empty); returns NULL, or why it cannot be sent. */
static inline const char *write_request_head(head_t *h, mg_request_t *r, const mg_pool_t *p)
{
    if (head_request_line(h, r) < 0 && !h->failed)
        return "rewritten path too long";
    head_client_headers(h, r, p->u);
    head_gateway_request(h, r, p);
    head_edits(h, r->req_edits, r->nreq_edits);
    head_body_framing(h, r);
    return h->failed ? "request head too large to forward" : NULL;
}

/* Writes the request head for u's request into the worker's scratch;
 * returns its length, or -1 (then the request was failed). (Inlined into
 * begin_try, as it was into send_head before HTTP/2 streams shared it.) */
static inline __attribute__((always_inline)) long build_request_head(mg_upconn_t *u)
{
    head_t h = { .w = u->w };
    const char *why = write_request_head(&h, u->r, u->pool);
    if (why) {
        up_failed(u, 502, why, 0, 0, 0);
        return -1;
    }
    return (long)h.len;
}

long mg_proxy_request_head(mg_request_t *r, const mg_pool_t *p, const char **why)
{
    head_t h = { .w = r->w };
    *why = write_request_head(&h, r, p);
    return *why ? -1 : (long)h.len;
}

/* ---- the testing kit (mg_ffi.h; not used by the gateway) -------------------- */

static _Thread_local const char *kit_why; /* the kit's last refusal */

static long kit_head(mg_upconn_t *u)
{
    head_t h = { .w = u->w };
    kit_why = write_request_head(&h, u->r, u->pool);
    return kit_why ? -1 : (long)h.len;
}

long mg_ffi_kit_upstream_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out)
{
    kit_why = NULL;
    long n = mg_kit_request_run(r, m, kit_head, 0, out);
    if (n < 0 && kit_why)
        *out = kit_why;
    return n;
}

static _Thread_local int kit_body; /* what follows the kit's response head */

/* The client's head of a proxied answer as the gateway's HTTP/1 protocol
 * writes it (response_head, then mg_h1w_response_head, as http_conn.c
 * does), and which body follows: 2 the hooks', 1 the upstream's, 0 none. */
static long kit_response(mg_upconn_t *u)
{
    mg_hfield_t fields[RESP_FIELDS];
    char line[96];
    mg_resp_t res, coded;
    resp_frame_t f;
    mg_h1w_frame_t fr;
    response_head(u, &res, fields, line, &f);
    mg_request_t *r = u->r;
    const mg_resp_t *out = r->compress_conf && !f.upgrade ? mg_compress_head(r, &res, &coded) : &res;
    long n = mg_h1w_response_head(r, 0, out, &u->w->scratch, &u->w->scratch_cap, &fr);
    if (n < 0) {
        kit_why = "response head too large";
        return -1;
    }
    kit_body = fr.no_body ? 0 : f.replaced ? 2 : f.no_body ? 0 : 1;
    if (kit_body && r->compress)
        kit_body += 2; /* compressed (mg_ffi_kit_compress_body) */
    return n;
}

long mg_ffi_kit_response_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out,
                              int *body)
{
    kit_why = NULL;
    kit_body = 0;
    long n = mg_kit_request_run(r, m, kit_response, 1, out);
    if (n < 0 && kit_why)
        *out = kit_why;
    *body = kit_body;
    return n;
}

/* A try begins on u: its request head in the worker's scratch (its length,
 * or -1 when the request was failed), the answer's state reset, the clock
 * started. For HTTP/1 connections and HTTP/2 streams alike. */
static inline __attribute__((always_inline)) long begin_try(mg_upconn_t *u)
{
    long len = build_request_head(u);
    if (len < 0)
        return -1;
    mg_h1r_init(&u->h1);
    u->got_response_bytes = 0;
    u->tunnel = 0;
    u->revalidated = 0;
    u->r->upstream_start_ns = uv_hrtime();
    return len;
}

/* Sends the head and starts waiting for the answer. */
static void send_head(mg_upconn_t *u)
{
    long len = begin_try(u);
    if (len < 0)
        return;
    uv_buf_t b = uv_buf_init(u->w->scratch, (unsigned)len);
    mg_request_t *r = u->r;
    if (mg_upconn_write(u, &b, 1) < 0) {
        up_failed(u, 502, "upstream write failed", u->requests > 0, MG_RETRY_ON_RESET, 0);
        return;
    }
    /* read_timeout once the body is out too (mg_proxy_request_sent) */
    up_wait(u, WAIT_SEND);
    up_start_reading(u);
    r->proto->resume_body(r);
}

/* ---- HTTP/2 streams (h2_upstream.c drives them) ---------------------------
 * The same exchange as an HTTP/1 connection's, with the events coming from
 * the stream's session instead of up_parse: the head (built as for HTTP/1,
 * translated by mg_h2up_submit), the answer's head, body and end. */

/* Streams of one request an upstream may refuse before the gateway gives
 * up (503): a server that refuses every stream is not waited for forever. */
#define MAX_REFUSED 10

/* Does r send a body upstream? */
static int request_has_body(const mg_request_t *r)
{
    return r->body_buffered ? r->body_len > 0 : r->has_body;
}

void mg_proxy_stream_go(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    long len = begin_try(u);
    if (len < 0)
        return;
    const char *why = mg_h2up_submit(u, u->w->scratch, (size_t)len, request_has_body(r));
    if (why) {
        up_failed(u, 502, why, 0, 0, 0);
        return;
    }
    if (u->closing || !u->r)
        return; /* its session failed while sending it: the try is over */
    u->connected = 1;
    up_wait(u, WAIT_SEND);
    r->proto->resume_body(r);
}

void mg_proxy_answer_began(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    u->got_response_bytes = 1;
    const mg_logformat_t *lf = r->g->cfg->log_format;
    if (lf && lf->first_byte) { /* a clock read only when it is logged */
        r->up_first_byte_ns = uv_hrtime() - r->upstream_start_ns;
        r->up_phases |= MG_UP_FIRST_BYTE;
    }
}

int mg_proxy_stream_head(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    out_t out;
    OUT_INIT(out);
    cur_out = &out;
    up_wait(u, WAIT_IDLE);
    int rc = on_head(u);
    if (rc == HEAD_BODY)
        out_flush(u);
    cur_out = NULL;
    switch (rc) {
    case HEAD_BODY: return u->r ? 0 : -1;
    case HEAD_INTERIM: return 1;
    case HEAD_PAUSED: return 2;
    case HEAD_RETRY: {
        int status = u->h1.status;
        mg_metrics_upstream(r->w->id, u->pool->t->metric_id, -status, 0);
        up_close(u); /* the stream is reset */
        log_retry(r, status == 502   ? "upstream answered 502"
                     : status == 503 ? "upstream answered 503"
                                     : "upstream answered 504", 0);
        retry_later(r);
        return -1;
    }
    default:
        if (u->hook_failed)
            up_failed(u, 500, "hook error", 0, 0, 0);
        else
            up_failed(u, 502, "invalid upstream response", 0, 0, 0);
        return -1;
    }
}

int mg_proxy_stream_data(mg_upconn_t *u, const char *p, size_t n)
{
    mg_request_t *r = u->r;
    out_t out;
    OUT_INIT(out);
    cur_out = &out;
    up_wait(u, WAIT_IDLE);
    on_resp_body(u, p, n);
    out_flush(u);
    cur_out = NULL;
    if (u->closing || !u->r)
        return -1; /* the client went */
    return r->proto->pending(r) == 0;
}

void mg_proxy_stream_end(mg_upconn_t *u, const mg_hfield_t *trailers, size_t n)
{
    mg_request_t *r = u->r;
    out_t out;
    OUT_INIT(out);
    cur_out = &out;
    on_resp_complete(u);
    if (n && !r->res_dropping) {
        out.last = 0;
        out_flush(u);
        cur_out = NULL;
        if (r->proto->send_trailers(r, trailers, n) < 0)
            return; /* the client went (r ended, u with it) */
    } else {
        out_flush(u);
        cur_out = NULL;
    }
    if (u->r)
        up_finish_response(u, 0);
}

void mg_proxy_stream_failed(mg_upconn_t *u, int kind, int err, const char *detail)
{
    mg_request_t *r = u->r;
    if (!r || u->closing)
        return;
    if (detail)
        u->h1.err = detail;
    switch (kind) {
    case MG_STREAM_CONNECT:
        target_failed(u, 1);
        up_failed(u, 502, err == UV_ECONNREFUSED ? "upstream refused the connection"
                                                 : "upstream connect failed",
                  1, MG_RETRY_ON_CONNECT, err);
        return;
    case MG_STREAM_TLS:
        target_failed(u, 1);
        up_failed(u, 502, "upstream TLS handshake failed", 1, MG_RETRY_ON_CONNECT, err);
        return;
    case MG_STREAM_TIMEOUT:
        target_failed(u, 1);
        up_failed(u, 504, u->pool->u->tls ? "upstream TLS handshake timed out"
                                          : "upstream connect timed out", 0,
                  MG_RETRY_ON_CONNECT, 0);
        return;
    case MG_STREAM_REFUSED:
        /* the upstream did not process it (RFC 9113 8.7): another stream,
         * on another connection, is no retry and no failure, as long as
         * what the client sent can go again */
        if (r->h2_refused < MAX_REFUSED && (!r->body_started || r->body_buffered) && !r->response_started) {
            mg_pool_t *p = u->pool;
            r->h2_refused++;
            up_close(u);
            connect_stream(r, p);
            return;
        }
        up_failed(u, 503, "upstream refused the stream", 0, 0, 0);
        return;
    case MG_STREAM_LOST:
    case MG_STREAM_RESET:
        if (!u->got_response_bytes)
            target_failed(u, 0);
        up_failed(u, 502, kind == MG_STREAM_RESET ? "upstream reset the stream"
                                                  : "upstream closed the connection",
                  !u->got_response_bytes, u->got_response_bytes ? 0 : MG_RETRY_ON_RESET, err);
        return;
    default:
        up_failed(u, 502, "invalid upstream response", 0, 0, 0);
    }
}

/* Reads r's body whole before the first try (a retry may replay it, a
 * mirror copy carry it). Returns 1 when r now waits for it
 * (mg_pipeline_body_read starts r again), 0 when it cannot be: it streams
 * instead, and is neither replayed nor copied. */
static int buffer_body(mg_request_t *r)
{
    r->buffering = 1;
    r->state = MG_RS_BUFFER;
    if (r->proto->read_body(r) < 0) {
        r->buffering = 0;
        r->state = MG_RS_UPSTREAM;
        return 0;
    }
    return 1;
}

/* The route's retries (else the upstream's) and deadline: the retry state
 * (retry.h), and a body read whole first when a retry may replay it.
 * Returns 0 to go on, 1 when r waits for its body, -1 when answered. */
static int retry_begin(mg_request_t *r, int ui, int64_t grpc_ms)
{
    const mg_upstream_t *up = &r->g->cfg->upstreams[ui];
    const mg_retry_policy_t *pol = r->route && r->route->retries ? r->route->retries : up->retries;
    uint64_t total = r->route ? r->route->timeouts.total : 0;
    if (grpc_ms >= 0 && (total == 0 || (uint64_t)grpc_ms < total))
        total = (uint64_t)grpc_ms; /* the client's deadline is sooner */
    if (!mg_retry_begin(r, pol, &r->g->gen->outlier[ui], total)) {
        mg_pipeline_upstream_failed(r, 503, "out of memory");
        return -1;
    }
    return mg_retry_buffer_body(r) ? buffer_body(r) : 0;
}

/* The route's mirror copy, before the first try: sent (or dropped, or not
 * made), the body read whole first when the copy is to carry it. Returns
 * 1 when r waits for its body. */
static __attribute__((noinline)) int mirror_begin(mg_request_t *r)
{
    if (!r->w->mirror(r))
        return 0;
    if (buffer_body(r))
        return 1;
    r->w->mirror(r); /* it cannot be read whole: no copy (counted) */
    return 0;
}

/* Does r keep a retry state (retries, timeouts, outlier detection)? Its
 * route says, unless a hook sent it to another upstream. */
static int wants_retry_state(const mg_request_t *r, int ui)
{
    const mg_route_t *rt = r->route;
    if (rt && r->upstream_override < 0)
        return rt->retry_state;
    const mg_upstream_t *up = &r->g->cfg->upstreams[ui];
    return up->retries || up->outlier || (rt && rt->retry_state);
}

/* A gRPC request's grpc-timeout (grpc.h) as the ms it leaves from now
 * (at least 1: the deadline may not vanish), or -1 without one. */
static int64_t grpc_deadline(const mg_request_t *r)
{
    const char *v;
    size_t vl;
    if (!mg_request_grpc(r) || !mg_request_header(r, "grpc-timeout", 12, 0, &v, &vl))
        return -1;
    int64_t ms = mg_grpc_timeout_ms(v, vl);
    if (ms < 0)
        return -1; /* not of gRPC's form: ignored, as gRPC servers do */
    int64_t spent = (int64_t)((uv_hrtime() - r->start_ns) / 1000000);
    return ms > spent ? ms - spent : 1;
}

void mg_proxy_start(mg_request_t *r)
{
    int ui = mg_request_upstream(r);
    if (!r->retry) {
        /* a request without Content-Type (W1's) asks nothing of gRPC */
        int64_t grpc_ms = __builtin_expect(r->known[MG_H_CONTENT_TYPE] != 0, 0)
                              ? grpc_deadline(r) : -1;
        if (__builtin_expect(wants_retry_state(r, ui) || grpc_ms >= 0, 0) &&
            retry_begin(r, ui, grpc_ms) != 0)
            return;
    }
    if (__builtin_expect(r->route && r->route->mirror != NULL, 0) && mirror_begin(r))
        return;
    int ti = r->target_override;
    if (ti < 0) {
        ti = mg_balancer_pick(r->g, ui, r, -1);
    } else {
        /* req:set_target named a target that may have left the set, or
         * drains (no new request) since */
        const mg_tview_t *v = r->g->ups[ui].view;
        int left = !mg_tview_has(v, (size_t)ti) || v->e[ti].serial != r->target_serial;
        if (left || v->e[ti].draining) {
            int status = left ? 502 : 503;
            const char *why = left ? "the target set_target chose has left the upstream"
                                   : "the target set_target chose is draining";
            log_failure(r, status, why, 0, NULL);
            mg_pipeline_upstream_failed(r, status, why);
            return;
        }
    }
    connect_target(r, ti);
}

const mg_upstream_ops_t mg_proxy_ops = {
    .start = mg_proxy_start,
    .hook_resumed = mg_proxy_hook_resumed,
    .detach = mg_proxy_detach,
    .sessions_adopt = mg_h2up_pool_adopt,
    .sessions_retire = mg_h2up_pool_retire,
    .sessions_close = mg_h2up_pool_close,
};
