/* http1.h: HTTP/1.1 client connections (http_conn.c): the protocol that
 * feeds the core's requests (request.h) today.
 *
 * Threading: a connection belongs to one worker thread and is only touched
 * from that worker's libuv loop.
 */
#ifndef MG_HTTP1_H
#define MG_HTTP1_H

#include <stdint.h>
#include <uv.h>
#include <llhttp.h>
#include "list.h"
#include "request.h"
#include "worker.h"
#include "wq.h"

typedef struct mg_conn_s mg_conn_t;

/* How the current response's body goes (http_conn.c, as h1_writer.c
 * decided with its head). */
enum { MG_RB_NONE, MG_RB_RAW, MG_RB_CHUNKED };

typedef enum {
    MG_CS_OPEN,
    MG_CS_TUNNEL,   /* upgraded: bytes copied both ways */
    MG_CS_CLOSING,
} mg_conn_state_t;

/* A client connection. Owned by the worker (linked in worker->conns);
 * freed in its close callback. */
struct mg_conn_s {
    uv_tcp_t tcp;              /* first: handle->data is not needed for casts */
    uv_timer_t timer;
    mg_link_t link;
    mg_worker_t *w;
    llhttp_t parser;
    mg_buf_t buf;
    mg_wq_t wq;                /* writes to the client */
    mg_request_t *r;           /* request in progress, or NULL */
    mg_conn_state_t state;
    uint8_t reading;           /* uv_read_start active */
    uint8_t throttled;         /* upstream side asked us to stop reading */
    uint8_t in_parse;          /* inside conn_parse (no re-entry) */
    uint8_t kick;              /* run llhttp once even with no new bytes */
    uint8_t paused_parser;     /* llhttp paused at a request boundary */
    uint8_t closing_after_write;
    uint8_t timer_armed;
    uint8_t proxy_header;      /* waiting for its PROXY header (client_addr.h) */
    uint64_t deadline;         /* loop time (ms) when the current wait expires */
    uint64_t timer_expiry;
    uint32_t requests;         /* served on this connection */
    uint32_t head_len;         /* a response head held in the worker's
                                  scratch for the next send_body */
    uint8_t resp_body;         /* MG_RB_*: the current response's framing */
    mg_peer_t peer;            /* its addresses, as its requests see them */
    uint8_t handles_open;
    struct mg_conn_tls_s *tls; /* NULL on plain listeners (http_conn.c) */
    struct mg_h2_s *h2;        /* its HTTP/2 session (h2_conn.h), once it speaks it */
    uint8_t h2c;               /* its first bytes may be the HTTP/2 preface */
    uint8_t lingering;         /* half-closed, dropping input until it closes */
};

void mg_conn_accept(mg_worker_t *w, uv_stream_t *listener, uint16_t port);
/* A connection without a socket, for the fuzz targets (spec/fuzz): what
 * would be written goes to `sink`, and mg_conn_feed hands it bytes the way
 * libuv hands a socket's (on_alloc, on_read). Returns the bytes taken:
 * fewer once the connection stops reading. p NULL: the peer's EOF. The
 * worker owns the connection as any other. */
mg_conn_t *mg_conn_open_memory(mg_worker_t *w, uint16_t port, mg_wq_sink_fn sink);
size_t mg_conn_feed(mg_conn_t *c, const char *p, size_t n);
void mg_conn_close_if_idle(mg_conn_t *c);
/* The worker switched to a new generation (HTTP/2: GOAWAY, h2_conn.h). */
void mg_conn_reload(mg_conn_t *c);
void mg_conn_abort(mg_conn_t *c);

#endif
