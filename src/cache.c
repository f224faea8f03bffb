/* cache.c: the response cache (see cache.h).
 *
 * Freshness follows RFC 9111 for a shared cache: the upstream's
 * Cache-Control s-maxage, else max-age, else Expires - Date, else the
 * route's ttl; "no-store", "private" and "no-cache" answers, answers with
 * Set-Cookie and answers whose Vary names a header the route does not vary
 * on are not kept. An answer is kept past its freshness for the route's
 * `stale` time (or the upstream's stale-if-error, whichever is longer,
 * unless it said must-revalidate): then a failing upstream (refused,
 * reset, timed out) is answered with it.
 *
 * Per-request state: a request on a cache route (or whose hooks called
 * req:skip_cache() or req:cache_key()) gets an mg_cache_req_t from its
 * arena, reached through r->cache; no other file reads or writes it but
 * through the functions of cache.h. Ownership: its entry (a copy of a kept
 * answer) and its capture (a fetched answer being copied) are malloc'd and
 * belong to the request until mg_cache_release(). The key lives in the
 * request's arena.
 */
#include "cache.h"
#include "header_names.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "metrics.h"
#include "mg_ffi.h"
#include "http.h"
#include "request.h"
#include "upstream.h"
#include "worker.h"
#include "redis.h"
#include "shdict.h"

/* "mgC" + the format's version: 2 keeps fields (below), 1 kept HTTP/1
 * header lines; an answer of another version (an older gateway's, in a
 * shared Redis) is a miss. */
#define BLOB_MAGIC 0x6d674302u
#define FIRST_READ 16384       /* first guess at a kept answer's size */
#define MAX_HEAD_FIELDS 8192   /* header fields kept with an answer, bytes */

/* A request's cache state (r->cache, in its arena). */
struct mg_cache_req_s {
    uint8_t state;             /* MG_CACHE_* */
    uint8_t looked;            /* mg_cache_lookup ran */
    uint8_t skip;              /* a hook called req:skip_cache() */
    uint8_t unsafe;            /* POST/PUT/...: removes the GET answer kept */
    uint8_t lock_owner;        /* fetches it for every miss of its key */
    uint8_t waiting;           /* in the worker's cache_waiters */
    uint8_t updating;          /* served stale while another fetches */
    uint8_t revalidating;      /* asks the upstream if its answer still holds */
    char *key;                 /* arena */
    size_t key_len;
    const char *key_extra;     /* req:cache_key() parts (arena) */
    size_t key_extra_len;
    struct mg_cache_entry_s *entry;     /* a kept answer (malloc'd) */
    struct mg_cache_capture_s *capture; /* a fetched one being kept */
    mg_link_t wait;            /* in the worker's cache_waiters ... */
    mg_request_t *r;           /* ... for this request */
    uint64_t wait_until;       /* wall clock ms: then it fetches itself */
    struct mg_redis_op_s *op;  /* a Redis GET it waits for (redis.h) */
};

/* Reads of a request without cache state see this one: all zero. */
static const mg_cache_req_t no_state;

static const mg_cache_req_t *cs(const mg_request_t *r) { return r->cache ? r->cache : &no_state; }

/* r's cache state, made on first use (NULL when out of memory). */
static mg_cache_req_t *cache_new(mg_request_t *r)
{
    if (!r->cache) {
        r->cache = mg_request_alloc(r, sizeof(*r->cache));
        if (r->cache) {
            memset(r->cache, 0, sizeof(*r->cache));
            r->cache->r = r;
            mg_list_init(&r->cache->wait);
        }
    }
    return r->cache;
}

/* The start of a kept answer; its header fields and the body follow, the
 * answer as no wire format frames it: each field is its name's length and
 * its value's (two little-endian uint16), the name, the value. */
typedef struct blob_head_s {
    uint32_t magic;
    uint16_t status;
    uint16_t nheaders;
    uint64_t stored_ms; /* wall clock ms when it was kept */
    uint64_t fresh_ms;  /* ... until which it is fresh */
    uint64_t stale_ms;  /* ... until which it may stand in for a failure */
    uint32_t age;       /* seconds it was already old when it arrived */
    uint32_t lines_len; /* the fields' bytes */
    uint32_t body_len;
    uint32_t pad;
} blob_head_t;

struct mg_cache_entry_s {
    char *blob; /* malloc'd: blob_head_t, fields, body */
    blob_head_t h;
    const char *body;
    uint8_t *htok; /* each field's token (header_names.h), after headers */
    uint32_t nheaders;
    mg_header_t headers[]; /* spans into blob, for res:header() and serving */
};

#define FIELD_PREFIX 4 /* a kept field's two lengths */

struct mg_cache_capture_s {
    char *buf; /* the blob being built */
    size_t len, cap;
    size_t limit; /* longer than this: not kept */
};

/* Wall clock: answers kept in Redis are read by other gateways. */
static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int ieq(const char *a, size_t al, const char *lit, size_t ll)
{
    return al == ll && strncasecmp(a, lit, ll) == 0;
}

/* ---- the key ------------------------------------------------------------ */

static char *key_put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    o[n] = '\n';
    return o + n + 1;
}

/* A request header as the key holds it: nothing when absent, else "="
 * and every field line (as hooks left them) joined with ", ", the combined
 * value RFC 9111 4.1 compares; so an empty header and no header are
 * different keys. Writes at o unless o is NULL; returns the length. */
static size_t key_header(mg_request_t *r, const char *name, char *o)
{
    size_t nlen = strlen(name), n = 0, l;
    const char *p;
    for (int i = 0; mg_request_header(r, name, nlen, i, &p, &l); i++) {
        if (o) {
            if (i == 0) {
                o[n] = '=';
            } else {
                o[n] = ',';
                o[n + 1] = ' ';
            }
            memcpy(o + n + (i ? 2 : 1), p, l);
        }
        n += (i ? 2 : 1) + l;
    }
    return n;
}

/* route, upstream, host (lower case), path?query, vary values, the URL and
 * method override headers when the upstream gets them (proxy.c), hook
 * parts; each ends with '\n' (none of them can hold one). */
