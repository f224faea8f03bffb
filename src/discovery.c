/* discovery.c: targets that change at run time, on the control thread
 * (the rules are in discovery.h; slots and views in targets.h).
 *
 * State, all the control thread's:
 *   - names: every host name or SRV name some upstream (or an admin
 *     change) needs, with its last good answer per family (A, AAAA) or its
 *     SRV records, when to ask next, and its lookup counts;
 *   - changes: the admin API's, per upstream name;
 *   - gen: the generation the workers run, whose sets are published.
 * A lookup's end or an admin change computes the affected upstreams' sets
 * again (declared targets, expanded by the names' answers, with the admin
 * changes over them) and publishes those that differ from their view.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "discovery.h"
#include "dns.h"
#include "errlog.h"
#include "metrics.h"
#include "mg_ffi.h"
#include "targets.h"
#include "worker.h"

enum {
    RES_OK, RES_NODATA, RES_NXDOMAIN, RES_SERVFAIL, RES_REFUSED, RES_TIMEOUT, RES_ERROR,
    NRESULTS
};
static const char *const result_names[NRESULTS] = { "ok",      "nodata",  "nxdomain", "servfail",
                                                    "refused", "timeout", "error" };

#define MAX_SRV_ADDRS 8

typedef struct addr_s {
    uint8_t v6;
    uint8_t a[16];
} addr_t;

typedef struct fam_s {
    addr_t a[MG_DNS_MAX_RECORDS];
    size_t n;
    int ok;           /* answered at least once */
} fam_t;

typedef struct srvrec_s {
    uint16_t prio, weight, port;
    char target[MG_DNS_NAME_MAX];
    addr_t a[MAX_SRV_ADDRS]; /* from the additional section */
    size_t na;
} srvrec_t;

typedef struct name_s name_t;

/* one query of a lookup: which name, which family (0: A or SRV, 1: AAAA) */
typedef struct qctx_s {
    name_t *n;
    int which;
} qctx_t;

struct name_s {
    name_t *next;
    mg_discovery_t *d;
    char *name;
    int srv;
    fam_t fam[2];             /* A, AAAA (names) */
    srvrec_t *recs;           /* SRV names */
    size_t nrecs;
    int srv_ok;
    uint64_t next_at;         /* control loop ms of the next lookup */
    int pending;              /* queries in flight */
    mg_dns_query_t *q[2];
    qctx_t qc[2];
    /* this lookup's answers, kept until its last query ends */
    int st[2];
    fam_t tmp[2];
    srvrec_t *tmp_recs;
    size_t tmp_nrecs;
    uint32_t tmp_ttl;         /* the least TTL seen, seconds */
    int failing;              /* its failure was logged */
    int used;                 /* needed by the current generation or a change */
    char last_error[24];
    uint64_t counts[NRESULTS];
};

/* the admin API's changes to one upstream */
typedef struct changes_s {
    struct changes_s *next;
    char *upstream;
    char *declared;           /* its declared targets when the first change came */
    mg_target_t *added;       /* targets added (own strings) */
    size_t nadded;
    char **removed;           /* names (a target, or a declared/added entry) */
    size_t nremoved;
    char **drained;
    size_t ndrained;
    struct weight_s {
        char *name;
        int weight;
    } *weights;
    size_t nweights;
} changes_t;

struct mg_discovery_s {
    uv_loop_t *loop;
    mg_workers_t *ws;
    mg_gen_t *gen;            /* the workers' (one reference), NULL before the first */
    mg_gen_t *loading;        /* the one mg_discovery_load fills (not held) */
    mg_dns_conf_t conf;
    mg_dns_settings_t dns;
    name_t *names;
    changes_t *changes;
    mg_dns_hosts_memo_t hosts;  /* /etc/hosts, read once per load */
    uv_timer_t timer;
    int timer_open;
    int stopping;
    int remark;               /* SRV records changed: which names are needed */
};

static uint64_t loop_now(mg_discovery_t *d) { return uv_now(d->loop); }

/* ---- addresses and names --------------------------------------------------- */

static void addr_text(const addr_t *a, uint16_t port, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(a->v6 ? AF_INET6 : AF_INET, a->a, ip, sizeof(ip));
    snprintf(out, cap, a->v6 ? "[%s]:%u" : "%s:%u", ip, port);
}

static void addr_sockaddr(const addr_t *a, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        memcpy(&s6->sin6_addr, a->a, 16);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        memcpy(&s4->sin_addr, a->a, 4);
    }
}

static name_t *name_find(mg_discovery_t *d, const char *name, int srv)
{
    for (name_t *n = d->names; n; n = n->next)
        if (n->srv == srv && strcasecmp(n->name, name) == 0)
            return n;
    return NULL;
}

static name_t *name_get(mg_discovery_t *d, const char *name, int srv)
{
    name_t *n = name_find(d, name, srv);
    if (n)
        return n;
    n = calloc(1, sizeof(*n));
    if (!n || !(n->name = strdup(name))) {
        free(n);
        return NULL;
    }
    n->d = d;
    n->srv = srv;
    n->next = d->names;
    d->names = n;
    return n;
}

static void name_free(name_t *n)
{
    for (int i = 0; i < 2; i++)
        if (n->q[i])
            mg_dns_cancel(n->q[i]);
    free(n->recs);
    free(n->tmp_recs);
    free(n->name);
    free(n);
}

/* Has the name an answer to build targets from? */
static int name_known(const name_t *n)
{
    return n->srv ? n->srv_ok : (n->fam[0].ok || n->fam[1].ok);
}

static size_t name_addresses(const name_t *n)
{
    if (!n->srv)
        return n->fam[0].n + n->fam[1].n;
    return n->nrecs;
}

/* ---- the sets ---------------------------------------------------------------- */

/* A set being built: its targets and the strings they borrow. */
typedef struct set_s {
    mg_tdesc_t *t;
    size_t n, cap;
    char **own;
    size_t nown, owncap;
    int oom;
} set_t;

static const char *set_str(set_t *s, const char *text)
{
    if (s->nown == s->owncap) {
        size_t cap = s->owncap ? s->owncap * 2 : 32;
        char **p = realloc(s->own, cap * sizeof(*p));
        if (!p) {
            s->oom = 1;
            return NULL;
        }
        s->own = p;
        s->owncap = cap;
    }
    char *c = strdup(text);
    if (!c) {
        s->oom = 1;
        return NULL;
    }
    s->own[s->nown++] = c;
    return c;
}

static void set_free(set_t *s)
{
    for (size_t i = 0; i < s->nown; i++)
        free(s->own[i]);
    free(s->own);
    free(s->t);
}

/* Appends d unless a target of that name is in already (the first wins). */
static void set_add(set_t *s, const mg_tdesc_t *d)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, d->name) == 0)
            return;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        mg_tdesc_t *p = realloc(s->t, cap * sizeof(*p));
        if (!p) {
            s->oom = 1;
            return;
        }
        s->t = p;
        s->cap = cap;
    }
    s->t[s->n++] = *d;
}

