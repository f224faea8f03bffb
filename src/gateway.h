/* gateway.h: the types shared by the worker, the client side (http_conn.c)
 * and the upstream side (proxy.c, pool.c). Types only, plus the few calls
 * these files make into each other.
 *
 * Threading: every struct here belongs to exactly one worker thread and is
 * only touched from that worker's libuv loop.
 */
#ifndef MG_GATEWAY_H
#define MG_GATEWAY_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <uv.h>
#include <llhttp.h>
#include "config.h"
#include "h1_response.h"
#include "router.h"
#include "wq.h"

typedef struct mg_worker_s mg_worker_t;
typedef struct mg_conn_s mg_conn_t;
typedef struct mg_request_s mg_request_t;
typedef struct mg_upconn_s mg_upconn_t;
typedef struct mg_pool_s mg_pool_t;
typedef struct mg_accesslog_s mg_accesslog_t;
typedef struct mg_gen_s mg_gen_t;
typedef struct mg_wgen_s mg_wgen_t;

/* Offsets into a connection's read buffer (the buffer may be reallocated
 * while a head grows, so never raw pointers). */
typedef struct mg_span_s {
    uint32_t off;
    uint32_t len;
} mg_span_t;

typedef struct mg_header_s {
    mg_span_t name;
    mg_span_t value;
} mg_header_t;

/* Intrusive doubly linked list (idle pools, worker's connection list). */
typedef struct mg_link_s {
    struct mg_link_s *prev, *next;
} mg_link_t;