static int build_key(mg_request_t *r)
{
    const mg_route_t *route = r->route;
    const mg_route_cache_t *rc = route->cache;
    const mg_config_t *cfg = r->g->cfg;
    const mg_upstream_t *upc = &cfg->upstreams[mg_request_upstream(r)];
    const char *host = "", *q = r->query;
    size_t host_len = 0, q_len = r->query_len;
    mg_request_header(r, "host", 4, 0, &host, &host_len);
    if (r->new_query) {
        q = r->new_query;
        q_len = r->new_query_len;
    }
    size_t need = strlen(route->name) + strlen(upc->name) + host_len + r->path_len + q_len + 2 +
                  cs(r)->key_extra_len + 8 + rc->nvary;
    for (size_t i = 0; i < rc->nvary; i++)
        need += key_header(r, rc->vary[i], NULL);
    for (int t = 1; upc->override_headers && t < MG_HN__COUNT; t++)
        if (mg_hname_flags(t) & MG_HNF_OVERRIDE)
            need += 1 + key_header(r, mg_hnames[t].name, NULL);
    if (need + 1 > MG_SHDICT_MAX_KEY)
        return -1;
    char *k = mg_request_alloc(r, need + 1), *o = k; /* + the lock key's byte */
    if (!k)
        return -1;
    o = key_put(o, route->name, strlen(route->name));
    o = key_put(o, upc->name, strlen(upc->name));
    for (size_t i = 0; i < host_len; i++)
        *o++ = (char)tolower((unsigned char)host[i]);
    *o++ = '\n';
    memcpy(o, r->path, r->path_len);
    o += r->path_len;
    if (q_len > 0 && q[0] != '?')
        *o++ = '?';
    o = key_put(o, q, q_len);
    for (size_t i = 0; i < rc->nvary; i++) {
        o += key_header(r, rc->vary[i], o);
        *o++ = '\n';
    }
    /* the table's MG_HNF_OVERRIDE names (header_names.c), in its order */
    for (int t = 1; upc->override_headers && t < MG_HN__COUNT; t++) {
        if (!(mg_hname_flags(t) & MG_HNF_OVERRIDE))
            continue;
        o += key_header(r, mg_hnames[t].name, o);
        *o++ = '\n';
    }
    if (cs(r)->key_extra_len) {
        memcpy(o, cs(r)->key_extra, cs(r)->key_extra_len);
        o += cs(r)->key_extra_len;
    }
    r->cache->key = k;
    r->cache->key_len = (size_t)(o - k);
    return 0;
}

/* ---- looking up --------------------------------------------------------- */

static int method_is(const mg_request_t *r, const char *m, size_t n)
{
    const char *p = r->new_method ? r->new_method : mg_request_data(r, r->method);
    size_t l = r->new_method ? r->new_method_len : r->method.len;
    return l == n && memcmp(p, m, n) == 0;
}

/* Did the client send this header? Asked of what arrived, not of what
 * hooks made of it: a policy that turns Authorization into X-User and
 * removes it still fetched a per-user answer (RFC 9111 3.5). */
static int client_sent(const mg_request_t *r, const char *name, size_t n)
{
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_span_t hn = r->headers[i].name;
        if (hn.len == n && strncasecmp(mg_request_data(r, hn), name, n) == 0)
            return 1;
    }
    return 0;
}

static uint16_t ld16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)(u[0] | u[1] << 8);
}

static char *st16(char *o, size_t v)
{
    o[0] = (char)(v & 0xff);
    o[1] = (char)(v >> 8);
    return o + 2;
}

/* A kept answer's bytes (malloc'd, taken over) as an entry, or NULL. */
static struct mg_cache_entry_s *entry_from_blob(char *blob, size_t len)
{
    blob_head_t h;
    if (len < sizeof(h)) {
        free(blob);
        return NULL;
    }
    memcpy(&h, blob, sizeof(h));
    if (h.magic != BLOB_MAGIC || (size_t)h.lines_len + h.body_len != len - sizeof(h)) {
        free(blob);
        return NULL;
    }
    struct mg_cache_entry_s *e =
        malloc(sizeof(*e) + h.nheaders * (sizeof(mg_header_t) + 1));
    if (!e) {
        free(blob);
        return NULL;
    }
    e->blob = blob;
    e->h = h;
    e->htok = (uint8_t *)(e->headers + h.nheaders);
    e->body = blob + sizeof(h) + h.lines_len;
    /* header spans, for hooks and serving (offsets from the blob's start) */
    e->nheaders = 0;
    const char *p = blob + sizeof(h), *end = e->body;
    while (e->nheaders < h.nheaders) {
        size_t nl = end - p >= FIELD_PREFIX ? ld16(p) : 0, vl = nl ? ld16(p + 2) : 0;
        if (nl == 0 || (size_t)(end - p) < FIELD_PREFIX + nl + vl) {
            /* not a field of ours (a corrupt or foreign value under the
             * key, e.g. in a shared Redis): a miss */
            free(blob);
            free(e);
            return NULL;
        }
        p += FIELD_PREFIX;
        mg_header_t *hd = &e->headers[e->nheaders];
        hd->name = (mg_span_t){ (uint32_t)(p - blob), (uint32_t)nl };
        hd->value = (mg_span_t){ (uint32_t)(p + nl - blob), (uint32_t)vl };
        e->htok[e->nheaders++] = (uint8_t)mg_hname_lookup(p, nl);
        p += nl + vl;
    }
    if (p != end) {
        free(blob);
        free(e);
        return NULL;
    }
    return e;
}

static struct mg_cache_entry_s *read_entry(mg_request_t *r, mg_shdict_t *d)
{
    size_t cap = FIRST_READ, len = cap;
    char *blob = malloc(cap);
    double num;
    int type;
    if (!blob)
        return NULL;
    while ((type = mg_ffi_shdict_get(d, cs(r)->key, cs(r)->key_len, &num, blob, &len)) ==
           -ENOBUFS) {
        char *bigger = realloc(blob, len);
        if (!bigger) {
            free(blob);
            return NULL;
        }
        blob = bigger;
        cap = len;
    }
    if (type != MG_SHDICT_STRING) {
        free(blob);
        return NULL;
    }
    return entry_from_blob(blob, len);
}

