/* http_conn.c: the client side of the gateway.
 *
 * One mg_conn_t per accepted connection. It reads into a pooled buffer,
 * parses with llhttp in strict mode, enforces the limits, routes, and hands
 * the request to proxy.c (or answers it itself: errors, Lua handler routes).
 * Requests on one connection are handled strictly one after the other: the
 * parser pauses at the end of each message, so pipelined requests wait in
 * the buffer and their answers go out in order.
 *
 * Ownership: the worker owns the connection (worker->conns); the connection
 * owns its buffer and its current request; the request borrows an upstream
 * connection from its pool while it runs.
 *
 * On a TLS listener the connection also owns an mg_conn_tls_t: bytes read
 * from the socket go through it (tls_pump) into the same buffer plain
 * connections read into, and everything written goes through conn_write.
 * The rest of the file never knows the difference.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gateway.h"
#include <lua.h>
#include "accesslog.h"
#include "cache.h"
#include "errlog.h"
#include "hooks.h"
#include "lua_route.h"
#include "metrics.h"
#include "tls.h"
#include "trace.h"
#include "upgrade.h"
#include "uri.h"

/* A chunk-size line with its extensions is at most this long (400 beyond):
 * a client cannot make the gateway wait on one without end. */
#define MG_CHUNK_LINE_MAX 4096

static llhttp_settings_t req_settings;
static int settings_ready;

