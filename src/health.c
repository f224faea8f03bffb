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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlog.h"
#include "h1_response.h"
#include "health.h"
#include "targets.h"
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
    size_t ui, ti;              /* upstream, slot (targets.h) ... */
    uint32_t serial;            /* ... and the slot's filling it checks */
    int handles;                /* open libuv handles */
    int done;
    size_t len;
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
    const mg_slot_t *sl = &p->gen->tsets[p->ui].slot[p->ti];
    if (sl->serial != p->serial)
        return; /* the slot holds another target now: not its verdict */
    const mg_target_t *t = &sl->t;
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
    if (status >= 200 && status < 400) {
        finish(p, 1, NULL);
        return;
    }
    char why[48];
    snprintf(why, sizeof(why), "status %d", status);
    finish(p, 0, why);
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
    uv_buf_t b = uv_buf_init(p->req, (unsigned)strlen(p->req));
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
        tls_start(p, u->tls, &p->gen->tsets[p->ui].slot[p->ti].t);
        return;
    }
    uv_buf_t b = uv_buf_init(p->req, (unsigned)strlen(p->req));
    p->write.data = p;
    if (uv_write(&p->write, (uv_stream_t *)&p->tcp, &b, 1, on_written) < 0 ||
        uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read) < 0)
        finish(p, 0, "cannot send the health check");
}

static void probe_start(mg_health_t *h, size_t ui, size_t ti)
{
    const mg_upstream_t *u = &h->gen->cfg->upstreams[ui];
    const mg_slot_t *sl = &h->gen->tsets[ui].slot[ti];
    const mg_target_t *t = &sl->t;
    mg_target_health_t *st = &h->gen->health[ui][ti];
    probe_t *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    p->h = h;
    p->gen = h->gen;
    gen_hold(p->gen);
    p->ui = ui;
    p->ti = ti;
    p->serial = sl->serial;
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
             u->health_path, t->authority ? t->authority : t->name);
    uv_tcp_init(h->loop, &p->tcp);
    uv_timer_init(h->loop, &p->timer);
    p->tcp.data = p->timer.data = p->connect.data = p;
    p->handles = 2;
    uv_timer_start(&p->timer, on_timeout, u->health_timeout, 0);
    if (uv_tcp_connect(&p->connect, &p->tcp, (const struct sockaddr *)&sl->addr, on_connect) < 0)
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
        /* the targets of the published view (the control thread's own) */
        const mg_tview_t *v = h->gen->tsets[ui].view;
        for (size_t ti = 0; ti < v->n; ti++) {
            mg_target_health_t *st = &h->gen->health[ui][ti];
            if (v->e[ti].serial && !st->in_flight && now >= st->next_at)
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
            const mg_tview_t *v = gen->tsets[ui].view, *ov = h->gen->tsets[oi].view;
            for (size_t ti = 0; ti < v->n; ti++)
                for (size_t oti = 0; v->e[ti].serial && oti < ov->n; oti++) {
                    if (!ov->e[oti].serial || strcmp(h->gen->tsets[oi].slot[oti].t.name,
                                                     gen->tsets[ui].slot[ti].t.name) != 0)
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