static int in_list(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

/* One address of a looked-up name as a target. */
static void add_address(set_t *s, const addr_t *a, uint16_t port, const char *host,
                        const char *authority, const char *from, int weight, uint16_t prio,
                        int source)
{
    char name[80];
    addr_text(a, port, name, sizeof(name));
    mg_tdesc_t d = { .name = set_str(s, name), .host = host, .authority = authority,
                     .from = from, .port = port, .weight = weight, .priority = prio,
                     .source = (uint8_t)source };
    if (!d.name)
        return;
    addr_sockaddr(a, port, &d.addr);
    set_add(s, &d);
}

/* The targets declared target t gives (source: MG_TSRC_CONFIG or
 * MG_TSRC_ADMIN for an added one). */
static void expand(mg_discovery_t *d, set_t *s, const mg_target_t *t, int source)
{
    mg_tdesc_t one = { .name = t->name, .host = t->host, .port = t->port, .weight = t->weight,
                       .source = (uint8_t)source };
    if (mg_target_static_addr(t, &d->hosts, &one.addr)) {
        set_add(s, &one);
        return;
    }
    name_t *n = name_find(d, t->host, t->srv);
    if (!n)
        return;
    if (!t->srv) {
        for (int f = 0; f < 2; f++)
            for (size_t i = 0; i < n->fam[f].n; i++)
                add_address(s, &n->fam[f].a[i], t->port, t->host, t->name, t->name, t->weight,
                            0, source == MG_TSRC_ADMIN ? source : MG_TSRC_DNS);
        return;
    }
    for (size_t r = 0; r < n->nrecs; r++) {
        const srvrec_t *rec = &n->recs[r];
        char auth[MG_DNS_NAME_MAX + 8];
        snprintf(auth, sizeof(auth), "%s:%u", rec->target, rec->port);
        const char *host = set_str(s, rec->target), *authority = set_str(s, auth);
        if (!host || !authority)
            return;
        int w = rec->weight ? rec->weight : 1;
        int src = source == MG_TSRC_ADMIN ? source : MG_TSRC_SRV;
        for (size_t i = 0; i < rec->na; i++)
            add_address(s, &rec->a[i], rec->port, host, authority, t->name, w, rec->prio, src);
        if (rec->na)
            continue;
        /* no address in the answer: the target's own lookup (or a fixed one) */
        mg_target_t tt = { .host = (char *)rec->target, .port = rec->port, .weight = w };
        mg_tdesc_t fixed = { .host = host, .authority = authority, .from = t->name,
                             .port = rec->port, .weight = w, .priority = rec->prio,
                             .source = (uint8_t)src };
        if (mg_target_static_addr(&tt, &d->hosts, &fixed.addr)) {
            fixed.name = authority;
            set_add(s, &fixed);
            continue;
        }
        name_t *tn = name_find(d, rec->target, 0);
        for (int f = 0; tn && f < 2; f++)
            for (size_t i = 0; i < tn->fam[f].n; i++)
                add_address(s, &tn->fam[f].a[i], rec->port, host, authority, t->name, w,
                            rec->prio, src);
    }
}

static changes_t *changes_of(mg_discovery_t *d, const char *upstream)
{
    for (changes_t *c = d->changes; c; c = c->next)
        if (strcmp(c->upstream, upstream) == 0)
            return c;
    return NULL;
}

/* Upstream ui's set in gen: its declared targets and the added ones,
 * expanded, with the admin changes over them. */
static void build_set(mg_discovery_t *d, const mg_gen_t *gen, size_t ui, set_t *s)
{
    const mg_upstream_t *u = &gen->cfg->upstreams[ui];
    const changes_t *c = changes_of(d, u->name);
    for (size_t i = 0; i < u->ntargets; i++)
        expand(d, s, &u->targets[i], MG_TSRC_CONFIG);
    for (size_t i = 0; c && i < c->nadded; i++)
        expand(d, s, &c->added[i], MG_TSRC_ADMIN);
    if (!c)
        return;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        mg_tdesc_t *t = &s->t[i];
        if (in_list(c->removed, c->nremoved, t->name) || in_list(c->removed, c->nremoved, t->from))
            continue;
        /* a weight set on the target itself wins over one set on its name */
        for (size_t w = 0; w < c->nweights; w++)
            if (t->from && strcmp(c->weights[w].name, t->from) == 0)
                t->weight = c->weights[w].weight;
        for (size_t w = 0; w < c->nweights; w++)
            if (strcmp(c->weights[w].name, t->name) == 0)
                t->weight = c->weights[w].weight;
        t->draining = in_list(c->drained, c->ndrained, t->name) ||
                      in_list(c->drained, c->ndrained, t->from);
        s->t[k++] = *t;
    }
    s->n = k;
}

/* Is s what upstream ui's published view already holds? */
static int same_as_view(const mg_gen_t *gen, size_t ui, const set_t *s)
{
    const mg_tset_t *ts = &gen->tsets[ui];
    const mg_tview_t *v = ts->view;
    size_t in_view = 0;
    for (uint32_t i = 0; i < v->n; i++)
        in_view += v->e[i].serial != 0;
    if (in_view != s->n)
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        int slot = mg_tview_find(gen, ui, v, s->t[i].name, strlen(s->t[i].name));
        if (slot < 0)
            return 0;
        const mg_tview_entry_t *e = &v->e[slot];
        const struct sockaddr_storage *a = &ts->slot[slot].addr, *b = &s->t[i].addr;
        if (e->weight != s->t[i].weight || e->priority != s->t[i].priority ||
            e->draining != s->t[i].draining || a->ss_family != b->ss_family ||
            memcmp(a, b, a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in)) != 0)
            return 0;
    }
    return 1;
}

/* Builds upstream ui's set in gen and publishes it if it differs (workers:
 * those running gen, NULL before any does). Returns 1 when published, 0
 * when unchanged, -1 out of memory. *missing: targets that did not fit,
 * logged unless `quiet` (an admin change answers it instead). */
static int publish_one(mg_discovery_t *d, mg_gen_t *gen, size_t ui, const mg_workers_t *ws,
                       int *missing, int quiet)
{
    set_t s = { 0 };
    build_set(d, gen, ui, &s);
    int rc = -1;
    *missing = 0;
    if (!s.oom) {
        rc = 0;
        if (!same_as_view(gen, ui, &s)) {
            int m = mg_tset_publish(gen, ui, s.t, s.n, ws);
            rc = m < 0 ? -1 : 1;
            *missing = m > 0 ? m : 0;
        }
    }
    /* said when it starts or its count changes, not at every lookup */
    mg_tset_t *ts = &gen->tsets[ui];
    if (rc >= 0 && !quiet && *missing != ts->missing) {
        ts->missing = *missing;
        if (*missing)
            mg_log(MG_LOG_WARN,
                   "upstream %s: %d of its %zu targets do not fit in max_targets (%zu); raise it "
                   "(slots of targets that left free up once their connections close)\n",
                   gen->cfg->upstreams[ui].name, *missing, s.n, ts->cap);
    }
    set_free(&s);
    return rc;
}

