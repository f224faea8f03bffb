/* http_conn.c: HTTP/1.1 on the client side (http1.h), the protocol that
 * feeds the core's requests (request.h).
 *
 * One mg_conn_t per accepted connection. It reads into a pooled buffer,
 * parses with llhttp in strict mode, enforces the limits and hands each
 * complete head to the pipeline (pipeline.h), which routes it and answers
 * it or sends it upstream. The core writes back through the table of
 * functions at the end of this file (mg_proto_t): it hands over a status,
 * header fields and body chunks (response.h), which this file frames as
 * HTTP/1 (h1_writer.c: status line, header lines, Content-Length or
 * chunked, Connection, HEAD and the bodyless statuses), and asks for
 * 100-continue, body streaming and back-pressure, keep-alive and tunnels;
 * it never sees the connection.
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
#include "cache.h"
#include "client_addr.h"
#include "errlog.h"
#include "http.h"
#include "header_names.h"
#include "http1.h"
#include "h1_writer.h"
#include "h2_conn.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "pipeline.h"
#include "tls.h"
#include "upstream.h"

/* A chunk-size line with its extensions is at most this long (400 beyond):
 * a client cannot make the gateway wait on one without end. */
#define MG_CHUNK_LINE_MAX 4096

static llhttp_settings_t req_settings;
static int settings_ready;

static void conn_close(mg_conn_t *c);
static void conn_parse(mg_conn_t *c);
static void request_finish(mg_conn_t *c);
static void finish_after_write(mg_conn_t *c);
static void local_answer_sent(mg_conn_t *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static int conn_write(mg_conn_t *c, const uv_buf_t *bufs, unsigned n);
static void tls_schedule_pump(mg_conn_t *c);
static int h2_start(mg_conn_t *c);
static void h2_deliver(mg_conn_t *c);
static void linger(mg_conn_t *c);

/* TLS state of a connection on a TLS listener (see the top of the file). */
struct mg_conn_tls_s {
    mg_tls_conn_t *t;
    uv_idle_t pump;       /* decrypts input already received, next loop turn */
    uint8_t first_seen;   /* the first bytes were checked for plain HTTP */
    uint8_t handshaken;   /* counted in the metrics */
};

/* ---- small helpers ---------------------------------------------------- */


static int span_ieq(const mg_conn_t *c, mg_span_t s, const char *lit, size_t n)
{
    return s.len == n && strncasecmp(c->buf.data + s.off, lit, n) == 0;
}

static uint64_t now_ms(mg_conn_t *c) { return uv_now(&c->w->loop); }


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
    if (c->h2) {
        c->deadline = UINT64_MAX; /* the session sets its next one */
        if (c->lingering)
            conn_close(c);
        else
            mg_h2_timeout(c->h2);
        return;
    }
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
        mg_request_respond_error(r, 408, "request timeout");
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
        mg_buf_get(&c->w->bufs, &c->buf);
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
            mg_buf_grow(&c->w->bufs, &c->buf, c->buf.cap * 2 < max ? c->buf.cap * 2 : max);
    }
    return c->buf.data ? c->buf.cap - c->buf.len : 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    mg_conn_t *c = (mg_conn_t *)h;
    if (c->tls && !c->proxy_header) {
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
        mg_buf_put(&c->w->bufs, &c->buf);
    }
}

/* New bytes in c->buf: to the upstream of a tunnel, to the HTTP/2 session,
 * else to the parser. A connection on an `http2` plain listener speaks
 * HTTP/2 when its first bytes are the client preface (h2c with prior
 * knowledge), HTTP/1.1 otherwise. */
/* deliver's HTTP/2 part, out of line so that the HTTP/1 path stays inlined
 * into its callers. Returns 1 when the bytes were the session's (or wait
 * for the rest of the preface), 0 when they are HTTP/1's. */
static __attribute__((noinline)) int deliver_h2(mg_conn_t *c)
{
    if (!c->h2) {
        int p = mg_h2_preface(c->buf.data + c->buf.parsed, c->buf.len - c->buf.parsed);
        if (p == 0)
            return 1; /* a prefix of it so far (the header timeout runs) */
        c->h2c = 0;
        if (p < 0)
            return 0;
        if (h2_start(c) != 0)
            return 1;
    }
    h2_deliver(c);
    return 1;
}

