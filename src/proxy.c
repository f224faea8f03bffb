/* proxy.c: the upstream side of a proxied request.
 *
 * mg_proxy_start() picks a target, takes a pooled keep-alive connection or
 * opens one, writes the rewritten request head, and lets the protocol
 * (r->proto) stream the body. The response is parsed with llhttp; its head is rewritten
 * (obs-folds replaced by SP, hook changes applied, framed by the status the
 * client gets) and its body forwarded to the client as it arrives, with
 * back-pressure both ways. A finished connection goes back to its pool when it is safe to
 * reuse, else it is closed.
 *
 * Ownership: an upstream connection belongs to the request using it
 * (r->up, u->r) or to its pool while idle; it is freed in its close
 * callback.
 *
 * It sees the client only through the request: answers go out through
 * r->proto, failures to the pipeline (pipeline.h); the pipeline reaches it
 * through mg_proxy_ops (upstream.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "http.h"
#include "pipeline.h"
#include "upstream.h"
#include "hooks.h"
#include "errlog.h"
#include "upgrade.h"

static llhttp_settings_t resp_settings;
static int settings_ready;

static void up_close(mg_upconn_t *u);
static void up_parse(mg_upconn_t *u);
static void up_start_reading(mg_upconn_t *u);
static void up_failed(mg_upconn_t *u, int status, const char *why, int retryable, int err);
static void send_head(mg_upconn_t *u);

/* ---- deadlines (same lazy scheme as the client side) ------------------- */

static void on_up_timer(uv_timer_t *t);

static void up_deadline(mg_upconn_t *u, uint64_t ms)
{
    uint64_t now = uv_now(&u->w->loop);
    u->deadline = now + ms;
    if (!u->timer_armed || u->deadline < u->timer_expiry) {
        uv_timer_start(&u->timer, on_up_timer, ms, 0);
        u->timer_armed = 1;
        u->timer_expiry = u->deadline;
    }
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
    if (!u->got_response_bytes)
        mg_pool_failed(u->pool); /* no answer at all: counts for max_fails */
    up_failed(u, 504, u->connected ? "upstream timed out" : "upstream connect timed out", 0, 0);
}

/* ---- response parsing --------------------------------------------------- */

static uint32_t up_off(mg_upconn_t *u, const char *at) { return (uint32_t)(at - u->buf.data); }
static const char *up_data(mg_upconn_t *u, mg_span_t s) { return u->buf.data + s.off; }

static int up_ieq(mg_upconn_t *u, mg_span_t s, const char *lit, size_t n)
{
    return s.len == n && strncasecmp(up_data(u, s), lit, n) == 0;
}

/* Output gathered while one read is parsed, written in one go after it. */
#define OUT_MAX 24
typedef struct {
    uv_buf_t iov[OUT_MAX];
    char pre[OUT_MAX / 3 + 1][20];
    unsigned n, npre;
} out_t;
static _Thread_local out_t *cur_out;

static void out_flush(mg_upconn_t *u)
{
    out_t *o = cur_out;
    if (!o || o->n == 0 || !u->r)
        return;
    u->r->proto->send(u->r, o->iov, o->n);
    o->n = o->npre = 0;
}

static void out_add(mg_upconn_t *u, const char *p, size_t len)
{
    out_t *o = cur_out;
    if (o->n == OUT_MAX)
        out_flush(u);
    o->iov[o->n++] = uv_buf_init((char *)p, (unsigned)len);
}

static int on_resp_begin(llhttp_t *p)
{
    mg_upconn_t *u = p->data;
    u->nheaders = 0;
    u->last_was_value = 0;
    u->status_text.off = u->status_text.len = 0;
    return 0;
}

static int on_resp_status(llhttp_t *p, const char *at, size_t len)
{
    mg_upconn_t *u = p->data;
    if (u->status_text.len == 0)
        u->status_text.off = up_off(u, at);
    u->status_text.len += (uint32_t)len;
    return 0;
}

static int on_resp_field(llhttp_t *p, const char *at, size_t len)
{
    mg_upconn_t *u = p->data;
    if (u->nheaders == 0 || u->last_was_value) {
        if (u->nheaders >= MG_UP_MAX_HEADERS)
            return HPE_USER;
        mg_header_t *h = &u->headers[u->nheaders++];
        h->name.off = up_off(u, at);
        h->name.len = 0;
        h->value.off = h->value.len = 0;
        u->last_was_value = 0;
    }
    u->headers[u->nheaders - 1].name.len += (uint32_t)len;
    return 0;
}

static int blank(char ch) { return ch == ' ' || ch == '\t'; }

/* Headers llhttp reads itself for framing and keep-alive: a folded one may
 * mean something else to llhttp than to the unfolded reading, so such an
 * answer is refused (502) rather than repaired. */
static int framing_header(mg_upconn_t *u, mg_span_t n)
{
    return up_ieq(u, n, "content-length", 14) || up_ieq(u, n, "transfer-encoding", 17) ||
           up_ieq(u, n, "connection", 10) || up_ieq(u, n, "upgrade", 7);
}

/* llhttp hands a header value over in pieces: pieces of one line follow
 * each other in the buffer, and an obs-fold continuation line (CRLF then
 * SP/HTAB) arrives as a new piece, its leading blanks included, after a
 * gap that holds the CRLF. RFC 9112 5.2: a proxy replaces each obs-fold
 * with SP before forwarding. That is done in place: the continuation moves
 * back over the bytes llhttp has already read (the value only shrinks), so
 * the value stays one span and the client never sees a fold. */