static inline void mg_list_init(mg_link_t *h) { h->prev = h->next = h; }
static inline int mg_list_empty(const mg_link_t *h) { return h->next == h; }
static inline void mg_list_push(mg_link_t *h, mg_link_t *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}
static inline void mg_list_remove(mg_link_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define mg_container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* Pooled read buffer. Held by a connection only while it has unparsed bytes
 * or a request in progress; idle keep-alive connections hold none. */
typedef struct mg_buf_s {
    char *data;
    uint32_t cap;
    uint32_t len;    /* bytes received */
    uint32_t parsed; /* bytes handed to llhttp */
} mg_buf_t;

#define MG_BUF_SIZE 16384
#define MG_REQID_MAX 128

/* Where a request is in its life on the client connection. */
typedef enum {
    MG_RS_HEAD,      /* reading the request head */
    MG_RS_PEEK,      /* chunked body: waiting for its first chunk line */
    MG_RS_BUFFER,    /* a hook reads the whole body (req:body()) */
    MG_RS_UPSTREAM,  /* head done, waiting for an upstream connection */
    MG_RS_BODY,      /* streaming the request body upstream */
    MG_RS_WAIT,      /* body done, waiting for the upstream response */
    MG_RS_LOCAL,     /* answered by the gateway; discarding any body */
    MG_RS_DONE,      /* response complete */
} mg_req_state_t;

/* Well-known request headers found while parsing (index+1 into headers, 0 =
 * absent). */
enum {
    MG_H_HOST, MG_H_CONNECTION, MG_H_EXPECT, MG_H_REQUEST_ID, MG_H_XFF,
    MG_H_UPGRADE, MG_H_CONTENT_LENGTH, MG_H_TRANSFER_ENCODING, MG_H_TRACEPARENT,
    MG_H_AUTHORIZATION, MG_H_PROXY_AUTHORIZATION, MG_H_CONTENT_TYPE, MG_H__COUNT
};

/* A header change asked for by a hook, applied when the head is written.
 * Name and value live in the request's arena. */
typedef struct mg_edit_s {
    uint8_t op;          /* MG_EDIT_SET, MG_EDIT_ADD, MG_EDIT_REMOVE */
    uint16_t name_len;
    uint32_t value_len;
    const char *name;
    const char *value;
} mg_edit_t;

enum { MG_EDIT_SET = 1, MG_EDIT_ADD = 2, MG_EDIT_REMOVE = 3 };
#define MG_MAX_EDITS 32
#define MG_ARENA_INLINE 2048

/* Per-request bump allocator: an inline block, then malloc'd chunks that
 * are freed when the request ends. */
typedef struct mg_arena_chunk_s {
    struct mg_arena_chunk_s *next;
    char data[];
} mg_arena_chunk_t;

typedef struct mg_hook_co_s mg_hook_co_t;

/* One request on a client connection. Taken from the worker's free list on
 * the first byte of a request, returned when its response is complete (or
 * the connection dies). Owns `scratch` (per-request strings: normalised
 * path, upstream path, request id). */
struct mg_request_s {
    mg_request_t *next_free;
    uint32_t slot;             /* per-worker number of this struct, fixed for
                                  its life (Lua caches a cdata pointer by it) */
    mg_conn_t *c;
    mg_req_state_t state;
    uint64_t start_ns;         /* uv_hrtime() at the first byte */
    uint64_t upstream_start_ns;
    uint64_t upstream_ns;      /* head sent -> response complete */
    uint64_t total_ns;         /* set when the request is logged */

    mg_span_t method, url;
    mg_header_t *headers;      /* capacity headers_cap */
    uint32_t headers_cap;
    uint32_t nheaders;
    uint16_t known[MG_H__COUNT];
    uint32_t head_bytes;       /* header names + values, for the 431 check */
    uint32_t head_end;         /* buffer offset just past the head */
    uint8_t last_was_value;    /* header callback state */
    uint8_t chunk_line;        /* a chunk-size line starts at buf.parsed */
    uint8_t last_chunk;        /* the "0" chunk was seen: trailers follow */
    const char *error_reason;  /* set with status by a parser callback (static) */
    uint8_t http_minor;
    uint8_t keep_alive;        /* client wants the connection kept */
    uint8_t chunked;           /* request body is chunked */
    uint8_t has_body;
    uint8_t expect_continue;
    uint8_t is_upgrade;
    uint8_t head_method;       /* HEAD: response has no body */
    uint8_t idempotent;
    uint8_t retries;
    uint8_t body_started;      /* a body byte went upstream: no retry */
    uint8_t response_started;  /* response head sent to the client */
    uint8_t response_chunked;  /* we frame the response body as chunked */
    uint8_t response_close;    /* close the client connection after it */
    uint64_t body_received;
    uint64_t content_length;
    /* min_body_rate (http_conn.c): loop times in ms */
    uint64_t body_start_ms;    /* the body began to be read: the grace runs */
    uint64_t window_start_ms;  /* the current rate window began ... */
    uint64_t window_bytes;     /* ... with body_received at this */

    char *path;                /* normalised path, NUL-terminated (scratch) */
    size_t path_len;
    const char *query;         /* into scratch, includes '?', or "" */
    size_t query_len;
    mg_wgen_t *g;              /* the config generation it started on (held) */
    char request_id[MG_REQID_MAX + 1];
    size_t request_id_len;
    const mg_route_t *route;   /* NULL: no route (a hook may still pick an upstream) */
    int route_rc;              /* what the router said (router.h codes) */
    mg_route_match_t match;
    int target;                /* chosen target index, -1 none */
    mg_upconn_t *up;
    int status;                /* sent to the client */
    uint64_t bytes_sent;
    char *scratch;
    size_t scratch_cap, scratch_used;

    /* Lua hooks (hooks.c, ffi_request.c) */
    mg_hook_co_t *co;          /* coroutine running this request's hooks */
    uint8_t hook_phase;        /* phase running or waiting, 0 none */
    uint8_t hook_waiting;      /* suspended until I/O completes */
    uint8_t nreq_edits, nres_edits;
    const char *new_method;    /* set by a hook (arena), else NULL */
    size_t new_method_len;
    const char *new_query;     /* without '?'; NULL = keep */
    size_t new_query_len;
    uint8_t path_rewritten;    /* r->path was replaced: send it as is */
    int upstream_override;     /* -1 none, else upstream index */
    int target_override;       /* -1 none */
    int res_status;            /* on_response: status to send (0 = upstream's) */
    const char *res_body;      /* replacement body (arena), or NULL */
    size_t res_body_len;
    uint8_t res_body_set;
    uint8_t res_dropping;      /* upstream body is being discarded */
    mg_arena_chunk_t *arena_chunks;
    size_t arena_used;
    char *body_buf;            /* req:body(): the whole body (malloc'd) */
    size_t body_len, body_cap;
    uint8_t body_buffered;     /* body_buf holds the complete body */
    mg_hook_co_t *body_hc;     /* hook waiting for it */
    /* W3C trace context (trace.h), set with the request id */
    uint8_t traced;            /* trace_id, span_id, trace_flags are set */
    uint8_t trace_continued;   /* from the client's valid traceparent */
    uint8_t trace_bad;         /* a second traceparent: start a new trace */
    char trace_id[32];         /* hex, not NUL-terminated */
    char span_id[16];          /* the gateway's own span */
    char trace_flags[2];
    /* response cache (cache.c) */
    uint8_t cache_state;       /* cache.h MG_CACHE_* */
    uint8_t cache_looked;      /* mg_cache_lookup ran */
    uint8_t cache_skip;        /* a hook called req:skip_cache() */
    uint8_t cache_unsafe;      /* POST/PUT/...: removes the GET answer kept */
    char *cache_key;           /* arena */
    size_t cache_key_len;
    const char *cache_key_extra; /* req:cache_key() parts (arena) */
    size_t cache_key_extra_len;
    struct mg_cache_entry_s *cache_entry;     /* a kept answer (malloc'd) */
    struct mg_cache_capture_s *cache_capture; /* a fetched one being kept */
    uint8_t cache_lock_owner;  /* fetches it for every miss of its key */
    uint8_t cache_waiting;     /* in the worker's cache_waiters */
    uint8_t cache_updating;    /* served stale while another fetches */
    uint8_t cache_revalidating; /* asks the upstream if its answer still holds */
    mg_link_t cache_wait;
    uint64_t cache_wait_until; /* wall clock ms: then it fetches itself */
    struct mg_redis_op_s *cache_op; /* a Redis GET it waits for (redis.h) */

    /* Not cleared between requests (request_new zeroes up to here). */
    mg_edit_t req_edits[MG_MAX_EDITS];
    mg_edit_t res_edits[MG_MAX_EDITS];
    char arena[MG_ARENA_INLINE];
};

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
    uint16_t local_port;
    uint16_t listener;         /* index into cfg->listeners */
    uint64_t deadline;         /* loop time (ms) when the current wait expires */
    uint64_t timer_expiry;
    uint32_t requests;         /* served on this connection */
    char client_ip[46];
    uint16_t client_port;
    uint8_t handles_open;
    struct mg_conn_tls_s *tls; /* NULL on plain listeners (http_conn.c) */
};

