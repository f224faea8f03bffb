/* mg_ffi.h: every C function Lua may call through LuaJIT's FFI.
 *
 * Rules (STYLE.md, C 9): each function is mg_ffi_*, takes its subject
 * first, fills caller-provided buffers, never longjmps, never keeps a
 * pointer it was given past the call unless it says so. The Lua side
 * declares the same prototypes in lua/moongate/cdefs.lua; a spec checks the
 * two agree. Types Lua sees are opaque pointers.
 */
#ifndef MG_FFI_H
#define MG_FFI_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_request_s mg_request_t;

/* Hook phases, in the order they run (also lua/moongate/runtime.lua). */
enum {
    MG_PHASE_REQUEST = 1,   /* global on_request: before routing */
    MG_PHASE_ROUTE = 2,     /* global on_route: after the router */
    MG_PHASE_ACCESS = 3,    /* the route's policies: on_request */
    MG_PHASE_RESPONSE = 4,  /* route policies then global: on_response */
    MG_PHASE_LOG = 5,       /* route policies then global: on_log */
    MG_PHASE_TIMER = 6,     /* a gw.timer callback (no request) */
};

/* What mg_ffi_req_str / mg_ffi_req_set_str address. */
enum {
    MG_FFI_METHOD = 1, MG_FFI_PATH = 2, MG_FFI_RAW_PATH = 3, MG_FFI_QUERY = 4,
    MG_FFI_ID = 5, MG_FFI_CLIENT = 6, MG_FFI_ROUTE = 7, MG_FFI_UPSTREAM = 8,
    MG_FFI_TARGET = 9, MG_FFI_SCHEME = 10,
    /* TLS listeners only (else -1): protocol, cipher, SNI name, ALPN */
    MG_FFI_TLS_VERSION = 11, MG_FFI_TLS_CIPHER = 12, MG_FFI_TLS_SNI = 13,
    MG_FFI_TLS_ALPN = 14,
    MG_FFI_TRACE_ID = 15, MG_FFI_SPAN_ID = 16, /* W3C trace context (trace.h) */
    MG_FFI_PEER = 17,       /* the socket peer (CLIENT: the real client) */
};

/* Errors (negative); 0 is success. */
enum {
    MG_FFI_EINVAL = -1,     /* bad name or value */
    MG_FFI_EPHASE = -2,     /* not possible in this phase */
    MG_FFI_ELIMIT = -3,     /* too many edits */
    MG_FFI_ENOMEM = -4,
    MG_FFI_ENOTFOUND = -5,  /* no such upstream / target */
};

/* ==== request and response (ffi_request.c) ==== */
int mg_ffi_req_str(mg_request_t *r, int what, const char **p, size_t *len);
int mg_ffi_req_client_port(mg_request_t *r);
/* Is the request's real client (mg_request_client) in CIDR set s (cidr.h,
 * the ip policy's)? 1, 0, or -1 when it is no address. The connection's
 * client as the address it already holds: no string made or parsed. */
struct mg_cidr_set_s;
int mg_ffi_req_client_in(mg_request_t *r, const struct mg_cidr_set_s *s);
/* 1 when the TLS session was resumed, 0 when not, -1 on plain HTTP. */
int mg_ffi_req_tls_resumed(mg_request_t *r);
/* The TLS client's certificate (an X509 *, borrowed from the connection:
 * use it within the calling hook step only) or NULL when it sent none or
 * the listener is plain; *verified 1 when it chained to client_ca. */
void *mg_ffi_req_client_cert(mg_request_t *r, int *verified);
int mg_ffi_req_http_version(mg_request_t *r);
/* req.grpc (grpc.c's rules): 1 when a request with this Content-Type and
 * path is gRPC, with the service and method (pointing into path), else 0. */
int mg_ffi_grpc_split(const char *ctype, size_t ctype_len, const char *path, size_t path_len,
                      const char **service, size_t *service_len, const char **method,
                      size_t *method_len);
int mg_ffi_req_header(mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len);
int mg_ffi_req_header_count(mg_request_t *r);
int mg_ffi_req_header_at(mg_request_t *r, int i, const char **name, size_t *nlen,
                         const char **value, size_t *vlen);
int mg_ffi_req_param(mg_request_t *r, int i, const char **name, size_t *nlen,
                     const char **value, size_t *vlen);
int mg_ffi_req_edit_header(mg_request_t *r, int op, const char *name, size_t nlen,
                           const char *value, size_t vlen);
int mg_ffi_req_set_str(mg_request_t *r, int what, const char *s, size_t len);
int mg_ffi_req_set_upstream(mg_request_t *r, const char *name, size_t len);
int mg_ffi_req_set_target(mg_request_t *r, const char *name, size_t len);
/* The key the hash balancer hashes for this request (upstream option
 * hash = function(req) ... end, or any hook before the upstream). */
int mg_ffi_req_set_hash_key(mg_request_t *r, const char *key, size_t len);
int mg_ffi_req_read_body(mg_request_t *r, const char **p, size_t *len);
int mg_ffi_res_status(mg_request_t *r);
int mg_ffi_res_set_status(mg_request_t *r, int status);
int mg_ffi_res_header(mg_request_t *r, const char *name, size_t nlen, int nth,
                      const char **p, size_t *len);
int mg_ffi_res_header_count(mg_request_t *r);
int mg_ffi_res_header_at(mg_request_t *r, int i, const char **name, size_t *nlen,
                         const char **value, size_t *vlen);
int mg_ffi_res_edit_header(mg_request_t *r, int op, const char *name, size_t nlen,
                           const char *value, size_t vlen);
int mg_ffi_res_set_body(mg_request_t *r, const char *body, size_t len);
/* The response cache: a hook before the lookup may keep the request out
 * of it, or add a part to its key; the state is cache.h's MG_CACHE_*. */
int mg_ffi_req_skip_cache(mg_request_t *r);
int mg_ffi_req_cache_key(mg_request_t *r, const char *part, size_t len);
int mg_ffi_req_cache_state(mg_request_t *r);
double mg_ffi_now(void);
double mg_ffi_monotonic(void);

/* ==== the pipeline's rules as pure functions (no request) ====
 * The gateway runs these, and so does the testing kit
 * (lua/moongate/testing/fake.lua), instead of a copy of them. */
/* mg_trace_parse (trace.c): 0 and the 32 hex digits of the trace id and
 * the 2 flag digits to send on, or -1 when v is no traceparent to continue. */
int mg_ffi_trace_parse(const char *v, size_t n, char *trace_id, char *flags);
/* settings.tracing's sampler (trace.c mg_trace_decide): 1 when a request of
 * trace trace_id (32 hex digits; `continued`: from a client's traceparent
 * with `flags`) is sampled at ratio `sample`, parent-based or not; else 0. */
int mg_ffi_trace_decide(const char *trace_id, int continued, const char *flags, double sample,
                        int parent_based);
/* Smooth weighted round robin (balancer_rr.c): one pick among the n targets whose
 * live[i] is non-zero, cw[i] their current weights (updated). Returns the
 * index picked, or -1 when none is live. */
