/* router.c: fuzz target for the router (src/router.c): patterns, hosts,
 * methods, rewrites and the paths matched against them.
 *
 * Input: lines of space-separated fields,
 *   R <pattern> <host|-> <method|-> [rewrite=<template> | strip=<prefix>]
 *   M <host|-> <method> <path>
 * Routes whose pattern or template the config would refuse
 * (mg_ffi_route_pattern) are left out, as a config load would; each
 * path is normalised first (uri.h), as the gateway does. Checks: a match
 * names a route of the table, its params and rest lie inside the path,
 * and the upstream path needs exactly the room mg_router_upstream_path
 * says (one byte less is refused), and starts with '/'.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mg_ffi.h"
#include "router.h"
#include "uri.h"

#define MAX_ROUTES 16

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "router: %s\n", what);
        abort();
    }
}

/* Splits line (NUL-terminated, modified) at spaces into at most max fields. */
static int fields(char *line, char **f, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " ", &save); t && n < max; t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    return n;
}

static int inside(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && p + n <= base + len;
}

static void match(const mg_router_t *rt, const mg_route_t *routes, size_t nroutes, char **f,
                  int nf)
{
    if (nf < 4)
        return;
    const char *host = strcmp(f[1], "-") == 0 ? NULL : f[1];
    size_t raw = strlen(f[3]);
    char *path = malloc(raw + 1);
    size_t plen = 0;
    mg_route_match_t m;
    if (!path)
        return;
    if (mg_uri_normalize_path(f[3], raw, path, &plen, 0) < 0) {
        free(path);
        return;
    }
    int rc = mg_router_match(rt, 0, f[2], strlen(f[2]), host, host ? strlen(host) : 0, path,
                             plen, NULL, NULL, &m);
    check(rc == MG_ROUTE_OK || rc == MG_ROUTE_NOT_FOUND || rc == MG_ROUTE_BAD_METHOD,
          "unknown result");
    if (rc != MG_ROUTE_OK) {
        free(path);
        return;
    }
    check(m.route >= routes && m.route < routes + nroutes, "a route not in the table");
    check(m.nparams <= MG_ROUTER_MAX_PARAMS, "too many params");
    for (size_t i = 0; i < m.nparams; i++) {
        check(m.params[i].value_len > 0, "an empty param");
        check(inside(m.params[i].value, m.params[i].value_len, path, plen),
              "a param outside the path");
        check(memchr(m.params[i].value, '/', m.params[i].value_len) == NULL,
              "a param across segments");
    }
    if (m.rest)
        check(inside(m.rest, m.rest_len, path, plen), "rest outside the path");

    size_t cap = 64 + plen * (m.route->rewrite ? strlen(m.route->rewrite) + 2 : 2);
    char *out = malloc(cap), *exact;
    check(out != NULL, "out of memory");
    long n = mg_router_upstream_path(&m, path, plen, out, cap);
    check(n >= 0, "upstream path refused with room to spare");
    check(n > 0 && out[0] == '/', "upstream path without a leading '/'");
    check(out[n] == '\0' && strlen(out) == (size_t)n, "upstream path length");
    exact = malloc((size_t)n + 1); /* exactly enough: ASan sees one byte more */
    check(exact != NULL, "out of memory");
    check(mg_router_upstream_path(&m, path, plen, exact, (size_t)n + 1) == n &&
              memcmp(exact, out, (size_t)n + 1) == 0,
          "a different upstream path with exactly enough room");
    check(mg_router_upstream_path(&m, path, plen, exact, (size_t)n) == -1,
          "upstream path written without room for its NUL");
    free(exact);
    free(out);
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    mg_route_t routes[MAX_ROUTES];
    size_t nroutes = 0;
    char *lines[64];
    int nlines = 0;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(routes, 0, sizeof(routes));
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l && nlines < 64; l = strtok_r(NULL, "\n", &save))
        lines[nlines++] = l;

    /* the routes first (their strings point into text) */
    for (int i = 0; i < nlines; i++) {
        char *f[5];
        if (lines[i][0] != 'R' || nroutes == MAX_ROUTES)
            continue;
        int nf = fields(lines[i], f, 5); /* cut in place: R lines are not read again */
        if (nf < 2 || mg_ffi_route_pattern(f[1], strlen(f[1]), NULL, NULL, 0) != 0)
            continue;
        mg_route_t *r = &routes[nroutes];
        memset(r, 0, sizeof(*r));
        r->name = "r";
        r->index = (int)nroutes;
        r->upstream = 0;
        r->path = f[1];
        if (nf > 2 && strcmp(f[2], "-") != 0)
            r->host = f[2];
        if (nf > 3 && strcmp(f[3], "-") != 0) {
            r->methods[0] = f[3];
            r->nmethods = 1;
        }
        if (nf > 4 && strncmp(f[4], "rewrite=", 8) == 0) {
            if (mg_ffi_route_pattern(f[4] + 8, strlen(f[4] + 8), NULL, NULL, 0) != 0)
                continue;
            r->rewrite = f[4] + 8;
        } else if (nf > 4 && strncmp(f[4], "strip=", 6) == 0) {
            r->strip_prefix = f[4] + 6;
        }
        nroutes++;
    }
    mg_router_t *rt = NULL;
    const char *err = NULL;
    if (mg_router_build(&rt, routes, nroutes, &err) == 0) {
        for (int i = 0; i < nlines; i++) {
            char *f[4];
            if (!lines[i] || lines[i][0] != 'M')
                continue;
            int nf = fields(lines[i], f, 4);
            match(rt, routes, nroutes, f, nf);
        }
        mg_router_free(rt);
    } else {
        check(rt == NULL && err != NULL, "a failed build without a reason");
    }
    free(text);
    return 0;
}
