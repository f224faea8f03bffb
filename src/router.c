/* router.c: route matching (see router.h for the contract).
 *
 * mg_router_build() compiles every pattern into a run of segments (literal or
 * ":param") plus a tail: exact ("/a"), prefix ("/a/") or rest (a last "**"
 * segment). It precomputes the lengths match needs and sorts the routes most
 * specific first. Matching is then a linear scan that returns the first route
 * matching in full, so it needs no allocation and no backtracking. The scan
 * is O(routes * path); a segment trie would cut that, but configs have tens
 * of routes, not thousands, and a sorted list is far easier to get right.
 *
 * Specificity (the sort order): walk both patterns segment by segment and rank
 * what each has at that position: literal 4 > ":param" 3 > end of an exact
 * pattern 2 > prefix or "**" tail 1. The first position where the ranks differ
 * decides; equal literals or params go on to the next position; two ends or
 * two tails are a tie, broken by constraint_score() and then by route->index
 * (declaration order). So for the
 * path "/a/b", "/a/b" beats "/a/:x", which beats both "/a/" and a "**" tail
 * after "/a"; for the path "/a", the exact "/a" beats a "**" tail after "/a".
 * Host, headers, methods and listen port only break ties between equal
 * paths (constraint_score).
 */
#include "router.h"
#include "grpc.h"
#include "mg_ffi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SEG_LIT, SEG_PARAM };
enum { TAIL_EXACT, TAIL_PREFIX, TAIL_REST };

typedef struct seg_s {
    const char *s; /* literal: into route->path; param: NUL-terminated name in names */
    size_t len;
    int kind;
} seg_t;

typedef struct entry_s {
    const mg_route_t *route;
    size_t pos;   /* position in the routes array (last tie-breaker) */
    seg_t *segs;  /* into mg_router_t.segs */
    size_t nsegs;
    int tail;
    const char *host; /* NULL = any; without "*." and without a trailing '.' */
    size_t host_len;
    int host_wild;    /* host was "*.<host>" */
    size_t method_len[MG_MAX_METHODS];
    size_t hname_len[MG_MAX_ROUTE_HEADERS];
    size_t hvalue_len[MG_MAX_ROUTE_HEADERS];
} entry_t;

struct mg_router_s {
    entry_t *entries; /* sorted, most specific first */
    size_t n;
    seg_t *segs;
    char *names;
};

static int name_start(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int name_char(unsigned char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lower-case hex is not normal form (see uri.h) */
}

/* Writes `fmt` to why[cap] (when why is not NULL) with "%s" standing for
 * s[0..len) in double quotes: '"', '\\' and control bytes escaped (\n \r \t
 * or \<decimal>), cut to 57 bytes plus "..." past 60, as config errors
 * quote every value (lua/moongate/base.lua). Returns -1. */
static int fail(char *why, size_t cap, const char *fmt, const char *s, size_t len)
{
    char q[4 * 60 + 8];
    size_t i, n = 0, take = len > 60 ? 57 : len;

    if (why == NULL || cap == 0)
        return -1;
    q[n++] = '"';
    for (i = 0; i < take; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\n' || c == '\r' || c == '\t' || c == '"' || c == '\\') {
            q[n++] = '\\';
            q[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(q + n, sizeof(q) - n, "\\%u", c);
        } else {
            q[n++] = (char)c;
        }
    }
    if (take < len) {
        memcpy(q + n, "...", 3);
        n += 3;
    }
    q[n++] = '"';
    q[n] = '\0';
    snprintf(why, cap, fmt, q);
    return -1;
}

_Static_assert(sizeof(((mg_ffi_pattern_t *)0)->param_off) / sizeof(size_t) == MG_ROUTER_MAX_PARAMS,
               "mg_ffi_pattern_t holds MG_ROUTER_MAX_PARAMS params");

#define BAD_NAME "bad parameter name %s (':' then a letter or '_', then letters, digits, '_')"
#define STR_(x) #x
#define STR(x) STR_(x)

/* Checks one literal segment: it must be able to match a normalised path
 * (uri.h), or the route could never be reached. 0, or -1 with the reason. */
static int check_literal(const char *s, size_t len, char *why, size_t cap)
{
    size_t i;

    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return fail(why, cap, "'.' and '..' segments are not allowed (paths are normalised)",
                    NULL, 0);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '%') {
            int hi, lo, v;

            if (len - i < 3 || (hi = hexval((unsigned char)s[i + 1])) < 0 ||
                (lo = hexval((unsigned char)s[i + 2])) < 0)
                return fail(why, cap,
                            "bad percent-escape (use %%XX with upper-case hex digits)", NULL, 0);
            v = hi << 4 | lo;
            if (name_char((unsigned char)v) || v == '-' || v == '.' || v == '~')
                return fail(why, cap,
                            "percent-escape of an unreserved character (write it plainly)",
                            NULL, 0);
            i += 2;
        } else if (c == '*') {
            return fail(why, cap, "'*' is only allowed as a whole '**' last segment", NULL, 0);
        } else if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '?' || c == '#') {
            return fail(why, cap,
                        "invalid character %s (space, control, '\\', '?', '#' or non-ASCII)",
                        s + i, 1);
        }
    }
    return 0;
}