static inline void deliver(mg_conn_t *c)
{
    if (__builtin_expect(c->h2 != NULL || c->h2c, 0) && deliver_h2(c))
        return;
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
                size_t al;
                const char *a = mg_tls_alpn(t, &al);
                if (a && al == 2 && memcmp(a, "h2", 2) == 0 && h2_start(c) < 0)
                    return;
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
                    mg_request_respond_error(c->r, 431, "request header fields too large");
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

static mg_tls_conn_t *conn_tls(const mg_request_t *r)
{
    const mg_conn_t *c = r->conn;
    return c->tls ? c->tls->t : NULL;
}

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
    if (mg_tls_writev(c->tls->t, bufs, n) < 0)
        return UV_EPROTO;
    return tls_flush(c);
}

/* A proxy_protocol connection's first bytes, in c->buf: its PROXY header,
 * then what follows it (HTTP, or TLS on a TLS listener) as if it had been
 * read alone. The header wait is under timeouts.header, like the request
 * head after it (on_timer closes a connection with no request). */
static void proxy_header_read(mg_conn_t *c)
{
    int n = mg_client_addr_proxy_header(&c->peer, (const uint8_t *)c->buf.data, c->buf.len);
    if (n == MG_PP_AGAIN && c->buf.len < MG_CLIENT_ADDR_PP_MAX && c->buf.len < c->buf.cap)
        return;
    if (n < 0) {
        conn_close(c); /* logged; nothing is answered to a sender that is no HTTP client */
        return;
    }
    c->proxy_header = 0;
    size_t rest = c->buf.len - (size_t)n;
    if (c->tls) {
        /* TLS copies the bytes before it writes plaintext into c->buf */
        c->buf.len = 0;
        if (rest)
            tls_on_read(c, c->buf.data + n, rest);
        return;
    }
    memmove(c->buf.data, c->buf.data + n, rest);
    c->buf.len = (uint32_t)rest;
    if (rest)
        deliver(c);
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
                mg_request_respond_error(c->r, 431, "request header fields too large");
            }
            return;
        }
        conn_close(c);
        return;
    }
    if (c->tls && !c->proxy_header) {
        tls_on_read(c, b->base, (size_t)nread);
        return;
    }
    c->buf.len += (uint32_t)nread;
    if (c->proxy_header) {
        proxy_header_read(c);
        return;
    }
    deliver(c);
}

/* ---- the request object ----------------------------------------------- */


static const mg_proto_t http1;

static mg_request_t *request_new(mg_conn_t *c)
{
    mg_request_t *r = mg_request_new(c->w);
    if (!r)
        return NULL;
    r->proto = &http1;
    r->conn = c;
    r->peer = &c->peer;
    r->data = &c->buf.data;
    c->head_len = 0; /* no head of an earlier answer is held */
    return r;
}

static void request_free(mg_conn_t *c)
{
    if (!c->r)
        return;
    mg_pipeline_free(c->r);
    c->r = NULL;
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

/* The checks of a complete head whose spans point into data, for the
 * gateway (on_headers_complete) and the testing kit (mg_ffi_head_check):
 * the version, each header (trimmed, classified) and the framing. Returns
 * NULL, or why the request is refused and *status. */
static const char *head_verdict(const llhttp_t *p, mg_request_t *r, const char *data, int *status)
{
    /* llhttp takes any 1.x and 0.9 (below); 2.0 and up are other protocols */
    *status = 505;
    if (p->http_major != 1)
        return "HTTP version not supported";
    *status = 400;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        /* llhttp keeps the OWS after a value; it is not part of it (RFC
         * 9112 5): "Host: a " is host "a" */
        mg_span_t *v = &r->headers[i].value;
        while (v->len > 0 &&
               (data[v->off + v->len - 1] == ' ' || data[v->off + v->len - 1] == '\t'))
            v->len--;
        const char *why = mg_request_classify_header(r, data, i);
        if (why)
            return why;
    }
    /* llhttp checks this only after on_headers_complete, which pauses before
     * the head goes upstream: check it here. The only coding a request may
     * carry is a final "chunked" (anything else is 400, never forwarded). */
    if (r->known[MG_H_TRANSFER_ENCODING]) {
        mg_span_t v = r->headers[r->known[MG_H_TRANSFER_ENCODING] - 1].value;
        const char *s = data + v.off;
        size_t a = 0, b = v.len;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b - a != 7 || strncasecmp(s + a, "chunked", 7) != 0 || !(p->flags & F_CHUNKED))
            return "unsupported Transfer-Encoding";
    }
    return NULL;
}