static int on_resp_value(llhttp_t *p, const char *at, size_t len)
{
    mg_upconn_t *u = p->data;
    mg_header_t *h = &u->headers[u->nheaders - 1];
    uint32_t off = up_off(u, at);
    if (!u->last_was_value) { /* nearly always the whole value at once */
        h->value.off = off;
        h->value.len += (uint32_t)len;
        u->last_was_value = 1;
        u->value_moved = u->fold_sep = 0;
        u->value_raw_end = off + (uint32_t)len;
        return 0;
    }
    if (off != u->value_raw_end) {
        /* an obs-fold: OWS CRLF RWS -> one SP (none at either end) */
        if (framing_header(u, h->name))
            return HPE_USER;
        const char *v = u->buf.data + h->value.off;
        while (h->value.len > 0 && blank(v[h->value.len - 1]))
            h->value.len--;
        u->value_moved = u->fold_sep = 1;
    }
    u->value_raw_end = off + (uint32_t)len;
    if (!u->value_moved) {
        h->value.len += (uint32_t)len;
        return 0;
    }
    char *v = u->buf.data + h->value.off;
    if (u->fold_sep) {
        /* the continuation's leading blanks (maybe split over reads) */
        while (len > 0 && blank(*at)) {
            at++;
            len--;
        }
        if (len == 0)
            return 0;
        if (h->value.len > 0)
            v[h->value.len++] = ' ';
        u->fold_sep = 0;
    }
    memmove(v + h->value.len, at, len);
    h->value.len += (uint32_t)len;
    return 0;
}


/* Is `name` named in one of the response's Connection headers? */
static int listed_in_connection(mg_upconn_t *u, mg_span_t name)
{
    for (uint32_t i = 0; i < u->nheaders; i++)
        if (up_ieq(u, u->headers[i].name, "connection", 10) &&
            mg_token_listed(up_data(u, u->headers[i].value), u->headers[i].value.len,
                            up_data(u, name), name.len))
            return 1;
    return 0;
}

/* What the response's Connection headers name beyond themselves: bit 1 a
 * token other than keep-alive and close (then every header must be looked
 * up in them), bit 2 "close" (a header of that name goes too). Nearly
 * every answer says only keep-alive or close: one pass, not one per header. */
enum { CONN_LISTS_OTHERS = 1, CONN_LISTS_CLOSE = 2 };
static int connection_lists(mg_upconn_t *u)
{
    int lists = 0;
    for (uint32_t i = 0; i < u->nheaders; i++) {
        if (!up_ieq(u, u->headers[i].name, "connection", 10))
            continue;
        const char *v = up_data(u, u->headers[i].value), *t;
        size_t at = 0, l, vl = u->headers[i].value.len;
        while (mg_token_next(v, vl, &at, &t, &l)) {
            if (l == 5 && strncasecmp(t, "close", 5) == 0)
                lists |= CONN_LISTS_CLOSE;
            else if (!(l == 10 && strncasecmp(t, "keep-alive", 10) == 0))
                lists |= CONN_LISTS_OTHERS;
        }
    }
    return lists;
}

static int hop_by_hop(const char *n, size_t l)
{
    switch (l) {
    case 2: return strncasecmp(n, "te", 2) == 0;
    case 7: return strncasecmp(n, "upgrade", 7) == 0 || strncasecmp(n, "trailer", 7) == 0;
    case 10: return strncasecmp(n, "connection", 10) == 0 || strncasecmp(n, "keep-alive", 10) == 0;
    case 16: return strncasecmp(n, "proxy-connection", 16) == 0;
    case 17: return strncasecmp(n, "transfer-encoding", 17) == 0;
    default: return 0;
    }
}

int mg_upconn_header_forwarded(mg_upconn_t *u, uint32_t i)
{
    mg_span_t name = u->headers[i].name;
    if (hop_by_hop(up_data(u, name), name.len))
        return 0;
    for (uint32_t j = 0; j < u->nheaders; j++)
        if (up_ieq(u, u->headers[j].name, "connection", 10))
            return !listed_in_connection(u, name);
    return 1;
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}
#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)



/* Writes the client's response head (upstream head + hook changes) into
 * the output. Returns 0, 1 (no body follows), 2 (upgrade) or -1. */