static void conn_close(mg_conn_t *c);
static void conn_parse(mg_conn_t *c);
static void request_finish(mg_conn_t *c);
static void finish_after_write(mg_conn_t *c);
static void serve_cached(mg_conn_t *c);
static void send_cached(mg_conn_t *c);
static void local_answer_sent(mg_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static int conn_write(mg_conn_t *c, const uv_buf_t *bufs, unsigned n);
static void tls_schedule_pump(mg_conn_t *c);

/* TLS state of a connection on a TLS listener (see the top of the file). */
struct mg_conn_tls_s {
    mg_tls_conn_t *t;
    uv_idle_t pump;       /* decrypts input already received, next loop turn */
    uint8_t first_seen;   /* the first bytes were checked for plain HTTP */
    uint8_t handshaken;   /* counted in the metrics */
};

/* ---- small helpers ---------------------------------------------------- */

const char *mg_conn_data(const mg_conn_t *c, mg_span_t s) { return c->buf.data + s.off; }

static int span_ieq(const mg_conn_t *c, mg_span_t s, const char *lit, size_t n)
{
    return s.len == n && strncasecmp(c->buf.data + s.off, lit, n) == 0;
}

static uint64_t now_ms(mg_conn_t *c) { return uv_now(&c->w->loop); }

const char *mg_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- deadlines ----------------------------------------------------------
 * One timer per connection. Moving a deadline later only stores it; the
 * timer is re-armed lazily when it fires early, so the hot path does not
 * touch the timer heap. */

static void on_timer(uv_timer_t *t);

/* The timer is armed at most `header` timeout ahead (the shortest wait a
 * connection usually has), so that the switch from a long keep-alive wait
 * to the shorter header wait of the next request needs no re-arming. */
static void arm(mg_conn_t *c, uint64_t now, uint64_t ms)
{
    uint64_t cap = c->w->g->cfg->timeouts.header;
    if (ms > cap)
        ms = cap;
    uv_timer_start(&c->timer, on_timer, ms, 0);
    c->timer_armed = 1;
    c->timer_expiry = now + ms;
}

static void set_deadline(mg_conn_t *c, uint64_t ms)
{
    uint64_t now = now_ms(c);
    c->deadline = ms == UINT64_MAX ? UINT64_MAX : now + ms;
    if (c->deadline == UINT64_MAX)
        return;
    if (!c->timer_armed || c->deadline < c->timer_expiry)
        arm(c, now, ms);
}

static void on_timer(uv_timer_t *t)
{
    mg_conn_t *c = mg_container_of(t, mg_conn_t, timer);
    uint64_t now = now_ms(c);
    c->timer_armed = 0;
    if (c->state == MG_CS_CLOSING)
        return;
    if (c->deadline != UINT64_MAX && now < c->deadline) {
        arm(c, now, c->deadline - now);
        return;
    }
    if (c->deadline == UINT64_MAX)
        return;
    mg_request_t *r = c->r;
    if (c->wq.pending > 0 || c->state == MG_CS_TUNNEL || !r) {
        conn_close(c); /* stalled writer, idle tunnel or idle keep-alive */
        return;
    }
    if ((r->state == MG_RS_HEAD || r->state == MG_RS_PEEK || r->state == MG_RS_BUFFER ||
         r->state == MG_RS_BODY || r->state == MG_RS_UPSTREAM) &&
        !r->response_started) {
        if (r->up) {
            /* a body cut short: that upstream connection is never reused */
            mg_proxy_detach(r->up, 0);
            r->up = NULL;
        }
        r->response_close = 1;
        mg_conn_respond_error(c, 408, "request timeout");
        return;
    }
    conn_close(c);
}

/* ---- buffers and reading ---------------------------------------------- */

static void start_reading(mg_conn_t *c)
{
    if (!c->reading && !c->throttled && c->state != MG_CS_CLOSING) {
        /* a connection without a socket (mg_conn_feed) only notes it */
        if (c->wq.sink || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    }
    /* input TLS already holds will not make the socket readable again */
    if (c->tls && c->reading)
        tls_schedule_pump(c);
}

static void stop_reading(mg_conn_t *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* Ciphertext lands here and goes straight into the TLS state: one per
 * worker thread is enough (on_alloc and on_read run back to back). */
static _Thread_local char tls_in[32768];

/* Makes sure c has a read buffer, grown for a long head within the limits;
 * returns the free room (0 when full or out of memory). */
static size_t buf_room(mg_conn_t *c)
{
    if (!c->buf.data)
        mg_worker_buf_get(c->w, &c->buf);
    if (c->buf.data && c->buf.len == c->buf.cap && c->r &&
        (c->r->state == MG_RS_HEAD || c->r->chunk_line)) {
        /* a long head: grow up to what the limits allow (plus one byte so
         * that the limit itself is detected by the parser callbacks); a
         * chunk line waited for after it gets its own bound on top */
        const mg_limits_t *l = &c->r->g->cfg->limits;
        size_t max = l->request_line + l->header_size + 1024;
        if (c->r->chunk_line)
            max += MG_CHUNK_LINE_MAX;
        if (c->buf.cap < max)
            mg_worker_buf_grow(c->w, &c->buf, c->buf.cap * 2 < max ? c->buf.cap * 2 : max);
    }
    return c->buf.data ? c->buf.cap - c->buf.len : 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    mg_conn_t *c = (mg_conn_t *)h;
    if (c->tls) {
        *b = uv_buf_init(tls_in, sizeof(tls_in));
        return;
    }
    if (buf_room(c) == 0) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(c->buf.data + c->buf.len, c->buf.cap - c->buf.len);
}

static void release_buf_if_empty(mg_conn_t *c)
{
    if (c->buf.data && !c->r && c->buf.len == c->buf.parsed) {
        c->buf.len = c->buf.parsed = 0;
        mg_worker_buf_put(c->w, &c->buf);
    }
}

/* New bytes in c->buf: to the upstream of a tunnel, else to the parser. */
static void deliver(mg_conn_t *c)
{
    if (c->state == MG_CS_TUNNEL) {
        mg_request_t *r = c->r;
        int rc = r && r->up ? mg_proxy_tunnel_write(r->up, c->buf.data, c->buf.len) : -1;
        c->buf.len = c->buf.parsed = 0;
        if (rc < 0)
            conn_close(c);
        return;
    }
    conn_parse(c);
}

/* ---- TLS ----------------------------------------------------------------- */

/* Sends the records TLS produced (handshake messages, encrypted answers). */
static int tls_flush(mg_conn_t *c)
{
    const char *p;
    size_t len = mg_tls_out(c->tls->t, &p);
    if (len == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int rc = mg_wq_write(&c->wq, &b, 1); /* copies what the kernel refuses */
    mg_tls_out_done(c->tls->t);
    return rc;
}

/* Decrypts what TLS holds into c->buf and hands it on, as long as there is
 * room and the upstream side is not pushing back. A full buffer stops
 * reading exactly as on a plain connection; start_reading schedules the
 * rest. */
static void tls_pump(mg_conn_t *c)
{
    mg_tls_conn_t *t = c->tls->t;
    while (c->state == MG_CS_OPEN || c->state == MG_CS_TUNNEL) {
        int got = 0, rc = MG_TLS_AGAIN;
        while (!c->throttled) {
            size_t room = buf_room(c);
            if (room == 0)
                break;
            rc = mg_tls_read(t, c->buf.data + c->buf.len, room);
            if (tls_flush(c) < 0) {
                conn_close(c);
                return;
            }
            if (!c->tls->handshaken && mg_tls_handshake_done(t)) {
                c->tls->handshaken = 1;
                mg_metrics_tls_handshake(1);
            }
            if (rc <= 0)
                break;
            c->buf.len += (uint32_t)rc;
            got = 1;
        }
        if (rc == MG_TLS_CLOSED || rc == MG_TLS_ERROR) {
            if (rc == MG_TLS_ERROR && !c->tls->handshaken)
                mg_metrics_tls_handshake(0);
            if (!got) {
                conn_close(c);
                return;
            }
        }
        if (!got) {
            if (!c->throttled && buf_room(c) == 0 && mg_tls_has_input(t)) {
                /* as on_read's UV_ENOBUFS for plain connections */
                stop_reading(c);
                if (c->r && c->r->state == MG_RS_HEAD) {
                    c->r->response_close = 1;
                    mg_conn_respond_error(c, 431, "request header fields too large");
                }
            }
            return;
        }
        deliver(c);
        if (rc == MG_TLS_CLOSED || rc == MG_TLS_ERROR) {
            conn_close(c);
            return;
        }
    }
}

static void on_tls_pump(uv_idle_t *h)
{
    mg_conn_t *c = h->data;
    uv_idle_stop(h);
    if (c->reading && !c->throttled)
        tls_pump(c);
}

static void tls_schedule_pump(mg_conn_t *c)
{
    if (!c->throttled && c->state != MG_CS_CLOSING && mg_tls_has_input(c->tls->t))
        uv_idle_start(&c->tls->pump, on_tls_pump);
}

mg_tls_conn_t *mg_conn_tls(const mg_conn_t *c) { return c->tls ? c->tls->t : NULL; }

/* A plain HTTP request on a TLS port gets a readable answer instead of a
 * handshake failure the user would have to decode. */
static int looks_like_plain_http(const char *p, size_t n)
{
    return n > 0 && p[0] >= 'A' && p[0] <= 'Z';
}

static void refuse_plain_http(mg_conn_t *c)
{
    static const char body[] =
        "{\"error\":\"plain HTTP sent to a TLS port: use https:// for this address\"}";
    char msg[256];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof(body) - 1, body);
    uv_buf_t b = uv_buf_init(msg, (unsigned)n);
    stop_reading(c);
    if (mg_wq_write(&c->wq, &b, 1) < 0 || c->wq.pending == 0) {
        conn_close(c);
        return;
    }
    c->closing_after_write = 1;
}

static void tls_on_read(mg_conn_t *c, const char *data, size_t n)
{
    if (!c->tls->first_seen) {
        c->tls->first_seen = 1;
        if (looks_like_plain_http(data, n)) {
            refuse_plain_http(c);
            return;
        }
    }
    if (mg_tls_feed(c->tls->t, data, n) < 0) {
        conn_close(c);
        return;
    }
    tls_pump(c);
}

/* All writes to the client: encrypted first on a TLS connection (small
 * pieces go out as one record). */
static int conn_write(mg_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (!c->tls)
        return mg_wq_write(&c->wq, bufs, n);
    static _Thread_local char joined[16384];
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (n > 1 && total <= sizeof(joined)) {
        size_t at = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(joined + at, bufs[i].base, bufs[i].len);
            at += bufs[i].len;
        }
        if (mg_tls_write(c->tls->t, joined, total) < 0)
            return UV_EPROTO;
    } else {
        for (unsigned i = 0; i < n; i++)
            if (mg_tls_write(c->tls->t, bufs[i].base, bufs[i].len) < 0)
                return UV_EPROTO;
    }
    return tls_flush(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mg_conn_t *c = (mg_conn_t *)s;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS) {
            /* buffer full (head at its limit or pipelined data waiting) */
            stop_reading(c);
            if (c->r && c->r->state == MG_RS_HEAD) {
                c->r->response_close = 1;
                mg_conn_respond_error(c, 431, "request header fields too large");
            }
            return;
        }
        conn_close(c);
        return;
    }
    if (c->tls) {
        tls_on_read(c, b->base, (size_t)nread);
        return;
    }
    c->buf.len += (uint32_t)nread;
    deliver(c);
}

/* ---- the request object ----------------------------------------------- */

/* Gives r room for the limits of generation g (a reload may raise them). */
static int request_fit(mg_request_t *r, const mg_limits_t *l)
{
    if (r->headers_cap < l->header_count + 1) {
        mg_header_t *h = realloc(r->headers, sizeof(mg_header_t) * (l->header_count + 1));
        if (!h)
            return -1;
        r->headers = h;
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

static mg_request_t *request_new(mg_conn_t *c)
{
    mg_worker_t *w = c->w;
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
    if (request_fit(r, l) < 0) {
        r->next_free = w->free_requests;
        w->free_requests = r;
        return NULL;
    }
    mg_header_t *headers = r->headers;
    uint32_t headers_cap = r->headers_cap;
    char *scratch = r->scratch;
    size_t cap = r->scratch_cap;
    uint32_t slot = r->slot;
    /* the edit arrays and the inline arena after it need no clearing */
    memset(r, 0, offsetof(mg_request_t, req_edits));
    r->headers = headers;
    r->headers_cap = headers_cap;
    r->scratch = scratch;
    r->scratch_cap = cap;
    r->slot = slot;
    r->g = mg_wgen_hold(w->g);
    r->c = c;
    r->target = -1;
    r->upstream_override = -1;
    r->target_override = -1;
    r->http_minor = 1; /* until the request line says otherwise */
    r->state = MG_RS_HEAD;
    r->start_ns = uv_hrtime();
    return r;
}

static void request_free(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (!r)
        return;
    if (r->up) {
        mg_proxy_detach(r->up, 0);
        r->up = NULL;
    }
    mg_hooks_release(r);
    mg_cache_release(r);
    mg_request_arena_reset(r);
    free(r->body_buf);
    r->body_buf = NULL;
    mg_wgen_release(r->g);
    r->g = NULL;
    c->r = NULL;
    r->next_free = c->w->free_requests;
    c->w->free_requests = r;
}

/* ---- llhttp callbacks --------------------------------------------------- */

/* A callback refuses the request. llhttp replaces the reason of some
 * callbacks' errors with its own ("User callback error"), so status and
 * reason are kept on the request for conn_parse. */
static int fail(llhttp_t *p, int status, const char *reason)
{
    mg_conn_t *c = p->data;
    if (c->r) {
        c->r->status = status;
        c->r->error_reason = reason;
    }
    llhttp_set_error_reason(p, reason);
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    if (!c->r) {
        c->r = request_new(c);
        if (!c->r)
            return fail(p, 503, "out of memory");
    }
    /* The head must be complete `header` after the wait for it began: on a
     * new connection that was the accept (a first byte sent late buys no
     * time), after a request the end of its keep-alive wait. */
    uint64_t header = c->w->g->cfg->timeouts.header;
    if (c->requests > 0 || c->deadline == UINT64_MAX || c->deadline > now_ms(c) + header)
        set_deadline(c, header);
    return 0;
}

static uint32_t off_of(mg_conn_t *c, const char *at) { return (uint32_t)(at - c->buf.data); }

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    if (r->method.len == 0)
        r->method.off = off_of(c, at);
    r->method.len += (uint32_t)len;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    if (r->url.len == 0)
        r->url.off = off_of(c, at);
    r->url.len += (uint32_t)len;
    if (r->url.len + r->method.len + 10 > c->r->g->cfg->limits.request_line)
        return fail(p, 414, "request line too long");
    /* "GET /\r\n" is an HTTP/0.9 request line: llhttp would wait for a
     * header line after it, and the client for an answer. The byte that
     * ended the span is in the buffer. */
    if (at + len < c->buf.data + c->buf.len && (at[len] == '\r' || at[len] == '\n'))
        return fail(p, 400, "request line without an HTTP version (HTTP/0.9)");
    return 0;
}

/* Counts header bytes (names, values and their ": " and CRLF); true once
 * they exceed the limit. */
static int head_grow(mg_conn_t *c, size_t len)
{
    mg_request_t *r = c->r;
    r->head_bytes += (uint32_t)len;
    return r->head_bytes > c->r->g->cfg->limits.header_size;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    if (head_grow(c, len + 4))
        return fail(p, 431, "request header fields too large");
    if (r->nheaders == 0 || r->last_was_value) {
        if (r->nheaders >= c->r->g->cfg->limits.header_count)
            return fail(p, 431, "too many header fields");
        mg_header_t *h = &r->headers[r->nheaders++];
        h->name.off = off_of(c, at);
        h->name.len = 0;
        h->value.off = 0;
        h->value.len = 0;
        r->last_was_value = 0;
    }
    r->headers[r->nheaders - 1].name.len += (uint32_t)len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    if (head_grow(c, len))
        return fail(p, 431, "request header fields too large");
    /* llhttp folds obs-fold lines into the value and lets a lone CR through:
     * both are ambiguous between servers (RFC 9112 5.2), so refuse them */
    if (memchr(at, '\n', len) || memchr(at, '\r', len))
        return fail(p, 400, "obs-fold or bare CR in a header value");
    mg_header_t *h = &r->headers[r->nheaders - 1];
    if (!r->last_was_value) {
        h->value.off = off_of(c, at);
        r->last_was_value = 1;
    } else if (off_of(c, at) != h->value.off + h->value.len) {
        /* a second piece that does not follow the first: llhttp joined an
         * obs-fold continuation line */
        return fail(p, 400, "obs-fold header continuation");
    }
    h->value.len += (uint32_t)len;
    return 0;
}

/* Fields that must not appear twice: which copy counts would differ between
 * the gateway (its checks, hooks, routing) and the upstream. RFC 9110 5.3:
 * none of them is a list. (Two Content-Length fields llhttp refuses itself.) */
static const char *const dup_reason[MG_H__COUNT] = {
    [MG_H_HOST] = "duplicate Host header",
    [MG_H_REQUEST_ID] = "duplicate X-Request-Id header",
    [MG_H_TRANSFER_ENCODING] = "duplicate Transfer-Encoding header",
    [MG_H_CONTENT_LENGTH] = "duplicate Content-Length header",
    [MG_H_AUTHORIZATION] = "duplicate Authorization header",
    [MG_H_PROXY_AUTHORIZATION] = "duplicate Proxy-Authorization header",
    [MG_H_CONTENT_TYPE] = "duplicate Content-Type header",
};

/* Remembers the headers the core itself acts on. Returns NULL, or why the
 * request is refused (400). */
static const char *classify_header(mg_conn_t *c, uint32_t i)
{
    mg_request_t *r = c->r;
    mg_span_t n = r->headers[i].name;
    int k = -1;
    switch (n.len) {
    case 0: return "empty header field name"; /* ": v": llhttp lets it by */
    case 4: if (span_ieq(c, n, "host", 4)) k = MG_H_HOST; break;
    case 6: if (span_ieq(c, n, "expect", 6)) k = MG_H_EXPECT; break;
    case 7: if (span_ieq(c, n, "upgrade", 7)) k = MG_H_UPGRADE; break;
    case 10: if (span_ieq(c, n, "connection", 10)) k = MG_H_CONNECTION; break;
    case 12:
        if (span_ieq(c, n, "x-request-id", 12))
            k = MG_H_REQUEST_ID;
        else if (span_ieq(c, n, "content-type", 12))
            k = MG_H_CONTENT_TYPE;
        break;
    case 13: if (span_ieq(c, n, "authorization", 13)) k = MG_H_AUTHORIZATION; break;
    case 14: if (span_ieq(c, n, "content-length", 14)) k = MG_H_CONTENT_LENGTH; break;
    case 19: if (span_ieq(c, n, "proxy-authorization", 19)) k = MG_H_PROXY_AUTHORIZATION; break;
    case 15: if (span_ieq(c, n, "x-forwarded-for", 15)) k = MG_H_XFF; break;
    case 11: if (span_ieq(c, n, "traceparent", 11)) k = MG_H_TRACEPARENT; break;
    case 17: if (span_ieq(c, n, "transfer-encoding", 17)) k = MG_H_TRANSFER_ENCODING; break;
    default: break;
    }
    if (k < 0)
        return NULL;
    if (r->known[k] && dup_reason[k])
        return dup_reason[k]; /* a second Host is ambiguous: which one routes? */
    if (r->known[k] && k == MG_H_TRACEPARENT)
        r->trace_bad = 1; /* W3C: two of them are no trace to continue */
    if (!r->known[k])
        r->known[k] = (uint16_t)(i + 1);
    return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    /* llhttp takes any 1.x and 0.9 (below); 2.0 and up are other protocols */
    if (p->http_major != 1)
        return fail(p, 505, "HTTP version not supported");
    for (uint32_t i = 0; i < r->nheaders; i++) {
        /* llhttp keeps the OWS after a value; it is not part of it (RFC
         * 9112 5): "Host: a " is host "a" */
        mg_span_t *v = &r->headers[i].value;
        while (v->len > 0 && (c->buf.data[v->off + v->len - 1] == ' ' ||
                              c->buf.data[v->off + v->len - 1] == '\t'))
            v->len--;
        const char *why = classify_header(c, i);
        if (why)
            return fail(p, 400, why);
    }
    /* llhttp checks this only after on_headers_complete, which pauses before
     * the head goes upstream: check it here. The only coding a request may
     * carry is a final "chunked" (anything else is 400, never forwarded). */
    if (r->known[MG_H_TRANSFER_ENCODING]) {
        mg_span_t v = r->headers[r->known[MG_H_TRANSFER_ENCODING] - 1].value;
        const char *s = mg_conn_data(c, v);
        size_t a = 0, b = v.len;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b - a != 7 || strncasecmp(s + a, "chunked", 7) != 0 || !(p->flags & F_CHUNKED))
            return fail(p, 400, "unsupported Transfer-Encoding");
    }
    r->http_minor = p->http_minor;
    r->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    r->chunked = (p->flags & F_CHUNKED) ? 1 : 0;
    r->chunk_line = r->chunked; /* the first one follows the head */
    r->has_body = r->chunked || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0;
    /* a gateway is no forward proxy: CONNECT would ask for a raw tunnel */
    if (p->method == HTTP_CONNECT)
        return fail(p, 405, "CONNECT is not supported");
    /* RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored (a proxy
     * that honoured it could be told to open a tunnel past a 1.0 hop). */
    if (p->upgrade && p->http_minor == 0)
        p->upgrade = 0;
    r->is_upgrade = p->upgrade ? 1 : 0;
    r->head_method = p->method == HTTP_HEAD;
    switch (p->method) {
    case HTTP_GET: case HTTP_HEAD: case HTTP_PUT: case HTTP_DELETE:
    case HTTP_OPTIONS: case HTTP_TRACE:
        r->idempotent = 1;
        break;
    default:
        break;
    }
    r->state = MG_RS_UPSTREAM;
    /* Handled in conn_parse once llhttp returns: routing may need to wait
     * for an upstream connection before the body is read. */
    return HPE_PAUSED;
}

/* Starts timing a request body: timeouts.body between reads, and
 * limits.min_body_rate averaged over windows once body_grace is over. */
static void body_timing_start(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    r->body_start_ms = r->window_start_ms = now_ms(c);
    r->window_bytes = r->body_received;
    set_deadline(c, c->w->g->cfg->timeouts.body);
}

/* Body bytes arrived: the idle wait starts again, and a window that is
 * over must have brought min_body_rate. Returns -1 when the body is too
 * slow. Time spent throttled (the upstream not taking the body) is not
 * counted: mg_conn_throttle starts a new window. */
static int body_progress(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    const mg_config_t *cfg = c->w->g->cfg;
    uint64_t now = now_ms(c);
    if (r->body_start_ms == 0) { /* a body dropped after a local answer */
        r->body_start_ms = r->window_start_ms = now;
        r->window_bytes = r->body_received;
    }
    if (c->wq.pending == 0)
        set_deadline(c, cfg->timeouts.body); /* else the send wait holds */
    uint64_t span = now - r->window_start_ms;
    if (!cfg->limits.min_body_rate || span < cfg->timeouts.body_rate_window)
        return 0;
    uint64_t got = r->body_received - r->window_bytes;
    if (now - r->body_start_ms >= cfg->timeouts.body_grace &&
        got * 1000 / span < cfg->limits.min_body_rate)
        return -1;
    r->window_start_ms = now;
    r->window_bytes = r->body_received;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    r->body_received += len;
    uint64_t max = r->route ? r->route->max_body : r->g->cfg->limits.body;
    if (r->body_received > max)
        return fail(p, 413, "request body too large");
    if (body_progress(c) < 0)
        return fail(p, 408, "request body too slow");
    if (r->state == MG_RS_BUFFER) {
        /* req:body(): keep it all (bounded by max above) */
        if (r->body_len + len > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 16384;
            while (cap < r->body_len + len)
                cap *= 2;
            char *nb = realloc(r->body_buf, cap);
            if (!nb)
                return fail(p, 503, "out of memory");
            r->body_buf = nb;
            r->body_cap = cap;
        }
        memcpy(r->body_buf + r->body_len, at, len);
        r->body_len += len;
        return 0;
    }
    if (r->state != MG_RS_BODY || !r->up)
        return 0; /* answered locally: the body is read and dropped */
    char pre[24];
    uv_buf_t bufs[3];
    unsigned n = 0;
    if (r->chunked) {
        int k = snprintf(pre, sizeof(pre), "%zx\r\n", len);
        bufs[n++] = uv_buf_init(pre, (unsigned)k);
    }
    bufs[n++] = uv_buf_init((char *)at, (unsigned)len);
    if (r->chunked)
        bufs[n++] = uv_buf_init("\r\n", 2);
    r->body_started = 1;
    if (mg_proxy_send_body(r->up, bufs, n) < 0)
        return fail(p, 502, "upstream write failed");
    return 0;
}

/* The "0" chunk ends the chunks: what follows is trailers, not a line. */
static int on_chunk_header(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    if (p->content_length == 0)
        c->r->last_chunk = 1;
    return 0;
}

/* The next chunk-size line starts here: pause so that conn_parse checks it
 * (chunk_line) before llhttp reads it. */
static int on_chunk_complete(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    if (c->r->last_chunk)
        return 0;
    c->r->chunk_line = 1;
    return HPE_PAUSED;
}

static int push_body(struct lua_State *co, void *arg);

static int on_message_complete(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    if (r->state == MG_RS_BODY && r->up) {
        if (r->chunked) {
            uv_buf_t end = uv_buf_init("0\r\n\r\n", 5);
            if (mg_proxy_send_body(r->up, &end, 1) < 0)
                return fail(p, 502, "upstream write failed");
        }
        r->state = MG_RS_WAIT;
        set_deadline(c, UINT64_MAX);
        mg_proxy_request_sent(r->up);
    } else if (r->state == MG_RS_LOCAL) {
        r->state = MG_RS_DONE;
    } else if (r->state == MG_RS_BUFFER) {
        r->body_buffered = 1;
        r->state = MG_RS_UPSTREAM;
        set_deadline(c, UINT64_MAX);
        if (r->body_hc) {
            mg_hook_wake_later(r->body_hc, push_body, r);
            r->body_hc = NULL;
        }
    }
    c->paused_parser = 1;
    return HPE_PAUSED;
}

static void init_settings(void)
{
    llhttp_settings_init(&req_settings);
    req_settings.on_message_begin = on_message_begin;
    req_settings.on_method = on_method;
    req_settings.on_url = on_url;
    req_settings.on_chunk_header = on_chunk_header;
    req_settings.on_chunk_complete = on_chunk_complete;
    req_settings.on_header_field = on_header_field;
    req_settings.on_header_value = on_header_value;
    req_settings.on_headers_complete = on_headers_complete;
    req_settings.on_body = on_body;
    req_settings.on_message_complete = on_message_complete;
    settings_ready = 1;
}

/* ---- request processing ------------------------------------------------- */

/* Continues the client's trace or starts one; the gateway's span is new. */
static void assign_trace(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    mg_worker_t *w = c->w;
    r->traced = 1;
    if (r->known[MG_H_TRACEPARENT] && !r->trace_bad) {
        mg_span_t v = r->headers[r->known[MG_H_TRACEPARENT] - 1].value;
        r->trace_continued =
            mg_trace_parse(mg_conn_data(c, v), v.len, r->trace_id, r->trace_flags) == 0;
    }
    if (!r->trace_continued) {
        mg_trace_random_hex(&w->trace_rng, r->trace_id, sizeof(r->trace_id));
        memcpy(r->trace_flags, "01", 2); /* a new trace is recorded (sampled) */
    }
    mg_trace_random_hex(&w->trace_rng, r->span_id, sizeof(r->span_id));
}

static void assign_request_id(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (!r->traced)
        assign_trace(c);
    if (r->known[MG_H_REQUEST_ID]) {
        mg_span_t v = r->headers[r->known[MG_H_REQUEST_ID] - 1].value;
        if (mg_ffi_request_id_check(mg_conn_data(c, v), v.len) == 0) {
            memcpy(r->request_id, mg_conn_data(c, v), v.len);
            r->request_id_len = v.len;
            r->request_id[v.len] = 0;
            return;
        }
    }
    mg_worker_t *w = c->w;
    memcpy(r->request_id, w->reqid_prefix, 12);
    mg_hex16(++w->reqid_counter, r->request_id + 12);
    r->request_id_len = 28;
    r->request_id[28] = 0;
}

static const char *header_get(void *ctx, const char *name, size_t name_len, size_t *value_len)
{
    mg_conn_t *c = ctx;
    mg_request_t *r = c->r;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_span_t n = r->headers[i].name;
        if (n.len == name_len && strncasecmp(mg_conn_data(c, n), name, name_len) == 0) {
            *value_len = r->headers[i].value.len;
            return mg_conn_data(c, r->headers[i].value);
        }
    }
    return NULL;
}