/* ---- one fetch for many ---------------------------------------------------
 * A miss takes a lock in the dictionary (the key plus one byte, added only
 * if absent, for `lock` ms): its request fetches the answer, and the other
 * misses of that key, in every worker, wait until the lock is gone, then
 * look again. The worker polls for its waiters every LOCK_POLL_MS, and at
 * once when a request of its own lets a lock go. */

#define LOCK_POLL_MS 5

static int lock_take(mg_request_t *r, mg_shdict_t *d, uint64_t ms)
{
    const char *err;
    cs(r)->key[cs(r)->key_len] = '\x01';
    return mg_ffi_shdict_set(d, cs(r)->key, cs(r)->key_len + 1, MG_SHDICT_NUMBER, 1, NULL,
                             0, ms, MG_SHDICT_ADD, &err);
}

static int lock_held(mg_request_t *r, mg_shdict_t *d)
{
    double num;
    size_t len = 0;
    return mg_ffi_shdict_get(d, cs(r)->key, cs(r)->key_len + 1, &num, NULL, &len) != 0;
}

static void on_lock_poll(uv_timer_t *t);

/* The request that took the lock is done with it (stored, will not store,
 * or ended): the others may look again. */
static void lock_release(mg_request_t *r)
{
    if (!cs(r)->lock_owner)
        return;
    r->cache->lock_owner = 0;
    mg_ffi_shdict_delete(r->route->cache->dict, cs(r)->key, cs(r)->key_len + 1);
    mg_worker_t *w = r->w;
    if (!mg_list_empty(&w->cache_waiters))
        uv_timer_start(&w->cache_timer, on_lock_poll, 0, LOCK_POLL_MS);
}

static void wait_stop(mg_request_t *r)
{
    if (cs(r)->waiting) {
        r->cache->waiting = 0;
        mg_list_remove(&r->cache->wait);
    }
}

static void free_entry(struct mg_cache_entry_s *e)
{
    if (e) {
        free(e->blob);
        free(e);
    }
}

static void on_lock_poll(uv_timer_t *t)
{
    mg_worker_t *w = t->data;
    uint64_t now = wall_ms();
    mg_link_t *l = w->cache_waiters.next;
    while (l != &w->cache_waiters) {
        mg_request_t *r = mg_container_of(l, mg_cache_req_t, wait)->r;
        mg_shdict_t *d = r->route->cache->dict;
        l = l->next; /* r may end below */
        if (now < cs(r)->wait_until && lock_held(r, d))
            continue;
        wait_stop(r);
        struct mg_cache_entry_s *e = read_entry(r, d);
        if (e && now < e->h.fresh_ms) {
            free_entry(cs(r)->entry);
            r->cache->entry = e;
            r->cache->state = MG_CACHE_HIT;
            r->pipe->cache_ready(r, 1);
            continue;
        }
        free_entry(e);
        /* not kept (or the fetch takes too long): fetch it ourselves,
         * without the lock, so that answers that are never kept do not
         * make requests queue up behind each other */
        r->pipe->cache_ready(r, 0);
    }
    if (mg_list_empty(&w->cache_waiters))
        uv_timer_stop(t);
}

void mg_cache_worker_init(mg_worker_t *w)
{
    mg_list_init(&w->cache_waiters);
    uv_timer_init(&w->loop, &w->cache_timer);
    w->cache_timer.data = w;
}

void mg_cache_worker_close(mg_worker_t *w)
{
    if (!uv_is_closing((uv_handle_t *)&w->cache_timer))
        uv_close((uv_handle_t *)&w->cache_timer, NULL);
}

/* ---- answers kept in Redis ------------------------------------------------
 * Under "mgcache:" + the key. The request waits for a GET before going
 * upstream (like a wait for a lock) and the fetched answer is SET with PX;
 * DEL invalidates. A Redis that fails or is slower than its timeout makes
 * a miss: the upstream answers, nothing is lost. */

#define REDIS_PREFIX "mgcache:"

static int has_validator(const struct mg_cache_entry_s *e);

/* An expired answer still within its `stale` time is held: to stand in
 * for a failing upstream, to serve while another request fetches, and to
 * be revalidated (a conditional request) when it has a validator. */
static void keep_expired(mg_request_t *r, struct mg_cache_entry_s *e, uint64_t now)
{
    if (now >= e->h.stale_ms) {
        free_entry(e);
        return;
    }
    r->cache->entry = e;
    r->cache->revalidating = !r->head_method && has_validator(e);
}

static mg_redis_t *redis_client(const mg_route_cache_t *rc)
{
    const char *err;
    size_t pl = rc->redis_password ? strlen(rc->redis_password) : 0;
    size_t ul = rc->redis_username ? strlen(rc->redis_username) : 0;
    return mg_ffi_redis_client(rc->redis_host, strlen(rc->redis_host), rc->redis_port,
                               rc->redis_username, ul, rc->redis_password, pl, rc->redis_db, rc->redis_pool,
                               rc->redis_connect_timeout, rc->redis_timeout, rc->redis_tls,
                               &err);
}

/* Sends `cmd` <prefixed key> [value [PX ms]]; returns the op or NULL. */
static mg_redis_op_t *redis_send(mg_request_t *r, const char *cmd, const char *value, size_t vlen,
                                 uint64_t px, mg_redis_done_fn done)
{
    const mg_route_cache_t *rc = r->route->cache;
    mg_redis_t *rs = redis_client(rc);
    size_t kl = sizeof(REDIS_PREFIX) - 1 + cs(r)->key_len;
    char *k = rs ? mg_request_alloc(r, kl) : NULL, ms[24];
    if (!k)
        return NULL;
    memcpy(k, REDIS_PREFIX, sizeof(REDIS_PREFIX) - 1);
    memcpy(k + sizeof(REDIS_PREFIX) - 1, cs(r)->key, cs(r)->key_len);
    const char *argv[5] = { cmd, k, value, "PX", ms };
    size_t lens[5] = { strlen(cmd), kl, vlen, 2, 0 };
    lens[4] = (size_t)snprintf(ms, sizeof(ms), "%llu", (unsigned long long)px);
    const char *err;
    return mg_redis_command_c(rs, value ? 5 : 2, argv, lens, done, r, &err);
}

