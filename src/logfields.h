/* logfields.h: which fields an access-log line has (settings.access_log =
 * { path = ..., fields = { ... } }, docs/logging.md).
 *
 * A field is named by a string, checked when the config loads
 * (mg_logfield_check) and compiled once per config into an
 * mg_logformat_t (mg_logformat_new, owned by the config); accesslog.c
 * writes each request's line by walking it. A name is one of the built-in
 * fields (today's line: time, request_id, ..., total_time, and the
 * upstream phases), "req.header.NAME", "res.header.NAME" or "req.ctx.KEY",
 * optionally preceded by "KEY=" to choose the JSON key it is written
 * under (by default, the name itself).
 */
#ifndef MG_LOGFIELDS_H
#define MG_LOGFIELDS_H

#include <stddef.h>
#include <stdint.h>

/* What a field writes. */
typedef enum {
    MG_LF_TIME, MG_LF_REQUEST_ID, MG_LF_TRACE_ID, MG_LF_SPAN_ID, MG_LF_CLIENT, MG_LF_PEER,
    MG_LF_METHOD, MG_LF_PATH, MG_LF_QUERY, MG_LF_STATUS, MG_LF_BYTES, MG_LF_ROUTE,
    MG_LF_UPSTREAM, MG_LF_TARGET, MG_LF_UPSTREAM_TIME, MG_LF_CACHE, MG_LF_TOTAL_TIME,
    MG_LF_PROTO,       /* "HTTP/1.0", "HTTP/1.1" or "HTTP/2" */
    MG_LF_SPLIT,       /* how a route's canary or split chose (split.h) */
    MG_LF_MIRROR,      /* what became of a route's mirror copy (mirror.h) */
    /* the upstream attempts (proxy.c): how many, and the last one's phases */
    MG_LF_UP_ATTEMPTS, MG_LF_UP_CONNECT, MG_LF_UP_TLS, MG_LF_UP_FIRST_BYTE,
    MG_LF__BUILTIN,    /* the built-ins above, by name */
    MG_LF_REQ_HEADER = MG_LF__BUILTIN, /* a request header, as hooks left it */
    MG_LF_RES_HEADER,  /* a response header, as the client got it */
    MG_LF_CTX,         /* a value a hook kept in req.ctx */
} mg_lf_kind_t;

#define MG_LOG_MAX_FIELDS 64
#define MG_LOG_KEY_MAX 64    /* bytes of a JSON key, and of a req.ctx key */
#define MG_LOG_VALUE_MAX 4096 /* bytes of one value (escaped), longer ones are cut */

typedef struct mg_logfield_s {
    mg_lf_kind_t kind;
    uint8_t optional;   /* left out, not null, when it has no value (the
                           default line's trace_id, span_id, split, mirror) */
    uint16_t slot;      /* RES_HEADER: index into the request's captured
                           values; CTX: into the format's ctx keys */
    const char *key;    /* the JSON key (its bytes need no escaping) */
    size_t key_len;
    const char *arg;    /* REQ_HEADER, RES_HEADER: the name (lower case);
                           CTX: the key; else NULL */
    size_t arg_len;
    size_t tail_min;    /* the least room the fields after this one need */
} mg_logfield_t;

/* A compiled list of fields; one allocation (the strings follow the
 * fields), owned by the config that made it. */
typedef struct mg_logformat_s {
    size_t n;
    size_t nres;                /* RES_HEADER fields (slots 0..nres-1) */
    size_t nctx;                /* CTX fields (slots 0..nctx-1) */
    const mg_logfield_t **res;  /* by slot: the RES_HEADER fields */
    const mg_logfield_t **ctx;  /* by slot: the CTX fields */
    uint8_t first_byte;         /* upstream_first_byte_time is logged: the
                                   proxy times the answer's first byte */
    mg_logfield_t f[];
} mg_logformat_t;

/* The config's check of one entry of access_log.fields (a
 * mg_ffi_str_check_fn, mg_ffi.h): valid names are kept with header names
 * in lower case. Any thread. */
int mg_logfield_check(const char *s, size_t len, char *out, size_t cap);

/* Compiles names[0..n) (each passed by mg_logfield_check), or with n == 0
 * the default line (with "peer" when with_peer: settings.trusted_proxies
 * is set). Returns the format (free with mg_logformat_free), or NULL with
 * *err (malloc'd, NULL when out of memory): two fields with one JSON key. */
mg_logformat_t *mg_logformat_new(char *const *names, size_t n, int with_peer, char **err);
void mg_logformat_free(mg_logformat_t *f);

/* The name of built-in field kind k (k < MG_LF__BUILTIN). */
const char *mg_logfield_name(mg_lf_kind_t k);

#endif