/* An upstream connection. Owned by its pool (idle list) or by the request
 * using it; freed in its close callback. */
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
    uint8_t hook_paused;       /* parser paused while on_response waits */
    uint8_t hook_failed;       /* on_response failed: answer 500 */
    uint8_t revalidated;       /* a 304 to the cache's conditional request */
};

#define MG_UP_MAX_HEADERS 128

/* Keep-alive pool and health of one target of one upstream, per worker
 * and generation. After a reload the pool of the same upstream name and
 * target in the new generation is its successor: idle connections move
 * there, and connections in use go there when their request ends. */
struct mg_pool_s {
    mg_worker_t *w;
    mg_pool_t *successor;
    const mg_upstream_t *u;
    const mg_target_t *t;
    struct sockaddr_storage addr;
    int addr_ok;
    mg_link_t idle;
    int nidle;
    uint64_t down_until;        /* loop time before which the target is skipped */
    int current_weight;         /* smooth weighted round robin state */
    int fails;                  /* failed attempts in a row (max_fails) */
};

/* Per upstream, per worker: its target pools. */
typedef struct mg_upstream_rt_s {
    const mg_upstream_t *u;
    mg_pool_t *pools;           /* u->ntargets */
} mg_upstream_rt_t;

/* Active health of one target: src/health.c (control thread) writes it,
 * every worker's balancer reads `down`. */
typedef struct mg_target_health_s {
    _Atomic int down;           /* out of balancing after failed checks */
    /* the checker's own bookkeeping (control thread only) */
    int checked;                /* at least one check answered */
    int in_flight;
    int ok_streak, fail_streak;
    uint64_t next_at;           /* control loop time of the next check */
    char last_error[96];        /* why the last failed check failed */
} mg_target_health_t;

/* A config generation, process-wide: the validated config and its router.
 * Each worker runs it as an mg_wgen_t. Freed when the last worker
 * generation that holds it is gone (refs). */
struct mg_gen_s {
    _Atomic int refs;
    uint64_t number;
    double loaded_at;           /* wall clock, seconds */
    mg_config_t *cfg;
    mg_router_t *router;
    mg_target_health_t **health; /* [upstream][target] (health.h) */
    /* [upstream][target]: each target's address, resolved when the
     * generation is made (off the workers, which never wait on DNS) */
    struct mg_target_addr_s **addrs;
};

typedef struct mg_target_addr_s {
    struct sockaddr_storage ss;
    int ok; /* resolved */
} mg_target_addr_t;

/* A generation as one worker runs it: its Lua state, hooks and pools.
 * Held by the worker while current, by every request that started on it
 * and by every hook coroutine lent out of it; freed (by the worker's
 * reaper, at the end of a loop turn) once retired and unheld. */
struct mg_wgen_s {
    mg_wgen_t *next;            /* in the worker's list of retired ones */
    mg_worker_t *w;
    mg_gen_t *gen;
    const mg_config_t *cfg;
    const mg_router_t *router;
    void *lua;                  /* mg_lua_worker_t */
    mg_upstream_rt_t *ups;      /* cfg->nupstreams of them */
    uint32_t refs;
};