static void on_redis_get(void *arg, const struct redisReply *reply, const char *why)
{
    mg_request_t *r = arg;
    (void)why; /* a miss either way; the Redis client logs its failures */
    r->cache->op = NULL;
    struct mg_cache_entry_s *e = NULL;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        char *blob = malloc(reply->len);
        if (blob) {
            memcpy(blob, reply->str, reply->len);
            e = entry_from_blob(blob, reply->len);
        }
    }
    int serve = 0;
    uint64_t now = wall_ms();
    if (e && now < e->h.fresh_ms) {
        r->cache->entry = e;
        r->cache->state = MG_CACHE_HIT;
        serve = 1;
    } else if (e) {
        r->cache->state = MG_CACHE_EXPIRED;
        keep_expired(r, e, now);
    }
    r->pipe->cache_ready(r, serve);
}

/* A miss: fetch it (taking the lock), or wait for whoever fetches it. */
static int miss(mg_request_t *r, const mg_route_cache_t *rc)
{
    if (rc->lock == 0 || r->head_method)
        return MG_CACHE_GO;
    int taken = lock_take(r, rc->dict, rc->lock);
    if (taken == 0) {
        r->cache->lock_owner = 1;
        return MG_CACHE_GO;
    }
    if (taken != -EEXIST)
        return MG_CACHE_GO;
    if (cs(r)->entry) {
        /* someone is fetching it already: the expired answer will do
         * meanwhile (the route allows stale answers) */
        r->cache->state = MG_CACHE_STALE;
        r->cache->updating = 1;
        return MG_CACHE_SERVE;
    }
    mg_worker_t *w = r->w;
    r->cache->waiting = 1;
    r->cache->wait_until = wall_ms() + rc->lock;
    mg_list_push(&w->cache_waiters, &r->cache->wait);
    if (!uv_is_active((uv_handle_t *)&w->cache_timer))
        uv_timer_start(&w->cache_timer, on_lock_poll, LOCK_POLL_MS, LOCK_POLL_MS);
    return MG_CACHE_WAIT;
}

int mg_cache_lookup(mg_request_t *r)
{
    const mg_route_cache_t *rc = r->route->cache;
    if (!cache_new(r))
        return MG_CACHE_GO; /* out of memory: no cache for it */
    int get = method_is(r, "GET", 3), head = method_is(r, "HEAD", 4);
    r->cache->looked = 1;
    if (!get && !head) {
        /* an unsafe method invalidates what GET would find (RFC 9111 4.4) */
        if (!method_is(r, "OPTIONS", 7) && !method_is(r, "TRACE", 5) && build_key(r) == 0)
            r->cache->unsafe = 1;
        return 0;
    }
    r->cache->state = MG_CACHE_BYPASS;
    /* Range as the upstream will get it; credentials as the client sent them */
    const char *range;
    size_t range_len;
    if ((!rc->dict && !rc->redis_host) || cs(r)->skip || r->has_body || r->is_upgrade ||
        mg_request_header(r, "range", 5, 0, &range, &range_len) ||
        (!rc->authorized &&
         (client_sent(r, "authorization", 13) || client_sent(r, "cookie", 6))) ||
        build_key(r) < 0)
        return 0;
    r->cache->state = MG_CACHE_MISS;
    if (rc->redis_host) {
        r->cache->op = redis_send(r, "GET", NULL, 0, 0, on_redis_get);
        return cs(r)->op ? MG_CACHE_WAIT : MG_CACHE_GO;
    }
    struct mg_cache_entry_s *e = read_entry(r, rc->dict);
    if (!e)
        return miss(r, rc);
    uint64_t now = wall_ms();
    if (now < e->h.fresh_ms) {
        r->cache->entry = e;
        r->cache->state = MG_CACHE_HIT;
        return MG_CACHE_SERVE;
    }
    r->cache->state = MG_CACHE_EXPIRED;
    keep_expired(r, e, now);
    return miss(r, rc);
}

int mg_cache_can_serve_stale(const mg_request_t *r)
{
    return cs(r)->entry && cs(r)->state == MG_CACHE_EXPIRED &&
           wall_ms() < cs(r)->entry->h.stale_ms;
}

/* ---- serving a kept answer ---------------------------------------------- */

int mg_cache_entry_status(const mg_request_t *r)
{
    return cs(r)->entry ? cs(r)->entry->h.status : 0;
}

const mg_header_t *mg_cache_entry_headers(const mg_request_t *r, uint32_t *n, const char **data)
{
    if (!cs(r)->entry) {
        *n = 0;
        *data = NULL;
        return NULL;
    }
    *n = cs(r)->entry->nheaders;
    *data = cs(r)->entry->blob;
    return cs(r)->entry->headers;
}

/* A kept header's value, or NULL. */
static const char *entry_header(const struct mg_cache_entry_s *e, const char *name, size_t n,
                                size_t *len)
{
    for (uint32_t i = 0; i < e->nheaders; i++)
        if (ieq(e->blob + e->headers[i].name.off, e->headers[i].name.len, name, n)) {
            *len = e->headers[i].value.len;
            return e->blob + e->headers[i].value.off;
        }
    return NULL;
}

/* Does an If-None-Match list (v) name the entity tag etag? Weak
 * comparison, as RFC 9110 13.1.2 asks for. */
static int etag_listed(const char *v, size_t vl, const char *etag, size_t el)
{
    if (el >= 2 && etag[0] == 'W' && etag[1] == '/') {
        etag += 2;
        el -= 2;
    }
    size_t at = 0;
    while (at < vl) {
        while (at < vl && (v[at] == ' ' || v[at] == '\t' || v[at] == ','))
            at++;
        if (at < vl && v[at] == '*')
            return 1;
        if (at + 1 < vl && v[at] == 'W' && v[at + 1] == '/')
            at += 2;
        size_t st = at;
        if (at < vl && v[at] == '"') {
            const char *q = memchr(v + at + 1, '"', vl - at - 1);
            at = q ? (size_t)(q - v) + 1 : vl;
        } else {
            while (at < vl && v[at] != ',')
                at++;
        }
        if (at - st == el && memcmp(v + st, etag, el) == 0)
            return 1;
    }
    return 0;
}

