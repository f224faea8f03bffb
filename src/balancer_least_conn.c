/* balancer_least_conn.c: weighted least connections (nginx least_conn,
 * Envoy LEAST_REQUEST's full scan). The live target with the fewest
 * requests in flight per unit of weight wins; among equals the scan starts
 * at a random place, so that ties (an idle upstream) spread instead of all
 * going to the first target.
 *
 * The in-flight counts are the generation's, shared by every worker
 * (balancer.h): a worker picks by the whole gateway's load on each target,
 * not its own share. The proxy adds one when a request is bound to a
 * connection of the target and takes it back when the request lets go of
 * it (proxy.c up_bind / up_unbind). Reading n counts races with other
 * workers' picks; two picks at once may both take the same least-loaded
 * target, which the next picks correct. */
#include "balancer.h"

static int lc_pick(mg_lb_t *lb, uint64_t key, int has_key)
{
    (void)key, (void)has_key;
    size_t n = lb->n, start = (size_t)(mg_lb_random(lb) % n);
    int best = -1;
    uint64_t best_load = 0, best_w = 1;
    for (size_t k = 0; k < n; k++) {
        size_t i = start + k < n ? start + k : start + k - n;
        if (!lb->live[i])
            continue;
        uint64_t load = atomic_load_explicit(&lb->sh->t[i].inflight, memory_order_relaxed);
        uint64_t w = (uint64_t)lb->weight[i];
        /* load/w < best_load/best_w, without division */
        if (best < 0 || load * best_w < best_load * w) {
            best = (int)i;
            best_load = load;
            best_w = w;
        }
    }
    return best;
}

const mg_balancer_t mg_balancer_least_conn = { .name = "least_conn", .counts = 1,
                                               .pick = lc_pick };