/* Control thread -> worker commands (worker.c). */
enum { MG_CTL_NONE = 0, MG_CTL_STOP, MG_CTL_PREPARE, MG_CTL_COMMIT, MG_CTL_ABORT };

struct mg_worker_s {
    int id;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    mg_wgen_t *g;               /* current generation */
    mg_wgen_t *retired;         /* older ones still held */
    mg_wgen_t *prepared;        /* built by PREPARE, switched to by COMMIT */
    uv_check_t reaper;          /* frees retired generations nobody holds */
    _Atomic int ctl_cmd;
    mg_gen_t *ctl_gen;          /* PREPARE: the generation to build */
    char *ctl_err;              /* PREPARE: why it failed (malloc'd) */
    uv_sem_t *ctl_done;         /* posted when a command is handled */
    uv_tcp_t *listeners;
    int *listen_fds;            /* their sockets, for mg_worker_quarantine */
    size_t nlisteners;
    size_t listeners_open;
    mg_link_t conns;
    size_t nconns;
    mg_request_t *free_requests;
    uint32_t nrequests;         /* request structs ever made (slots) */
    char **free_bufs;           /* stack of MG_BUF_SIZE buffers */
    size_t nfree_bufs, cap_free_bufs;
    char *scratch;              /* heads are built here, then written */
    size_t scratch_cap;
    char reqid_prefix[13];
    uint64_t reqid_counter;
    uint64_t trace_rng;          /* trace.h id generator state */
    mg_link_t cache_waiters;     /* requests waiting for another's fetch */
    uv_timer_t cache_timer;      /* polls for them (cache.c) */
    mg_accesslog_t *log;
    uv_timer_t shutdown_timer;
    _Atomic uint64_t hook_since; /* ms (monotonic) a hook started running, 0 = none */
    _Atomic int quarantined;     /* stuck in a hook: no longer accepting */
    void *_Atomic running_L;     /* lua_State a hook runs in (watchdog) */
    _Atomic uint64_t budget_ms;  /* the current generation's hook budget */
    _Atomic int budget_armed;    /* the watchdog set the budget hook on running_L */
    _Atomic uint64_t budget_armed_at; /* ms (monotonic) it did */
    int stopping;
    int start_error;
    uv_sem_t *ready;
};

/* worker.c */
void mg_worker_buf_get(mg_worker_t *w, mg_buf_t *b);
void mg_worker_buf_put(mg_worker_t *w, mg_buf_t *b);
int mg_worker_buf_grow(mg_worker_t *w, mg_buf_t *b, size_t need);
void mg_worker_conn_closed(mg_worker_t *w);
/* A request (or a hook coroutine) takes / lets go of a generation. */
static inline mg_wgen_t *mg_wgen_hold(mg_wgen_t *g)
{
    g->refs++;
    return g;
}
void mg_wgen_release(mg_wgen_t *g);

/* http_conn.c */
const char *mg_status_text(int status);
/* Does an answer with this status carry a body (and its Content-Length)?
 * 1xx, 204 and 304 never do (RFC 9110 6.4.1, 8.6); the same rule frames
 * upstream answers, cached ones and the gateway's own. (A HEAD request's
 * answer has no body either, whatever its status.) */
static inline int mg_status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}
void mg_conn_accept(mg_worker_t *w, uv_stream_t *listener, uint16_t port);
/* A connection without a socket, for the fuzz targets (spec/fuzz): what
 * would be written goes to `sink`, and mg_conn_feed hands it bytes the way
 * libuv hands a socket's (on_alloc, on_read). Returns the bytes taken:
 * fewer once the connection stops reading. p NULL: the peer's EOF. The
 * worker owns the connection as any other. */
mg_conn_t *mg_conn_open_memory(mg_worker_t *w, uint16_t port, mg_wq_sink_fn sink);
size_t mg_conn_feed(mg_conn_t *c, const char *p, size_t n);
/* The connection's TLS state, NULL on a plain listener. */
struct mg_tls_conn_s *mg_conn_tls(const mg_conn_t *c);
void mg_conn_close_if_idle(mg_conn_t *c);
/* Sends a gateway-made answer (error or Lua handler) for request r. */
void mg_conn_respond(mg_conn_t *c, int status, const char *ctype, const char *body,
                     size_t body_len, const char *extra_headers, size_t extra_len);
