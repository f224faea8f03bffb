/* targets.c: upstream target sets at run time: slots, views, publishing
 * (the contract and the threading are in targets.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "balancer.h"
#include "dns.h"
#include "errlog.h"
#include "generation.h"
#include "health.h"
#include "metrics.h"
#include "outlier.h"
#include "targets.h"
#include "upstream.h"
#include "worker.h"

const char *mg_tsrc_name(int source)
{
    switch (source) {
    case MG_TSRC_DNS: return "dns";
    case MG_TSRC_SRV: return "srv";
    case MG_TSRC_ADMIN: return "admin";
    default: return "config";
    }
}

static mg_tview_t *view_new(uint32_t n)
{
    mg_tview_t *v = calloc(1, sizeof(*v) + (n ? n : 1) * sizeof(v->e[0]));
    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    v->n = n;
    v->single = -1;
    return v;
}

void mg_tview_release(mg_tview_t *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    mg_maglev_free(v->maglev);
    free(v);
}

mg_tview_t *mg_tset_acquire(mg_gen_t *g, size_t ui)
{
    uv_mutex_lock(&g->tlock);
    mg_tview_t *v = g->tsets[ui].view;
    atomic_fetch_add(&v->refs, 1);
    uv_mutex_unlock(&g->tlock);
    return v;
}

int mg_tview_find(const mg_gen_t *g, size_t ui, const mg_tview_t *v, const char *name,
                  size_t len)
{
    const mg_tset_t *ts = &g->tsets[ui];
    for (uint32_t s = 0; s < v->n; s++) {
        const char *n = ts->slot[s].t.name;
        if (v->e[s].serial && n && strlen(n) == len && memcmp(n, name, len) == 0)
            return (int)s;
    }
    return -1;
}

/* ---- filling slots ------------------------------------------------------- */

static void slot_clear(mg_slot_t *sl)
{
    free(sl->t.host);
    free(sl->t.name);
    free(sl->t.authority);
    free(sl->from);
    sl->t.host = sl->t.name = sl->t.authority = sl->from = NULL;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return !memcmp(a, b, sizeof(struct sockaddr_in));
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
    }
    return 1; /* neither resolved */
}

/* Puts d into slot s of upstream ui with fresh per-target state. */
static int slot_fill(mg_gen_t *g, size_t ui, size_t s, const mg_tdesc_t *d)
{
    mg_tset_t *ts = &g->tsets[ui];
    mg_slot_t *sl = &ts->slot[s];
    const mg_upstream_t *u = &g->cfg->upstreams[ui];
    char *name = strdup(d->name), *host = strdup(d->host ? d->host : d->name);
    char *auth = d->authority ? strdup(d->authority) : NULL;
    char *from = d->from ? strdup(d->from) : NULL;
    if (!name || !host || (d->authority && !auth) || (d->from && !from)) {
        free(name);
        free(host);
        free(auth);
        free(from);
        return -1;
    }
    slot_clear(sl);
    sl->t.name = name;
    sl->t.host = host;
    sl->t.authority = auth;
    sl->from = from;
    sl->t.port = d->port;
    sl->t.weight = d->weight;
    sl->t.metric_id = mg_metrics_target_id(u->name, name);
    sl->addr = d->addr;
    sl->source = d->source;
    sl->serial = ++ts->next_serial ? ts->next_serial : ++ts->next_serial;
    sl->used = 1;
    sl->left_in = 0;
    /* fresh state: a new target is not down, ejected or loaded */
    if (g->health)
        memset(&g->health[ui][s], 0, sizeof(g->health[ui][s]));
    if (g->outlier)
        mg_outlier_reset(&g->outlier[ui], s);
    if (g->lb && g->lb[ui].t) {
        atomic_store(&g->lb[ui].t[s].inflight, 0);
        atomic_store(&g->lb[ui].t[s].ewma_ns, 0);
    }
    return 0;
}

/* May slot s of upstream ui be filled again? Not while in the published
 * view; once out of it, when every worker on g has synced a view without
 * it and holds none of its connections. */
