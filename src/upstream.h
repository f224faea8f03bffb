/* upstream.h: the upstream side: upstream connections (proxy.c), their
 * keep-alive pools and the balancer (pool.c), and gw.http (http_client.c).
 *
 * Threading: every struct here belongs to exactly one worker thread and is
 * only touched from that worker's libuv loop.
 */
#ifndef MG_UPSTREAM_H
#define MG_UPSTREAM_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>
#include "balancer.h"
#include "h1_response.h"
#include "config.h"
#include "list.h"
#include "request.h"
#include "worker.h"
#include "wq.h"

typedef struct mg_pool_s mg_pool_t;

/* An upstream connection. Owned by its pool (idle list) or by the request
 * using it; freed in its close callback. To a TLS upstream it also owns its
 * TLS link (tls, made once TCP connects, ended when it closes), and every
 * read and write goes through upconn_io.c. */
struct mg_upconn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    mg_link_t link;            /* in pool->idle while idle */
    mg_worker_t *w;
    mg_pool_t *pool;
    mg_h1r_t h1;               /* the response being read (h1_response.h) */
    mg_buf_t buf;
    mg_wq_t wq;
    mg_request_t *r;           /* request in progress, NULL while idle */
    uint8_t connected;
    uint8_t idle;
    uint8_t closing;
    uint8_t timer_armed;
    uint8_t reading;
    uint8_t got_response_bytes;
    uint8_t tunnel;
    uint8_t handles_open;
    uint32_t requests;
    uint64_t deadline;
    uint64_t timer_expiry;
    /* response head being parsed */
    mg_span_t status_text;
    mg_header_t *headers;      /* capacity MG_UP_MAX_HEADERS */
    uint8_t *htok;             /* each header's name token (header_names.h) */
    uint32_t nheaders;
    void *client;              /* gw.http operation using it (http_client.c) */
    void (*client_lost)(void *client); /* ... told when u closes under it */
    uv_read_cb client_read;    /* ... handed what u reads meanwhile (the
                                  proxy's reader stays on: no epoll change) */
    uint8_t hook_paused;       /* parser paused while on_response waits */
    uint8_t hook_failed;       /* on_response failed: answer 500 */
    uint8_t revalidated;       /* a 304 to the cache's conditional request */
    struct mg_tls_link_s *tls; /* TLS upstreams: the connection's TLS (upconn_io.c) */
    void (*tls_done)(mg_upconn_t *u, const char *err); /* its handshake ended */
    struct mg_h2up_stream_s *h2s; /* an HTTP/2 stream (h2_upstream.h): no socket of
                                     its own; NULL for an HTTP/1 connection */
};

#define MG_UP_MAX_HEADERS 128

/* mg_pool_t.state: draining and gone pools keep no idle connection */
enum { MG_POOL_LIVE = 0, MG_POOL_DRAINING = 1, MG_POOL_GONE = 2 };

/* Keep-alive pool and health of one target (one slot, targets.h) of one
 * upstream, per worker and generation; made when its slot first appears
 * in the worker's view, freed with the worker's generation. After a reload
 * the pool of the same upstream name and target in the new generation is
 * its successor: idle connections move there, and connections in use go
 * there when their request ends. */
struct mg_pool_s {
    mg_worker_t *w;
    mg_pool_t *successor;
    uint32_t successor_serial;  /* successor->serial when it became that: a
                                   slot filled again since serves another
                                   target (targets.h) */
    const mg_upstream_t *u;
    const mg_target_t *t;       /* its slot's (targets.h) */
    struct sockaddr_storage addr;
    int addr_ok;
    mg_link_t idle;
    int nidle;
    uint64_t down_until;        /* loop time before which the target is skipped */
    int fails;                  /* failed attempts in a row (max_fails) */
    int index;                  /* its slot in the upstream */
    uint32_t serial;            /* the slot's filling it serves (targets.h) */
    uint8_t state;              /* MG_POOL_*: its target is in the worker's view
                                   and live, drains, or left it */
    _Atomic uint32_t nconns;    /* its open connections, idle or in use, and */
    _Atomic uint32_t users;     /* requests whose target it is (the worker
                                   writes both, the control thread reads) */
    mg_lb_t *lb;                /* its upstream's balancer (rt->lb) */
    mg_link_t h2;               /* its HTTP/2 sessions (h2_upstream.c) */
    uint32_t h2_limit;          /* the streams the target's last SETTINGS allowed per
                                   session (0: none seen): what a new session assumes */
};