void mg_conn_respond_error(mg_conn_t *c, int status, const char *message);
/* Upstream side -> client side. */
int mg_conn_send(mg_conn_t *c, uv_buf_t *bufs, unsigned n);
void mg_conn_throttle(mg_conn_t *c, int on);
void mg_conn_response_done(mg_conn_t *c);
void mg_conn_upstream_failed(mg_conn_t *c, int status, const char *message);
void mg_conn_resume_body(mg_conn_t *c);
void mg_conn_start_tunnel(mg_conn_t *c);
void mg_conn_abort(mg_conn_t *c);
/* A request that waited for the cache goes on: serves the answer it now
 * holds (serve), or goes to the upstream. */
void mg_conn_cache_ready(mg_conn_t *c, int serve);
/* A hook phase that waited has finished with `result` (hooks.h codes). */
void mg_conn_hook_resumed(mg_conn_t *c, int phase, int result);
const char *mg_conn_data(const mg_conn_t *c, mg_span_t s);

/* proxy.c */
void mg_proxy_start(mg_conn_t *c);
int mg_proxy_send_body(mg_upconn_t *u, uv_buf_t *bufs, unsigned n);
void mg_proxy_detach(mg_upconn_t *u, int reusable);
void mg_proxy_client_drained(mg_upconn_t *u);
int mg_proxy_tunnel_write(mg_upconn_t *u, const char *data, size_t len);
/* The whole request (head and body) is written or queued: the wait for the
 * answer, timed by read_timeout, starts once it has all gone out. */
void mg_proxy_request_sent(mg_upconn_t *u);
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
/* Does a SET or REMOVE among a hook's header edits name this header
 * (case-insensitive)? Then the original's copies are not sent. */
int mg_edits_replace(const mg_edit_t *edits, int nedits, const char *name, size_t len);
/* Writes "name: value\r\n" at o; returns the end. */
char *mg_put_header(char *o, const char *n, size_t nl, const char *v, size_t vl);
/* Is response header i of u end-to-end (not hop-by-hop, not named in a
 * Connection header)? */
int mg_upconn_header_forwarded(mg_upconn_t *u, uint32_t i);
/* The next token of the comma-separated list v from *at (blanks and
 * commas skipped) in *tok / *tl, *at moved past it. Returns 0 at the end. */
int mg_token_next(const char *v, size_t vl, size_t *at, const char **tok, size_t *tl);
/* Is ch a token character (RFC 9110 5.6.2 tchar)? */
int mg_token_char(unsigned char ch);
/* Does the comma-separated token list v name tok (case-insensitive)? */
int mg_token_listed(const char *v, size_t vl, const char *tok, size_t tl);
/* The request headers that override the URL or method for some upstreams
 * (NULL-terminated, lower case), and whether n/l is one of them. */
extern const char *const mg_override_headers[];
int mg_override_header(const char *n, size_t l);
/* The on_response phase that waited has finished. */
void mg_proxy_hook_resumed(mg_upconn_t *u, int result);
/* The upstream index a request goes to (hook override, else its route's). */
int mg_request_upstream(const mg_request_t *r);

/* ffi_request.c: the request's arena */
void *mg_request_alloc(mg_request_t *r, size_t n);
void mg_request_arena_reset(mg_request_t *r);

/* pool.c */
int mg_pools_init(mg_wgen_t *g);
/* Hands idle connections of `old`'s pools to the same pools of `g`. */
void mg_pools_adopt(mg_wgen_t *g, mg_wgen_t *old);
void mg_pools_close(mg_wgen_t *g);
void mg_pools_free(mg_wgen_t *g);
/* Picks the next target of upstream `ui` by smooth weighted round robin,
 * skipping targets marked down (unless all are). `avoid` is a target index
 * to skip when possible (-1: none). Returns the target index. */
int mg_balancer_pick(mg_wgen_t *g, int ui, int avoid);
/* A failed attempt on p's target (may skip it for fail_timeout), or an
 * answer from it (resets the count). See pool.c. */
void mg_pool_failed(mg_pool_t *p);
void mg_pool_answered(mg_pool_t *p);
/* host:port to an address: numeric at once, a name with getaddrinfo (which
 * blocks: not on a worker's loop). Returns 0 or -1. */
int mg_resolve(const char *host, uint16_t port, struct sockaddr_storage *out);

/* http_client.c */
void mg_http_client_conn_lost(void *client);
void mg_http_client_close(mg_worker_t *w);
void mg_http_client_free(mg_worker_t *w);
mg_upconn_t *mg_pool_take_idle(mg_pool_t *p);
void mg_pool_put_idle(mg_pool_t *p, mg_upconn_t *u);
void mg_pool_forget(mg_upconn_t *u);

#endif
