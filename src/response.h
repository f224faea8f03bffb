/* response.h: a response as the core hands it to a protocol (mg_proto_t,
 * request.h): a status, a list of header fields and body chunks, never
 * bytes of one wire format. HTTP/1 (h1_writer.c, http_conn.c) turns it
 * into a status line and header lines; a second protocol translates the
 * same fields by their tokens.
 *
 * Ownership: the fields and the reason point at the caller's memory, which
 * needs to live only until mg_proto_t.start_response returns (the protocol
 * writes or copies what it keeps).
 */
#ifndef MG_RESPONSE_H
#define MG_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

/* One header field: its name's token (header_names.h, 0 for a name the
 * gateway does not act on) lets a protocol translate it without comparing
 * strings. Names keep the case they were given. */
typedef struct mg_hfield_s {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    uint8_t tok;
    /* 1: the field is in memory as the HTTP/1 line "name: value\r\n" it
     * arrived as (name, ": ", value, CRLF, one after the other), so an
     * HTTP/1 writer may copy a run of such lines whole; other protocols
     * ignore it */
    uint8_t line;
} mg_hfield_t;

/* A field that is not an HTTP/1 line in memory (line 0). */
static inline mg_hfield_t mg_hfield(const char *name, size_t name_len, const char *value,
                                    size_t value_len, int tok)
{
    mg_hfield_t f = { .name = name, .value = value, .name_len = (uint32_t)name_len,
                      .value_len = (uint32_t)value_len, .tok = (uint8_t)tok };
    return f;
}

/* The body's length is not known ahead: the protocol frames it (HTTP/1.1
 * chunked, HTTP/1.0 a close). */
#define MG_BODY_UNKNOWN UINT64_MAX

typedef struct mg_resp_s {
    int status;             /* 101, 200-599 */
    const char *reason;     /* the reason phrase HTTP/1 shows, or NULL for
                               the status's own text (mg_status_text) */
    size_t reason_len;
    const mg_hfield_t *headers; /* end-to-end fields only: framing
                                   (Content-Length, Transfer-Encoding,
                                   Connection) is the protocol's */
    size_t nheaders;
    uint64_t body_len;      /* or MG_BODY_UNKNOWN; 0 for no body. A HEAD
                               request's answer says the length the GET's
                               would have and sends none of it */
} mg_resp_t;

#endif
