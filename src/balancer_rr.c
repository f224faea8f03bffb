/* balancer_rr.c: smooth weighted round robin (nginx's), the default
 * balancer. Each pick adds every live target's weight to its current
 * weight, takes the largest, and subtracts the total from it: weights
 * 5,1,1 give a a b a c a a rather than a a a a a b c.
 *
 * Per worker only (the current weights are lb->cw): every worker runs its
 * own rotation, which spreads as well overall and needs no shared write.
 * Used as well by the hash balancer for requests without a key. */
#include "balancer.h"
#include "mg_ffi.h"

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

static int rr_pick(mg_lb_t *lb, uint64_t key, int has_key)
{
    (void)key, (void)has_key;
    return mg_ffi_balancer_swrr(lb->cw, lb->weight, lb->live, lb->n);
}

const mg_balancer_t mg_balancer_rr = { .name = "round_robin", .pick = rr_pick };
