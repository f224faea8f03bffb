/* balancer.c: the balancers' names and the state they share (contract in
 * balancer.h). The picking is each balancer's own file. */
#include "balancer.h"
#include "mg_ffi.h"

#include <stdlib.h>
#include <string.h>

static const char *const lb_names[] = { "round_robin", "least_conn", "hash", "p2c_ewma" };
static const char *const hash_names[] = { NULL, "header", "cookie", "query", "client", "path",
                                          "lua" };
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const mg_balancer_t *mg_balancer_of(int kind)
{
    switch (kind) {
    case MG_LB_LEAST_CONN: return &mg_balancer_least_conn;
    case MG_LB_HASH: return &mg_balancer_hash;
    case MG_LB_P2C_EWMA: return &mg_balancer_p2c;
    default: return &mg_balancer_rr;
    }
}

static int name_index(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (names[i] && strcmp(names[i], name) == 0)
            return (int)i;
    return -1;
}

int mg_balancer_parse(const char *name) { return name_index(lb_names, COUNT(lb_names), name); }

const char *mg_balancer_name(int kind)
{
    return kind >= 0 && (size_t)kind < COUNT(lb_names) ? lb_names[kind] : "?";
}

int mg_hash_on_parse(const char *name)
{
    return name_index(hash_names, COUNT(hash_names), name);
}

const char *mg_hash_on_name(int on)
{
    return on > 0 && (size_t)on < COUNT(hash_names) ? hash_names[on] : "none";
}

int mg_lb_shared_init(mg_lb_shared_t *sh, int kind, const char *const *names,
                      const int *weights, size_t n, const char **err)
{
    const mg_balancer_t *b = mg_balancer_of(kind);
    memset(sh, 0, sizeof(*sh));
    sh->n = n;
    if (b->counts && n) {
        sh->t = aligned_alloc(alignof(mg_lb_target_t), n * sizeof(*sh->t));
        if (!sh->t) {
            *err = "out of memory";
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            atomic_init(&sh->t[i].inflight, 0);
            atomic_init(&sh->t[i].ewma_ns, 0);
        }
    }
    /* without names (the gateway's generations) the table is each view's
     * (targets.c) */
    if (b->build && names && b->build(sh, names, weights, n, err) < 0) {
        mg_lb_shared_free(sh);
        return -1;
    }
    return 0;
}

void mg_lb_shared_free(mg_lb_shared_t *sh)
{
    free(sh->t);
    mg_maglev_free(sh->maglev);
    sh->t = NULL;
    sh->maglev = NULL;
}

int mg_lb_init(mg_lb_t *lb, mg_lb_shared_t *sh, int kind, const int *weights, size_t n,
               uint64_t seed)
{
    memset(lb, 0, sizeof(*lb));
    lb->ops = mg_balancer_of(kind);
    lb->sh = sh;
    lb->n = n;
    /* one block: weights, current weights, live flags */
    lb->weight = calloc(n ? n : 1, 2 * sizeof(int) + 1);
    if (!lb->weight)
        return -1;
    lb->cw = lb->weight + n;
    lb->live = (unsigned char *)(lb->cw + n);
    for (size_t i = 0; weights && i < n; i++) {
        lb->weight[i] = weights[i];
        lb->live[i] = 1;
    }
    lb->maglev = sh->maglev;
    /* splitmix64 of the seed: a non-zero, well-mixed start */
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    lb->rng = (z ^ (z >> 31)) | 1;
    return 0;
}

void mg_lb_free(mg_lb_t *lb)
{
    free(lb->weight);
    lb->weight = lb->cw = NULL;
    lb->live = NULL;
}

/* The testing kit's balancer: one worker's view and its own shared part,
 * in one block (mg_ffi.h). */
typedef struct {
    mg_lb_t lb; /* first: the pointer handed out is this one */
    mg_lb_shared_t sh;
} kit_lb_t;

mg_lb_t *mg_ffi_lb_new(const char *kind, const char *const *names, const int *weights, size_t n,
                       uint64_t seed)
{
    const char *err;
    int k = mg_balancer_parse(kind);
    kit_lb_t *b = k >= 0 && n > 0 ? calloc(1, sizeof(*b)) : NULL;
    if (!b)
        return NULL;
    if (mg_lb_shared_init(&b->sh, k, names, weights, n, &err) < 0) {
        free(b);
        return NULL;
    }
    if (mg_lb_init(&b->lb, &b->sh, k, weights, n, seed) < 0) {
        mg_lb_shared_free(&b->sh);
        free(b);
        return NULL;
    }
    return &b->lb;
}

void mg_ffi_lb_free(mg_lb_t *lb)
{
    kit_lb_t *b = (kit_lb_t *)lb;
    if (!b)
        return;
    mg_lb_free(&b->lb);
    mg_lb_shared_free(&b->sh);
    free(b);
}

int mg_ffi_lb_pick(mg_lb_t *lb, int exclude, int has_key, uint64_t key)
{
    for (size_t i = 0; i < lb->n; i++)
        lb->live[i] = (int)i != exclude;
    int t = lb->ops->pick(lb, key, has_key);
    return t >= 0 ? t : exclude;
}

void mg_ffi_lb_acquire(mg_lb_t *lb, int i)
{
    if (lb->ops->counts && i >= 0 && (size_t)i < lb->n)
        mg_lb_acquire(lb->sh, i);
}

void mg_ffi_lb_release(mg_lb_t *lb, int i)
{
    if (lb->ops->counts && i >= 0 && (size_t)i < lb->n)
        mg_lb_release(lb->sh, i);
}

void mg_ffi_lb_observe(mg_lb_t *lb, int i, uint64_t ns)
{
    if (lb->ops->observe && i >= 0 && (size_t)i < lb->n)
        lb->ops->observe(lb->sh, i, ns);
}
