/* h2_upstream.c: fuzz target for HTTP/2 to upstreams (src/h2_upstream.c,
 * the stream side of src/proxy.c): what an HTTP/2 upstream sends (SETTINGS,
 * HEADERS and CONTINUATION, DATA, trailers, RST_STREAM, GOAWAY, PING,
 * WINDOW_UPDATE, anything) on a session without a socket
 * (mg_h2up_session_memory), to requests from an HTTP/1.1 client, in a
 * worker running spec/fuzz/h2_upstream.lua.
 *
 * Input: one byte choosing the client's request (see requests[]), one
 * byte giving the size of the pieces the upstream's bytes arrive in (0: at
 * once; bit 7: the upstream then closes), then what the upstream sends
 * after the session's preface (a server's SETTINGS first, else nothing is
 * submitted). Checks, besides the sanitizers: what the client gets starts
 * with a status line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "h2_upstream.h"
#include "harness.h"

#define H "Host: svc.example.com\r\n"
static const char *const requests[] = {
    "GET /plain/a?x=1 HTTP/1.1\r\n" H "Accept: */*\r\n\r\n",
    "HEAD /plain/a HTTP/1.1\r\n" H "\r\n",
    "POST /plain/upload HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST /plain/upload HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\nhello",
    "GET /hooked/a HTTP/1.1\r\n" H "TE: trailers\r\n\r\n",
    "POST /demo.Echo/Say HTTP/1.1\r\n" H "Content-Type: application/grpc\r\n"
    "grpc-timeout: 5S\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0",
    "GET /plain/a HTTP/1.1\r\n" H "\r\nGET /plain/b HTTP/1.1\r\n" H "\r\n",
    "GET /plain/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
};
#define NREQ (sizeof(requests) / sizeof(requests[0]))

static mg_worker_t *w;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    w = mg_fuzz_start("h2_upstream.lua");
    return 0;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "h2_upstream: %s\n--- to the client:\n%.*s\n", what,
                (int)mg_fuzz_client_out.len, mg_fuzz_client_out.data);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    mg_fuzz_reset();
    mg_pool_t *pool = w->g->ups[0].pools[0];
    void *session = mg_h2up_session_memory(pool, mg_fuzz_upstream_sink);
    if (!session)
        abort();
    mg_conn_t *c = mg_conn_open_memory(w, 18081, mg_fuzz_client_sink);
    if (!c)
        abort();
    const char *req = requests[data[0] % NREQ];
    mg_fuzz_feed(w, c, (const uint8_t *)req, strlen(req), 0);

    /* the upstream's bytes: the loop does not run in between, so the
     * session (closing or not) stays in memory */
    const char *in = (const char *)data + 2;
    size_t n = size - 2, at = 0, step = data[1] & 0x7f ? data[1] & 0x7f : n;
    int open = 1;
    while (at < n && open) {
        size_t k = n - at < step ? n - at : step;
        open = mg_h2up_feed(session, in + at, k) == 0;
        at += k;
    }
    if ((data[1] & 0x80) && open)
        mg_h2up_feed(session, NULL, 0);
    mg_fuzz_settle(w);
    check(mg_fuzz_client_out.len == 0 ||
              (mg_fuzz_client_out.len >= 9 && memcmp(mg_fuzz_client_out.data, "HTTP/1.", 7) == 0),
          "an answer without a status line");
    mg_fuzz_close_all(w, c);
    return 0;
}