/* A method the gateway refuses (405) once the head is read, or NULL: a
 * gateway is no forward proxy, CONNECT would ask for a raw tunnel. */
static const char *method_refused(const llhttp_t *p)
{
    return p->method == HTTP_CONNECT ? "CONNECT is not supported" : NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    int status;
    const char *why = head_verdict(p, r, c->buf.data, &status);
    if (why)
        return fail(p, status, why);
    r->http_minor = p->http_minor;
    r->keep_alive = llhttp_should_keep_alive(p) ? 1 : 0;
    r->chunked = (p->flags & F_CHUNKED) ? 1 : 0;
    r->chunk_line = r->chunked; /* the first one follows the head */
    r->has_body = r->chunked || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0;
    if ((why = method_refused(p)) != NULL)
        return fail(p, 405, why);
    /* RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored (a proxy
     * that honoured it could be told to open a tunnel past a 1.0 hop). */
    if (p->upgrade && p->http_minor == 0)
        p->upgrade = 0;
    r->is_upgrade = p->upgrade ? 1 : 0;
    r->head_method = p->method == HTTP_HEAD;
    r->idempotent = (uint8_t)mg_method_idempotent(p->method);
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
        return mg_request_body_append(r, at, len) < 0 ? fail(p, 503, "out of memory") : 0;
    }
    if (r->state != MG_RS_BODY || !r->up)
        return 0; /* answered locally: the body is read and dropped */
    /* the bytes as they are: the upstream's framing is the proxy's */
    uv_buf_t b = uv_buf_init((char *)at, (unsigned)len);
    r->body_started = 1;
    if (mg_proxy_send_body(r->up, &b, 1) < 0)
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