/* Splits the target into normalised path and query (both in scratch).
 * Returns 0, or -1 for a target we refuse (400). */
static int prepare_target(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    const char *url = mg_conn_data(c, r->url);
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
static const char *request_host(mg_conn_t *c, size_t *len)
{
    mg_request_t *r = c->r;
    if (!r->known[MG_H_HOST]) {
        *len = 0;
        return "";
    }
    mg_span_t h = r->headers[r->known[MG_H_HOST] - 1].value;
    *len = h.len;
    return mg_conn_data(c, h);
}

/* The escaped_slashes mode that applies to r: that of the route its path
 * reaches as received (escapes kept), else that of its listener. */
static int slashes_mode(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    const mg_config_t *cfg = r->g->cfg;
    mg_route_match_t m;
    size_t host_len;
    const char *host = request_host(c, &host_len);
    if (mg_router_match(r->g->router, c->local_port, mg_conn_data(c, r->method), r->method.len,
                        host, host_len, r->path, r->path_len, header_get, c,
                        &m) == MG_ROUTE_OK &&
        m.route->escaped_slashes != MG_SLASHES_INHERIT)
        return m.route->escaped_slashes;
    return c->listener < cfg->nlisteners ? cfg->listeners[c->listener].escaped_slashes
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
static int escaped_slashes(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    int found = mg_uri_escaped_slashes(r->path, r->path_len);
    if (!found)
        return 0;
    int mode = slashes_mode(c);
    if (mode == MG_SLASHES_KEEP)
        return 0;
    if (mode == MG_SLASHES_REJECT || (found & MG_URI_NESTED_SLASH)) {
        r->response_close = 1;
        mg_conn_respond_error(c, 400, (found & MG_URI_NESTED_SLASH)
                                          ? "encoded escaped slash (%252F, %255C) in path"
                                          : "escaped slash (%2F, %5C) in path");
        return 1;
    }
    /* decode or redirect: normalise the path as received again, with the
     * escaped slashes as separators (dot segments included) */
    const char *url = mg_conn_data(c, r->url);
    size_t plen = (size_t)(r->query_len ? r->query - url : (ptrdiff_t)r->url.len), dlen;
    char *d = r->scratch + r->scratch_used;
    if (mg_uri_normalize_path(url, plen, d, &dlen, MG_URI_DECODE_SLASHES) < 0 ||
        mg_uri_escaped_slashes(d, dlen)) {
        r->response_close = 1;
        mg_conn_respond_error(c, 400, "bad request target");
        return 1;
    }
    if (mode == MG_SLASHES_REDIRECT) {
        /* scratch holds it: path, decoded path and this are each below
         * the request line limit (request_fit) */
        char *loc = d + dlen + 1, *o = loc, body[160];
        memcpy(o, "Location: ", 10);
        o += 10;
        memcpy(o, d, dlen);
        o += dlen;
        memcpy(o, r->query, r->query_len);
        o += r->query_len;
        memcpy(o, "\r\n", 2);
        o += 2;
        int bn = snprintf(body, sizeof(body),
                          "{\"error\":\"escaped slash in path: see Location\",\"status\":307,"
                          "\"request_id\":\"%s\"}\n", r->request_id);
        r->state = MG_RS_LOCAL;
        r->response_close = 1; /* a body the client sent is not read */
        mg_conn_respond(c, 307, "application/json", body, (size_t)bn, loc, (size_t)(o - loc));
        return 1;
    }
    r->path = d;
    r->path_len = dlen;
    r->scratch_used += dlen + 1;
    return 0;
}

/* Checks the chunk-size line at c->buf.parsed (RFC 9112 7.1: at most 16 hex
 * digits, then chunk-ext = *( BWS ";" BWS token [ BWS "=" BWS ( token /
 * quoted-string ) ] ), then CRLF; MG_CHUNK_LINE_MAX bytes in all) and hides
 * what follows the digits from llhttp, whose extension parser refuses valid
 * ones and accepts invalid ones: the digits are moved up to the CR and
 * parsing starts at them, so llhttp sees "<size>\r\n". Extensions are never
 * forwarded (the body is re-chunked). Returns 1 (good; buf.parsed may have
 * moved), 0 (not complete yet) or -1 (invalid or too long: 400). */
static int chunk_line(mg_conn_t *c)
{
    char *s = c->buf.data + c->buf.parsed;
    size_t n = c->buf.len - c->buf.parsed, i = 0, digits;
    int full = n >= MG_CHUNK_LINE_MAX; /* nothing past the bound counts */
    if (full)
        n = MG_CHUNK_LINE_MAX;
#define NEED()                                                                                 \
    do {                                                                                       \
        if (i >= n)                                                                            \
            return full ? -1 : 0;                                                              \
    } while (0)
#define OWS()                                                                                  \
    do {                                                                                       \
        while (i < n && (s[i] == ' ' || s[i] == '\t'))                                         \
            i++;                                                                               \
        NEED();                                                                                \
    } while (0)
    while (i < n && isxdigit((unsigned char)s[i]))
        i++;
    if (i > 16)
        return -1;
    NEED();
    if (i == 0)
        return -1;
    digits = i;
    for (;;) {
        size_t ws = i;
        OWS();
        if (s[i] == '\r') {
            if (i != ws)
                return -1; /* BWS only comes before a ';' */
            break;
        }
        if (s[i] != ';')
            return -1;
        i++;
        OWS();
        size_t name = i;
        while (i < n && mg_token_char((unsigned char)s[i]))
            i++;
        NEED();
        if (i == name)
            return -1; /* ";=v", ";;" */
        OWS();
        if (s[i] != '=')
            continue;
        i++;
        OWS();
        if (s[i] == '"') {
            for (i++;; i++) {
                NEED();
                unsigned char ch = (unsigned char)s[i];
                if (ch == '"')
                    break;
                if (ch == '\\') { /* quoted-pair: HTAB / SP / VCHAR / obs-text */
                    i++;
                    NEED();
                    ch = (unsigned char)s[i];
                    if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
                        return -1;
                } else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
                    return -1; /* qdtext excludes controls (and CR, LF) */
                }
            }
            i++;
        } else {
            size_t v = i;
            while (i < n && mg_token_char((unsigned char)s[i]))
                i++;
            NEED();
            if (i == v)
                return -1; /* ";a=" */
        }
    }
    i++; /* the CR */
    NEED();
    if (s[i] != '\n')
        return -1;
#undef OWS
#undef NEED
    i--; /* back on the CR */
    if (i > digits) {
        memmove(s + i - digits, s, digits);
        c->buf.parsed += (uint32_t)(i - digits);
    }
    return 1;
}

/* Runs a hook phase; returns 1 when the pipeline stops here (the hook
 * waits, answered, or failed and was answered 500). */
static int run_phase(mg_conn_t *c, int phase)
{
    int rc = mg_hooks_run(c->r, phase);
    if (rc == MG_HOOK_DONE)
        return 0;
    if (rc == MG_HOOK_ERROR && c->r)
        mg_conn_respond_error(c, 500, "hook error");
    return 1;
}

static void respond_405(mg_conn_t *c);

/* The steps of a request after its head, each resumable after a hook that
 * waited: on_request, routing, on_route, route policies, then the handler or
 * the upstream. `done` is the last phase already finished. */
static void continue_request(mg_conn_t *c, int done)
{
    mg_request_t *r = c->r;
    if (done < MG_PHASE_REQUEST && mg_hooks_has(r->g, NULL, MG_PHASE_REQUEST) &&
        run_phase(c, MG_PHASE_REQUEST))
        return;
    if (done < MG_PHASE_ROUTE) {
        size_t host_len;
        const char *host = request_host(c, &host_len);
        const char *method = mg_conn_data(c, r->method);
        size_t mlen = r->method.len;
        if (r->new_method) {
            method = r->new_method;
            mlen = r->new_method_len;
        }
        r->route_rc = mg_router_match(r->g->router, c->local_port, method, mlen, host, host_len,
                                      r->path, r->path_len, header_get, c, &r->match);
        r->route = r->route_rc == MG_ROUTE_OK ? r->match.route : NULL;
        if (mg_hooks_has(r->g, NULL, MG_PHASE_ROUTE) && run_phase(c, MG_PHASE_ROUTE))
            return;
    }
    mg_upgrade_settle(c); /* before policies: they decide on what goes */
    if (!r->route && r->upstream_override < 0) {
        r->state = MG_RS_LOCAL;
        if (r->route_rc == MG_ROUTE_BAD_METHOD)
            respond_405(c);
        else
            mg_conn_respond_error(c, 404, "no route");
        return;
    }
    uint64_t max_body = r->route ? r->route->max_body : r->g->cfg->limits.body;
    if (r->content_length > max_body) {
        r->response_close = 1;
        mg_conn_respond_error(c, 413, "request body too large");
        return;
    }
    if (done < MG_PHASE_ACCESS && r->route && mg_hooks_has(r->g, r->route, MG_PHASE_ACCESS) &&
        run_phase(c, MG_PHASE_ACCESS))
        return;
    if (r->route && r->route->has_handler && r->upstream_override < 0) {
        r->state = MG_RS_LOCAL;
        mg_lua_route_call(c);
        return;
    }
    if (r->route && r->route->cache && !r->cache_looked) {
        int todo = mg_cache_lookup(r);
        if (todo == MG_CACHE_SERVE) {
            serve_cached(c);
            return;
        }
        if (todo == MG_CACHE_WAIT)
            return; /* mg_conn_cache_ready goes on */
    }
    if (r->is_upgrade && r->has_body) {
        r->response_close = 1;
        mg_conn_respond_error(c, 400, "upgrade request with a body");
        return;
    }
    if (r->known[MG_H_EXPECT] && r->has_body) {
        mg_span_t v = r->headers[r->known[MG_H_EXPECT] - 1].value;
        if (span_ieq(c, v, "100-continue", 12))
            r->expect_continue = 1;
    }
    if (r->chunked && !r->body_buffered && r->chunk_line) {
        /* nothing goes upstream before the first chunk line is known good */
        int ok = chunk_line(c);
        if (ok < 0) {
            r->response_close = 1;
            mg_conn_respond_error(c, 400, "invalid chunk size");
            return;
        }
        if (ok == 0) {
            r->state = MG_RS_PEEK;
            return; /* conn_parse comes back here when more bytes arrive */
        }
        r->chunk_line = 0;
    }
    mg_proxy_start(c);
}

void mg_conn_hook_resumed(mg_conn_t *c, int phase, int result)
{
    mg_request_t *r = c->r;
    if (!r || c->state == MG_CS_CLOSING)
        return;
    if (phase == MG_PHASE_RESPONSE) {
        if (r->up)
            mg_proxy_hook_resumed(r->up, result);
        else if (r->cache_entry && result == MG_HOOK_ERROR)
            mg_conn_respond_error(c, 500, "hook error");
        else if (r->cache_entry)
            send_cached(c);
        return;
    }
    if (phase == MG_PHASE_LOG)
        return;
    if (result == MG_HOOK_DONE)
        continue_request(c, phase);
    else if (result == MG_HOOK_ERROR)
        mg_conn_respond_error(c, 500, "hook error");
    if (c->r == r && c->state == MG_CS_OPEN)
        conn_parse(c); /* an answer may have left a body to drop */
}

static void process_head(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    assign_request_id(c);
    if (r->http_minor == 1 && !r->known[MG_H_HOST]) {
        r->response_close = 1;
        mg_conn_respond_error(c, 400, "missing Host header");
        return;
    }
    if (r->known[MG_H_HOST]) {
        mg_span_t h = r->headers[r->known[MG_H_HOST] - 1].value;
        if (!mg_uri_valid_host(mg_conn_data(c, h), h.len)) {
            r->response_close = 1;
            mg_conn_respond_error(c, 400, "invalid Host header");
            return;
        }
    }
    if (prepare_target(c) < 0) {
        r->response_close = 1;
        mg_conn_respond_error(c, 400, "bad request target");
        return;
    }
    if (escaped_slashes(c))
        return;
    continue_request(c, 0);
}

/* Called by proxy.c once the upstream connection is ready for the body. */
void mg_conn_resume_body(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (!r || c->state == MG_CS_CLOSING)
        return;
    if (r->body_buffered || c->paused_parser) {
        /* the body was read by a hook (send it as one piece), or this is a
         * retry of a request whose message was already complete */
        if (r->body_buffered && r->body_len > 0) {
            uv_buf_t b = uv_buf_init(r->body_buf, (unsigned)r->body_len);
            r->body_started = 1;
            if (mg_proxy_send_body(r->up, &b, 1) < 0) {
                mg_conn_upstream_failed(c, 502, "upstream write failed");
                return;
            }
        }
        r->state = MG_RS_WAIT;
        set_deadline(c, UINT64_MAX);
        mg_proxy_request_sent(r->up);
        return;
    }
    r->state = MG_RS_BODY;
    if (r->expect_continue && !r->response_started) {
        uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (conn_write(c, &b, 1) < 0) {
            conn_close(c);
            return;
        }
    }
    if (r->has_body)
        body_timing_start(c);
    start_reading(c);
    c->kick = 1;
    conn_parse(c);
}

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
    mg_conn_t *c = r->c;
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
    if (r->known[MG_H_EXPECT]) {
        mg_span_t v = r->headers[r->known[MG_H_EXPECT] - 1].value;
        if (span_ieq(c, v, "100-continue", 12)) {
            uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
            if (conn_write(c, &b, 1) < 0)
                return MG_FFI_EPHASE;
        }
    }
    body_timing_start(c);
    start_reading(c);
    c->kick = 1;
    conn_parse(c);
    return 0;
}

