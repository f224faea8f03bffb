/* health.c: active health checks of upstream targets (see health.h).
 *
 * One probe per target at a time: connect, send a small GET, read the
 * status line (h1_response.c parses it, as it parses every upstream
 * answer), close. The probe says Connection: close: its connection is
 * never reused, so no reuse decision is made here. A probe holds a reference to the generation whose
 * state it reports to, so a reload never frees that state under it; the
 * verdict of a probe that outlives a reload lands in the old generation and
 * is simply not carried over (the new one checks again at once).
 * A TLS upstream is checked over TLS with its own settings (tls_client.h):
 * a certificate that fails verification fails the check.
 */
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlog.h"
#include "h1_response.h"
#include "health.h"
#include "h2_upstream.h"
#include "tls_client.h"
#include "worker.h"

#define TICK_MS 100

struct mg_health_s {
    uv_loop_t *loop;
    uv_timer_t tick;
    mg_gen_t *gen;              /* one reference */
    int stopping;
    int tick_open;
    int probes;                 /* in flight (their handles not yet closed) */
    struct probe_s *list;       /* those probes */
};

typedef struct probe_s {
    struct probe_s *next, **prevp;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    mg_wq_t wq;                 /* TLS records (a TLS upstream) */
    mg_tls_link_t *tls;
    char why[160];              /* a TLS failure's reason */
    mg_health_t *h;
    mg_gen_t *gen;              /* one reference */
    size_t ui, ti;
    int handles;                /* open libuv handles */
    int done;
    size_t len;
    mg_h2up_probe_t *h2;        /* an HTTP/2 upstream's probe (h2_upstream.h) */
    size_t req_len;
    char req[512];
    char buf[256];
} probe_t;

static void gen_hold(mg_gen_t *g) { atomic_fetch_add(&g->refs, 1); }

/* ---- verdicts ------------------------------------------------------------ */

static void verdict(probe_t *p, int ok, const char *why)
{
    if (p->done)
        return;
    p->done = 1;
    const mg_upstream_t *u = &p->gen->cfg->upstreams[p->ui];
    const mg_target_t *t = &u->targets[p->ti];
    mg_target_health_t *st = &p->gen->health[p->ui][p->ti];
    int down = atomic_load(&st->down);
    st->in_flight = 0;
    st->checked = 1;
    st->next_at = uv_now(p->h->loop) + u->health_interval;
    if (ok) {
        st->fail_streak = 0;
        st->ok_streak++;
        st->last_error[0] = '\0';
        if (down && st->ok_streak >= u->health_rise) {
            atomic_store(&st->down, 0);
            mg_log(MG_LOG_NOTICE, "upstream %s: target %s is back (%d good health checks)\n",
                    u->name, t->name, st->ok_streak);
        }
        return;
    }
    st->ok_streak = 0;
    st->fail_streak++;
    snprintf(st->last_error, sizeof(st->last_error), "%s", why);
    if (!down && st->fail_streak >= u->health_fall) {
        atomic_store(&st->down, 1);
        mg_log(MG_LOG_WARN, "upstream %s: target %s taken out: %s (%d failed health "
                        "checks of GET %s)\n",
                u->name, t->name, why, st->fail_streak, u->health_path);
    }
}

static void on_probe_closed(uv_handle_t *hd)
{
    probe_t *p = hd->data;
    if (--p->handles > 0)
        return;
    mg_health_t *h = p->h;
    *p->prevp = p->next;
    if (p->next)
        p->next->prevp = p->prevp;
    mg_gen_release(p->gen);
    free(p);
    h->probes--;
    if (h->stopping && h->probes == 0 && !h->tick_open)
        free(h);
}

static void finish(probe_t *p, int ok, const char *why)
{
    verdict(p, ok, why);
    mg_h2up_probe_free(p->h2);
    p->h2 = NULL;
    mg_tls_link_close(p->tls); /* its close_notify first */
    p->tls = NULL;
    p->wq.closed = 1; /* (TLS) a write the close cancels is no news */
    if (!uv_is_closing((uv_handle_t *)&p->tcp))
        uv_close((uv_handle_t *)&p->tcp, on_probe_closed);
    if (!uv_is_closing((uv_handle_t *)&p->timer))
        uv_close((uv_handle_t *)&p->timer, on_probe_closed);
}

/* ---- one probe ------------------------------------------------------------ */

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, 0, "no answer within the health timeout");
}

static void on_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *b)
{
    probe_t *p = hd->data;
    (void)hint;
    *b = uv_buf_init(p->buf + p->len, (unsigned)(sizeof(p->buf) - 1 - p->len));
}

