/* request.h: the protocol-independent request (request.c).
 *
 * A protocol (HTTP/1 today: http_conn.c) parses a request head into an
 * mg_request_t, hands it to the pipeline (pipeline.h) and implements the
 * small table of functions the core writes the response through
 * (mg_proto_t). Everything above the protocol (the pipeline, hooks, FFI,
 * cache, access log, proxy) sees only the request: never the connection.
 *
 * Threading: a request belongs to one worker thread and is only touched
 * from that worker's libuv loop.
 */
#ifndef MG_REQUEST_H
#define MG_REQUEST_H

#include <stdint.h>
#include <strings.h>
#include <string.h>
#include <stddef.h>
#include <uv.h>
#include "cidr.h"
#include "header_names.h"
#include "config.h"
#include "router.h"
#include "response.h"
#include "span.h"
#include "tracing.h"

typedef struct mg_worker_s mg_worker_t;
typedef struct mg_request_s mg_request_t;
typedef struct mg_upconn_s mg_upconn_t;
typedef struct mg_wgen_s mg_wgen_t;
typedef struct mg_hook_co_s mg_hook_co_t;
struct mg_tls_conn_s;

#define MG_REQID_MAX 128

/* mg_request_t.up_phases */
enum { MG_UP_CONNECTED = 1, MG_UP_TLS_DONE = 2, MG_UP_FIRST_BYTE = 4 };

/* Where a request is in its life. */
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
    uint8_t tok;         /* the name's token (header_names.h), 0 for others */
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

struct mg_pp_info_s;

/* The connection a request came on, as the core sees it. Owned by the
 * protocol's connection, which outlives its requests. The connection's
 * client is the socket peer, or the source a PROXY header from a trusted
 * proxy gave (client_addr.h); a request's real client may still come from
 * its headers (mg_request_client). */
typedef struct mg_peer_s {
    char client_ip[46];        /* the connection's client, as text */
    uint16_t client_port;
    uint16_t local_port;
    uint16_t listener;         /* index into cfg->listeners */
    uint8_t proxied;           /* a PROXY header gave client_ip: socket_ip is the socket's */
    mg_addr_t addr;            /* client_ip as a key (cidr.h), for trusted_proxies */
    char socket_ip[46];        /* the socket peer, when proxied */
    struct mg_pp_info_s *pp;   /* the PROXY header's TLVs (client_addr.c), or NULL;
                                  owned by the connection */
} mg_peer_t;

/* What a protocol does for the core. r is the protocol's current request
 * on its connection; a call that closes the connection ends r (it goes
 * back to the worker's free list), so callers touch r no more after a
 * call that can close (they say so below). */
typedef struct mg_proto_s {
    /* The response head (response.h): the protocol decides its framing
     * from the status, res->body_len, the request (HEAD, version) and
     * whether the connection goes on, writes it (copying what it keeps of
     * res) and holds it for the next send_body, which the caller makes
     * before it returns to the loop (head and first body bytes leave in
     * one write; nothing may use the worker's scratch in between). Sets
     * r->status and r->response_started. Returns 0, or -1 when the head
     * cannot be written (too large): nothing was sent, r goes on. */
    int (*start_response)(mg_request_t *r, const mg_resp_t *res);
    /* Body bytes (n may be 0: only the held head goes), framed as
     * start_response decided; dropped when no body goes (HEAD, 204, 304);
     * after a 101, the tunnel's bytes as they are. `last` ends the body.
     * Returns 0, or -1 when the connection closed (r ended). */
    int (*send_body)(mg_request_t *r, const uv_buf_t *bufs, unsigned n, int last);
    /* Ends the body with trailer fields (gRPC's grpc-status; sent when the
     * framing can carry them: HTTP/1.1 chunked). Returns as send_body. */
    int (*send_trailers)(mg_request_t *r, const mg_hfield_t *t, size_t n);
    /* Bytes queued to the client and not written yet. */
    size_t (*pending)(const mg_request_t *r);
    /* Stop (on) or go on (off) reading the client: back-pressure from an
     * upstream that has not taken the body sent so far. */
    void (*throttle)(mg_request_t *r, int on);
    /* Closes the connection now (r ended). */
    void (*abort)(mg_request_t *r);
    /* An answer the gateway made (mg_request_respond) or kept (the cache)
     * went out whole: the protocol reads on to the end of the request
     * (dropping any body) or closes (r->response_close). May end r. */
    void (*answered)(mg_request_t *r);
    /* The whole upstream answer went to the client. May end r. */
    void (*response_done)(mg_request_t *r);
    /* The upstream connection is ready for the request body. */
    void (*resume_body)(mg_request_t *r);
    /* A 101 went to the client: copy bytes both ways from now on. */
    void (*start_tunnel)(mg_request_t *r);
    /* req:body(): start reading the whole body into r->body_buf (r->state
     * is MG_RS_BUFFER). Returns 0, or -1 when it cannot. */
    int (*read_body)(mg_request_t *r);
    /* Before the upstream: the protocol's checks of a body about to be
     * streamed. Returns 1 (go on), 0 (wait: the protocol sends r upstream
     * itself once it can) or -1 (answered). */
    int (*prepare_body)(mg_request_t *r);
    /* A hook that waited has finished: parse on if r is still the
     * request of connection `conn` (r may have ended meanwhile). */
    void (*proceed)(void *conn, const mg_request_t *r);
    /* The request connection `conn` is working on (NULL when closing): is
     * r still alive after a call that may have ended it? */
    const mg_request_t *(*current)(void *conn);
    /* The upgrade r asked for is not let through (upgrade.h): r goes on
     * as an ordinary request. */
    void (*no_upgrade)(mg_request_t *r);
    /* The connection's TLS state, NULL on a plain listener. */
    struct mg_tls_conn_s *(*tls)(const mg_request_t *r);
} mg_proto_t;

