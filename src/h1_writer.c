/* h1_writer.c: HTTP/1.1 response heads and chunk framing (h1_writer.h).
 *
 * Each writer sums the exact length of what it writes, makes room once
 * (room()), then writes without further checks.
 */
#include <stdlib.h>
#include <string.h>
#include "h1_writer.h"
#include "http.h"

#define REASON_MAX 128

/* Makes (*buf)[at..at+n) writable; returns it, or NULL. */
static char *room(char **buf, size_t *cap, size_t at, size_t n)
{
    size_t need = at + n;
    if (need > MG_H1W_HEAD_MAX)
        return NULL;
    if (need > *cap) {
        size_t c = *cap * 2 > need ? *cap * 2 : need;
        char *p = realloc(*buf, c);
        if (!p)
            return NULL;
        *buf = p;
        *cap = c;
    }
    return *buf + at;
}

/* The decimal digits of v, written backwards ending at end, without
 * printf: this runs for every response. Returns where they start. */
static char *decimal(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static inline char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}
#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

static size_t fields_len(const mg_hfield_t *h, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += h[i].name_len + h[i].value_len + 4;
    return len;
}

/* The fields as header lines. A run of fields that lie in memory as the
 * lines they arrived as, one after the other (mg_hfield_t.line), goes in
 * one copy: a proxied head is mostly that. */
static char *put_fields(char *o, const mg_hfield_t *h, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (!h[i].line) {
            o = mg_put_header(o, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
            i++;
            continue;
        }
        const char *start = h[i].name, *end = h[i].value + h[i].value_len + 2;
        for (i++; i < n && h[i].line && h[i].name == end; i++)
            end = h[i].value + h[i].value_len + 2;
        o = put(o, start, (size_t)(end - start));
    }
    return o;
}

static const char CL[] = "Content-Length: ", TE[] = "Transfer-Encoding: chunked\r\n",
                  UPGRADE[] = "Connection: upgrade\r\n", CLOSE[] = "Connection: close\r\n",
                  KEEP[] = "Connection: keep-alive\r\n";

long mg_h1w_head(char **buf, size_t *cap, size_t at, const mg_resp_t *res,
                 const mg_h1w_req_t *q, mg_h1w_frame_t *f)
{
    int status = res->status;
    int has_body = mg_status_has_body(status);
    const char *reason = res->reason;
    size_t rl = res->reason_len;
    if (!reason) {
        reason = mg_status_text(status);
        rl = strlen(reason);
    } else if (rl > REASON_MAX) {
        rl = REASON_MAX;
    }
    f->chunked = 0;
    f->tunnel = status == 101;
    f->no_body = q->head || !has_body || f->tunnel;
    f->close = q->close && !f->tunnel;
    int known = res->body_len != MG_BODY_UNKNOWN;
    if (!f->no_body && !known) {
        if (q->minor >= 1)
            f->chunked = 1;
        else
            f->close = 1; /* HTTP/1.0: the close ends the body */
    }
    char num[20], *digits = num + sizeof(num);
    if (has_body && known && !f->tunnel)
        digits = decimal(num + sizeof(num), res->body_len);
    size_t nd = (size_t)(num + sizeof(num) - digits);
    const char *conn = "";
    size_t conn_len = 0;
    if (f->tunnel)
        conn = UPGRADE, conn_len = sizeof(UPGRADE) - 1;
    else if (f->close)
        conn = CLOSE, conn_len = sizeof(CLOSE) - 1;
    else if (q->minor == 0)
        conn = KEEP, conn_len = sizeof(KEEP) - 1;
    size_t len = 13 + rl + 2 + fields_len(res->headers, res->nheaders) +
                 (nd ? sizeof(CL) - 1 + nd + 2 : 0) + (f->chunked ? sizeof(TE) - 1 : 0) +
                 conn_len + 2;
    char *o = room(buf, cap, at, len), *start = o;
    if (!o)
        return -1;
    o = PUTS(o, "HTTP/1.1 ");
    int hundreds = status / 100, rest = status - hundreds * 100, tens = rest / 10; /* 100-599 */
    o[0] = (char)('0' + hundreds);
    o[1] = (char)('0' + tens);
    o[2] = (char)('0' + rest - tens * 10);
    o[3] = ' ';
    o = put(o + 4, reason, rl);
    o = PUTS(o, "\r\n");
    o = put_fields(o, res->headers, res->nheaders);
    if (nd) {
        o = PUTS(o, CL);
        o = put(o, digits, nd);
        o = PUTS(o, "\r\n");
    }
    if (f->chunked)
        o = PUTS(o, TE);
    o = put(o, conn, conn_len);
    o = PUTS(o, "\r\n");
    return (long)(o - start);
}

size_t mg_h1w_chunk_line(char *out, uint64_t len)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[len & 15];
        len >>= 4;
    } while (len);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

long mg_h1w_last_chunk(char **buf, size_t *cap, size_t at, const mg_hfield_t *t, size_t n)
{
    size_t len = 3 + fields_len(t, n) + 2;
    char *o = room(buf, cap, at, len), *start = o;
    if (!o)
        return -1;
    o = PUTS(o, "0\r\n");
    o = put_fields(o, t, n);
    o = PUTS(o, "\r\n");
    return (long)(o - start);
}
