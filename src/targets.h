/* targets.h: an upstream's targets at run time (targets.c), which change
 * without a reload: host names re-resolved (discovery.h) and the admin
 * API's changes.
 *
 * Slots. Each upstream of a generation has a fixed table of `cap` slots
 * (upstream.max_targets, at least its declared targets). A slot holds one
 * resolved target (an address, with its name, host and port) from the
 * moment the control thread fills it until it is freed; everything per
 * target is indexed by slot and so survives changes of the set around it:
 * each worker's keep-alive pool (pool.c), the balancers' shared in-flight
 * counts and latency (balancer.h), the active health (health.c) and the
 * outlier state (outlier.c). A target that stays in the set keeps its slot,
 * hence its state; one that leaves frees its slot only once no worker uses
 * it (below), and a slot filled again starts with fresh state.
 *
 * Views. Which slots are in the set, with which weight, priority (SRV) and
 * whether draining, is an immutable mg_tview_t, published by the control
 * thread and swapped whole: the worker side picks only by the view it
 * holds. A change is a new view published (mg_tset_publish) and every
 * worker told (worker.c); each worker takes the new view at its next loop
 * turn (mg_pools_sync): it closes the idle connections of targets that
 * left or drain, and from then on picks only by the new view. Requests in
 * flight on a target that left finish there.
 *
 * Freeing a slot. A slot that left the set is free again once every worker
 * running the generation holds a view without it (the version each worker
 * synced, mg_upstream_rt_t.synced) and has neither a connection of its
 * target left (mg_pool_t.nconns) nor a request whose target it is
 * (mg_pool_t.users: a request still logging reads the target's name).
 * The worker writes those counts, the control thread reads them. Until
 * then a new target takes another slot; the same target coming back
 * before its slot is free takes its old slot again, state and all. A
 * connection of a request of an older generation is not counted (its pool
 * is the older one's); when it ends, it joins the slot's pool only while
 * the slot serves the same filling it did at the reload (pool.c,
 * mg_pool_put_idle; mg_pool_t.successor_serial), else it closes.
 *
 * Threads. Slots are written by the control thread only, and only while no
 * worker can read them (not in a view a worker may hold, no connection
 * left), views never after they are published. Views are reference
 * counted (the published one holds one, each worker one); taking a
 * reference happens under the generation's lock (mg_gen_t.tlock), so the
 * control thread can drop the published view's reference without waiting.
 */
#ifndef MG_TARGETS_H
#define MG_TARGETS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "config.h"
#include "maglev.h"

typedef struct mg_gen_s mg_gen_t;

/* Where a target came from (/upstreams "source"). */
enum { MG_TSRC_CONFIG = 0, MG_TSRC_DNS = 1, MG_TSRC_SRV = 2, MG_TSRC_ADMIN = 3 };
const char *mg_tsrc_name(int source);

/* One slot. t.name is the target's identity ("10.0.0.1:8080", or the
 * declared "host:port" of a target whose address is fixed: numeric, or
 * from /etc/hosts), t.host the name TLS checks and health checks use,
 * t.authority the Host header a request without one gets (NULL: t.name).
 * Strings are the slot's (freed when it is filled again). */
typedef struct mg_slot_s {
    mg_target_t t;
    struct sockaddr_storage addr;
    uint32_t serial;           /* which filling: 0 never filled */
    uint8_t source;            /* MG_TSRC_* */
    char *from;                /* the declared target it came from (NULL: itself) */
    /* control thread only */
    uint64_t filled_in;        /* the view version that first has this filling */
    uint8_t used;              /* in the published view, or not yet free */
    uint64_t left_in;          /* the view version it left in (0: in the view) */
} mg_slot_t;

typedef struct mg_tview_entry_s {
    uint32_t serial;           /* the slot's filling this view means; 0: not in the view */
    int weight;                /* >= 1 */
    uint16_t priority;         /* SRV priority (lower first), else 0 */
    uint8_t draining;          /* no new requests (admin API) */
} mg_tview_entry_t;