/* Would the client's conditional headers make this a 304 (RFC 9110 13.2.2,
 * If-Modified-Since compared as the exact Last-Modified text)? */
static int not_modified(mg_request_t *r)
{
    const struct mg_cache_entry_s *e = cs(r)->entry;
    const char *v, *kept;
    size_t vl, kl;
    if (mg_request_header(r, "if-none-match", 13, 0, &v, &vl))
        return (kept = entry_header(e, "etag", 4, &kl)) != NULL && etag_listed(v, vl, kept, kl);
    if (mg_request_header(r, "if-modified-since", 17, 0, &v, &vl))
        return (kept = entry_header(e, "last-modified", 13, &kl)) != NULL && kl == vl &&
               memcmp(kept, v, vl) == 0;
    return 0;
}

void mg_cache_serve(mg_request_t *r)
{
    const struct mg_cache_entry_s *e = cs(r)->entry;
    if (r->response_started) {
        r->proto->abort(r);
        return;
    }
    uint64_t now = wall_ms();
    int status = r->res_status ? r->res_status : e->h.status;
    if (status == 200 && !r->res_body_set && not_modified(r))
        status = 304;
    /* the kept fields the hooks did not replace, their SET and ADD edits,
     * then Age, Cache-Status and X-Request-Id */
    size_t max = e->nheaders + (size_t)r->nres_edits + 3, n = 0;
    mg_hfield_t *f = mg_request_alloc(r, max * sizeof(*f));
    if (!f) {
        mg_request_respond_error(r, 503, "out of memory");
        return;
    }
    for (uint32_t i = 0; i < e->nheaders; i++) {
        const mg_header_t *h = &e->headers[i];
        const char *nm = e->blob + h->name.off;
        if (r->nres_edits &&
            mg_edits_replace(r->res_edits, r->nres_edits, e->htok[i], nm, h->name.len))
            continue;
        f[n++] = mg_hfield(nm, h->name.len, e->blob + h->value.off, h->value.len, e->htok[i]);
    }
    for (int i = 0; i < r->nres_edits; i++) {
        const mg_edit_t *ed = &r->res_edits[i];
        if (ed->op != MG_EDIT_REMOVE)
            f[n++] = mg_hfield(ed->name, ed->name_len, ed->value, ed->value_len, ed->tok);
    }
    char age[24], cstat[96];
    int al = snprintf(age, sizeof(age), "%llu",
                      (unsigned long long)(e->h.age + (now - e->h.stored_ms) / 1000));
    int cl;
    if (cs(r)->state == MG_CACHE_HIT)
        cl = snprintf(cstat, sizeof(cstat), "moongate; hit; ttl=%lld",
                      (long long)((e->h.fresh_ms - now) / 1000));
    else if (cs(r)->state == MG_CACHE_REVALIDATED)
        cl = snprintf(cstat, sizeof(cstat), "moongate; fwd=stale; fwd-status=304; ttl=%lld",
                      (long long)(e->h.fresh_ms > now ? (e->h.fresh_ms - now) / 1000 : 0));
    else if (cs(r)->updating)
        cl = snprintf(cstat, sizeof(cstat), "moongate; hit; ttl=-%lld; detail=updating",
                      (long long)((now - e->h.fresh_ms + 999) / 1000));
    else
        cl = snprintf(cstat, sizeof(cstat), "moongate; hit; ttl=-%lld; detail=stale-if-error",
                      (long long)((now - e->h.fresh_ms + 999) / 1000));
    f[n++] = mg_hfield("Age", 3, age, (size_t)al, MG_HN_OTHER);
    f[n++] = mg_hfield("Cache-Status", 12, cstat, (size_t)cl, MG_HN_OTHER);
    f[n++] = mg_hfield("X-Request-Id", 12, r->request_id, r->request_id_len, MG_HN_X_REQUEST_ID);
    const char *body = r->res_body_set ? r->res_body : e->body;
    size_t body_len = r->res_body_set ? r->res_body_len : e->h.body_len;
    if (!mg_status_has_body(status))
        body_len = 0;
    mg_resp_t res = { .status = status, .headers = f, .nheaders = n, .body_len = body_len };
    if (mg_request_send_whole(r, &res, body, body_len) < 0)
        mg_request_respond_error(r, 502, "cached response head too large");
}

size_t mg_cache_status_value(const mg_request_t *r, char *out, size_t cap)
{
    const char *fwd;
    switch (cs(r)->state) {
    case MG_CACHE_MISS: fwd = "uri-miss"; break;
    case MG_CACHE_EXPIRED: fwd = "stale"; break;
    case MG_CACHE_BYPASS: fwd = "bypass"; break;
    default: return 0;
    }
    int n = snprintf(out, cap, "moongate; fwd=%s%s", fwd, cs(r)->capture ? "; stored" : "");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- keeping a fetched answer ------------------------------------------- */

/* The parts of Cache-Control that matter to a shared cache. */
typedef struct cache_control_s {
    int no_store;        /* no-store, private or no-cache */
    int must_revalidate; /* no stale answers */
    long long max_age;   /* -1 absent */
    long long s_maxage;  /* -1 absent */
    long long stale_if_error;
} cache_control_t;

static long long directive_seconds(const char *v, size_t n)
{
    if (n > 0 && v[0] == '"') {
        v++;
        n = n >= 2 ? n - 2 : 0;
    }
    long long s = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        if (s < 1000000000LL)
            s = s * 10 + (v[i] - '0');
    }
    return s;
}

