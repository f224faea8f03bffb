/* generation.c: a config generation, process-wide (see gateway.h). */
#include <stdlib.h>
#include <time.h>
#include "gateway.h"
#include "health.h"
#include "worker.h"

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
    if (mg_health_alloc(g) < 0) {
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
    mg_router_free(g->router);
    mg_config_free(g->cfg);
    free(g);
}
