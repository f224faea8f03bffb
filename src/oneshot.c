/* oneshot.c: one request on a connection of its own (see oneshot.h).
 * The answer's status line decides; the request asked the server to close
 * after the answer, so the rest of it is not read.
 */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include "h1_response.h"
#include "list.h"
#include "oneshot.h"

static void on_closed(uv_handle_t *hd)
{
    mg_oneshot_t *o = hd->data;
    if (--o->handles == 0)
        o->closed(o);
}

static void finish(mg_oneshot_t *o, int status, const char *why)
{
    if (!o->finished) {
        o->finished = 1;
        o->done(o, status, why);
    }
    mg_tls_link_close(o->tls); /* its close_notify first */
    o->tls = NULL;
    o->wq.closed = 1; /* (TLS) a write the close cancels is no news */
    if (!uv_is_closing((uv_handle_t *)&o->tcp))
        uv_close((uv_handle_t *)&o->tcp, on_closed);
    if (!uv_is_closing((uv_handle_t *)&o->timer))
        uv_close((uv_handle_t *)&o->timer, on_closed);
}

void mg_oneshot_cancel(mg_oneshot_t *o, const char *why) { finish(o, 0, why); }

static void on_timeout(uv_timer_t *t)
{
    mg_oneshot_t *o = t->data;
    finish(o, 0, o->timeout_why ? o->timeout_why : "no answer in time");
}

static void on_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *b)
{
    mg_oneshot_t *o = hd->data;
    (void)hint;
    *b = uv_buf_init(o->buf + o->len, (unsigned)(sizeof(o->buf) - 1 - o->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    mg_oneshot_t *o = s->data;
    (void)b;
    if (o->finished)
        return;
    if (n < 0) {
        finish(o, 0, n == UV_EOF      ? "closed without an answer"
                     : n == UV_EPROTO ? mg_tls_link_error(o->tls)
                                      : uv_strerror((int)n));
        return;
    }
    o->len += (size_t)n;
    if (o->status_of) { /* the reader keeps what it needs: nothing stays in buf */
        int st = o->status_of(o->status_arg, o->buf, o->len);
        o->len = 0;
        if (st != 0)
            finish(o, st > 0 ? st : 0, st > 0 ? NULL : "not an HTTP/2 answer");
        return;
    }
    o->buf[o->len] = '\0';
    char *eol = memchr(o->buf, '\n', o->len);
    if (!eol && o->len < sizeof(o->buf) - 1)
        return;
    int status = 0;
    uint8_t minor;
    uint32_t text_off, text_len;
    if (!eol || eol == o->buf || eol[-1] != '\r' ||
        mg_h1_status_line(o->buf, (size_t)(eol - 1 - o->buf), &status, &minor, &text_off,
                          &text_len) < 0) {
        finish(o, 0, "not an HTTP answer");
        return;
    }
    finish(o, status, NULL);
}

static void on_written(uv_write_t *w, int status)
{
    mg_oneshot_t *o = w->data;
    if (status < 0 && !o->finished)
        finish(o, 0, uv_strerror(status));
}

/* ---- over TLS ------------------------------------------------------------- */

static void tls_raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    mg_oneshot_t *o = s->data;
    mg_tls_link_on_read(o->tls, n, b);
}

static void tls_write_failed(mg_wq_t *q, int status)
{
    mg_oneshot_t *o = mg_container_of(q, mg_oneshot_t, wq);
    finish(o, 0, uv_strerror(status));
}

static void tls_ready(void *arg, const char *err)
{
    mg_oneshot_t *o = arg;
    if (o->finished)
        return;
    if (err) {
        snprintf(o->why, sizeof(o->why), "%s", err); /* the link goes before done */
        finish(o, 0, o->why);
        return;
    }
    if (mg_tls_link_write(o->tls, o->req, o->nreq) < 0 ||
        mg_tls_link_read_start(o->tls, on_alloc, on_read) < 0)
        finish(o, 0, "cannot send the request");
}

static void on_connect(uv_connect_t *c, int status)
{
    mg_oneshot_t *o = c->data;
    if (o->finished)
        return;
    if (status < 0) {
        finish(o, 0, uv_strerror(status));
        return;
    }
    if (o->tls) {
        if (mg_tls_link_handshake(o->tls, tls_ready, o) < 0)
            finish(o, 0, "cannot start TLS");
        return;
    }
    o->write.data = o;
    if (uv_write(&o->write, (uv_stream_t *)&o->tcp, o->req, o->nreq, on_written) < 0 ||
        uv_read_start((uv_stream_t *)&o->tcp, on_alloc, on_read) < 0)
        finish(o, 0, "cannot send the request");
}

void mg_oneshot_start(mg_oneshot_t *o, uv_loop_t *loop, const struct sockaddr *sa,
                      mg_tls_client_t *tls, const char *host, uint16_t port, const uv_buf_t *req,
                      unsigned nreq, uint64_t timeout_ms)
{
    o->finished = 0;
    o->len = 0;
    o->tls = NULL;
    o->nreq = nreq < 4 ? nreq : 4;
    memcpy(o->req, req, sizeof(*req) * o->nreq);
    uv_tcp_init(loop, &o->tcp);
    uv_timer_init(loop, &o->timer);
    o->tcp.data = o->timer.data = o->connect.data = o;
    o->handles = 2;
    uv_timer_start(&o->timer, on_timeout, timeout_ms, 0);
    if (tls) {
        mg_wq_init(&o->wq, (uv_stream_t *)&o->tcp, NULL, tls_write_failed);
        o->tls = mg_tls_link_new(tls, host, port, (uv_stream_t *)&o->tcp, &o->wq, tls_raw_read);
        if (!o->tls) {
            finish(o, 0, "cannot start TLS");
            return;
        }
    }
    if (uv_tcp_connect(&o->connect, &o->tcp, sa, on_connect) < 0)
        finish(o, 0, "cannot connect");
}

int mg_oneshot_resolve(const char *host, uint16_t port, struct sockaddr_storage *sa)
{
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)sa) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)sa) == 0)
        return 0;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    char p[8];
    snprintf(p, sizeof(p), "%u", port);
    if (getaddrinfo(host, p, &hints, &res) != 0 || !res)
        return -1;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}
