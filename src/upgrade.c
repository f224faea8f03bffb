/* upgrade.c: the upgrade allow-list (see upgrade.h).
 *
 * Protocols are compared by name, case-insensitively, without their
 * "/version" (RFC 9110 §7.8: "websocket", "foo/2"). Nothing here allocates:
 * the offered protocols are read from the request's Upgrade headers, which
 * stay slices of the connection's buffer.
 */
#include <string.h>
#include <strings.h>
#include "http.h"
#include "request.h"
#include "upgrade.h"

/* The name part of a protocol token ("foo" of "foo/2"). */
static size_t proto_name_len(const char *p, size_t l)
{
    const char *slash = memchr(p, '/', l);
    return slash ? (size_t)(slash - p) : l;
}

static int same_name(const char *a, size_t al, const char *b, size_t bl)
{
    al = proto_name_len(a, al);
    bl = proto_name_len(b, bl);
    return al == bl && strncasecmp(a, b, al) == 0;
}

/* Which entry of the route's list allows protocol p: its index + 1, or 0. */
static int route_allows(const mg_route_t *rt, const char *p, size_t l)
{
    if (same_name(p, l, "h2c", 3))
        return 0; /* config.lua refuses it too; this keeps it out whatever */
    for (size_t i = 0; i < rt->nupgrades; i++)
        if (same_name(p, l, rt->upgrades[i], strlen(rt->upgrades[i])))
            return (int)i + 1;
    return 0;
}

/* Calls fn(arg, token) for each protocol the client offered that the route
 * allows (all Upgrade headers, in order), once per entry of the list (a
 * protocol offered again is skipped: what is forwarded stays short); stops
 * when fn returns non-zero and returns that, else 0. */
static int each_allowed(const mg_request_t *r, int (*fn)(void *, const char *, size_t),
                        void *arg)
{
    const mg_route_t *rt = r->route;
    unsigned seen = 0; /* bit i: list entry i was offered already */
    if (!rt || rt->has_handler || !r->known[MG_H_UPGRADE])
        return 0; /* no route, no list: nothing is allowed */
    for (uint32_t i = r->known[MG_H_UPGRADE] - 1; i < r->nheaders; i++) {
        mg_span_t n = r->headers[i].name;
        if (n.len != 7 || strncasecmp(mg_request_data(r, n), "upgrade", 7) != 0)
            continue;
        const char *v = mg_request_data(r, r->headers[i].value), *t;
        size_t vl = r->headers[i].value.len, at = 0, tl;
        while (mg_token_next(v, vl, &at, &t, &tl)) {
            int e = route_allows(rt, t, tl);
            if (!e || (seen & (1u << (e - 1))))
                continue;
            seen |= 1u << (e - 1);
            int rc = fn(arg, t, tl);
            if (rc)
                return rc;
        }
    }
    return 0;
}

typedef struct {
    char *out;
    size_t len;
} value_t;

static int add_token(void *arg, const char *t, size_t tl)
{
    value_t *v = arg;
    if (v->out) {
        if (v->len)
            memcpy(v->out + v->len, ", ", 2);
        memcpy(v->out + v->len + (v->len ? 2 : 0), t, tl);
    }
    v->len += (v->len ? 2 : 0) + tl;
    return 0;
}

size_t mg_upgrade_value(const mg_request_t *r, char *out)
{
    value_t v = { out, 0 };
    each_allowed(r, add_token, &v);
    return v.len;
}

typedef struct {
    const char *p;
    size_t l;
} name_t;

static int is_name(void *arg, const char *t, size_t tl)
{
    name_t *n = arg;
    return same_name(t, tl, n->p, n->l);
}

int mg_upgrade_accepted(const mg_request_t *r, const char *v, size_t vl)
{
    size_t at = 0;
    name_t n;
    int any = 0;
    while (mg_token_next(v, vl, &at, &n.p, &n.l)) {
        if (!each_allowed(r, is_name, &n))
            return 0;
        any = 1;
    }
    return any;
}

void mg_upgrade_settle(mg_request_t *r)
{
    if (!r->is_upgrade || mg_upgrade_value(r, NULL) > 0)
        return;
    /* an ordinary request from here on: the protocol reads any body as
     * HTTP and goes on with the next request instead of stopping for a
     * tunnel */
    r->is_upgrade = 0;
    r->proto->no_upgrade(r);
}
