/* upstream.c: fuzz target for the upstream side (src/proxy.c): the
 * response head and body an upstream sends (Content-Length, chunked,
 * close-delimited, 1xx, 304, 101), as forwarded to the client, kept by the
 * cache (src/cache.c) or changed by an on_response hook, on an upstream
 * connection without a socket (mg_upconn_feed), in a worker running
 * spec/fuzz/upstream.lua.
 *
 * Input: one byte choosing the client's request (see requests[]), one
 * byte giving the size of the pieces the answer arrives in (0: at once;
 * bit 7: the upstream then closes), then what the upstream sends.
 * Checks, besides the sanitizers: what the client gets starts with a
 * status line; an answer served from the cache to the second of two
 * requests starts with one too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "harness.h"

#define H "Host: svc.example.com\r\n"
static const char *const requests[] = {
    "GET /plain/a?x=1 HTTP/1.1\r\n" H "Accept: */*\r\n\r\n",
    "HEAD /plain/a HTTP/1.1\r\n" H "\r\n",
    "GET /cached/a HTTP/1.1\r\n" H "Accept: text/html\r\n\r\n",
    "GET /cached/b HTTP/1.1\r\n" H "Accept: text/html\r\n\r\n"
    "GET /cached/b HTTP/1.1\r\n" H "Accept: text/html\r\nIf-None-Match: \"v1\"\r\n\r\n",
    "POST /plain/upload HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "GET /hooked/a HTTP/1.1\r\n" H "\r\n",
    "GET /ws HTTP/1.1\r\n" H "Connection: upgrade\r\nUpgrade: websocket\r\n\r\nhi",
    "GET /plain/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
};
#define NREQ (sizeof(requests) / sizeof(requests[0]))

static mg_worker_t *w;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    w = mg_fuzz_start("upstream.lua");
    return 0;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "upstream: %s\n--- to the client:\n%.*s\n", what,
                (int)mg_fuzz_client_out.len, mg_fuzz_client_out.data);
        abort();
    }
}

/* Nothing kept from one input to the next. */
static void forget_cache(void)
{
    const mg_config_t *cfg = w->g->cfg;
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].cache)
            mg_cache_purge(cfg->routes[i].cache->dict, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    mg_fuzz_reset();
    mg_pool_t *pool = w->g->ups[0].pools[0];
    mg_upconn_t *u = mg_fuzz_upstream_ready(pool);
    mg_conn_t *c = mg_conn_open_memory(w, 18081, mg_fuzz_client_sink);
    if (!c)
        abort();
    const char *req = requests[data[0] % NREQ];
    mg_fuzz_feed(w, c, (const uint8_t *)req, strlen(req), 0);

    /* the answer, while u reads: the loop does not run in between, so u
     * (closed or not) stays in memory */
    const char *resp = (const char *)data + 2;
    size_t n = size - 2, at = 0, step = data[1] & 0x7f ? data[1] & 0x7f : n;
    while (at < n && !u->closing && u->reading) {
        size_t k = n - at < step ? n - at : step;
        size_t took = mg_upconn_feed(u, resp + at, k);
        if (took == 0)
            break;
        at += took;
    }
    if ((data[1] & 0x80) && !u->closing && u->reading)
        mg_upconn_feed(u, NULL, 0);
    mg_fuzz_settle(w);
    check(mg_fuzz_client_out.len == 0 ||
              (mg_fuzz_client_out.len >= 9 && memcmp(mg_fuzz_client_out.data, "HTTP/1.", 7) == 0),
          "an answer without a status line");
    mg_fuzz_close_all(w, c);
    forget_cache();
    return 0;
}
