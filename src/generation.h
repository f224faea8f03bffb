/* generation.h: config generations (generation.c). A generation is the
 * validated config, its router, its upstreams' targets at run time
 * (targets.h) and their active health; every worker runs it as an
 * mg_wgen_t (worker.h).
 */
#ifndef MG_GENERATION_H
#define MG_GENERATION_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include "balancer.h"
#include "config.h"
#include "router.h"
#include <uv.h>

typedef struct mg_gen_s mg_gen_t;

/* Active health of one target: src/health.c (control thread) writes it,
 * every worker's balancer reads `down`. */
typedef struct mg_target_health_s {
    _Atomic int down;           /* out of balancing after failed checks */
    /* the checker's own bookkeeping (control thread only) */
    int checked;                /* at least one check answered */
    int in_flight;
    int ok_streak, fail_streak;
    uint64_t next_at;           /* control loop time of the next check */
    char last_error[96];        /* why the last failed check failed */
} mg_target_health_t;

/* A config generation, process-wide: the validated config and its router.
 * Each worker runs it as an mg_wgen_t. Freed when the last worker
 * generation that holds it is gone (refs). */
struct mg_gen_s {
    _Atomic int refs;
    uint64_t number;
    double loaded_at;           /* wall clock, seconds */
    mg_config_t *cfg;
    mg_router_t *router;
    mg_target_health_t **health; /* [upstream][slot] (health.h) */
    /* [upstream]: its targets at run time, slots and views (targets.h);
     * tlock guards taking a reference to a published view */
    struct mg_tset_s *tsets;
    uv_mutex_t tlock;
    int tlock_ok;
    /* [upstream]: what its balancer's workers share (balancer.h: the
     * in-flight counts and latency averages, per slot) */
    mg_lb_shared_t *lb;
    /* [upstream]: what all workers share of each upstream at run time:
     * outlier ejections, the retry budget's counts (outlier.h) */
    struct mg_outlier_s *outlier;
    /* [metric declaration]: the user metrics it counts into (metrics_user.h),
     * each held until it is freed */
    struct mg_umetric_s **umetrics;
};

/* Builds a generation from a loaded config (takes ownership of cfg, also
 * on failure). Returns NULL with *err (static) when the router cannot be
 * built. The caller holds one reference. */
mg_gen_t *mg_gen_new(mg_config_t *cfg, uint64_t number, const char **err);
void mg_gen_release(mg_gen_t *g);

#endif
