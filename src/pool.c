/* pool.c: per-worker keep-alive pools of upstream connections, one per
 * target (slot, targets.h), the worker's side of target set changes
 * (mg_pools_sync), and which targets the balancer (balancer.h) may pick.
 *
 * An idle connection keeps reading: anything it receives (data or EOF)
 * means the server closed or misbehaved, and the connection is dropped
 * before anyone reuses it. Pools never exceed the upstream's `keepalive`.
 */
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include "upstream.h"
#include "mg_ffi.h"
#include "outlier.h"
#include "targets.h"
#include "tls_client.h"

/* Slot s's pool of upstream ui, made on first use. */
static mg_pool_t *pool_of(mg_wgen_t *g, size_t ui, size_t s)
{
    mg_upstream_rt_t *rt = &g->ups[ui];
    mg_pool_t *p = rt->pools[s];
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->w = g->w;
    p->u = rt->u;
    p->index = (int)s;
    p->lb = &rt->lb;
    atomic_init(&p->nconns, 0);
    mg_list_init(&p->idle);
    mg_list_init(&p->h2);
    rt->pools[s] = p;
    return p;
}

/* Closes p's idle connections (its target left or drains): HTTP/1 ones,
 * and HTTP/2 sessions without a stream; those with streams take no new
 * one and close once their streams end (h2_upstream.h). */
static void close_idle(mg_wgen_t *g, mg_pool_t *p)
{
    while (!mg_list_empty(&p->idle))
        g->w->upstream->detach(mg_container_of(p->idle.next, mg_upconn_t, link), 0);
    g->w->upstream->sessions_retire(p);
}

/* Upstream ui runs by view v from now on (the caller's reference passes
 * to rt). 0, or -1 when out of memory (v released, the old view kept). */
static int sync_one(mg_wgen_t *g, size_t ui, mg_tview_t *v)
{
    mg_upstream_rt_t *rt = &g->ups[ui];
    const mg_tset_t *ts = &g->gen->tsets[ui];
    /* pools first, so that nothing changes when one cannot be made */
    for (uint32_t s = 0; s < v->n; s++)
        if (v->e[s].serial && !pool_of(g, ui, s)) {
            mg_tview_release(v);
            return -1;
        }
    mg_lb_t *lb = &rt->lb;
    for (size_t s = 0; s < ts->cap; s++) {
        mg_pool_t *p = rt->pools[s];
        if (!p)
            continue;
        const mg_tview_entry_t *e = s < v->n ? &v->e[s] : NULL;
        if (e && e->serial) {
            if (p->serial != e->serial) {
                /* a new target in the slot: fresh passive health (its
                 * previous one left every pool before the slot was
                 * filled again: targets.h) */
                const mg_slot_t *sl = &ts->slot[s];
                p->t = &sl->t;
                p->addr = sl->addr;
                p->addr_ok = sl->addr.ss_family == AF_INET || sl->addr.ss_family == AF_INET6;
                p->serial = e->serial;
                p->fails = 0;
                p->down_until = 0;
                p->h2_limit = 0; /* the new target's SETTINGS will say */
                lb->cw[s] = 0;
            }
            p->state = e->draining ? MG_POOL_DRAINING : MG_POOL_LIVE;
            lb->weight[s] = e->weight;
        } else {
            p->state = MG_POOL_GONE;
            lb->weight[s] = 0;
            lb->cw[s] = 0;
        }
        if (p->state != MG_POOL_LIVE)
            close_idle(g, p);
    }
    lb->n = v->n;
    lb->maglev = v->maglev;
    mg_tview_t *old = rt->view;
    rt->view = v;
    atomic_store(&rt->synced, v->version);
    mg_tview_release(old);
    return 0;
}

int mg_pools_sync(mg_wgen_t *g)
{
    int rc = 0;
    if (!g->gen || !g->gen->tsets)
        return 0;
    for (size_t i = 0; i < g->cfg->nupstreams; i++) {
        mg_tview_t *v = mg_tset_acquire(g->gen, i);
        if (v == g->ups[i].view) {
            mg_tview_release(v);
            continue;
        }
        if (sync_one(g, i, v) < 0)
            rc = -1;
    }
    return rc;
}

