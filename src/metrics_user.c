/* metrics_user.c: user metrics (metrics_user.h). */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "metrics_user.h"
#include "mg_ffi.h"
#include "utf8.h"

#define CACHE_LINE 64
#define SEP '\xff' /* between the label values of a series' key: never in UTF-8 */

/* One series of the lookup table. The fields are written, under `lock`,
 * before `series` is (release); readers load `series` first (acquire). */
typedef struct slot_s {
    _Atomic uint32_t series; /* its index + 1; 0: empty */
    uint32_t len;
    uint64_t hash;
    char *key;               /* the cleaned values with SEP between (owned) */
} slot_t;

struct mg_umetric_handle_s {
    mg_umetric_t *m;
    _Atomic uint64_t *cells; /* the shard it counts into (gauges: the one block) */
    int shared;              /* several threads may write it: atomic updates */
};

struct mg_umetric_s {
    mg_umetric_t *next; /* in the registry; private ones are in none */
    int refs;           /* generations holding it, under `lock` */
    int kind;
    char *name, *help;
    char **labels;
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    uint32_t max_series;
    size_t stride;                /* cells per series: 1, or the buckets, +Inf and sum */
    int nworkers;                 /* handles [0..nworkers) count into their own shard */
    int nshards;                  /* worker shards, then the shared one (gauges: one) */
    _Atomic uint64_t **shards;    /* each (max_series + 1) * stride cells */
    mg_umetric_handle_t *handles; /* by worker; [nworkers]: the shared shard */
    slot_t *slots;
    uint32_t mask;                /* slots - 1 (a power of two) */
    uint32_t *order;              /* series index -> slot */
    _Atomic uint32_t nseries;
    _Atomic uint64_t overflowed;  /* updates counted in the overflow series */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static mg_umetric_t *registry;
static int nworkers_ = 0;

void mg_umetrics_init(int nworkers)
{
    pthread_mutex_lock(&lock);
    nworkers_ = nworkers > 0 ? nworkers : 0;
    pthread_mutex_unlock(&lock);
}

static const char *const kind_names[] = { "counter", "gauge", "histogram" };

int mg_umetric_kind_parse(const char *name)
{
    for (int k = 0; k < 3; k++)
        if (strcmp(name, kind_names[k]) == 0)
            return k;
    return -1;
}

const char *mg_umetric_kind_name(int kind)
{
    return kind >= 0 && kind < 3 ? kind_names[kind] : "untyped";
}

/* ---- the rules of a declaration ------------------------------------------ */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* promtool's lints (client_golang's promlint) that `promtool check metrics`
 * fails on: a unit that is not a base one, an abbreviated one, the type's
 * name in the metric's name (past its first word). */
static const char *const non_base_units[] = { "minutes", "hours", "days", "weeks", "kelvins",
                                              "fahrenheit", "rankine", "inches", "yards",
                                              "miles", "bits", "calories", "pounds", "ounces" };
static const char *const base_units[] = { "amperes", "bytes", "celsius", "grams", "joules",
                                          "kelvin", "meters", "metres", "seconds", "volts" };
static const char *const unit_prefixes[] = { "pico", "nano", "micro", "milli", "centi", "deci",
                                             "deca", "hecto", "kilo", "kibi", "mega", "mibi",
                                             "giga", "gibi", "tera", "tebi", "peta", "pebi" };
static const char *const abbreviations[] = { "s", "ms", "us", "ns", "sec", "b", "kb", "mb",
                                             "gb", "tb", "pb", "m", "h", "d" };
static const char *const type_words[] = { "counter", "gauge", "histogram", "summary" };

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int word_in(const char *w, size_t n, const char *const *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strlen(list[i]) == n && memcmp(list[i], w, n) == 0)
            return 1;
    return 0;
}

