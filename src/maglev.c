/* maglev.c: Maglev table building and lookup (contract in maglev.h). */
#include "maglev.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SIZE (1u << 24)

struct mg_maglev_s {
    uint32_t size;
    uint32_t slot[]; /* target index per slot */
};

/* murmur3's 64-bit finaliser: every input bit reaches every output bit */
static uint64_t fmix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t rotl(uint64_t x, int r)
{
    return x << r | x >> (64 - r);
}

uint64_t mg_maglev_hash(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL), w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = rotl(h ^ fmix(w), 27) * 0x9e3779b97f4a7c15ULL + 0x52dce729;
    }
    w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return fmix(h ^ fmix(w ^ (uint64_t)n << 59));
}

static int is_prime(uint32_t m)
{
    if (m < 2)
        return 0;
    for (uint32_t d = 2; (uint64_t)d * d <= m; d++)
        if (m % d == 0)
            return 0;
    return 1;
}

typedef struct {
    uint32_t index, weight;
    uint64_t offset, skip, next, credit;
    const char *name;
    size_t len;
} perm_t;

static int by_name(const void *x, const void *y)
{
    const perm_t *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->name, b->name, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static mg_maglev_t *fail(const char **err, const char *why, void *p1, void *p2)
{
    free(p1);
    free(p2);
    if (err)
        *err = why;
    return NULL;
}

mg_maglev_t *mg_maglev_build(const mg_maglev_target_t *targets, size_t n, uint32_t size,
                             const char **err)
{
    uint32_t m = size ? size : MG_MAGLEV_SIZE;
    if (m >= MAX_SIZE || !is_prime(m))
        return fail(err, "the table size must be a prime below 2^24 (e.g. 65537)", NULL, NULL);
    perm_t *p = n ? calloc(n, sizeof *p) : NULL;
    if (n && !p)
        return fail(err, "out of memory", NULL, NULL);
    size_t live = 0;
    uint32_t maxw = 0;
    for (size_t i = 0; i < n; i++) {
        if (targets[i].weight == 0)
            continue; /* drained: no slot */
        perm_t *t = &p[live++];
        t->index = (uint32_t)i;
        t->weight = targets[i].weight;
        t->name = targets[i].name;
        t->len = targets[i].len;
        /* the paper's offset and skip, from two independent hashes */
        t->offset = mg_maglev_hash(t->name, t->len, 0x6d61676c) % m;
        t->skip = mg_maglev_hash(t->name, t->len, 0x65762121) % (m - 1) + 1;
        if (t->weight > maxw)
            maxw = t->weight;
    }
    if (live == 0)
        return fail(err, "no target with a weight above 0", p, NULL);
    if (live > m)
        return fail(err, "more targets than table slots: use a larger prime size", p, NULL);
    /* the order of rounds is the order of names, so the table depends on the
     * set of targets only */
    qsort(p, live, sizeof *p, by_name);
    for (size_t i = 1; i < live; i++)
        if (by_name(&p[i - 1], &p[i]) == 0)
            return fail(err, "two targets have the same name", p, NULL);
    mg_maglev_t *t = malloc(sizeof *t + (size_t)m * sizeof t->slot[0]);
    if (!t)
        return fail(err, "out of memory", p, NULL);
    t->size = m;
    memset(t->slot, 0xff, (size_t)m * sizeof t->slot[0]);
    uint32_t filled = 0;
    while (filled < m) {
        for (size_t i = 0; i < live && filled < m; i++) {
            perm_t *q = &p[i];
            /* weighted turns: a target takes a slot whenever its credit
             * reaches the largest weight, i.e. in weight/maxw of the rounds */
            q->credit += q->weight;
            if (q->credit < maxw)
                continue;
            q->credit -= maxw;
            uint64_t c;
            do /* its next preferred slot that is still free */
                c = (q->offset + q->next++ * q->skip) % m;
            while (t->slot[c] != UINT32_MAX);
            t->slot[c] = q->index;
            filled++;
        }
    }
    free(p);
    return t;
}

uint32_t mg_maglev_lookup(const mg_maglev_t *m, uint64_t hash)
{
    return m->slot[hash % m->size];
}

uint32_t mg_maglev_slot(const mg_maglev_t *m, uint32_t i)
{
    return m->slot[i % m->size];
}

uint32_t mg_maglev_size(const mg_maglev_t *m)
{
    return m->size;
}

void mg_maglev_free(mg_maglev_t *m)
{
    free(m);
}