/* What lower modules (hooks, cache) tell the pipeline (pipeline.c), which
 * sits above them and sets r->pipe when it takes the request. */
typedef struct mg_pipe_s {
    /* A hook phase that waited has finished with `result` (hooks.h codes). */
    void (*hook_resumed)(mg_request_t *r, int phase, int result);
    /* A request that waited for the cache goes on: serves the answer it now
     * holds (serve), or goes to the upstream. */
    void (*cache_ready)(mg_request_t *r, int serve);
} mg_pipe_t;

/* One request. Taken from the worker's free list by the protocol on the
 * first byte of a request, returned when its response is complete (or the
 * connection dies). Owns `scratch` (per-request strings: normalised path,
 * upstream path, request id). */
struct mg_request_s {
    mg_request_t *next_free;
    uint32_t slot;             /* per-worker number of this struct, fixed for
                                  its life (Lua caches a cdata pointer by it) */
    const mg_proto_t *proto;   /* the protocol it came by */
    void *conn;                /* ... and its connection (the protocol's) */
    const mg_peer_t *peer;     /* that connection's addresses */
    char *const *data;         /* the buffer its spans point into */
    const mg_pipe_t *pipe;     /* set by the pipeline */
    mg_worker_t *w;
    uint32_t serial;           /* which request this struct holds now: the
                                  struct is reused, so a pointer kept across
                                  a wait cannot tell on its own (mg_request_still) */
    mg_req_state_t state;
    uint64_t start_ns;         /* uv_hrtime() at the first byte */
    uint64_t upstream_start_ns;
    uint64_t upstream_ns;      /* head sent -> response complete */
    uint64_t total_ns;         /* set when the request is logged */

    mg_span_t method, url;
    mg_header_t *headers;      /* capacity headers_cap */
    uint8_t *htok;             /* each header's name token (header_names.h),
                                  set where it is parsed; capacity headers_cap */
    uint32_t headers_cap;
    uint32_t nheaders;
    uint16_t known[MG_H__COUNT];
    uint32_t head_bytes;       /* header names + values, for the 431 check */
    uint32_t head_end;         /* buffer offset just past the head */
    uint8_t last_was_value;    /* header callback state */
    uint8_t chunk_line;        /* a chunk-size line starts at buf.parsed */
    uint8_t last_chunk;        /* the "0" chunk was seen: trailers follow */
    const char *error_reason;  /* set with status by a parser callback (static) */
    uint8_t http_major;        /* 1, or 2 for a stream of an HTTP/2 connection */
    uint8_t http_minor;
    uint8_t keep_alive;        /* client wants the connection kept */
    uint8_t chunked;           /* request body is chunked */
    uint8_t has_body;
    uint8_t expect_continue;
    uint8_t is_upgrade;
    uint8_t head_method;       /* HEAD: response has no body */
    uint8_t idempotent;
    uint8_t retries;
    uint8_t h2_refused;        /* streams an HTTP/2 upstream refused (not processed) */
    uint8_t body_started;      /* a body byte went upstream: no retry */
    uint8_t response_started;  /* response head sent to the client */
    uint8_t response_close;    /* close the client connection after it (set
                                  by the core or decided by the protocol) */
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
    int target;                /* chosen target (a slot, targets.h), -1 none */
    struct mg_pool_s *tpool;   /* ... its pool, which counts r as a user */
    mg_upconn_t *up;
    int status;                /* sent to the client */
    uint64_t bytes_sent;
    char *scratch;
    size_t scratch_cap, scratch_used;