/* The reason a word of a metric's name (not its first) fails promtool. */
static const char *word_lint(const char *w, size_t n)
{
    if (word_in(w, n, type_words, COUNT(type_words)))
        return "names the metric's type (promtool refuses it: leave it out)";
    if (word_in(w, n, abbreviations, COUNT(abbreviations)))
        return "is an abbreviated unit (promtool refuses it: write seconds, bytes, ...)";
    if (word_in(w, n, non_base_units, COUNT(non_base_units)))
        return "is not a base unit (promtool refuses it: use seconds, bytes, meters, ...)";
    for (size_t i = 0; i < COUNT(unit_prefixes); i++) {
        size_t pl = strlen(unit_prefixes[i]);
        if (n > pl && memcmp(w, unit_prefixes[i], pl) == 0 &&
            word_in(w + pl, n - pl, base_units, COUNT(base_units)))
            return "is a scaled unit (promtool refuses it: use the base unit, e.g. seconds "
                   "for milliseconds)";
    }
    return NULL;
}

static int failf(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (cap)
        vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* Besides what Prometheus and promtool ask, the suffix rules keep the
 * series lines of two metrics of other names apart: a counter's end in
 * _total, which no gauge's or histogram's may; a histogram's in _bucket,
 * _sum or _count, which no gauge's may; two histograms' meet only when
 * their names do. */
static int check_name(int kind, const char *name, char *why, size_t cap)
{
    size_t n = strlen(name);
    if (n == 0 || n > 128)
        return failf(why, cap, "name must be 1-128 characters, got %zu", n);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || c == '_' || (c >= '0' && c <= '9' && i > 0)))
            return failf(why, cap, "name \"%s\" must be lower-case snake_case: letters a-z, "
                                   "digits and '_', not a digit first (Prometheus)", name);
    }
    if (strncmp(name, "moongate_", 9) == 0)
        return failf(why, cap, "name \"%s\": moongate_ is the gateway's own metrics' prefix "
                               "(name yours after your service)", name);
    if (kind == MG_UMETRIC_COUNTER && !ends_with(name, "_total"))
        return failf(why, cap, "a counter's name ends in _total (Prometheus): did you mean "
                               "\"%s_total\"?", name);
    if (kind != MG_UMETRIC_COUNTER && ends_with(name, "_total"))
        return failf(why, cap, "name \"%s\": only a counter's name ends in _total", name);
    if (kind == MG_UMETRIC_GAUGE &&
        (ends_with(name, "_count") || ends_with(name, "_sum") || ends_with(name, "_bucket")))
        return failf(why, cap, "name \"%s\": _count, _sum and _bucket end a histogram's "
                               "series, not a gauge's", name);
    const char *w = strchr(name, '_');
    while (w) { /* every word but the first */
        const char *start = w + 1, *end = strchr(start, '_');
        size_t wl = end ? (size_t)(end - start) : strlen(start);
        const char *lint = wl ? word_lint(start, wl) : NULL;
        if (lint)
            return failf(why, cap, "name \"%s\": \"%.*s\" %s", name, (int)wl, start, lint);
        w = end;
    }
    return 0;
}

static int check_label(const char *l, int kind, char *why, size_t cap)
{
    size_t n = strlen(l);
    if (n == 0 || n > 128)
        return failf(why, cap, "a label name must be 1-128 characters, got %zu", n);
    for (size_t i = 0; i < n; i++) {
        char c = l[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (c >= '0' && c <= '9' && i > 0)))
            return failf(why, cap, "label \"%s\" must be letters, digits and '_', not a digit "
                                   "first (Prometheus)", l);
    }
    if (l[0] == '_' && l[1] == '_')
        return failf(why, cap, "label \"%s\": names starting with __ are Prometheus's own", l);
    if (strcmp(l, "le") == 0 || strcmp(l, "quantile") == 0)
        return failf(why, cap, "label \"%s\" is reserved for %s's buckets", l,
                     l[0] == 'l' ? "a histogram" : "a summary");
    (void)kind;
    return 0;
}

