/* metrics.c: per-worker counter shards and their Prometheus rendering.
 *
 * Layout. One shard per worker, each allocated on its own cache lines so
 * that two workers never write the same line. A shard holds the open
 * connection count, two latency histograms (total and upstream time) and,
 * per route id, a small status -> count table. Workers write only their own
 * shard with relaxed atomic adds; the control thread reads every shard with
 * relaxed loads when /metrics is asked for (a scrape may see one request's
 * counter before its histogram: Prometheus tolerates that; a histogram's
 * _count is derived from its buckets so the two always agree).
 *
 * Route ids. Names are interned into ids by mg_metrics_route_id() under a
 * mutex (config load only). Id 0 is "no route" (label ""), ids
 * 1..MAX_ROUTES-2 are names in first-seen order, and id MAX_ROUTES-1 is the
 * "(other)" bucket that every name beyond the first MAX_ROUTES-2 shares (a
 * config would need thousands of route names for that; its counts stay
 * right in sum, only the per-route split is lost). Ids survive reloads and
 * are never reused while the process runs.
 *
 * Per-route tables are allocated in chunks of CHUNK_ROUTES ids, for every
 * shard at once, when an id of a new chunk is handed out (or by
 * mg_metrics_init for the ids interned before it), and published with a
 * release store. A worker only sees an id after the config that holds it
 * was published to it, so its acquire load finds the chunk; an id whose
 * chunk is missing anyway is counted under "(other)", whose chunk always
 * exists. mg_metrics_request therefore takes no lock and never allocates.
 *
 * Status table. STATUS_SLOTS slots of one 64-bit word each: the status (+1,
 * so that 0 is an empty slot) in the top 16 bits, the count in the low 48.
 * A new status claims an empty slot with a CAS, so even two writers on one
 * shard cannot lose a count. Statuses outside 100..999 are counted as "0".
 * A route that sees more than STATUS_SLOTS distinct statuses in one worker
 * counts the further ones by class: label "4xx", "5xx", ...
 *
 * Targets. Each (upstream name, target "host:port") pair of a config gets a
 * target id at config load (mg_metrics_target_id, under the mutex, like
 * route ids; they survive reloads). Id 0 is the "(other)" pair that every
 * pair beyond MAX_TARGETS-1 shares. A target's stats (a latency histogram
 * and counts by status class) live in chunks of CHUNK_TARGETS ids per
 * shard, allocated and published like the route chunks, so that
 * mg_metrics_upstream takes no lock and never allocates either.
 *
 * Hooks. (phase, policy) pairs get hook ids the same way (at most
 * MAX_HOOKS, id 0 "(other)"); each shard holds a fixed array of their
 * call and time counters, added to by mg_metrics_hook.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>
#include "cache.h"
#include "metrics.h"
#include "mirror.h"

#define MAX_ROUTES 4096
#define OTHER_ID (MAX_ROUTES - 1)
#define OTHER_NAME "(other)"
#define CHUNK_ROUTES 64
#define NCHUNKS (MAX_ROUTES / CHUNK_ROUTES)
#define STATUS_SLOTS 32
#define NCLASSES 10
#define NBUCKETS 15 /* 14 bounds + Inf */
#define CACHE_LINE 64
#define CACHE_RESULTS 7 /* cache.h's MG_CACHE_HIT..REVALIDATED, [0] stored */
#define COUNT_MASK ((UINT64_C(1) << 48) - 1)
#define MAX_TARGETS 1024
#define CHUNK_TARGETS 32
#define NTCHUNKS (MAX_TARGETS / CHUNK_TARGETS)
#define MAX_HOOKS 256

/* Upper bounds (le) of the histogram buckets, in microseconds and as the
 * label text. The last bucket (+Inf) has no bound. */