static int slot_free(const mg_gen_t *g, size_t ui, size_t s, const mg_workers_t *ws)
{
    const mg_slot_t *sl = &g->tsets[ui].slot[s];
    if (!sl->used)
        return 1;
    if (!sl->left_in)
        return 0;
    for (int k = 0; ws && k < ws->n; k++) {
        const mg_wgen_t *wg = ws->w[k].g;
        if (!wg || wg->gen != g || !wg->ups)
            continue; /* not running g: it holds nothing of g's */
        const mg_upstream_rt_t *rt = &wg->ups[ui];
        if (atomic_load(&rt->synced) < sl->left_in)
            return 0;
        const mg_pool_t *p = rt->pools[s];
        if (p && (atomic_load(&p->nconns) > 0 || atomic_load(&p->users) > 0))
            return 0;
    }
    return 1;
}

/* ---- views ------------------------------------------------------------------ */

/* The hash balancer's table over the view: every slot by name, weight 0
 * for those not live. */
static int view_table(mg_gen_t *g, size_t ui, mg_tview_t *v)
{
    if (g->cfg->upstreams[ui].balancer != MG_LB_HASH || v->nlive == 0)
        return 0;
    const char **names = calloc(v->n, sizeof(*names));
    int *weights = calloc(v->n, sizeof(*weights));
    const char *err = NULL;
    if (names && weights) {
        for (uint32_t s = 0; s < v->n; s++) {
            int live = v->e[s].serial && !v->e[s].draining;
            names[s] = live ? g->tsets[ui].slot[s].t.name : "";
            weights[s] = live ? v->e[s].weight : 0;
        }
        v->maglev = mg_lb_hash_table(names, weights, v->n, &err);
    }
    free(names);
    free(weights);
    return v->maglev ? 0 : -1;
}

static void view_summary(mg_tview_t *v)
{
    int prio = -1;
    v->nlive = 0;
    v->single = -1;
    v->tiers = 0;
    for (uint32_t s = 0; s < v->n; s++) {
        if (!v->e[s].serial || v->e[s].draining)
            continue;
        if (v->nlive++ == 0)
            v->single = (int)s;
        if (prio >= 0 && prio != v->e[s].priority)
            v->tiers = 1;
        prio = v->e[s].priority;
    }
    if (v->nlive != 1)
        v->single = -1;
}

static void swap_in(mg_gen_t *g, size_t ui, mg_tview_t *v)
{
    uv_mutex_lock(&g->tlock);
    mg_tview_t *old = g->tsets[ui].view;
    v->version = old ? old->version + 1 : 1;
    g->tsets[ui].view = v;
    uv_mutex_unlock(&g->tlock);
    mg_tview_release(old);
}

int mg_tset_publish(mg_gen_t *g, size_t ui, const mg_tdesc_t *want, size_t n,
                    const mg_workers_t *workers)
{
    mg_tset_t *ts = &g->tsets[ui];
    const mg_tview_t *cur = ts->view;
    size_t cap = ts->cap;
    int *at = malloc((n ? n : 1) * sizeof(*at));
    unsigned char *kept = calloc(cap, 1);
    mg_tview_t *v = view_new((uint32_t)cap);
    if (!at || !kept || !v) {
        free(at);
        free(kept);
        mg_tview_release(v);
        return -1;
    }
    /* first, the targets already in: each keeps its slot */
    for (size_t i = 0; i < n; i++) {
        at[i] = -1;
        for (size_t s = 0; cur && s < cur->n && at[i] < 0; s++) {
            const mg_slot_t *sl = &ts->slot[s];
            if (cur->e[s].serial && !kept[s] && strcmp(sl->t.name, want[i].name) == 0 &&
                same_addr(&sl->addr, &want[i].addr))
                at[i] = (int)s;
        }
        /* one that left a moment ago and comes back (a flapping DNS
         * record) takes its old slot again while that is not yet free:
         * its state, and the workers' pools of it, come back with it */
        for (size_t s = 0; s < cap && at[i] < 0; s++) {
            const mg_slot_t *sl = &ts->slot[s];
            if (sl->used && sl->left_in && !kept[s] && strcmp(sl->t.name, want[i].name) == 0 &&
                same_addr(&sl->addr, &want[i].addr))
                at[i] = (int)s;
        }
        if (at[i] >= 0) {
            kept[at[i]] = 1;
            ts->slot[at[i]].left_in = 0;
        }
    }
    uint64_t next_version = cur ? cur->version + 1 : 1;
    /* targets that leave: their slots wait until no worker uses them */
    for (size_t s = 0; cur && s < cur->n; s++)
        if (cur->e[s].serial && !kept[s])
            ts->slot[s].left_in = next_version;
    /* then the new ones, each in the lowest free slot */
    int missing = 0;
    size_t next_free = 0;
    for (size_t i = 0; i < n; i++) {
        if (at[i] >= 0)
            continue;
        while (next_free < cap && (kept[next_free] || !slot_free(g, ui, next_free, workers)))
            next_free++;
        if (next_free == cap) {
            missing++;
            continue;
        }
        if (slot_fill(g, ui, next_free, &want[i]) < 0) {
            missing++;
            continue;
        }
        ts->slot[next_free].filled_in = next_version;
        kept[next_free] = 1;
        at[i] = (int)next_free;
    }
    uint32_t hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (at[i] < 0)
            continue;
        mg_tview_entry_t *e = &v->e[at[i]];
        e->serial = ts->slot[at[i]].serial;
        e->weight = want[i].weight > 0 ? want[i].weight : 1;
        e->priority = want[i].priority;
        e->draining = want[i].draining;
        if ((uint32_t)at[i] + 1 > hi)
            hi = (uint32_t)at[i] + 1;
    }
    /* slots of targets that left long ago and are free now are unused */
    for (size_t s = 0; s < cap; s++)
        if (ts->slot[s].used && !kept[s] && ts->slot[s].left_in &&
            slot_free(g, ui, s, workers))
            ts->slot[s].used = 0;
    v->n = hi;
    view_summary(v);
    free(at);
    free(kept);
    if (view_table(g, ui, v) < 0) {
        mg_tview_release(v);
        return -1;
    }
    swap_in(g, ui, v);
    return missing;
}