int mg_ffi_balancer_swrr(int *cw, const int *weight, const unsigned char *live, size_t n);
/* The gateway's balancers (balancer.h) as one worker runs them, with state
 * of their own, for the testing kit: kind a balancer name ("round_robin",
 * "least_conn", "hash", "p2c_ewma"), n >= 1 targets' "host:port" names and
 * weights (read during the call); seed as the gateway's worker 0 seeds
 * upstream i (pool.c): i, so that its random draws are the kit's. NULL
 * for an unknown kind or out of memory. */
typedef struct mg_lb_s mg_lb_t;
mg_lb_t *mg_ffi_lb_new(const char *kind, const char *const *names, const int *weights, size_t n,
                       uint64_t seed);
void mg_ffi_lb_free(mg_lb_t *lb);
/* One pick over every target but `exclude` (-1: none), with the request's
 * key hash when has_key (mg_ffi_kit_lb_key). Returns the target index. */
int mg_ffi_lb_pick(mg_lb_t *lb, int exclude, int has_key, uint64_t key);
/* What the proxy tells a balancer (spec/c/balancer_spec.lua): a request
 * starts or stops on target i, or its answer's head came after ns. A
 * balancer that keeps no such state ignores them. */
void mg_ffi_lb_acquire(mg_lb_t *lb, int i);
void mg_ffi_lb_release(mg_lb_t *lb, int i);
void mg_ffi_lb_observe(mg_lb_t *lb, int i, uint64_t ns);
/* ==== moongate.compression (compress.c) ====
 * A policy's options, made at load and freed with its Lua state:
 * gzip_level 1-9 (0: no gzip), brotli_quality 0-11 (-1: no brotli),
 * brotli_window its lgwin 10-24, min_size a known length below which an
 * answer goes as it is, max_streams the answers of this policy a worker
 * compresses at once (beyond: sent as they are), types a comma-separated list of lower-case media
 * types (a subtype "*" for a whole type); the policy checked them. NULL: out
 * of memory. */
typedef struct mg_compress_conf_s mg_compress_conf_t;
mg_compress_conf_t *mg_ffi_compress_conf_new(int gzip_level, int brotli_quality,
                                             int brotli_window, uint64_t min_size,
                                             unsigned max_streams, const char *types,
                                             size_t types_len);
void mg_ffi_compress_conf_free(mg_compress_conf_t *c);
/* r's answer is compressed with c's options, in the encoding its
 * Accept-Encoding asks for, if the final head allows (compress.h).
 * Returns the encoding picked (MG_ENC_*: 0 identity, 1 gzip, 2 br) or
 * MG_FFI_EPHASE once the response has started. */
int mg_ffi_req_set_compression(mg_request_t *r, mg_compress_conf_t *c);
/* The encoding an Accept-Encoding value picks among `allowed` (bits
 * 1 << MG_ENC_*), for the testing kit and the specs. */
int mg_compress_negotiate(const char *v, size_t len, unsigned allowed);

/* May a hook make this header edit (op MG_EDIT_*, the value unread for a
 * REMOVE)? 0, or MG_FFI_EINVAL: a bad name or value, or a framing or
 * hop-by-hop header, which the core owns (ffi_request.c). */
int mg_ffi_header_edit_check(int op, const char *name, size_t nlen, const char *value,
                             size_t vlen);
/* May a hook set the method, path or query (what: MG_FFI_METHOD, _PATH,
 * _QUERY) to s? 0 or MG_FFI_EINVAL (ffi_request.c). */
int mg_ffi_req_str_check(int what, const char *s, size_t len);
/* Is s a client X-Request-Id the gateway keeps (1-128 letters, digits, '-',
 * '_', '.')? 0 or MG_FFI_EINVAL (ffi_request.c). */
int mg_ffi_request_id_check(const char *s, size_t n);

/* ==== certificate fields (cert_info.c) ====
 * mg_ffi_cert_field writes field `what` of certificate x509 into buf and
 * returns its length, which may exceed cap (then call again with that
 * much room), or -1 when there is no such field. SAN kinds take idx (the
 * idx-th name of that kind, from 0). Formats: names RFC 2253, serial
 * upper-case hex, fingerprint SHA-256 lower-case hex, dates ISO 8601 UTC,
 * PEM with its BEGIN/END lines. */
enum {
    MG_CERT_SUBJECT = 1, MG_CERT_ISSUER = 2, MG_CERT_SERIAL = 3, MG_CERT_FINGERPRINT = 4,
    MG_CERT_NOT_BEFORE = 5, MG_CERT_NOT_AFTER = 6, MG_CERT_PEM = 7,
    MG_CERT_DNS = 8, MG_CERT_URI = 9, MG_CERT_EMAIL = 10,
};
int mg_ffi_cert_field(const void *x509, int what, int idx, char *buf, size_t cap);
/* The first certificate of a PEM text (the testing kit's client
 * certificates), NULL when there is none; freed with mg_ffi_cert_free. */
void *mg_ffi_cert_from_pem(const char *pem, size_t len);
void mg_ffi_cert_free(void *x509);

/* ==== the testing kit's request (kit_request.c; not used by the gateway) ====
 * A kit config: what a kit request's r->g->cfg is. _load: the config the
 * gateway would run for FILE (as mg_config_load, with package.path
 * lua_path when not NULL: where the kit found the library); when FILE is refused, a
 * config whose _errors are the "file:line: reason" lines (else NULL). _new:
 * one without a file: the schema's default limits, no upstreams until
 * _upstream / _target add them (their index, or MG_FFI_ENOMEM). NULL when
 * out of memory. A config must outlive the requests made with it. */
typedef struct mg_kit_config_s mg_kit_config_t;
mg_kit_config_t *mg_ffi_kit_config_load(const char *file, const char *lua_path);
mg_kit_config_t *mg_ffi_kit_config_new(void);
const char *mg_ffi_kit_config_errors(const mg_kit_config_t *kc);
void mg_ffi_kit_config_free(mg_kit_config_t *kc);
int mg_ffi_kit_config_upstream(mg_kit_config_t *kc, const char *name, size_t len);
int mg_ffi_kit_config_target(mg_kit_config_t *kc, int upstream, const char *name, size_t len);
/* The name of upstream `upstream` (target -1) or of its target `target`
 * ("host:port"), NULL for none. */
const char *mg_ffi_kit_config_name(const mg_kit_config_t *kc, int upstream, int target);
/* The lower-case name of the header in the request's known[k] slot (MG_H_*,
 * request.h), NULL past the last. */
const char *mg_ffi_kit_known_header(int k);
/* A request made from the kit's model, on which the mg_ffi_req_* and
 * mg_ffi_res_* header, edit and method/path/query functions run as in the
 * gateway. buf holds the received head, line four numbers (method offset,
 * length, target offset, length into buf), spans four per header (name
 * offset, name length, value offset, value length); all are copied. NULL
 * when out of memory or kc has no config. */
mg_request_t *mg_ffi_kit_request_new(mg_kit_config_t *kc, const char *buf, size_t len,
                                     const uint32_t *line, const uint32_t *spans, size_t n);
void mg_ffi_kit_request_free(mg_request_t *r);
/* Where the kit's model is: the hook phase running (0 none), whether the
 * response head went to the client, its route's upstream index (-1 a
 * route without one, -2 no route) and the hooks' upstream and target
 * overrides (-1 none). */