static const uint64_t bucket_us[NBUCKETS - 1] = {
    500,    1000,   2500,    5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const char *const bucket_le[NBUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",   "0.5",   "1",      "2.5",   "5",    "10",   "+Inf",
};

#define MIRROR_RESULTS MG_MIRROR__RESULTS /* mirror.h: SENT..DOWN */

typedef struct route_stats_s {
    _Atomic uint64_t slot[STATUS_SLOTS]; /* (status + 1) << 48 | count */
    _Atomic uint64_t cls[NCLASSES];      /* overflow by status / 100 */
    /* the route's mirror copies (mirror.h), by result, then their answers
     * by status class ([0]: none came) */
    _Atomic uint64_t mirror[MIRROR_RESULTS];
    _Atomic uint64_t mirror_cls[NCLASSES];
} route_stats_t;

typedef struct chunk_s {
    route_stats_t r[CHUNK_ROUTES];
} chunk_t;

typedef struct hist_s {
    _Atomic uint64_t bucket[NBUCKETS]; /* not cumulative; summed at render */
    _Atomic uint64_t sum_us;
} hist_t;

/* One target's upstream attempts: the latency of those that got a whole
 * answer, and every attempt by class: [1..9] the answer's status / 100,
 * [0] no answer ("error": connect, TLS, timeout, reset, malformed). */
typedef struct target_stats_s {
    hist_t latency;
    _Atomic uint64_t cls[NCLASSES];
} target_stats_t;

typedef struct tchunk_s {
    target_stats_t t[CHUNK_TARGETS];
} tchunk_t;

/* One (phase, policy) pair's hook runs: calls that returned, and the
 * nanoseconds they ran (hooks.c's clock: waits left out). */
typedef struct hook_stats_s {
    _Atomic uint64_t calls, ns;
} hook_stats_t;

/* The last sampled request (tracing.h) seen in a bucket: its trace id for
 * OpenMetrics exemplars. A seqlock (seq odd while written) lets the
 * renderer read it whole without making the worker wait. */
typedef struct exemplar_s {
    _Atomic uint32_t seq;
    _Atomic uint64_t id[4];   /* the trace id's 32 hex digits */
    _Atomic uint64_t us, at;  /* the observed value; uv_hrtime() of it */
} exemplar_t;

/* One worker's counters. Allocated with aligned_alloc(CACHE_LINE) and a
 * size rounded up to whole lines: no line is shared with another shard. */
typedef struct shard_s {
    _Alignas(CACHE_LINE) _Atomic int64_t conns;
    _Atomic uint64_t cache[CACHE_RESULTS]; /* by cache result, [0]: stored */
    hist_t total;
    hist_t upstream;
    _Atomic(chunk_t *) chunks[NCHUNKS]; /* written under `lock` only */
    _Atomic(tchunk_t *) tchunks[NTCHUNKS]; /* likewise */
    hook_stats_t hooks[MAX_HOOKS];         /* by hook id (4 KiB) */
    exemplar_t ex_total[NBUCKETS], ex_upstream[NBUCKETS]; /* by bucket */
} shard_t;

/* Process-wide state. `names`, `nnames`, the name hash and `shards`
 * change only under `lock`; `shards` and `nshards` are read without it by
 * workers, which only run between mg_metrics_init and mg_metrics_free. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *names[MAX_ROUTES] = { [0] = "", [OTHER_ID] = OTHER_NAME }; /* by id */
static uint32_t nnames = 1;           /* next id to hand out */
static uint16_t hash[2 * MAX_ROUTES]; /* open addressing: id, 0 = empty */
static shard_t **shards;
static int nshards;
static _Atomic uint64_t reloads_ok, reloads_failed;
static _Atomic uint64_t tls_ok, tls_failed;
/* By target id: upstream and target names (strdup'd, but for id 0's),
 * under `lock`. */
static const char *tnames[MAX_TARGETS][2] = { [0] = { OTHER_NAME, OTHER_NAME } };
static uint32_t ntnames = 1; /* next target id to hand out */
/* By hook id: phase and policy names, like tnames. */
static const char *hnames[MAX_HOOKS][2] = { [0] = { OTHER_NAME, OTHER_NAME } };
static uint32_t nhnames = 1;

/* Upstream TLS handshakes by (upstream, failed, what): few distinct ones,
 * counted under `lock` (once per new connection, never per request); past
 * the table's size they go under the upstream "(other)". */
#define UP_TLS_MAX 256
static struct {
    const char *upstream; /* strdup'd, but for the overflow slot */
    const char *what; /* a static string */
    int failed;
    uint64_t n;
} up_tls[UP_TLS_MAX];
static int nup_tls;

/* ---- route ids ---------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void *alloc_lines(size_t size)
{
    size = (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    void *p = aligned_alloc(CACHE_LINE, size);
    if (p)
        memset(p, 0, size);
    return p;
}

/* Makes sure every shard has the chunk of `id`. Under `lock`. Returns 0 or
 * -ENOMEM (then that id is counted under "(other)"). */
static int ensure_chunk(uint32_t id)
{
    uint32_t k = id / CHUNK_ROUTES;
    for (int w = 0; w < nshards; w++) {
        if (atomic_load_explicit(&shards[w]->chunks[k], memory_order_relaxed))
            continue;
        chunk_t *c = alloc_lines(sizeof(chunk_t));
        if (!c)
            return -ENOMEM;
        atomic_store_explicit(&shards[w]->chunks[k], c, memory_order_release);
    }
    return 0;
}

/* ensure_chunk for the chunk of target id `id`. */
static int ensure_tchunk(uint32_t id)
{
    uint32_t k = id / CHUNK_TARGETS;
    for (int w = 0; w < nshards; w++) {
        if (atomic_load_explicit(&shards[w]->tchunks[k], memory_order_relaxed))
            continue;
        tchunk_t *c = alloc_lines(sizeof(tchunk_t));
        if (!c)
            return -ENOMEM;
        atomic_store_explicit(&shards[w]->tchunks[k], c, memory_order_release);
    }
    return 0;
}

/* Interns the pair (a, b) into `tab` (pairs of strdup'd names, `*n` in
 * use, `max` slots, slot 0 the shared "(other)"). Under `lock`. A config
 * has a few hundred pairs at most, interned once per load: a linear search
 * is enough. Returns the id; 0 when the table is full or out of memory. */
static uint32_t intern_pair(const char *(*tab)[2], uint32_t *n, uint32_t max, const char *a,
                            const char *b)
{
    for (uint32_t i = 1; i < *n; i++)
        if (!strcmp(tab[i][0], a) && !strcmp(tab[i][1], b))
            return i;
    if (*n >= max)
        return 0;
    char *ca = strdup(a), *cb = strdup(b);
    if (!ca || !cb) {
        free(ca);
        free(cb);
        return 0;
    }
    tab[*n][0] = ca;
    tab[*n][1] = cb;
    return (*n)++;
}

static void forget_pairs(const char *(*tab)[2], uint32_t *n)
{
    for (uint32_t i = 1; i < *n; i++) {
        free((char *)tab[i][0]);
        free((char *)tab[i][1]);
        tab[i][0] = tab[i][1] = NULL;
    }
    *n = 1;
}

uint32_t mg_metrics_target_id(const char *upstream, const char *target)
{
    if (!upstream || !target)
        return 0;
    pthread_mutex_lock(&lock);
    uint32_t id = intern_pair(tnames, &ntnames, MAX_TARGETS, upstream, target);
    if (id)
        (void)ensure_tchunk(id); /* out of memory: counted under "(other)" */
    pthread_mutex_unlock(&lock);
    return id;
}

void mg_metrics_hook_names(uint32_t id, const char **phase, const char **policy)
{
    pthread_mutex_lock(&lock);
    if (id >= nhnames)
        id = 0;
    *phase = hnames[id][0];
    *policy = hnames[id][1];
    pthread_mutex_unlock(&lock);
}

uint32_t mg_metrics_hook_id(const char *phase, const char *policy)
{
    if (!phase || !policy)
        return 0;
    pthread_mutex_lock(&lock);
    uint32_t id = intern_pair(hnames, &nhnames, MAX_HOOKS, phase, policy);
    pthread_mutex_unlock(&lock);
    return id;
}

uint32_t mg_metrics_route_id(const char *name)
{
    if (!name || !*name)
        return 0;
    if (!strcmp(name, OTHER_NAME))
        return OTHER_ID;
    pthread_mutex_lock(&lock);
    uint32_t mask = 2 * MAX_ROUTES - 1, i = hash_str(name) & mask, id = OTHER_ID;
    for (;; i = (i + 1) & mask) {
        uint16_t at = hash[i];
        if (at == 0)
            break;
        if (!strcmp(names[at], name)) {
            id = at;
            goto out;
        }
    }
    /* new name; the table has twice as many slots as ids: never full */
    if (nnames < OTHER_ID) {
        char *copy = strdup(name);
        if (copy) {
            id = nnames++;
            names[id] = copy;
            hash[i] = (uint16_t)id;
            /* out of memory: the id stays, its counts go to "(other)" */
            (void)ensure_chunk(id);
        }
    }
out:
    pthread_mutex_unlock(&lock);
    return id;
}

/* ---- setup -------------------------------------------------------------- */

static void free_shards(void)
{
    for (int w = 0; w < nshards; w++) {
        for (int k = 0; k < NCHUNKS; k++)
            free(atomic_load_explicit(&shards[w]->chunks[k], memory_order_relaxed));
        for (int k = 0; k < NTCHUNKS; k++)
            free(atomic_load_explicit(&shards[w]->tchunks[k], memory_order_relaxed));
        free(shards[w]);
    }
    free(shards);
    shards = NULL;
    nshards = 0;
}

/* -EBUSY when already initialised (call mg_metrics_free first). */
int mg_metrics_init(int nworkers)
{
    if (nworkers < 1)
        return -EINVAL;
    pthread_mutex_lock(&lock);
    int rc = 0;
    if (shards) {
        rc = -EBUSY;
        goto out;
    }
    shards = calloc((size_t)nworkers, sizeof(*shards));
    if (!shards) {
        rc = -ENOMEM;
        goto out;
    }
    nshards = nworkers;
    for (int w = 0; w < nworkers; w++) {
        shards[w] = alloc_lines(sizeof(shard_t));
        if (!shards[w]) {
            nshards = w;
            free_shards();
            rc = -ENOMEM;
            goto out;
        }
    }
    /* "no route", "(other)" and every name interned before init */
    for (uint32_t k = 0; k * CHUNK_ROUTES < nnames; k++)
        rc = rc ? rc : ensure_chunk(k * CHUNK_ROUTES);
    rc = rc ? rc : ensure_chunk(OTHER_ID);
    for (uint32_t k = 0; k * CHUNK_TARGETS < ntnames; k++) /* with id 0, "(other)" */
        rc = rc ? rc : ensure_tchunk(k * CHUNK_TARGETS);
    if (rc)
        free_shards();
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

/* Only once no worker runs: they read `shards` without the lock. Forgets
 * the route names too (ids handed out before are stale afterwards). */
void mg_metrics_free(void)
{
    pthread_mutex_lock(&lock);
    free_shards();
    for (uint32_t i = 1; i < nnames; i++) {
        free((char *)names[i]);
        names[i] = NULL;
    }
    memset(hash, 0, sizeof(hash));
    nnames = 1;
    forget_pairs(tnames, &ntnames);
    forget_pairs(hnames, &nhnames);
    atomic_store(&reloads_ok, 0);
    atomic_store(&reloads_failed, 0);
    atomic_store(&tls_ok, 0);
    atomic_store(&tls_failed, 0);
    for (int i = 0; i < nup_tls; i++)
        free((char *)up_tls[i].upstream);
    memset(up_tls, 0, sizeof(up_tls));
    nup_tls = 0;
    pthread_mutex_unlock(&lock);
}

/* ---- the request path ----------------------------------------------------- */

static inline int bucket_of(uint64_t us)
{
    int b = 0;
    while (b < NBUCKETS - 1 && us > bucket_us[b])
        b++;
    return b;
}

static void observe(hist_t *h, uint64_t us)
{
    int b = bucket_of(us);
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

static void count_status(route_stats_t *rs, int status)
{
    if (status < 100 || status > 999)
        status = 0;
    uint64_t key = (uint64_t)(status + 1) << 48;
    unsigned i = (unsigned)status % STATUS_SLOTS;
    for (unsigned n = 0; n < STATUS_SLOTS; n++, i = (i + 1) % STATUS_SLOTS) {
        uint64_t v = atomic_load_explicit(&rs->slot[i], memory_order_relaxed);
        if (v == 0) {
            if (atomic_compare_exchange_strong_explicit(&rs->slot[i], &v, key | 1,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed))
                return;
            /* another writer claimed it: v now holds its key */
        }
        if ((v & ~COUNT_MASK) == key) {
            atomic_fetch_add_explicit(&rs->slot[i], 1, memory_order_relaxed);
            return;
        }
    }
    atomic_fetch_add_explicit(&rs->cls[status / 100], 1, memory_order_relaxed);
}

/* Shard s's counts of route id `route_id` ("(other)"'s when its chunk is
 * missing). */
static inline route_stats_t *route_stats(shard_t *s, uint32_t route_id)
{
    if (route_id >= MAX_ROUTES)
        route_id = OTHER_ID;
    chunk_t *c = atomic_load_explicit(&s->chunks[route_id / CHUNK_ROUTES], memory_order_acquire);
    if (!c) {
        route_id = OTHER_ID;
        c = atomic_load_explicit(&s->chunks[OTHER_ID / CHUNK_ROUTES], memory_order_acquire);
    }
    return &c->r[route_id % CHUNK_ROUTES];
}

void mg_metrics_request(int w, uint32_t route_id, int status, uint64_t total_us,
                        uint64_t upstream_us)
{
    if (w < 0 || w >= nshards)
        return; /* not initialised (e.g. `moongate check`) or a bad index */
    shard_t *s = shards[w];
    count_status(route_stats(s, route_id), status);
    observe(&s->total, total_us);
    if (upstream_us > 0)
        observe(&s->upstream, upstream_us);
}

void mg_metrics_upstream(int w, uint32_t target_id, int status, uint64_t us)
{
    if (w < 0 || w >= nshards)
        return;
    shard_t *s = shards[w];
    if (target_id >= MAX_TARGETS)
        target_id = 0;
    tchunk_t *c = atomic_load_explicit(&s->tchunks[target_id / CHUNK_TARGETS], memory_order_acquire);
    if (!c) {
        target_id = 0;
        c = atomic_load_explicit(&s->tchunks[0], memory_order_acquire);
    }
    target_stats_t *ts = &c->t[target_id % CHUNK_TARGETS];
    int timed = status > 0;
    status = status < 0 ? -status : status;
    atomic_fetch_add_explicit(&ts->cls[status >= 100 && status <= 999 ? status / 100 : 0], 1,
                              memory_order_relaxed);
    if (timed && status >= 100 && status <= 999)
        observe(&ts->latency, us);
}

void mg_metrics_mirror(int w, uint32_t route_id, int result)
{
    if (w < 0 || w >= nshards || result < 1 || result > MIRROR_RESULTS)
        return;
    route_stats_t *rs = route_stats(shards[w], route_id);
    atomic_fetch_add_explicit(&rs->mirror[result - 1], 1, memory_order_relaxed);
}

void mg_metrics_mirror_answer(int w, uint32_t route_id, int status)
{
    if (w < 0 || w >= nshards)
        return;
    route_stats_t *rs = route_stats(shards[w], route_id);
    atomic_fetch_add_explicit(&rs->mirror_cls[status >= 100 && status <= 999 ? status / 100 : 0],
                              1, memory_order_relaxed);
}

static void exemplar_put(exemplar_t *e, uint64_t us, const char *trace_id, uint64_t at)
{
    uint32_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (int i = 0; i < 4; i++) {
        uint64_t v;
        memcpy(&v, trace_id + 8 * i, 8);
        atomic_store_explicit(&e->id[i], v, memory_order_relaxed);
    }
    atomic_store_explicit(&e->us, us, memory_order_relaxed);
    atomic_store_explicit(&e->at, at, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
}

void mg_metrics_exemplar(int w, uint64_t total_us, uint64_t upstream_us, const char *trace_id,
                         uint64_t at_ns)
{
    if (w < 0 || w >= nshards)
        return;
    shard_t *s = shards[w];
    exemplar_put(&s->ex_total[bucket_of(total_us)], total_us, trace_id, at_ns);
    if (upstream_us > 0)
        exemplar_put(&s->ex_upstream[bucket_of(upstream_us)], upstream_us, trace_id, at_ns);
}

void mg_metrics_hook(int w, uint32_t hook_id, uint64_t ns)
{
    if (w < 0 || w >= nshards)
        return;
    hook_stats_t *hs = &shards[w]->hooks[hook_id < MAX_HOOKS ? hook_id : 0];
    atomic_fetch_add_explicit(&hs->calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hs->ns, ns, memory_order_relaxed);
}

void mg_metrics_connections(int w, int delta)
{
    if (w < 0 || w >= nshards)
        return;
    atomic_fetch_add_explicit(&shards[w]->conns, delta, memory_order_relaxed);
}

void mg_metrics_reload(int ok)
{
    atomic_fetch_add_explicit(ok ? &reloads_ok : &reloads_failed, 1, memory_order_relaxed);
}

void mg_metrics_tls_handshake(int ok)
{
    atomic_fetch_add_explicit(ok ? &tls_ok : &tls_failed, 1, memory_order_relaxed);
}

void mg_metrics_cache(int w, int result)
{
    if (w < 0 || w >= nshards || result <= 0 || result >= CACHE_RESULTS)
        return;
    atomic_fetch_add_explicit(&shards[w]->cache[result], 1, memory_order_relaxed);
}

void mg_metrics_cache_stored(int w)
{
    if (w < 0 || w >= nshards)
        return;
    atomic_fetch_add_explicit(&shards[w]->cache[0], 1, memory_order_relaxed);
}

/* ---- rendering ------------------------------------------------------------ */

typedef struct sbuf_s {
    char *p;
    size_t len, cap;
    int failed;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(sbuf_t *b, const char *s) { put(b, s, strlen(s)); }

static void putf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(sbuf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->failed = 1;
        return;
    }
    put(b, tmp, (size_t)n);
}

/* A counter split into result="ok" and result="failed". */
static void put_results(sbuf_t *b, const char *name, const char *help, _Atomic uint64_t *ok,
                        _Atomic uint64_t *failed)
{
    putf(b, "# HELP %s %s\n# TYPE %s counter\n%s{result=\"ok\"} %llu\n%s{result=\"failed\"} %llu\n",
         name, help, name, name,
         (unsigned long long)atomic_load_explicit(ok, memory_order_relaxed), name,
         (unsigned long long)atomic_load_explicit(failed, memory_order_relaxed));
}

void mg_metrics_upstream_tls(const char *upstream, int failed, const char *what)
{
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < nup_tls && !(up_tls[i].failed == failed && strcmp(up_tls[i].what, what) == 0 &&
                            strcmp(up_tls[i].upstream, upstream) == 0))
        i++;
    if (i == nup_tls && nup_tls < UP_TLS_MAX - 1) {
        up_tls[i].upstream = strdup(upstream);
        if (up_tls[i].upstream) {
            up_tls[i].what = what;
            up_tls[i].failed = failed;
            up_tls[i].n = 0;
            nup_tls++;
        }
    }
    if (i == nup_tls) { /* full, or out of memory: the last slot is "(other)" */
        i = UP_TLS_MAX - 1;
        up_tls[i].upstream = OTHER_NAME; /* static: never freed (i >= nup_tls) */
        up_tls[i].what = "other";
        up_tls[i].failed = 1;
    }
    up_tls[i].n++;
    pthread_mutex_unlock(&lock);
}

/* Backslash, double quote and line feed become \\, \" and \n. Writes at
 * most cap-1 bytes and a NUL to out (when cap > 0); returns the length the
 * whole escaped value needs, like snprintf. */
size_t mg_metrics_escape_label(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        char e = *s == '\\' ? '\\' : *s == '"' ? '"' : *s == '\n' ? 'n' : 0;
        char piece[2] = { e ? '\\' : *s, e };
        for (int i = 0; i < (e ? 2 : 1); i++, n++)
            if (n + 1 < cap)
                out[n] = piece[i];
    }
    if (cap > 0)
        out[n < cap ? n : cap - 1] = '\0';
    return n;
}

static void put_label(sbuf_t *b, const char *s)
{
    char small[256];
    size_t n = mg_metrics_escape_label(small, sizeof(small), s);
    if (n < sizeof(small)) {
        put(b, small, n);
        return;
    }
    char *big = malloc(n + 1);
    if (!big) {
        b->failed = 1;
        return;
    }
    mg_metrics_escape_label(big, n + 1, s);
    put(b, big, n);
    free(big);
}

/* Sums histogram `off` (its offset from a shard's start) over shards. */
static void sum_hist(size_t off, uint64_t *bucket, uint64_t *sum_us)
{
    for (int w = 0; w < nshards; w++) {
        const hist_t *h = (const hist_t *)((const char *)shards[w] + off);
        for (int i = 0; i < NBUCKETS; i++)
            bucket[i] += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        *sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    }
}

/* `name` then `{upstream="..",target=".."` for target id `id` (escaped),
 * the brace left open. */
static void put_target_series(sbuf_t *b, const char *name, uint32_t id)
{
    puts_(b, name);
    puts_(b, "{upstream=\"");
    put_label(b, tnames[id][0]);
    puts_(b, "\",target=\"");
    put_label(b, tnames[id][1]);
    puts_(b, "\"");
}

/* A bucket's exemplar as rendered: the newest over the shards. */
typedef struct ex_view_s {
    int has;
    char id[33];
    uint64_t us, at;
} ex_view_t;

/* Reads e whole (0), or finds it being written or empty (-1). */
static int exemplar_get(const exemplar_t *e, ex_view_t *v)
{
    for (int tries = 0; tries < 4; tries++) {
        uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (s1 == 0)
            return -1;
        if (s1 & 1)
            continue;
        uint64_t id[4];
        for (int i = 0; i < 4; i++)
            id[i] = atomic_load_explicit(&e->id[i], memory_order_relaxed);
        uint64_t us = atomic_load_explicit(&e->us, memory_order_relaxed);
        uint64_t at = atomic_load_explicit(&e->at, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s1)
            continue;
        memcpy(v->id, id, 32);
        v->id[32] = '\0';
        v->us = us;
        v->at = at;
        v->has = 1;
        return 0;
    }
    return -1;
}

/* The newest exemplar of each bucket of the exemplar array at `off` (its
 * offset from a shard's start) over shards. */
static void sum_exemplars(size_t off, ex_view_t *out)
{
    memset(out, 0, sizeof(*out) * NBUCKETS);
    for (int w = 0; w < nshards; w++) {
        const exemplar_t *e = (const exemplar_t *)((const char *)shards[w] + off);
        for (int i = 0; i < NBUCKETS; i++) {
            ex_view_t v;
            if (exemplar_get(&e[i], &v) == 0 && (!out[i].has || v.at > out[i].at))
                out[i] = v;
        }
    }
}

/* What a rendering is for: OpenMetrics (exemplars, `# EOF`) or the
 * Prometheus text format, and Unix ns - uv_hrtime() ns for exemplar times. */
typedef struct render_s {
    int om;
    int64_t unix_offset;
} render_t;

/* The sample lines of one histogram (bucket counts not cumulative); with
 * `id` >= 0, labelled with that target; with `ex` (OpenMetrics only), a
 * bucket's exemplar after its count. */
static void put_hist_lines(sbuf_t *b, const char *name, long id, const uint64_t *bucket,
                           uint64_t sum_us, const ex_view_t *ex, const render_t *how)
{
    char series[128];
    uint64_t cum = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        cum += bucket[i];
        snprintf(series, sizeof(series), "%s_bucket", name);
        if (id >= 0) {
            put_target_series(b, series, (uint32_t)id);
            putf(b, ",le=\"%s\"} %llu", bucket_le[i], (unsigned long long)cum);
        } else {
            putf(b, "%s{le=\"%s\"} %llu", series, bucket_le[i], (unsigned long long)cum);
        }
        if (ex && how->om && ex[i].has) {
            int64_t at = (int64_t)ex[i].at + how->unix_offset;
            putf(b, " # {trace_id=\"%s\"} %llu.%06llu %lld.%09lld", ex[i].id,
                 (unsigned long long)(ex[i].us / 1000000),
                 (unsigned long long)(ex[i].us % 1000000), (long long)(at / 1000000000),
                 (long long)(at % 1000000000));
        }
        puts_(b, "\n");
    }
    /* exact decimal seconds from integer microseconds */
    const char *part[2] = { "_sum", "_count" };
    for (int k = 0; k < 2; k++) {
        snprintf(series, sizeof(series), "%s%s", name, part[k]);
        if (id >= 0) {
            put_target_series(b, series, (uint32_t)id);
            puts_(b, "} ");
        } else {
            putf(b, "%s ", series);
        }
        if (k == 0)
            putf(b, "%llu.%06llu\n", (unsigned long long)(sum_us / 1000000),
                 (unsigned long long)(sum_us % 1000000));
        else
            putf(b, "%llu\n", (unsigned long long)cum);
    }
}

static void put_hist(sbuf_t *b, const char *name, const char *help, size_t off, size_t ex_off,
                     const render_t *how)
{
    uint64_t bucket[NBUCKETS] = { 0 }, sum_us = 0;
    ex_view_t ex[NBUCKETS];
    sum_hist(off, bucket, &sum_us);
    if (how->om)
        sum_exemplars(ex_off, ex);
    putf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    put_hist_lines(b, name, -1, bucket, sum_us, how->om ? ex : NULL, how);
}

/* Per target, in target id order (config order): the latency histogram
 * and the attempts by status class, for the targets that had any. Under
 * `lock`. */
static void put_targets(sbuf_t *b)
{
    static const char *const hist = "moongate_upstream_request_duration_seconds";
    static const char *const resp = "moongate_upstream_responses_total";
    putf(b, "# HELP %s Time from sending a request to a target to the end of its answer.\n"
            "# TYPE %s histogram\n", hist, hist);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            putf(b, "# HELP %s Attempts on a target, by the answer's status class "
                    "(error: no answer).\n# TYPE %s counter\n", resp, resp);
        for (uint32_t id = 0; id < ntnames; id++) {
            uint64_t bucket[NBUCKETS] = { 0 }, sum_us = 0, cls[NCLASSES] = { 0 }, any = 0;
            size_t off = offsetof(tchunk_t, t) + (id % CHUNK_TARGETS) * sizeof(target_stats_t);
            for (int w = 0; w < nshards; w++) {
                const char *c = (const char *)atomic_load_explicit(
                    &shards[w]->tchunks[id / CHUNK_TARGETS], memory_order_acquire);
                if (!c)
                    continue;
                const target_stats_t *ts = (const target_stats_t *)(c + off);
                for (int i = 0; i < NBUCKETS; i++)
                    bucket[i] += atomic_load_explicit(&ts->latency.bucket[i], memory_order_relaxed);
                sum_us += atomic_load_explicit(&ts->latency.sum_us, memory_order_relaxed);
                for (int i = 0; i < NCLASSES; i++) {
                    cls[i] += atomic_load_explicit(&ts->cls[i], memory_order_relaxed);
                    any |= cls[i];
                }
            }
            if (!any)
                continue;
            if (pass == 0) {
                put_hist_lines(b, hist, id, bucket, sum_us, NULL, &(render_t){ 0 });
                continue;
            }
            for (int i = 1; i <= NCLASSES; i++) { /* 1xx..9xx, then error */
                if (!cls[i % NCLASSES])
                    continue;
                put_target_series(b, resp, id);
                if (i < NCLASSES)
                    putf(b, ",code_class=\"%dxx\"} %llu\n", i, (unsigned long long)cls[i]);
                else
                    putf(b, ",code_class=\"error\"} %llu\n", (unsigned long long)cls[0]);
            }
        }
    }
}