    /* Lua hooks: co, hook_phase and hook_waiting are hooks.c's; what hooks
     * change (edits, method, query, path, overrides, the answer) only
     * ffi_request.c writes, the pipeline and the proxy read */
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
    int split_upstream;        /* the route's canary or split chose this
                                  upstream (split.h): its index + 1; 0: none,
                                  the route's (no store per request) */
    uint8_t split_how;         /* how (MG_SPLIT_*) */
    uint8_t mirror;            /* what became of the route's mirror copy
                                  (MG_MIRROR_*, mirror.h); 0: none yet */
    uint8_t buffering;         /* the body is read whole before the first
                                  try (a retry may replay it, a mirror
                                  copy carries it): mg_pipeline_body_read
                                  starts r upstream once it is in */
    int target_override;       /* -1 none */
    uint32_t target_serial;    /* ... its slot's filling (targets.h) */
    uint8_t hash_key_set;      /* req:set_hash_key: the hash balancer's key ... */
    uint64_t hash_key;         /* ... as its hash (balancer_key.c) */
    int res_status;            /* on_response: status to send (0 = upstream's) */
    const char *res_body;      /* replacement body (arena), or NULL */
    size_t res_body_len;
    uint8_t res_body_set;
    uint8_t res_dropping;      /* upstream body is being discarded (proxy.c) */
    mg_arena_chunk_t *arena_chunks;
    size_t arena_used;
    char *body_buf;            /* req:body(): the whole body (malloc'd) */
    size_t body_len, body_cap;
    uint8_t body_buffered;     /* body_buf holds the complete body */
    mg_hook_co_t *body_hc;     /* hook waiting for it */
    /* W3C trace context (trace.h), set with the request id (request.c;
     * trace_bad by the protocol, which sees the headers arrive) */
    uint8_t traced;            /* trace_id, span_id, trace_flags are set */
    uint8_t trace_continued;   /* from the client's valid traceparent */
    uint8_t trace_bad;         /* a second traceparent: start a new trace */
    uint8_t trace_sampled;     /* recorded as spans (tracing.h): `tspan` is set */
    char trace_id[32];         /* hex, not NUL-terminated */
    char span_id[16];          /* the gateway's own span */
    char trace_flags[2];
    /* the response cache's own state (cache.c), NULL off cache routes */
    struct mg_cache_req_s *cache;
    /* the real client (client_addr.c), set before the hooks only when
     * settings.trusted_proxies is: */
    const char *client_ip;     /* from a trusted header (arena); NULL: the peer's */
    uint8_t xff_trusted;       /* the connection's client is a trusted proxy:
                                  its X-Forwarded-For list goes on upstream */
    uint8_t xff_drop;          /* it is not: its X-Forwarded-For is dropped */
    /* retries and the deadline (retry.h), NULL without either */
    struct mg_retry_s *retry;
    /* for the access log (logfields.h), set by proxy.c: the attempts made
     * on targets, and the last one's phases (ns), up_phases saying which
     * it went through (a pooled connection has no connect or handshake) */
    uint8_t up_attempts;
    uint8_t up_phases;         /* MG_UP_CONNECTED | MG_UP_TLS_DONE | MG_UP_FIRST_BYTE */
    uint64_t up_phase_start_ns; /* when the connect, then the handshake, began */
    uint64_t up_connect_ns, up_tls_ns, up_first_byte_ns;
    /* the res.header fields' values as the client got them (arena, by
     * slot; accesslog.c), NULL when the format has none or no answer went */
    struct mg_logcap_s *log_res;
    /* moongate.compression (compress.h): its conf, set by the policy with
     * the encoding the client asked for, and the stream once compressing */
    struct mg_compress_conf_s *compress_conf; /* counts its live streams */
    uint8_t compress_enc;       /* MG_ENC_* */
    struct mg_compress_s *compress;

    /* Not cleared between requests (mg_request_init zeroes up to here). */
    mg_trace_req_t tspan;      /* tracing.h: set when trace_sampled is */
    mg_edit_t req_edits[MG_MAX_EDITS];
    mg_edit_t res_edits[MG_MAX_EDITS];
    char arena[MG_ARENA_INLINE];
};

