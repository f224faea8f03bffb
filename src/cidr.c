/* cidr.c: address keys and CIDR sets (contract in cidr.h).
 *
 * A range is [lo, hi] inclusive over 128-bit keys held as two uint64_t
 * (hi word first) so that comparison is two integer compares. Building
 * sorts by lo and merges a range into the previous one when it overlaps or
 * touches it (lo <= prev.hi + 1), so the built array is disjoint, sorted
 * and non-adjacent: a lookup is one binary search for the last range whose
 * lo <= key. */
#include "cidr.h"
#include "mg_ffi.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct {
    uint64_t hi, lo;
} key_t128;

typedef struct {
    key_t128 first, last;
} range_t;

struct mg_cidr_set_s {
    range_t *r;
    size_t n, cap;
    int built;
};

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static key_t128 to_key(const mg_addr_t *a)
{
    key_t128 k = {0, 0};
    for (int i = 0; i < 8; i++) {
        k.hi = k.hi << 8 | a->b[i];
        k.lo = k.lo << 8 | a->b[8 + i];
    }
    return k;
}

static void from_key(key_t128 k, mg_addr_t *a)
{
    for (int i = 7; i >= 0; i--) {
        a->b[i] = (uint8_t)k.hi;
        a->b[8 + i] = (uint8_t)k.lo;
        k.hi >>= 8;
        k.lo >>= 8;
    }
}

static int key_cmp(key_t128 a, key_t128 b)
{
    if (a.hi != b.hi)
        return a.hi < b.hi ? -1 : 1;
    return a.lo < b.lo ? -1 : a.lo > b.lo;
}

/* The mask of the first `bits` bits of a 128-bit key. */
static key_t128 prefix_mask(unsigned bits)
{
    key_t128 m;
    m.hi = bits == 0 ? 0 : bits >= 64 ? UINT64_MAX : UINT64_MAX << (64 - bits);
    m.lo = bits <= 64 ? 0 : bits >= 128 ? UINT64_MAX : UINT64_MAX << (128 - bits);
    return m;
}

int mg_addr_parse(const char *s, size_t n, mg_addr_t *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof buf || memchr(s, '\0', n))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    /* glibc's inet_pton is strict: four decimal parts, no leading zeros,
     * nothing after; IPv6 without zone id or brackets */
    if (memchr(s, ':', n) == NULL) {
        memcpy(out->b, v4_prefix, sizeof v4_prefix);
        return inet_pton(AF_INET, buf, out->b + 12) == 1 ? 0 : -1;
    }
    return inet_pton(AF_INET6, buf, out->b) == 1 ? 0 : -1;
}

void mg_addr_from_v4(const uint8_t v4[4], mg_addr_t *out)
{
    memcpy(out->b, v4_prefix, sizeof v4_prefix);
    memcpy(out->b + 12, v4, 4);
}