/* Back-pressure from the upstream side: stop reading the client while the
 * upstream has not taken what we already sent. */
void mg_conn_throttle(mg_conn_t *c, int on)
{
    mg_request_t *r = c->r;
    int was = c->throttled;
    c->throttled = on ? 1 : 0;
    if (on) {
        stop_reading(c);
        /* the client is not the slow one now: the upstream's send_timeout
         * times the wait */
        if (r && r->state == MG_RS_BODY)
            set_deadline(c, UINT64_MAX);
        return;
    }
    if (was && r && r->state == MG_RS_BODY) {
        r->window_start_ms = now_ms(c);
        r->window_bytes = r->body_received;
        set_deadline(c, c->w->g->cfg->timeouts.body);
    }
    start_reading(c);
}

/* Body bytes already parsed went upstream or were dropped (or copied, for
 * req:body()): move what is left right after the head, so that a body
 * paused at chunk lines never fills the buffer. */
static void body_compact(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (r->state != MG_RS_BODY && r->state != MG_RS_LOCAL && r->state != MG_RS_BUFFER)
        return;
    if (c->buf.parsed <= r->head_end)
        return;
    uint32_t left = c->buf.len - c->buf.parsed;
    if (left > 0)
        memmove(c->buf.data + r->head_end, c->buf.data + c->buf.parsed, left);
    c->buf.parsed = r->head_end;
    c->buf.len = r->head_end + left;
}