/* Under `lock`. */
static void put_upstream_tls(sbuf_t *b)
{
    puts_(b, "# HELP moongate_upstream_tls_handshakes_total TLS handshakes with upstreams, "
             "by result.\n# TYPE moongate_upstream_tls_handshakes_total counter\n");
    for (int i = 0; i < UP_TLS_MAX; i++)
        if (up_tls[i].n && !up_tls[i].failed) {
            puts_(b, "moongate_upstream_tls_handshakes_total{upstream=\"");
            put_label(b, up_tls[i].upstream);
            putf(b, "\",result=\"%s\"} %llu\n", up_tls[i].what, (unsigned long long)up_tls[i].n);
        }
    puts_(b, "# HELP moongate_upstream_tls_failures_total TLS handshakes with upstreams that "
             "failed, by reason.\n# TYPE moongate_upstream_tls_failures_total counter\n");
    for (int i = 0; i < UP_TLS_MAX; i++)
        if (up_tls[i].n && up_tls[i].failed) {
            puts_(b, "moongate_upstream_tls_failures_total{upstream=\"");
            put_label(b, up_tls[i].upstream);
            putf(b, "\",reason=\"%s\"} %llu\n", up_tls[i].what, (unsigned long long)up_tls[i].n);
        }
}

static int by_name(const void *x, const void *y)
{
    return strcmp(names[*(const uint32_t *)x], names[*(const uint32_t *)y]);
}

