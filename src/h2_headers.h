/* h2_headers.h: HTTP/2 header blocks and the core's request and response
 * (h2_headers.c), RFC 9113 8.2-8.3: the fields of a request's HEADERS as
 * the request the pipeline takes (pseudo-header fields checked and turned
 * into method and target, :authority and Host reconciled, cookie crumbs
 * joined, connection-specific fields refused), and a response (response.h)
 * as the field list of a HEADERS frame (names in lower case, framing and
 * connection-specific fields left out, content-length from the body's
 * length).
 *
 * Nothing here knows nghttp2 or a socket: h2_conn.c hands over each field
 * as HPACK decoded it, and what comes out is plain memory. Worker thread
 * (it uses the worker's buffer pool); spec/c/h2_headers_spec.lua tests it.
 */
#ifndef MG_H2_HEADERS_H
#define MG_H2_HEADERS_H

#include <stddef.h>
#include <stdint.h>
#include "buf.h"
#include "config.h"
#include "request.h"
#include "response.h"

/* A request head being built from the fields of one header block. The
 * field bytes are copied into `buf` (the request's spans point into it:
 * r->data = &buf->data), which grows within the limits: from `pool` when
 * there is one (buf may start empty), else by realloc (buf starts with a
 * buffer of the caller's, which may be replaced by a larger one). */
typedef struct mg_h2_head_s {
    mg_request_t *r;
    mg_buf_t *buf;
    mg_bufs_t *pool;
    const mg_limits_t *limits;
    mg_span_t method, scheme, authority, path;
    uint8_t pseudo_seen;     /* MG_H2P_* bits */
    uint8_t regular_seen;    /* a regular field came: no pseudo-header after it */
    uint8_t ncookies;        /* cookie fields seen (joined at the end) */
    int status;              /* the refusal: 400, 405, 414, 431 (0: none yet) */
    const char *reason;      /* ... and why (static) */
} mg_h2_head_t;

/* Starts building r's head from a HEADERS block into buf (owned by the
 * caller, len 0) within limits l. */
void mg_h2_head_begin(mg_h2_head_t *h, mg_request_t *r, mg_buf_t *buf, mg_bufs_t *pool,
                      const mg_limits_t *l);
/* One decoded field, its syntax already checked (RFC 9113 8.2.1: nghttp2
 * does, see h2_headers.c). Returns 0, or the refusal status once the head
 * is refused (then the later fields are not kept). */
int mg_h2_head_field(mg_h2_head_t *h, const char *name, size_t nl, const char *value, size_t vl);
/* The block is complete; end_stream: no body follows (END_STREAM on the
 * HEADERS). Checks what a whole head must hold and fills the request (its
 * method, target, headers and their tokens, framing, HTTP/2 version); r
 * is then MG_RS_UPSTREAM, ready for the pipeline. Returns 0, or the
 * refusal status with h->reason. */
int mg_h2_head_end(mg_h2_head_t *h, int end_stream);

/* A response field list of a HEADERS frame, as name/value pairs that point
 * into the response, the caller's memory or `lower` (lower-cased names). */
typedef struct mg_h2_field_s {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
} mg_h2_field_t;

/* The fields of res for a HEADERS frame into out (room for res->nheaders
 * + 2): ":status", then res's fields with names lower-cased into `lower`
 * (room for the sum of their name lengths), minus those HTTP/2 forbids
 * (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade)
 * and Content-Length (the gateway's own goes last: the body's length when
 * known and the status has one, also for a HEAD request's answer). `num`
 * holds the status and length digits (at least 24 bytes). Returns the
 * number of fields. */
size_t mg_h2_response_fields(const mg_resp_t *res, mg_h2_field_t *out, char *lower, char *num);
/* Trailer fields t[0..n) the same way (no pseudo-header, no framing). */
size_t mg_h2_trailer_fields(const mg_hfield_t *t, size_t n, mg_h2_field_t *out, char *lower);

#endif