int mg_pools_init(mg_wgen_t *g)
{
    const mg_config_t *cfg = g->cfg;
    mg_worker_t *w = g->w;
    g->ups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*g->ups));
    if (!g->ups)
        return -1;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        mg_upstream_rt_t *rt = &g->ups[i];
        size_t cap = g->gen->tsets[i].cap;
        rt->u = u;
        rt->pools = calloc(cap, sizeof(*rt->pools));
        /* the seed differs per worker and upstream (worker 0's is i, as the
         * testing kit's: mg_ffi_lb_new) */
        if (!rt->pools ||
            mg_lb_init(&rt->lb, &g->gen->lb[i], u->balancer, NULL, cap,
                       (uint64_t)w->id << 32 | i) < 0 ||
            sync_one(g, i, mg_tset_acquire(g->gen, i)) < 0)
            return -1;
        /* start each worker at a different place in the rotation, so that
         * a few requests spread over workers still reach every target */
        for (int k = 0; k < w->id; k++)
            mg_balancer_pick(g, (int)i, NULL, -1);
    }
    return 0;
}

static int same_target(const mg_pool_t *a, const mg_pool_t *b)
{
    /* a pooled connection speaks the TLS (or not) its pool's config set up */
    return a->t && b->t && strcmp(a->t->name, b->t->name) == 0 &&
           strcmp(a->u->name, b->u->name) == 0 && mg_tls_client_same(a->u->tls, b->u->tls);
}

/* The pool of g that serves what op served: the same upstream name and
 * target, in g's view. */
static mg_pool_t *successor_of(mg_wgen_t *g, const mg_pool_t *op)
{
    for (size_t j = 0; j < g->cfg->nupstreams; j++) {
        const mg_upstream_rt_t *rt = &g->ups[j];
        if (strcmp(rt->u->name, op->u->name) != 0)
            continue;
        for (uint32_t s = 0; s < rt->view->n; s++)
            if (rt->view->e[s].serial && rt->pools[s] && same_target(op, rt->pools[s]))
                return rt->pools[s];
    }
    return NULL;
}

void mg_pools_adopt(mg_wgen_t *g, mg_wgen_t *old)
{
    for (size_t i = 0; i < old->cfg->nupstreams; i++) {
        mg_upstream_rt_t *ort = &old->ups[i];
        size_t cap = old->gen->tsets[i].cap;
        for (size_t t = 0; ort->pools && t < cap; t++) {
            mg_pool_t *op = ort->pools[t];
            if (!op)
                continue;
            mg_pool_t *np = op->state == MG_POOL_GONE ? NULL : successor_of(g, op);
            op->successor = np;
            op->successor_serial = np ? np->serial : 0;
            g->w->upstream->sessions_adopt(op, np); /* HTTP/2 sessions, busy or not */
            if (!np) {
                /* the target is gone: drain, do not cut (in-use ones finish) */
                close_idle(g, op);
                continue;
            }
            if (np->down_until < op->down_until)
                np->down_until = op->down_until;
            while (!mg_list_empty(&op->idle)) {
                mg_upconn_t *u = mg_container_of(op->idle.next, mg_upconn_t, link);
                mg_list_remove(&u->link);
                op->nidle--;
                u->idle = 0;
                mg_pool_put_idle(np, u);
                if (!u->idle)
                    u->w->upstream->detach(u, 0); /* the new pool is smaller (proxy.c) */
            }
        }
    }
}

/* Closes idle connections. Connections in use are closed by their
 * requests (or handed to a successor pool). */
void mg_pools_close(mg_wgen_t *g)
{
    if (!g->ups)
        return;
    for (size_t i = 0; i < g->cfg->nupstreams; i++) {
        mg_upstream_rt_t *rt = &g->ups[i];
        for (size_t t = 0; rt->pools && t < g->gen->tsets[i].cap; t++)
            if (rt->pools[t]) {
                g->w->upstream->sessions_close(rt->pools[t]);
                close_idle(g, rt->pools[t]); /* closes them; close forgets them */
            }
    }
}

void mg_pools_free(mg_wgen_t *g)
{
    if (!g->ups)
        return;
    for (size_t i = 0; i < g->cfg->nupstreams; i++) {
        mg_upstream_rt_t *rt = &g->ups[i];
        for (size_t t = 0; rt->pools && t < g->gen->tsets[i].cap; t++)
            free(rt->pools[t]);
        free(rt->pools);
        mg_lb_free(&rt->lb);
        mg_tview_release(rt->view);
    }
    free(g->ups);
    g->ups = NULL;
}

void mg_pool_closing(mg_upconn_t *u)
{
    if (u->pool && atomic_load_explicit(&u->pool->nconns, memory_order_relaxed))
        atomic_fetch_sub_explicit(&u->pool->nconns, 1, memory_order_relaxed);
}

