/* h2_conn.c: fuzz target for HTTP/2 from clients (src/h2_conn.c with
 * src/h2_headers.c behind src/http_conn.c): frames after the client
 * preface on a connection without a socket (mg_conn_open_memory /
 * mg_conn_feed) to a listener with http2 = true, in a worker running
 * spec/fuzz/h2_conn.lua: header blocks (HPACK, CONTINUATION, pseudo-header
 * fields, cookie crumbs, :authority and Host), bodies and flow control,
 * resets, the flood bounds, hooks and local answers, routes to an upstream
 * whose connections have no socket and never answer.
 *
 * Input: one byte (low 7 bits: the size of the pieces the bytes arrive in,
 * 0 = all at once; bit 7: the client then closes its side), then what the
 * client sends after the preface (the target sends the preface itself).
 *
 * Checks, besides the sanitizers: what the gateway writes to the client is
 * a sequence of whole HTTP/2 frames (a 9-byte header, then as many bytes
 * as it says, within the default SETTINGS_MAX_FRAME_SIZE) starting with
 * its SETTINGS; what it sends upstream parses as HTTP/1.1 requests with
 * strict llhttp (whatever the frames said, no smuggling upstream).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static mg_worker_t *w;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    w = mg_fuzz_start("h2_conn.lua");
    return 0;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "h2_conn: %s\n", what);
        fprintf(stderr, "--- to the client: %zu bytes\n--- upstream:\n%.*s\n",
                mg_fuzz_client_out.len, (int)mg_fuzz_upstream_out.len,
                mg_fuzz_upstream_out.data);
        abort();
    }
}

/* Whole frames, the first one SETTINGS (the server's preface). */
static int frames_whole(void)
{
    const unsigned char *p = (const unsigned char *)mg_fuzz_client_out.data;
    size_t n = mg_fuzz_client_out.len, at = 0;
    if (n == 0)
        return 1;
    if (n < 9 || p[3] != 0x4)
        return 0;
    while (at + 9 <= n) {
        size_t len = (size_t)p[at] << 16 | (size_t)p[at + 1] << 8 | p[at + 2];
        if (len > 16384)
            return 0;
        at += 9 + len;
    }
    return at == n;
}

/* What each upstream connection was sent, apart: streams run at once, so
 * two requests interleave in the harness's one buffer. */
static struct {
    mg_wq_t *q;
    mg_fuzz_out_t out;
} ups[2];

static int up_sink(mg_wq_t *q, const uv_buf_t *bufs, unsigned n)
{
    int rc = mg_fuzz_out_add(&ups[ups[0].q == q ? 0 : 1].out, bufs, n);
    return rc ? rc : mg_fuzz_upstream_sink(q, bufs, n);
}

static int upstream_parses(void)
{
    for (int i = 0; i < 2; i++) {
        llhttp_t p;
        llhttp_settings_t s;
        if (ups[i].out.len == 0)
            continue;
        llhttp_settings_init(&s);
        llhttp_init(&p, HTTP_REQUEST, &s);
        if (llhttp_execute(&p, ups[i].out.data, ups[i].out.len) != HPE_OK)
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size < 1)
        return 0;
    mg_fuzz_reset();
    mg_pool_t *pool = w->g->ups[0].pools[0];
    for (int i = 0; i < 2; i++) {
        ups[i].q = &mg_fuzz_upstream_ready(pool)->wq;
        ups[i].q->sink = up_sink;
        ups[i].out.len = 0;
    }
    mg_conn_t *c = mg_conn_open_memory(w, 18080, mg_fuzz_client_sink);
    if (!c)
        abort();
    mg_conn_feed(c, preface, sizeof(preface) - 1);
    mg_fuzz_settle(w);
    mg_fuzz_feed(w, c, data + 1, size - 1, data[0] & 0x7f);
    if ((data[0] & 0x80) && mg_fuzz_conn_alive(w) && c->state != MG_CS_CLOSING) {
        mg_conn_feed(c, NULL, 0);
        mg_fuzz_settle(w);
    }
    check(frames_whole(), "the client got something else than whole frames");
    check(upstream_parses(), "the upstream was sent what strict HTTP parsing refuses");
    mg_fuzz_close_all(w, c);
    return 0;
}
