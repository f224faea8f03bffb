/* upconn_io.c: the transport of an upstream connection (upstream.h): plain
 * TCP, or TLS when its upstream has `tls` (tls_client.h), behind the same
 * four calls, so that proxy.c's and http_client.c's framing never asks
 * which.
 *
 * A TLS connection's link is made when its TCP connect succeeds and lives
 * as long as the connection, pooled with it: a reused connection skips the
 * handshake. u->wq stays the socket's queue (it carries ciphertext), so
 * `pending` and back-pressure mean the same on both.
 */
#include "tls_client.h"
#include "upstream.h"

int mg_upconn_write(mg_upconn_t *u, const uv_buf_t *bufs, unsigned n)
{
    if (u->tls)
        return mg_tls_link_write(u->tls, bufs, n);
    return mg_wq_write(&u->wq, bufs, n);
}

int mg_upconn_read_start(mg_upconn_t *u, uv_alloc_cb alloc, uv_read_cb read)
{
    if (u->tls)
        return mg_tls_link_read_start(u->tls, alloc, read);
    return uv_read_start((uv_stream_t *)&u->tcp, alloc, read);
}

void mg_upconn_read_stop(mg_upconn_t *u)
{
    if (u->tls)
        mg_tls_link_read_stop(u->tls);
    else
        uv_read_stop((uv_stream_t *)&u->tcp);
}

/* The socket's ciphertext, to the link (the stream's data is u). */
static void tls_raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mg_upconn_t *u = s->data;
    mg_tls_link_on_read(u->tls, nread, b);
}

static void tls_ready(void *arg, const char *err)
{
    mg_upconn_t *u = arg;
    u->tls_done(u, err);
}

int mg_upconn_tls_start(mg_upconn_t *u, void (*done)(mg_upconn_t *u, const char *err))
{
    mg_tls_client_t *c = u->pool->u->tls;
    if (!c)
        return 0;
    u->tls = mg_tls_link_new(c, u->pool->t->host, u->pool->t->port, (uv_stream_t *)&u->tcp,
                             &u->wq, tls_raw_read);
    if (!u->tls)
        return UV_ENOMEM;
    u->tls_done = done;
    int rc = mg_tls_link_handshake(u->tls, tls_ready, u);
    return rc < 0 ? rc : 1;
}

const char *mg_upconn_tls_error(const mg_upconn_t *u)
{
    return u->tls ? mg_tls_link_error(u->tls) : NULL;
}

void mg_upconn_io_close(mg_upconn_t *u)
{
    mg_tls_link_close(u->tls);
    u->tls = NULL;
}