/* Every upstream of the workers' generation whose set changed, published,
 * and the workers told. */
static void republish(mg_discovery_t *d)
{
    if (!d->gen || d->loading)
        return;
    int any = 0, missing;
    for (size_t i = 0; i < d->gen->cfg->nupstreams; i++) {
        int rc = publish_one(d, d->gen, i, d->ws, &missing, 0);
        if (rc < 0)
            mg_log(MG_LOG_ERROR, "upstream %s: out of memory publishing its targets\n",
                   d->gen->cfg->upstreams[i].name);
        any |= rc > 0;
    }
    if (any)
        mg_workers_targets_changed(d->ws);
}

/* ---- lookups ------------------------------------------------------------------- */

static void schedule(mg_discovery_t *d);

static int result_of(int status, size_t records)
{
    switch (status) {
    case MG_DNS_OK: return records ? RES_OK : RES_NODATA;
    case MG_DNS_NXDOMAIN: return RES_NXDOMAIN;
    case MG_DNS_SERVFAIL: return RES_SERVFAIL;
    case MG_DNS_REFUSED: return RES_REFUSED;
    case MG_DNS_TIMEOUT: return RES_TIMEOUT;
    default: return RES_ERROR;
    }
}

static uint64_t clamp_ttl(const mg_discovery_t *d, uint32_t ttl_s)
{
    uint64_t ms = (uint64_t)ttl_s * 1000;
    if (ms < d->dns.min_ttl)
        ms = d->dns.min_ttl;
    if (ms > d->dns.max_ttl)
        ms = d->dns.max_ttl;
    return ms;
}

/* The same addresses, in any order (servers rotate them). */
static int same_addrs(const addr_t *a, size_t na, const addr_t *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        size_t j;
        for (j = 0; j < nb; j++)
            if (!memcmp(&a[i], &b[j], sizeof(addr_t)))
                break;
        if (j == nb)
            return 0;
    }
    return 1;
}

static int same_fam(const fam_t *a, const fam_t *b)
{
    return same_addrs(a->a, a->n, b->a, b->n);
}

static int same_rec(const srvrec_t *a, const srvrec_t *b)
{
    return a->prio == b->prio && a->weight == b->weight && a->port == b->port &&
           strcmp(a->target, b->target) == 0 && same_addrs(a->a, a->na, b->a, b->na);
}

/* The same SRV records, in any order (servers rotate them too). */
static int same_recs(const srvrec_t *a, size_t na, const srvrec_t *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        size_t j;
        for (j = 0; j < nb; j++)
            if (same_rec(&a[i], &b[j]))
                break;
        if (j == nb)
            return 0;
    }
    return 1;
}

/* A lookup's last query ended: keep what it found or, when it found
 * nothing usable, the last good answer. */
static void lookup_done(name_t *n)
{
    mg_discovery_t *d = n->d;
    uint64_t now = loop_now(d);
    int changed = 0, good = 0;
    const char *why = NULL;
    size_t before = name_addresses(n);
    if (n->srv) {
        if (n->st[0] == MG_DNS_OK && n->tmp_nrecs > 0) {
            good = 1;
            changed = !n->srv_ok || !same_recs(n->recs, n->nrecs, n->tmp_recs, n->tmp_nrecs);
            free(n->recs);
            n->recs = n->tmp_recs;
            n->nrecs = n->tmp_nrecs;
            n->tmp_recs = NULL;
            n->tmp_nrecs = 0;
            n->srv_ok = 1;
        } else {
            why = n->st[0] == MG_DNS_OK ? "no records" : mg_dns_status_name(n->st[0]);
        }
    } else {
        size_t found = 0;
        int answered = 0;
        for (int f = 0; f < 2; f++)
            if (n->st[f] == MG_DNS_OK) {
                answered = 1;
                found += n->tmp[f].n;
            }
        if (found > 0) {
            good = 1;
            for (int f = 0; f < 2; f++) {
                if (n->st[f] != MG_DNS_OK)
                    continue; /* this family failed: its last addresses stay */
                changed |= !n->fam[f].ok || !same_fam(&n->fam[f], &n->tmp[f]);
                n->fam[f] = n->tmp[f];
                n->fam[f].ok = 1;
            }
        } else {
            why = answered && n->st[0] == MG_DNS_OK ? mg_dns_status_name(n->st[1])
                                                    : mg_dns_status_name(n->st[0]);
            if (answered && n->st[0] == MG_DNS_OK && n->st[1] == MG_DNS_OK)
                why = "no address";
        }
    }
    if (good) {
        if (n->failing)
            mg_log(MG_LOG_NOTICE, "dns: %s answers again (%zu %s)\n", n->name,
                   name_addresses(n), n->srv ? "records" : "addresses");
        else if (changed && before)
            mg_log(MG_LOG_INFO, "dns: %s changed: %zu %s, was %zu\n", n->name,
                   name_addresses(n), n->srv ? "records" : "addresses", before);
        n->failing = 0;
        n->last_error[0] = '\0';
        n->next_at = now + clamp_ttl(d, n->tmp_ttl);
    } else {
        if (!n->failing)
            mg_log(MG_LOG_WARN, "dns: %s: lookup failed (%s) via the resolver; %s\n", n->name,
                   why, name_known(n) ? "keeping its last answer" : "it has no target yet");
        n->failing = 1;
        snprintf(n->last_error, sizeof(n->last_error), "%s", why);
        n->next_at = now + d->dns.retry;
    }
    free(n->tmp_recs);
    n->tmp_recs = NULL;
    n->tmp_nrecs = 0;
    if (changed && n->srv)
        d->remark = 1; /* other targets may need a lookup now */
    if (changed)
        republish(d);
}

