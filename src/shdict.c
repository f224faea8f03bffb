/* shdict.c: shared dictionaries (see shdict.h and the shdict section of
 * mg_ffi.h).
 *
 * A dictionary is split into stripes (a power of two, at most 64, each at
 * least 64 KiB of the cap): the key's hash picks the stripe, and everything
 * about a key happens under that stripe's mutex, so an operation locks once
 * and workers touching different keys rarely meet. Each stripe has its own
 * chained hash table, LRU list (most recently used first) and byte budget
 * (cap / stripes); a key and its value live in one block, charged at its
 * size class.
 *
 * Memory: a stripe never holds more than its budget in blocks. Blocks of up
 * to 4 KiB are not freed when their entry goes but kept on per-class free
 * lists (still counted as held), so that a steady stream of new counters
 * (rate limiting) reuses blocks instead of calling malloc; a bigger block
 * is malloc'd and freed exactly. When a new block would go over the budget
 * the stripe first frees cached blocks, then evicts from the LRU tail.
 * Every insert also reclaims up to two expired entries from the tail, and a
 * lookup that meets an expired entry reclaims it. The hash table's bucket
 * array (8 bytes per entry at most) is not charged to the budget.
 *
 * Keys are hashed with SipHash-1-3 under a random per-dictionary key, so
 * that clients cannot choose keys that pile up in one chain.
 */
#include "shdict.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "mg_ffi.h"

#define MAX_STRIPES 64
#define MIN_STRIPE_BYTES (64 * 1024)
#define MIN_BUCKETS 16
#define EXPIRE_ON_INSERT 2
#define SMALL_MAX 4096 /* blocks up to this size are cached when freed */
#define NCLASSES 32    /* 16-byte steps to 256, then 4 steps per doubling */

typedef struct link_s {
    struct link_s *prev, *next;
} link_t;

/* One key and its value, in one block of `size` bytes. */
typedef struct entry_s {
    struct entry_s *hnext; /* hash chain; free-list link once freed */
    link_t lru;
    uint64_t expires; /* monotonic ms, 0 = never */
    double num;       /* number, or boolean as 0/1 */
    uint32_t hash;    /* low half of the key's hash */
    uint32_t size;    /* bytes charged */
    uint32_t vlen;    /* string length */
    uint16_t klen;
    uint8_t type; /* MG_SHDICT_* */
    int8_t cls;   /* size class, -1 for a block freed at once */
    char data[];  /* key, then the string value */
} entry_t;

static entry_t *entry_of(link_t *l)
{
    return (entry_t *)((char *)l - offsetof(entry_t, lru));
}

typedef struct stripe_s {
    _Alignas(64) pthread_mutex_t lock; /* one cache line apart from the next */
    entry_t **buckets;
    size_t nbuckets;         /* power of two */
    size_t count;            /* entries in the table */
    link_t lru;              /* next: most recently used, prev: least */
    size_t cap;              /* budget in bytes */
    size_t used;             /* bytes of the blocks of entries */
    size_t held;             /* used + bytes of the cached free blocks */
    entry_t *free[NCLASSES]; /* cached free blocks by class */
} stripe_t;