/* Walks pattern[0..plen), validating it and filling *info when not NULL.
 * When segs is not NULL, also fills segs, *nsegs, *tail and copies param
 * names (NUL-terminated) to *names, advancing it. Returns 0, or -1 with the
 * reason in why[cap] (see fail). */
static int parse(const char *pattern, size_t plen, mg_ffi_pattern_t *info, seg_t *segs,
                 size_t *nsegs, int *tail, char **names, char *why, size_t cap)
{
    const char *p, *e, *end = pattern + plen;
    const char *pnames[MG_ROUTER_MAX_PARAMS];
    size_t plens[MG_ROUTER_MAX_PARAMS];
    size_t nparams = 0, n = 0, i, literal = plen;
    int t = TAIL_EXACT;

    if (pattern == NULL || plen == 0 || pattern[0] != '/')
        return fail(why, cap, "it must start with '/'", NULL, 0);

    for (p = pattern + 1; p < end; p = e < end ? e + 1 : e) {
        size_t len;

        e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        len = (size_t)(e - p);
        if (len == 0)
            return fail(why, cap, "empty segment ('//')", NULL, 0);

        if (len == 2 && p[0] == '*' && p[1] == '*') {
            if (e != end)
                return fail(why, cap, "'**' must be the last segment", NULL, 0);
            if (literal == plen)
                literal = (size_t)(p - pattern);
            t = TAIL_REST;
            break;
        }
        if (p[0] == ':') {
            if (len < 2 || !name_start((unsigned char)p[1]))
                return fail(why, cap, BAD_NAME, p, len);
            for (i = 2; i < len; i++)
                if (!name_char((unsigned char)p[i]))
                    return fail(why, cap, BAD_NAME, p, len);
            for (i = 0; i < nparams; i++) {
                if (plens[i] == len - 1 && memcmp(pnames[i], p + 1, len - 1) == 0) {
                    if (why != NULL && cap > 0)
                        snprintf(why, cap, "duplicate parameter ':%.*s'", (int)(len - 1), p + 1);
                    return -1;
                }
            }
            if (nparams == MG_ROUTER_MAX_PARAMS)
                return fail(why, cap,
                            "too many parameters (at most " STR(MG_ROUTER_MAX_PARAMS) ")",
                            NULL, 0);
            if (info) {
                info->param_off[nparams] = (size_t)(p + 1 - pattern);
                info->param_len[nparams] = len - 1;
            }
            pnames[nparams] = p + 1;
            plens[nparams++] = len - 1;
            if (literal == plen)
                literal = (size_t)(p - pattern);
            if (segs) {
                memcpy(*names, p + 1, len - 1);
                (*names)[len - 1] = '\0';
                segs[n].s = *names;
                segs[n].len = len - 1;
                segs[n].kind = SEG_PARAM;
                *names += len;
            }
        } else {
            if (check_literal(p, len, why, cap) != 0)
                return -1;
            if (segs) {
                segs[n].s = p;
                segs[n].len = len;
                segs[n].kind = SEG_LIT;
            }
        }
        n++;
        if (e + 1 == end)
            t = TAIL_PREFIX; /* "/a/" */
    }
    if (plen == 1)
        t = TAIL_PREFIX; /* "/" is the catch-all prefix */

    if (info) {
        info->nparams = (int)nparams;
        info->star = t == TAIL_REST;
        info->prefix = t == TAIL_PREFIX;
        info->literal_len = literal;
    }
    if (segs) {
        *nsegs = n;
        *tail = t;
    }
    return 0;
}

