/* h1_writer.h: the HTTP/1.1 response writer: a response (response.h) as
 * a status line and header lines, and its body's framing (Content-Length,
 * chunked, or the close of the connection), decided in one place for
 * every answer the gateway sends to a client: proxied (proxy.c), kept
 * (cache.c), made by the gateway (request.c), and the testing kit's copy
 * of a proxied head. The connection (http_conn.c) sends what it writes.
 *
 * A head is written into a caller's growable buffer (the worker's
 * scratch) after its exact length is summed: the buffer grows (realloc)
 * when it is short, up to MG_H1W_HEAD_MAX; nothing is estimated.
 * Nothing here keeps state or touches a socket; any thread.
 */
#ifndef MG_H1_WRITER_H
#define MG_H1_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include "request.h"
#include "response.h"

#define MG_H1W_HEAD_MAX (4u << 20) /* no client takes a larger head */

/* What the request asks of its answer's framing. */
typedef struct mg_h1w_req_s {
    uint8_t minor;      /* the request's HTTP/1.minor */
    uint8_t head;       /* a HEAD request: no body goes out */
    uint8_t close;      /* the connection closes after this answer */
} mg_h1w_req_t;

/* How the body goes, as the head written says. */
typedef struct mg_h1w_frame_s {
    uint8_t chunked;    /* in chunks (length unknown, HTTP/1.1) */
    uint8_t close;      /* the connection closes after it (asked, or the
                           close delimits the body: HTTP/1.0, length
                           unknown) */
    uint8_t no_body;    /* no body bytes go out: HEAD, 1xx, 204, 304 */
    uint8_t tunnel;     /* 101: the bytes after the head are the tunnel's */
} mg_h1w_frame_t;

/* Writes the head of res for a request q at (*buf)[at..], growing *buf
 * (realloc, *cap updated) when it is short: the status line (res's reason,
 * at most 128 bytes of it, or the status's text), res's fields in order,
 * then the framing: Content-Length (when the status has a body and the
 * length is known, also for HEAD), Transfer-Encoding: chunked (length
 * unknown, HTTP/1.1), and Connection: upgrade (101), close, or keep-alive
 * (an HTTP/1.0 client kept). Fills *f. Returns the head's length, or -1
 * (beyond MG_H1W_HEAD_MAX or out of memory: *buf unchanged). */
long mg_h1w_head(char **buf, size_t *cap, size_t at, const mg_resp_t *res,
                 const mg_h1w_req_t *q, mg_h1w_frame_t *f);

/* mg_h1w_head for the answer to r, the one way HTTP/1 connections
 * (http_conn.c) and the testing kit (proxy.c) ask it: the connection closes
 * after it when the core asked (r->response_close), the client did not
 * keep it alive, the worker is `stopping`, or an upgrade request gets
 * another status than 101 (its parser stopped for a tunnel). (Inline: once
 * per response.) */
static inline long mg_h1w_response_head(const mg_request_t *r, int stopping, const mg_resp_t *res,
                                        char **buf, size_t *cap, mg_h1w_frame_t *f)
{
    mg_h1w_req_t q = {
        .minor = r->http_minor,
        .head = r->head_method,
        .close = r->response_close || !r->keep_alive || stopping ||
                 (r->is_upgrade && res->status != 101),
    };
    return mg_h1w_head(buf, cap, 0, res, &q, f);
}

/* The line before a chunk of len bytes (len > 0), "<hex>\r\n", into out
 * (at least 18 bytes); returns its length. */
size_t mg_h1w_chunk_line(char *out, uint64_t len);

/* The end of a chunked body with its trailer fields t[0..n) (n may be 0):
 * "0\r\n", the fields, "\r\n", at (*buf)[at..], grown as for a head.
 * Returns its length, or -1. */
long mg_h1w_last_chunk(char **buf, size_t *cap, size_t at, const mg_hfield_t *t, size_t n);

#endif