void mg_ffi_kit_request_state(mg_request_t *r, int phase, int response_started,
                              int route_upstream, int upstream_override, int target_override);
/* The overrides mg_ffi_req_set_upstream / _set_target left on r; the
 * normalised path and the query ("?..." or "") the pipeline's checks left
 * (mg_ffi_kit_head_checks; valid until the next call on r). */
void mg_ffi_kit_request_overrides(const mg_request_t *r, int *upstream, int *target);
void mg_ffi_kit_request_target(const mg_request_t *r, const char **path, size_t *path_len,
                               const char **query, size_t *query_len);
/* The upstream's answer head (status, headers as for _new), or none when
 * status is 0. 0 or MG_FFI_ENOMEM. */
int mg_ffi_kit_request_upstream(mg_request_t *r, int status, const char *buf, size_t len,
                                const uint32_t *spans, size_t n);

/* What the kit's model holds of a request its heads are built from: the
 * fields of mg_request_t (and of its upstream and target) that proxy.c's
 * head builders read besides the C request's headers and edits. Strings
 * with a length need no NUL; client_ip, request_id and target are
 * NUL-terminated; all are read during the call only. known is
 * known[MG_H__COUNT] (request.h) into the request's headers; match a
 * mg_route_match_t (router.h), NULL when the request has no route. */
typedef struct mg_ffi_kit_head_s {
    const char *method, *new_method, *path, *query, *new_query;
    size_t method_len, new_method_len, path_len, query_len, new_query_len;
    const void *match;
    const uint16_t *known;
    const char *client_ip, *request_id, *target;
    const char *trace_id, *span_id, *trace_flags; /* NULL: not traced */
    size_t body_len;
    uint64_t content_length;
    int path_rewritten, tls, trace_continued, head_method, body_buffered, has_body, chunked;
    int forwarded, send_request_id, override_headers; /* the upstream's options */
    int local_port, listener; /* the listener it came on (index into the config's) */
    /* the router's answer (router.h MG_ROUTE_*) and the config route it
     * chose (its index, -1 none or not one of the config's) */
    int route_rc, route_index;
    int xff_trusted, xff_drop; /* mg_request_t's (client_addr.h) */
    /* for the client's head of a proxied answer: a hook's status (0 none)
     * and body, the client's HTTP/1.x */
    size_t res_body_len;
    int res_status, res_body_set, http_minor;
} mg_ffi_kit_head_t;
/* The head the upstream gets for r as the model m says it is, built by
 * proxy.c's own builders (mg_ffi_kit_upstream_head is in proxy.c): its
 * length and *out the bytes (owned by r, valid until the next call or
 * mg_ffi_kit_request_free), or -1 and *out why it is not sent (static). */
long mg_ffi_kit_upstream_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out);
/* The head the client gets from the upstream's answer (set with
 * mg_ffi_kit_request_upstream) and the hooks' changes, made as the gateway
 * makes it: proxy.c's response (status and fields, as emit_head hands it
 * to the protocol) written by the HTTP/1 writer the client connections use
 * (h1_writer.c): as mg_ffi_kit_upstream_head, and *body what follows it: 0
 * nothing, 1 the upstream's body, 2 the hook's (res_body), 3 and 4 the
 * same compressed (moongate.compression: mg_ffi_kit_compress_body). */
long mg_ffi_kit_response_head(mg_request_t *r, const mg_ffi_kit_head_t *m, const char **out,
                              int *body);
/* A kit answer's body as the compression the head chose makes it: its
 * length, the bytes at *out (r's arena, until r is freed), or -1. */
long mg_ffi_kit_compress_body(mg_request_t *r, const char *in, size_t len, const char **out);
/* The hash balancer's key of r as the model m says it is (balancer_key.c
 * mg_lb_key): `on` a key source ("header", "cookie", "query", "client",
 * "path", "lua"), name its header, cookie or argument name (or NULL).
 * 1 and *key, or 0 when r has no such key. */
int mg_ffi_kit_lb_key(mg_request_t *r, const mg_ffi_kit_head_t *m, const char *on,
                      const char *name, uint64_t *key);
/* The canary and split choice of route `route` (0-based, of r's kit
 * config) for r as the model m says it is (split.c mg_split_choose), with
 * `cw` the route's split current weights (the kit keeps one array per
 * route, of its split's length): the upstream index, kept as r's
 * (mg_request_upstream), and how (split.h MG_SPLIT_*) in *how; -1 when
 * the route has neither. */
int mg_ffi_kit_split(mg_request_t *r, const mg_ffi_kit_head_t *m, int route, int *cw, int *how);
/* For proxy.c only: runs fn on an upstream connection of r's (res: the
 * one holding the upstream's answer, else one to send on) set up as m
 * says (a worker scratch, pool, upstream, target, peer and protocol owned
 * by r), with r's fields set from m for the call and restored after.
 * Returns fn's result, *scratch the connection's worker scratch; -1 and
 * *scratch a reason when out of memory or (res) there is no answer. */
struct mg_upconn_s;
long mg_kit_request_run(mg_request_t *r, const mg_ffi_kit_head_t *m,
                        long (*fn)(struct mg_upconn_s *u), int res, const char **scratch);
/* For pipeline.c (mg_ffi_kit_step) only: runs step on r as m says it is,
 * with the kit's protocol taking any answer it makes: 0 when it went on
 * (mg_ffi_kit_request_target then says where to), else the answer's length
 * as for mg_ffi_kit_respond. */
long mg_kit_request_step(mg_request_t *r, const mg_ffi_kit_head_t *m,
                         int (*step)(mg_request_t *r), const char **out, size_t *head_len);
/* For the head checks (http_conn.c): the generation a kit config gives. */
struct mg_wgen_s;
struct mg_wgen_s *mg_kit_config_gen(mg_kit_config_t *kc);

/* The gateway's own answer to r as the model m says r is (a hook's, a
 * handler's or the gateway's), made by request.c's mg_request_respond
 * (ctype given) or, ctype NULL, its JSON error answer
 * mg_request_respond_error_with (body: the NUL-terminated message), with
 * the nfields extra fields fields[2i], fields[2i + 1] (name, value; their
 * lengths in lens), written as HTTP/1 writes it for a client (h1_writer.c):
 * its length and *out the bytes (owned by r, valid until the next call),
 * *head_len of them the head; -1 and *out why none was made. */
long mg_ffi_kit_respond(mg_request_t *r, const mg_ffi_kit_head_t *m, int status,
                        const char *ctype, const char *body, size_t body_len,
                        const char *const *fields, const size_t *lens, size_t nfields,
                        const char **out, size_t *head_len);
/* A step of the pipeline (pipeline.c) on r as m says r is: MG_FFI_KIT_CHECKS
 * the checks of its head before any hook (mg_pipeline_checks: Host, the
 * target, escaped slashes; then mg_ffi_kit_request_target says where it
 * goes), MG_FFI_KIT_ROUTED those once routed (mg_pipeline_routed: 404,
 * 405, 413). 0 when r goes on, else its answer framed as for
 * mg_ffi_kit_respond. */
enum { MG_FFI_KIT_CHECKS = 1, MG_FFI_KIT_ROUTED = 2 };
long mg_ffi_kit_step(mg_request_t *r, const mg_ffi_kit_head_t *m, int step, const char **out,
                     size_t *head_len);

