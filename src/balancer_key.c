/* balancer_key.c: the hash balancer's key of a request (upstream.h
 * mg_lb_key), from where the upstream's `hash` option says: a header's
 * first value (as hooks left it), a cookie, a query argument, the real
 * client address (request.h mg_request_client: behind trusted proxies),
 * the normalised path, or the string a Lua function returned
 * (req:set_hash_key, ffi_request.c). Reads the request, writes nothing,
 * allocates nothing; the key is hashed with mg_maglev_hash. The same
 * reader gives a route's split its sticky key and its canary the header or
 * cookie it looks for (split.c).
 *
 * Cookies and query arguments are compared and hashed raw, as the client
 * sent them (no percent-decoding): one client's key stays one key. */
#include <string.h>
#include "upstream.h"

static uint64_t hash_of(const char *p, size_t n) { return mg_maglev_hash(p, n, 0); }

/* The value of `name` in a list "a=1; b=2" (sep ';', spaces skipped) or
 * "a=1&b=2" (sep '&'). */
static int find_pair(const char *s, size_t len, char sep, const char *name, size_t nl,
                     const char **v, size_t *vl)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && s[i] == ' ')
            i++;
        size_t start = i;
        while (i < len && s[i] != sep)
            i++;
        const char *eq = memchr(s + start, '=', i - start);
        if (eq && (size_t)(eq - (s + start)) == nl && memcmp(s + start, name, nl) == 0) {
            *v = eq + 1;
            *vl = (size_t)(s + i - *v);
            while (*vl && (*v)[*vl - 1] == ' ')
                (*vl)--;
            return 1;
        }
        i++;
    }
    return 0;
}

static int cookie(const mg_request_t *r, const char *name, const char **v, size_t *vl)
{
    const char *h;
    size_t hl, nl = strlen(name);
    for (int nth = 0; mg_request_header(r, "cookie", 6, nth, &h, &hl); nth++)
        if (find_pair(h, hl, ';', name, nl, v, vl))
            return 1;
    return 0;
}

static int query_arg(const mg_request_t *r, const char *name, const char **v, size_t *vl)
{
    const char *q = r->new_query ? r->new_query : r->query;
    size_t ql = r->new_query ? r->new_query_len : r->query_len;
    if (ql && q[0] == '?')
        q++, ql--;
    return find_pair(q, ql, '&', name, strlen(name), v, vl);
}

int mg_lb_key_value(const mg_request_t *r, int on, const char *name, const char **v,
                    size_t *vl)
{
    switch (on) {
    case MG_HASH_HEADER: return mg_request_header(r, name, strlen(name), 0, v, vl);
    case MG_HASH_COOKIE: return cookie(r, name, v, vl);
    case MG_HASH_QUERY: return query_arg(r, name, v, vl);
    case MG_HASH_CLIENT: /* the real client, behind trusted proxies too */
        *v = mg_request_client(r);
        *vl = strlen(*v);
        return 1;
    case MG_HASH_PATH:
        *v = r->path;
        *vl = r->path_len;
        return *v != NULL;
    default: return 0;
    }
}

int mg_lb_key_of(const mg_request_t *r, int on, const char *name, uint64_t *key)
{
    if (on == MG_HASH_LUA) {
        if (r->hash_key_set)
            *key = r->hash_key;
        return r->hash_key_set;
    }
    const char *v = NULL;
    size_t vl = 0;
    if (!mg_lb_key_value(r, on, name, &v, &vl))
        return 0;
    *key = hash_of(v, vl);
    return 1;
}

int mg_lb_key(const mg_request_t *r, const mg_upstream_t *u, uint64_t *key)
{
    return mg_lb_key_of(r, u->hash_on, u->hash_name, key);
}