/* The request (or what came where one should start) is refused: answer
 * `status` and close, or just close once an answer has started. */
static void parse_failed(mg_conn_t *c, int status, const char *reason)
{
    mg_request_t *r = c->r;
    if (!r) {
        c->r = r = request_new(c);
        if (!r) {
            conn_close(c);
            return;
        }
    }
    r->status = 0;
    if (r->response_started) {
        conn_close(c);
        return;
    }
    if (r->up) {
        mg_proxy_detach(r->up, 0);
        r->up = NULL;
    }
    r->response_close = 1;
    stop_reading(c);
    mg_conn_respond_error(c, status, reason);
}

/* Runs llhttp over the unparsed bytes until it needs more input, waits at
 * a request boundary or for an upstream, or fails. Not re-entered: code that
 * runs inside it and wants parsing to go on just changes state; the loop
 * picks that up. */
static void conn_parse(mg_conn_t *c)
{
    if (c->in_parse)
        return;
    c->in_parse = 1;
    while (c->state == MG_CS_OPEN && !c->paused_parser &&
           (c->buf.parsed < c->buf.len || c->kick)) {
        mg_request_t *r = c->r;
        if (r && r->state == MG_RS_PEEK) {
            int ok = chunk_line(c);
            if (ok == 0)
                break;
            r->state = MG_RS_UPSTREAM;
            if (ok < 0) {
                r->response_close = 1;
                mg_conn_respond_error(c, 400, "invalid chunk size");
                break;
            }
            r->chunk_line = 0;
            mg_proxy_start(c);
            continue;
        }
        if (r && r->state == MG_RS_UPSTREAM)
            break; /* waiting for the upstream connection */
        if (r && r->chunk_line) {
            int ok = chunk_line(c);
            if (ok == 0) {
                body_compact(c);
                break; /* the rest of the line is still to come */
            }
            if (ok < 0) {
                parse_failed(c, 400, "invalid chunk size line");
                break;
            }
            r->chunk_line = 0;
            if (c->buf.parsed == c->buf.len && !c->kick)
                break;
        }
        /* kick: an empty run lets llhttp reach message complete for a
         * request whose head was the last thing in the buffer */
        c->kick = 0;
        const char *start = c->buf.data + c->buf.parsed;
        llhttp_errno_t e = llhttp_execute(&c->parser, start, c->buf.len - c->buf.parsed);
        r = c->r;
        if (e == HPE_OK) {
            c->buf.parsed = c->buf.len;
            /* body bytes went upstream or were dropped: reuse their space */
            if (r && (r->state == MG_RS_BODY || r->state == MG_RS_LOCAL ||
                      r->state == MG_RS_BUFFER))
                c->buf.len = c->buf.parsed = r->head_end;
            break;
        }
        const char *pos = llhttp_get_error_pos(&c->parser);
        if (e == HPE_PAUSED) {
            c->buf.parsed = (uint32_t)(pos - c->buf.data);
            llhttp_resume(&c->parser);
            if (r && r->chunk_line && r->head_end) {
                body_compact(c);
                continue; /* at a chunk-size line (on_chunk_complete) */
            }
            if (r && r->state == MG_RS_UPSTREAM && !r->head_end) {
                r->head_end = c->buf.parsed;
                process_head(c);
                continue;
            }
            finish_after_write(c); /* paused at message complete */
            continue;
        }
        if (e == HPE_PAUSED_UPGRADE) {
            c->buf.parsed = (uint32_t)(pos - c->buf.data);
            c->paused_parser = 1;
            break;
        }
        /* A parse error or a limit: answer and close. */
        if (r && r->error_reason)
            parse_failed(c, r->status, r->error_reason);
        else
            parse_failed(c, 400, llhttp_get_error_reason(&c->parser));
        break;
    }
    c->in_parse = 0;
    if (c->state == MG_CS_OPEN && c->buf.data && c->buf.len == c->buf.cap && c->paused_parser)
        stop_reading(c); /* pipelined bytes fill the buffer: wait */
}