static int emit_head(mg_upconn_t *u)
{
    llhttp_t *p = &u->parser;
    mg_request_t *r = u->r;
    mg_worker_t *w = u->w;
    int status = p->status_code;
    int upgrade = status == 101;
    u->resp_keepalive = llhttp_should_keep_alive(p) ? 1 : 0;
    int has_len = (p->flags & F_CONTENT_LENGTH) != 0;
    int no_body = r->head_method || !mg_status_has_body(status) || upgrade;
    int out_status = r->res_status && !upgrade ? r->res_status : status;
    /* A hook's status frames what the client gets: a 204 or 304 made of a
     * 200 sends no body (the upstream's is read and dropped) and no
     * Content-Length; a 200 made of a 204 or 304 says Content-Length: 0. */
    int out_no_body = !upgrade && !mg_status_has_body(out_status);
    int replaced = (r->res_body_set || (out_no_body && !no_body)) && !upgrade;
    int zero_len = !r->head_method && no_body && !upgrade && !out_no_body && !r->res_body_set;
    /* Framing towards the client. */
    r->response_chunked = 0;
    if (!no_body && !has_len && !replaced) {
        if (r->http_minor >= 1)
            r->response_chunked = 1;
        else
            r->response_close = 1; /* HTTP/1.0: the close delimits */
    }
    if (!r->keep_alive || w->stopping)
        r->response_close = 1;
    if (r->is_upgrade && !upgrade)
        r->response_close = 1; /* the client's parser stopped for a tunnel */

    size_t edits_len = 0;
    for (int i = 0; i < r->nres_edits; i++)
        edits_len += r->res_edits[i].name_len + r->res_edits[i].value_len + 4;
    char *o = w->scratch, *end = w->scratch + w->scratch_cap - 384 - edits_len;
    /* status line, without printf: this runs for every response */
    memcpy(o, "HTTP/1.1 ", 9);
    o[9] = (char)('0' + out_status / 100);
    o[10] = (char)('0' + out_status / 10 % 10);
    o[11] = (char)('0' + out_status % 10);
    o[12] = ' ';
    o += 13;
    if (r->res_status && !upgrade) {
        const char *t = mg_status_text(out_status);
        size_t tl = strlen(t);
        memcpy(o, t, tl);
        o += tl;
    } else {
        size_t sl = u->status_text.len < 128 ? u->status_text.len : 128;
        memcpy(o, up_data(u, u->status_text), sl);
        o += sl;
    }
    *o++ = '\r';
    *o++ = '\n';
    /* headers named in a Connection header are hop-by-hop too */
    int lists = connection_lists(u);
    for (uint32_t i = 0; i < u->nheaders; i++) {
        mg_header_t *h = &u->headers[i];
        const char *n = up_data(u, h->name);
        size_t nl = h->name.len;
        int is_upgrade_hdr = upgrade && nl == 7 && strncasecmp(n, "upgrade", 7) == 0;
        if (!is_upgrade_hdr &&
            (hop_by_hop(n, nl) ||
             ((lists & CONN_LISTS_OTHERS) && listed_in_connection(u, h->name)) ||
             ((lists & CONN_LISTS_CLOSE) && nl == 5 && strncasecmp(n, "close", 5) == 0)))
            continue;
        if (nl == 12 && strncasecmp(n, "x-request-id", 12) == 0)
            continue;
        if ((replaced || out_no_body) && nl == 14 && strncasecmp(n, "content-length", 14) == 0)
            continue;
        if (r->nres_edits && mg_edits_replace(r->res_edits, r->nres_edits, n, nl))
            continue;
        if (o + nl + h->value.len + 4 > end)
            return -1; /* response head larger than our scratch */
        o = mg_put_header(o, n, nl, up_data(u, h->value), h->value.len);
    }
    for (int i = 0; i < r->nres_edits; i++) {
        const mg_edit_t *e = &r->res_edits[i];
        if (e->op != MG_EDIT_REMOVE)
            o = mg_put_header(o, e->name, e->name_len, e->value, e->value_len);
    }
    if (replaced && !out_no_body)
        o += snprintf(o, 48, "Content-Length: %zu\r\n", r->res_body_len);
    else if (zero_len)
        o = PUTS(o, "Content-Length: 0\r\n");
    if (mg_cache_state(r))
        o += mg_cache_status_line(r, o, 96);
    o = PUTS(o, "X-Request-Id: ");
    o = put(o, r->request_id, r->request_id_len);
    o = PUTS(o, "\r\n");
    if (r->response_chunked)
        o = PUTS(o, "Transfer-Encoding: chunked\r\n");
    if (upgrade)
        o = PUTS(o, "Connection: upgrade\r\n");
    else if (r->response_close)
        o = PUTS(o, "Connection: close\r\n");
    else if (r->http_minor == 0)
        o = PUTS(o, "Connection: keep-alive\r\n");
    o = PUTS(o, "\r\n");
    r->status = out_status;
    r->response_started = 1;
    out_add(u, w->scratch, (size_t)(o - w->scratch));
    if (replaced) {
        if (!r->head_method && !out_no_body)
            out_add(u, r->res_body, r->res_body_len);
        r->res_dropping = 1; /* the upstream's own body is read and dropped */
    }
    if (upgrade) {
        out_flush(u);
        u->tunnel = 1;
        return 2;
    }
    return no_body ? 1 : 0;
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
        if (!up_ieq(u, u->headers[i].name, "upgrade", 7))
            continue;
        if (seen++ || !mg_upgrade_accepted(r, up_data(u, u->headers[i].value),
                                           u->headers[i].value.len))
            return 0;
    }
    return seen == 1;
}