static void parse_cache_control(const char *v, size_t vl, cache_control_t *cc)
{
    size_t at = 0;
    while (at < vl) {
        while (at < vl && (v[at] == ' ' || v[at] == '\t' || v[at] == ','))
            at++;
        size_t st = at;
        while (at < vl && v[at] != ',' && v[at] != '=')
            at++;
        size_t nend = at;
        while (nend > st && (v[nend - 1] == ' ' || v[nend - 1] == '\t'))
            nend--;
        const char *name = v + st;
        size_t nl = nend - st;
        const char *arg = "";
        size_t al = 0;
        if (at < vl && v[at] == '=') {
            at++;
            size_t ast = at;
            if (at < vl && v[at] == '"') {
                const char *q = memchr(v + at + 1, '"', vl - at - 1);
                at = q ? (size_t)(q - v) + 1 : vl;
            }
            while (at < vl && v[at] != ',')
                at++;
            size_t aend = at;
            while (aend > ast && (v[aend - 1] == ' ' || v[aend - 1] == '\t'))
                aend--;
            arg = v + ast;
            al = aend - ast;
        }
        if (ieq(name, nl, "no-store", 8) || ieq(name, nl, "private", 7) ||
            ieq(name, nl, "no-cache", 8))
            cc->no_store = 1;
        else if (ieq(name, nl, "must-revalidate", 15) || ieq(name, nl, "proxy-revalidate", 16))
            cc->must_revalidate = 1;
        else if (ieq(name, nl, "max-age", 7))
            cc->max_age = directive_seconds(arg, al);
        else if (ieq(name, nl, "s-maxage", 8))
            cc->s_maxage = directive_seconds(arg, al);
        else if (ieq(name, nl, "stale-if-error", 14))
            cc->stale_if_error = directive_seconds(arg, al);
    }
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") in seconds since the
 * epoch, or -1. */
static long long http_date(const char *v, size_t n)
{
    char buf[64];
    struct tm tm;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, v, n);
    buf[n] = 0;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    return (long long)timegm(&tm);
}

static int status_listed(const mg_route_cache_t *rc, int status)
{
    for (size_t i = 0; i < rc->nstatuses; i++)
        if (rc->statuses[i] == status)
            return 1;
    return 0;
}

static int vary_ok(const mg_route_cache_t *rc, const char *v, size_t vl)
{
    size_t at = 0, tl;
    const char *t;
    while (mg_token_next(v, vl, &at, &t, &tl)) {
        if (t[0] == '*')
            return 0;
        size_t i;
        for (i = 0; i < rc->nvary; i++)
            if (ieq(t, tl, rc->vary[i], strlen(rc->vary[i])))
                break;
        if (i == rc->nvary)
            return 0;
    }
    return 1;
}

/* Is header i of u one the cache keeps? (The gateway frames the body and
 * adds Age and X-Request-Id itself.) */
static int kept_header(mg_upconn_t *u, uint32_t i, mg_cache_forwarded_fn forwarded)
{
    const char *n = u->buf.data + u->headers[i].name.off;
    size_t l = u->headers[i].name.len;
    if (!forwarded(u, i))
        return 0;
    return !ieq(n, l, "content-length", 14) && !ieq(n, l, "age", 3) &&
           !ieq(n, l, "x-request-id", 12) && !ieq(n, l, "cache-status", 12);
}

/* A response header as the rules for keeping read it. */
typedef struct hdr_s {
    const char *n, *v;
    size_t nl, vl;
    int kept; /* a line of the kept answer */
} hdr_t;

/* Whether and how long a response with headers hs may be kept (RFC 9111
 * 3 and 4.2.1, as a shared cache); fills h's times, age, line count and
 * length. Returns 0, or -1 when it must not be kept. */
static int judge(const mg_route_cache_t *rc, const hdr_t *hs, size_t n, blob_head_t *h)
{
    cache_control_t cc = { .max_age = -1, .s_maxage = -1, .stale_if_error = -1 };
    long long expires = -2, date = -1, age = 0;
    size_t lines = 0;
    uint32_t nkept = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nm = hs[i].n, *v = hs[i].v;
        size_t nl = hs[i].nl, vl = hs[i].vl;
        if (ieq(nm, nl, "cache-control", 13))
            parse_cache_control(v, vl, &cc);
        else if (ieq(nm, nl, "pragma", 6) && vl >= 8 && strncasecmp(v, "no-cache", 8) == 0)
            cc.no_store = 1;
        else if (ieq(nm, nl, "set-cookie", 10))
            return -1;
        else if (ieq(nm, nl, "vary", 4) && !vary_ok(rc, v, vl))
            return -1;
        else if (ieq(nm, nl, "expires", 7))
            expires = http_date(v, vl);
        else if (ieq(nm, nl, "date", 4))
            date = http_date(v, vl);
        else if (ieq(nm, nl, "age", 3))
            age = directive_seconds(v, vl) < 0 ? 0 : directive_seconds(v, vl);
        if (hs[i].kept) {
            lines += FIELD_PREFIX + nl + vl;
            nkept++;
        }
    }
    if (cc.no_store || lines > MAX_HEAD_FIELDS)
        return -1;
    long long life = 0;
    int says = 1; /* the upstream gives a lifetime; else the route's ttl */
    if (cc.s_maxage >= 0)
        life = cc.s_maxage;
    else if (cc.max_age >= 0)
        life = cc.max_age;
    else if (expires != -2) /* an invalid Expires means "already expired" */
        life = expires < 0 ? 0 : expires - (date >= 0 ? date : (long long)time(NULL));
    else
        says = 0;
    uint64_t now = wall_ms();
    uint64_t fresh = !says ? rc->ttl : life > age ? (uint64_t)(life - age) * 1000 : 0;
    if (fresh == 0)
        return -1;
    uint64_t stale = cc.must_revalidate ? 0 : rc->stale;
    if (!cc.must_revalidate && cc.stale_if_error > 0 && (uint64_t)cc.stale_if_error * 1000 > stale)
        stale = (uint64_t)cc.stale_if_error * 1000;
    h->magic = BLOB_MAGIC;
    h->nheaders = (uint16_t)nkept;
    h->stored_ms = now;
    h->fresh_ms = now + fresh;
    h->stale_ms = now + fresh + stale;
    h->age = (uint32_t)age;
    h->lines_len = (uint32_t)lines;
    return 0;
}