/* The gateway's checks of a request head, run as on a client connection
 * (http_conn.c: llhttp in strict mode with the connection's own callbacks,
 * the limits of kc's config (414, 431), the HTTP/0.9, obs-fold and bare CR
 * checks, the header classification, the framing): head is the request
 * line, the header lines and the blank line. Returns 0 (accepted) or the
 * status it is refused with, *reason why (static). known[MG_H__COUNT]
 * (request.h) gets the index+1 among the header lines of each header the
 * core acts on, as classified up to a refusal; flags MG_FFI_HEAD_*;
 * content_length the Content-Length llhttp read (0 without); spans the
 * *nheaders headers read (at most max; four numbers each: name offset,
 * length, value offset, length into head; values without the blanks
 * around them). */
enum { MG_FFI_HEAD_CHUNKED = 1, MG_FFI_HEAD_TRACE_BAD = 2, MG_FFI_HEAD_HEAD = 4 };
int mg_ffi_head_check(mg_kit_config_t *kc, const char *head, size_t len, uint16_t *known,
                      int *flags, uint64_t *content_length, uint32_t *spans, uint32_t max,
                      uint32_t *nheaders, const char **reason);

/* ==== a real upstream's answer for the REPL (h1_response.c) ====
 * lua/moongate/repl.lua reads it from a socket: buf[0..len) holds what came
 * so far (eof: and the upstream closed). Parsed by the proxy's own parser,
 * interim 1xx answers skipped: returns MG_FFI_AGAIN while more must come,
 * -1 and *err (static) when refused, else the final head's offset in buf,
 * with its status, *nheaders header spans (four numbers per header: name
 * offset, length, value offset, length into buf; at most max) and the body
 * unframed in place at buf + *body_off, *body_len bytes. no_body: the
 * request was HEAD. buf is rewritten: parse a fresh copy each time. */
#define MG_FFI_AGAIN (-11)
long mg_ffi_h1_response(char *buf, size_t len, int eof, int no_body, int *status,
                        uint32_t *spans, uint32_t max, uint32_t *nheaders, size_t *body_off,
                        size_t *body_len, const char **err);

/* ==== hooks: waiting, logging (hooks.c) ==== */
int mg_ffi_worker_id(void);
/* Starts the wait of the running coroutine: Lua yields right after. */
int mg_ffi_sleep(double seconds);
void mg_ffi_log(int level, const char *msg, size_t len);
void mg_ffi_hook_error_count(void);
/* Hook metrics (metrics.h): the running coroutine's clock in nanoseconds
 * (monotonic, less the time it waited); a hook of hook id `hook_id` that
 * began at `since` returned (one call and its time, into this worker's
 * shard): returns the clock it read, the start of the next hook of a
 * chain; the hook id of (phase, policy), at init. */
double mg_ffi_hook_clock(void);
double mg_ffi_hook_spent(uint32_t hook_id, double since);
uint32_t mg_ffi_hook_metric_id(const char *phase, const char *policy);
/* 1 when the Lua running on this thread is a worker's hook or handler past
 * its time budget (moongate.budget's xpcall then skips the user's handler),
 * else 0. */
int mg_ffi_budget_over(void);
/* Runs timer `id` of moongate.runtime after `after` s, then every `every` s
 * (0: once). For the current worker; returns 0 or MG_FFI_EPHASE. */
int mg_ffi_timer_start(int id, double after, double every);

/* ==== gw.http (http_client.c) ==== */
int mg_ffi_http_request(const char *method, size_t mlen, const char *url, size_t ulen,
                        const char *headers, size_t hlen, const char *body, size_t blen,
                        double timeout, double max_body, const char *ca, int verify,
                        const char **err);

/* ==== shared dictionaries (shdict.c) ==== */
/* (section owned by shdict.c)
 *
 * D is a dictionary from mg_ffi_shdict_find(); it stays valid until the
 * process exits. Keys are 1-65535 bytes, any bytes. Value types are
 * MG_SHDICT_* of shdict.h: 0 nil, 1 boolean (as 0 or 1 in a double),
 * 3 number, 4 string. Times to live are milliseconds, 0 = forever. Failures
 * return a negative errno code and, where there is ERR, a static reason:
 * -EINVAL "empty key", "key too long", "bad value type", "not a number";
 * -ENOMEM "no memory" (the value is bigger than a stripe of the
 * dictionary); -EEXIST "exists"; -ENOENT "not found". Any thread may call
 * these at any time. */
typedef struct mg_shdict_s mg_shdict_t;

/* The dictionary called NAME, or NULL when none was declared. */
mg_shdict_t *mg_ffi_shdict_find(const char *name, size_t name_len);

/* Looks KEY up. Returns its type (0 when absent or expired); a number or
 * boolean goes to *NUM, a string is copied to BUF, whose size is *LEN on
 * entry, and its length is put in *LEN. When BUF is too small: returns
 * -ENOBUFS with the length needed in *LEN, and the caller retries. */
int mg_ffi_shdict_get(mg_shdict_t *d, const char *key, size_t key_len,
                      double *num, char *buf, size_t *len);

/* Stores a value of TYPE (NUM, or STR of STR_LEN bytes for a string) under
 * KEY for TTL_MS; type 0 deletes. MODE is 0 set, 1 add (-EEXIST when KEY
 * is live), 2 replace (-ENOENT when it is not). May evict least recently
 * used entries. Returns 0, or a negative code with *ERR set (the old value
 * is kept when the new one is refused). */
int mg_ffi_shdict_set(mg_shdict_t *d, const char *key, size_t key_len,
                      int type, double num, const char *str, size_t str_len,
                      uint64_t ttl_ms, int mode, const char **err);

/* Atomically adds BY to the number under KEY and puts the sum in *OUT;
 * the time to live is kept. When KEY is absent or expired: with HAS_INIT
 * stores INIT + BY for INIT_TTL_MS, else -ENOENT. -EINVAL "not a number"
 * when the value is not a number. Returns 0 or a negative code. */
int mg_ffi_shdict_incr(mg_shdict_t *d, const char *key, size_t key_len,
                       double by, int has_init, double init,
                       uint64_t init_ttl_ms, double *out, const char **err);

/* Removes KEY if present. Returns 0. */
int mg_ffi_shdict_delete(mg_shdict_t *d, const char *key, size_t key_len);

/* Lists up to MAX live keys (0 = all) into BUF (*LEN bytes on entry), each
 * as a 2-byte big-endian length and the key's bytes; not a snapshot (the
 * stripes are visited in turn). Returns the number of keys with the bytes
 * used in *LEN, or -ENOBUFS with the bytes needed in *LEN. */
int mg_ffi_shdict_keys(mg_shdict_t *d, int max, char *buf, size_t *len);

/* Removes every entry. */
void mg_ffi_shdict_flush_all(mg_shdict_t *d);

/* The cap the dictionary was created with, in bytes. */
size_t mg_ffi_shdict_capacity(mg_shdict_t *d);

/* Bytes not used by entries (expired ones not yet reclaimed count as used). */
size_t mg_ffi_shdict_free_space(mg_shdict_t *d);