struct mg_shdict_s {
    mg_shdict_t *next; /* registry list */
    char *name;
    size_t cap;
    size_t max_entry;  /* biggest block a stripe accepts */
    unsigned nstripes; /* power of two */
    uint64_t k0, k1;   /* SipHash key */
    stripe_t *stripes;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_shdict_t *registry;

/* ---- helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int expired(const entry_t *e, uint64_t now)
{
    return e->expires != 0 && e->expires <= now;
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* SipHash-1-3 (words read in host order: the hash never leaves the process). */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t m, b = (uint64_t)len << 56;
    size_t i, tail = len & 7;

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&m, in + i, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    m = 0;
    memcpy(&m, in + i, tail);
    b |= m;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The size class of a block of n bytes and its size (*csize); -1 (and n
 * rounded up to 16) for blocks too big to cache. */
static int size_class(size_t n, size_t *csize)
{
    unsigned lg;
    size_t step, c;

    if (n <= 256) {
        c = (n + 15) >> 4;
        *csize = c << 4;
        return (int)c - 1;
    }
    if (n > SMALL_MAX) {
        *csize = (n + 15) & ~(size_t)15;
        return -1;
    }
    lg = 63 - (unsigned)__builtin_clzll((unsigned long long)(n - 1)); /* 2^lg < n <= 2^(lg+1) */
    step = (size_t)1 << (lg - 2);
    c = (n + step - 1) & ~(step - 1);
    *csize = c;
    return 16 + (int)(lg - 8) * 4 + (int)(c >> (lg - 2)) - 5;
}

static const char *key_error(size_t klen)
{
    if (klen == 0)
        return "empty key";
    if (klen > MG_SHDICT_MAX_KEY)
        return "key too long";
    return NULL;
}

/* ---- one stripe (all called with its lock held) ---- */

static stripe_t *stripe_of(mg_shdict_t *d, const char *key, size_t klen, uint32_t *hash)
{
    uint64_t h = siphash13(d->k0, d->k1, (const unsigned char *)key, klen);

    *hash = (uint32_t)h;
    return &d->stripes[(h >> 32) & (d->nstripes - 1)];
}

static entry_t *lookup(stripe_t *s, uint32_t hash, const char *key, size_t klen)
{
    entry_t *e;

    for (e = s->buckets[hash & (s->nbuckets - 1)]; e != NULL; e = e->hnext)
        if (e->hash == hash && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return e;
    return NULL;
}

static void lru_unlink(link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void lru_push(stripe_t *s, link_t *l)
{
    l->prev = &s->lru;
    l->next = s->lru.next;
    s->lru.next->prev = l;
    s->lru.next = l;
}

static void touch(stripe_t *s, entry_t *e)
{
    if (s->lru.next != &e->lru) {
        lru_unlink(&e->lru);
        lru_push(s, &e->lru);
    }
}

/* Gives a block back: cached on its class's free list, or freed. */
static void block_release(stripe_t *s, entry_t *blk)
{
    if (blk->cls >= 0) {
        blk->hnext = s->free[blk->cls];
        s->free[blk->cls] = blk;
    } else {
        s->held -= blk->size;
        free(blk);
    }
}

/* Frees one cached block (the biggest class first). Returns 0 if none. */
static int free_one_cached(stripe_t *s)
{
    int i;

    for (i = NCLASSES - 1; i >= 0; i--) {
        entry_t *blk = s->free[i];

        if (blk != NULL) {
            s->free[i] = blk->hnext;
            s->held -= blk->size;
            free(blk);
            return 1;
        }
    }
    return 0;
}

static void entry_remove(stripe_t *s, entry_t *e)
{
    entry_t **p = &s->buckets[e->hash & (s->nbuckets - 1)];

    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    lru_unlink(&e->lru);
    s->count--;
    s->used -= e->size;
    block_release(s, e);
}

/* Reclaims up to n expired entries from the LRU tail. */
static void expire_tail(stripe_t *s, uint64_t now, int n)
{
    while (n-- > 0 && s->lru.prev != &s->lru) {
        entry_t *e = entry_of(s->lru.prev);

        if (!expired(e, now))
            return;
        entry_remove(s, e);
    }
}

/* A block for an entry of `need` bytes, charged to the stripe; evicts what
 * it must. NULL when the block is bigger than the budget or malloc fails. */
static entry_t *block_get(stripe_t *s, size_t need)
{
    size_t csize;
    int cls = size_class(need, &csize);
    entry_t *blk;

    if (csize > s->cap)
        return NULL; /* evicting everything would not make room */
    for (;;) {
        if (cls >= 0 && s->free[cls] != NULL) {
            blk = s->free[cls];
            s->free[cls] = blk->hnext;
            break;
        }
        if (s->held + csize <= s->cap) {
            blk = malloc(csize);
            if (blk == NULL)
                return NULL;
            s->held += csize;
            break;
        }
        if (free_one_cached(s))
            continue;
        if (s->lru.prev == &s->lru)
            return NULL; /* cannot happen: csize <= cap */
        entry_remove(s, entry_of(s->lru.prev));
    }
    blk->size = (uint32_t)csize;
    blk->cls = (int8_t)cls;
    s->used += csize;
    return blk;
}

/* Doubles the bucket array; on failure the chains just get longer. */
static void grow(stripe_t *s)
{
    size_t i, n = s->nbuckets * 2;
    entry_t **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (i = 0; i < s->nbuckets; i++) {
        entry_t *e = s->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* Adds a new entry for key (absent from the stripe) with room for vlen
 * value bytes; the caller sets type, value and expiry. NULL: no memory. */
static entry_t *insert(stripe_t *s, uint32_t hash, const char *key, size_t klen, size_t vlen,
                       uint64_t now)
{
    entry_t *e, **b;

    expire_tail(s, now, EXPIRE_ON_INSERT);
    e = block_get(s, sizeof(entry_t) + klen + vlen);
    if (e == NULL)
        return NULL;
    e->hash = hash;
    e->klen = (uint16_t)klen;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, key, klen);
    b = &s->buckets[hash & (s->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    lru_push(s, &e->lru);
    if (++s->count > s->nbuckets)
        grow(s);
    return e;
}

/* Whether a value of vlen bytes fits e's block at the same size class. */
static int fits(const entry_t *e, size_t vlen)
{
    size_t csize;

    size_class(sizeof(entry_t) + e->klen + vlen, &csize);
    return csize == e->size;
}

static void stripe_clear(stripe_t *s)
{
    while (s->lru.next != &s->lru)
        entry_remove(s, entry_of(s->lru.next));
    while (free_one_cached(s))
        ;
}

/* ---- registry ---- */

static void dict_free(mg_shdict_t *d)
{
    unsigned i;

    for (i = 0; i < d->nstripes; i++) {
        stripe_t *s = &d->stripes[i];

        if (s->buckets == NULL)
            continue; /* never initialised */
        stripe_clear(s);
        free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    free(d->stripes);
    free(d->name);
    free(d);
}

static mg_shdict_t *dict_new(const char *name, size_t cap)
{
    mg_shdict_t *d = calloc(1, sizeof(*d));
    uint64_t key[2];
    unsigned i, n = 1;
    size_t scap;
    void *mem;

    if (d == NULL)
        return NULL;
    while (n < MAX_STRIPES && cap / (n * 2) >= MIN_STRIPE_BYTES)
        n *= 2;
    scap = cap / n;
    d->cap = cap;
    d->nstripes = n;
    d->max_entry = scap < UINT32_MAX ? scap : UINT32_MAX;
    if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
        struct timespec ts; /* no entropy: still differs per run */

        clock_gettime(CLOCK_REALTIME, &ts);
        key[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uintptr_t)d;
        key[1] = key[0] * 0x9e3779b97f4a7c15ULL;
    }
    d->k0 = key[0];
    d->k1 = key[1];
    d->name = strdup(name);
    if (d->name == NULL || posix_memalign(&mem, 64, n * sizeof(stripe_t)) != 0) {
        dict_free(d);
        return NULL;
    }
    memset(mem, 0, n * sizeof(stripe_t));
    d->stripes = mem;
    for (i = 0; i < n; i++) {
        stripe_t *s = &d->stripes[i];

        s->buckets = calloc(MIN_BUCKETS, sizeof(*s->buckets));
        if (s->buckets == NULL || pthread_mutex_init(&s->lock, NULL) != 0) {
            free(s->buckets);
            s->buckets = NULL;
            dict_free(d);
            return NULL;
        }
        s->nbuckets = MIN_BUCKETS;
        s->lru.prev = s->lru.next = &s->lru;
        s->cap = scap;
    }
    return d;
}

static mg_shdict_t *find_locked(const char *name, size_t len)
{
    mg_shdict_t *d;

    for (d = registry; d != NULL; d = d->next)
        if (strlen(d->name) == len && memcmp(d->name, name, len) == 0)
            return d;
    return NULL;
}

mg_shdict_t *mg_shdict_open(const char *name, size_t cap)
{
    mg_shdict_t *d;

    pthread_mutex_lock(&registry_lock);
    d = find_locked(name, strlen(name));
    if (d == NULL && (d = dict_new(name, cap > 0 ? cap : 1)) != NULL) {
        d->next = registry;
        registry = d;
    }
    pthread_mutex_unlock(&registry_lock);
    return d;
}

mg_shdict_t *mg_shdict_find(const char *name)
{
    return mg_ffi_shdict_find(name, strlen(name));
}

mg_shdict_t *mg_ffi_shdict_find(const char *name, size_t name_len)
{
    mg_shdict_t *d;

    pthread_mutex_lock(&registry_lock);
    d = find_locked(name, name_len);
    pthread_mutex_unlock(&registry_lock);
    return d;
}

size_t mg_shdict_capacity(const mg_shdict_t *d)
{
    return d->cap;
}

size_t mg_shdict_max_entry(const mg_shdict_t *d)
{
    return d->max_entry;
}

void mg_shdict_close_all(void)
{
    pthread_mutex_lock(&registry_lock);
    while (registry != NULL) {
        mg_shdict_t *d = registry;

        registry = d->next;
        dict_free(d);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- operations ---- */

int mg_ffi_shdict_get(mg_shdict_t *d, const char *key, size_t key_len, double *num, char *buf,
                      size_t *len)
{
    uint64_t now = now_ms();
    size_t cap = *len;
    uint32_t hash;
    stripe_t *s;
    entry_t *e;
    int type;

    if (key_error(key_len) != NULL)
        return MG_SHDICT_NIL;
    s = stripe_of(d, key, key_len, &hash);
    pthread_mutex_lock(&s->lock);
    e = lookup(s, hash, key, key_len);
    if (e == NULL || expired(e, now)) {
        if (e != NULL)
            entry_remove(s, e);
        pthread_mutex_unlock(&s->lock);
        return MG_SHDICT_NIL;
    }
    type = e->type;
    if (type == MG_SHDICT_STRING) {
        *len = e->vlen;
        if (e->vlen > cap) {
            pthread_mutex_unlock(&s->lock);
            return -ENOBUFS;
        }
        memcpy(buf, e->data + e->klen, e->vlen);
    } else {
        *num = e->num;
    }
    touch(s, e);
    pthread_mutex_unlock(&s->lock);
    return type;
}

int mg_ffi_shdict_set(mg_shdict_t *d, const char *key, size_t key_len, int type, double num,
                      const char *str, size_t str_len, uint64_t ttl_ms, int mode, const char **err)
{
    uint64_t now = now_ms();
    const char *why;
    uint32_t hash;
    size_t csize;
    stripe_t *s;
    entry_t *e;
    int live, rc = 0;

    if ((why = key_error(key_len)) != NULL) {
        *err = why;
        return -EINVAL;
    }
    if (type != MG_SHDICT_NIL && type != MG_SHDICT_BOOLEAN && type != MG_SHDICT_NUMBER &&
        type != MG_SHDICT_STRING) {
        *err = "bad value type";
        return -EINVAL;
    }
    if (type != MG_SHDICT_STRING)
        str_len = 0;
    if (type == MG_SHDICT_BOOLEAN)
        num = num != 0;
    csize = d->max_entry + 1;
    if (str_len <= d->max_entry)
        size_class(sizeof(entry_t) + key_len + str_len, &csize);
    if (csize > d->max_entry) {
        *err = "no memory"; /* refused before the old value goes */
        return -ENOMEM;
    }
    s = stripe_of(d, key, key_len, &hash);
    pthread_mutex_lock(&s->lock);
    e = lookup(s, hash, key, key_len);
    live = e != NULL && !expired(e, now);
    if (mode == MG_SHDICT_ADD && live) {
        *err = "exists";
        rc = -EEXIST;
    } else if (mode == MG_SHDICT_REPLACE && !live) {
        *err = "not found";
        rc = -ENOENT;
    } else if (type == MG_SHDICT_NIL) {
        if (e != NULL)
            entry_remove(s, e);
    } else {
        if (e != NULL && fits(e, str_len)) {
            touch(s, e);
        } else {
            if (e != NULL)
                entry_remove(s, e);
            e = insert(s, hash, key, key_len, str_len, now);
        }
        if (e == NULL) {
            *err = "no memory";
            rc = -ENOMEM;
        } else {
            e->type = (uint8_t)type;
            e->num = num;
            e->vlen = (uint32_t)str_len;
            if (str_len > 0)
                memcpy(e->data + key_len, str, str_len);
            e->expires = ttl_ms > 0 ? now + ttl_ms : 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int mg_ffi_shdict_incr(mg_shdict_t *d, const char *key, size_t key_len, double by, int has_init,
                       double init, uint64_t init_ttl_ms, double *out, const char **err)
{
    uint64_t now = now_ms();
    const char *why;
    uint32_t hash;
    stripe_t *s;
    entry_t *e;
    int rc = 0;

    if ((why = key_error(key_len)) != NULL) {
        *err = why;
        return -EINVAL;
    }
    s = stripe_of(d, key, key_len, &hash);
    pthread_mutex_lock(&s->lock);
    e = lookup(s, hash, key, key_len);
    if (e != NULL && !expired(e, now)) {
        if (e->type == MG_SHDICT_NUMBER) {
            *out = e->num += by;
            touch(s, e);
        } else {
            *err = "not a number";
            rc = -EINVAL;
        }
    } else if (!has_init) {
        if (e != NULL)
            entry_remove(s, e);
        *err = "not found";
        rc = -ENOENT;
    } else {
        if (e != NULL && fits(e, 0)) {
            touch(s, e); /* an expired entry reused in place */
        } else {
            if (e != NULL)
                entry_remove(s, e);
            e = insert(s, hash, key, key_len, 0, now);
        }
        if (e == NULL) {
            *err = "no memory";
            rc = -ENOMEM;
        } else {
            e->type = MG_SHDICT_NUMBER;
            e->vlen = 0;
            *out = e->num = init + by;
            e->expires = init_ttl_ms > 0 ? now + init_ttl_ms : 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int mg_ffi_shdict_delete(mg_shdict_t *d, const char *key, size_t key_len)
{
    uint32_t hash;
    stripe_t *s;
    entry_t *e;

    if (key_error(key_len) != NULL)
        return 0;
    s = stripe_of(d, key, key_len, &hash);
    pthread_mutex_lock(&s->lock);
    if ((e = lookup(s, hash, key, key_len)) != NULL)
        entry_remove(s, e);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int mg_ffi_shdict_keys(mg_shdict_t *d, int max, char *buf, size_t *len)
{
    uint64_t now = now_ms();
    size_t cap = *len, pos = 0;
    int n = 0, full = 0;
    unsigned i;

    for (i = 0; i < d->nstripes && !(max > 0 && n >= max); i++) {
        stripe_t *s = &d->stripes[i];
        link_t *l;

        pthread_mutex_lock(&s->lock);
        for (l = s->lru.next; l != &s->lru && !(max > 0 && n >= max); l = l->next) {
            entry_t *e = entry_of(l);

            if (expired(e, now))
                continue;
            if (!full && pos + 2 + e->klen <= cap) {
                buf[pos] = (char)(e->klen >> 8);
                buf[pos + 1] = (char)(e->klen & 0xff);
                memcpy(buf + pos + 2, e->data, e->klen);
            } else {
                full = 1;
            }
            pos += 2 + (size_t)e->klen;
            n++;
        }
        pthread_mutex_unlock(&s->lock);
    }
    *len = pos;
    return full ? -ENOBUFS : n;
}

void mg_ffi_shdict_flush_all(mg_shdict_t *d)
{
    unsigned i;

    for (i = 0; i < d->nstripes; i++) {
        stripe_t *s = &d->stripes[i];

        pthread_mutex_lock(&s->lock);
        stripe_clear(s);
        pthread_mutex_unlock(&s->lock);
    }
}

size_t mg_ffi_shdict_capacity(mg_shdict_t *d)
{
    return d->cap;
}

size_t mg_ffi_shdict_free_space(mg_shdict_t *d)
{
    size_t free_bytes = 0;
    unsigned i;

    for (i = 0; i < d->nstripes; i++) {
        stripe_t *s = &d->stripes[i];

        pthread_mutex_lock(&s->lock);
        free_bytes += s->cap - s->used;
        pthread_mutex_unlock(&s->lock);
    }
    return free_bytes;
}

/* ---- rate limiting (the rate limiting section of mg_ffi.h) ----
 *
 * A limit's state for one key is an ordinary entry of the dictionary, read
 * and rewritten under its stripe's lock in one step: that is what makes a
 * limit exact across every worker of the process (no get-then-set). The
 * entry's key is the limit's namespace followed by the caller's key. GCRA
 * keeps its theoretical arrival time as a number; the sliding window keeps
 * three doubles (window start, previous count, current count) as a 24-byte
 * string. An entry of another shape under that key (a user value) is
 * replaced by a fresh state.
 *
 * Times are milliseconds. The algorithms run on the caller's `now`, or on
 * CLOCK_MONOTONIC read under the lock (so that the decisions on one key are
 * made in clock order); expiry stays on the dictionary's coarse clock, with
 * a slack that covers the difference between the two, so that an entry only
 * goes once its state is the same as no state at all. */

#define RL_KEY_STACK 512 /* namespace + key up to this size stay on the stack */
#define RL_SLACK_MS 1000 /* entries outlive their state by this much */
#define RL_EPS 1e-6      /* ms; rounding of repeated additions */

static double rl_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Joins NS and KEY into BUF (RL_KEY_STACK bytes) or into a malloc'd block
 * left in *HEAP for the caller to free. NULL when the result is empty, too
 * long or memory is short (*RC says which). */
static const char *rl_key(const char *ns, size_t ns_len, const char *key, size_t key_len, char *buf,
                          char **heap, size_t *len, int *rc)
{
    size_t n = ns_len + key_len;
    char *k = buf;

    *heap = NULL;
    if (n == 0 || n > MG_SHDICT_MAX_KEY) {
        *rc = -EINVAL;
        return NULL;
    }
    if (n > RL_KEY_STACK) {
        k = *heap = malloc(n);
        if (k == NULL) {
            *rc = -ENOMEM;
            return NULL;
        }
    }
    memcpy(k, ns, ns_len);
    memcpy(k + ns_len, key, key_len);
    *len = n;
    return k;
}

/* The live entry of KEY holding a state of TYPE and VLEN value bytes, or a
 * fresh one (*FRESH = 1; an entry of another shape is replaced). Called
 * with the stripe locked. NULL when no memory can be found. */
static entry_t *rl_entry(stripe_t *s, uint32_t hash, const char *key, size_t klen, int type,
                         size_t vlen, uint64_t coarse, int *fresh)
{
    entry_t *e = lookup(s, hash, key, klen);

    if (e != NULL && !expired(e, coarse) && e->type == type && e->vlen == vlen) {
        touch(s, e);
        *fresh = 0;
        return e;
    }
    if (e != NULL && fits(e, vlen)) {
        touch(s, e);
    } else {
        if (e != NULL)
            entry_remove(s, e);
        e = insert(s, hash, key, klen, vlen, coarse);
        if (e == NULL)
            return NULL;
    }
    e->type = (uint8_t)type;
    e->vlen = (uint32_t)vlen;
    e->num = 0;
    *fresh = 1;
    return e;
}

static uint64_t rl_expiry(uint64_t coarse, double ttl)
{
    return coarse + (ttl > 0 ? (uint64_t)ceil(ttl) : 0) + RL_SLACK_MS;
}

static double rl_floor(double x)
{
    x = floor(x + 1e-9);
    return x > 0 ? x : 0;
}

int mg_ffi_shdict_gcra(mg_shdict_t *d, const char *ns, size_t ns_len, const char *key,
                       size_t key_len, double interval, double burst, double cost, double now,
                       mg_rl_result_t *out)
{
    char buf[RL_KEY_STACK], *heap;
    const char *k;
    size_t klen = 0;
    uint32_t hash;
    stripe_t *s;
    entry_t *e;
    double tat, new_tat, allow_at;
    int fresh, rc = -EINVAL;

    if (!(interval > 0 && interval < HUGE_VAL) || !(burst > 0 && burst < HUGE_VAL) ||
        !(cost >= 0 && cost <= burst))
        return -EINVAL;
    k = rl_key(ns, ns_len, key, key_len, buf, &heap, &klen, &rc);
    if (k == NULL)
        return rc;
    s = stripe_of(d, k, klen, &hash);
    pthread_mutex_lock(&s->lock);
    if (!(now >= 0))
        now = rl_clock();
    e = rl_entry(s, hash, k, klen, MG_SHDICT_NUMBER, 0, now_ms(), &fresh);
    if (e == NULL) {
        rc = -ENOMEM;
    } else {
        tat = fresh || e->num < now ? now : e->num;
        new_tat = tat + interval * cost;
        allow_at = new_tat - interval * burst;
        if (now >= allow_at - RL_EPS) {
            e->num = new_tat;
            e->expires = rl_expiry(now_ms(), new_tat - now);
            out->remaining = rl_floor((now - allow_at) / interval);
            /* (tat - now) first: exactly 0 for a fresh key, so the reset of
             * a first request is exactly interval * cost */
            out->reset = (tat - now) + interval * cost;
            out->retry_after = 0;
            rc = 1;
        } else {
            if (fresh) {
                e->num = tat; /* cannot happen with cost <= burst; stay well-formed */
                e->expires = rl_expiry(now_ms(), 0);
            }
            out->remaining = rl_floor((now - (tat - interval * burst)) / interval);
            out->reset = tat - now;
            out->retry_after = allow_at - now;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&s->lock);
    free(heap);
    return rc;
}

/* When (ms after NOW) a request of COST could pass a sliding window that
 * refused it: later in the current window, as the previous count fades,
 * or else in the next window, once the current count has faded enough. */
static double sliding_retry(double limit, double window, double cost, double start, double prev,
                            double cur, double now)
{
    double room = limit - cur - cost, t;

    if (room >= 0 && prev > 0) {
        t = window * (1 - room / prev); /* elapsed time in the window needed */
        if (t < window)
            return start + t - now;
    }
    t = cur > limit - cost ? window * (1 - (limit - cost) / cur) : 0;
    return start + window + t - now;
}

int mg_ffi_shdict_sliding(mg_shdict_t *d, const char *ns, size_t ns_len, const char *key,
                          size_t key_len, double limit, double window, double cost, double now,
                          mg_rl_result_t *out)
{
    char buf[RL_KEY_STACK], *heap;
    const char *k;
    size_t klen = 0;
    uint32_t hash;
    stripe_t *s;
    entry_t *e;
    double st[3], start, prev, cur, el, est;
    int fresh, rc = -EINVAL;

    if (!(window > 0 && window < HUGE_VAL) || !(limit > 0 && limit < HUGE_VAL) ||
        !(cost >= 0 && cost <= limit))
        return -EINVAL;
    k = rl_key(ns, ns_len, key, key_len, buf, &heap, &klen, &rc);
    if (k == NULL)
        return rc;
    s = stripe_of(d, k, klen, &hash);
    pthread_mutex_lock(&s->lock);
    if (!(now >= 0))
        now = rl_clock();
    e = rl_entry(s, hash, k, klen, MG_SHDICT_STRING, sizeof(st), now_ms(), &fresh);
    if (e == NULL) {
        rc = -ENOMEM;
    } else {
        if (fresh) {
            st[0] = now;
            st[1] = st[2] = 0;
        } else {
            memcpy(st, e->data + e->klen, sizeof(st));
        }
        start = st[0], prev = st[1], cur = st[2];
        if (now >= start + window) {
            /* the next window: the current count becomes the previous one,
             * or, after two windows or more, start afresh at now */
            if (now < start + 2 * window) {
                prev = cur;
                start += window;
            } else {
                prev = 0;
                start = now;
            }
            cur = 0;
        }
        el = now > start ? now - start : 0;
        est = prev * (window - el) / window + cur;
        if (est + cost <= limit + RL_EPS) {
            cur += cost;
            out->remaining = rl_floor(limit - est - cost);
            out->retry_after = 0;
            rc = 1;
        } else {
            out->remaining = rl_floor(limit - est);
            out->retry_after = sliding_retry(limit, window, cost, start, prev, cur, now);
            rc = 0;
        }
        out->reset = window - el; /* not start + window - now: rounding */
        st[0] = start, st[1] = prev, st[2] = cur;
        memcpy(e->data + e->klen, st, sizeof(st));
        e->expires = rl_expiry(now_ms(), start + 2 * window - now);
    }
    pthread_mutex_unlock(&s->lock);
    free(heap);
    return rc;
}

mg_shdict_t *mg_ffi_shdict_open(const char *name, size_t name_len, size_t cap)
{
    char buf[65];

    if (name_len == 0 || name_len >= sizeof(buf))
        return NULL;
    memcpy(buf, name, name_len);
    buf[name_len] = '\0';
    return mg_shdict_open(buf, cap);
}

int mg_shdict_name_check(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || len > 64 || len >= cap)
        return MG_STR_BAD;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return MG_STR_BAD;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}
