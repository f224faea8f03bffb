/* pool.c: per-worker keep-alive pools of upstream connections, one per
 * target, and which targets the balancer (balancer.h) may pick.
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
#include "tls_client.h"

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
        rt->u = u;
        rt->pools = calloc(u->ntargets, sizeof(*rt->pools));
        int *weights = calloc(u->ntargets ? u->ntargets : 1, sizeof(int));
        for (size_t t = 0; weights && t < u->ntargets; t++)
            weights[t] = u->targets[t].weight;
        /* the seed differs per worker and upstream (worker 0's is i, as the
         * testing kit's: mg_ffi_lb_new) */
        int rc = weights ? mg_lb_init(&rt->lb, &g->gen->lb[i], u->balancer, weights,
                                      u->ntargets, (uint64_t)w->id << 32 | i)
                         : -1;
        free(weights);
        if (!rt->pools || rc < 0)
            return -1;
        for (size_t t = 0; t < u->ntargets; t++) {
            mg_pool_t *p = &rt->pools[t];
            p->w = w;
            p->u = u;
            p->t = &u->targets[t];
            p->index = (int)t;
            p->lb = &rt->lb;
            mg_list_init(&p->idle);
            mg_list_init(&p->h2);
            /* resolved with the generation (generation.c) */
            const mg_target_addr_t *a = &g->gen->addrs[i][t];
            p->addr = a->ss;
            p->addr_ok = a->ok;
        }
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
    return a->t->port == b->t->port && strcmp(a->t->host, b->t->host) == 0 &&
           strcmp(a->u->name, b->u->name) == 0 && mg_tls_client_same(a->u->tls, b->u->tls);
}

void mg_pools_adopt(mg_wgen_t *g, mg_wgen_t *old)
{
    for (size_t i = 0; i < old->cfg->nupstreams; i++) {
        mg_upstream_rt_t *ort = &old->ups[i];
        for (size_t t = 0; ort->pools && t < ort->u->ntargets; t++) {
            mg_pool_t *op = &ort->pools[t];
            mg_pool_t *np = NULL;
            for (size_t j = 0; j < g->cfg->nupstreams && !np; j++)
                for (size_t k = 0; k < g->ups[j].u->ntargets && !np; k++)
                    if (same_target(op, &g->ups[j].pools[k]))
                        np = &g->ups[j].pools[k];
            op->successor = np;
            g->w->upstream->sessions_adopt(op, np); /* HTTP/2 sessions, busy or not */
            if (!np) {
                /* the target is gone: drain, do not cut (in-use ones finish) */
                while (!mg_list_empty(&op->idle))
                    g->w->upstream->detach(mg_container_of(op->idle.next, mg_upconn_t, link), 0);
                continue;
            }
            if (np->down_until < op->down_until)
                np->down_until = op->down_until;
            while (!mg_list_empty(&op->idle)) {
                mg_upconn_t *u = mg_container_of(op->idle.next, mg_upconn_t, link);
                mg_list_remove(&u->link);
                op->nidle--;
                u->idle = 0;
                u->pool = np;
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
        for (size_t t = 0; rt->pools && t < rt->u->ntargets; t++) {
            mg_pool_t *p = &rt->pools[t];
            g->w->upstream->sessions_close(p);
            while (!mg_list_empty(&p->idle)) {
                mg_upconn_t *u = mg_container_of(p->idle.next, mg_upconn_t, link);
                g->w->upstream->detach(u, 0); /* closes it; close forgets it */
            }
        }
    }
}

void mg_pools_free(mg_wgen_t *g)
{
    if (!g->ups)
        return;
    for (size_t i = 0; i < g->cfg->nupstreams; i++) {
        free(g->ups[i].pools);
        mg_lb_free(&g->ups[i].lb);
    }
    free(g->ups);
    g->ups = NULL;
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
    while (p->successor) /* its generation was replaced: go to the new one */
        p = p->successor;
    u->pool = p;
    if (p->nidle >= p->u->keepalive || p->w->stopping)
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

/* mg_balancer_pick's passes: the live targets, then (passes 2) any. */
static int pick(mg_wgen_t *g, int ui, const mg_request_t *r, int exclude, int passes)
{
    mg_upstream_rt_t *rt = &g->ups[ui];
    mg_lb_t *lb = &rt->lb;
    size_t n = rt->u->ntargets;
    if (n == 1 && passes == 2)
        return 0;
    uint64_t key = 0;
    int has_key = r && rt->u->balancer == MG_LB_HASH && mg_lb_key(r, rt->u, &key);
    uint64_t now = uv_now(&g->w->loop);
    const mg_target_health_t *hs = g->gen->health ? g->gen->health[ui] : NULL;
    const mg_outlier_t *os = rt->u->outlier ? &g->gen->outlier[ui] : NULL;
    for (int pass = 0; pass < passes; pass++) {
        for (size_t i = 0; i < n; i++) {
            const mg_pool_t *p = &rt->pools[i];
            /* first pass: live targets only (not refused lately, not taken
             * out by health checks, not ejected as an outlier); second: any
             * but `exclude` */
            lb->live[i] = !((int)i == exclude || !p->addr_ok ||
                            (pass == 0 && (p->down_until > now ||
                                           (hs && atomic_load_explicit(&hs[i].down,
                                                                       memory_order_relaxed)) ||
                                           (os && mg_outlier_ejected(os, i, now)))));
        }
        int best = lb->ops->pick(lb, key, has_key);
        if (best >= 0)
            return best;
    }
    return passes == 1 ? -1 : exclude >= 0 ? exclude : 0;
}

int mg_balancer_pick(mg_wgen_t *g, int ui, const mg_request_t *r, int exclude)
{
    return pick(g, ui, r, exclude, 2);
}

int mg_balancer_pick_live(mg_wgen_t *g, int ui, const mg_request_t *r)
{
    return pick(g, ui, r, -1, 1);
}