/* Per upstream, per worker: its target pools, its balancer (this worker's
 * part; the part all workers share is the generation's, mg_gen_t.lb,
 * which lb.sh points to) and the view of its targets it runs by. */
typedef struct mg_upstream_rt_s {
    const mg_upstream_t *u;
    mg_pool_t **pools;          /* one per slot, NULL until first in a view */
    mg_lb_t lb;
    struct mg_tview_s *view;    /* held (targets.h) */
    _Atomic uint64_t synced;    /* view->version, for the control thread */
} mg_upstream_rt_t;

/* proxy.c */
/* What the pipeline asks of the upstream side (pipeline.c reaches it
 * through w->upstream, set by worker.c: the core sits below the proxy). */
typedef struct mg_upstream_ops_s {
    /* Sends r upstream: picks a target, connects or reuses, writes the
     * head; answers r itself when that fails. */
    void (*start)(mg_request_t *r);
    /* The on_response phase that waited has finished. */
    void (*hook_resumed)(mg_upconn_t *u, int result);
    /* The request lets go of u (reusable: back into its pool). */
    void (*detach)(mg_upconn_t *u, int reusable);
    /* A pool's HTTP/2 sessions go to its successor (NULL: the target is
     * gone, they drain), take no new streams (its target left or drains),
     * or close with its generation (h2_upstream.h). */
    void (*sessions_adopt)(mg_pool_t *old, mg_pool_t *successor);
    void (*sessions_retire)(mg_pool_t *p);
    void (*sessions_close)(mg_pool_t *p);
} mg_upstream_ops_t;
extern const mg_upstream_ops_t mg_proxy_ops;

void mg_proxy_start(mg_request_t *r);
/* r's request head as a target of pool p would get it (the one the proxy
 * sends, with p's upstream's options), written into r's worker's scratch:
 * its length, or -1 with *why (static). For a copy of r (mirror.c). */
long mg_proxy_request_head(mg_request_t *r, const mg_pool_t *p, const char **why);
int mg_proxy_send_body(mg_upconn_t *u, uv_buf_t *bufs, unsigned n);
void mg_proxy_detach(mg_upconn_t *u, int reusable);
void mg_proxy_client_drained(mg_upconn_t *u);
/* u reads on with the proxy's reader, which hands a gw.http operation's
 * bytes (u->client) to u->client_read; already reading: nothing changes. */
void mg_proxy_read_for_client(mg_upconn_t *u);
int mg_proxy_tunnel_write(mg_upconn_t *u, const char *data, size_t len);
/* The whole request (head and body) is written or queued: the wait for the
 * answer, timed by read_timeout, starts once it has all gone out. */
void mg_proxy_request_sent(mg_upconn_t *u);
/* The on_response phase that waited has finished. */
void mg_proxy_hook_resumed(mg_upconn_t *u, int result);
/* A new, unconnected upstream connection of pool p (owned by the caller
 * until it is closed or detached into the pool). */
mg_upconn_t *mg_upconn_new(mg_pool_t *p);
/* Bytes from u's upstream as libuv would hand them (up_alloc, up_read),
 * for a connection whose u->wq.sink stands in for its socket (spec/fuzz).
 * Returns the bytes taken; p NULL: the upstream's EOF. */
size_t mg_upconn_feed(mg_upconn_t *u, const char *p, size_t n);
void mg_upconn_close(mg_upconn_t *u);
/* libuv's alloc callback for u's reads: room at the end of its pooled read
 * buffer (taken on first use), none when it is full. */
void mg_upconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
/* Is response header i of u end-to-end (not hop-by-hop, not named in a
 * Connection header)? */
int mg_upconn_header_forwarded(mg_upconn_t *u, uint32_t i);

/* For h2_upstream.c: the exchange of a request on an HTTP/2 stream u
 * (u->h2s), as its events come. The session is ready: the head goes
 * (built as for HTTP/1, translated by mg_h2up_submit). */
void mg_proxy_stream_go(mg_upconn_t *u);
/* The try's first answer bytes came (an HTTP/1 read, an HTTP/2 HEADERS
 * frame): u->got_response_bytes, and the access log's first-byte time. */