static int on_resp_headers_complete(llhttp_t *p)
{
    mg_upconn_t *u = p->data;
    mg_request_t *r = u->r;
    int status = p->status_code;
    if (status >= 100 && status < 200 && status != 101)
        return 1; /* interim answers (103, stray 100) are not forwarded, and
                   * end with their head (RFC 9110 15.2): llhttp would read
                   * a body announced by one, which would reach the client
                   * ahead of any status line */
    mg_pool_answered(u->pool);
    if (status == 101 && !upgrade_accepted(u))
        return HPE_USER; /* 502: no tunnel the client and route did not ask for */
    if (status == 304 && mg_cache_revalidating(r) && mg_cache_revalidated(u, mg_upconn_header_forwarded)) {
        /* the answer to the cache's own conditional request: the kept
         * answer is served once this one (no body) is read */
        u->resp_keepalive = llhttp_should_keep_alive(p) ? 1 : 0;
        u->revalidated = 1;
        return 1;
    }
    if (mg_cache_state(r) || mg_cache_unsafe(r))
        mg_cache_capture_head(u, mg_upconn_header_forwarded);
    if (status != 101 && mg_hooks_has(r->g, r->route, MG_PHASE_RESPONSE)) {
        int rc = mg_hooks_run(r, MG_PHASE_RESPONSE);
        if (rc == MG_HOOK_WAIT) {
            /* go on when the hook is done (mg_proxy_hook_resumed) */
            u->hook_paused = 1;
            return HPE_PAUSED;
        }
        if (rc == MG_HOOK_ERROR) {
            u->hook_failed = 1;
            return HPE_USER;
        }
    }
    int rc = emit_head(u);
    return rc < 0 ? HPE_USER : rc;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    mg_upconn_t *u = p->data;
    mg_request_t *r = u->r;
    if (mg_cache_capturing(r))
        mg_cache_capture_body(r, at, len);
    if (r->res_dropping)
        return 0;
    if (r->response_chunked) {
        out_t *o = cur_out;
        if (o->n + 3 > OUT_MAX)
            out_flush(u);
        char *pre = o->pre[o->npre++];
        int k = snprintf(pre, 20, "%zx\r\n", len);
        out_add(u, pre, (size_t)k);
        out_add(u, at, len);
        out_add(u, "\r\n", 2);
    } else {
        out_add(u, at, len);
    }
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    mg_upconn_t *u = p->data;
    mg_request_t *r = u->r;
    int status = p->status_code;
    if ((status >= 100 && status < 200 && status != 101) || u->tunnel)
        return 0; /* an upgrade ends with HPE_PAUSED_UPGRADE instead */
    if (r->response_chunked)
        out_add(u, "0\r\n\r\n", 5);
    if (mg_cache_capturing(r))
        mg_cache_capture_end(r);
    u->got_response_bytes = 2; /* 2: the whole response arrived */
    return HPE_PAUSED;
}

