/* balancer.h: the upstream balancers behind one small table of functions
 * (issue #14). Each balancer is one short file:
 *
 *   round_robin  balancer_rr.c          smooth weighted round robin
 *   least_conn   balancer_least_conn.c  weighted least connections
 *   hash         balancer_hash.c        consistent hashing by a key (Maglev)
 *   p2c_ewma     balancer_p2c.c         power of two choices over an EWMA of
 *                                       latency times in-flight requests
 *
 * What the caller does and what a balancer does: pool.c decides which
 * targets may be picked now (resolved, not refused lately, not out by the
 * health checks, not the `exclude` target of a failed attempt) and fills
 * lb->live; the balancer picks one of the live ones. So every balancer skips
 * the same targets, by one rule written once.
 *
 * State and threads. A generation's upstream has
 *   - one mg_lb_shared_t, made with the generation (generation.c) and read
 *     by every worker thread: the Maglev table (built once, never written
 *     after) and per target the in-flight count and the latency EWMA. Those
 *     two must be shared: each worker alone sees only its own share of the
 *     traffic, so a per-worker count would balance each worker's requests
 *     but not the target's load. They are atomics (relaxed: a count or an
 *     average that is a few nanoseconds stale picks as well), never locks;
 *     each target's pair sits in its own cache line so that workers
 *     counting different targets do not contend.
 *     A reload starts a new generation with counts at zero: requests still
 *     in flight on the old one count there until they end.
 *   - one mg_lb_t per worker (in mg_upstream_rt_t, upstream.h): the live
 *     flags, the round robin's current weights and a random state. Only its
 *     worker touches it.
 *
 * Ownership: mg_lb_shared_init fills a caller-owned mg_lb_shared_t (freed
 * with mg_lb_shared_free); mg_lb_init fills a caller-owned mg_lb_t that
 * points at the shared one (which must outlive it) and owns its arrays
 * (mg_lb_free). pick never allocates.
 */
#ifndef MG_BALANCER_H
#define MG_BALANCER_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "maglev.h"

/* mg_upstream_t.balancer */
enum { MG_LB_ROUND_ROBIN = 0, MG_LB_LEAST_CONN = 1, MG_LB_HASH = 2, MG_LB_P2C_EWMA = 3 };

/* mg_upstream_t.hash_on: where the hash balancer's key comes from */
enum {
    MG_HASH_NONE = 0,
    MG_HASH_HEADER = 1, /* a request header's first value (hash_name) */
    MG_HASH_COOKIE = 2, /* a cookie's value (hash_name) */
    MG_HASH_QUERY = 3,  /* a query argument's raw value (hash_name) */
    MG_HASH_CLIENT = 4, /* the client address */
    MG_HASH_PATH = 5,   /* the normalised path */
    MG_HASH_LUA = 6,    /* a Lua function's string (req:set_hash_key) */
};

/* One target's counters, shared by every worker. */
typedef struct mg_lb_target_s {
    alignas(64) _Atomic uint32_t inflight; /* requests on it now (least_conn, p2c) */
    _Atomic uint64_t ewma_ns;              /* time to the answer's head (p2c) */
} mg_lb_target_t;

/* One upstream's state shared by every worker of a generation. */
typedef struct mg_lb_shared_s {
    size_t n;
    mg_lb_target_t *t; /* n, or NULL when the balancer counts nothing */
    mg_maglev_t *maglev; /* hash, the testing kit's: built over every target */
} mg_lb_shared_t;

typedef struct mg_balancer_s mg_balancer_t;

/* One upstream's balancer as one worker runs it. */
typedef struct mg_lb_s {
    const mg_balancer_t *ops;
    mg_lb_shared_t *sh;
    size_t n;
    int *weight;          /* n, the targets' weights */
    int *cw;              /* n, round robin's current weights */
    unsigned char *live;  /* n, may target i be picked now (set by the caller) */
    const mg_maglev_t *maglev; /* hash: the table of the worker's view (targets.h) */
    uint64_t rng;         /* xorshift state (p2c's choices, least_conn's ties) */
} mg_lb_t;

/* The table of functions. NULL entries cost nothing on the request path. */
struct mg_balancer_s {
    const char *name; /* as the config writes it */
    int counts;       /* keeps sh->t: the proxy calls acquire/release */
    /* The shared part, once per generation (hash: the Maglev table over
     * names[0..n) and weights). 0, or -1 with *err set (static). */
    int (*build)(mg_lb_shared_t *sh, const char *const *names, const int *weights, size_t n,
                 const char **err);
    /* One of the live targets, or -1 when none is. `key` is the request's
     * key hash, `has_key` whether it has one (hash only). */
    int (*pick)(mg_lb_t *lb, uint64_t key, int has_key);
    /* An answer's head came after `ns` from the request being sent (p2c). */
    void (*observe)(mg_lb_shared_t *sh, int target, uint64_t ns);
};

extern const mg_balancer_t mg_balancer_rr, mg_balancer_least_conn, mg_balancer_hash,
    mg_balancer_p2c;

/* The balancer of an MG_LB_* value (round robin for an unknown one). */
const mg_balancer_t *mg_balancer_of(int kind);
/* Config names: the MG_LB_* of "round_robin", "least_conn", "hash",
 * "p2c_ewma", or -1; and back (config.c's ENUM field). */
int mg_balancer_parse(const char *name);
const char *mg_balancer_name(int kind);
/* The MG_HASH_* of "header", "cookie", "query", "client", "path", "lua",
 * or -1; and back. */
int mg_hash_on_parse(const char *name);
const char *mg_hash_on_name(int on);

/* names NULL: the counts only (the gateway, whose views hold the hash
 * table: targets.h). */
int mg_lb_shared_init(mg_lb_shared_t *sh, int kind, const char *const *names,
                      const int *weights, size_t n, const char **err);
/* The hash balancer's Maglev table over names[0..n) and weights (a weight
 * of 0: no share); NULL with *err (static). Owned by the caller. */
mg_maglev_t *mg_lb_hash_table(const char *const *names, const int *weights, size_t n,
                              const char **err);
void mg_lb_shared_free(mg_lb_shared_t *sh);
/* seed: anything that differs between workers (their id). weights NULL:
 * all 0 and none live (the gateway sets them from its view). -1 when out
 * of memory. */
int mg_lb_init(mg_lb_t *lb, mg_lb_shared_t *sh, int kind, const int *weights, size_t n,
               uint64_t seed);
void mg_lb_free(mg_lb_t *lb);

/* A request starts or stops using target i (balancers that count). */
static inline void mg_lb_acquire(mg_lb_shared_t *sh, int i)
{
    atomic_fetch_add_explicit(&sh->t[i].inflight, 1, memory_order_relaxed);
}
static inline void mg_lb_release(mg_lb_shared_t *sh, int i)
{
    atomic_fetch_sub_explicit(&sh->t[i].inflight, 1, memory_order_relaxed);
}

/* The next number of a worker's xorshift64 generator (never 0 state). */
static inline uint64_t mg_lb_random(mg_lb_t *lb)
{
    uint64_t x = lb->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return lb->rng = x;
}

#endif
