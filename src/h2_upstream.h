/* h2_upstream.h: HTTP/2 to upstreams (h2_upstream.c): upstreams declared
 * with protocol = "h2" or "grpc" are reached over HTTP/2 (h2c with prior
 * knowledge on plain targets, h2 by ALPN over TLS), many requests at a time
 * on few pooled connections.
 *
 * Two objects. A session (mg_h2up_conn_t, private) is one HTTP/2
 * connection to one target: its own transport (an mg_upconn_t that
 * upconn_io.c drives, plain or TLS), its nghttp2 session, and the streams
 * on it; it lives in its pool's list (mg_pool_t.h2) from its connect until
 * it closes, across reloads (pools_adopt moves it). A stream is an
 * mg_upconn_t like an HTTP/1 connection (u->h2s set), owned by its request
 * as proxy.c owns any: proxy.c parses nothing for it; this file fills its
 * response head (u->h1.status, u->headers and u->htok over u->buf) and
 * calls proxy.c's mg_proxy_stream_* as the answer arrives.
 *
 * Flow control follows the client: a stream's received DATA is given back
 * to the upstream's window (WINDOW_UPDATE) only once the client connection
 * has taken it (nothing pending there), so a slow client holds at most one
 * stream window of its answer in the gateway. The request body is copied
 * into the stream's queue until the upstream's window takes it; past
 * MG_H2UP_BODY_QUEUE bytes the client connection is throttled.
 *
 * Worker thread only.
 */
#ifndef MG_H2_UPSTREAM_H
#define MG_H2_UPSTREAM_H

#include <stddef.h>
#include <uv.h>
#include "http.h"
#include "wq.h"
#include "response.h"

typedef struct mg_upconn_s mg_upconn_t;
typedef struct mg_pool_s mg_pool_t;


/* The stream window the gateway gives upstreams (SETTINGS_INITIAL_WINDOW_SIZE),
 * and the request body it queues per stream before throttling the client. */
#define MG_H2UP_WINDOW (256 * 1024)
#define MG_H2UP_BODY_QUEUE (64 * 1024)

/* u (a new stream of pool u->pool, bound to its request) goes on a session
 * of its pool with room for one more stream, or on a new one: 0, then
 * mg_proxy_stream_go(u) is called once the session is ready (perhaps
 * before this returns), or a negative libuv error (nothing was started). */
int mg_h2up_attach(mg_upconn_t *u);
/* Submits u's request: head is the HTTP/1 request head proxy.c built
 * (request line, header lines, blank line) in memory the call may rewrite,
 * translated here (RFC 9113 8.2.2, 8.3.1). has_body: DATA frames follow
 * (mg_h2up_send_body, mg_h2up_body_end). Returns 0, or a static reason. */
const char *mg_h2up_submit(mg_upconn_t *u, char *head, size_t len, int has_body);
/* Request body bytes (copied), then its end. 0, or -1 (the stream is gone).
 * Each of these (and mg_h2up_submit) writes what nghttp2 has to send; a
 * session failing meanwhile (nghttp2 or the socket refusing) is closed from
 * the loop, never under the caller, which still checks u->closing and u->r
 * after the call (the client's unthrottle runs inside it). */
int mg_h2up_send_body(mg_upconn_t *u, const uv_buf_t *bufs, unsigned n);
int mg_h2up_body_end(mg_upconn_t *u);
/* The client connection took what was pending: the stream's window opens. */
void mg_h2up_client_drained(mg_upconn_t *u);
/* The on_response hook the stream's head waited for is done and its head
 * went: what the stream held meanwhile goes on. */
void mg_h2up_hook_resumed(mg_upconn_t *u);
/* u closes (proxy.c's up_close): the stream is reset if still open, and
 * leaves its session. */
void mg_h2up_stream_close(mg_upconn_t *u);

/* pool.c: a pool's sessions at a reload (to the successor pool p, or
 * retired when the target is gone: p NULL), when its target leaves the
 * set or drains (retired: no new streams; those without a stream close at
 * once, the others when their last stream ends) and when its generation
 * ends (closed). A session counts in its pool's nconns while it is open
 * (targets.h: the slot is not filled again under it), and stays in its
 * pool's list until it closes, so that the pool outlives it. */
void mg_h2up_pool_adopt(mg_pool_t *old, mg_pool_t *p);
void mg_h2up_pool_retire(mg_pool_t *p);
void mg_h2up_pool_close(mg_pool_t *p);

/* spec/fuzz: a session of pool p without a socket, in p's list like any
 * other (requests take streams on it): what it sends goes to sink, what
 * the upstream sends comes by mg_h2up_feed (data NULL: the upstream
 * closed). Returns it (opaque), NULL when out of memory. Feeding returns 0,
 * or -1 once the session is closing (it is freed by the loop later). */
void *mg_h2up_session_memory(mg_pool_t *p, mg_wq_sink_fn sink);
int mg_h2up_feed(void *session, const char *data, size_t n);

/* Health checks (health.c) of an h2 target: the bytes of a GET of path
 * (the connection preface, SETTINGS, one HEADERS) into out (cap bytes);
 * returns their length, or -1 when cap is too small. Then the answer's
 * bytes go to mg_h2up_probe_status, which returns the :status once its
 * HEADERS came, 0 for more bytes, -1 for a broken answer. */
typedef struct mg_h2up_probe_s mg_h2up_probe_t;
mg_h2up_probe_t *mg_h2up_probe_new(const char *host, const char *path, int tls);
long mg_h2up_probe_request(mg_h2up_probe_t *p, char *out, size_t cap);
int mg_h2up_probe_status(mg_h2up_probe_t *p, const char *data, size_t len);
void mg_h2up_probe_free(mg_h2up_probe_t *p);

#endif