int mg_ffi_route_pattern(const char *pattern, size_t len, mg_ffi_pattern_t *info, char *why,
                         size_t cap)
{
    return parse(pattern, len, info, NULL, NULL, NULL, NULL, why, cap);
}

/* Rank of what entry e has at segment position k (see the top comment). */
static int rank(const entry_t *e, size_t k)
{
    if (k < e->nsegs)
        return e->segs[k].kind == SEG_LIT ? 4 : 3;
    return e->tail == TAIL_EXACT ? 2 : 1;
}

/* Among routes with equal paths, the one that asks more of the request
 * wins: an exact host beats a wildcard host beats none, then header
 * matches, a method list and a listener port each count. */
static int constraint_score(const mg_route_t *r)
{
    int score = 0;
    if (r->host)
        score += r->host[0] == '*' ? 16 : 32;
    score += (int)r->nheaders * 2;
    score += r->nmethods > 0;
    score += r->listen_port != 0;
    score += r->grpc_service != NULL; /* gRPC requests only */
    return score;
}

static int by_specificity(const void *va, const void *vb)
{
    const entry_t *a = va, *b = vb;
    size_t k;

    for (k = 0;; k++) {
        int ra = rank(a, k), rb = rank(b, k);

        if (ra != rb)
            return rb - ra;
        if (ra <= 2)
            break; /* both ended */
    }
    int ca = constraint_score(a->route), cb = constraint_score(b->route);
    if (ca != cb)
        return cb - ca;
    if (a->route->index != b->route->index)
        return a->route->index < b->route->index ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Trims a trailing '.' (fully qualified "example.com.") from a host. */
static size_t host_trim(const char *h, size_t len)
{
    return len > 0 && h[len - 1] == '.' ? len - 1 : len;
}

/* A route host: an address or a name, or "*." and a name (any case). An
 * IPv6 address is matched as the Host header writes it, in brackets. */
static int host_valid(const char *h, size_t len)
{
    if (len > 2 && h[0] == '*' && h[1] == '.')
        return mg_ffi_host_kind(h + 2, len - 2) == MG_HOST_NAME;
    if (len > 2 && h[0] == '[' && h[len - 1] == ']')
        return mg_ffi_host_kind(h + 1, len - 2) == MG_HOST_IPV6;
    return mg_ffi_host_kind(h, len) != MG_HOST_BAD;
}

int mg_router_host_check(const char *s, size_t len, char *out, size_t cap)
{
    /* a bare IPv6 address would never equal a Host header's "[...]" */
    int bracket = mg_ffi_host_kind(s, len) == MG_HOST_IPV6;
    size_t o = 0;

    if (len + 2 >= cap || !host_valid(s, len))
        return MG_STR_BAD;
    if (bracket)
        out[o++] = '[';
    for (size_t i = 0; i < len; i++)
        out[o++] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    if (bracket)
        out[o++] = ']';
    out[o] = '\0';
    return MG_STR_VALUE;
}

int mg_router_prefix_check(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || s[0] != '/' || len >= cap || memchr(s, '\0', len))
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}

/* Checks what build needs; NULL or the reason (static, or the pattern's
 * in a per-thread buffer). */
static const char *check_route(const mg_route_t *rt)
{
    const char *h = rt->host;
    size_t i;

    /* the pattern's reason, valid until this thread's next build */
    static _Thread_local char why[256];

    if (rt->path == NULL ||
        parse(rt->path, strlen(rt->path), NULL, NULL, NULL, NULL, NULL, why, sizeof(why)) != 0)
        return why;
    if (rt->nmethods > MG_MAX_METHODS || rt->nheaders > MG_MAX_ROUTE_HEADERS)
        return "too many methods or headers";
    for (i = 0; i < rt->nmethods; i++)
        if (rt->methods[i] == NULL)
            return "missing method name";
    for (i = 0; i < rt->nheaders; i++)
        if (rt->headers[i].name == NULL || rt->headers[i].value == NULL)
            return "missing header name or value";
    if (h != NULL && !host_valid(h, strlen(h)))
        return "bad host (a name, optionally with a leading '*.' wildcard)";
    return NULL;
}