/* ---- responses ---------------------------------------------------------- */

static void on_drain(mg_wq_t *q)
{
    mg_conn_t *c = mg_container_of(q, mg_conn_t, wq);
    if (c->closing_after_write) {
        conn_close(c);
        return;
    }
    mg_request_t *r = c->r;
    if (r && r->up)
        mg_proxy_client_drained(r->up);
    finish_after_write(c);
}

static void on_write_error(mg_wq_t *q, int status)
{
    conn_close(mg_container_of(q, mg_conn_t, wq));
}

int mg_conn_send(mg_conn_t *c, uv_buf_t *bufs, unsigned n)
{
    if (c->state == MG_CS_CLOSING)
        return -1;
    for (unsigned i = 0; i < n; i++)
        if (c->r)
            c->r->bytes_sent += bufs[i].len;
    int rc = conn_write(c, bufs, n);
    if (rc < 0) {
        conn_close(c);
        return -1;
    }
    if (c->wq.pending > 0)
        set_deadline(c, c->w->g->cfg->timeouts.send);
    return 0;
}

void mg_conn_respond(mg_conn_t *c, int status, const char *ctype, const char *body,
                     size_t body_len, const char *extra, size_t extra_len)
{
    mg_request_t *r = c->r;
    mg_worker_t *w = c->w;
    if (!r || c->state == MG_CS_CLOSING)
        return;
    if (r->response_started) {
        conn_close(c);
        return;
    }
    if (status < 200 || status > 599) {
        /* an interim answer would leave the request unanswered (and a 101
         * the connection in limbo): the 1xx the gateway sends are its own
         * (100-continue, a proxied 101). gw.respond and handlers refuse
         * them first with the hook's file:line; this is the last guard. */
        mg_log(MG_LOG_ERROR, "worker %d: request %s: gateway-made answer with status %d "
                             "refused (only 200-599)", w->id, r->request_id, status);
        mg_conn_respond_error(c, 500, "invalid answer status");
        return;
    }
    if (w->stopping || !r->keep_alive || status == 400 || status == 408)
        r->response_close = 1;
    /* an upgrade we do not tunnel: llhttp stopped at its end, and the
     * client may already be speaking the protocol it asked for */
    if (r->is_upgrade)
        r->response_close = 1;
    /* A body we stopped streaming would be taken for the next request. */
    if (r->has_body && (r->state == MG_RS_HEAD || r->state == MG_RS_BODY ||
                        (r->state == MG_RS_UPSTREAM && r->up)))
        r->response_close = 1;
    /* 204 and 304 have no body, so no Content-Type or Content-Length
     * either (a 304 keeps the validators the hook gave in `extra`) */
    int has_body = mg_status_has_body(status);
    if (!has_body)
        body_len = 0;
    char length[48] = "";
    if (has_body)
        snprintf(length, sizeof(length), "Content-Length: %zu\r\n", body_len);
    int n = snprintf(w->scratch, w->scratch_cap,
                     "HTTP/1.%d %d %s\r\n"
                     "%s%s%s%s"
                     "X-Request-Id: %s\r\n"
                     "%.*s"
                     "%s"
                     "\r\n",
                     r->http_minor == 0 ? 0 : 1, status, mg_status_text(status),
                     has_body ? "Content-Type: " : "", has_body ? ctype : "",
                     has_body ? "\r\n" : "", length,
                     r->request_id, (int)extra_len, extra ? extra : "",
                     r->response_close ? "Connection: close\r\n"
                     : r->http_minor == 0 ? "Connection: keep-alive\r\n" : "");
    if (n < 0 || (size_t)n >= w->scratch_cap) {
        conn_close(c);
        return;
    }
    r->status = status;
    r->response_started = 1;
    uv_buf_t bufs[2] = { uv_buf_init(w->scratch, (unsigned)n),
                         uv_buf_init((char *)body, (unsigned)(r->head_method ? 0 : body_len)) };
    if (mg_conn_send(c, bufs, 2) < 0)
        return;
    local_answer_sent(c);
}