/* moongate_requests_total: for each route (sorted by name), the statuses
 * summed over shards, in label order ("0", "100".."199", "1xx", "200"...). */
static void put_requests(sbuf_t *b, uint32_t *ids, uint64_t *counts)
{
    uint32_t n = 0;
    for (uint32_t id = 0; id < nnames; id++)
        ids[n++] = id;
    ids[n++] = OTHER_ID;
    qsort(ids, n, sizeof(*ids), by_name);
    puts_(b, "# HELP moongate_requests_total Requests answered, by route and status.\n"
             "# TYPE moongate_requests_total counter\n");
    for (uint32_t k = 0; k < n; k++) {
        uint32_t id = ids[k];
        uint64_t *cls = counts + 1000; /* counts[status], then cls[class] */
        memset(counts, 0, sizeof(*counts) * (1000 + NCLASSES));
        int any = 0;
        for (int w = 0; w < nshards; w++) {
            chunk_t *c = atomic_load_explicit(&shards[w]->chunks[id / CHUNK_ROUTES],
                                              memory_order_acquire);
            if (!c)
                continue;
            route_stats_t *rs = &c->r[id % CHUNK_ROUTES];
            for (int i = 0; i < STATUS_SLOTS; i++) {
                uint64_t v = atomic_load_explicit(&rs->slot[i], memory_order_relaxed);
                if (v & COUNT_MASK) {
                    counts[(v >> 48) - 1] += v & COUNT_MASK;
                    any = 1;
                }
            }
            for (int i = 0; i < NCLASSES; i++) {
                uint64_t v = atomic_load_explicit(&rs->cls[i], memory_order_relaxed);
                cls[i] += v;
                any |= v != 0;
            }
        }
        if (!any)
            continue;
        for (int st = 0; st < 1000; st++) {
            if (counts[st]) {
                puts_(b, "moongate_requests_total{route=\"");
                put_label(b, names[id]);
                putf(b, "\",status=\"%d\"} %llu\n", st, (unsigned long long)counts[st]);
            }
            if (st % 100 == 99 && cls[st / 100]) {
                puts_(b, "moongate_requests_total{route=\"");
                put_label(b, names[id]);
                putf(b, "\",status=\"%dxx\"} %llu\n", st / 100,
                     (unsigned long long)cls[st / 100]);
            }
        }
    }
}

