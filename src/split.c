/* split.c: a route's canary and weighted traffic split (split.h).
 *
 * The canary's header or cookie is read by the balancers' key reader
 * (balancer_key.c), as hooks left the request; its value, when the canary
 * names one, must be equal byte for byte.
 *
 * Without a key the split's entries share the requests by the smooth
 * weighted round robin of balancer_rr.c, over the route's current weights
 * of the calling worker (weights 90 and 10: one request in ten to the
 * second, evenly spread, exactly so over every 100 requests of a worker).
 * With split.key, the key's 64-bit hash places it in [0, 1): the top 32
 * bits times the total weight fall in one entry's share, the entries laid
 * out in their order. A key keeps its upstream while the weights stay; a
 * change of weights moves only the keys at the shares' edges: raising the
 * last entry's weight moves keys to it and none away from it (a canary
 * ramped from 10 to 20 keeps its first 10 %). A request without the key
 * takes the rotation. */
#include "split.h"
#include "balancer.h"
#include "mg_ffi.h"
#include "upstream.h"

#include <string.h>

static int canary_matches(const mg_request_t *r, const mg_canary_t *c)
{
    const char *v;
    size_t vl;
    if (!mg_lb_key_value(r, c->header ? MG_HASH_HEADER : MG_HASH_COOKIE,
                         c->header ? c->header : c->cookie, &v, &vl))
        return 0;
    return !c->value || (strlen(c->value) == vl && memcmp(c->value, v, vl) == 0);
}

/* The entry whose share of [0, total) holds the key's place. */
static size_t by_key(const mg_split_t *sp, uint64_t key)
{
    uint64_t total = 0;
    for (size_t i = 0; i < sp->n; i++)
        total += (uint64_t)sp->entries[i].weight;
    uint64_t at = (key >> 32) * total >> 32, edge = 0;
    for (size_t i = 0; i < sp->n; i++) {
        edge += (uint64_t)sp->entries[i].weight;
        if (at < edge)
            return i;
    }
    return sp->n - 1; /* not reached: at < total */
}

int mg_split_choose(const mg_request_t *r, const mg_route_t *rt, int *cw, int *how)
{
    if (rt->canary && canary_matches(r, rt->canary)) {
        *how = MG_SPLIT_CANARY;
        return rt->canary->upstream;
    }
    const mg_split_t *sp = rt->split;
    if (!sp) {
        *how = MG_SPLIT_NONE;
        return rt->upstream;
    }
    uint64_t key;
    if (sp->key_on && mg_lb_key_of(r, sp->key_on, sp->key_name, &key)) {
        *how = MG_SPLIT_KEY;
        return sp->entries[by_key(sp, key)].upstream;
    }
    *how = MG_SPLIT_WEIGHT;
    int i = mg_ffi_balancer_swrr(cw, sp->weights, (const unsigned char *)(sp->weights + sp->n),
                                 sp->n);
    return sp->entries[i].upstream;
}

void mg_split_route(mg_request_t *r)
{
    const mg_route_t *rt = r->route;
    int how;
    int *cw = rt->split ? r->g->split_cw + rt->split->cw_at : NULL;
    r->split_upstream = mg_split_choose(r, rt, cw, &how) + 1;
    r->split_how = (uint8_t)how;
}

const char *mg_split_how_name(int how)
{
    switch (how) {
    case MG_SPLIT_CANARY: return "canary";
    case MG_SPLIT_WEIGHT: return "weight";
    case MG_SPLIT_KEY: return "key";
    default: return NULL;
    }
}