int mg_ffi_umetric_check(const char *kind_name, const char *name, const char *const *labels,
                         size_t nlabels, const double *buckets, size_t nbuckets,
                         double max_series, char *why, size_t cap)
{
    int kind = kind_name ? mg_umetric_kind_parse(kind_name) : -1;
    if (kind < 0)
        return failf(why, cap, "unknown metric type");
    if (check_name(kind, name, why, cap) != 0)
        return -1;
    if (nlabels > MG_UMETRIC_MAX_LABELS)
        return failf(why, cap, "%zu labels (at most %d)", nlabels, MG_UMETRIC_MAX_LABELS);
    for (size_t i = 0; i < nlabels; i++) {
        if (check_label(labels[i], kind, why, cap) != 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return failf(why, cap, "label \"%s\" comes twice", labels[i]);
    }
    if (kind == MG_UMETRIC_HISTOGRAM) {
        if (nbuckets < 1 || nbuckets > MG_UMETRIC_MAX_BUCKETS)
            return failf(why, cap, "buckets must list 1-%d upper bounds, got %zu",
                         MG_UMETRIC_MAX_BUCKETS, nbuckets);
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]))
                return failf(why, cap, "buckets[%zu] must be a finite number (+Inf is always "
                                       "the last bucket)", i + 1);
            if (i > 0 && !(buckets[i] > buckets[i - 1]))
                return failf(why, cap, "buckets must increase: buckets[%zu] = %g is not above "
                                       "%g", i + 1, buckets[i], buckets[i - 1]);
        }
    } else if (nbuckets) {
        return failf(why, cap, "only a histogram has buckets");
    }
    if (!(max_series >= 1 && max_series <= MG_UMETRIC_SERIES_MAX) ||
        max_series != floor(max_series))
        return failf(why, cap, "max_series must be an integer 1-%d", MG_UMETRIC_SERIES_MAX);
    return 0;
}

/* ---- making and freeing ---------------------------------------------------- */