/* ==== crypto (crypto.c) ==== */
/* (section owned by crypto.c; lua/moongate/jwk.lua declares the same)
 *
 * Keys that verify JWS signatures (RFC 7515, 7518, 8037) for
 * lua/moongate/jwt.lua. A key is made once, while a config loads, from an
 * HMAC secret, a PEM public key or certificate, or the members of a JWK,
 * and does not change once it is handed to verification, so any thread may
 * verify with it at any time. The caller owns it and frees it with
 * mg_ffi_crypto_key_free() (Lua: ffi.gc). Constructors return NULL and a
 * static reason in *ERR: short secrets (< 32 bytes), RSA keys under 2048
 * bits, private keys, unknown curves and malformed keys are refused.
 *
 * Each key pins the algorithms it may verify, as bits (1 << MG_JWS_*):
 * a secret HS256 (HS384 from 48 bytes, HS512 from 64: RFC 7518 §3.2); an
 * RSA key RS* and PS* (an RSA-PSS key PS* only); an EC key the one ES* of
 * its curve; an Ed25519/Ed448 key EdDSA and its own fully specified name.
 * Verification refuses any other algorithm (MG_JWS_EALG): a token cannot
 * turn an RSA public key into an HMAC secret. */
typedef struct mg_crypto_key_s mg_crypto_key_t;

/* JWS algorithms ("alg"). */
enum {
    MG_JWS_HS256 = 1, MG_JWS_HS384 = 2, MG_JWS_HS512 = 3,
    MG_JWS_RS256 = 4, MG_JWS_RS384 = 5, MG_JWS_RS512 = 6,
    MG_JWS_PS256 = 7, MG_JWS_PS384 = 8, MG_JWS_PS512 = 9,
    MG_JWS_ES256 = 10, MG_JWS_ES384 = 11, MG_JWS_ES512 = 12,
    MG_JWS_EDDSA = 13, MG_JWS_ED25519 = 14, MG_JWS_ED448 = 15,
};

/* Failures of the verify and base64url functions (besides MG_FFI_EINVAL). */
enum {
    MG_JWS_EALG = -20,      /* the key may not verify this algorithm */
    MG_JWS_ESIG64 = -21,    /* the signature is not canonical base64url */
    MG_JWS_EPAYLOAD64 = -22, /* the payload is not canonical base64url */
    MG_JWS_ESPACE = -23,    /* the output does not fit the buffer */
    MG_JWS_ESHAPE = -24,    /* the dot offsets do not fit the token */
    MG_JWS_EINTERNAL = -25, /* OpenSSL failed (out of memory) */
};

/* The secret's bytes (any bytes). */
mg_crypto_key_t *mg_ffi_crypto_key_secret(const unsigned char *secret, size_t len,
                                          const char **err);
/* A PEM "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE" (its public key;
 * the first certificate of a chain). */
mg_crypto_key_t *mg_ffi_crypto_key_pem(const char *pem, size_t len, const char **err);
/* JWK members, base64url-decoded: RSA n and e; EC crv ("P-256", "P-384",
 * "P-521"), x and y; OKP crv ("Ed25519", "Ed448") and x. */
mg_crypto_key_t *mg_ffi_crypto_key_rsa(const unsigned char *n, size_t nlen,
                                       const unsigned char *e, size_t elen,
                                       const char **err);
mg_crypto_key_t *mg_ffi_crypto_key_ec(const char *crv, const unsigned char *x, size_t xlen,
                                      const unsigned char *y, size_t ylen, const char **err);
mg_crypto_key_t *mg_ffi_crypto_key_okp(const char *crv, const unsigned char *x, size_t xlen,
                                       const char **err);
void mg_ffi_crypto_key_free(mg_crypto_key_t *k);
/* The algorithm bits the key may verify. */
unsigned mg_ffi_crypto_key_algs(const mg_crypto_key_t *k);
/* Narrows them to ALGS (a JWK's "alg", a config's list) before first use;
 * returns what is left. */
unsigned mg_ffi_crypto_key_restrict(mg_crypto_key_t *k, unsigned algs);
/* "oct", "RSA", "RSA-PSS", "EC" or "OKP" (static); the size in *BITS. */
const char *mg_ffi_crypto_key_type(const mg_crypto_key_t *k, int *bits);

/* Checks signature SIG (raw bytes; ECDSA as r || s) of IN under ALG.
 * Returns 1 valid, 0 not valid, MG_JWS_EALG, MG_JWS_EINTERNAL. HMAC is
 * compared in constant time and allocates nothing. */
int mg_ffi_crypto_verify(const mg_crypto_key_t *k, int alg, const unsigned char *in,
                         size_t len, const unsigned char *sig, size_t slen);
/* The same for a compact JWS: TOKEN (LEN bytes) has its two dots at the
 * 0-based offsets DOT1 < DOT2; the signature after DOT2 is decoded here.
 * When valid and PAYLOAD is not NULL, the payload segment is decoded into
 * PAYLOAD (room for *PLEN bytes on entry, the length on return). Returns 1
 * valid, 0 not valid (also a signature of the wrong size), or MG_JWS_E*. */
int mg_ffi_jws_verify(const mg_crypto_key_t *k, int alg, const char *token, size_t len,
                      size_t dot1, size_t dot2, unsigned char *payload, size_t *plen);
/* HMAC of IN with a secret key (signing HS* tokens): MAC needs room for
 * 64 bytes, *MACLEN gets the length. Returns 0 or MG_JWS_EALG/ESPACE. */
int mg_ffi_crypto_hmac(const mg_crypto_key_t *k, int alg, const unsigned char *in, size_t len,
                       unsigned char *mac, size_t *maclen);
/* Strict base64url (no padding, no other characters, canonical last
 * character) into OUT (room for *OUTLEN bytes, the length on return).
 * Returns 0, MG_FFI_EINVAL or MG_JWS_ESPACE. */
int mg_ffi_b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen);
/* Unpadded base64url of IN into OUT (room for (LEN + 2) / 3 * 4); returns
 * the characters written. */
size_t mg_ffi_b64url_encode(const unsigned char *in, size_t len, char *out);

/* JWT claims: a flat JSON object (RFC 8259, strictly) as tokens, one per
 * member, in order; an array value (of scalars only) is followed by one
 * token per element and has their count in val_len. Keys and string
 * values are (off, len) into TEXT, or into SBUF when ESC is set (they had
 * escapes); a number of up to 15 integer digits is in NUM, any other is
 * left as text (MG_JSON_NUMTEXT: val_off, val_len into TEXT). */
enum {
    MG_JSON_STRING = 1, MG_JSON_NUMBER = 2, MG_JSON_TRUE = 3, MG_JSON_FALSE = 4,
    MG_JSON_NULL = 5, MG_JSON_ARRAY = 6, MG_JSON_NUMTEXT = 7,
};
enum {
    MG_JSON_EINVALID = -30, /* not one JSON object */
    MG_JSON_ENOTFLAT = -31, /* nested, or over MAX tokens: use a full decoder */
};
typedef struct mg_json_tok_s {
    double num;
    uint32_t key_off, key_len, val_off, val_len;
    uint8_t type, key_esc, val_esc, pad;
} mg_json_tok_t;
/* Tokenises TEXT (LEN bytes) into TOKS (room for MAX); SBUF (SCAP bytes,
 * LEN is always enough) receives unescaped strings. Returns the number of
 * tokens or MG_JSON_E*. */