int mg_router_build(mg_router_t **out, const mg_route_t *routes, size_t nroutes,
                    const char **err)
{
    const char *reason = NULL;
    mg_router_t *r = NULL;
    size_t i, j, total = 0, namebytes = 0;
    seg_t *segs;
    char *names;

    *out = NULL;
    for (i = 0; i < nroutes; i++) {
        if ((reason = check_route(&routes[i])) != NULL)
            break;
        namebytes += strlen(routes[i].path) + 1; /* bounds the param names */
        total += strlen(routes[i].path) / 2 + 1; /* a segment is >= 1 byte + '/' */
    }
    if (reason == NULL &&
        ((r = calloc(1, sizeof(*r))) == NULL ||
         (nroutes && (r->entries = calloc(nroutes, sizeof(entry_t))) == NULL) ||
         (r->segs = calloc(total + 1, sizeof(seg_t))) == NULL ||
         (r->names = malloc(namebytes + 1)) == NULL)) {
        mg_router_free(r);
        reason = "out of memory";
    }
    if (err != NULL)
        *err = reason;
    if (reason != NULL)
        return -1;

    segs = r->segs;
    names = r->names;
    for (i = 0; i < nroutes; i++) {
        const mg_route_t *rt = &routes[i];
        entry_t *e = &r->entries[i];

        e->route = rt;
        e->pos = i;
        e->segs = segs;
        /* validated above */
        parse(rt->path, strlen(rt->path), NULL, segs, &e->nsegs, &e->tail, &names, NULL, 0);
        segs += e->nsegs;
        if (rt->host != NULL) {
            e->host_wild = rt->host[0] == '*';
            e->host = rt->host + (e->host_wild ? 2 : 0);
            e->host_len = host_trim(e->host, strlen(e->host));
        }
        for (j = 0; j < rt->nmethods; j++)
            e->method_len[j] = strlen(rt->methods[j]);
        for (j = 0; j < rt->nheaders; j++) {
            e->hname_len[j] = strlen(rt->headers[j].name);
            e->hvalue_len[j] = strlen(rt->headers[j].value);
        }
    }
    r->n = nroutes;
    if (nroutes > 1)
        qsort(r->entries, nroutes, sizeof(entry_t), by_specificity);

    *out = r;
    return 0;
}

void mg_router_free(mg_router_t *r)
{
    if (r == NULL)
        return;
    free(r->entries);
    free(r->segs);
    free(r->names);
    free(r);
}