void mg_proxy_answer_began(mg_upconn_t *u);
/* The response head is in u->h1.status, u->headers, u->htok over u->buf:
 * returns 0 (the body may follow), 1 (a 1xx: the next head will come), 2
 * (an on_response hook waits: mg_h2up_hook_resumed follows) or -1 (u was
 * ended: the try failed or is retried). */
int mg_proxy_stream_head(mg_upconn_t *u);
/* Body bytes: 1 when the client has taken everything so far, 0 when some
 * is pending there (mg_proxy_client_drained follows), -1 when u ended. */
int mg_proxy_stream_data(mg_upconn_t *u, const char *p, size_t n);
/* The answer is complete, with its trailer fields (n may be 0); u ends. */
void mg_proxy_stream_end(mg_upconn_t *u, const mg_hfield_t *trailers, size_t n);
/* The stream failed: how (MG_STREAM_*), a libuv error or 0, and the
 * detail the log line shows (may be NULL); u ends, the request may be
 * retried. */
enum {
    MG_STREAM_CONNECT,  /* the session could not connect */
    MG_STREAM_TLS,      /* its TLS handshake (or ALPN) failed */
    MG_STREAM_TIMEOUT,  /* its connect timed out */
    MG_STREAM_LOST,     /* the session closed under the stream */
    MG_STREAM_RESET,    /* the upstream reset the stream */
    MG_STREAM_REFUSED,  /* not processed (REFUSED_STREAM, above a GOAWAY's
                           last stream): tried again, not a failure */
    MG_STREAM_BAD,      /* a malformed answer */
};
void mg_proxy_stream_failed(mg_upconn_t *u, int kind, int err, const char *detail);

/* upconn_io.c: u's transport, plain or TLS (the upstream's `tls`). Every
 * read and write of an upstream connection goes through these. */
int mg_upconn_write(mg_upconn_t *u, const uv_buf_t *bufs, unsigned n);
int mg_upconn_read_start(mg_upconn_t *u, uv_alloc_cb alloc, uv_read_cb read);
void mg_upconn_read_stop(mg_upconn_t *u);
/* Once TCP is connected: 0 when u's upstream is plain (go on), 1 when its
 * TLS handshake started (done reports the end: err NULL, or why it
 * failed), or a negative libuv error. */
int mg_upconn_tls_start(mg_upconn_t *u, void (*done)(mg_upconn_t *u, const char *err));
/* Why the last TLS read failed (UV_EPROTO), NULL for a plain connection. */
const char *mg_upconn_tls_error(const mg_upconn_t *u);
/* First thing when u closes. */
void mg_upconn_io_close(mg_upconn_t *u);

/* pool.c */
int mg_pools_init(mg_wgen_t *g);
/* Takes the published view of every upstream of g whose view changed
 * (targets.h): pools for new targets, idle connections of targets that
 * left or drain closed, the balancer's weights. On g's worker. 0, or -1
 * when out of memory (that upstream keeps its old view). */
int mg_pools_sync(mg_wgen_t *g);
/* Hands idle connections of `old`'s pools to the same pools of `g`. */
void mg_pools_adopt(mg_wgen_t *g, mg_wgen_t *old);
void mg_pools_close(mg_wgen_t *g);
void mg_pools_free(mg_wgen_t *g);
/* Picks a target (a slot) of upstream `ui` with its balancer
 * (balancer.h), among the targets of the worker's view that do not drain,
 * skipping those that are down (refused lately, out by the health checks,
 * ejected) unless all are; with SRV priorities, only the best priority
 * that has a target up. `exclude` is a target not to pick when another
 * can be (-1: none): a retry passes the target its failed attempt used, to
 * get a different one; the hash balancer then gives the key's next target
 * in its table, the same one every time. r (NULL for gw.http) gives the
 * hash balancer its key. Returns the slot, or -1 when the view has no
 * target to pick (none, or all draining). */
int mg_balancer_pick(mg_wgen_t *g, int ui, const mg_request_t *r, int exclude);
/* The same among live targets only: -1 when none is (a mirror copy then
 * goes nowhere rather than to a target known to be down). */
