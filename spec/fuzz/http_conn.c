/* http_conn.c: fuzz target for the client side of the gateway
 * (src/http_conn.c): request heads, bodies (Content-Length and chunked),
 * pipelining, limits, hooks and local answers, on a connection without a
 * socket (mg_conn_open_memory / mg_conn_feed), in a worker running
 * spec/fuzz/http_conn.lua.
 *
 * Input: one byte (low 7 bits: the size of the pieces the bytes arrive in,
 * 0 = all at once; bit 7: the client then closes its side), then what the
 * client sends. Routes to the upstream get connections without sockets;
 * nothing answers them.
 *
 * Checks, besides the sanitizers: what the gateway writes to the client
 * starts with a status line, and what it sends upstream parses as HTTP
 * requests with strict llhttp (the gateway never forwards ambiguous or
 * broken framing).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static mg_worker_t *w;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    w = mg_fuzz_start("http_conn.lua");
    return 0;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "http_conn: %s\n", what);
        fprintf(stderr, "--- to the client:\n%.*s\n--- upstream:\n%.*s\n",
                (int)mg_fuzz_client_out.len, mg_fuzz_client_out.data,
                (int)mg_fuzz_upstream_out.len, mg_fuzz_upstream_out.data);
        abort();
    }
}

/* Does the gateway's output to the upstream parse as requests? */
static int upstream_parses(void)
{
    llhttp_t p;
    llhttp_settings_t s;
    if (mg_fuzz_upstream_out.len == 0)
        return 1;
    llhttp_settings_init(&s);
    llhttp_init(&p, HTTP_REQUEST, &s);
    llhttp_errno_t e = llhttp_execute(&p, mg_fuzz_upstream_out.data, mg_fuzz_upstream_out.len);
    return e == HPE_OK || e == HPE_PAUSED_UPGRADE; /* after an upgrade: tunnel bytes */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    mg_fuzz_reset();
    mg_pool_t *pool = w->g->ups[0].pools[0];
    mg_fuzz_upstream_ready(pool);
    mg_fuzz_upstream_ready(pool);
    mg_conn_t *c = mg_conn_open_memory(w, 18080, mg_fuzz_client_sink);
    if (!c)
        abort();
    mg_fuzz_feed(w, c, data + 1, size - 1, data[0] & 0x7f);
    if ((data[0] & 0x80) && mg_fuzz_conn_alive(w) && c->state != MG_CS_CLOSING) {
        mg_conn_feed(c, NULL, 0);
        mg_fuzz_settle(w);
    }
    check(mg_fuzz_client_out.len == 0 ||
              (mg_fuzz_client_out.len >= 9 && memcmp(mg_fuzz_client_out.data, "HTTP/1.", 7) == 0),
          "an answer without a status line");
    check(upstream_parses(), "the upstream was sent what strict HTTP parsing refuses");
    mg_fuzz_close_all(w, c);
    return 0;
}
