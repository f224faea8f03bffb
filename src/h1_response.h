/* h1_response.h: the one parser of HTTP/1.x responses from upstreams, and
 * the one decision whether their connection may carry another request.
 * Used by the proxy (proxy.c), gw.http (http_client.c), the health checks
 * (health.c, status line only), the admin client (admin_client.c) and the
 * REPL's real upstream answers (mg_ffi_h1_response, mg_ffi.h).
 *
 * The head is parsed whole, once it is all in the caller's buffer (a head
 * that does not fit is refused); the body is then unframed piece by piece
 * as it arrives (Content-Length, chunked, or until the upstream closes).
 * As strict as llhttp's strict mode is with responses, which it replaces
 * here: one status line "HTTP/1.x NNN reason", CRLF line ends only (a bare
 * LF or CR is refused), header names of token characters followed directly
 * by ':', no control characters in values, two Content-Length headers or
 * Content-Length beside Transfer-Encoding refused, strict chunk lines.
 * obs-fold continuation lines are replaced by one SP in place (RFC 9112
 * 5.2), except in the headers that frame the message or decide keep-alive,
 * where the answer is refused rather than repaired.
 *
 * Nothing here allocates: header spans are offsets into the caller's
 * buffer, which the head parse may rewrite (folds only shrink it).
 */
#ifndef MG_H1_RESPONSE_H
#define MG_H1_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mg_header_s mg_header_t; /* span.h */

#define MG_H1_AGAIN (-11) /* not yet: more bytes are needed */

typedef enum {
    MG_H1_HEAD,    /* before or inside a head */
    MG_H1_BODY,    /* a Content-Length body: `remaining` bytes to go */
    MG_H1_EOF,     /* the body ends when the upstream closes */
    MG_H1_CSIZE,   /* chunked: at a chunk-size line */
    MG_H1_CDATA,   /* chunked: `remaining` bytes of chunk data */
    MG_H1_CEND,    /* chunked: the CRLF after a chunk's data */
    MG_H1_TRAILER, /* chunked: the trailer section */
    MG_H1_DONE,    /* the message is complete */
} mg_h1_state_t;

typedef struct mg_h1r_s {
    /* the head, once parsed */
    int status;
    uint8_t minor;          /* HTTP/1.minor */
    uint8_t keep_alive;     /* what the head says (RFC 9112 9.3) */
    uint8_t has_length;     /* a Content-Length was given */
    uint8_t chunked;        /* Transfer-Encoding ends in chunked */
    uint8_t upgrade;        /* 101: the bytes after the head are a tunnel */
    uint8_t folded;         /* some value was unfolded (the buffer rewritten) */
    uint64_t content_length;
    uint32_t status_text_off, status_text_len; /* the reason phrase */
    uint32_t nheaders;
    /* unframing */
    uint8_t state;          /* mg_h1_state_t */
    uint64_t remaining;
    const char *err;        /* why the response was refused (static) */
} mg_h1r_t;

/* Ready for a new response (keeps nothing of the last). */
void mg_h1r_init(mg_h1r_t *p);

/* "HTTP/1.x NNN reason" at line[0..len) (without its CRLF): 0 with
 * *status, *minor and the reason's offset (from line) and length, or -1. */
int mg_h1_status_line(const char *line, size_t len, int *status, uint8_t *minor,
                      uint32_t *text_off, uint32_t *text_len);

/* Parses the head that starts at buf + from, if buf[from..to) holds all of
 * it. Header names and values go to hs (with each name's token,
 * header_names.h, in tok; at most max), as offsets into buf. Returns the
 * head's length (its blank line included), MG_H1_AGAIN, or -1 (p->err).
 * `no_body` says the request was HEAD: then no body follows whatever the
 * head says. Afterwards p->state says what follows: MG_H1_DONE for no body
 * (a 1xx, 204, 304, or HEAD: the caller parses the next head after an
 * interim 1xx), else the body's framing. */
long mg_h1r_head(mg_h1r_t *p, char *buf, size_t from, size_t to, mg_header_t *hs, uint8_t *tok,
                 uint32_t max, int no_body);

/* Unframes body bytes in[0..len): the first piece of body data in them is
 * returned in *data / *dlen (dlen 0: none), *used says how many bytes were
 * consumed (call again with the rest). Returns 1 once the message is
 * complete (p->state MG_H1_DONE), 0 for more to come, -1 (p->err). */
int mg_h1r_body(mg_h1r_t *p, const char *in, size_t len, size_t *used, const char **data,
                size_t *dlen);

/* The upstream closed: 0 when that ends the message (a close-delimited
 * body, or nothing left), -1 when the message was cut short. */
int mg_h1r_eof(mg_h1r_t *p);

/* May the connection that carried this exchange carry another? Each check
 * is one way reuse goes wrong (model: nginx's upstream keepalive module):
 * the response must be complete, its head must allow keep-alive (RFC 9112
 * 9.3; a close-delimited body never does), no byte may follow it (the
 * server spoke out of turn), and the request must have gone out whole
 * (`request_sent`: else the server still waits for body bytes). */
int mg_h1_response_reusable(const mg_h1r_t *p, int extra_bytes, int request_sent);

#endif
