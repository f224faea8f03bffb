/* tracing.h: spans recorded on the request path (settings.tracing,
 * docs/tracing.md), for src/otlp.c to export.
 *
 * A sampled request makes a server span (the request), a client span per
 * upstream attempt (retries give several) and, with policy_spans, an
 * internal span per policy hook. Each is one fixed-size record written
 * into its worker's queue: a ring of settings.tracing.queue records, one
 * writer (the worker) and one reader (the exporter thread), no lock, no
 * allocation and no syscall per span. A full ring drops the span and
 * counts it. Times are uv_hrtime() (monotonic); the exporter turns them
 * into Unix times.
 *
 * Sampling: a request whose client sent a valid traceparent follows its
 * sampled flag (parent_based, the default); any other is kept when its
 * trace id falls under settings.tracing.sample (trace.h's ratio rule, the
 * same in every gateway). The traceparent sent upstream says the decision
 * and, for a sampled request, names the attempt's client span as parent.
 */
#ifndef MG_TRACING_H
#define MG_TRACING_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_request_s mg_request_t;
struct mg_config_s;

/* OTLP's SpanKind numbers. */
enum { MG_SPAN_INTERNAL = 1, MG_SPAN_SERVER = 2, MG_SPAN_CLIENT = 3 };

/* One span as the exporter reads it. Strings are NUL-terminated copies,
 * cut to their field's size; "" is absent. */
typedef struct mg_span_rec_s {
    uint64_t start_ns, end_ns;     /* uv_hrtime() */
    uint64_t event_ns;             /* has_event: when the policy answered */
    char trace_id[32], span_id[16], parent_id[16]; /* hex */
    uint8_t kind;                  /* MG_SPAN_* */
    uint8_t has_parent;            /* parent_id is set (a server span may have none) */
    uint8_t has_event;             /* a policy answered the request (server span) */
    uint8_t error;                 /* span status ERROR */
    uint8_t http_minor;            /* server: network.protocol.version 1.x */
    uint8_t https;                 /* url.scheme (server), url.full's (client) */
    uint16_t status;               /* http.response.status_code; 0: none */
    uint16_t port;                 /* server.port (the Host's, or the target's) */
    uint16_t resend;               /* client: http.resend_count */
    uint16_t event_status;         /* the status the policy answered with */
    uint32_t hook_id;              /* internal: the policy hook (metrics.h hook id);
                                      server with has_event: the one that answered */
    char method[16];               /* http.request.method */
    char error_type[48];           /* error.type */
    char route[64];                /* server: http.route (the route's pattern) */
    char route_name[48];           /* server: moongate.route */
    char host[96];                 /* server.address */
    char client[46];               /* server: client.address */
    char upstream[48];             /* client: moongate.upstream */
    char request_id[64];           /* server: moongate.request_id */
    char path[192];                /* server: url.path; client: the path sent
                                      upstream (url.full), both without query */
    char user_agent[128];          /* server: user_agent.original */
    char event_reason[64];         /* the answer's "error" (or "message") */
} mg_span_rec_t;

/* A sampled request's tracing state (in mg_request_t, set by
 * mg_tracing_sample; only read while r->trace_sampled). */
typedef struct mg_trace_req_s {
    char parent_id[16];            /* the client's traceparent's parent id */
    char client_id[16];            /* the open attempt's span id */
    uint8_t attempt_open;
    uint8_t has_event;
    uint16_t attempts;             /* attempts started */
    int attempt_ui, attempt_ti;    /* its upstream and target (slot, targets.h) */
    uint64_t attempt_start_ns;
    uint64_t event_ns;
    uint32_t event_hook;
    uint16_t event_status;
    char event_reason[64];
} mg_trace_req_t;

/* The process's queues, one per worker (none allocated yet): once, before
 * the workers start. */
int mg_tracing_init(int nworkers);
void mg_tracing_free(void);
/* Before any worker runs cfg (control thread): gives every worker its
 * queue of cfg's size the first time a config has tracing. 0, or -1 with
 * *err (static) when the queues exist with another size (a restart
 * changes it) or memory is short. */
int mg_tracing_prepare(const struct mg_config_s *cfg, const char **err);

/* From assign_trace, for a config with tracing: decides whether r is
 * sampled, says so in r->trace_flags and starts its state. */
void mg_tracing_sample(mg_request_t *r);
/* An attempt on target ti of upstream ui begins: a client span opens
 * (its id goes upstream in traceparent). */
void mg_tracing_attempt_start(mg_request_t *r, int ui, int ti);
/* The open attempt ended with the target's answer `status`, or with none
 * (status 0, `why` a static reason: error.type). */
void mg_tracing_attempt_end(mg_request_t *r, int status, const char *why);
/* A policy hook (hook id) answered the request with status and body: the
 * server span's event. */
void mg_tracing_answered(mg_request_t *r, uint32_t hook_id, int status, const char *body,
                         size_t blen);
/* A policy hook ran from start_ns to end_ns (uv_hrtime): an internal span. */
void mg_tracing_policy(mg_request_t *r, uint32_t hook_id, uint64_t start_ns, uint64_t end_ns);
/* The request is logged: an attempt still open ends, the server span is
 * recorded. */
void mg_tracing_request_end(mg_request_t *r);

/* For the exporter thread (the only reader): calls each(rec, arg) for up
 * to max queued spans, oldest first per worker, the workers in turn, then
 * gives their slots back. Returns how many. */
size_t mg_tracing_drain(void (*each)(const mg_span_rec_t *rec, void *arg), void *arg, size_t max);
/* Spans queued now (all workers). */
uint64_t mg_tracing_queued(void);
/* Spans dropped so far because a queue was full. */
uint64_t mg_tracing_dropped(void);

#endif