/* 2xx and 3xx are healthy. */
static void status_verdict(probe_t *p, int status)
{
    if (status >= 200 && status < 400) {
        finish(p, 1, NULL);
        return;
    }
    char why[48];
    snprintf(why, sizeof(why), "status %d", status);
    finish(p, 0, why);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    probe_t *p = s->data;
    (void)b;
    if (n < 0) {
        finish(p, 0, n == UV_EOF      ? "closed without an answer"
                     : n == UV_EPROTO ? mg_tls_link_error(p->tls)
                                      : uv_strerror((int)n));
        return;
    }
    p->len += (size_t)n;
    if (p->h2) { /* the frames are read as they come: nothing is kept */
        int status = mg_h2up_probe_status(p->h2, p->buf, p->len);
        p->len = 0;
        if (status == 0)
            return;
        if (status < 0)
            finish(p, 0, "not an HTTP/2 answer");
        else
            status_verdict(p, status);
        return;
    }
    p->buf[p->len] = '\0';
    char *eol = memchr(p->buf, '\n', p->len);
    if (!eol && p->len < sizeof(p->buf) - 1)
        return;
    /* the status line decides; the probe asked to close after it */
    int status = 0;
    uint8_t minor;
    uint32_t text_off, text_len;
    if (!eol || eol == p->buf || eol[-1] != '\r' ||
        mg_h1_status_line(p->buf, (size_t)(eol - 1 - p->buf), &status, &minor, &text_off,
                          &text_len) < 0) {
        finish(p, 0, "not an HTTP answer");
        return;
    }
    status_verdict(p, status);
}

static void on_written(uv_write_t *w, int status)
{
    probe_t *p = w->data;
    if (status < 0 && !p->done)
        finish(p, 0, uv_strerror(status));
}

/* ---- over TLS ------------------------------------------------------------- */

static void tls_raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    probe_t *p = s->data;
    mg_tls_link_on_read(p->tls, n, b);
}

static void tls_write_failed(mg_wq_t *q, int status)
{
    probe_t *p = mg_container_of(q, probe_t, wq);
    finish(p, 0, uv_strerror(status));
}

static void tls_ready(void *arg, const char *err)
{
    probe_t *p = arg;
    if (p->done)
        return;
    if (err) {
        snprintf(p->why, sizeof(p->why), "%s", err); /* the link goes with the probe */
        finish(p, 0, p->why);
        return;
    }
    uv_buf_t b = uv_buf_init(p->req, (unsigned)p->req_len);
    if (mg_tls_link_write(p->tls, &b, 1) < 0 ||
        mg_tls_link_read_start(p->tls, on_alloc, on_read) < 0)
        finish(p, 0, "cannot send the health check");
}

static void tls_start(probe_t *p, mg_tls_client_t *c, const mg_target_t *t)
{
    mg_wq_init(&p->wq, (uv_stream_t *)&p->tcp, NULL, tls_write_failed);
    p->tls = mg_tls_link_new(c, t->host, t->port, (uv_stream_t *)&p->tcp, &p->wq, tls_raw_read);
    if (!p->tls || mg_tls_link_handshake(p->tls, tls_ready, p) < 0)
        finish(p, 0, "cannot start TLS");
}

static void on_connect(uv_connect_t *c, int status)
{
    probe_t *p = c->data;
    if (p->done)
        return;
    if (status < 0) {
        finish(p, 0, uv_strerror(status));
        return;
    }
    const mg_upstream_t *u = &p->gen->cfg->upstreams[p->ui];
    if (u->tls) {
        tls_start(p, u->tls, &u->targets[p->ti]);
        return;
    }
    uv_buf_t b = uv_buf_init(p->req, (unsigned)p->req_len);
    p->write.data = p;
    if (uv_write(&p->write, (uv_stream_t *)&p->tcp, &b, 1, on_written) < 0 ||
        uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read) < 0)
        finish(p, 0, "cannot send the health check");
}

/* The target's address. Names are looked up here, on the control thread
 * (a blocking lookup; the workers never wait for it). */