/* Is r still the request it was when `serial` was read from it, and still
 * the current request of its connection? A hook's answer or an error can end
 * r, and its connection may then start the next request in the same struct. */
static inline int mg_request_still(const mg_request_t *r, uint32_t serial,
                                   const mg_proto_t *p, void *conn)
{
    return r->serial == serial && p->current(conn) == r;
}

/* Fields that must not appear twice (request.c): which copy counts would
 * differ between the gateway (its checks, hooks, routing) and the
 * upstream. RFC 9110 5.3: none of them is a list. Indexed by MG_H_*. */
extern const char *const mg_request_dup_reason[MG_H__COUNT];

/* Remembers the header r->headers[i] (spans into data) if the core acts on
 * it: its name's token in r->htok[i] (looked up once here for every later
 * decision, e.g. the head sent upstream) and, for the names the request
 * keeps an index of, r->known. Returns NULL, or why the request is refused
 * (400). For every protocol's heads; inline: once per header of every
 * request. */
static inline const char *mg_request_classify_header(mg_request_t *r, const char *data,
                                                     uint32_t i)
{
    mg_span_t n = r->headers[i].name;
    const char *s = data + n.off;
    if (n.len == 0)
        return "empty header field name"; /* ": v": llhttp lets it by */
    int tok = mg_hname_lookup(s, n.len);
    r->htok[i] = (uint8_t)tok;
    int k = mg_hnames[tok].known;
    if (k < 0)
        return NULL;
    if (r->known[k] && mg_request_dup_reason[k])
        return mg_request_dup_reason[k]; /* a second Host is ambiguous: which one routes? */
    if (r->known[k] && k == MG_H_TRACEPARENT)
        r->trace_bad = 1; /* W3C: two of them are no trace to continue */
    if (!r->known[k])
        r->known[k] = (uint16_t)(i + 1);
    return NULL;
}

/* The request's real client address (text): the one its trusted headers
 * name, else its connection's client. */
static inline const char *mg_request_client(const mg_request_t *r)
{
    return r->client_ip ? r->client_ip : r->peer->client_ip;
}

/* The socket peer of the request's connection (text). */
static inline const char *mg_request_peer(const mg_request_t *r)
{
    return r->peer->proxied ? r->peer->socket_ip : r->peer->client_ip;
}

/* The bytes a span of r's head points at. */
static inline const char *mg_request_data(const mg_request_t *r, mg_span_t s)
{
    return *r->data + s.off;
}

/* Takes a request from w's free list (or makes one) with room for the
 * limits of w's current generation, which it holds; NULL when out of
 * memory. The protocol then sets proto, conn, peer and data; it ends it
 * with mg_pipeline_free (pipeline.h). */
mg_request_t *mg_request_new(mg_worker_t *w);
/* Gives r room (its header array and scratch) for limits l: 0, or -1 when
 * out of memory. (mg_request_new does it; so does the testing kit.) */
int mg_request_fit(mg_request_t *r, const mg_limits_t *l);

/* req:body(): n more bytes of the whole body into r->body_buf (grown by
 * doubling; the caller bounds the body by max_body first). 0, or -1 when
 * out of memory. */
int mg_request_body_append(mg_request_t *r, const char *p, size_t n);

/* The request's arena: memory that lives until the request ends (8-byte
 * aligned). NULL when out of memory. */
void *mg_request_alloc(mg_request_t *r, size_t n);
void mg_request_arena_reset(mg_request_t *r);

/* A response header value kept for the access log (res.header.NAME
 * fields, logfields.h): its bytes in the request's arena, at most
 * MG_LOG_VALUE_MAX; cut when the header had more. */
typedef struct mg_logcap_s {
    const char *p;
    uint32_t len;
    uint8_t cut;
} mg_logcap_t;

/* The response head res is about to go to r's client: keeps the values of
 * the access log's res.header fields in r->log_res (the line has none:
 * nothing to do). Called by everything that hands a protocol a response
 * head (proxy.c, mg_request_send_whole); accesslog.c writes them. */
void mg_request_log_capture(mg_request_t *r, const mg_resp_t *res);

/* The nth value (from 0) of header `name` as hooks see it: the last SET or
 * REMOVE of that name among `edits` replaces every value before it, ADDs
 * come after. `orig` (may be NULL) holds the received headers, spans into
 * `data`. Returns 1 and fills p/len, or 0. */
