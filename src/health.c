/* health.c: active health checks of upstream targets (see health.h).
 *
 * One probe per target at a time: a small GET on a connection of its own
 * (oneshot.h: its status line decides, h1_response.c parses it as it
 * parses every upstream answer). A probe holds a reference to the generation whose
 * state it reports to, so a reload never frees that state under it; the
 * verdict of a probe that outlives a reload lands in the old generation and
 * is simply not carried over (the new one checks again at once).
 * A TLS upstream is checked over TLS with its own settings (tls_client.h):
 * a certificate that fails verification fails the check. An HTTP/2
 * upstream is checked with an HTTP/2 GET (h2_upstream.h's probe), its
 * answer's :status read by the probe as the frames come.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "errlog.h"
#include "health.h"
#include "h2_upstream.h"
#include "oneshot.h"
#include "targets.h"
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
    mg_oneshot_t o;             /* the check's request (oneshot.h) */
    mg_health_t *h;
    mg_gen_t *gen;              /* one reference */
    size_t ui, ti;              /* upstream, slot (targets.h) ... */
    uint32_t serial;            /* ... and the slot's filling it checks */
    mg_h2up_probe_t *h2;        /* an HTTP/2 upstream's probe (h2_upstream.h) */
    char req[512];
} probe_t;

static void gen_hold(mg_gen_t *g) { atomic_fetch_add(&g->refs, 1); }

/* ---- verdicts ------------------------------------------------------------ */

/* The check of slot ti of upstream ui in generation gen, filled with the
 * target of that serial, ended. A slot filled again since was reset
 * (targets.c): the verdict is not the new target's. */
static void verdict(mg_health_t *h, mg_gen_t *gen, size_t ui, size_t ti, uint32_t serial, int ok,
                    const char *why)
{
    const mg_upstream_t *u = &gen->cfg->upstreams[ui];
    const mg_slot_t *sl = &gen->tsets[ui].slot[ti];
    if (sl->serial != serial)
        return;
    const mg_target_t *t = &sl->t;
    mg_target_health_t *st = &gen->health[ui][ti];
    int down = atomic_load(&st->down);
    st->in_flight = 0;
    st->checked = 1;
    st->next_at = uv_now(h->loop) + u->health_interval;
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

static void on_probe_closed(mg_oneshot_t *o)
{
    probe_t *p = o->data;
    mg_health_t *h = p->h;
    *p->prevp = p->next;
    if (p->next)
        p->next->prevp = p->prevp;
    mg_gen_release(p->gen);
    mg_h2up_probe_free(p->h2);
    free(p);
    h->probes--;
    if (h->stopping && h->probes == 0 && !h->tick_open)
        free(h);
}

/* oneshot's reader for an HTTP/2 probe: the frames as they come */
static int h2_status(void *arg, const char *data, size_t len)
{
    return mg_h2up_probe_status(arg, data, len);
}

/* The status line decides: 2xx and 3xx are healthy. */
static void on_probe_done(mg_oneshot_t *o, int status, const char *why)
{
    probe_t *p = o->data;
    char bad[48];
    if (status && !(status >= 200 && status < 400)) {
        snprintf(bad, sizeof(bad), "status %d", status);
        why = bad;
    }
    verdict(p->h, p->gen, p->ui, p->ti, p->serial, status >= 200 && status < 400, why);
}

static void probe_start(mg_health_t *h, size_t ui, size_t ti)
{
    const mg_upstream_t *u = &h->gen->cfg->upstreams[ui];
    const mg_slot_t *sl = &h->gen->tsets[ui].slot[ti];
    const mg_target_t *t = &sl->t; /* its address found already (discovery.h) */
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
    int n = snprintf(p->req, sizeof(p->req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: moongate-health-check\r\n"
                     "Connection: close\r\n\r\n",
                     u->health_path, mg_target_authority(t));
    uv_buf_t b = uv_buf_init(p->req, (unsigned)(n < (int)sizeof(p->req) ? n : 0));
    if (u->protocol != MG_UP_H1) { /* an HTTP/2 GET, prior knowledge or ALPN h2 */
        long hn = (p->h2 = mg_h2up_probe_new(mg_target_authority(t), u->health_path, u->tls != NULL))
                      ? mg_h2up_probe_request(p->h2, p->req, sizeof(p->req))
                      : -1;
        b.len = hn > 0 ? (size_t)hn : 0;
        p->o.status_of = h2_status;
        p->o.status_arg = p->h2;
    }
    p->o.data = p;
    p->o.done = on_probe_done;
    p->o.closed = on_probe_closed;
    p->o.timeout_why = "no answer within the health timeout";
    mg_oneshot_start(&p->o, h->loop, (const struct sockaddr *)&sl->addr, u->tls, t->host, t->port, &b, 1,
                     u->health_timeout);
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
        mg_oneshot_cancel(&p->o, "stopping");
}