/* A gateway-made answer has been queued: close after it, or read on
 * (dropping any body) to the end of the request. */
static void local_answer_sent(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (r->response_close) {
        stop_reading(c);
        c->closing_after_write = 1;
        if (c->wq.pending == 0)
            conn_close(c);
        return;
    }
    if (!c->paused_parser) {
        /* keep parsing (dropping any body); finish at message complete */
        r->state = MG_RS_LOCAL;
        c->kick = 1;
        conn_parse(c);
        return;
    }
    r->state = MG_RS_DONE;
    finish_after_write(c);
}

/* Sends the answer the cache holds for r (after on_response hooks ran). */
static void send_cached(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    mg_worker_t *w = c->w;
    if (r->response_started) {
        conn_close(c);
        return;
    }
    if (w->stopping || !r->keep_alive)
        r->response_close = 1;
    const char *connection = r->response_close      ? "Connection: close\r\n"
                             : r->http_minor == 0 ? "Connection: keep-alive\r\n"
                                                  : "";
    size_t n = mg_cache_head(r, w->scratch, w->scratch_cap, connection);
    if (n == 0) {
        mg_conn_respond_error(c, 502, "cached response head too large");
        return;
    }
    size_t body_len;
    const char *body = mg_cache_body(r, &body_len);
    r->response_started = 1;
    uv_buf_t bufs[2] = { uv_buf_init(w->scratch, (unsigned)n),
                         uv_buf_init((char *)body, (unsigned)body_len) };
    if (mg_conn_send(c, bufs, 2) < 0)
        return;
    local_answer_sent(c);
}

void mg_conn_cache_ready(mg_conn_t *c, int serve)
{
    if (!c->r || c->state == MG_CS_CLOSING)
        return;
    if (serve)
        serve_cached(c);
    else
        continue_request(c, MG_PHASE_ACCESS);
}

/* Runs on_response hooks on the answer the cache holds, then sends it. */
static void serve_cached(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    r->state = MG_RS_LOCAL;
    if (mg_hooks_has(r->g, r->route, MG_PHASE_RESPONSE)) {
        int rc = mg_hooks_run(r, MG_PHASE_RESPONSE);
        if (rc == MG_HOOK_WAIT)
            return; /* mg_conn_hook_resumed sends it */
        if (rc == MG_HOOK_ERROR) {
            mg_conn_respond_error(c, 500, "hook error");
            return;
        }
    }
    send_cached(c);
}

/* The gateway's own JSON error answer, with extra header lines hdrs
 * ("Name: value\r\n"..., may be NULL). */
static void respond_error(mg_conn_t *c, int status, const char *message, const char *hdrs,
                          size_t hlen)
{
    mg_request_t *r = c->r;
    if (!r)
        return;
    if (r->request_id_len == 0)
        assign_request_id(c);
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"status\":%d,\"request_id\":\"%s\"}\n",
                     message, status, r->request_id);
    mg_conn_respond(c, status, "application/json", body, (size_t)n, hdrs, hlen);
}

void mg_conn_respond_error(mg_conn_t *c, int status, const char *message)
{
    respond_error(c, status, message, NULL, 0);
}

/* 405 with the Allow header RFC 9110 (15.5.6) requires: the methods of the
 * routes that matched the request in all but its method. */
static void respond_405(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    const char *host = NULL;
    size_t host_len = 0;
    if (r->known[MG_H_HOST]) {
        mg_span_t h = r->headers[r->known[MG_H_HOST] - 1].value;
        host = mg_conn_data(c, h);
        host_len = h.len;
    }
    char hdr[2048];
    memcpy(hdr, "Allow: ", 7);
    long n = mg_router_allowed(r->g->router, c->local_port, host, host_len, r->path,
                               r->path_len, header_get, c, hdr + 7, sizeof(hdr) - 9);
    memcpy(hdr + 7 + n, "\r\n", 2);
    respond_error(c, 405, "method not allowed", hdr, (size_t)n + 9);
}

/* The request is over for the client: access log line, then on_log hooks
 * (they delay no one; one that waits goes on detached from the request). */