static int lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int casecmp_eq(const char *a, const char *b, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

/* Does request host h (port and trailing '.' already removed) match e? */
static int host_match(const entry_t *e, const char *h, size_t len)
{
    size_t plen, i;

    if (e->host == NULL)
        return 1;
    if (!e->host_wild)
        return len == e->host_len && casecmp_eq(h, e->host, len);

    /* "*.example.com": one or more non-empty labels, then ".example.com" */
    if (len < e->host_len + 2)
        return 0;
    plen = len - e->host_len - 1;
    if (h[plen] != '.' || !casecmp_eq(h + plen + 1, e->host, e->host_len))
        return 0;
    for (i = 0; i < plen; i++)
        if (h[i] == '.' && (i == 0 || h[i - 1] == '.'))
            return 0;
    return h[plen - 1] != '.';
}

static int headers_match(const entry_t *e, mg_header_get_fn get, void *ctx)
{
    size_t i, vlen;

    for (i = 0; i < e->route->nheaders; i++) {
        const mg_route_header_t *hd = &e->route->headers[i];
        const char *v;

        if (get == NULL)
            return 0;
        v = get(ctx, hd->name, e->hname_len[i], &vlen);
        if (v == NULL || vlen != e->hvalue_len[i] || memcmp(v, hd->value, vlen) != 0)
            return 0;
    }
    if (e->route->grpc_service) { /* route.grpc: gRPC's content types only */
        const char *v = get ? get(ctx, "content-type", 12, &vlen) : NULL;
        return v && mg_grpc_content_type(v, vlen);
    }
    return 1;
}

static int method_match(const entry_t *e, const char *method, size_t len)
{
    size_t i;

    if (e->route->nmethods == 0)
        return 1;
    for (i = 0; i < e->route->nmethods; i++)
        if (e->method_len[i] == len && memcmp(e->route->methods[i], method, len) == 0)
            return 1;
    return 0;
}

/* Matches the normalised path against e's pattern, filling m's params and
 * rest. pos is always the index of the '/' before the next segment. */
static int path_match(const entry_t *e, const char *path, size_t len, mg_route_match_t *m)
{
    size_t pos = 0, k;

    m->nparams = 0;
    m->rest = NULL;
    m->rest_len = 0;
    for (k = 0; k < e->nsegs; k++) {
        const seg_t *s = &e->segs[k];
        size_t start = pos + 1, end;
        const char *slash;

        if (start >= len)
            return 0; /* path ran out (or ends with '/') */
        slash = memchr(path + start, '/', len - start);
        end = slash ? (size_t)(slash - path) : len;
        if (end == start)
            return 0;
        if (s->kind == SEG_LIT) {
            if (end - start != s->len || memcmp(path + start, s->s, s->len) != 0)
                return 0;
        } else {
            m->params[m->nparams].name = s->s;
            m->params[m->nparams].name_len = s->len;
            m->params[m->nparams].value = path + start;
            m->params[m->nparams].value_len = end - start;
            m->nparams++;
        }
        pos = end;
    }

    switch (e->tail) {
    case TAIL_EXACT:
        return pos == len;
    case TAIL_PREFIX: /* needs the '/' after the last segment */
        if (pos >= len)
            return 0;
        m->rest = path + pos + 1;
        m->rest_len = len - pos - 1;
        return 1;
    default: /* TAIL_REST: "/a" too, with an empty rest */
        m->rest = pos < len ? path + pos + 1 : path + len;
        m->rest_len = pos < len ? len - pos - 1 : 0;
        return 1;
    }
}

/* Appends len bytes of s to out at *o; 0, or -1 when it would not leave room
 * for the final NUL. */
static int put(char *out, size_t cap, size_t *o, const char *s, size_t len)
{
    if (len >= cap - *o)
        return -1;
    memcpy(out + *o, s, len);
    *o += len;
    return 0;
}

/* The request's Host without ":port" ("[v6]:port" keeps its brackets). */
static size_t host_part(const char *host, size_t host_len)
{
    if (host == NULL)
        return 0;
    if (host_len > 0 && host[0] == '[') {
        const char *rb = memchr(host, ']', host_len);

        if (rb != NULL)
            host_len = (size_t)(rb - host) + 1;
    } else {
        const char *colon = memchr(host, ':', host_len);

        if (colon != NULL)
            host_len = (size_t)(colon - host);
    }
    return host_trim(host, host_len);
}

/* Does e match the request in everything but the method? Fills m. */
static int matches_but_method(const entry_t *e, uint16_t local_port, const char *host,
                              size_t host_len, const char *path, size_t path_len,
                              mg_header_get_fn get_header, void *get_header_ctx,
                              mg_route_match_t *m)
{
    if (e->route->listen_port != 0 && e->route->listen_port != local_port)
        return 0;
    return host_match(e, host, host_len) && path_match(e, path, path_len, m) &&
           headers_match(e, get_header, get_header_ctx);
}

int mg_router_match(const mg_router_t *r, uint16_t local_port, const char *method,
                    size_t method_len, const char *host, size_t host_len,
                    const char *path, size_t path_len,
                    mg_header_get_fn get_header, void *get_header_ctx, mg_route_match_t *m)
{
    int bad_method = 0;
    size_t i;

    host_len = host_part(host, host_len);
    if (path_len > 0 && path[0] == '/') {
        for (i = 0; i < r->n; i++) {
            const entry_t *e = &r->entries[i];

            if (!matches_but_method(e, local_port, host, host_len, path, path_len, get_header,
                                    get_header_ctx, m))
                continue;
            if (!method_match(e, method, method_len)) {
                bad_method = 1; /* a less specific route may still take it */
                continue;
            }
            m->route = e->route;
            return MG_ROUTE_OK;
        }
    }

    m->route = NULL;
    m->nparams = 0;
    m->rest = NULL;
    m->rest_len = 0;
    return bad_method ? MG_ROUTE_BAD_METHOD : MG_ROUTE_NOT_FOUND;
}

long mg_router_allowed(const mg_router_t *r, uint16_t local_port, const char *host,
                       size_t host_len, const char *path, size_t path_len,
                       mg_header_get_fn get_header, void *get_header_ctx, char *out,
                       size_t cap)
{
    mg_route_match_t m;
    size_t o = 0, i, j;

    if (cap == 0)
        return 0;
    out[0] = '\0';
    host_len = host_part(host, host_len);
    if (path_len == 0 || path[0] != '/')
        return 0;
    for (i = 0; i < r->n; i++) {
        const entry_t *e = &r->entries[i];

        if (!matches_but_method(e, local_port, host, host_len, path, path_len, get_header,
                                get_header_ctx, &m))
            continue;
        for (j = 0; j < e->route->nmethods; j++) {
            const char *name = e->route->methods[j];
            size_t len = e->method_len[j];
            const char *p = out;
            int dup = 0;

            /* once each: two routes may accept the same method */
            while (!dup && (p = strstr(p, name)) != NULL) {
                dup = (p == out || p[-1] == ' ') && (p[len] == ',' || p[len] == '\0');
                p += len;
            }
            if (dup)
                continue;
            size_t before = o;
            if ((o > 0 && put(out, cap, &o, ", ", 2) != 0) || put(out, cap, &o, name, len) != 0) {
                out[before] = '\0'; /* what fits, whole methods only */
                return (long)before;
            }
            out[o] = '\0';
        }
    }
    return (long)o;
}

long mg_router_upstream_path(const mg_route_match_t *m, const char *path, size_t path_len,
                             char *out, size_t cap)
{
    const mg_route_t *rt = m->route;
    size_t o = 0;

    if (cap == 0)
        return -1;

    if (rt != NULL && rt->rewrite != NULL) {
        const char *t = rt->rewrite;

        if (t[0] != '/' && put(out, cap, &o, "/", 1) < 0)
            return -1;
        while (*t != '\0') {
            if (t[0] == ':' && name_start((unsigned char)t[1])) {
                size_t n = 1, k;

                while (name_char((unsigned char)t[n]))
                    n++;
                for (k = 0; k < m->nparams; k++) /* absent param: expands empty */
                    if (m->params[k].name_len == n - 1 &&
                        memcmp(m->params[k].name, t + 1, n - 1) == 0) {
                        if (put(out, cap, &o, m->params[k].value, m->params[k].value_len) < 0)
                            return -1;
                        break;
                    }
                t += n;
            } else if (t[0] == '*' && t[1] == '*') {
                if (m->rest != NULL && put(out, cap, &o, m->rest, m->rest_len) < 0)
                    return -1;
                t += 2;
            } else {
                if (put(out, cap, &o, t, 1) < 0)
                    return -1;
                t++;
            }
        }
    } else if (rt != NULL && rt->strip_prefix != NULL) {
        const char *sp = rt->strip_prefix;
        size_t n = strlen(sp);

        /* only a whole-segment prefix: "/api" strips "/api/x" and "/api",
         * never "/apix" */
        if (n > 0 && n <= path_len && memcmp(path, sp, n) == 0 &&
            (sp[n - 1] == '/' || n == path_len || path[n] == '/')) {
            path += n;
            path_len -= n;
        }
        if ((path_len == 0 || path[0] != '/') && put(out, cap, &o, "/", 1) < 0)
            return -1;
        if (put(out, cap, &o, path, path_len) < 0)
            return -1;
    } else {
        if (put(out, cap, &o, path, path_len) < 0)
            return -1;
    }

    out[o] = '\0';
    return (long)o;
}