static void init_settings(void)
{
    llhttp_settings_init(&resp_settings);
    resp_settings.on_message_begin = on_resp_begin;
    resp_settings.on_status = on_resp_status;
    resp_settings.on_header_field = on_resp_field;
    resp_settings.on_header_value = on_resp_value;
    resp_settings.on_headers_complete = on_resp_headers_complete;
    resp_settings.on_body = on_resp_body;
    resp_settings.on_message_complete = on_resp_complete;
    settings_ready = 1;
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

static void up_close(mg_upconn_t *u)
{
    if (u->closing)
        return;
    u->closing = 1;
    u->wq.closed = 1;
    if (u->idle)
        mg_pool_forget(u);
    if (u->client) {
        void *client = u->client;
        u->client = NULL;
        mg_http_client_conn_lost(client);
    }
    if (u->r) {
        u->r->up = NULL;
        u->r = NULL;
    }
    uv_close((uv_handle_t *)&u->timer, on_up_closed);
    uv_close((uv_handle_t *)&u->tcp, on_up_closed);
}

/* Ends the request's use of u: back to the pool, or closed. */
void mg_proxy_detach(mg_upconn_t *u, int reusable)
{
    if (u->r) {
        u->r->up = NULL;
        u->r = NULL;
    }
    if (!reusable || u->closing || u->wq.pending > 0 || u->tunnel) {
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
    up_deadline(u, u->pool->u->keepalive_timeout);
    up_start_reading(u); /* an idle read means the server closed or misbehaved */
}

static void up_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
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
    r->upstream_ns = uv_hrtime() - r->upstream_start_ns;
    int reusable = u->resp_keepalive && !extra_bytes && r->state == MG_RS_WAIT;
    int revalidated = u->revalidated;
    u->requests++;
    u->revalidated = 0;
    r->up = NULL;
    u->r = NULL;
    mg_proxy_detach(u, reusable);
    if (revalidated)
        r->pipe->cache_ready(r, 1); /* nothing was sent yet: the kept answer goes */
    else
        r->proto->response_done(r);
}

/* Parses what arrived; forwards it; returns after a complete response, on
 * error, or when all bytes are consumed. */
static void up_parse(mg_upconn_t *u)
{
    if (u->hook_paused)
        return;
    out_t out = { .n = 0 };
    cur_out = &out;
    mg_request_t *r = u->r;
    const char *start = u->buf.data + u->buf.parsed;
    size_t len = u->buf.len - u->buf.parsed;
    llhttp_errno_t e = llhttp_execute(&u->parser, start, len);
    if (e == HPE_OK) {
        out_flush(u);
        /* body bytes were written or copied: reuse the space, but keep a
         * head that is still incomplete */
        if (r->response_started)
            u->buf.len = u->buf.parsed = 0;
        else
            u->buf.parsed = u->buf.len;
        cur_out = NULL;
        if (u->r && r->proto->pending(r) > 0 && u->reading) {
            uv_read_stop((uv_stream_t *)&u->tcp);
            u->reading = 0;
        }
        return;
    }
    const char *pos = llhttp_get_error_pos(&u->parser);
    if (e == HPE_PAUSED && u->hook_paused) {
        /* an on_response hook waits: hold the rest until it is done */
        out_flush(u);
        cur_out = NULL;
        u->buf.parsed = (uint32_t)(pos - u->buf.data);
        if (u->reading) {
            uv_read_stop((uv_stream_t *)&u->tcp);
            u->reading = 0;
        }
        return;
    }
    if (e == HPE_PAUSED && u->got_response_bytes == 2) {
        out_flush(u);
        cur_out = NULL;
        int extra = pos < u->buf.data + u->buf.len;
        up_finish_response(u, extra);
        return;
    }
    if (e == HPE_PAUSED_UPGRADE && u->tunnel) {
        out_flush(u);
        cur_out = NULL;
            size_t rest = (size_t)(u->buf.data + u->buf.len - pos);
        if (rest > 0) {
            uv_buf_t b = uv_buf_init((char *)pos, (unsigned)rest);
            if (r->proto->send(r, &b, 1) < 0)
                return;
        }
        u->buf.len = u->buf.parsed = 0;
        r->proto->start_tunnel(r);
        return;
    }
    out_flush(u);
    cur_out = NULL;
    if (u->hook_failed)
        up_failed(u, 500, "hook error", 0, 0);
    else
        up_failed(u, 502, "invalid upstream response", 0, 0);
}

void mg_proxy_hook_resumed(mg_upconn_t *u, int result)
{
    u->hook_paused = 0;
    if (result == MG_HOOK_ERROR) {
        up_failed(u, 500, "hook error", 0, 0);
        return;
    }
    out_t out = { .n = 0 };
    cur_out = &out;
    int rc = emit_head(u);
    if (rc < 0) {
        cur_out = NULL;
        up_failed(u, 502, "invalid upstream response", 0, 0);
        return;
    }
    if (rc == 1)
        u->parser.flags |= F_SKIPBODY; /* what returning 1 would have said */
    out_flush(u);
    cur_out = NULL;
    llhttp_resume(&u->parser);
    if (u->r && u->buf.parsed < u->buf.len)
        up_parse(u);
    else if (u->r && u->buf.parsed == u->buf.len) {
        /* let llhttp finish a message that had no more bytes to read */
        up_parse(u);
    }
    if (u->r)
        up_start_reading(u);
}

static void up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mg_upconn_t *u = s->data;
    if (nread == 0)
        return;
    if (!u->r) {
        up_close(u); /* idle: data or EOF from the server means it is gone */
        return;
    }
    mg_request_t *r = u->r;
    if (nread < 0) {
        if (u->tunnel) {
            r->proto->abort(r);
            return;
        }
        if (nread == UV_EOF && u->got_response_bytes) {
            /* close-delimited response ends here */
            out_t out = { .n = 0 };
            cur_out = &out;
            llhttp_errno_t e = llhttp_finish(&u->parser);
            out_flush(u);
            cur_out = NULL;
            if (!u->r)
                return;
            if ((e == HPE_OK || e == HPE_PAUSED) && u->got_response_bytes == 2) {
                u->resp_keepalive = 0;
                up_finish_response(u, 0);
                return;
            }
        }
        int retry = !u->got_response_bytes && u->requests > 0;
        /* a fresh connection closed without an answer counts for max_fails;
         * a reused one may just have hit the keep-alive race */
        if (!u->got_response_bytes && u->requests == 0)
            mg_pool_failed(u->pool);
        up_failed(u, 502,
                  nread == UV_ECONNRESET ? "upstream reset the connection"
                                         : "upstream closed the connection",
                  retry, nread == UV_EOF ? 0 : (int)nread);
        return;
    }
    u->got_response_bytes = u->got_response_bytes ? u->got_response_bytes : 1;
    u->buf.len += (uint32_t)nread;
    if (u->tunnel) {
        up_deadline(u, u->pool->u->read_timeout);
        uv_buf_t out = uv_buf_init(u->buf.data, u->buf.len);
        u->buf.len = 0;
        if (r->proto->send(r, &out, 1) < 0)
            return;
        if (r->proto->pending(r) > 0) {
            uv_read_stop(s);
            u->reading = 0;
        }
        return;
    }
    up_deadline(u, u->pool->u->read_timeout);
    up_parse(u);
}

static void up_start_reading(mg_upconn_t *u)
{
    if (!u->reading && !u->closing) {
        /* a connection without a socket (mg_upconn_feed) only notes it */
        if (u->wq.sink || uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read) == 0)
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
        up_alloc((uv_handle_t *)&u->tcp, n - done, &b);
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
    if (u->r)
        up_start_reading(u);
}

/* Has the whole request been handed to the upstream connection? Until
 * then the wait for the answer has not begun: a long upload is timed by the
 * client's body timeouts and by send_timeout, never by read_timeout. */
static int request_out(const mg_request_t *r)
{
    return r->state == MG_RS_WAIT || r->state == MG_RS_DONE;
}

void mg_proxy_request_sent(mg_upconn_t *u)
{
    if (u && u->wq.pending == 0)
        up_deadline(u, u->pool->u->read_timeout);
    /* else up_drained starts it once the last bytes are out */
}

/* The upstream took everything we wrote: the client may send more, or the
 * wait is for the answer. */
static void up_drained(mg_wq_t *q)
{
    mg_upconn_t *u = mg_container_of(q, mg_upconn_t, wq);
    if (!u->r)
        return;
    up_deadline(u, request_out(u->r) ? u->pool->u->read_timeout : u->pool->u->send_timeout);
    u->r->proto->throttle(u->r, 0);
}

static void up_write_error(mg_wq_t *q, int status)
{
    mg_upconn_t *u = mg_container_of(q, mg_upconn_t, wq);
    if (u->r && u->tunnel) {
        u->r->proto->abort(u->r);
        return;
    }
    up_failed(u, 502, "upstream write failed", 0, status);
}

