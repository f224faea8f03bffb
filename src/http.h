/* http.h: HTTP syntax shared by the client side, the upstream side and the
 * cache (http.c). */
#ifndef MG_HTTP_H
#define MG_HTTP_H

#include <stddef.h>
#include <string.h>
#include <llhttp.h>

/* The reason phrase of a status ("Unknown" for one the gateway never sends). */
const char *mg_status_text(int status);
/* Does an answer with this status carry a body (and its Content-Length)?
 * 1xx, 204 and 304 never do (RFC 9110 6.4.1, 8.6); the same rule frames
 * upstream answers, cached ones and the gateway's own. (A HEAD request's
 * answer has no body either, whatever its status.) */
static inline int mg_status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}
/* RFC 9110 9.2.2: is the method (llhttp's number, HTTP_*) idempotent?
 * Every protocol's requests are told apart by the same numbers (HTTP/2's
 * :method is looked up in llhttp's table, h2_headers.c). */
static inline int mg_method_idempotent(int m)
{
    switch (m) {
    case HTTP_GET: case HTTP_HEAD: case HTTP_PUT: case HTTP_DELETE:
    case HTTP_OPTIONS: case HTTP_TRACE:
        return 1;
    default:
        return 0;
    }
}
/* The next token of the comma-separated list v from *at (blanks and
 * commas skipped) in *tok / *tl, *at moved past it. Returns 0 at the end. */
int mg_token_next(const char *v, size_t vl, size_t *at, const char **tok, size_t *tl);
/* Is ch a token character (RFC 9110 5.6.2 tchar)? */
int mg_token_char(unsigned char ch);
/* Does the comma-separated token list v name tok (case-insensitive)? */
int mg_token_listed(const char *v, size_t vl, const char *tok, size_t tl);
/* Writes "name: value\r\n" at o; returns the end. (Inline: every head
 * builder calls it once per header.) */
static inline char *mg_put_header(char *o, const char *n, size_t nl, const char *v, size_t vl)
{
    memcpy(o, n, nl);
    o += nl;
    *o++ = ':';
    *o++ = ' ';
    memcpy(o, v, vl);
    o += vl;
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

/* What an upstream speaks (mg_upstream_t.protocol, upstream `protocol`):
 * HTTP/1.1, or HTTP/2 (h2_upstream.h) for "h2" and "grpc". */
enum { MG_UP_H1 = 0, MG_UP_H2 = 1, MG_UP_GRPC = 2 };
int mg_upstream_protocol_parse(const char *name);
const char *mg_upstream_protocol_name(int protocol);

#endif
