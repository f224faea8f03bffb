/* h2_conn.h: HTTP/2 on client connections (h2_conn.c): an nghttp2 server
 * session driven from the worker's libuv loop, each stream a request of
 * the core (request.h) like an HTTP/1.1 one.
 *
 * The connection below it (http_conn.c) keeps the socket, TLS, the PROXY
 * header, the timer and the write queue; it starts a session once ALPN
 * chose "h2" or the client's first bytes are the HTTP/2 preface (h2c with
 * prior knowledge on a listener with `http2 = true`), then hands it every
 * byte it reads and the events of its socket. The session reaches the
 * connection only through mg_h2_io_t.
 *
 * Ownership: the connection owns its session (mg_h2_t); the session owns
 * its streams and each stream its request until that request ends.
 * Threading: one worker's loop, like the connection.
 */
#ifndef MG_H2_CONN_H
#define MG_H2_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "request.h"
#include "worker.h"

typedef struct mg_h2_s mg_h2_t;
struct mg_tls_conn_s;

/* What the connection does for its session (conn: the connection). */
typedef struct mg_h2_io_s {
    /* Writes to the client (through TLS on a TLS listener); copies what
     * the socket does not take now. Returns 0, or < 0 once the connection
     * cannot write (the session stops; the connection closes after it). */
    int (*write)(void *conn, const uv_buf_t *bufs, unsigned n);
    /* Bytes written and not taken by the socket yet. */
    size_t (*pending)(const void *conn);
    /* The connection's deadline, ms from now (UINT64_MAX: none): at it the
     * connection calls mg_h2_timeout. */
    void (*set_deadline)(void *conn, uint64_t ms);
    /* Closes the connection once what was written has gone out (now if
     * nothing waits); stops reading. A close calls mg_h2_close. */
    void (*close_after_write)(void *conn);
    /* Closes the connection now (mg_h2_close). */
    void (*close)(void *conn);
    /* The connection's TLS state, NULL on a plain listener. */
    struct mg_tls_conn_s *(*tls)(const void *conn);
} mg_h2_io_t;

/* A session for connection conn of worker w (after its preface check or
 * ALPN), its addresses peer (the connection's, borrowed), on the HTTP/2
 * settings of w's current generation. NULL when out of memory. */
mg_h2_t *mg_h2_new(mg_worker_t *w, void *conn, const mg_h2_io_t *io, const mg_peer_t *peer);
/* Bytes the client sent (the connection's buffer may be reused once this
 * returns: everything is consumed). The session may ask the connection to
 * close (close_after_write) meanwhile. */
void mg_h2_input(mg_h2_t *h, const char *data, size_t n);
/* The socket took everything written (the write queue is empty). */
void mg_h2_drained(mg_h2_t *h);
/* The connection's deadline (set_deadline) passed. */
void mg_h2_timeout(mg_h2_t *h);
/* The worker stops: GOAWAY (NO_ERROR); streams in flight finish, then the
 * connection closes. */
void mg_h2_shutdown(mg_h2_t *h);
/* A reload switched the worker to a new generation: GOAWAY in two steps
 * (a notice, then the last stream id one round trip later), so that the
 * client opens its next streams on a new connection, which gets the new
 * generation's settings; streams in flight finish. */
void mg_h2_reload(mg_h2_t *h);
/* The connection closes now: every stream's request ends (logged with
 * status 499 when unanswered). The session stays allocated until
 * mg_h2_free. */
void mg_h2_close(mg_h2_t *h);
/* Frees the session (after mg_h2_close, from the connection's close
 * callback, when nothing can reach it any more). */
void mg_h2_free(mg_h2_t *h);

/* The first bytes of a connection against the HTTP/2 client preface
 * ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"): 1 all of it, 0 a prefix of it
 * (wait for more), -1 not it. */
int mg_h2_preface(const char *p, size_t n);

/* The worker's shared HTTP/2 state (made with its first session): freed
 * after its loop ended (mg_worker_teardown). */
void mg_h2_worker_free(mg_worker_t *w);

#endif