int mg_proxy_send_body(mg_upconn_t *u, uv_buf_t *bufs, unsigned n)
{
    if (!u->tunnel)
        up_deadline(u, u->pool->u->send_timeout); /* only stored: see up_deadline */
    if (mg_wq_write(&u->wq, bufs, n) < 0)
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
 * failed (`why`, the libuv error `err` when there is one, llhttp's reason
 * for a bad response) and the request id. */
static void log_failure(const mg_request_t *r, int status, const char *why, int err,
                        const char *detail)
{
    int ui = mg_request_upstream(r);
    const mg_upstream_t *up = ui >= 0 ? &r->g->cfg->upstreams[ui] : NULL;
    mg_log(MG_LOG_ERROR,
           "worker %d: %d: route %s, upstream %s, target %s: %s%s%s%s%s%s (request %s)%s\n",
           r->w->id, status, r->route ? r->route->name : "-", up ? up->name : "-",
           up && r->target >= 0 ? up->targets[r->target].name : "-", why, err ? " (" : "",
           err ? uv_err_name(err) : "", err ? ")" : "", detail ? ": " : "", detail ? detail : "",
           r->request_id, mg_cache_can_serve_stale(r) ? "; answered with the stale cached copy" : "");
}

static void up_failed(mg_upconn_t *u, int status, const char *why, int retryable, int err)
{
    mg_request_t *r = u->r;
    if (!r) {
        up_close(u);
        return;
    }
    int prev = r->target;
    /* llhttp's reason goes before the connection does */
    const char *detail = llhttp_get_errno(&u->parser) != HPE_OK &&
                                 llhttp_get_errno(&u->parser) != HPE_PAUSED
                             ? llhttp_get_error_reason(&u->parser)
                             : NULL;
    up_close(u);
    int ui = mg_request_upstream(r);
    const mg_upstream_t *up = &r->g->cfg->upstreams[ui];
    if (retryable && r->retries < 1 && !r->body_started && !r->response_started &&
        r->target_override < 0 && (r->idempotent || !u->connected)) {
        r->retries++;
        int ti = up->ntargets > 1 ? mg_balancer_pick(r->g, ui, prev) : prev;
        connect_target(r, ti);
        return;
    }
    if (status == 502 || status == 504)
        log_failure(r, status, why, err, detail);
    mg_pipeline_upstream_failed(r, status, why);
}

/* ---- connecting and sending the head ------------------------------------ */

static void on_connect(uv_connect_t *req, int status)
{
    mg_upconn_t *u = req->data;
    if (u->closing)
        return;
    if (status < 0) {
        mg_pool_failed(u->pool);
        up_failed(u, 502,
                  status == UV_ECONNREFUSED ? "upstream refused the connection"
                                            : "upstream connect failed",
                  1, status);
        return;
    }
    u->connected = 1;
    uv_tcp_nodelay(&u->tcp, 1);
    send_head(u);
}

mg_upconn_t *mg_upconn_new(mg_pool_t *p)
{
    mg_worker_t *w = p->w;
    mg_upconn_t *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->headers = malloc(sizeof(mg_header_t) * MG_UP_MAX_HEADERS);
    if (!u->headers) {
        free(u);
        return NULL;
    }
    u->w = w;
    u->pool = p;
    mg_list_init(&u->link);
    uv_tcp_init(&w->loop, &u->tcp);
    uv_timer_init(&w->loop, &u->timer);
    u->tcp.data = u;
    u->timer.data = u;
    u->handles_open = 2;
    mg_wq_init(&u->wq, (uv_stream_t *)&u->tcp, up_drained, up_write_error);
    return u;
}

static void connect_target(mg_request_t *r, int ti)
{
    mg_pool_t *p = &r->g->ups[mg_request_upstream(r)].pools[ti];
    r->target = ti;
    mg_upconn_t *u = mg_pool_take_idle(p);
    if (u) {
        u->r = r;
        r->up = u;
        u->got_response_bytes = 0;
        send_head(u);
        return;
    }
    if (!p->addr_ok) {
        log_failure(r, 502, "upstream address does not resolve", 0, NULL);
        mg_pipeline_upstream_failed(r, 502, "upstream address does not resolve");
        return;
    }
    u = mg_upconn_new(p);
    if (!u) {
        mg_pipeline_upstream_failed(r, 503, "out of memory");
        return;
    }
    u->r = r;
    r->up = u;
    u->connect_req.data = u;
    int rc = uv_tcp_connect(&u->connect_req, &u->tcp, (struct sockaddr *)&p->addr, on_connect);
    if (rc < 0) {
        mg_pool_failed(p);
        up_failed(u, 502, "upstream connect failed", 1, rc);
        return;
    }
    up_deadline(u, p->u->connect_timeout);
}


/* Skip headers the gateway owns or that are hop-by-hop (see DESIGN). */
/* (The client's Forwarded, X-Forwarded-* and X-Request-Id go through
 * unchanged when the upstream is set not to get the gateway's own.) */
static int span_is(const mg_request_t *r, mg_span_t s, const char *lit, size_t n)
{
    return s.len == n && strncasecmp(mg_request_data(r, s), lit, n) == 0;
}

/* Headers that make some frameworks serve another URL or method than the
 * request line says (IIS/Symfony X-Original-URL and X-Rewrite-URL, the
 * X-HTTP-Method-Override family). Routing, the policies and the cache key
 * all see the request line, so an upstream honouring them would answer
 * (and the cache keep) something else: a known bypass and cache-poisoning
 * vector. The client's copies are not forwarded unless the upstream says
 * override_headers = true (then the cache key holds them, cache.c). */

static int skip_request_header(const mg_request_t *r, mg_span_t name, const mg_upstream_t *up)
{
    const char *n = mg_request_data(r, name);
    size_t l = name.len;
    if (hop_by_hop(n, l))
        return 1;
    if (!up->override_headers && l >= 13 && l <= 22 && mg_override_header(n, l))
        return 1;
    switch (l) {
    case 6: return strncasecmp(n, "expect", 6) == 0;
    case 9: return up->forwarded && strncasecmp(n, "forwarded", 9) == 0;
    /* the gateway sends its own traceparent; a tracestate belongs to the
     * trace it came with, not to one the gateway had to start */
    case 10: return !r->trace_continued && strncasecmp(n, "tracestate", 10) == 0;
    case 11: return strncasecmp(n, "traceparent", 11) == 0;
    case 12: return up->request_id && strncasecmp(n, "x-request-id", 12) == 0;
    case 14: /* HTTP2-Settings goes only with an h2c upgrade, never tunnelled */
        return strncasecmp(n, "content-length", 14) == 0 ||
               strncasecmp(n, "http2-settings", 14) == 0;
    case 15: return up->forwarded && strncasecmp(n, "x-forwarded-for", 15) == 0;
    case 16: return up->forwarded && strncasecmp(n, "x-forwarded-host", 16) == 0;
    case 17: return up->forwarded && strncasecmp(n, "x-forwarded-proto", 17) == 0;
    default: return 0;
    }
}

/* Is `name` named in one of the request's Connection headers? */
static int in_connection_tokens(const mg_request_t *r, mg_span_t name)
{
    if (!r->known[MG_H_CONNECTION])
        return 0;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_span_t hn = r->headers[i].name;
        if (hn.len == 10 && strncasecmp(mg_request_data(r, hn), "connection", 10) == 0 &&
            mg_token_listed(mg_request_data(r, r->headers[i].value), r->headers[i].value.len,
                            mg_request_data(r, name), name.len))
            return 1;
    }
    return 0;
}