typedef struct mg_tview_s {
    _Atomic int refs;
    uint64_t version;          /* 1, 2, ... per upstream of a generation */
    uint32_t n;                /* entries [0, n); slots from n on are not in it */
    uint32_t nlive;            /* in it and not draining */
    int single;                /* the only live slot when nlive == 1, else -1 */
    int tiers;                 /* live targets have more than one priority */
    mg_maglev_t *maglev;       /* hash balancer: over slots [0, n) by name,
                                  weight 0 for those not live */
    mg_tview_entry_t e[];
} mg_tview_t;

/* One upstream's table in a generation (mg_gen_t.tsets). */
typedef struct mg_tset_s {
    size_t cap;
    mg_slot_t *slot;           /* cap */
    mg_tview_t *view;          /* the published one (swapped under gen->tlock) */
    uint32_t next_serial;      /* control thread */
    int missing;               /* control thread: targets that did not fit last time */
} mg_tset_t;

/* A target as the control thread wants it in a set (mg_tset_publish).
 * Strings are borrowed for the call. */
typedef struct mg_tdesc_s {
    const char *name, *host, *authority, *from;
    uint16_t port;
    struct sockaddr_storage addr;
    int weight;
    uint16_t priority;
    uint8_t draining;
    uint8_t source;
} mg_tdesc_t;

/* An upstream's slots: its max_targets, and at least one per declared
 * target. */
static inline size_t mg_upstream_cap(const mg_upstream_t *u)
{
    return (size_t)u->max_targets > u->ntargets ? (size_t)u->max_targets
                                                : (u->ntargets ? u->ntargets : 1);
}

/* The generation's tables, empty (0, or -1 when out of memory); then
 * mg_tsets_static fills each with the declared targets whose address is
 * known without DNS (numeric, or in /etc/hosts); names left for DNS come
 * with discovery's first publish (discovery.h). */
int mg_tsets_init(mg_gen_t *g);
int mg_tsets_static(mg_gen_t *g);
void mg_tsets_free(mg_gen_t *g);

/* A declared target's address when it needs no DNS: numeric, or the first
 * address /etc/hosts lists for its host (as the system's resolver would
 * answer from it; the file has no TTL, so it is read at each load only:
 * memo, dns.h, remembers it until the next; NULL reads the file). 1 with
 * *out, 0 when the host is a name for DNS (or an SRV name). */
struct mg_dns_hosts_memo_s;
int mg_target_static_addr(const mg_target_t *t, struct mg_dns_hosts_memo_s *memo,
                          struct sockaddr_storage *out);

/* Replaces upstream ui's set with want[0..n): targets already in it (same
 * name and address) keep their slot and state, others take a free slot
 * (fresh health, outlier and balancer state, a metric id). `workers`:
 * the workers' synced versions and pools, to know which slots are free;
 * NULL before any worker runs g. Returns how many of want did not fit
 * (no free slot), or -1 when out of memory (nothing changed). Control
 * thread; the caller then tells the workers (mg_workers_targets_changed). */
struct mg_workers_s;
int mg_tset_publish(mg_gen_t *g, size_t ui, const mg_tdesc_t *want, size_t n,
                    const struct mg_workers_s *workers);

/* The published view of upstream ui, with a reference for the caller
 * (any thread; released with mg_tview_release). */
mg_tview_t *mg_tset_acquire(mg_gen_t *g, size_t ui);
void mg_tview_release(mg_tview_t *v);

/* Is slot s in view v (live or draining)? */
static inline int mg_tview_has(const mg_tview_t *v, size_t s)
{
    return s < v->n && v->e[s].serial != 0;
}

/* Slot s of view v by name (exact), or -1. */
int mg_tview_find(const mg_gen_t *g, size_t ui, const mg_tview_t *v, const char *name,
                  size_t len);

#endif