int mg_edits_header(const mg_edit_t *edits, int nedits, const mg_header_t *orig, uint32_t norig,
                    const char *data, const char *name, size_t nlen, int nth, const char **p,
                    size_t *len);
/* A request header's value by name (case-insensitive), as changed so far
 * by hooks; nth counts repeats from 0. Returns 1 and fills p/len, or 0. */
int mg_request_header(const mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len);
/* Does a SET or REMOVE among a hook's header edits name this header
 * (case-insensitive; tok: its token, header_names.h, 0 if none)? Then the
 * original's copies are not sent. (Inline: asked once per header of
 * every head a hook edited.) */
static inline int mg_edits_replace(const mg_edit_t *edits, int nedits, int tok,
                                   const char *n, size_t l)
{
    for (int i = 0; i < nedits; i++) {
        const mg_edit_t *e = &edits[i];
        if (e->op == MG_EDIT_ADD)
            continue;
        if (tok || e->tok) { /* a known name: its token says it all */
            if (e->tok == tok)
                return 1;
        } else if (e->name_len == l && strncasecmp(e->name, n, l) == 0) {
            return 1;
        }
    }
    return 0;
}
/* The upstream index a request goes to (hook override, else what its
 * route's canary or split chose, else its route's). */
int mg_request_upstream(const mg_request_t *r);
/* Target ti of upstream ui as r's generation has it: slot ti's in the
 * gateway (targets.h; r uses it, so the slot keeps it), the declared one's
 * in the testing kit (which has no generation). */
const mg_target_t *mg_request_target_of(const mg_request_t *r, int ui, int ti);
/* The name of r's target ("-" when it has none yet), by the rule above. */
const char *mg_request_target_name(const mg_request_t *r);

/* The path r sends upstream (its route's rewrite or strip_prefix, or a
 * hook's new path as is; no query) into out (capacity cap),
 * NUL-terminated. Returns its length, or -1 when cap is too small. For
 * the request line (proxy.c) and the client span's url.full (tracing.c). */
static inline long mg_request_upstream_path(const mg_request_t *r, char *out, size_t cap)
{
    if (r->path_rewritten || !r->route) {
        if (r->path_len + 1 > cap)
            return -1;
        memcpy(out, r->path, r->path_len);
        out[r->path_len] = '\0';
        return (long)r->path_len;
    }
    return mg_router_upstream_path(&r->match, r->path, r->path_len, out, cap);
}

/* Gives r its request id (the client's X-Request-Id when valid, else a new
 * one) and its trace context; once, before anything is logged. */
void mg_request_assign_id(mg_request_t *r);

/* Sends a gateway-made answer: status 200-599 (others are refused: 500),
 * Content-Type ctype and the body (both left out for 204 and 304), the
 * request id and the fields extra[0..nextra) (may be NULL: a 304 keeps the
 * validators a hook gave); decides whether the connection closes after it.
 * The protocol frames it (mg_proto_t.start_response). May end r. */
void mg_request_respond(mg_request_t *r, int status, const char *ctype, const char *body,
                        size_t body_len, const mg_hfield_t *extra, size_t nextra);
/* The response of a gateway-made answer (as mg_request_respond sends it;
 * the testing kit runs mg_request_respond itself): its fields (Content-Type when the status
 * has a body, X-Request-Id, then extra) into f (room for nextra + 2) and
 * res; returns the body length that goes (0 for 204 and 304). */
size_t mg_request_answer(const mg_request_t *r, int status, const char *ctype, size_t body_len,
                         const mg_hfield_t *extra, size_t nextra, mg_hfield_t *f, mg_resp_t *res);
/* Is r a gRPC request (its Content-Type, grpc.h)? Then the answers the
 * gateway makes for it (mg_request_respond, _error) are gRPC answers: 200,
 * no body, grpc-status and grpc-message. */
int mg_request_grpc(const mg_request_t *r);
/* The gateway's own JSON error answer, with extra fields (may be NULL).
 * May end r. */
void mg_request_respond_error(mg_request_t *r, int status, const char *message);
void mg_request_respond_error_with(mg_request_t *r, int status, const char *message,
                                   const mg_hfield_t *extra, size_t nextra);
/* Hands the protocol a whole answer: start_response(res), then the body
 * in one send_body, then answered(). For the gateway's own answers and
 * kept ones. Returns 0, or -1 when the head could not be written (nothing
 * was sent: the caller answers otherwise). May end r. */
int mg_request_send_whole(mg_request_t *r, const mg_resp_t *res, const char *body,
                          size_t body_len);

#endif