/* Did a hook set or remove this request header? Then the client's copy
 * (and the gateway's own value for it) is not sent. */
#define EDITED(r, lit)                                                                         \
    ((r)->nreq_edits && mg_edits_replace((r)->req_edits, (r)->nreq_edits, (lit), sizeof(lit) - 1))

/* RFC 7239 "Forwarded: for=...;proto=...;host=..." for this hop only (the
 * client's own Forwarded is not sent: it could say anything). An IPv6 node
 * and a host that is not a token are quoted; a valid Host (uri.h) holds no
 * '"' or '\\'. */
static char *put_forwarded(char *o, const mg_request_t *r, mg_span_t host)
{
    int v6 = strchr(r->peer->client_ip, ':') != NULL;
    o = PUTS(o, "Forwarded: for=");
    if (v6)
        o = PUTS(o, "\"[");
    if (r->peer->client_ip[0])
        o = put(o, r->peer->client_ip, strlen(r->peer->client_ip));
    else
        o = PUTS(o, "unknown"); /* RFC 7239 6.2: no address known */
    if (v6)
        o = PUTS(o, "]\"");
    o = r->proto->tls(r) ? PUTS(o, ";proto=https") : PUTS(o, ";proto=http");
    if (host.len) {
        const char *h = mg_request_data(r, host);
        int quote = 0;
        for (uint32_t i = 0; i < host.len && !quote; i++)
            quote = !mg_token_char((unsigned char)h[i]);
        o = PUTS(o, ";host=");
        if (quote)
            *o++ = '"';
        o = put(o, h, host.len);
        if (quote)
            *o++ = '"';
    }
    return PUTS(o, "\r\n");
}