int mg_ffi_json_flat_object(const char *text, size_t len, mg_json_tok_t *toks, int max,
                            char *sbuf, size_t scap);

/* ==== rate limiting (shdict.c) ==== */
/* (section owned by shdict.c; lua/moongate/ratelimit.lua declares the same)
 *
 * Rate-limit decisions made inside a shared dictionary, each in one step
 * under the key's stripe lock, so that a limit is exact across every
 * worker of the process. The state lives under the key NS followed by KEY
 * (1-65535 bytes together). Times are milliseconds: NOW is the caller's
 * clock (tests), or a negative number for CLOCK_MONOTONIC read under the
 * lock. COST is what the request counts for (usually 1; 0 only looks).
 * Both return 1 when the request is admitted (and counted), 0 when it is
 * refused (and not counted), or -EINVAL (bad parameters, empty or too long
 * key) / -ENOMEM; OUT is filled for 1 and 0. Any thread, any time. */
typedef struct mg_rl_result_s {
    double remaining;   /* requests of cost 1 that would still pass now */
    double reset;       /* ms until the limit is whole again (GCRA), or
                         * until the current window ends (sliding) */
    double retry_after; /* ms until this request would pass; 0 if admitted */
} mg_rl_result_t;

/* GCRA (a token bucket of BURST tokens, one token every INTERVAL ms):
 * admitted when the theoretical arrival time, moved by INTERVAL * COST,
 * stays within INTERVAL * BURST of NOW. 0 <= COST <= BURST. */
int mg_ffi_shdict_gcra(mg_shdict_t *d, const char *ns, size_t ns_len, const char *key,
                       size_t key_len, double interval, double burst, double cost, double now,
                       mg_rl_result_t *out);

/* Sliding window of WINDOW ms admitting LIMIT per window: the count of the
 * previous window, weighted by the share of it still inside the sliding
 * window, plus the count of the current one (admitted requests only). A
 * key's windows start at its first request. 0 <= COST <= LIMIT. */
int mg_ffi_shdict_sliding(mg_shdict_t *d, const char *ns, size_t ns_len, const char *key,
                          size_t key_len, double limit, double window, double cost, double now,
                          mg_rl_result_t *out);

/* The dictionary called NAME (1-64 bytes), created with CAP bytes when the
 * config declared none (it then lives until exit like the others); NULL
 * when out of memory. */
mg_shdict_t *mg_ffi_shdict_open(const char *name, size_t name_len, size_t cap);

/* ==== redis (redis.c) ==== */
/* (section owned by redis.c; lua/moongate/redis.lua declares the same)
 *
 * Asynchronous Redis commands for hooks (see redis.h). A client belongs to
 * the worker that made it and is valid until that worker exits; use it only
 * from that worker's hooks. A command function returns 0 when the command
 * is on its way: the hook must then yield (WAIT) at once, and the yield
 * returns true and the reply (an array reply as one value per element,
 * integers as numbers, nil for a nil reply), or nil and a reason (an error
 * reply's text, "timeout", "connect timeout", a connection error,
 * "shutting down"). Otherwise it returns a negative code with a static
 * reason in *ERR (valid until the next call) and nothing was sent:
 * MG_FFI_EPHASE outside a hook, MG_FFI_EINVAL, MG_FFI_ENOMEM, and: */
enum {
    MG_REDIS_EDOWN = -40,   /* no usable connection now: the server failed
                             * and has not answered again yet */
    MG_REDIS_ECLOSED = -41, /* the worker is shutting down */
};
typedef struct mg_redis_s mg_redis_t;

typedef struct mg_tls_client_s mg_tls_client_t;

/* The calling worker's client for HOST:PORT with these settings (the same
 * settings give the same client): AUTH [USERNAME] PASSWORD when PASSWORD is
 * not NULL (USERNAME, a Redis 6 ACL user, needs a password), SELECT
 * DB when not 0, POOL connections (1-64), timeouts in seconds, TLS with
 * configuration TLS when not NULL (mg_ffi_tls_client_new; the client takes
 * a reference of its own; a later call with the same settings but another
 * TLS object hands it over: new connections use the newer one). Connects
 * on first use. NULL with *ERR outside a worker, on bad settings, or out of
 * memory. HOST is resolved (off the worker's thread) each time a
 * connection is made. */
mg_redis_t *mg_ffi_redis_client(const char *host, size_t host_len, int port, const char *username,
                                size_t username_len, const char *password, size_t password_len,
                                int db, int pool, double connect_timeout, double timeout,
                                mg_tls_client_t *tls, const char **err);

/* Registers a Lua script (its source, copied) with the worker of RS;
 * returns its number (the same source gives the same number), or
 * MG_FFI_EINVAL / MG_FFI_ENOMEM. */
int mg_ffi_redis_script(mg_redis_t *rs, const char *src, size_t len);

/* Sends the command ARGV[0..ARGC-1] (1-32 arguments, copied). */
int mg_ffi_redis_command(mg_redis_t *rs, int argc, const char **argv, const size_t *argvlen,
                         const char **err);

/* Runs script SCRIPT with the NKEYS first of ARGV as KEYS and the others as
 * ARGV (0-32 in all, copied): EVALSHA, and EVAL once on NOSCRIPT. */
int mg_ffi_redis_eval(mg_redis_t *rs, int script, int nkeys, int argc, const char **argv,
                      const size_t *argvlen, const char **err);

/* 1 while a connection is ready or the client has not failed since it last
 * worked, 0 while it is down (commands fail at once with MG_REDIS_EDOWN). */
int mg_ffi_redis_up(mg_redis_t *rs);

/* ==== TLS client configurations (tls_client.c) ==== */
/* (lua/moongate/redis.lua declares the same)
 *
 * A TLS client configuration (tls_client.h) made from Lua: moongate.redis's
 * `tls`. VERIFY the chain against CA (NULL: the system bundle) and the name
 * (SNI, NULL: each server's host); CERT and KEY a client certificate (NULL:
 * none); MIN_VERSION "TLSv1.2" / "TLSv1.3" (NULL: 1.2); CIPHERS (NULL:
 * OpenSSL's); SESSION_REUSE 0: every connection does a full handshake;
 * LABEL: its handshakes' metrics label. Reads the files now. Returns one
 * reference (mg_ffi_tls_client_release), or NULL with the reason and its
 * fix in ERR (ERRLEN bytes). Any thread. */
mg_tls_client_t *mg_ffi_tls_client_new(int verify, const char *ca, const char *sni,
                                       const char *cert, const char *key,
                                       const char *min_version, const char *ciphers,
                                       int session_reuse, const char *label, char *err,
                                       size_t errlen);
void mg_ffi_tls_client_release(mg_tls_client_t *c);

/* ==== the real client address (client_addr.c) ==== */

typedef struct mg_cidr_set_s mg_cidr_set_t;

/* The PROXY v2 TLV of that type (proxy_protocol.h MG_PP2_TYPE_*; an SSL
 * sub-type 0x21-0x25 is looked up inside the SSL TLV) the request's
 * connection began with: 0 with its value in p/len (valid while the
 * connection is), -1 when there is none. */
