// router.h: matches a request (method, host, normalised path, headers) to a
// route of the config, and rewrites the path for the upstream.
// (Line comments: "/**" inside a block comment trips -Wcomment.)
//
// Patterns (mg_route_t.path):
//   "/payments"        exact path only (not "/payments/")
//   "/orders/"         prefix: "/orders/" and everything below it
//   "/orders/**"       "/orders", "/orders/" and everything below ("**" = rest)
//   "/orders/:id"      one non-empty segment captured as param "id"
//   "/u/:id/items/**"  params and a trailing rest
//   "/"                the catch-all prefix
// A ":name" segment is the whole segment, name [A-Za-z_][A-Za-z0-9_]*; "**"
// only as the whole last segment; literal segments are compared byte for byte
// with the normalised path, so they must be in that form (see uri.h).
// The most specific match wins: compared segment by segment, a literal segment
// beats ":param", which beats "**"/prefix; a longer pattern beats a shorter
// one. Between equal paths the route asking more wins (exact host > wildcard
// host > none, then header matches, methods, listen port); declaration order
// breaks what is left. Host "*.example.com" matches one or
// more labels before ".example.com"; host compare is case-insensitive and
// ignores a ":port" suffix (and a trailing '.') on the request's Host.
#ifndef MG_ROUTER_H
#define MG_ROUTER_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"

#define MG_ROUTER_MAX_PARAMS 8

enum {
    MG_ROUTE_OK = 0,
    MG_ROUTE_NOT_FOUND = -1,   /* no route for this path/host/headers: 404 */
    MG_ROUTE_BAD_METHOD = -2,  /* a route matched all but the method: 405 */
};

typedef struct mg_router_s mg_router_t;

/* Looks up a request header by lower-case name; returns NULL if absent. */
typedef const char *(*mg_header_get_fn)(void *ctx, const char *name, size_t name_len,
                                        size_t *value_len);

typedef struct mg_route_match_s {
    const mg_route_t *route;
    size_t nparams;
    struct {
        const char *name;  /* points into the router (NUL-terminated) */
        size_t name_len;
        const char *value; /* points into the matched path */
        size_t value_len;
    } params[MG_ROUTER_MAX_PARAMS];
    const char *rest;      /* what "**" or a prefix matched (no leading '/'), or NULL */
    size_t rest_len;
} mg_route_match_t;

/* Compiles the routes. Borrows `routes` (must outlive the router). Returns 0,
 * or -1 with *out NULL and *err set to the reason (bad pattern or host, out
 * of memory: static, or a pattern's reason in a per-thread buffer that the
 * thread's next build overwrites); err may be NULL. The router is owned by the caller and is
 * read-only after build, so workers may match on it concurrently. */
int mg_router_build(mg_router_t **out, const mg_route_t *routes, size_t nroutes,
                    const char **err);

/* The config's checks of a route's fields (mg_ffi_str_check_fn, mg_ffi.h),
 * the rules build applies: a host is a name or an address
 * (mg_ffi_host_kind), or "*." and a name, kept in lower case, an IPv6
 * address in brackets as the Host header writes it; a strip_prefix starts
 * with '/'. */
int mg_router_host_check(const char *s, size_t len, char *out, size_t cap);
int mg_router_prefix_check(const char *s, size_t len, char *out, size_t cap);
void mg_router_free(mg_router_t *r);

/* Finds the best route. `local_port` is the listener's port the request came
 * in on (a route with listen_port != 0 only matches there). `path` is already
 * normalised (see uri.h), without the query. `host` is the Host header as
 * received (NULL/0 when absent). `get_header` may be NULL when no route
 * matches on headers. Returns MG_ROUTE_OK and fills *m (its pointers are into
 * `path` and the router), or MG_ROUTE_NOT_FOUND / MG_ROUTE_BAD_METHOD with
 * m->route NULL. Does not allocate. */
int mg_router_match(const mg_router_t *r, uint16_t local_port, const char *method,
                    size_t method_len, const char *host, size_t host_len,
                    const char *path, size_t path_len,
                    mg_header_get_fn get_header, void *get_header_ctx, mg_route_match_t *m);

/* For a 405 (mg_router_match returned MG_ROUTE_BAD_METHOD): writes the
 * methods the routes matching everything but the method accept, as an
 * Allow header value ("GET, POST"; each once, in route order), to out
 * (capacity cap, NUL-terminated; methods that do not fit are left out).
 * Same arguments as mg_router_match. Returns the length written. */
long mg_router_allowed(const mg_router_t *r, uint16_t local_port, const char *host,
                       size_t host_len, const char *path, size_t path_len,
                       mg_header_get_fn get_header, void *get_header_ctx, char *out,
                       size_t cap);

/* Writes the path to send upstream for match `m` of `path` into out (capacity
 * cap): route->rewrite expanded (":name" anywhere -> that param's value, or
 * nothing if the match has no such param; "**" -> rest), else
 * route->strip_prefix removed when it ends at a segment boundary ("/api"
 * strips "/api" and "/api/x", not "/apix"; the result always starts with
 * '/'), else path. The result is NUL-terminated. Returns the length written
 * (without the NUL), or -1 if cap < length + 1. */
long mg_router_upstream_path(const mg_route_match_t *m, const char *path, size_t path_len,
                             char *out, size_t cap);

/* The patterns' own check, for config validation, is mg_ffi_route_pattern
 * (mg_ffi.h): the same parser, with the reason a config error shows. */

#endif