int mg_balancer_pick_live(mg_wgen_t *g, int ui, const mg_request_t *r);
/* The hash balancer's key of r for upstream u (balancer_key.c): 1 and its
 * hash in *key, or 0 when r has none (no such header, cookie, argument). */
int mg_lb_key(const mg_request_t *r, const mg_upstream_t *u, uint64_t *key);
/* The same for a key source `on` (MG_HASH_*, balancer.h) and its header,
 * cookie or argument `name` (NULL for client and path). */
int mg_lb_key_of(const mg_request_t *r, int on, const char *name, uint64_t *key);
/* The key's value itself, not hashed (MG_HASH_LUA has none): 1 with *v,
 * *vl pointing into r (valid while r's head and edits are), or 0. */
int mg_lb_key_value(const mg_request_t *r, int on, const char *name, const char **v,
                    size_t *vl);
/* A request starts or stops using p's target (in-flight counts for the
 * balancers that keep them: proxy.c up_bind, up_unbind), and its answer's
 * head came now, the request having been sent at sent_ns (uv_hrtime; the
 * latency average of p2c_ewma). */
static inline void mg_pool_acquire(mg_pool_t *p)
{
    if (p->lb && p->lb->ops->counts)
        mg_lb_acquire(p->lb->sh, p->index);
}
static inline void mg_pool_release(mg_pool_t *p)
{
    if (p->lb && p->lb->ops->counts) /* the kit's pool has none */
        mg_lb_release(p->lb->sh, p->index);
}
static inline void mg_pool_observe(mg_pool_t *p, uint64_t sent_ns)
{
    if (p->lb && p->lb->ops->observe)
        p->lb->ops->observe(p->lb->sh, p->index, uv_hrtime() - sent_ns);
}
/* A failed attempt on p's target (may skip it for fail_timeout), or an
 * answer from it (resets the count). See pool.c. */
void mg_pool_failed(mg_pool_t *p);
void mg_pool_answered(mg_pool_t *p);
/* p's count of users (targets.h: a slot is free once nothing uses it)
 * goes up or down by one. Single writer: the worker; plain loads and
 * stores, read by the control thread. */
static inline void mg_pool_users_add(mg_pool_t *p, int by)
{
    atomic_store_explicit(&p->users,
                          atomic_load_explicit(&p->users, memory_order_relaxed) + (uint32_t)by,
                          memory_order_relaxed);
}
/* r's target is p's from now on (NULL: none): p counts it as a user. */
static inline void mg_pool_use(mg_request_t *r, mg_pool_t *p)
{
    mg_pool_t *old = r->tpool;
    if (old == p)
        return;
    if (old)
        mg_pool_users_add(old, -1);
    if (p)
        mg_pool_users_add(p, 1);
    r->tpool = p;
}

/* u moves to pool np (a new one, a successor after a reload), counts
 * and all. */
static inline void mg_pool_move(mg_upconn_t *u, mg_pool_t *np)
{
    if (u->pool == np)
        return;
    if (u->pool)
        atomic_fetch_sub_explicit(&u->pool->nconns, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&np->nconns, 1, memory_order_relaxed);
    u->pool = np;
}
/* u is closing: its pool's count of connections goes down. */
void mg_pool_closing(mg_upconn_t *u);
mg_upconn_t *mg_pool_take_idle(mg_pool_t *p);
void mg_pool_put_idle(mg_pool_t *p, mg_upconn_t *u);
void mg_pool_forget(mg_upconn_t *u);

/* http_client.c */
/* Sends request `req` (len bytes: head and body; malloc'd, owned by the
 * call from here on, also when it fails) to pool p's target on w, reusing
 * its keep-alive connections, and reads the answer, keeping nothing of it.
 * done(arg, status, err) is called once, never from inside this call,
 * when the exchange ends: status the answer's (0: none came), err NULL
 * for a whole answer, else why it failed ("timeout" past timeout_ms for
 * the whole exchange, "shutting down", ...). p must outlive it (the caller
 * holds its generation). Returns 0, or MG_FFI_ENOMEM (done never called). */
int mg_http_send_detached(mg_worker_t *w, mg_pool_t *p, char *req, size_t len,
                          int head_method, uint64_t timeout_ms,
                          void (*done)(void *arg, int status, const char *err), void *arg);
void mg_http_client_close(mg_worker_t *w);
void mg_http_client_free(mg_worker_t *w);

#endif