/* moongate_mirror_requests_total{route,result} and
 * moongate_mirror_responses_total{route,code_class}, for the routes whose
 * mirror made or dropped a copy (in route id order). Under `lock`. */
static void put_mirrors(sbuf_t *b)
{
    static const char *const req = "moongate_mirror_requests_total";
    static const char *const resp = "moongate_mirror_responses_total";
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            putf(b, "# HELP %s Copies of requests to a route's mirror, by what became of "
                    "them.\n# TYPE %s counter\n", req, req);
        else
            putf(b, "# HELP %s Answers to mirror copies, by status class (error: none "
                    "came).\n# TYPE %s counter\n", resp, resp);
        for (uint32_t id = 0; id < MAX_ROUTES; id++) {
            if (id == nnames)
                id = OTHER_ID;
            uint64_t v[NCLASSES] = { 0 }, any = 0;
            int n = pass == 0 ? MIRROR_RESULTS : NCLASSES;
            for (int w = 0; w < nshards; w++) {
                chunk_t *c = atomic_load_explicit(&shards[w]->chunks[id / CHUNK_ROUTES],
                                                  memory_order_acquire);
                if (!c)
                    continue;
                const route_stats_t *rs = &c->r[id % CHUNK_ROUTES];
                for (int i = 0; i < n; i++) {
                    v[i] += atomic_load_explicit(pass == 0 ? &rs->mirror[i] : &rs->mirror_cls[i],
                                                 memory_order_relaxed);
                    any |= v[i];
                }
            }
            for (int i = 0; any && i < n; i++) {
                int k = pass == 0 ? i : (i + 1) % NCLASSES; /* 1xx..9xx, then error */
                if (!v[k])
                    continue;
                putf(b, "%s{route=\"", pass == 0 ? req : resp);
                put_label(b, names[id]);
                if (pass == 0)
                    putf(b, "\",result=\"%s\"} %llu\n", mg_mirror_result_name(k + 1),
                         (unsigned long long)v[k]);
                else if (k)
                    putf(b, "\",code_class=\"%dxx\"} %llu\n", k, (unsigned long long)v[k]);
                else
                    putf(b, "\",code_class=\"error\"} %llu\n", (unsigned long long)v[k]);
            }
        }
    }
}