static void take_answer(name_t *n, int which, const mg_dns_answer_t *a)
{
    n->st[which] = a->status;
    uint32_t ttl = a->status == MG_DNS_OK && a->n == 0 ? a->ttl : UINT32_MAX;
    for (size_t i = 0; i < a->n; i++)
        if (a->rr[i].ttl < ttl)
            ttl = a->rr[i].ttl;
    if (a->status == MG_DNS_OK && ttl < n->tmp_ttl)
        n->tmp_ttl = ttl;
    n->counts[result_of(a->status, a->n)]++;
    if (a->status != MG_DNS_OK)
        return;
    if (!n->srv) {
        fam_t *f = &n->tmp[which];
        memset(f, 0, sizeof(*f));
        for (size_t i = 0; i < a->n && f->n < MG_DNS_MAX_RECORDS; i++) {
            addr_t *o = &f->a[f->n++];
            o->v6 = a->rr[i].type == MG_DNS_AAAA;
            memcpy(o->a, a->rr[i].addr, o->v6 ? 16 : 4);
        }
        return;
    }
    srvrec_t *recs = a->n ? calloc(a->n, sizeof(*recs)) : NULL;
    if (a->n && !recs) {
        n->st[which] = MG_DNS_ESOCKET; /* out of memory: a failed lookup */
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        srvrec_t *r = &recs[i];
        r->prio = a->rr[i].priority;
        r->weight = a->rr[i].weight;
        r->port = a->rr[i].port;
        snprintf(r->target, sizeof(r->target), "%s", a->rr[i].target);
        for (size_t x = 0; x < a->nextra && r->na < MAX_SRV_ADDRS; x++) {
            const mg_dns_extra_t *e = &a->extra[x];
            if (strcmp(e->name, r->target) != 0)
                continue;
            addr_t *o = &r->a[r->na++];
            o->v6 = e->type == MG_DNS_AAAA;
            memcpy(o->a, e->addr, o->v6 ? 16 : 4);
        }
    }
    free(n->tmp_recs);
    n->tmp_recs = recs;
    n->tmp_nrecs = a->n;
}

/* One query's end (a dns.h callback, or a query that could not start). */
static int query_done(qctx_t *qc, const mg_dns_answer_t *a)
{
    name_t *n = qc->n;
    n->q[qc->which] = NULL;
    take_answer(n, qc->which, a);
    if (--n->pending > 0)
        return 0;
    lookup_done(n); /* n may not be needed any more, but stays until schedule() */
    return 1;
}

static void on_answer(void *arg, const mg_dns_answer_t *a)
{
    qctx_t *qc = arg;
    mg_discovery_t *d = qc->n->d;
    if (query_done(qc, a))
        schedule(d);
}

/* Starts a lookup of n on loop (the control loop, or a private one while a
 * generation loads). */