int mg_ffi_req_proxy_tlv(mg_request_t *r, int type, const char **p, size_t *len);

/* Checks one settings.trusted_proxies entry with cidr.c's parser: 0, or -1
 * with the reason written to err (NUL-terminated, cut to errcap). */
int mg_ffi_cidr_check(const char *text, size_t n, char *err, size_t errcap);

/* For the testing kit: the set of n checked entries (NULL when one is bad
 * or out of memory; the caller frees it with mg_ffi_trusted_free), and the
 * client of kit request r whose connection's client is `peer`, resolved
 * as the gateway does (header: settings.real_ip_header's name). Writes the
 * client's text to out (cap >= 48); returns 1 when peer is trusted, 0 when
 * not (out is the peer then), -1 when peer is not an address. */
mg_cidr_set_t *mg_ffi_trusted_new(const char *const *cidrs, const size_t *lens, size_t n);
void mg_ffi_trusted_free(mg_cidr_set_t *s);
int mg_ffi_real_client(mg_request_t *r, const mg_cidr_set_t *trusted, const char *header,
                       const char *peer, size_t peer_len, char *out, size_t cap);

/* ==== route patterns (router.c) ==== */
/* (lua/moongate/cdefs.lua declares the same; moongate.config and
 * moongate.testing.router check every pattern with it)
 *
 * What a valid pattern holds. Param names are pattern[off, off + len). */
typedef struct mg_ffi_pattern_s {
    int nparams;
    int star;           /* ends in a "**" segment */
    int prefix;         /* ends in '/' ("/" itself included) */
    size_t literal_len; /* the literal part before any ":param" or "**" */
    size_t param_off[8]; /* MG_ROUTER_MAX_PARAMS (router.h) */
    size_t param_len[8];
} mg_ffi_pattern_t;

/* Checks path pattern (or rewrite template) PATTERN[0..LEN) as
 * mg_router_build() parses it. Returns 0 and fills INFO (when not NULL),
 * or -1 and writes the reason, NUL-terminated and cut to CAP, to WHY (when
 * not NULL), as config errors show it ("empty segment ('//')"). Any
 * thread, any time. */
int mg_ffi_route_pattern(const char *pattern, size_t len, mg_ffi_pattern_t *info, char *why,
                         size_t cap);

/* ==== config host syntax (uri.c) ==== */

/* What s[0..len) is as a host of the config (listen, upstream target,
 * route): an IPv4 or IPv6 address as inet_pton reads them (no brackets), an
 * RFC 1123 host name (letters, digits, '-' and '_' in labels of 1-63 bytes,
 * 253 bytes at most, a trailing '.' allowed, not digits and dots alone), or
 * none of these. Any thread. */
enum { MG_HOST_BAD = 0, MG_HOST_IPV4 = 1, MG_HOST_IPV6 = 2, MG_HOST_NAME = 3 };
int mg_ffi_host_kind(const char *s, size_t len);

/* An upstream target as the config and the admin API write it (one
 * grammar for both): "host:port", "[ipv6]:port", "http://host[:port]",
 * "https://host[:port]" (ports 80 and 443 by default), or
 * "srv://_service._proto.name" (DNS SRV: the records give ports and
 * weights). Fills *out (host without brackets, NUL-ended) and returns 0,
 * or -1 with *why (static: what is wrong, after the words
 * MG_TARGET_EXPECTED). */
enum { MG_TARGET_PLAIN = 0, MG_TARGET_HTTP = 1, MG_TARGET_HTTPS = 2, MG_TARGET_SRV = 3 };
#define MG_TARGET_EXPECTED "must be \"host:port\", \"[ipv6]:port\" or \"srv://_service._proto.name\""
typedef struct mg_ffi_target_s {
    char host[256];
    uint16_t port;          /* 0 for srv */
    uint8_t scheme;         /* MG_TARGET_* */
} mg_ffi_target_t;
int mg_ffi_target_parse(const char *s, size_t len, mg_ffi_target_t *out, const char **why);

/* ==== config schema (config.c) ==== */
/* (lua/moongate/cdefs.lua declares the same)
 *
 * The fields of a config object (scalars, strings, nested tables, lists),
 * declared once: config.lua takes each object's key list, defaults and
 * checks from here, and mg_config_convert() copies the fields with the
 * same table (how to add one: docs/config-dsl.md). */
enum {
    MG_FIELD_SIZE = 1,  /* bytes: an integer or "32k", "10m", "1g"; >= min */
    MG_FIELD_TIME = 2,  /* seconds (fractions allowed), kept as ms in [min, max];
                         * min 0 admits 0 itself */
    MG_FIELD_INT = 3,   /* an integer in [min, max] */
    MG_FIELD_BOOL = 4,  /* true or false */
    MG_FIELD_OTHER = 5, /* a key of the object checked and copied by hand */
    MG_FIELD_SECONDS = 6, /* a number of seconds > 0, kept as a double */
    MG_FIELD_ENUM = 7,    /* a name its module's parse() knows, kept as its value */
    MG_FIELD_STRING = 8,  /* a string of at least min bytes, copied; with a check,
                           * one its module's check accepts, kept normalised */
    MG_FIELD_OBJECT = 9,  /* a nested table read by the schema `object` names;
                           * its fields are stored from offset on (0: in the
                           * same struct as the parent's) */
    MG_FIELD_LIST = 10,   /* a list of min..max items, each read as field
                           * `item`, stored in an array at offset (count at
                           * count_offset) */
    MG_FIELD_NUMBER = 11, /* a number in [min, max], kept as a double */
};

/* Field flags. */
enum {
    MG_FIELD_REQUIRED = 1, /* absent is a mistake ("<key> must be ..., got nil") */
    MG_FIELD_UNIQUE = 2,   /* LIST: a repeated item (once normalised) is dropped;
                            * max then counts the distinct ones */
    MG_FIELD_ALLOC = 4,    /* LIST: the array is malloc'd (a pointer at offset),
                            * not a fixed one in the struct; OBJECT: so is its
                            * struct (item_size bytes), absent: NULL */
    MG_FIELD_INTERNAL = 8, /* in the normalised table but not a key the user
                            * writes (a positional argument, a value config.lua
                            * makes): left out of the key list */
};

/* What a STRING field's check says about a value. */
enum {
    MG_STR_BAD = -1,
    MG_STR_VALUE = 0, /* valid; kept as normalised */
    MG_STR_FILE = 1,  /* valid, and a file path: a relative one is taken from
                       * the config file's directory */
};

/* An ENUM field's parser and namer, its module's own (errlog.c, uri.c). */
typedef int (*mg_ffi_enum_parse_fn)(const char *name);
typedef const char *(*mg_ffi_enum_name_fn)(int value);
/* A STRING field's check, its module's own (uri.c, router.c, tls.c, ...):
 * MG_STR_BAD, or MG_STR_VALUE / MG_STR_FILE with the normalised value (at
 * most len + 2 bytes: a route's IPv6 host gains its brackets) written
 * NUL-terminated to out (cap >= len + 3). Any thread. */
typedef int (*mg_ffi_str_check_fn)(const char *s, size_t len, char *out, size_t cap);

