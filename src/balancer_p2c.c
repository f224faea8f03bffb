/* balancer_p2c.c: power of two choices over a latency EWMA (Envoy's
 * LEAST_REQUEST with two choices, Linkerd's peak-EWMA balancer). Two
 * different live targets are drawn at random; the one with the lower cost
 *
 *     (ewma + 100 us) x (in flight + 1) / weight
 *
 * wins. The EWMA is each target's time from the request sent to the
 * answer's head, so a slow target loses against nearly any other, and the
 * in-flight factor keeps a fast one from being piled on. The 100 us floor
 * keeps a target that has not answered yet (EWMA 0) from winning whatever
 * its queue.
 *
 * Both numbers are the generation's, shared by every worker (balancer.h):
 * a target slow for one worker is slow for all. observe() updates the
 * EWMA with a relaxed load and store, not a compare-and-swap loop: two
 * workers storing at once lose one sample, which an average does not miss.
 * The random draws are per worker (lb->rng). */
#include "balancer.h"

#define FLOOR_NS 100000.0

static double cost(const mg_lb_t *lb, size_t i)
{
    const mg_lb_target_t *t = &lb->sh->t[i];
    double e = (double)atomic_load_explicit(&t->ewma_ns, memory_order_relaxed);
    double q = (double)atomic_load_explicit(&t->inflight, memory_order_relaxed);
    return (e + FLOOR_NS) * (q + 1) / lb->weight[i];
}

/* The index of the k-th live target (k < number live). */
static int nth_live(const mg_lb_t *lb, size_t k)
{
    for (size_t i = 0; i < lb->n; i++)
        if (lb->live[i] && k-- == 0)
            return (int)i;
    return -1;
}

static int p2c_pick(mg_lb_t *lb, uint64_t key, int has_key)
{
    (void)key, (void)has_key;
    size_t m = 0;
    for (size_t i = 0; i < lb->n; i++)
        m += lb->live[i] != 0;
    if (m <= 1)
        return m ? nth_live(lb, 0) : -1;
    uint64_t r = mg_lb_random(lb);
    size_t a = (size_t)(r % m), b = (size_t)((r >> 32) % (m - 1));
    if (b >= a)
        b++; /* two different ones */
    int ia = nth_live(lb, a), ib = nth_live(lb, b);
    return cost(lb, (size_t)ib) < cost(lb, (size_t)ia) ? ib : ia;
}

/* weight 1/4 for a new sample: about the last eight answers count */
static void p2c_observe(mg_lb_shared_t *sh, int i, uint64_t ns)
{
    _Atomic uint64_t *e = &sh->t[i].ewma_ns;
    uint64_t old = atomic_load_explicit(e, memory_order_relaxed);
    uint64_t v = old ? old - old / 4 + ns / 4 : ns;
    atomic_store_explicit(e, v ? v : 1, memory_order_relaxed);
}

const mg_balancer_t mg_balancer_p2c = { .name = "p2c_ewma", .counts = 1, .pick = p2c_pick,
                                        .observe = p2c_observe };