static void send_head(mg_upconn_t *u)
{
    mg_request_t *r = u->r;
    mg_worker_t *w = u->w;
    char *o = w->scratch;
    /* the Host value goes out up to three times (Host, X-Forwarded-Host,
     * Forwarded) */
    uint32_t host_len = r->known[MG_H_HOST] ? r->headers[r->known[MG_H_HOST] - 1].value.len : 0;
    size_t need = r->head_bytes + 2 * host_len + r->path_len + r->url.len * 2 +
                  r->request_id_len + 512 +
                  r->nheaders * 4 + r->new_query_len + r->new_method_len +
                  mg_cache_validators_len(r);
    for (int i = 0; i < r->nreq_edits; i++)
        need += r->req_edits[i].name_len + r->req_edits[i].value_len + 4;
    if (need > w->scratch_cap / 2) {
        up_failed(u, 502, "request head too large to forward", 0, 0);
        return;
    }
    if (r->new_method)
        o = put(o, r->new_method, r->new_method_len);
    else
        o = put(o, mg_request_data(r, r->method), r->method.len);
    *o++ = ' ';
    if (r->path_rewritten || !r->route) {
        o = put(o, r->path, r->path_len);
    } else {
        long pl = mg_router_upstream_path(&r->match, r->path, r->path_len, o,
                                          (size_t)(w->scratch_cap / 2));
        if (pl < 0) {
            up_failed(u, 502, "rewritten path too long", 0, 0);
            return;
        }
        o += pl;
    }
    if (r->new_query) {
        if (r->new_query_len) {
            *o++ = '?';
            o = put(o, r->new_query, r->new_query_len);
        }
    } else {
        o = put(o, r->query, r->query_len);
    }
    o = PUTS(o, " HTTP/1.1\r\n");
    mg_span_t xff = { 0, 0 }, host = { 0, 0 };
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_header_t *h = &r->headers[i];
        if (r->known[MG_H_XFF] == i + 1)
            xff = h->value;
        if (r->known[MG_H_HOST] == i + 1)
            host = h->value;
        if (skip_request_header(r, h->name, u->pool->u))
            continue;
        if ((mg_cache_state(r) == MG_CACHE_MISS || mg_cache_state(r) == MG_CACHE_EXPIRED) &&
            !r->head_method &&
            (span_is(r, h->name, "if-none-match", 13) ||
             span_is(r, h->name, "if-modified-since", 17)))
            continue; /* a fetch for the cache wants the whole answer (or asks its own) */
        if (r->known[MG_H_CONNECTION] && in_connection_tokens(r, h->name))
            continue;
        if (r->nreq_edits &&
            mg_edits_replace(r->req_edits, r->nreq_edits, mg_request_data(r, h->name), h->name.len))
            continue;
        o = put(o, mg_request_data(r, h->name), h->name.len);
        o = PUTS(o, ": ");
        o = put(o, mg_request_data(r, h->value), h->value.len);
        o = PUTS(o, "\r\n");
    }
    if (!r->known[MG_H_HOST] && !EDITED(r, "host")) {
        o = PUTS(o, "Host: ");
        o = put(o, u->pool->t->name, strlen(u->pool->t->name));
        o = PUTS(o, "\r\n");
    }
    const mg_upstream_t *upc = u->pool->u;
    if (upc->forwarded && !EDITED(r, "x-forwarded-for")) {
        o = PUTS(o, "X-Forwarded-For: ");
        if (xff.len) {
            o = put(o, mg_request_data(r, xff), xff.len);
            o = PUTS(o, ", ");
        }
        o = put(o, r->peer->client_ip, strlen(r->peer->client_ip));
        o = PUTS(o, "\r\n");
    }
    if (upc->forwarded && !EDITED(r, "x-forwarded-proto"))
        o = r->proto->tls(r) ? PUTS(o, "X-Forwarded-Proto: https\r\n")
                   : PUTS(o, "X-Forwarded-Proto: http\r\n");
    if (upc->forwarded && host.len && !EDITED(r, "x-forwarded-host")) {
        o = PUTS(o, "X-Forwarded-Host: ");
        o = put(o, mg_request_data(r, host), host.len);
        o = PUTS(o, "\r\n");
    }
    if (upc->forwarded && !EDITED(r, "forwarded"))
        o = put_forwarded(o, r, host);
    if (mg_cache_revalidating(r))
        o += mg_cache_validators(r, o);
    if (r->traced && !EDITED(r, "traceparent")) {
        o = PUTS(o, "traceparent: 00-");
        o = put(o, r->trace_id, sizeof(r->trace_id));
        *o++ = '-';
        o = put(o, r->span_id, sizeof(r->span_id));
        *o++ = '-';
        o = put(o, r->trace_flags, 2);
        o = PUTS(o, "\r\n");
    }
    if (upc->request_id && !EDITED(r, "x-request-id")) {
        o = PUTS(o, "X-Request-Id: ");
        o = put(o, r->request_id, r->request_id_len);
        o = PUTS(o, "\r\n");
    }
    for (int i = 0; i < r->nreq_edits; i++) {
        const mg_edit_t *e = &r->req_edits[i];
        if (e->op == MG_EDIT_REMOVE)
            continue;
        o = put(o, e->name, e->name_len);
        o = PUTS(o, ": ");
        o = put(o, e->value, e->value_len);
        o = PUTS(o, "\r\n");
    }
    if (r->is_upgrade) {
        /* the protocols the route allows, not the client's whole list */
        o = PUTS(o, "Connection: upgrade\r\nUpgrade: ");
        o += mg_upgrade_value(r, o);
        o = PUTS(o, "\r\n");
    } else if (r->body_buffered) {
        if (r->body_len > 0 || r->has_body)
            o += snprintf(o, 48, "Content-Length: %zu\r\n", r->body_len);
    } else if (r->chunked) {
        o = PUTS(o, "Transfer-Encoding: chunked\r\n");
    } else if (r->content_length > 0) {
        o += snprintf(o, 48, "Content-Length: %llu\r\n", (unsigned long long)r->content_length);
    }
    o = PUTS(o, "\r\n");

    if (!settings_ready)
        init_settings();
    llhttp_init(&u->parser, HTTP_RESPONSE, &resp_settings);
    u->parser.data = u;
    u->got_response_bytes = 0;
    u->tunnel = 0;
    u->revalidated = 0;
    uv_buf_t b = uv_buf_init(w->scratch, (unsigned)(o - w->scratch));
    r->upstream_start_ns = uv_hrtime();
    if (mg_wq_write(&u->wq, &b, 1) < 0) {
        up_failed(u, 502, "upstream write failed", u->requests > 0, 0);
        return;
    }
    /* read_timeout once the body is out too (mg_proxy_request_sent) */
    up_deadline(u, u->pool->u->send_timeout);
    up_start_reading(u);
    r->proto->resume_body(r);
}

void mg_proxy_start(mg_request_t *r)
{
    int ui = mg_request_upstream(r);
    int ti = r->target_override >= 0 ? r->target_override : mg_balancer_pick(r->g, ui, -1);
    connect_target(r, ti);
}

const mg_upstream_ops_t mg_proxy_ops = {
    .start = mg_proxy_start,
    .hook_resumed = mg_proxy_hook_resumed,
    .detach = mg_proxy_detach,
};