/* The kept fields of hs, in the blob's form. */
static char *put_fields(char *o, const hdr_t *hs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!hs[i].kept)
            continue;
        o = st16(st16(o, hs[i].nl), hs[i].vl);
        memcpy(o, hs[i].n, hs[i].nl);
        memcpy(o + hs[i].nl, hs[i].v, hs[i].vl);
        o += hs[i].nl + hs[i].vl;
    }
    return o;
}

/* u's response head as hdr_t (hs has room for u->nheaders). */
static void upstream_headers(mg_upconn_t *u, hdr_t *hs, mg_cache_forwarded_fn forwarded)
{
    for (uint32_t i = 0; i < u->nheaders; i++) {
        hs[i].n = u->buf.data + u->headers[i].name.off;
        hs[i].nl = u->headers[i].name.len;
        hs[i].v = u->buf.data + u->headers[i].value.off;
        hs[i].vl = u->headers[i].value.len;
        hs[i].kept = kept_header(u, i, forwarded);
    }
}

/* Starts cs(r)->capture when u's answer may be kept. */
static void capture_start(mg_upconn_t *u, const mg_route_cache_t *rc, int status,
                          mg_cache_forwarded_fn forwarded)
{
    mg_request_t *r = u->r;
    hdr_t hs[MG_UP_MAX_HEADERS];
    blob_head_t h = { 0 };
    if (!status_listed(rc, status))
        return;
    if (u->h1.has_length && u->h1.content_length > rc->max_body)
        return;
    upstream_headers(u, hs, forwarded);
    if (judge(rc, hs, u->nheaders, &h) < 0)
        return;
    h.status = (uint16_t)status;

    struct mg_cache_capture_s *cp = malloc(sizeof(*cp));
    size_t first = sizeof(blob_head_t) + h.lines_len;
    size_t body_hint =
        u->h1.has_length ? (size_t)u->h1.content_length : 4096;
    if (!cp)
        return;
    cp->cap = first + (body_hint < rc->max_body ? body_hint : (size_t)rc->max_body);
    cp->buf = malloc(cp->cap);
    if (!cp->buf) {
        free(cp);
        return;
    }
    cp->limit = first + rc->max_body;
    memcpy(cp->buf, &h, sizeof(h));
    cp->len = (size_t)(put_fields(cp->buf + sizeof(h), hs, u->nheaders) - cp->buf);
    r->cache->capture = cp;
}

/* Keeps blob (len bytes) under r's key, in the dictionary or in Redis. */
static void store(mg_request_t *r, const char *blob, size_t len, uint64_t stale_ms)
{
    const mg_route_cache_t *rc = r->route->cache;
    uint64_t now = wall_ms();
    const char *err = NULL;
    if (stale_ms <= now)
        return;
    if (rc->redis_host) {
        if (redis_send(r, "SET", blob, len, stale_ms - now, NULL))
            mg_metrics_cache_stored(r->w->id);
    } else if (mg_ffi_shdict_set(rc->dict, cs(r)->key, cs(r)->key_len, MG_SHDICT_STRING, 0,
                                 blob, len, stale_ms - now, MG_SHDICT_SET, &err) == 0) {
        mg_metrics_cache_stored(r->w->id);
    }
}

/* ---- revalidation ------------------------------------------------------- */

static int has_validator(const struct mg_cache_entry_s *e)
{
    size_t l;
    return entry_header(e, "etag", 4, &l) || entry_header(e, "last-modified", 13, &l);
}

size_t mg_cache_validators(const mg_request_t *r, char *out)
{
    const struct mg_cache_entry_s *e = cs(r)->entry;
    const char *v;
    size_t vl;
    char *o = out;
    if ((v = entry_header(e, "etag", 4, &vl)))
        o = mg_put_header(o, "If-None-Match", 13, v, vl);
    if ((v = entry_header(e, "last-modified", 13, &vl)))
        o = mg_put_header(o, "If-Modified-Since", 17, v, vl);
    return (size_t)(o - out);
}

size_t mg_cache_validators_len(const mg_request_t *r)
{
    return cs(r)->revalidating ? cs(r)->entry->h.lines_len + 64 : 0;
}

int mg_cache_revalidated(mg_upconn_t *u, mg_cache_forwarded_fn forwarded)
{
    mg_request_t *r = u->r;
    struct mg_cache_entry_s *e = cs(r)->entry;
    const mg_route_cache_t *rc = r->route->cache;
    size_t n = e->nheaders + u->nheaders, k = 0;
    hdr_t *hs = malloc(n * sizeof(*hs));
    if (!hs)
        return 0;
    /* the kept head, updated with the 304's fields (RFC 9111 3.2) */
    upstream_headers(u, hs + e->nheaders, forwarded);
    for (uint32_t i = 0; i < e->nheaders; i++) {
        const char *nm = e->blob + e->headers[i].name.off;
        size_t nl = e->headers[i].name.len, j;
        for (j = e->nheaders; j < n; j++)
            if (hs[j].kept && ieq(hs[j].n, hs[j].nl, nm, nl))
                break;
        if (j < n)
            continue; /* the 304 says it anew */
        hs[k++] = (hdr_t){ nm, e->blob + e->headers[i].value.off, nl, e->headers[i].value.len,
                           1 };
    }
    memmove(hs + k, hs + e->nheaders, u->nheaders * sizeof(*hs));
    n = k + u->nheaders;
    blob_head_t h = { 0 };
    char *blob = NULL;
    size_t len = 0;
    if (judge(rc, hs, n, &h) == 0) {
        h.status = e->h.status;
        h.body_len = e->h.body_len;
        len = sizeof(h) + h.lines_len + h.body_len;
        blob = malloc(len);
    }
    if (blob) {
        memcpy(blob, &h, sizeof(h));
        char *o = put_fields(blob + sizeof(h), hs, n);
        memcpy(o, e->body, e->h.body_len);
        store(r, blob, len, h.stale_ms);
        struct mg_cache_entry_s *fresh = entry_from_blob(blob, len);
        if (fresh) {
            free_entry(e);
            r->cache->entry = fresh;
        }
    }
    free(hs);
    lock_release(r);
    r->cache->state = MG_CACHE_REVALIDATED;
    return 1; /* served from the kept answer, kept again or not */
}

