/* generation.c: a config generation, process-wide (see gateway.h). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "errlog.h"
#include "gateway.h"
#include "health.h"
#include "worker.h"

/* Every target's address, once per generation, on the thread that makes
 * it (startup, or the control thread's reload). A name that does not
 * resolve leaves its target out of balancing (as a refused connection
 * would); the next reload tries again. */
static int resolve_targets(mg_gen_t *g)
{
    const mg_config_t *cfg = g->cfg;
    g->addrs = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*g->addrs));
    if (!g->addrs)
        return -1;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        g->addrs[i] = calloc(u->ntargets ? u->ntargets : 1, sizeof(**g->addrs));
        if (!g->addrs[i])
            return -1;
        for (size_t t = 0; t < u->ntargets; t++) {
            mg_target_addr_t *a = &g->addrs[i][t];
            a->ok = mg_resolve(u->targets[t].host, u->targets[t].port, &a->ss) == 0;
            if (!a->ok)
                mg_log(MG_LOG_WARN, "upstream %s: target %s does not resolve\n", u->name,
                        u->targets[t].name);
        }
    }
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
    if (mg_health_alloc(g) < 0 || resolve_targets(g) < 0) {
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
    mg_health_free(g);
    for (size_t i = 0; g->addrs && i < g->cfg->nupstreams; i++)
        free(g->addrs[i]);
    free(g->addrs);
    mg_router_free(g->router);
    mg_config_free(g->cfg);
    free(g);
}
