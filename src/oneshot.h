/* oneshot.h: one HTTP/1.1 request on a connection of its own, on any libuv
 * loop: connect, TLS when asked (tls_client.h), write the request, read
 * the answer's status line, close. The request says Connection: close, so
 * nothing is reused and nothing but the status is read. For the gateway's
 * own requests off the workers: health checks (health.c) and span exports
 * (otlp.c). The workers' requests go through http_client.c's pools.
 *
 * Ownership: the caller embeds an mg_oneshot_t in its own struct, keeps
 * the request's bytes alive until `closed` is called, and frees its struct
 * only then (or later). `done` is called exactly once, before `closed`.
 */
#ifndef MG_ONESHOT_H
#define MG_ONESHOT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "tls_client.h"
#include "wq.h"

typedef struct mg_oneshot_s mg_oneshot_t;

/* The answer's status (100-999), or 0 and why (a static string, or one
 * living in o until `closed`). */
typedef void (*mg_oneshot_done_cb)(mg_oneshot_t *o, int status, const char *why);
/* Every handle is closed: the caller may free o's memory. */
typedef void (*mg_oneshot_closed_cb)(mg_oneshot_t *o);

struct mg_oneshot_s {
    mg_oneshot_done_cb done;
    mg_oneshot_closed_cb closed;
    void *data;                 /* the caller's */
    const char *timeout_why;    /* why when time runs out (NULL: "no answer in time") */
    /* NULL: the answer is HTTP/1 and its status line decides; else every
     * read's bytes go to status_of(status_arg, ...), which returns 0 for
     * more, the status, or -1 for a broken answer (an HTTP/2 probe) */
    int (*status_of)(void *arg, const char *data, size_t len);
    void *status_arg;
    /* the rest is oneshot.c's */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    mg_wq_t wq;                 /* TLS records */
    mg_tls_link_t *tls;
    uv_buf_t req[4];
    unsigned nreq;
    int handles;                /* open libuv handles */
    int finished;
    size_t len;
    char why[160];              /* a TLS failure's reason */
    char buf[256];              /* the answer's start */
};

/* Sends req[0..nreq) (nreq <= 4, the caller's memory) to sa over TLS with
 * configuration `tls` (NULL: plain; then host and port name the server for
 * SNI and verification), within timeout_ms for everything. o->done and
 * o->closed must be set. `done` may be called before this returns (the
 * connect could not start); `closed` always comes from the loop. */
void mg_oneshot_start(mg_oneshot_t *o, uv_loop_t *loop, const struct sockaddr *sa,
                     mg_tls_client_t *tls, const char *host, uint16_t port, const uv_buf_t *req,
                     unsigned nreq, uint64_t timeout_ms);
/* Ends it now with why ("stopping"); `done` is called if not yet. */
void mg_oneshot_cancel(mg_oneshot_t *o, const char *why);

/* host:port's address: a numeric address at once, a name by a blocking
 * getaddrinfo (the callers run off the workers). 0, or -1. */
int mg_oneshot_resolve(const char *host, uint16_t port, struct sockaddr_storage *sa);

#endif