static void lookup_start(mg_discovery_t *d, name_t *n, uv_loop_t *loop)
{
    static const uint16_t types[2] = { MG_DNS_A, MG_DNS_AAAA };
    int nq = n->srv ? 1 : 2;
    n->tmp_ttl = UINT32_MAX;
    n->st[0] = n->st[1] = MG_DNS_TIMEOUT;
    memset(n->tmp, 0, sizeof(n->tmp));
    n->pending = nq;
    for (int i = 0; i < nq; i++) {
        n->qc[i] = (qctx_t){ n, i };
        int rc = mg_dns_query(loop, &d->conf, n->name, n->srv ? MG_DNS_SRV : types[i], on_answer,
                              &n->qc[i], &n->q[i]);
        if (rc < 0) {
            static mg_dns_answer_t failed; /* control thread only */
            failed.status = rc;
            query_done(&n->qc[i], &failed);
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    mg_discovery_t *d = t->data;
    uint64_t now = loop_now(d);
    for (name_t *n = d->names; n; n = n->next) {
        if (!n->used || n->pending || n->next_at > now)
            continue;
        lookup_start(d, n, d->loop);
    }
    schedule(d);
}

static void mark_names(mg_discovery_t *d, const mg_gen_t *also);

/* The timer for the next lookup that is due. Never called while names are
 * being walked: it may drop those no longer needed. */
static void schedule(mg_discovery_t *d)
{
    if (d->stopping || !d->timer_open || d->loading)
        return;
    if (d->remark && d->gen) {
        d->remark = 0;
        mark_names(d, NULL);
    }
    uint64_t next = UINT64_MAX, now = loop_now(d);
    for (name_t *n = d->names; n; n = n->next)
        if (n->used && !n->pending && n->next_at < next)
            next = n->next_at;
    if (next == UINT64_MAX) {
        uv_timer_stop(&d->timer);
        return;
    }
    uv_timer_start(&d->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---- which names are needed ------------------------------------------------------ */

static void need(mg_discovery_t *d, const mg_target_t *t)
{
    struct sockaddr_storage ss;
    if (mg_target_static_addr(t, &d->hosts, &ss))
        return;
    name_t *n = name_get(d, t->host, t->srv);
    if (!n)
        return;
    n->used = 1;
    for (size_t r = 0; n->srv && r < n->nrecs; r++) {
        mg_target_t tt = { .host = n->recs[r].target, .port = n->recs[r].port };
        if (n->recs[r].na == 0)
            need(d, &tt);
    }
}

static void need_gen(mg_discovery_t *d, const mg_gen_t *gen)
{
    for (size_t i = 0; gen && i < gen->cfg->nupstreams; i++) {
        const mg_upstream_t *u = &gen->cfg->upstreams[i];
        const changes_t *c = changes_of(d, u->name);
        for (size_t t = 0; t < u->ntargets; t++)
            need(d, &u->targets[t]);
        for (size_t t = 0; c && t < c->nadded; t++)
            need(d, &c->added[t]);
    }
}

/* Marks the names the workers' generation, `also` (one loading) and the
 * admin changes need (SRV targets without an address in their answer
 * included); the others are dropped. */
static void mark_names(mg_discovery_t *d, const mg_gen_t *also)
{
    for (name_t *n = d->names; n; n = n->next)
        n->used = 0;
    need_gen(d, d->gen);
    if (also != d->gen)
        need_gen(d, also);
    name_t **pp = &d->names;
    while (*pp) {
        name_t *n = *pp;
        if (!n->used && !n->pending) {
            *pp = n->next;
            name_free(n);
        } else {
            pp = &n->next;
        }
    }
}

/* Looks up, on a private loop, the needed names that never answered:
 * twice, for the SRV targets the first round named. */
static void resolve_unknown(mg_discovery_t *d, const mg_gen_t *gen)
{
    for (int round = 0; round < 2; round++) {
        uv_loop_t tmp;
        int started = 0;
        if (uv_loop_init(&tmp) != 0)
            return;
        for (name_t *n = d->names; n; n = n->next)
            if (n->used && !n->pending && !name_known(n) && n->next_at == 0) {
                lookup_start(d, n, &tmp);
                started++;
            }
        if (started)
            uv_run(&tmp, UV_RUN_DEFAULT);
        uv_loop_close(&tmp);
        if (!started)
            break;
        mark_names(d, gen);
    }
}

/* ---- generations ---------------------------------------------------------------------- */

mg_discovery_t *mg_discovery_new(uv_loop_t *loop, mg_workers_t *ws)
{
    mg_discovery_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->loop = loop;
    d->ws = ws;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->timer_open = 1;
    return d;
}

/* The declared targets of u as one string: what "the file changed this
 * upstream's targets" compares. malloc'd. */
static char *declared_of(const mg_upstream_t *u)
{
    size_t cap = 1;
    for (size_t i = 0; i < u->ntargets; i++)
        cap += strlen(u->targets[i].name) + 16;
    char *s = malloc(cap), *o = s;
    if (!s)
        return NULL;
    *o = '\0';
    for (size_t i = 0; i < u->ntargets; i++)
        o += snprintf(o, cap - (size_t)(o - s), "%s*%d,", u->targets[i].name, u->targets[i].weight);
    return s;
}

static void strlist_free(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

static void changes_free(changes_t *c)
{
    for (size_t i = 0; i < c->nadded; i++) {
        free(c->added[i].host);
        free(c->added[i].name);
    }
    free(c->added);
    strlist_free(c->removed, c->nremoved);
    strlist_free(c->drained, c->ndrained);
    for (size_t i = 0; i < c->nweights; i++)
        free(c->weights[i].name);
    free(c->weights);
    free(c->upstream);
    free(c->declared);
    free(c);
}

static size_t changes_count(const changes_t *c)
{
    return c->nadded + c->nremoved + c->ndrained + c->nweights;
}

/* c, once its last change was undone, goes (nothing to keep or show). */
static void changes_drop_if_empty(mg_discovery_t *d, changes_t *c)
{
    if (!c || changes_count(c) > 0)
        return;
    for (changes_t **pp = &d->changes; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            changes_free(c);
            return;
        }
}

/* A reload whose file changed an upstream's declared targets (or dropped
 * the upstream) drops its admin changes: the file wins. */
static void drop_stale_changes(mg_discovery_t *d, const mg_gen_t *gen)
{
    changes_t **pp = &d->changes;
    while (*pp) {
        changes_t *c = *pp;
        const mg_upstream_t *u = NULL;
        for (size_t i = 0; i < gen->cfg->nupstreams && !u; i++)
            if (strcmp(gen->cfg->upstreams[i].name, c->upstream) == 0)
                u = &gen->cfg->upstreams[i];
        char *now = u ? declared_of(u) : NULL;
        int keep = now && strcmp(now, c->declared) == 0;
        free(now);
        if (keep) {
            pp = &c->next;
            continue;
        }
        mg_log(MG_LOG_NOTICE,
               "upstream %s: %s; its %zu admin API target change%s dropped (the file wins)\n",
               c->upstream, u ? "the config file changed its targets" : "gone from the config",
               changes_count(c), changes_count(c) == 1 ? "" : "s");
        *pp = c->next;
        changes_free(c);
    }
}

int mg_discovery_load(mg_discovery_t *d, mg_gen_t *gen)
{
    const mg_config_t *cfg = gen->cfg;
    memset(&d->conf, 0, sizeof(d->conf));
    if (!cfg->resolver || mg_dns_server_parse(cfg->resolver, &d->conf.server) != 0) {
        if (mg_dns_system_server(NULL, &d->conf.server) != 0)
            mg_dns_server_parse("127.0.0.1", &d->conf.server);
    }
    d->dns = cfg->dns;
    if (d->dns.max_ttl == 0) /* a config made without the schema (none today) */
        d->dns = (mg_dns_settings_t){ 1000, 300000, 1000, 3, 5000 };
    d->conf.timeout = d->dns.timeout;
    d->conf.attempts = d->dns.attempts;
    drop_stale_changes(d, gen);
    mg_dns_hosts_forget(&d->hosts); /* read the hosts file again */
    d->loading = gen;
    mark_names(d, gen);
    resolve_unknown(d, gen);
    int rc = 0, missing;
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (publish_one(d, gen, i, NULL, &missing, 0) < 0)
            rc = -1;
    d->loading = NULL;
    return rc;
}

void mg_discovery_switch(mg_discovery_t *d, mg_gen_t *gen)
{
    atomic_fetch_add(&gen->refs, 1);
    mg_gen_release(d->gen);
    d->gen = gen;
    mark_names(d, NULL); /* the previous generation's names may go */
    /* answers that came while it loaded */
    republish(d);
    schedule(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    mg_discovery_t *d = h->data;
    free(d);
}

void mg_discovery_stop(mg_discovery_t *d)
{
    if (!d)
        return;
    d->stopping = 1;
    while (d->names) {
        name_t *n = d->names;
        d->names = n->next;
        name_free(n);
    }
    while (d->changes) {
        changes_t *c = d->changes;
        d->changes = c->next;
        changes_free(c);
    }
    mg_gen_release(d->gen);
    d->gen = NULL;
    mg_dns_hosts_forget(&d->hosts);
    d->timer_open = 0;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

/* ---- the admin API ---------------------------------------------------------------------- */

/* A request body: { "target": ..., "weight": ..., "drain": ... }. */
typedef struct body_s {
    char target[300];
    int has_target, has_weight, has_drain;
    long weight;
    int drain;
} body_t;

/* The target schema's weight rule (config.c), for the same bounds and words. */
static const mg_ffi_config_field_t *weight_rule(void)
{
    size_t n;
    const mg_ffi_config_field_t *f = mg_ffi_config_fields("target", &n);
    for (size_t i = 0; f && i < n; i++)
        if (strcmp(f[i].name, "weight") == 0)
            return &f[i];
    return NULL;
}

#define BODY_EXAMPLE "{\"target\": \"10.0.0.5:8080\", \"weight\": 2}"

/* 0, or -1 with why (cap bytes) saying what is wrong. */
static int parse_body(const char *text, size_t len, body_t *b, char *why, size_t cap)
{
    memset(b, 0, sizeof(*b));
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t'))
        i++;
    if (i == len)
        return 0; /* no body: no fields */
    mg_json_tok_t toks[8];
    char *sb = malloc(len + 1);
    if (!sb) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    int n = mg_ffi_json_flat_object(text, len, toks, 8, sb, len + 1);
    int rc = 0;
    if (n < 0) {
        snprintf(why, cap, "the body must be one JSON object like %s", BODY_EXAMPLE);
        rc = -1;
    }
    const mg_ffi_config_field_t *wr = weight_rule();
    for (int k = 0; rc == 0 && k < n; k++) {
        const mg_json_tok_t *t = &toks[k];
        const char *key = t->key_esc ? sb + t->key_off : text + t->key_off;
        const char *val = t->val_esc ? sb + t->val_off : text + t->val_off;
        int is = 0;
#define KEY(s) (t->key_len == strlen(s) && memcmp(key, s, t->key_len) == 0)
        if (KEY("target")) {
            is = 1;
            if (t->type != MG_JSON_STRING || t->val_len == 0 || t->val_len >= sizeof(b->target) ||
                memchr(val, '\0', t->val_len)) {
                snprintf(why, cap, "\"target\" must be a string like \"10.0.0.5:8080\"");
                rc = -1;
            } else {
                memcpy(b->target, val, t->val_len);
                b->target[t->val_len] = '\0';
                b->has_target = 1;
            }
        } else if (KEY("weight")) {
            is = 1;
            double lo = wr ? wr->min : 1, hi = wr ? wr->max : INT32_MAX;
            if (t->type != MG_JSON_NUMBER || t->num != (double)(long)t->num || t->num < lo ||
                t->num > hi) {
                snprintf(why, cap, "\"weight\" %s",
                         wr && wr->expected ? wr->expected : "must be an integer >= 1");
                rc = -1;
            } else {
                b->weight = (long)t->num;
                b->has_weight = 1;
            }
        } else if (KEY("drain")) {
            is = 1;
            if (t->type != MG_JSON_TRUE && t->type != MG_JSON_FALSE) {
                snprintf(why, cap, "\"drain\" must be true or false");
                rc = -1;
            } else {
                b->drain = t->type == MG_JSON_TRUE;
                b->has_drain = 1;
            }
        }
#undef KEY
        if (!is && rc == 0) {
            snprintf(why, cap, "unknown key \"%.*s\" (valid: target, weight, drain)",
                     (int)(t->key_len > 64 ? 64 : t->key_len), key);
            rc = -1;
        }
    }
    free(sb);
    return rc;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 32);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* s[0..n) %XX-decoded into out (cap); -1 when bad or too long. */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int h = i + 2 < n ? hexval(s[i + 1]) : -1, l = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h << 4 | l);
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static int answer(mg_sbuf_t *b, int status, char **out, size_t *len)
{
    if (b->oom) {
        free(b->p);
        *out = strdup("{\"ok\":false,\"error\":\"out of memory\"}\n");
        *len = *out ? strlen(*out) : 0;
        return 500;
    }
    *out = b->p;
    *len = b->len;
    return status;
}

static int fail(int status, const char *why, char **out, size_t *len)
{
    mg_sbuf_t b = { 0 };
    mg_sb_printf(&b, "{\"ok\":false,\"error\":");
    mg_sb_json(&b, why);
    mg_sb_printf(&b, "}\n");
    return answer(&b, status, out, len);
}

static int list_add(char ***list, size_t *n, const char *name)
{
    if (in_list(*list, *n, name))
        return 0;
    char **p = realloc(*list, (*n + 1) * sizeof(*p));
    if (!p)
        return -1;
    *list = p;
    if (!(p[*n] = strdup(name)))
        return -1;
    (*n)++;
    return 0;
}

static void list_del(char **list, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(list[i], name) == 0) {
            free(list[i]);
            list[i] = list[--*n];
            return;
        }
}

static changes_t *changes_make(mg_discovery_t *d, const mg_upstream_t *u)
{
    changes_t *c = changes_of(d, u->name);
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->upstream = strdup(u->name);
    c->declared = declared_of(u);
    if (!c->upstream || !c->declared) {
        changes_free(c);
        return NULL;
    }
    c->next = d->changes;
    d->changes = c;
    return c;
}

/* Does `name` name something of upstream ui now: a target of its view, the
 * declared or added entry a target came from, or an added entry? */
static int names_something(mg_discovery_t *d, size_t ui, const changes_t *c, const char *name)
{
    const mg_gen_t *g = d->gen;
    const mg_tview_t *v = g->tsets[ui].view;
    for (uint32_t s = 0; s < v->n; s++) {
        const mg_slot_t *sl = &g->tsets[ui].slot[s];
        if (v->e[s].serial && (strcmp(sl->t.name, name) == 0 ||
                               (sl->from && strcmp(sl->from, name) == 0)))
            return 1;
    }
    const mg_upstream_t *u = &g->cfg->upstreams[ui];
    for (size_t i = 0; i < u->ntargets; i++)
        if (strcmp(u->targets[i].name, name) == 0)
            return 1;
    for (size_t i = 0; c && i < c->nadded; i++)
        if (strcmp(c->added[i].name, name) == 0)
            return 1;
    return 0;
}

/* The target's normalised name ("host:port", "[v6]:port", "srv://name")
 * from its parse, as config.c names declared ones. */
static void target_name(const mg_ffi_target_t *t, char *out, size_t cap)
{
    if (t->scheme == MG_TARGET_SRV)
        snprintf(out, cap, "srv://%s", t->host);
    else
        snprintf(out, cap, strchr(t->host, ':') ? "[%s]:%u" : "%s:%u", t->host, t->port);
}

static int admin_add(mg_discovery_t *d, size_t ui, const body_t *b, char **out, size_t *len)
{
    const mg_upstream_t *u = &d->gen->cfg->upstreams[ui];
    char why[1200], name[300];
    mg_ffi_target_t pt;
    const char *pwhy;
    if (!b->has_target) {
        snprintf(why, sizeof(why), "POST .../targets needs \"target\", e.g. %s", BODY_EXAMPLE);
        return fail(400, why, out, len);
    }
    if (b->has_drain) {
        snprintf(why, sizeof(why), "\"drain\" is for PUT .../targets/TARGET, not when adding");
        return fail(400, why, out, len);
    }
    if (mg_ffi_target_parse(b->target, strlen(b->target), &pt, &pwhy) != 0 ||
        pt.scheme == MG_TARGET_HTTP || pt.scheme == MG_TARGET_HTTPS) {
        snprintf(why, sizeof(why), "\"target\" %s%s, got \"%.200s\"", MG_TARGET_EXPECTED,
                 pt.scheme == MG_TARGET_HTTP || pt.scheme == MG_TARGET_HTTPS
                     ? " (no scheme: the upstream's tls says how to speak to it)"
                     : pwhy,
                 b->target);
        return fail(400, why, out, len);
    }
    if (pt.scheme == MG_TARGET_SRV && b->has_weight)
        return fail(400, "an SRV name's records give the weights (remove \"weight\")", out, len);
    target_name(&pt, name, sizeof(name));
    changes_t *c = changes_of(d, u->name);
    if (c && in_list(c->removed, c->nremoved, name)) {
        /* removed before: it comes back */
        list_del(c->removed, &c->nremoved, name);
    } else if (names_something(d, ui, c, name)) {
        snprintf(why, sizeof(why), "upstream %s already has target %s (PUT .../targets/%s sets "
                                   "its weight)", u->name, name, name);
        return fail(409, why, out, len);
    } else {
        if (!(c = changes_make(d, u)))
            return fail(500, "out of memory", out, len);
        mg_target_t *a = realloc(c->added, (c->nadded + 1) * sizeof(*a));
        if (!a)
            return fail(500, "out of memory", out, len);
        c->added = a;
        a += c->nadded;
        memset(a, 0, sizeof(*a));
        a->host = strdup(pt.host);
        a->name = strdup(name);
        a->port = pt.port;
        a->srv = pt.scheme == MG_TARGET_SRV;
        a->weight = b->has_weight ? (int)b->weight : 1;
        if (!a->host || !a->name) {
            free(a->host);
            free(a->name);
            return fail(500, "out of memory", out, len);
        }
        c->nadded++;
    }
    /* a name is looked up now, on the control loop; its addresses come
     * with the answer */
    struct sockaddr_storage ss;
    int pending = 0;
    mg_target_t probe = { .host = pt.host, .port = pt.port, .srv = pt.scheme == MG_TARGET_SRV };
    if (!mg_target_static_addr(&probe, &d->hosts, &ss)) {
        mark_names(d, d->gen);
        name_t *n = name_find(d, pt.host, probe.srv);
        if (n && !name_known(n) && !n->pending)
            lookup_start(d, n, d->loop);
        pending = n && !name_known(n);
    }
    int missing = 0;
    int rc = publish_one(d, d->gen, ui, d->ws, &missing, 1);
    if (rc > 0)
        mg_workers_targets_changed(d->ws);
    if (missing) {
        /* it does not fit: undo */
        c = changes_of(d, u->name);
        if (c && c->nadded && strcmp(c->added[c->nadded - 1].name, name) == 0) {
            c->nadded--;
            free(c->added[c->nadded].host);
            free(c->added[c->nadded].name);
        }
        changes_drop_if_empty(d, c);
        publish_one(d, d->gen, ui, d->ws, &missing, 1);
        snprintf(why, sizeof(why), "upstream %s has no free target slot (max_targets = %zu; "
                                   "slots of removed targets free up once their connections "
                                   "close)", u->name, d->gen->tsets[ui].cap);
        return fail(409, why, out, len);
    }
    changes_drop_if_empty(d, changes_of(d, u->name)); /* a removed one came back */
    mg_log(MG_LOG_NOTICE, "upstream %s: target %s added (weight %ld) through the admin API\n",
           u->name, name, b->has_weight ? b->weight : 1L);
    mg_sbuf_t ob = { 0 };
    mg_sb_printf(&ob, "{\"ok\":true,\"upstream\":");
    mg_sb_json(&ob, u->name);
    mg_sb_printf(&ob, ",\"target\":");
    mg_sb_json(&ob, name);
    mg_sb_printf(&ob, ",\"resolving\":%s}\n", pending ? "true" : "false");
    return answer(&ob, pending ? 202 : 201, out, len);
}

static int admin_change(mg_discovery_t *d, size_t ui, const char *method, const char *target,
                        const body_t *b, char **out, size_t *len)
{
    const mg_upstream_t *u = &d->gen->cfg->upstreams[ui];
    char why[700];
    changes_t *c = changes_of(d, u->name);
    if (!names_something(d, ui, c, target)) {
        snprintf(why, sizeof(why), "upstream %s has no target %.300s (GET /upstreams lists them)",
                 u->name, target);
        return fail(404, why, out, len);
    }
    if (b->has_target) {
        snprintf(why, sizeof(why), "\"target\" is the URL's (…/targets/%.300s), not the body's",
                 target);
        return fail(400, why, out, len);
    }
    int del = strcmp(method, "DELETE") == 0;
    if (del && (b->has_weight || b->has_drain))
        return fail(400, "DELETE takes no \"weight\" or \"drain\" (an empty body or {})", out, len);
    if (!del && !b->has_weight && !b->has_drain)
        return fail(400, "PUT .../targets/TARGET needs \"weight\" and/or \"drain\", e.g. "
                         "{\"weight\": 3} or {\"drain\": true}",
                    out, len);
    if (!(c = changes_make(d, u)))
        return fail(500, "out of memory", out, len);
    int oom = 0;
    if (del) {
        size_t i;
        for (i = 0; i < c->nadded; i++)
            if (strcmp(c->added[i].name, target) == 0)
                break;
        if (i < c->nadded) { /* an added one goes away with its change */
            free(c->added[i].host);
            free(c->added[i].name);
            c->added[i] = c->added[--c->nadded];
        } else {
            oom |= list_add(&c->removed, &c->nremoved, target) < 0;
        }
        list_del(c->drained, &c->ndrained, target);
    }
    if (b->has_weight) {
        size_t i;
        for (i = 0; i < c->nweights; i++)
            if (strcmp(c->weights[i].name, target) == 0)
                break;
        if (i == c->nweights) {
            struct weight_s *w = realloc(c->weights, (c->nweights + 1) * sizeof(*w));
            if (w && (w[i].name = strdup(target))) {
                c->weights = w;
                c->nweights++;
            } else {
                if (w)
                    c->weights = w;
                oom = 1;
            }
        }
        if (i < c->nweights)
            c->weights[i].weight = (int)b->weight;
    }
    if (b->has_drain) {
        if (b->drain)
            oom |= list_add(&c->drained, &c->ndrained, target) < 0;
        else
            list_del(c->drained, &c->ndrained, target);
    }
    if (oom)
        return fail(500, "out of memory", out, len);
    changes_drop_if_empty(d, c); /* e.g. an added target removed again */
    int missing;
    if (publish_one(d, d->gen, ui, d->ws, &missing, 0) > 0)
        mg_workers_targets_changed(d->ws);
    mg_log(MG_LOG_NOTICE, "upstream %s: target %s %s through the admin API\n", u->name, target,
           del ? "removed" : b->has_drain && b->drain ? "draining" : "changed");
    mg_sbuf_t ob = { 0 };
    mg_sb_printf(&ob, "{\"ok\":true,\"upstream\":");
    mg_sb_json(&ob, u->name);
    mg_sb_printf(&ob, ",\"target\":");
    mg_sb_json(&ob, target);
    if (!del) {
        const mg_tview_t *v = d->gen->tsets[ui].view;
        int s = mg_tview_find(d->gen, ui, v, target, strlen(target));
        if (s >= 0)
            mg_sb_printf(&ob, ",\"weight\":%d,\"state\":\"%s\"", v->e[s].weight,
                         v->e[s].draining ? "draining" : "active");
    }
    mg_sb_printf(&ob, "}\n");
    return answer(&ob, 200, out, len);
}

int mg_discovery_admin(mg_discovery_t *d, const char *method, const char *path, size_t plen,
                       const char *body, size_t blen, char **out, size_t *len)
{
    static const char pre[] = "/upstreams/";
    char name[256], target[300], why[400];
    if (!d || !d->gen)
        return fail(503, "the gateway is not serving yet", out, len);
    if (plen <= sizeof(pre) - 1 || memcmp(path, pre, sizeof(pre) - 1) != 0)
        return fail(404, "not found", out, len);
    const char *p = path + sizeof(pre) - 1, *end = path + plen;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (!slash || decode(p, (size_t)(slash - p), name, sizeof(name)) < 0)
        return fail(404, "not found (/upstreams/NAME/targets[/TARGET])", out, len);
    const char *rest = slash + 1;
    size_t rl = (size_t)(end - rest);
    int with_target = rl > 8 && memcmp(rest, "targets/", 8) == 0;
    if (!(rl == 7 && memcmp(rest, "targets", 7) == 0) && !with_target)
        return fail(404, "not found (/upstreams/NAME/targets[/TARGET])", out, len);
    if (with_target && decode(rest + 8, rl - 8, target, sizeof(target)) < 0)
        return fail(400, "the target in the URL is not valid %-encoding", out, len);
    size_t ui;
    const mg_config_t *cfg = d->gen->cfg;
    for (ui = 0; ui < cfg->nupstreams; ui++)
        if (strcmp(cfg->upstreams[ui].name, name) == 0)
            break;
    if (ui == cfg->nupstreams) {
        snprintf(why, sizeof(why), "no upstream is called %.200s", name);
        return fail(404, why, out, len);
    }
    body_t b;
    if (parse_body(body, blen, &b, why, sizeof(why)) < 0)
        return fail(400, why, out, len);
    int post = strcmp(method, "POST") == 0;
    if (post != !with_target) {
        snprintf(why, sizeof(why), "%s", post ? "POST /upstreams/NAME/targets adds a target "
                                                "(the body names it)"
                                              : "PUT and DELETE need the target: "
                                                "/upstreams/NAME/targets/TARGET");
        return fail(405, why, out, len);
    }
    return post ? admin_add(d, ui, &b, out, len)
                : admin_change(d, ui, method, target, &b, out, len);
}

/* ---- status and metrics ------------------------------------------------------------------ */

static void name_json(mg_discovery_t *d, const name_t *n, mg_sbuf_t *b, int *first)
{
    uint64_t now = loop_now(d);
    mg_sb_printf(b, "%s{\"name\":", *first ? "" : ",");
    *first = 0;
    mg_sb_json(b, n->name);
    mg_sb_printf(b, ",\"type\":\"%s\",\"state\":\"%s\",\"%s\":%zu,\"next_lookup_in\":%.3f",
                 n->srv ? "SRV" : "A/AAAA",
                 n->failing ? "failing" : name_known(n) ? "ok" : "unresolved",
                 n->srv ? "records" : "addresses", name_addresses(n),
                 n->pending ? 0.0 : n->next_at > now ? (double)(n->next_at - now) / 1000 : 0.0);
    if (n->last_error[0]) {
        mg_sb_printf(b, ",\"last_error\":");
        mg_sb_json(b, n->last_error);
    }
    mg_sb_printf(b, "}");
}

void mg_discovery_upstream_json(mg_discovery_t *d, size_t ui, mg_sbuf_t *b)
{
    if (!d || !d->gen || ui >= d->gen->cfg->nupstreams)
        return;
    const mg_upstream_t *u = &d->gen->cfg->upstreams[ui];
    const changes_t *c = changes_of(d, u->name);
    int first = 1;
    struct sockaddr_storage ss;
    for (size_t i = 0; i < u->ntargets + (c ? c->nadded : 0); i++) {
        const mg_target_t *t = i < u->ntargets ? &u->targets[i] : &c->added[i - u->ntargets];
        if (mg_target_static_addr(t, &d->hosts, &ss))
            continue;
        const name_t *n = name_find(d, t->host, t->srv);
        if (!n)
            continue;
        if (first)
            mg_sb_printf(b, ",\"dns\":[");
        name_json(d, n, b, &first);
        for (size_t r = 0; n->srv && r < n->nrecs; r++) {
            const name_t *tn = n->recs[r].na ? NULL : name_find(d, n->recs[r].target, 0);
            if (tn)
                name_json(d, tn, b, &first);
        }
    }
    if (!first)
        mg_sb_printf(b, "]");
    if (!c)
        return;
    mg_sb_printf(b, ",\"admin_changes\":{\"added\":[");
    for (size_t i = 0; i < c->nadded; i++) {
        mg_sb_printf(b, "%s", i ? "," : "");
        mg_sb_json(b, c->added[i].name);
    }
    mg_sb_printf(b, "],\"removed\":[");
    for (size_t i = 0; i < c->nremoved; i++) {
        mg_sb_printf(b, "%s", i ? "," : "");
        mg_sb_json(b, c->removed[i]);
    }
    mg_sb_printf(b, "],\"drained\":[");
    for (size_t i = 0; i < c->ndrained; i++) {
        mg_sb_printf(b, "%s", i ? "," : "");
        mg_sb_json(b, c->drained[i]);
    }
    mg_sb_printf(b, "],\"weights\":{");
    for (size_t i = 0; i < c->nweights; i++) {
        mg_sb_printf(b, "%s", i ? "," : "");
        mg_sb_json(b, c->weights[i].name);
        mg_sb_printf(b, ":%d", c->weights[i].weight);
    }
    mg_sb_printf(b, "}}");
}

void mg_discovery_metrics(mg_discovery_t *d, mg_sbuf_t *b)
{
    if (!d)
        return;
    int any = 0;
    for (const name_t *n = d->names; n; n = n->next)
        any |= n->used;
    if (any) {
        mg_sb_printf(b, "# HELP moongate_dns_lookups_total DNS queries for upstream target "
                        "names, by result.\n# TYPE moongate_dns_lookups_total counter\n");
        for (const name_t *n = d->names; n; n = n->next)
            for (int r = 0; n->used && r < NRESULTS; r++) {
                char nm[MG_DNS_NAME_MAX * 2];
                mg_metrics_escape_label(nm, sizeof(nm), n->name);
                mg_sb_printf(b, "moongate_dns_lookups_total{name=\"%s\",result=\"%s\"} %llu\n",
                             nm, result_names[r], (unsigned long long)n->counts[r]);
            }
        static const char *const gauges[2][2] = {
            { "moongate_dns_addresses", "Addresses (SRV: records) a target name has now." },
            { "moongate_dns_failing", "1 while a target name's lookups fail (its last answer "
                                      "is kept)." },
        };
        for (int g = 0; g < 2; g++) {
            mg_sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", gauges[g][0], gauges[g][1],
                         gauges[g][0]);
            for (const name_t *n = d->names; n; n = n->next)
                if (n->used) {
                    char nm[MG_DNS_NAME_MAX * 2];
                    mg_metrics_escape_label(nm, sizeof(nm), n->name);
                    mg_sb_printf(b, "%s{name=\"%s\"} %zu\n", gauges[g][0], nm,
                                 g == 0 ? name_addresses(n) : (size_t)n->failing);
                }
        }
    }
    if (!d->gen)
        return;
    mg_sb_printf(b, "# HELP moongate_upstream_targets Targets in the upstream's set now that "
                    "take requests (not draining).\n# TYPE moongate_upstream_targets gauge\n");
    for (size_t i = 0; i < d->gen->cfg->nupstreams; i++) {
        const char *un = d->gen->cfg->upstreams[i].name;
        size_t n = mg_metrics_escape_label(NULL, 0, un);
        char *e = malloc(n + 1);
        if (!e)
            continue;
        mg_metrics_escape_label(e, n + 1, un);
        mg_sb_printf(b, "moongate_upstream_targets{upstream=\"%s\"} %u\n", e,
                     d->gen->tsets[i].view->nlive);
        free(e);
    }
}