void mg_cache_capture_head(mg_upconn_t *u, mg_cache_forwarded_fn forwarded)
{
    mg_request_t *r = u->r;
    const mg_route_cache_t *rc = r->route->cache;
    int status = u->h1.status;
    if (cs(r)->unsafe) {
        if (status < 400)
            mg_cache_invalidate(r);
        return;
    }
    if ((cs(r)->state != MG_CACHE_MISS && cs(r)->state != MG_CACHE_EXPIRED) ||
        r->head_method || cs(r)->capture)
        return;
    capture_start(u, rc, status, forwarded);
    if (!cs(r)->capture)
        lock_release(r); /* nothing to wait for */
}

static void capture_drop(mg_request_t *r)
{
    if (cs(r)->capture) {
        free(cs(r)->capture->buf);
        free(cs(r)->capture);
        r->cache->capture = NULL;
    }
    lock_release(r);
}

void mg_cache_capture_body(mg_request_t *r, const char *p, size_t n)
{
    struct mg_cache_capture_s *cp = cs(r)->capture;
    if (cp->len + n > cp->limit) {
        capture_drop(r); /* bigger than max_body: passed on, not kept */
        return;
    }
    if (cp->len + n > cp->cap) {
        size_t cap = cp->cap * 2 > cp->len + n ? cp->cap * 2 : cp->len + n;
        if (cap > cp->limit)
            cap = cp->limit;
        char *bigger = realloc(cp->buf, cap);
        if (!bigger) {
            capture_drop(r);
            return;
        }
        cp->buf = bigger;
        cp->cap = cap;
    }
    memcpy(cp->buf + cp->len, p, n);
    cp->len += n;
}

void mg_cache_capture_end(mg_request_t *r)
{
    struct mg_cache_capture_s *cp = cs(r)->capture;
    blob_head_t h;
    memcpy(&h, cp->buf, sizeof(h));
    h.body_len = (uint32_t)(cp->len - sizeof(h) - h.lines_len);
    memcpy(cp->buf, &h, sizeof(h));
    store(r, cp->buf, cp->len, h.stale_ms);
    capture_drop(r);
}

void mg_cache_invalidate(mg_request_t *r)
{
    const mg_route_cache_t *rc = r->route ? r->route->cache : NULL;
    if (rc && rc->redis_host && cs(r)->key)
        redis_send(r, "DEL", NULL, 0, 0, NULL);
    else if (rc && rc->dict && cs(r)->key)
        mg_ffi_shdict_delete(rc->dict, cs(r)->key, cs(r)->key_len);
}

/* Keys are listed, then removed one by one: answers stored meanwhile may
 * stay, as with any purge racing new requests. */
long mg_cache_purge(mg_shdict_t *d, const char *route, size_t route_len)
{
    size_t cap = 65536, len = cap;
    char *buf = malloc(cap);
    int n;
    while (buf && (n = mg_ffi_shdict_keys(d, 0, buf, &len)) == -ENOBUFS) {
        char *bigger = realloc(buf, len);
        if (!bigger)
            break;
        buf = bigger;
        cap = len;
    }
    if (!buf || n < 0) {
        free(buf);
        return -1;
    }
    long removed = 0;
    for (size_t at = 0; at + 2 <= len;) {
        size_t kl = ((size_t)(unsigned char)buf[at] << 8) | (unsigned char)buf[at + 1];
        const char *k = buf + at + 2;
        at += 2 + kl;
        /* answers only (lock keys end with \x01), of that route if asked */
        if (kl == 0 || k[kl - 1] != '\n')
            continue;
        if (route && (kl <= route_len || memcmp(k, route, route_len) != 0 || k[route_len] != '\n'))
            continue;
        mg_ffi_shdict_delete(d, k, kl);
        removed++;
    }
    free(buf);
    return removed;
}

void mg_cache_release(mg_request_t *r)
{
    if (!r->cache)
        return;
    if (cs(r)->state != MG_CACHE_NONE)
        mg_metrics_cache(r->w->id, cs(r)->state);
    wait_stop(r);
    if (cs(r)->op) {
        mg_redis_op_cancel(cs(r)->op);
        r->cache->op = NULL;
    }
    capture_drop(r);
    free_entry(cs(r)->entry);
    r->cache->entry = NULL;
}

/* ---- what other files may know of a request's cache state ----------------- */

int mg_cache_state(const mg_request_t *r) { return cs(r)->state; }
int mg_cache_looked(const mg_request_t *r) { return cs(r)->looked; }
int mg_cache_holds(const mg_request_t *r) { return cs(r)->entry != NULL; }
int mg_cache_unsafe(const mg_request_t *r) { return cs(r)->unsafe; }
int mg_cache_revalidating(const mg_request_t *r) { return cs(r)->revalidating; }
int mg_cache_capturing(const mg_request_t *r) { return cs(r)->capture != NULL; }

int mg_cache_use_stale(mg_request_t *r)
{
    if (!mg_cache_can_serve_stale(r))
        return 0;
    r->cache->state = MG_CACHE_STALE; /* stale-if-error */
    return 1;
}

int mg_cache_skip(mg_request_t *r)
{
    if (cs(r)->looked)
        return -1;
    if (!cache_new(r))
        return -2;
    r->cache->skip = 1;
    return 0;
}

int mg_cache_key_add(mg_request_t *r, const char *p, size_t len)
{
    if (cs(r)->looked)
        return -1;
    if (!cache_new(r))
        return -2;
    size_t old = r->cache->key_extra_len;
    char *k = mg_request_alloc(r, old + len + 1);
    if (!k)
        return -2;
    if (old)
        memcpy(k, r->cache->key_extra, old);
    memcpy(k + old, p, len);
    k[old + len] = '\n'; /* each part ends with one: ("a", "b") is not ("ab") */
    r->cache->key_extra = k;
    r->cache->key_extra_len = old + len + 1;
    return 0;
}