/* moongate_hook_calls_total and moongate_hook_seconds_total, per hook id
 * that ran (in id order). Under `lock`. */
static void put_hooks(sbuf_t *b)
{
    static const char *const names_[2] = { "moongate_hook_calls_total",
                                            "moongate_hook_seconds_total" };
    static const char *const help[2] = {
        "Hook calls that returned, by phase and policy.",
        "Time hooks ran (wall clock of the Lua run, waits left out), by phase and policy.",
    };
    for (int k = 0; k < 2; k++) {
        putf(b, "# HELP %s %s\n# TYPE %s counter\n", names_[k], help[k], names_[k]);
        for (uint32_t id = 0; id < nhnames; id++) {
            uint64_t calls = 0, ns = 0;
            for (int w = 0; w < nshards; w++) {
                calls += atomic_load_explicit(&shards[w]->hooks[id].calls, memory_order_relaxed);
                ns += atomic_load_explicit(&shards[w]->hooks[id].ns, memory_order_relaxed);
            }
            if (!calls)
                continue;
            puts_(b, names_[k]);
            puts_(b, "{phase=\"");
            put_label(b, hnames[id][0]);
            puts_(b, "\",policy=\"");
            put_label(b, hnames[id][1]);
            if (k == 0)
                putf(b, "\"} %llu\n", (unsigned long long)calls);
            else
                putf(b, "\"} %llu.%09llu\n", (unsigned long long)(ns / 1000000000),
                     (unsigned long long)(ns % 1000000000));
        }
    }
}

