/* generation.c: a config generation, process-wide (generation.h): the
 * config, its router, its targets at run time and their active health. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>
#include "errlog.h"
#include "generation.h"
#include "metrics_user.h"
#include "outlier.h"
#include "targets.h"

/* Each upstream's shared balancer counts (balancer.h), one per slot (the
 * hash balancer's table is each view's: targets.c). */
static int balancers_build(mg_gen_t *g, const char **err)
{
    const mg_config_t *cfg = g->cfg;
    g->lb = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*g->lb));
    if (!g->lb) {
        *err = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        if (mg_lb_shared_init(&g->lb[i], u->balancer, NULL, NULL, mg_upstream_cap(u), err) < 0)
            return -1;
    }
    return 0;
}

/* The targets' active health (health.h), one array per upstream: the
 * generation owns it, the checker writes it. */
static int health_alloc(mg_gen_t *gen)
{
    const mg_config_t *cfg = gen->cfg;
    if (cfg->nupstreams == 0)
        return 0;
    gen->health = calloc(cfg->nupstreams, sizeof(*gen->health));
    if (!gen->health)
        return -1;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        gen->health[i] = calloc(mg_upstream_cap(&cfg->upstreams[i]), sizeof(mg_target_health_t));
        if (!gen->health[i])
            return -1;
    }
    return 0;
}

static void health_free(mg_gen_t *gen)
{
    if (!gen->health)
        return;
    for (size_t i = 0; i < gen->cfg->nupstreams; i++)
        free(gen->health[i]);
    free(gen->health);
    gen->health = NULL;
}


/* The user metric of each declaration: the same as the live generation's
 * when declared the same (its values kept), else a new one. */
static int umetrics_acquire(mg_gen_t *g)
{
    const mg_config_t *cfg = g->cfg;
    g->umetrics = calloc(cfg->nmetrics ? cfg->nmetrics : 1, sizeof(*g->umetrics));
    if (!g->umetrics)
        return -1;
    for (size_t i = 0; i < cfg->nmetrics; i++)
        if (!(g->umetrics[i] = mg_umetric_acquire(&cfg->metrics[i])))
            return -1;
    return 0;
}

mg_gen_t *mg_gen_new(mg_config_t *cfg, uint64_t number, const char **err)
{
    mg_gen_t *g = calloc(1, sizeof(*g));
    if (!g) {
        *err = "out of memory";
        mg_config_free(cfg);
        return NULL;
    }
    if (mg_router_build(&g->router, cfg->routes, cfg->nroutes, err) < 0) {
        mg_config_free(cfg);
        free(g);
        return NULL;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g->loaded_at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    g->cfg = cfg;
    g->number = number;
    atomic_store(&g->refs, 1);
    if (health_alloc(g) < 0 || mg_outlier_alloc(g) < 0 || mg_tsets_init(g) < 0 ||
        umetrics_acquire(g) < 0) {
        *err = "out of memory";
        mg_gen_release(g);
        return NULL;
    }
    /* the counts before the first set: publishing resets its slots' */
    if (balancers_build(g, err) < 0) {
        mg_gen_release(g);
        return NULL;
    }
    if (mg_tsets_static(g) < 0) {
        *err = "out of memory";
        mg_gen_release(g);
        return NULL;
    }
    return g;
}

void mg_gen_release(mg_gen_t *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    health_free(g);
    for (size_t i = 0; g->lb && i < g->cfg->nupstreams; i++)
        mg_lb_shared_free(&g->lb[i]);
    free(g->lb);
    mg_outlier_free(g);
    for (size_t i = 0; g->umetrics && i < g->cfg->nmetrics; i++)
        mg_umetric_release(g->umetrics[i]);
    free(g->umetrics);
    mg_tsets_free(g);
    mg_router_free(g->router);
    mg_config_free(g->cfg);
    free(g);
}