typedef struct mg_ffi_config_field_s {
    const char *name;     /* the key, as the config writes it */
    int kind;             /* MG_FIELD_* */
    double min, max;      /* SIZE/INT: the value's; TIME: in ms; STRING: min is
                           * the least length; LIST: the item count's */
    double def;           /* default (BOOL: 0 or 1); NaN: none */
    const char *expected; /* what an error says it must be ("must be ...");
                           * NULL: the kind's own words */
    size_t offset;        /* where mg_config_convert() stores it in the C struct */
    int ctype;            /* how (config.c); 0: not copied (Lua only, or by hand) */
    mg_ffi_enum_parse_fn parse;  /* ENUM: the value of a name, or -1 */
    mg_ffi_enum_name_fn name_of; /* ENUM: the name a value is written as */
    const char *def_str;         /* STRING: the default; NULL: none (may be absent) */
    mg_ffi_str_check_fn check;   /* STRING: its module's check; NULL: any string */
    const char *object;          /* OBJECT: the nested table's schema */
    const struct mg_ffi_config_field_s *item; /* LIST: how each item is read */
    size_t count_offset;         /* LIST: where the item count (size_t) is stored */
    size_t item_size;            /* LIST: bytes per stored item; OBJECT with
                                  * MG_FIELD_ALLOC: of its struct */
    const char *too_many;        /* LIST: the words for more than max items, a
                                  * format taking the count and max ("lists %d
                                  * statuses (at most %d)") */
    int flags;                   /* MG_FIELD_REQUIRED | ... */
} mg_ffi_config_field_t;

/* The fields of config object OBJECT ("settings", "access_log", "limits", "timeouts",
 * "admin", "listen", "tls", "tls_cert", "upstream", "target", "health",
 * "shared_dict", "cache", "redis", "route", "route_header", "retries", "backoff", "outlier",
 * "route_timeouts"), in the order
 * of its key list, their number in *N; NULL for an unknown object. Static. */
const mg_ffi_config_field_t *mg_ffi_config_fields(const char *object, size_t *n);
/* A retries.on name ("connect", "reset", "timeout", "502", "503", "504"):
 * its MG_RETRY_ON_* bit (config.h), or -1. */
int mg_ffi_retry_on_parse(const char *name);

/* ==== CIDR sets (cidr.c) ==== */
/* (section owned by cidr.c; lua/moongate/ip.lua declares the same)
 *
 * The `ip` policy's allow and deny lists: a set is made and filled while a
 * config loads (add: "ADDR" or "ADDR/LEN", IPv4 or IPv6; 0, or -1 with the
 * reason in ERR, NUL-terminated; -2 out of memory), built once (0, or -2),
 * then only read: contains takes an address as text (the client address
 * the request API gives) and returns 1, 0, or -1 when it is not an address,
 * in O(log n) of the merged ranges, without allocating. The caller owns the
 * set and frees it with mg_ffi_cidr_set_free (Lua: ffi.gc). */
typedef struct mg_cidr_set_s mg_cidr_set_t;
mg_cidr_set_t *mg_ffi_cidr_set_new(void);
int mg_ffi_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap);
int mg_ffi_cidr_set_build(mg_cidr_set_t *s);
int mg_ffi_cidr_set_contains(const mg_cidr_set_t *s, const char *text, size_t n);
size_t mg_ffi_cidr_set_count(const mg_cidr_set_t *s);
void mg_ffi_cidr_set_free(mg_cidr_set_t *s);

/* ==== API keys and passwords (crypto.c) ==== */
/* (section owned by crypto.c; lua/moongate/key_auth.lua and
 * lua/moongate/basic_auth.lua declare the same)
 *
 * sha256: the SHA-256 digest of IN (LEN bytes) into OUT (32 bytes); the
 * key_auth policy stores only digests of API keys. equal: 1 when the N
 * bytes at A and B are the same, compared in constant time (CRYPTO_memcmp),
 * else 0. crypt_verify: checks PASSWORD against an htpasswd-style HASH
 * (NUL-terminated, "$2y$", "$2b$", "$5$" or "$6$" from libxcrypt's crypt_rn)
 * and returns 1 (match, compared in constant time), 0 (no match), or -1
 * (a hash crypt cannot read: an unknown method or a malformed hash). The
 * work area of crypt_rn is on the stack: nothing is allocated or kept. */
void mg_ffi_sha256(const char *in, size_t len, unsigned char *out);
int mg_ffi_equal(const unsigned char *a, const unsigned char *b, size_t n);
int mg_ffi_crypt_verify(const char *password, size_t plen, const char *hash);

/* ==== user metrics (metrics_user.c) ==== */
/* (section owned by metrics_user.c; lua/moongate/metrics.lua declares the same)
 *
 * gw.metrics.counter / gauge / histogram (docs/metrics.md). check: the
 * rules of a declaration of KIND ("counter", "gauge", "histogram"): its name
 * (lower-case snake_case, not moongate_*, a counter's ending in _total,
 * none of the words promtool refuses), its label names, a histogram's
 * buckets (1-64 increasing finite bounds) and max_series (1-100000); 0, or
 * -1 with the reason in WHY (NUL-terminated, when cap > 0). Two metrics
 * of other names never write series lines of one name (the rules see to
 * it: metrics_user.c).
 *
 * update: op ADD (a counter's inc, a gauge's inc and dec), SET (a gauge),
 * OBSERVE (a histogram), with as many label values as the metric has
 * labels: a..d for up to four, updatev the arrays (NULL: ""). Never fails
 * and allocates nothing but a series' key the first time it is seen: past
 * max_series label sets, the update counts in the overflow series. read:
 * a series' value summed over the shards (out[0]: the value, a
 * histogram's count; out[1]: a histogram's sum); 0, or -1 when the series
 * has none yet. private: a metric of its own, not shared with any
 * generation (the testing kit's, the REPL's), freed by private_free; NULL
 * when the declaration is refused or out of memory. */
typedef struct mg_umetric_handle_s mg_umetric_handle_t;
enum { MG_FFI_UMETRIC_ADD = 1, MG_FFI_UMETRIC_SET = 2, MG_FFI_UMETRIC_OBSERVE = 3 };
int mg_ffi_umetric_check(const char *kind, const char *name, const char *const *labels,
                         size_t nlabels, const double *buckets, size_t nbuckets,
                         double max_series, char *why, size_t cap);
void mg_ffi_umetric_update(mg_umetric_handle_t *h, int op, double v, const char *a, size_t al,
                           const char *b, size_t bl, const char *c, size_t cl, const char *d,
                           size_t dl);
void mg_ffi_umetric_updatev(mg_umetric_handle_t *h, int op, double v, const char *const *vals,
                            const size_t *lens);
int mg_ffi_umetric_read(mg_umetric_handle_t *h, const char *const *vals, const size_t *lens,
                        double *out);
mg_umetric_handle_t *mg_ffi_umetric_private(const char *kind, const char *name,
                                            const char *help, const char *const *labels,
                                            size_t nlabels, const double *buckets,
                                            size_t nbuckets, uint32_t max_series);
void mg_ffi_umetric_private_free(mg_umetric_handle_t *h);

/* ==== end ==== */

#endif