int mg_addr_from_sockaddr(const struct sockaddr *sa, mg_addr_t *out)
{
    if (sa->sa_family == AF_INET) {
        mg_addr_from_v4((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, out);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

int mg_addr_is_v4(const mg_addr_t *a)
{
    return memcmp(a->b, v4_prefix, sizeof v4_prefix) == 0;
}

int mg_addr_format(const mg_addr_t *a, char *buf, size_t cap)
{
    char tmp[INET6_ADDRSTRLEN];
    const char *p = mg_addr_is_v4(a) ? inet_ntop(AF_INET, a->b + 12, tmp, sizeof tmp)
                                     : inet_ntop(AF_INET6, a->b, tmp, sizeof tmp);
    size_t len = p ? strlen(tmp) : 0;
    if (!p || len + 1 > cap)
        return -1;
    memcpy(buf, tmp, len + 1);
    return (int)len;
}

mg_cidr_set_t *mg_cidr_set_new(void)
{
    return calloc(1, sizeof(mg_cidr_set_t));
}

static void reason(char *err, size_t cap, const char *fmt, const char *text, size_t n,
                   const char *extra)
{
    if (err && cap)
        snprintf(err, cap, fmt, (int)(n > 64 ? 64 : n), text, extra);
}

/* Parses the "/LEN" part: 1-3 digits, no sign, no leading zero. */
static int parse_len(const char *p, size_t n, unsigned *len)
{
    if (n == 0 || n > 3 || (n > 1 && p[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    *len = v;
    return 0;
}

int mg_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap)
{
    if (s->built)
        return -2;
    const char *slash = memchr(text, '/', n);
    size_t alen = slash ? (size_t)(slash - text) : n;
    mg_addr_t a;
    if (mg_addr_parse(text, alen, &a) != 0) {
        reason(err, errcap, "\"%.*s\": not an IPv4 or IPv6 address%s", text, n,
               " (want ADDR or ADDR/LEN, e.g. 10.0.0.0/8 or 2001:db8::/32)");
        return -1;
    }
    int v4 = memchr(text, ':', alen) == NULL;
    unsigned max = v4 ? 32 : 128, len = max;
    if (slash && parse_len(slash + 1, n - alen - 1, &len) != 0) {
        reason(err, errcap, "\"%.*s\": the prefix length is not a number%s", text, n,
               v4 ? " (0 to 32)" : " (0 to 128)");
        return -1;
    }
    if (len > max) {
        reason(err, errcap, "\"%.*s\": prefix length too long%s", text, n,
               v4 ? " for IPv4 (at most 32)" : " for IPv6 (at most 128)");
        return -1;
    }
    unsigned bits = v4 ? 96 + len : len;
    key_t128 k = to_key(&a), m = prefix_mask(bits);
    if ((k.hi & ~m.hi) || (k.lo & ~m.lo)) {
        char fix[INET6_ADDRSTRLEN + 48];
        mg_addr_t net;
        key_t128 masked = {k.hi & m.hi, k.lo & m.lo};
        from_key(masked, &net);
        int fl = mg_addr_format(&net, fix, INET6_ADDRSTRLEN);
        snprintf(fix + (fl > 0 ? fl : 0), sizeof fix - (size_t)(fl > 0 ? fl : 0), "/%u?", len);
        reason(err, errcap, "\"%.*s\": bits set after the prefix length: did you mean %s", text, n,
               fix);
        return -1;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        range_t *r = realloc(s->r, cap * sizeof *r);
        if (!r)
            return -2;
        s->r = r;
        s->cap = cap;
    }
    s->r[s->n].first = k;
    s->r[s->n].last = (key_t128){k.hi | ~m.hi, k.lo | ~m.lo};
    s->n++;
    return 0;
}

static int by_first(const void *x, const void *y)
{
    return key_cmp(((const range_t *)x)->first, ((const range_t *)y)->first);
}

int mg_cidr_set_build(mg_cidr_set_t *s)
{
    if (s->built)
        return 0;
    if (s->n > 1)
        qsort(s->r, s->n, sizeof *s->r, by_first);
    size_t out = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (out > 0) {
            range_t *p = &s->r[out - 1];
            key_t128 next = p->last; /* p->last + 1, unless it is the top */
            int top = next.hi == UINT64_MAX && next.lo == UINT64_MAX;
            if (!top && ++next.lo == 0)
                next.hi++;
            if (top || key_cmp(s->r[i].first, next) <= 0) {
                if (key_cmp(s->r[i].last, p->last) > 0)
                    p->last = s->r[i].last;
                continue;
            }
        }
        s->r[out++] = s->r[i];
    }
    s->n = out;
    s->built = 1;
    if (out > 0 && out < s->cap) { /* give back what merging freed */
        range_t *r = realloc(s->r, out * sizeof *r);
        if (r) {
            s->r = r;
            s->cap = out;
        }
    }
    return 0;
}

int mg_cidr_set_contains(const mg_cidr_set_t *s, const mg_addr_t *a, unsigned *probes)
{
    unsigned steps = 0;
    int found = 0;
    if (s && s->built && s->n > 0) {
        key_t128 k = to_key(a);
        size_t lo = 0, hi = s->n; /* the answer is the last r[i].first <= k, in [lo, hi) */
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            steps++;
            if (key_cmp(s->r[mid].first, k) <= 0)
                lo = mid;
            else
                hi = mid;
        }
        steps++;
        found = key_cmp(s->r[lo].first, k) <= 0 && key_cmp(k, s->r[lo].last) <= 0;
    }
    if (probes)
        *probes = steps;
    return found;
}

int mg_cidr_set_contains_text(const mg_cidr_set_t *s, const char *text, size_t n)
{
    mg_addr_t a;
    if (mg_addr_parse(text, n, &a) != 0)
        return -1;
    return mg_cidr_set_contains(s, &a, NULL);
}

size_t mg_cidr_set_count(const mg_cidr_set_t *s)
{
    return s && s->built ? s->n : 0;
}

int mg_cidr_set_range(const mg_cidr_set_t *s, size_t i, mg_addr_t *first, mg_addr_t *last)
{
    if (!s || !s->built || i >= s->n)
        return -1;
    from_key(s->r[i].first, first);
    from_key(s->r[i].last, last);
    return 0;
}

void mg_cidr_set_free(mg_cidr_set_t *s)
{
    if (!s)
        return;
    free(s->r);
    free(s);
}

/* The FFI face of a set (mg_ffi.h, "CIDR sets"): the `ip` policy
 * (lua/moongate/ip.lua) builds its lists while a config loads and looks up
 * the client's address text on each request. Thin on purpose: every rule
 * stays in the functions above. */
mg_cidr_set_t *mg_ffi_cidr_set_new(void)
{
    return mg_cidr_set_new();
}

int mg_ffi_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap)
{
    return mg_cidr_set_add(s, text, n, err, errcap);
}

int mg_ffi_cidr_set_build(mg_cidr_set_t *s)
{
    return mg_cidr_set_build(s);
}

int mg_ffi_cidr_set_contains(const mg_cidr_set_t *s, const char *text, size_t n)
{
    return mg_cidr_set_contains_text(s, text, n);
}

size_t mg_ffi_cidr_set_count(const mg_cidr_set_t *s)
{
    return mg_cidr_set_count(s);
}

void mg_ffi_cidr_set_free(mg_cidr_set_t *s)
{
    mg_cidr_set_free(s);
}