static int target_addr(const mg_target_t *t, struct sockaddr_storage *sa)
{
    if (uv_ip4_addr(t->host, t->port, (struct sockaddr_in *)sa) == 0 ||
        uv_ip6_addr(t->host, t->port, (struct sockaddr_in6 *)sa) == 0)
        return 0;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", t->port);
    if (getaddrinfo(t->host, port, &hints, &res) != 0 || !res)
        return -1;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void probe_start(mg_health_t *h, size_t ui, size_t ti)
{
    const mg_upstream_t *u = &h->gen->cfg->upstreams[ui];
    const mg_target_t *t = &u->targets[ti];
    mg_target_health_t *st = &h->gen->health[ui][ti];
    probe_t *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->h = h;
    p->gen = h->gen;
    gen_hold(p->gen);
    p->ui = ui;
    p->ti = ti;
    st->in_flight = 1;
    h->probes++;
    p->next = h->list;
    p->prevp = &h->list;
    if (h->list)
        h->list->prevp = &p->next;
    h->list = p;
    snprintf(p->req, sizeof(p->req),
             "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: moongate-health-check\r\n"
             "Connection: close\r\n\r\n",
             u->health_path, t->name);
    p->req_len = strlen(p->req);
    if (u->protocol != MG_UP_H1) { /* an HTTP/2 GET, prior knowledge or ALPN h2 */
        long n = (p->h2 = mg_h2up_probe_new(t->name, u->health_path, u->tls != NULL))
                     ? mg_h2up_probe_request(p->h2, p->req, sizeof(p->req))
                     : -1;
        p->req_len = n > 0 ? (size_t)n : 0;
    }
    uv_tcp_init(h->loop, &p->tcp);
    uv_timer_init(h->loop, &p->timer);
    p->tcp.data = p->timer.data = p->connect.data = p;
    p->handles = 2;
    uv_timer_start(&p->timer, on_timeout, u->health_timeout, 0);
    struct sockaddr_storage sa;
    if (target_addr(t, &sa) < 0) {
        finish(p, 0, "cannot resolve the target's host");
        return;
    }
    if (uv_tcp_connect(&p->connect, &p->tcp, (struct sockaddr *)&sa, on_connect) < 0)
        finish(p, 0, "cannot connect");
}

/* ---- the checker ------------------------------------------------------------ */

static void on_tick(uv_timer_t *t)
{
    mg_health_t *h = t->data;
    const mg_config_t *cfg = h->gen->cfg;
    uint64_t now = uv_now(h->loop);
    for (size_t ui = 0; ui < cfg->nupstreams; ui++) {
        const mg_upstream_t *u = &cfg->upstreams[ui];
        if (!u->health_path)
            continue;
        for (size_t ti = 0; ti < u->ntargets; ti++) {
            mg_target_health_t *st = &h->gen->health[ui][ti];
            if (!st->in_flight && now >= st->next_at)
                probe_start(h, ui, ti);
        }
    }
}

mg_health_t *mg_health_start(uv_loop_t *loop, mg_gen_t *gen)
{
    mg_health_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->loop = loop;
    h->gen = gen;
    gen_hold(gen);
    uv_timer_init(loop, &h->tick);
    h->tick.data = h;
    h->tick_open = 1;
    uv_timer_start(&h->tick, on_tick, 0, TICK_MS);
    return h;
}

void mg_health_switch(mg_health_t *h, mg_gen_t *gen)
{
    if (!h)
        return;
    const mg_config_t *old = h->gen->cfg, *cfg = gen->cfg;
    for (size_t ui = 0; ui < cfg->nupstreams; ui++) {
        const mg_upstream_t *u = &cfg->upstreams[ui];
        for (size_t oi = 0; oi < old->nupstreams; oi++) {
            const mg_upstream_t *ou = &old->upstreams[oi];
            if (strcmp(ou->name, u->name) != 0 || !ou->health_path || !u->health_path)
                continue;
            for (size_t ti = 0; ti < u->ntargets; ti++)
                for (size_t oti = 0; oti < ou->ntargets; oti++) {
                    if (strcmp(ou->targets[oti].name, u->targets[ti].name) != 0)
                        continue;
                    mg_target_health_t *from = &h->gen->health[oi][oti];
                    mg_target_health_t *to = &gen->health[ui][ti];
                    atomic_store(&to->down, atomic_load(&from->down));
                    to->checked = from->checked;
                    to->ok_streak = from->ok_streak;
                    to->fail_streak = from->fail_streak;
                    to->next_at = from->next_at;
                    memcpy(to->last_error, from->last_error, sizeof(to->last_error));
                }
        }
    }
    gen_hold(gen);
    mg_gen_release(h->gen);
    h->gen = gen;
}

static void on_tick_closed(uv_handle_t *hd)
{
    mg_health_t *h = hd->data;
    h->tick_open = 0;
    if (h->probes == 0)
        free(h);
}

void mg_health_stop(mg_health_t *h)
{
    if (!h)
        return;
    h->stopping = 1;
    mg_gen_release(h->gen);
    h->gen = NULL;
    uv_close((uv_handle_t *)&h->tick, on_tick_closed);
    /* probes in flight are cut; the last one closed frees h */
    for (probe_t *p = h->list; p; p = p->next)
        finish(p, 0, "stopping");
}