static void *alloc_lines(size_t size)
{
    size = (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    void *p = aligned_alloc(CACHE_LINE, size ? size : CACHE_LINE);
    if (p)
        memset(p, 0, size ? size : CACHE_LINE);
    return p;
}

static void metric_free(mg_umetric_t *m)
{
    if (!m)
        return;
    for (int i = 0; m->shards && i < m->nshards; i++)
        free((void *)m->shards[i]);
    free(m->shards);
    free(m->handles);
    for (uint32_t i = 0; m->slots && i <= m->mask; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m->order);
    for (size_t i = 0; m->labels && i < m->nlabels; i++)
        free(m->labels[i]);
    free(m->labels);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

static mg_umetric_t *metric_new(int kind, const char *name, const char *help,
                                const char *const *labels, size_t nlabels, const double *bounds,
                                size_t nbounds, uint32_t max_series, int nworkers)
{
    mg_umetric_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->kind = kind;
    m->nlabels = nlabels;
    m->nbounds = kind == MG_UMETRIC_HISTOGRAM ? nbounds : 0;
    m->max_series = nlabels ? max_series : 1;
    m->stride = kind == MG_UMETRIC_HISTOGRAM ? m->nbounds + 2 : 1;
    m->nworkers = nworkers;
    m->nshards = kind == MG_UMETRIC_GAUGE ? 1 : nworkers + 1;
    int ok = (m->name = strdup(name)) && (m->help = strdup(help ? help : "")) &&
             (!nlabels || (m->labels = calloc(nlabels, sizeof(char *)))) &&
             (!m->nbounds || (m->bounds = malloc(m->nbounds * sizeof(double)))) &&
             (m->shards = calloc((size_t)m->nshards, sizeof(*m->shards))) &&
             (m->handles = calloc((size_t)nworkers + 1, sizeof(*m->handles)));
    for (size_t i = 0; ok && i < nlabels; i++)
        ok = (m->labels[i] = strdup(labels[i])) != NULL;
    if (ok && m->nbounds)
        memcpy(m->bounds, bounds, m->nbounds * sizeof(double));
    size_t cells = ((size_t)m->max_series + 1) * m->stride;
    for (int i = 0; ok && i < m->nshards; i++)
        ok = (m->shards[i] = alloc_lines(cells * sizeof(uint64_t))) != NULL;
    if (ok && nlabels) {
        uint32_t n = 8;
        while (n < 2 * m->max_series)
            n *= 2;
        m->mask = n - 1;
        ok = (m->slots = calloc(n, sizeof(slot_t))) &&
             (m->order = calloc(m->max_series, sizeof(uint32_t)));
    }
    if (!ok) {
        metric_free(m);
        return NULL;
    }
    for (int w = 0; w <= nworkers; w++) {
        int shard = kind == MG_UMETRIC_GAUGE ? 0 : w;
        m->handles[w] = (mg_umetric_handle_t){ .m = m, .cells = m->shards[shard],
                                               .shared = kind == MG_UMETRIC_GAUGE ||
                                                         w == nworkers };
    }
    return m;
}

static int same_decl(const mg_umetric_t *m, const mg_umetric_decl_t *d)
{
    if (m->kind != d->kind || strcmp(m->name, d->name) != 0 || m->nlabels != d->nlabels ||
        (d->nlabels ? m->max_series != d->max_series : 0) ||
        m->nbounds != (d->kind == MG_UMETRIC_HISTOGRAM ? d->nbuckets : 0))
        return 0;
    for (size_t i = 0; i < m->nlabels; i++)
        if (strcmp(m->labels[i], d->labels[i]) != 0)
            return 0;
    return m->nbounds == 0 || memcmp(m->bounds, d->buckets, m->nbounds * sizeof(double)) == 0;
}

mg_umetric_t *mg_umetric_acquire(const mg_umetric_decl_t *d)
{
    pthread_mutex_lock(&lock);
    mg_umetric_t *m = registry;
    while (m && !same_decl(m, d))
        m = m->next;
    if (m) {
        /* the help may change without a reset (control thread: renders too) */
        char *help = strdup(d->help ? d->help : "");
        if (help) {
            free(m->help);
            m->help = help;
        }
        m->refs++;
    } else if ((m = metric_new(d->kind, d->name, d->help, (const char *const *)d->labels,
                               d->nlabels, d->buckets, d->nbuckets, d->max_series, nworkers_))) {
        m->refs = 1;
        m->next = registry;
        registry = m;
    }
    pthread_mutex_unlock(&lock);
    return m;
}

void mg_umetric_release(mg_umetric_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&lock);
    int last = --m->refs == 0;
    if (last) {
        mg_umetric_t **p = &registry;
        while (*p && *p != m)
            p = &(*p)->next;
        if (*p)
            *p = m->next;
    }
    pthread_mutex_unlock(&lock);
    if (last)
        metric_free(m);
}

mg_umetric_handle_t *mg_umetric_handle(mg_umetric_t *m, int w)
{
    return &m->handles[w >= 0 && w < m->nworkers ? w : m->nworkers];
}

/* ---- series ------------------------------------------------------------------ */

/* A label value as series keys hold it: at most MG_UMETRIC_VALUE_MAX
 * bytes of UTF-8 (cut at a character), each byte outside a well-formed
 * sequence and each control character as U+FFFD. Returns its length; p
 * itself is used when it is already so (*out then points at it). */
static size_t clean(const char *p, size_t n, char *buf, const char **out)
{
    size_t i = 0;
    while (i < n && (unsigned char)p[i] >= 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == n && n <= MG_UMETRIC_VALUE_MAX) {
        *out = p;
        return n;
    }
    size_t o = 0;
    const unsigned char *s = (const unsigned char *)p;
    for (i = 0; i < n;) {
        size_t len = mg_utf8_seq(s + i, n - i);
        int bad = len == 0 || s[i] < 0x20 || s[i] == 0x7f;
        size_t put = bad ? 3 : len;
        if (o + put > MG_UMETRIC_VALUE_MAX)
            break;
        memcpy(buf + o, bad ? MG_UTF8_REPLACEMENT : (const char *)s + i, put);
        o += put;
        i += bad ? 1 : len;
    }
    *out = buf;
    return o;
}

typedef struct key_s {
    const char *v[MG_UMETRIC_MAX_LABELS];
    size_t n[MG_UMETRIC_MAX_LABELS];
    char buf[MG_UMETRIC_MAX_LABELS][MG_UMETRIC_VALUE_MAX];
    uint64_t hash;
    size_t len; /* with the separators */
    int other;  /* every value is "(other)": the overflow series itself */
} series_key_t;

static void key_make(const mg_umetric_t *m, const char *const *v, const size_t *n, series_key_t *k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    k->len = m->nlabels - 1;
    k->other = 1;
    for (size_t i = 0; i < m->nlabels; i++) {
        k->n[i] = clean(v[i] ? v[i] : "", v[i] ? n[i] : 0, k->buf[i], &k->v[i]);
        k->len += k->n[i];
        k->other &= k->n[i] == sizeof(MG_UMETRIC_OTHER) - 1 &&
                    memcmp(k->v[i], MG_UMETRIC_OTHER, k->n[i]) == 0;
        for (size_t j = 0; j < k->n[i]; j++)
            h = (h ^ (unsigned char)k->v[i][j]) * 1099511628211ull;
        h = (h ^ (unsigned char)SEP) * 1099511628211ull;
    }
    k->hash = h;
}

static int key_is(const series_key_t *k, const slot_t *s, size_t nlabels)
{
    if (s->hash != k->hash || s->len != k->len)
        return 0;
    const char *p = s->key;
    for (size_t i = 0; i < nlabels; i++) {
        if (memcmp(p, k->v[i], k->n[i]) != 0)
            return 0;
        p += k->n[i] + 1;
    }
    return 1;
}

/* The series index of key k, or -1 (ins: the slot where it would go). */
static long key_find(const mg_umetric_t *m, const series_key_t *k, uint32_t *ins)
{
    for (uint32_t i = (uint32_t)k->hash & m->mask;; i = (i + 1) & m->mask) {
        uint32_t s = atomic_load_explicit(&m->slots[i].series, memory_order_acquire);
        if (s == 0) {
            *ins = i;
            return -1;
        }
        if (key_is(k, &m->slots[i], m->nlabels))
            return (long)s - 1;
    }
}

/* The series of values v: found without a lock, added under it, or the
 * overflow series (index max_series) when max_series are in use. */
static uint32_t series_of(mg_umetric_t *m, const char *const *v, const size_t *n)
{
    if (!m->nlabels)
        return 0;
    series_key_t k;
    uint32_t ins;
    key_make(m, v, n, &k);
    if (k.other)
        return m->max_series;
    long s = key_find(m, &k, &ins);
    if (s >= 0)
        return (uint32_t)s;
    if (atomic_load_explicit(&m->nseries, memory_order_relaxed) >= m->max_series)
        goto overflow;
    pthread_mutex_lock(&lock);
    s = key_find(m, &k, &ins); /* another thread may have added it meanwhile */
    uint32_t count = atomic_load_explicit(&m->nseries, memory_order_relaxed);
    char *key = s < 0 && count < m->max_series ? malloc(k.len + 1) : NULL; /* "" too */
    if (key) {
        char *p = key;
        for (size_t i = 0; i < m->nlabels; i++) {
            memcpy(p, k.v[i], k.n[i]);
            p += k.n[i];
            if (i + 1 < m->nlabels)
                *p++ = SEP;
        }
        slot_t *sl = &m->slots[ins];
        sl->key = key;
        sl->len = (uint32_t)k.len;
        sl->hash = k.hash;
        m->order[count] = ins;
        atomic_store_explicit(&sl->series, count + 1, memory_order_release);
        atomic_store_explicit(&m->nseries, count + 1, memory_order_release);
        s = count;
    }
    pthread_mutex_unlock(&lock);
    if (s >= 0)
        return (uint32_t)s;
overflow: /* full, or out of memory */
    atomic_fetch_add_explicit(&m->overflowed, 1, memory_order_relaxed);
    return m->max_series;
}

/* ---- updates ------------------------------------------------------------------- */

static double as_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static uint64_t as_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    return bits;
}