static int on_message_complete(llhttp_t *p)
{
    mg_conn_t *c = p->data;
    mg_request_t *r = c->r;
    if (r->state == MG_RS_BODY && r->up) {
        r->state = MG_RS_WAIT;
        set_deadline(c, UINT64_MAX);
        mg_proxy_request_sent(r->up);
    } else if (r->state == MG_RS_LOCAL) {
        r->state = MG_RS_DONE;
    } else if (r->state == MG_RS_BUFFER) {
        r->body_buffered = 1;
        r->state = MG_RS_UPSTREAM;
        set_deadline(c, UINT64_MAX);
        mg_pipeline_body_read(r);
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


/* Called by proxy.c once the upstream connection is ready for the body. */
static void resume_body(mg_request_t *r)
{
    mg_conn_t *c = r->conn;
    if (r->body_buffered || c->paused_parser) {
        /* the body was read by a hook (send it as one piece), or this is a
         * retry of a request whose message was already complete */
        if (r->body_buffered && r->body_len > 0) {
            uv_buf_t b = uv_buf_init(r->body_buf, (unsigned)r->body_len);
            r->body_started = 1;
            if (mg_proxy_send_body(r->up, &b, 1) < 0) {
                mg_pipeline_upstream_failed(r, 502, "upstream write failed");
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

/* req:body() (pipeline.c): reads the whole body into r->body_buf. */
static int read_body(mg_request_t *r)
{
    mg_conn_t *c = r->conn;
    if (r->known[MG_H_EXPECT]) {
        mg_span_t v = r->headers[r->known[MG_H_EXPECT] - 1].value;
        if (span_ieq(c, v, "100-continue", 12)) {
            uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
            if (conn_write(c, &b, 1) < 0)
                return -1;
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
static void throttle(mg_request_t *r, int on)
{
    mg_conn_t *c = r->conn;
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
    mg_request_respond_error(r, status, reason);
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
                mg_request_respond_error(r, 400, "invalid chunk size");
                break;
            }
            r->chunk_line = 0;
            mg_proxy_start(r);
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
                mg_pipeline_head(r);
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
        if (c->h2 && !c->lingering)
            linger(c);
        else if (!c->lingering)
            conn_close(c);
        return;
    }
    if (c->h2) {
        mg_h2_drained(c->h2);
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

static int conn_send(mg_conn_t *c, const uv_buf_t *bufs, unsigned n)
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

/* ---- the response: HTTP/1 framing of what the core hands over --------------
 * start_response writes the head (h1_writer.c) into the worker's scratch
 * and holds it; the next send_body writes it and the body bytes framed as
 * it decided in one conn_write (one writev). */

#define BODY_IOV 32 /* per conn_write; more bufs go in several */

static int start_response(mg_request_t *r, const mg_resp_t *res)
{
    mg_conn_t *c = r->conn;
    mg_worker_t *w = c->w;
    mg_h1w_frame_t f;
    long n = mg_h1w_response_head(r, w->stopping, res, &w->scratch, &w->scratch_cap, &f);
    if (n < 0)
        return -1;
    c->head_len = (uint32_t)n;
    c->resp_body = f.tunnel ? MG_RB_RAW : f.no_body ? MG_RB_NONE : f.chunked ? MG_RB_CHUNKED
                                                                             : MG_RB_RAW;
    if (f.close)
        r->response_close = 1;
    r->status = res->status;
    r->response_started = 1;
    return 0;
}

static int send_body(mg_request_t *r, const uv_buf_t *bufs, unsigned n, int last)
{
    mg_conn_t *c = r->conn;
    uv_buf_t iov[BODY_IOV];
    unsigned k = 0;
    if (c->resp_body == MG_RB_RAW) { /* bytes as they are, after any head */
        if (!c->head_len)
            return n ? conn_send(c, bufs, n) : 0;
        if (n < BODY_IOV) {
            iov[0] = uv_buf_init(c->w->scratch, c->head_len);
            c->head_len = 0;
            for (unsigned i = 0; i < n; i++) /* mostly one or two */
                iov[i + 1] = bufs[i];
            return conn_send(c, iov, n + 1);
        }
    }
    if (c->head_len) {
        iov[k++] = uv_buf_init(c->w->scratch, c->head_len);
        c->head_len = 0;
    }
    if (c->resp_body == MG_RB_NONE)
        n = 0; /* HEAD, 204, 304: nothing of a body goes */
    char line[18];
    int chunked = c->resp_body == MG_RB_CHUNKED;
    size_t total = 0;
    for (unsigned i = 0; chunked && i < n; i++)
        total += bufs[i].len;
    if (total)
        iov[k++] = uv_buf_init(line, (unsigned)mg_h1w_chunk_line(line, total));
    for (unsigned i = 0; i < n; i++) {
        if (k >= BODY_IOV - 2) { /* room left for the chunk's end */
            if (conn_send(c, iov, k) < 0)
                return -1;
            k = 0;
        }
        iov[k++] = bufs[i];
    }
    if (total)
        iov[k++] = uv_buf_init("\r\n", 2);
    if (last && chunked)
        iov[k++] = uv_buf_init("0\r\n\r\n", 5);
    return k ? conn_send(c, iov, k) : 0;
}

static int send_trailers(mg_request_t *r, const mg_hfield_t *t, size_t n)
{
    mg_conn_t *c = r->conn;
    mg_worker_t *w = c->w;
    long k;
    /* only chunked framing carries them; a held head stays in front */
    if (c->resp_body != MG_RB_CHUNKED ||
        (k = mg_h1w_last_chunk(&w->scratch, &w->scratch_cap, c->head_len, t, n)) < 0)
        return send_body(r, NULL, 0, 1);
    uv_buf_t b = uv_buf_init(w->scratch, (unsigned)(c->head_len + (size_t)k));
    c->head_len = 0;
    return conn_send(c, &b, 1);
}

static void answered(mg_request_t *r) { local_answer_sent(r->conn); }

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

/* Called by proxy.c when the whole upstream response went to the client. */
static void response_done(mg_request_t *r)
{
    mg_conn_t *c = r->conn;
    if (r->state != MG_RS_WAIT && r->state != MG_RS_DONE)
        r->response_close = 1; /* answered before the body was all read */
    r->state = MG_RS_DONE;
    if (r->response_close) {
        stop_reading(c);
        c->closing_after_write = 1;
        mg_pipeline_log(c->r);
        request_free(c);
        if (c->wq.pending == 0)
            conn_close(c);
        return;
    }
    finish_after_write(c);
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
    mg_pipeline_log(c->r);
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

static void start_tunnel(mg_request_t *r)
{
    mg_conn_t *c = r->conn;
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

/* ---- HTTP/2 (h2_conn.c) --------------------------------------------------------
 * A connection that speaks HTTP/2 keeps its socket, TLS, timer and write
 * queue here; its session gets every byte read (then the read buffer goes
 * back to the pool: an idle HTTP/2 connection holds none) and reaches the
 * connection through this table. */

static int h2_write(void *conn, const uv_buf_t *bufs, unsigned n)
{
    mg_conn_t *c = conn;
    return c->state == MG_CS_CLOSING ? UV_EPIPE : conn_write(c, bufs, n);
}

static size_t h2_pending(const void *conn) { return ((const mg_conn_t *)conn)->wq.pending; }

static void h2_set_deadline(void *conn, uint64_t ms) { set_deadline(conn, ms); }

static void h2_close_after_write(void *conn)
{
    mg_conn_t *c = conn;
    if (c->state == MG_CS_CLOSING || c->lingering)
        return;
    stop_reading(c);
    c->closing_after_write = 1;
    if (c->wq.pending == 0)
        linger(c);
}

static void h2_close(void *conn) { conn_close(conn); }

static struct mg_tls_conn_s *h2_tls(const void *conn)
{
    const mg_conn_t *c = conn;
    return c->tls ? c->tls->t : NULL;
}

static const mg_h2_io_t h2_io = {
    .write = h2_write,
    .pending = h2_pending,
    .set_deadline = h2_set_deadline,
    .close_after_write = h2_close_after_write,
    .close = h2_close,
    .tls = h2_tls,
};

/* An HTTP/2 connection that ends (after its last GOAWAY): closing a socket
 * with unread input makes the kernel reset the connection, and the reset
 * can overtake the GOAWAY before the client read it. So it half-closes
 * and reads (and drops) what the client still sends, until its EOF or for
 * LINGER_MS at most (nginx's lingering close), then closes. Its own read
 * callbacks: the HTTP/1 path pays nothing for it. */
#define LINGER_MS 2000

static void on_shutdown_done(uv_shutdown_t *req, int status) { free(req); }

static void linger_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    *b = uv_buf_init(tls_in, sizeof(tls_in));
}

static void linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    if (nread < 0)
        conn_close((mg_conn_t *)s);
}

static void linger(mg_conn_t *c)
{
    if (c->h2)
        mg_h2_close(c->h2);
    if (c->tls && c->tls->t && c->tls->handshaken) {
        uv_idle_stop(&c->tls->pump); /* what TLS still holds is not read */
        mg_tls_shutdown(c->tls->t); /* close_notify before the FIN */
        tls_flush(c);
    }
    uv_shutdown_t *req = c->wq.sink ? NULL : malloc(sizeof(*req));
    stop_reading(c);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown_done) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, linger_alloc, linger_read) < 0) {
        free(req);
        conn_close(c);
        return;
    }
    c->lingering = 1;
    c->reading = 1;
    set_deadline(c, LINGER_MS);
}

/* The connection speaks HTTP/2 from now on (no HTTP/1 request began). */
static int h2_start(mg_conn_t *c)
{
    c->h2c = 0;
    c->h2 = mg_h2_new(c->w, c, &h2_io, &c->peer);
    if (!c->h2) {
        conn_close(c);
        return -1;
    }
    return 0;
}

static void h2_deliver(mg_conn_t *c)
{
    mg_h2_input(c->h2, c->buf.data + c->buf.parsed, c->buf.len - c->buf.parsed);
    c->buf.len = c->buf.parsed = 0;
    if (c->state != MG_CS_CLOSING)
        mg_buf_put(&c->w->bufs, &c->buf);
}

void mg_conn_reload(mg_conn_t *c)
{
    if (c->h2 && c->state == MG_CS_OPEN && !c->lingering)
        mg_h2_reload(c->h2);
}

void mg_conn_abort(mg_conn_t *c) { conn_close(c); }

/* ---- the protocol table the core calls (request.h) ---------------------- */

static size_t pending(const mg_request_t *r) { return ((const mg_conn_t *)r->conn)->wq.pending; }

static void abort_conn(mg_request_t *r) { conn_close(r->conn); }

/* Before the upstream: Expect: 100-continue is noted (answered once the
 * upstream connection is ready), and nothing of a chunked body goes
 * upstream before its first chunk line is known good. */
static int prepare_body(mg_request_t *r)
{
    mg_conn_t *c = r->conn;
    if (r->known[MG_H_EXPECT] && r->has_body) {
        mg_span_t v = r->headers[r->known[MG_H_EXPECT] - 1].value;
        if (span_ieq(c, v, "100-continue", 12))
            r->expect_continue = 1;
    }
    if (r->chunked && !r->body_buffered && r->chunk_line) {
        int ok = chunk_line(c);
        if (ok < 0) {
            r->response_close = 1;
            mg_request_respond_error(r, 400, "invalid chunk size");
            return -1;
        }
        if (ok == 0) {
            r->state = MG_RS_PEEK;
            return 0; /* conn_parse sends it upstream when more bytes arrive */
        }
        r->chunk_line = 0;
    }
    return 1;
}

static void proceed(void *conn, const mg_request_t *r)
{
    mg_conn_t *c = conn;
    if (c->r == r && c->state == MG_CS_OPEN)
        conn_parse(c);
}

static const mg_request_t *current(void *conn)
{
    mg_conn_t *c = conn;
    return c->state == MG_CS_CLOSING ? NULL : c->r;
}

static void no_upgrade(mg_request_t *r) { ((mg_conn_t *)r->conn)->parser.upgrade = 0; }

static const mg_proto_t http1 = {
    .start_response = start_response,
    .send_body = send_body,
    .send_trailers = send_trailers,
    .pending = pending,
    .throttle = throttle,
    .abort = abort_conn,
    .answered = answered,
    .response_done = response_done,
    .resume_body = resume_body,
    .start_tunnel = start_tunnel,
    .read_body = read_body,
    .prepare_body = prepare_body,
    .proceed = proceed,
    .current = current,
    .no_upgrade = no_upgrade,
    .tls = conn_tls,
};

/* ---- accept and close --------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    mg_conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    mg_worker_t *w = c->w;
    if (c->buf.data)
        mg_buf_put(&w->bufs, &c->buf);
    mg_client_addr_release(&c->peer);
    if (c->tls) {
        mg_tls_conn_free(c->tls->t);
        free(c->tls);
    }
    mg_h2_free(c->h2);
    mg_list_remove(&c->link);
    w->nconns--;
    mg_metrics_connections(w->id, -1);
    free(c);
    w->conn_closed(w);
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
            mg_pipeline_log(c->r);
    }
    request_free(c);
    if (c->h2)
        mg_h2_close(c->h2); /* its streams' requests end */
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
    if (c->h2) {
        if (!c->lingering)
            mg_h2_shutdown(c->h2); /* GOAWAY: its streams finish */
        return;
    }
    if (c->h2c && c->buf.len > 0)
        return; /* part of an HTTP/2 preface: a client, not an idle socket */
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
    c->peer.local_port = port;
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
    const mg_config_t *cfg = c->w->g->cfg;
    llhttp_init(&c->parser, HTTP_REQUEST, &req_settings);
    c->parser.data = c;
    c->state = MG_CS_OPEN;
    c->h2c = !c->tls && c->peer.listener < cfg->nlisteners && cfg->listeners[c->peer.listener].http2;
    set_deadline(c, c->w->g->cfg->timeouts.header);
    start_reading(c);
}

mg_conn_t *mg_conn_open_memory(mg_worker_t *w, uint16_t port, mg_wq_sink_fn sink)
{
    mg_conn_t *c = conn_new(w, port);
    if (!c)
        return NULL;
    conn_link(c);
    strcpy(c->peer.client_ip, "127.0.0.1");
    mg_addr_from_v4((const uint8_t[]){ 127, 0, 0, 1 }, &c->peer.addr); /* the same, as a key */
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
    c->peer.listener = (uint16_t)li;
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
        mg_addr_from_sockaddr((const struct sockaddr *)&sa, &c->peer.addr);
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            uv_ip4_name(in, c->peer.client_ip, sizeof(c->peer.client_ip));
            c->peer.client_port = ntohs(in->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
            uv_ip6_name(in6, c->peer.client_ip, sizeof(c->peer.client_ip));
            c->peer.client_port = ntohs(in6->sin6_port);
        }
    }
    mg_wq_init(&c->wq, (uv_stream_t *)&c->tcp, on_drain, on_write_error);
    if (li < w->g->cfg->nlisteners && w->g->cfg->listeners[li].proxy_protocol) {
        if (!mg_client_addr_proxy_allowed(&c->peer, w->g->cfg)) {
            conn_close(c);
            return;
        }
        c->proxy_header = 1;
    }
    conn_open(c);
}

/* ---- the testing kit (mg_ffi.h) ------------------------------------------ */

/* The head check runs the connection's own llhttp callbacks over a
 * connection that holds only the head (its buffer) and a request with the
 * kit config's limits: everything up to the end of the head, the
 * connection's timers and the request's start (on_message_begin) aside. */
int mg_ffi_head_check(mg_kit_config_t *kc, const char *head, size_t len, uint16_t *known,
                      int *flags, uint64_t *content_length, uint32_t *spans, uint32_t max,
                      uint32_t *nheaders, const char **reason)
{
    static llhttp_settings_t s;
    static int ready;
    if (!ready) {
        if (!settings_ready)
            init_settings();
        s = req_settings;
        s.on_message_begin = NULL;
        ready = 1;
    }
    mg_wgen_t *g = mg_kit_config_gen(kc);
    if (!g->cfg) {
        *reason = "no config";
        return 500;
    }
    /* the request's own capacity (request_fit), no more than the head can
     * hold: every header but the first follows a value */
    size_t cap = g->cfg->limits.header_count;
    if (cap > len / 2 + 1)
        cap = len / 2 + 1;
    cap++;
    mg_conn_t *c = calloc(1, sizeof(*c));
    mg_request_t *r = calloc(1, sizeof(*r));
    mg_header_t *hs = calloc(cap, sizeof(*hs));
    uint8_t *tok = malloc(cap);
    if (!c || !r || !hs || !tok || len > UINT32_MAX) {
        free(c);
        free(r);
        free(hs);
        free(tok);
        *reason = "out of memory";
        return 503;
    }
    r->headers = hs;
    r->htok = tok;
    r->headers_cap = (uint32_t)cap;
    r->g = g;
    r->http_minor = 1;
    c->r = r;
    c->buf.data = (char *)head; /* read only: no callback writes to it */
    c->buf.len = c->buf.cap = (uint32_t)len;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &s);
    p.data = c;
    llhttp_errno_t e = llhttp_execute(&p, head, len);
    int status = 0;
    if (e == HPE_PAUSED && r->state == MG_RS_UPSTREAM) {
        status = 0; /* the head was accepted */
    } else if (r->status) { /* a callback refused it (fail) */
        status = r->status;
        *reason = r->error_reason;
    } else {
        status = 400;
        *reason = e == HPE_OK ? "incomplete request head" : llhttp_get_error_reason(&p);
    }
    memcpy(known, r->known, sizeof(r->known));
    *flags = (r->trace_bad ? MG_FFI_HEAD_TRACE_BAD : 0) | (r->chunked ? MG_FFI_HEAD_CHUNKED : 0) |
             (r->head_method ? MG_FFI_HEAD_HEAD : 0);
    *content_length = r->content_length;
    *nheaders = r->nheaders < max ? r->nheaders : max;
    for (uint32_t i = 0; i < *nheaders; i++) {
        uint32_t *sp = spans + 4 * i;
        sp[0] = r->headers[i].name.off;
        sp[1] = r->headers[i].name.len;
        sp[2] = r->headers[i].value.off;
        sp[3] = r->headers[i].value.len;
    }
    free(hs);
    free(tok);
    free(r);
    free(c);
    return status;
}