mg_upconn_t *mg_pool_take_idle(mg_pool_t *p)
{
    if (mg_list_empty(&p->idle))
        return NULL;
    /* most recently used first: warm connections, and the cold ones time out */
    mg_upconn_t *u = mg_container_of(p->idle.next, mg_upconn_t, link);
    mg_list_remove(&u->link);
    p->nidle--;
    u->idle = 0;
    /* its idle deadline stays armed: the new user's deadline replaces it
     * lazily (on_up_timer re-arms), which saves a timer-heap update */
    return u;
}

void mg_pool_put_idle(mg_pool_t *p, mg_upconn_t *u)
{
    /* its generation was replaced: go to the new one, unless the target
     * has left that one's set and its slot serves another since (the
     * caller closes u) */
    while (p->successor) {
        if (p->successor->serial != p->successor_serial)
            return;
        p = p->successor;
    }
    mg_pool_move(u, p);
    /* a target that left or drains keeps no idle connection */
    if (p->nidle >= p->u->keepalive || p->w->stopping || p->state != MG_POOL_LIVE)
        return;
    mg_list_push(&p->idle, &u->link);
    p->nidle++;
    u->idle = 1;
}

void mg_pool_forget(mg_upconn_t *u)
{
    if (!u->idle)
        return;
    mg_list_remove(&u->link);
    u->pool->nidle--;
    u->idle = 0;
}

/* Passive circuit breaking: max_fails failed attempts in a row (connect
 * errors, and answers that never came: timeouts, resets on a fresh
 * connection) skip the target for fail_timeout; any answer resets the
 * count. After fail_timeout the target is tried again. */
void mg_pool_failed(mg_pool_t *p)
{
    if (p->u->max_fails == 0)
        return;
    if (++p->fails >= p->u->max_fails) {
        p->down_until = uv_now(&p->w->loop) + p->u->fail_timeout;
        p->fails = 0;
    }
}

void mg_pool_answered(mg_pool_t *p) { p->fails = 0; }

/* mg_balancer_pick's passes: the live targets, then (passes 2) any.
 * Inlined into both callers, so that each has its constant passes (the
 * proxy's pick costs what it did before mg_balancer_pick_live). */
static inline __attribute__((always_inline)) int pick(mg_wgen_t *g, int ui, const mg_request_t *r, int exclude, int passes)
{
    mg_upstream_rt_t *rt = &g->ups[ui];
    const mg_tview_t *v = rt->view;
    /* no other to choose (-1: none at all); one pass only (pick_live)
     * still asks whether the one is up */
    if (v->nlive == 0 || (v->nlive == 1 && passes == 2))
        return v->single;
    mg_lb_t *lb = &rt->lb;
    size_t n = v->n;
    uint64_t key = 0;
    int has_key = r && rt->u->balancer == MG_LB_HASH && mg_lb_key(r, rt->u, &key);
    uint64_t now = uv_now(&g->w->loop);
    const mg_target_health_t *hs = g->gen->health ? g->gen->health[ui] : NULL;
    const mg_outlier_t *os = rt->u->outlier ? &g->gen->outlier[ui] : NULL;
    for (int pass = 0; pass < passes; pass++) {
        int best_prio = -1;
        for (size_t i = 0; i < n; i++) {
            const mg_pool_t *p = rt->pools[i];
            const mg_tview_entry_t *e = &v->e[i];
            /* first pass: live targets only (not refused lately, not taken
             * out by health checks, not ejected as an outlier); second: any
             * but `exclude`; never one that is not in the view, drains or
             * has no address */
            lb->live[i] = !(!e->serial || e->draining || (int)i == exclude || !p->addr_ok ||
                            (pass == 0 && (p->down_until > now ||
                                           (hs && atomic_load_explicit(&hs[i].down,
                                                                       memory_order_relaxed)) ||
                                           (os && mg_outlier_ejected(os, i, now)))));
            if (lb->live[i] && (best_prio < 0 || e->priority < best_prio))
                best_prio = e->priority;
        }
        if (v->tiers) /* SRV priorities: the best one that has a target up */
            for (size_t i = 0; i < n; i++)
                lb->live[i] = lb->live[i] && v->e[i].priority == best_prio;
        int best = lb->ops->pick(lb, key, has_key);
        if (best >= 0)
            return best;
    }
    if (passes == 1)
        return -1;
    return exclude >= 0 && mg_tview_has(v, (size_t)exclude) && !v->e[exclude].draining ? exclude
                                                                                       : -1;
}

int mg_balancer_pick(mg_wgen_t *g, int ui, const mg_request_t *r, int exclude)
{
    return pick(g, ui, r, exclude, 2);
}

int mg_balancer_pick_live(mg_wgen_t *g, int ui, const mg_request_t *r)
{
    return pick(g, ui, r, -1, 1);
}