static void log_request(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    r->total_ns = uv_hrtime() - r->start_ns;
    mg_accesslog_request(c->w, c);
    mg_metrics_request(c->w->id, r->route ? r->route->metric_id : 0, r->status,
                       r->total_ns / 1000, r->upstream_ns / 1000);
    if (!r->hook_waiting && mg_hooks_has(r->g, r->route, MG_PHASE_LOG))
        mg_hooks_run(r, MG_PHASE_LOG);
}

/* Called by proxy.c when the whole upstream response went to the client. */
void mg_conn_response_done(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (!r)
        return;
    if (r->state != MG_RS_WAIT && r->state != MG_RS_DONE)
        r->response_close = 1; /* answered before the body was all read */
    r->state = MG_RS_DONE;
    if (r->response_close) {
        stop_reading(c);
        c->closing_after_write = 1;
        log_request(c);
        request_free(c);
        if (c->wq.pending == 0)
            conn_close(c);
        return;
    }
    finish_after_write(c);
}

void mg_conn_upstream_failed(mg_conn_t *c, int status, const char *message)
{
    mg_request_t *r = c->r;
    if (!r)
        return;
    if (r->response_started) {
        conn_close(c);
        return;
    }
    if (status >= 502 && status <= 504 && mg_cache_can_serve_stale(r)) {
        r->cache_state = MG_CACHE_STALE; /* stale-if-error */
        serve_cached(c);
        return;
    }
    mg_conn_respond_error(c, status, message);
}

/* The request is complete once its response is written out and its message
 * fully parsed; then the next pipelined request may start. */
static void finish_after_write(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    if (!r || r->state != MG_RS_DONE || c->wq.pending > 0 || !c->paused_parser)
        return;
    request_finish(c);
}

static void request_finish(mg_conn_t *c)
{
    log_request(c);
    request_free(c);
    c->requests++;
    /* Move pipelined bytes to the front; give the buffer back if none. */
    if (c->buf.data) {
        uint32_t left = c->buf.len - c->buf.parsed;
        if (left > 0 && c->buf.parsed > 0)
            memmove(c->buf.data, c->buf.data + c->buf.parsed, left);
        c->buf.len = left;
        c->buf.parsed = 0;
        release_buf_if_empty(c);
    }
    c->paused_parser = 0;
    if (c->w->stopping) {
        conn_close(c);
        return;
    }
    set_deadline(c, c->w->g->cfg->timeouts.keepalive);
    start_reading(c);
    conn_parse(c); /* pipelined requests; a no-op when called from it */
}

/* ---- upgrade tunnel ----------------------------------------------------- */

void mg_conn_start_tunnel(mg_conn_t *c)
{
    mg_request_t *r = c->r;
    c->state = MG_CS_TUNNEL;
    r->state = MG_RS_DONE;
    /* bytes the client sent after its upgrade request belong to the tunnel */
    uint32_t left = c->buf.len - c->buf.parsed;
    if (left > 0 && r->up)
        mg_proxy_tunnel_write(r->up, c->buf.data + c->buf.parsed, left);
    c->buf.len = c->buf.parsed = 0;
    /* an idle tunnel is timed by the upstream's read_timeout (proxy.c) */
    set_deadline(c, UINT64_MAX);
    start_reading(c);
}

void mg_conn_abort(mg_conn_t *c) { conn_close(c); }

/* ---- accept and close --------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    mg_conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    mg_worker_t *w = c->w;
    if (c->buf.data)
        mg_worker_buf_put(w, &c->buf);
    if (c->tls) {
        mg_tls_conn_free(c->tls->t);
        free(c->tls);
    }
    mg_list_remove(&c->link);
    w->nconns--;
    mg_metrics_connections(w->id, -1);
    free(c);
    mg_worker_conn_closed(w);
}

static void conn_close(mg_conn_t *c)
{
    if (c->state == MG_CS_CLOSING)
        return;
    mg_request_t *r = c->r;
    if (r) {
        if (r->status == 0)
            r->status = 499; /* client went away before the answer */
        if (r->request_id_len > 0)
            log_request(c);
    }
    request_free(c);
    if (c->tls && c->tls->t && c->wq.pending == 0) {
        /* close_notify, best effort: the socket closes right after */
        const char *p;
        mg_tls_shutdown(c->tls->t);
        size_t len = mg_tls_out(c->tls->t, &p);
        if (len > 0) {
            uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
        mg_tls_out_done(c->tls->t);
    }
    c->state = MG_CS_CLOSING;
    c->wq.closed = 1;
    stop_reading(c);
    if (c->tls)
        uv_close((uv_handle_t *)&c->tls->pump, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

void mg_conn_close_if_idle(mg_conn_t *c)
{
    if (c->state == MG_CS_CLOSING)
        return;
    if (!c->r || (c->r->state == MG_RS_HEAD && c->r->head_bytes == 0))
        conn_close(c);
}

/* A new connection of w on listener port `port`, linked in w->conns but
 * not open yet (conn_open). */
static mg_conn_t *conn_new(mg_worker_t *w, uint16_t port)
{
    if (!settings_ready)
        init_settings();
    mg_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->w = w;
    c->local_port = port;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    return c;
}

static void conn_link(mg_conn_t *c)
{
    mg_worker_t *w = c->w;
    mg_list_push(&w->conns, &c->link);
    w->nconns++;
    mg_metrics_connections(w->id, 1);
}

/* Starts reading requests (c->wq is set up). */
static void conn_open(mg_conn_t *c)
{
    llhttp_init(&c->parser, HTTP_REQUEST, &req_settings);
    c->parser.data = c;
    c->state = MG_CS_OPEN;
    set_deadline(c, c->w->g->cfg->timeouts.header);
    start_reading(c);
}

mg_conn_t *mg_conn_open_memory(mg_worker_t *w, uint16_t port, mg_wq_sink_fn sink)
{
    mg_conn_t *c = conn_new(w, port);
    if (!c)
        return NULL;
    conn_link(c);
    strcpy(c->client_ip, "127.0.0.1");
    mg_wq_init(&c->wq, (uv_stream_t *)&c->tcp, on_drain, on_write_error);
    c->wq.sink = sink;
    conn_open(c);
    return c;
}

/* What libuv does when bytes arrive: on_alloc, then on_read, as long as
 * the connection reads (the socket would not be read otherwise). */
size_t mg_conn_feed(mg_conn_t *c, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init(NULL, 0);
    size_t done = 0;
    if (!p) {
        if (c->reading)
            on_read((uv_stream_t *)&c->tcp, UV_EOF, &b);
        return 0;
    }
    while (done < n && c->reading) {
        on_alloc((uv_handle_t *)&c->tcp, n - done, &b);
        if (b.len == 0) {
            on_read((uv_stream_t *)&c->tcp, UV_ENOBUFS, &b);
            break;
        }
        size_t k = n - done < b.len ? n - done : b.len;
        memcpy(b.base, p + done, k);
        done += k;
        on_read((uv_stream_t *)&c->tcp, (ssize_t)k, &b);
    }
    return done;
}

void mg_conn_accept(mg_worker_t *w, uv_stream_t *listener, uint16_t port)
{
    mg_conn_t *c = conn_new(w, port);
    if (!c)
        return;
    size_t li = (size_t)((uv_tcp_t *)listener - w->listeners);
    c->listener = (uint16_t)li;
    mg_tls_ctx_t *tls = li < w->g->cfg->nlisteners ? w->g->cfg->listeners[li].tls : NULL;
    if (tls && (c->tls = calloc(1, sizeof(*c->tls))) != NULL) {
        uv_idle_init(&w->loop, &c->tls->pump);
        c->tls->pump.data = c;
        c->handles_open = 3;
        c->tls->t = mg_tls_conn_new(tls);
    }
    conn_link(c);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || (tls && (!c->tls || !c->tls->t))) {
        c->state = MG_CS_OPEN;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int salen = sizeof(sa);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            uv_ip4_name(in, c->client_ip, sizeof(c->client_ip));
            c->client_port = ntohs(in->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
            uv_ip6_name(in6, c->client_ip, sizeof(c->client_ip));
            c->client_port = ntohs(in6->sin6_port);
        }
    }
    mg_wq_init(&c->wq, (uv_stream_t *)&c->tcp, on_drain, on_write_error);
    conn_open(c);
}