/* ---- the generation's tables ---------------------------------------------------- */

/* The declared target's address when it needs no DNS: numeric, or the
 * first address /etc/hosts lists for the name (as the system's resolver
 * would answer from it). 1 with *out, 0 when it is a name for DNS. */
int mg_target_static_addr(const mg_target_t *t, mg_dns_hosts_memo_t *memo,
                          struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (t->srv)
        return 0;
    if (uv_ip4_addr(t->host, t->port, (struct sockaddr_in *)out) == 0 ||
        uv_ip6_addr(t->host, t->port, (struct sockaddr_in6 *)out) == 0)
        return 1;
    return mg_dns_hosts_first(memo, t->host, t->port, out);
}

int mg_tsets_init(mg_gen_t *g)
{
    const mg_config_t *cfg = g->cfg;
    if (uv_mutex_init(&g->tlock) != 0)
        return -1;
    g->tlock_ok = 1;
    g->tsets = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*g->tsets));
    if (!g->tsets)
        return -1;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        mg_tset_t *ts = &g->tsets[i];
        ts->cap = mg_upstream_cap(u);
        ts->slot = calloc(ts->cap, sizeof(*ts->slot));
        if (!ts->slot)
            return -1;
        if (g->outlier)
            g->outlier[i].ts = ts;
    }
    return 0;
}

/* The declared targets with a fixed address, as the first set of upstream
 * ui (discovery adds the rest). */
int mg_tsets_static(mg_gen_t *g)
{
    const mg_config_t *cfg = g->cfg;
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        const mg_upstream_t *u = &cfg->upstreams[i];
        mg_tdesc_t *want = calloc(u->ntargets ? u->ntargets : 1, sizeof(*want));
        size_t n = 0;
        if (!want)
            return -1;
        for (size_t t = 0; t < u->ntargets; t++) {
            const mg_target_t *dt = &u->targets[t];
            mg_tdesc_t *d = &want[n];
            if (!mg_target_static_addr(dt, NULL, &d->addr))
                continue;
            d->name = dt->name;
            d->host = dt->host;
            d->port = dt->port;
            d->weight = dt->weight;
            d->source = MG_TSRC_CONFIG;
            n++;
        }
        int rc = mg_tset_publish(g, i, want, n, NULL);
        free(want);
        if (rc != 0)
            return -1;
    }
    return 0;
}

void mg_tsets_free(mg_gen_t *g)
{
    for (size_t i = 0; g->tsets && i < g->cfg->nupstreams; i++) {
        mg_tset_t *ts = &g->tsets[i];
        for (size_t s = 0; ts->slot && s < ts->cap; s++)
            slot_clear(&ts->slot[s]);
        free(ts->slot);
        mg_tview_release(ts->view);
    }
    free(g->tsets);
    g->tsets = NULL;
    if (g->tlock_ok)
        uv_mutex_destroy(&g->tlock);
    g->tlock_ok = 0;
}