/* c += v: a plain store where the shard has one writer (a worker's). */
static void add_double(_Atomic uint64_t *c, double v, int shared)
{
    uint64_t old = atomic_load_explicit(c, memory_order_relaxed);
    if (!shared) {
        atomic_store_explicit(c, as_bits(as_double(old) + v), memory_order_relaxed);
        return;
    }
    while (!atomic_compare_exchange_weak_explicit(c, &old, as_bits(as_double(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static void add_one(_Atomic uint64_t *c, int shared)
{
    if (shared)
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    else
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

void mg_ffi_umetric_updatev(mg_umetric_handle_t *h, int op, double v, const char *const *vals,
                            const size_t *lens)
{
    mg_umetric_t *m = h->m;
    uint32_t s = series_of(m, vals, lens);
    _Atomic uint64_t *c = h->cells + (size_t)s * m->stride;
    if (m->kind == MG_UMETRIC_HISTOGRAM) {
        if (op != MG_FFI_UMETRIC_OBSERVE)
            return;
        size_t b = 0;
        while (b < m->nbounds && !(v <= m->bounds[b]))
            b++;
        add_one(&c[b], h->shared);
        add_double(&c[m->nbounds + 1], v, h->shared);
    } else if (op == MG_FFI_UMETRIC_SET && m->kind == MG_UMETRIC_GAUGE) {
        atomic_store_explicit(c, as_bits(v), memory_order_relaxed);
    } else if (op == MG_FFI_UMETRIC_ADD) {
        add_double(c, v, h->shared);
    }
}

void mg_ffi_umetric_update(mg_umetric_handle_t *h, int op, double v, const char *a, size_t al,
                           const char *b, size_t bl, const char *c, size_t cl, const char *d,
                           size_t dl)
{
    const char *vals[4] = { a, b, c, d };
    const size_t lens[4] = { al, bl, cl, dl };
    mg_ffi_umetric_updatev(h, op, v, vals, lens);
}

/* ---- reading --------------------------------------------------------------------- */

/* Series s's value summed over the shards: out[0] the value (a
 * histogram's count), out[1] a histogram's sum; out[2..] its buckets
 * (not cumulative) when `buckets`. */
static void series_value(const mg_umetric_t *m, uint32_t s, double *out, int buckets)
{
    size_t nb = m->nbounds;
    memset(out, 0, sizeof(double) * (2 + (buckets ? nb + 1 : 0)));
    for (int w = 0; w < m->nshards; w++) {
        const _Atomic uint64_t *c = m->shards[w] + (size_t)s * m->stride;
        if (m->kind != MG_UMETRIC_HISTOGRAM) {
            out[0] += as_double(atomic_load_explicit(&c[0], memory_order_relaxed));
            continue;
        }
        for (size_t b = 0; b <= nb; b++) {
            uint64_t n = atomic_load_explicit(&c[b], memory_order_relaxed);
            out[0] += (double)n;
            if (buckets)
                out[2 + b] += (double)n;
        }
        out[1] += as_double(atomic_load_explicit(&c[nb + 1], memory_order_relaxed));
    }
}

int mg_ffi_umetric_read(mg_umetric_handle_t *h, const char *const *vals, const size_t *lens,
                        double *out)
{
    mg_umetric_t *m = h->m;
    long s = 0;
    if (m->nlabels) {
        series_key_t k;
        uint32_t ins;
        key_make(m, vals, lens, &k);
        s = k.other ? (long)m->max_series : key_find(m, &k, &ins);
        if (s < 0)
            return -1;
    }
    series_value(m, (uint32_t)s, out, 0);
    return 0;
}

mg_umetric_handle_t *mg_ffi_umetric_private(const char *kind, const char *name,
                                            const char *help, const char *const *labels,
                                            size_t nlabels, const double *buckets,
                                            size_t nbuckets, uint32_t max_series)
{
    if (mg_ffi_umetric_check(kind, name, labels, nlabels, buckets, nbuckets, max_series, NULL,
                             0) != 0)
        return NULL;
    mg_umetric_t *m = metric_new(mg_umetric_kind_parse(kind), name, help, labels, nlabels,
                                 buckets, nbuckets, max_series, 0);
    return m ? &m->handles[0] : NULL;
}

void mg_ffi_umetric_private_free(mg_umetric_handle_t *h)
{
    if (h)
        metric_free(h->m);
}

/* ---- rendering -------------------------------------------------------------------- */

typedef struct out_s {
    char *p;
    size_t len, cap;
    int failed;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->failed = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(out_t *o, const char *s) { put(o, s, strlen(s)); }

/* A number as Prometheus reads it, in its shortest exact form. */
static void put_num(out_t *o, double v)
{
    char b[40];
    if (isnan(v)) {
        puts_(o, "NaN");
        return;
    }
    if (isinf(v)) {
        puts_(o, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(b, sizeof(b), "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            break;
    }
    puts_(o, b);
}

/* A label value (clean UTF-8 without control characters) with \ and "
 * escaped. */
static void put_value(out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' || s[i] == '"')
            put(o, "\\", 1);
        put(o, s + i, 1);
    }
}

/* `{l1="v1",...` for series key `key` (NULL: the overflow series), the
 * brace left open; nothing for a metric without labels. */
static void put_labels(out_t *o, const mg_umetric_t *m, const char *key, size_t len)
{
    const char *p = key, *end = key ? key + len : NULL;
    for (size_t i = 0; i < m->nlabels; i++) {
        put(o, i ? "," : "{", 1);
        puts_(o, m->labels[i]);
        put(o, "=\"", 2);
        if (key) {
            const char *sep = memchr(p, SEP, (size_t)(end - p));
            size_t vl = sep ? (size_t)(sep - p) : (size_t)(end - p);
            put_value(o, p, vl);
            p += vl + 1;
        } else {
            puts_(o, MG_UMETRIC_OTHER);
        }
        put(o, "\"", 1);
    }
}

static void put_series(out_t *o, const mg_umetric_t *m, uint32_t s, const char *key, size_t len)
{
    double v[2 + MG_UMETRIC_MAX_BUCKETS + 1];
    series_value(m, s, v, 1);
    if (m->kind != MG_UMETRIC_HISTOGRAM) {
        puts_(o, m->name);
        put_labels(o, m, key, len);
        puts_(o, m->nlabels ? "} " : " ");
        put_num(o, v[0]);
        put(o, "\n", 1);
        return;
    }
    double cum = 0;
    for (size_t b = 0; b <= m->nbounds; b++) {
        cum += v[2 + b];
        puts_(o, m->name);
        puts_(o, "_bucket");
        put_labels(o, m, key, len);
        puts_(o, m->nlabels ? ",le=\"" : "{le=\"");
        if (b < m->nbounds)
            put_num(o, m->bounds[b]);
        else
            puts_(o, "+Inf");
        puts_(o, "\"} ");
        put_num(o, cum);
        put(o, "\n", 1);
    }
    const char *part[2] = { "_sum", "_count" };
    for (int k = 0; k < 2; k++) {
        puts_(o, m->name);
        puts_(o, part[k]);
        put_labels(o, m, key, len);
        puts_(o, m->nlabels ? "} " : " ");
        put_num(o, k == 0 ? v[1] : cum);
        put(o, "\n", 1);
    }
}

/* HELP text: backslash and line feed escaped. */
static void put_help(out_t *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(o, "\\\\");
        else if (*s == '\n')
            puts_(o, "\\n");
        else
            put(o, s, 1);
    }
}

char *mg_umetrics_render(mg_umetric_t *const *ms, size_t n, size_t *len)
{
    out_t o = { 0 };
    puts_(&o, "");
    int labelled = 0;
    for (size_t i = 0; i < n; i++) {
        const mg_umetric_t *m = ms[i];
        puts_(&o, "# HELP ");
        puts_(&o, m->name);
        put(&o, " ", 1);
        put_help(&o, m->help);
        puts_(&o, "\n# TYPE ");
        puts_(&o, m->name);
        put(&o, " ", 1);
        puts_(&o, mg_umetric_kind_name(m->kind));
        put(&o, "\n", 1);
        if (!m->nlabels) {
            put_series(&o, m, 0, NULL, 0);
            continue;
        }
        labelled = 1;
        uint32_t count = atomic_load_explicit(&m->nseries, memory_order_acquire);
        for (uint32_t s = 0; s < count; s++) {
            const slot_t *sl = &m->slots[m->order[s]];
            put_series(&o, m, s, sl->key, sl->len);
        }
        double v[2];
        series_value(m, m->max_series, v, 0);
        if (v[0] != 0 || atomic_load_explicit(&m->overflowed, memory_order_relaxed))
            put_series(&o, m, m->max_series, NULL, 0);
    }
    if (labelled) {
        /* no '"' in the help: OpenMetrics wants it escaped, the text format
         * refuses the escape (the page is the same text for both) */
        puts_(&o, "# HELP moongate_user_metric_overflow_total Updates of a user metric counted "
                  "in its overflow series (its labels all (other)): its max_series label sets "
                  "were in use.\n# TYPE moongate_user_metric_overflow_total counter\n");
        for (size_t i = 0; i < n; i++) {
            const mg_umetric_t *m = ms[i];
            if (!m->nlabels)
                continue;
            puts_(&o, "moongate_user_metric_overflow_total{metric=\"");
            puts_(&o, m->name);
            puts_(&o, "\"} ");
            put_num(&o, (double)atomic_load_explicit(&m->overflowed, memory_order_relaxed));
            put(&o, "\n", 1);
        }
    }
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
