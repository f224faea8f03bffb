/* generation.c: a config generation, process-wide (generation.h): the
 * config, its router, its targets' addresses and their active health. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>
#include "errlog.h"
#include "generation.h"
#include "metrics_user.h"
#include "outlier.h"

/* host:port to an address: numeric at once, a name with getaddrinfo (which
 * blocks: not on a worker's loop). Returns 0 or -1. */
static int mg_resolve(const char *host, uint16_t port, struct sockaddr_storage *out)
{
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (uv_ip4_addr(host, port, in) == 0)
        return 0;
    if (uv_ip6_addr(host, port, in6) == 0)
        return 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -1;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    if (out->ss_family == AF_INET)
        in->sin_port = htons(port);
    else
        in6->sin6_port = htons(port);
    freeaddrinfo(res);
    return 0;
}

/* Each upstream's shared balancer state (balancer.h), by target name and
 * weight. config.lua refuses what a build could refuse (two targets of one
 * name on a hash upstream), so only memory can fail here. */
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
        const char **names = calloc(u->ntargets ? u->ntargets : 1, sizeof(*names));
        int *weights = calloc(u->ntargets ? u->ntargets : 1, sizeof(*weights));
        int rc = -1;
        *err = "out of memory";
        if (names && weights) {
            for (size_t t = 0; t < u->ntargets; t++) {
                names[t] = u->targets[t].name;
                weights[t] = u->targets[t].weight;
            }
            rc = mg_lb_shared_init(&g->lb[i], u->balancer, names, weights, u->ntargets, err);
        }
        free(names);
        free(weights);
        if (rc < 0)
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
        gen->health[i] = calloc(cfg->upstreams[i].ntargets, sizeof(mg_target_health_t));
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
    if (health_alloc(g) < 0 || resolve_targets(g) < 0 || mg_outlier_alloc(g) < 0 ||
        umetrics_acquire(g) < 0) {
        *err = "out of memory";
        mg_gen_release(g);
        return NULL;
    }
    if (balancers_build(g, err) < 0) {
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
    for (size_t i = 0; g->addrs && i < g->cfg->nupstreams; i++)
        free(g->addrs[i]);
    free(g->addrs);
    mg_router_free(g->router);
    mg_config_free(g->cfg);
    free(g);
}