/* OpenMetrics names a counter's family without the `_total` its samples
 * carry: the HELP and TYPE lines of such counters in the text format are
 * rewritten, the rest is the same. In place (lines only get shorter). */
static void counters_to_openmetrics(sbuf_t *b)
{
    static const char help[] = "# HELP ", type[] = "# TYPE ";
    char *in = b->p, *end = b->p + b->len, *out = b->p;
    while (in < end) {
        char *eol = memchr(in, '\n', (size_t)(end - in));
        size_t n = eol ? (size_t)(eol - in) + 1 : (size_t)(end - in);
        int is_help = n > 7 && memcmp(in, help, 7) == 0, is_type = n > 7 && !memcmp(in, type, 7);
        char *name = in + 7, *sp = (is_help || is_type) ? memchr(name, ' ', n - 7) : NULL;
        int cut = 0;
        if (sp && sp - name > 6 && memcmp(sp - 6, "_total", 6) == 0) {
            size_t nl = (size_t)(sp - name);
            /* the TYPE line (this one, or the one after a HELP) says counter */
            const char *t = is_type ? in : eol ? eol + 1 : end;
            cut = t + 7 + nl + 8 <= end && memcmp(t, type, 7) == 0 &&
                  memcmp(t + 7, name, nl) == 0 && memcmp(t + 7 + nl, " counter", 8) == 0;
        }
        if (cut) {
            size_t head = (size_t)(sp - 6 - in);
            memmove(out, in, head);
            memmove(out + head, sp, n - (size_t)(sp - in));
            out += n - 6;
        } else {
            memmove(out, in, n);
            out += n;
        }
        in += n;
    }
    b->len = (size_t)(out - b->p);
    if (b->p)
        b->p[b->len] = '\0';
}

