/* balancer_hash.c: consistent hashing by a request key (header, cookie,
 * query argument, client address, path or a Lua function: pool.c's
 * mg_lb_key reads it) over a Maglev table (maglev.h).
 *
 * The table is built with each view of the upstream's targets (targets.h:
 * on a reload, a DNS change, an admin change), over the targets in it with
 * their weights (a draining one has none), and shared read-only by all
 * workers. A change that removes or adds a target builds a new table:
 * Maglev moves that target's keys and only a few others (spec/c/
 * maglev_spec.lua: at most 1.15 x 1/N).
 *
 * A target that is down (health checks, failed connections, or the
 * `exclude` of a retry) is not taken out of the table: its keys fall
 * through to the next slot whose target is live. Keys of live targets
 * never move, so exactly the down target's share moves (1/N, the least
 * possible, where rebuilding over the live targets would also move some
 * of the others'), spread over the others by the table's interleaving, and
 * they all come back when it does. Nothing is rebuilt or swapped on a
 * health change, so workers share the table without any synchronisation;
 * a lookup costs a few more slots while a target is down.
 *
 * A request without the key (no such header, cookie or argument) is
 * balanced by round robin instead of all landing on the empty key's
 * target. */
#include "balancer.h"
#include "mg_ffi.h"

#include <stdlib.h>
#include <string.h>

mg_maglev_t *mg_lb_hash_table(const char *const *names, const int *weights, size_t n,
                              const char **err)
{
    mg_maglev_target_t *t = calloc(n ? n : 1, sizeof(*t));
    if (!t) {
        *err = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        t[i] = (mg_maglev_target_t){ names[i], strlen(names[i]), (uint32_t)weights[i] };
    mg_maglev_t *m = mg_maglev_build(t, n, 0, err);
    free(t);
    return m;
}

static int hash_build(mg_lb_shared_t *sh, const char *const *names, const int *weights,
                      size_t n, const char **err)
{
    sh->maglev = mg_lb_hash_table(names, weights, n, err);
    return sh->maglev ? 0 : -1;
}

static int hash_pick(mg_lb_t *lb, uint64_t key, int has_key)
{
    size_t any = 0;
    for (size_t i = 0; i < lb->n; i++)
        any |= lb->live[i];
    if (!any)
        return -1; /* the walk below ends only at a live target */
    if (!has_key)
        return mg_ffi_balancer_swrr(lb->cw, lb->weight, lb->live, lb->n);
    const mg_maglev_t *m = lb->maglev;
    if (!m)
        return mg_ffi_balancer_swrr(lb->cw, lb->weight, lb->live, lb->n);
    uint32_t size = mg_maglev_size(m), s = (uint32_t)(key % size);
    for (;;) {
        uint32_t t = mg_maglev_slot(m, s);
        if (lb->live[t])
            return (int)t;
        s = s + 1 < size ? s + 1 : 0;
    }
}

const mg_balancer_t mg_balancer_hash = { .name = "hash", .build = hash_build,
                                         .pick = hash_pick };
