/* pool.c: per-worker keep-alive pools of upstream connections, one per
 * target, and the balancer that picks a target.
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
        rt->cw = calloc(u->ntargets, 2 * sizeof(int) + 1);
        if (!rt->pools || !rt->cw)
            return -1;
        rt->weight = rt->cw + u->ntargets;
        rt->live = (unsigned char *)(rt->weight + u->ntargets);
        for (size_t t = 0; t < u->ntargets; t++) {
            mg_pool_t *p = &rt->pools[t];
            p->w = w;
            p->u = u;
            p->t = &u->targets[t];
            rt->weight[t] = p->t->weight;
            mg_list_init(&p->idle);
            /* resolved with the generation (generation.c) */
            const mg_target_addr_t *a = &g->gen->addrs[i][t];
            p->addr = a->ss;
            p->addr_ok = a->ok;
        }
        /* start each worker at a different place in the rotation, so that
         * a few requests spread over workers still reach every target */
        for (int k = 0; k < w->id; k++)
            mg_balancer_pick(g, (int)i, -1);
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
        free(g->ups[i].cw);
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

/* Smooth weighted round robin: each pick adds every live target's weight
 * to its current weight, takes the largest, and subtracts the total from
 * it. Weights 5,1,1 give a a b a c a a rather than a a a a a b c. A pure
 * function over arrays, so that the testing kit runs this very code. */
int mg_ffi_balancer_swrr(int *cw, const int *weight, const unsigned char *live, size_t n)
{
    int best = -1, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!live[i])
            continue;
        cw[i] += weight[i];
        total += weight[i];
        if (best < 0 || cw[i] > cw[best])
            best = (int)i;
    }
    if (best >= 0)
        cw[best] -= total;
    return best;
}

int mg_balancer_pick(mg_wgen_t *g, int ui, int avoid)
{
    mg_upstream_rt_t *rt = &g->ups[ui];
    size_t n = rt->u->ntargets;
    if (n == 1)
        return 0;
    uint64_t now = uv_now(&g->w->loop);
    const mg_target_health_t *hs = g->gen->health ? g->gen->health[ui] : NULL;
    const mg_outlier_t *os = rt->u->outlier ? &g->gen->outlier[ui] : NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            const mg_pool_t *p = &rt->pools[i];
            /* first pass: live targets only (not refused lately, not taken
             * out by health checks, not ejected as an outlier); second: any
             * but `avoid` */
            rt->live[i] = !((int)i == avoid || !p->addr_ok ||
                            (pass == 0 && (p->down_until > now ||
                                           (hs && atomic_load_explicit(&hs[i].down,
                                                                       memory_order_relaxed)) ||
                                           (os && mg_outlier_ejected(os, i, now)))));
        }
        int best = mg_ffi_balancer_swrr(rt->cw, rt->weight, rt->live, n);
        if (best >= 0)
            return best;
    }
    return avoid >= 0 ? avoid : 0;
}