static char *render(const char *extra, size_t *len, const render_t *how);

char *mg_metrics_render(const char *extra, size_t *len)
{
    return render(extra, len, &(render_t){ 0 });
}

char *mg_metrics_render_openmetrics(const char *extra, size_t *len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    render_t how = { .om = 1, .unix_offset = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec -
                                              (int64_t)uv_hrtime() };
    return render(extra, len, &how);
}

static char *render(const char *extra, size_t *len, const render_t *how)
{
    sbuf_t b = { 0 };
    uint32_t *ids = malloc(sizeof(*ids) * MAX_ROUTES);
    uint64_t *counts = malloc(sizeof(*counts) * (1000 + NCLASSES));
    if (!ids || !counts) {
        b.failed = 1;
        goto out;
    }
    /* the lock keeps names and shards still; workers never take it */
    pthread_mutex_lock(&lock);
    put_requests(&b, ids, counts);
    put_upstream_tls(&b);
    put_hist(&b, "moongate_request_duration_seconds",
             "Time from the start of a request to the end of its response.",
             offsetof(shard_t, total), offsetof(shard_t, ex_total), how);
    put_hist(&b, "moongate_upstream_duration_seconds",
             "Time spent waiting for upstreams, for requests that reached one.",
             offsetof(shard_t, upstream), offsetof(shard_t, ex_upstream), how);
    put_targets(&b);
    put_mirrors(&b);
    put_hooks(&b);
    int64_t conns = 0;
    uint64_t cache[CACHE_RESULTS] = { 0 };
    for (int w = 0; w < nshards; w++) {
        conns += atomic_load_explicit(&shards[w]->conns, memory_order_relaxed);
        for (int i = 0; i < CACHE_RESULTS; i++)
            cache[i] += atomic_load_explicit(&shards[w]->cache[i], memory_order_relaxed);
    }
    pthread_mutex_unlock(&lock);
    putf(&b,
         "# HELP moongate_connections_open Client connections open.\n"
         "# TYPE moongate_connections_open gauge\n"
         "moongate_connections_open %lld\n",
         (long long)(conns > 0 ? conns : 0));
    puts_(&b, "# HELP moongate_cache_requests_total Requests on cached routes, by what the "
              "cache did.\n# TYPE moongate_cache_requests_total counter\n");
    for (int i = 1; i < CACHE_RESULTS; i++)
        putf(&b, "moongate_cache_requests_total{result=\"%s\"} %llu\n", mg_cache_state_name(i),
             (unsigned long long)cache[i]);
    putf(&b,
         "# HELP moongate_cache_stored_total Answers kept by the response cache.\n"
         "# TYPE moongate_cache_stored_total counter\n"
         "moongate_cache_stored_total %llu\n",
         (unsigned long long)cache[0]);
    put_results(&b, "moongate_reloads_total", "Config reloads, by result.", &reloads_ok,
                &reloads_failed);
    put_results(&b, "moongate_tls_handshakes_total",
                "TLS handshakes on client connections, by result.", &tls_ok, &tls_failed);
    if (extra)
        puts_(&b, extra);
    if (how->om) {
        counters_to_openmetrics(&b);
        puts_(&b, "# EOF\n");
    }
out:
    free(ids);
    free(counts);
    if (b.failed) {
        free(b.p);
        *len = 0;
        return NULL;
    }
    *len = b.len;
    return b.p;
}
