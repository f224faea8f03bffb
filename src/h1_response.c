/* h1_response.c: the upstream HTTP/1.x response parser and the reuse
 * decision (see h1_response.h).
 *
 * A head is parsed only once its blank line is in the buffer, so it is
 * read line by line with memchr, never byte by byte through a state
 * machine; what the head says about framing and keep-alive is settled
 * while its lines go by (the framing headers are never folded).
 */
#include <string.h>
#include "span.h"
#include "h1_response.h"
#include "header_names.h"
#include "mg_ffi.h"

/* field-value characters (RFC 9110 5.5): HTAB, SP, VCHAR, obs-text */
static int value_char(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }
static int blank(char ch) { return ch == ' ' || ch == '\t'; }

void mg_h1r_init(mg_h1r_t *p)
{
    memset(p, 0, sizeof(*p));
    p->state = MG_H1_HEAD;
}

static int fail(mg_h1r_t *p, const char *why)
{
    p->err = why;
    return -1;
}

int mg_h1_status_line(const char *l, size_t len, int *status, uint8_t *minor, uint32_t *text_off,
                      uint32_t *text_len)
{
    /* "HTTP/1.x NNN" then nothing, or SP and a reason (maybe empty) */
    if (len < 12 || memcmp(l, "HTTP/1.", 7) != 0 || (l[7] != '0' && l[7] != '1') || l[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (l[i] < '0' || l[i] > '9')
            return -1;
    if (len > 12 && l[12] != ' ')
        return -1;
    for (size_t i = 13; i < len; i++)
        if (!value_char((unsigned char)l[i]))
            return -1;
    *status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    *minor = (uint8_t)(l[7] - '0');
    *text_off = len > 12 ? 13 : 12;
    *text_len = len > 12 ? (uint32_t)(len - 13) : 0;
    return *status >= 100 ? 0 : -1;
}

/* The first byte from p on (before end) that is a control character or
 * DEL, or end: where a line's CR is, if the line is valid. Eight bytes at
 * a time: (x - 0x20..) & ~x & 0x80.. flags the bytes of x below 0x20 (the
 * xor with 0x7f.. turns DEL into 0, flagged the same way); a borrow can
 * flag a byte above a flagged one, never below, so the lowest flag is
 * exact. */
static inline const char *ctl_scan(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t x, d, m;
        memcpy(&x, p, 8);
        d = x ^ (0x7f * ones);
        m = ((x - 0x20 * ones) & ~x & high) | ((d - ones) & ~d & high);
        if (m)
            return p + (__builtin_ctzll(m) >> 3); /* little-endian: lowest = first */
        p += 8;
    }
    while (p < end && (unsigned char)*p >= 0x20 && *p != 0x7f)
        p++;
    return p;
}

/* The line at buf[at..to): its length without CRLF, MG_H1_AGAIN without
 * its CRLF yet, -1 (p->err) for a bare CR or LF or a control character
 * other than HTAB in it. */
static long line_at(mg_h1r_t *p, const char *buf, size_t at, size_t to)
{
    const char *l = buf + at, *end = buf + to, *e = ctl_scan(l, end);
    while (e < end && *e == '\t')
        e = ctl_scan(e + 1, end);
    if (e == end)
        return MG_H1_AGAIN;
    if (*e != '\r')
        return fail(p, *e == '\n' ? "LF without CR" : "control character in a line");
    if (e + 1 == end)
        return MG_H1_AGAIN;
    if (e[1] != '\n')
        return fail(p, "CR without LF");
    return (long)(e - l);
}

/* Splits "name: value" (OWS trimmed) and classifies the name; 0 or -1
 * with p->err set. The line holds no control character but HTAB
 * (line_at), so a name that matches a known token is one (see
 * mg_hname_lookup); only other names are checked byte by byte. */
static int field_line(mg_h1r_t *p, const char *l, size_t n, size_t *nl, size_t *vo, size_t *vl,
                      int *tok)
{
    const char *c = memchr(l, ':', n);
    size_t i = c ? (size_t)(c - l) : 0;
    if (i == 0)
        return fail(p, "invalid header name");
    *tok = mg_hname_lookup(l, i);
    for (size_t k = 0; *tok == MG_HN_OTHER && k < i; k++)
        if (!mg_hname_tchar[(unsigned char)l[k]])
            return fail(p, "invalid header name");
    *nl = i++;
    while (i < n && blank(l[i]))
        i++;
    size_t end = n;
    while (end > i && blank(l[end - 1]))
        end--;
    *vo = i;
    *vl = end - i;
    return 0;
}

/* What the framing headers say, accumulated over the head. */
typedef struct {
    uint8_t te, conn_close, conn_keep_alive;
} framing_t;

static int digits(mg_h1r_t *p, const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0)
        return fail(p, "invalid Content-Length");
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10)
            return fail(p, "invalid Content-Length");
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* The next element of the comma-separated list v[0..n) from *at (empty
 * ones skipped, OWS trimmed) in *e / *el; 0 at the end. An element is
 * everything between commas, so "a b" is one element, as llhttp read it. */
static int next_elem(const char *v, size_t n, size_t *at, const char **e, size_t *el)
{
    size_t i = *at;
    while (i < n && (v[i] == ',' || blank(v[i])))
        i++;
    size_t st = i;
    while (i < n && v[i] != ',')
        i++;
    *at = i;
    while (i > st && blank(v[i - 1]))
        i--;
    *e = v + st;
    *el = i - st;
    return *el > 0;
}

static int framing_header(mg_h1r_t *p, framing_t *f, int tok, const char *v, size_t n)
{
    const char *t;
    size_t at = 0, tl;
    switch (tok) {
    case MG_HN_CONTENT_LENGTH:
        if (p->has_length)
            return fail(p, "duplicate Content-Length");
        p->has_length = 1;
        return digits(p, v, n, &p->content_length);
    case MG_HN_TRANSFER_ENCODING:
        /* chunked only as the last coding of all the TE headers, with
         * nothing after it, not even an empty element (llhttp's reading) */
        f->te = 1;
        if (n == 0)
            return fail(p, "empty Transfer-Encoding");
        p->chunked = n >= 7 && strncasecmp(v + n - 7, "chunked", 7) == 0;
        if (p->chunked && n > 7) {
            size_t k = n - 7;
            while (k > 0 && blank(v[k - 1]))
                k--;
            p->chunked = k > 0 && v[k - 1] == ',';
        }
        return 0;
    case MG_HN_CONNECTION:
        while (next_elem(v, n, &at, &t, &tl)) {
            if (tl == 5 && strncasecmp(t, "close", 5) == 0)
                f->conn_close = 1;
            else if (tl == 10 && strncasecmp(t, "keep-alive", 10) == 0)
                f->conn_keep_alive = 1;
        }
        return 0;
    default: return 0;
    }
}

/* An obs-fold continuation (l, n) of header h: OWS CRLF RWS -> one SP,
 * the continuation moved back to the value's end (values only shrink). */
static void unfold(char *buf, mg_header_t *h, const char *l, size_t n)
{
    while (n > 0 && blank(*l)) {
        l++;
        n--;
    }
    while (n > 0 && blank(l[n - 1]))
        n--;
    if (n == 0)
        return;
    char *v = buf + h->value.off;
    if (h->value.len > 0)
        v[h->value.len++] = ' ';
    memmove(v + h->value.len, l, n);
    h->value.len += (uint32_t)n;
}

/* After the head: what follows it, and whether the connection may stay. */
static int settle(mg_h1r_t *p, const framing_t *f, int no_body)
{
    if (f->te && p->has_length)
        return fail(p, "Content-Length with Transfer-Encoding");
    p->keep_alive = p->minor >= 1 ? !f->conn_close : f->conn_keep_alive;
    if (p->status < 200) {
        p->upgrade = p->status == 101;
        p->state = MG_H1_DONE; /* an interim answer ends with its head */
    } else if (no_body || p->status == 204 || p->status == 304) {
        p->state = MG_H1_DONE;
    } else if (p->chunked) {
        p->state = MG_H1_CSIZE;
    } else if (!f->te && p->has_length) {
        p->remaining = p->content_length;
        p->state = p->remaining ? MG_H1_BODY : MG_H1_DONE;
    } else {
        p->state = MG_H1_EOF; /* delimited by the close */
        p->keep_alive = 0;
    }
    return 0;
}

long mg_h1r_head(mg_h1r_t *p, char *buf, size_t from, size_t to, mg_header_t *hs, uint8_t *tok,
                 uint32_t max, int no_body)
{
    framing_t f = { 0, 0, 0 };
    int whole = 0; /* the head's blank line is known to be in buf */
    mg_h1r_init(p);
    long n = line_at(p, buf, from, to);
    if (n == MG_H1_AGAIN)
        return n;
    if (n < 0 || mg_h1_status_line(buf + from, (size_t)n, &p->status, &p->minor,
                                   &p->status_text_off, &p->status_text_len) < 0)
        return fail(p, "invalid status line");
    p->status_text_off += (uint32_t)from;
    size_t at = from + (size_t)n + 2;
    for (;;) {
        n = line_at(p, buf, at, to);
        if (n < 0)
            return n;
        const char *l = buf + at;
        if (n == 0)
            break;
        if (blank(l[0])) {
            if (p->nheaders == 0 || (mg_hname_flags(tok[p->nheaders - 1]) & MG_HNF_FRAMING))
                return fail(p, "invalid obs-fold");
            /* unfolding rewrites the buffer: only once the head is all
             * there, so that it is never parsed again */
            if (!whole && !(whole = memmem(buf + at, to - at, "\r\n\r\n", 4) != NULL))
                return MG_H1_AGAIN;
            unfold(buf, &hs[p->nheaders - 1], l, (size_t)n);
            p->folded = 1;
        } else {
            size_t nl, vo, vl;
            int t;
            if (field_line(p, l, (size_t)n, &nl, &vo, &vl, &t) < 0)
                return -1;
            if (p->nheaders >= max)
                return fail(p, "too many headers");
            if (mg_hname_flags(t) & MG_HNF_FRAMING) {
                /* llhttp let a space follow these values, not an HTAB (then
                 * it read "chunked" as another coding): refused */
                if (memchr(l + vo + vl, '\t', (size_t)n - vo - vl))
                    return fail(p, "HTAB after a framing header's value");
                if (framing_header(p, &f, t, l + vo, vl) < 0)
                    return -1;
            }
            tok[p->nheaders] = (uint8_t)t;
            hs[p->nheaders].name = (mg_span_t){ (uint32_t)at, (uint32_t)nl };
            hs[p->nheaders].value = (mg_span_t){ (uint32_t)(at + vo), (uint32_t)vl };
            p->nheaders++;
        }
        at += (size_t)n + 2;
    }
    at += 2;
    if (settle(p, &f, no_body) < 0)
        return -1;
    return (long)(at - from);
}

/* ---- the body ------------------------------------------------------------ */

#define CHUNK_LINE_MAX 4096 /* a chunk-size or trailer line longer than this is refused */

/* ";name[=token|quoted-string]..." after a chunk size; 0 or -1. No more
 * than llhttp 8 (which this replaced) took: no quoted-pair in a quoted
 * value, nothing after a token value. */
static int chunk_exts(const char *l, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (l[i++] != ';')
            return -1;
        size_t st = i;
        while (i < n && mg_hname_tchar[(unsigned char)l[i]])
            i++;
        if (i == st)
            return -1;
        if (i == n || l[i] == ';')
            continue;
        if (l[i++] != '=' || i == n)
            return -1;
        if (l[i] != '"') {
            st = i;
            while (i < n && mg_hname_tchar[(unsigned char)l[i]])
                i++;
            return i > st && i == n ? 0 : -1;
        }
        for (i++; i < n && l[i] != '"'; i++)
            if (l[i] == '\\' || (unsigned char)l[i] >= 0x7f)
                return -1;
        if (i++ >= n)
            return -1;
    }
    return 0;
}

static int chunk_size(mg_h1r_t *p, const char *l, size_t n)
{
    uint64_t x = 0;
    size_t i = 0;
    for (; i < n; i++) {
        int d = l[i] >= '0' && l[i] <= '9'   ? l[i] - '0'
                : (l[i] | 0x20) >= 'a' && (l[i] | 0x20) <= 'f' ? (l[i] | 0x20) - 'a' + 10
                                                               : -1;
        if (d < 0)
            break;
        if (x >> 59)
            return fail(p, "chunk size too large");
        x = x * 16 + (uint64_t)d;
    }
    if (i == 0 || chunk_exts(l + i, n - i) < 0)
        return fail(p, "invalid chunk size line");
    p->remaining = x;
    p->state = x ? MG_H1_CDATA : MG_H1_TRAILER;
    return 0;
}

int mg_h1r_body(mg_h1r_t *p, const char *in, size_t len, size_t *used, const char **data,
                size_t *dlen)
{
    size_t at = 0;
    *dlen = 0;
    for (;;) {
        size_t rest = len - at;
        switch (p->state) {
        case MG_H1_DONE: *used = at; return 1;
        case MG_H1_EOF:
            *data = in + at;
            *dlen = rest;
            *used = len;
            return 0;
        case MG_H1_BODY:
        case MG_H1_CDATA: {
            size_t k = rest < p->remaining ? rest : (size_t)p->remaining;
            *data = in + at;
            *dlen = k;
            *used = at + k;
            p->remaining -= k;
            if (p->remaining == 0)
                p->state = p->state == MG_H1_BODY ? MG_H1_DONE : MG_H1_CEND;
            return p->state == MG_H1_DONE;
        }
        case MG_H1_CEND:
            if (rest < 2) {
                *used = at;
                return rest == 1 && in[at] != '\r' ? fail(p, "no CRLF after chunk data") : 0;
            }
            if (in[at] != '\r' || in[at + 1] != '\n')
                return fail(p, "no CRLF after chunk data");
            at += 2;
            p->state = MG_H1_CSIZE;
            break;
        case MG_H1_CSIZE:
        case MG_H1_TRAILER: {
            long n = line_at(p, in, at, len);
            if (n == MG_H1_AGAIN) {
                *used = at;
                return rest > CHUNK_LINE_MAX ? fail(p, "chunk line too long") : 0;
            }
            if (n < 0)
                return -1;
            size_t nl, vo, vl;
            int t;
            if (p->state == MG_H1_CSIZE) {
                if (chunk_size(p, in + at, (size_t)n) < 0)
                    return -1;
            } else if (n == 0) {
                p->state = MG_H1_DONE; /* trailer fields are not forwarded */
            } else if (field_line(p, in + at, (size_t)n, &nl, &vo, &vl, &t) < 0) {
                return -1;
            } else if (mg_hname_flags(t) & MG_HNF_FRAMING) {
                /* RFC 9110 6.5.1: framing is not a trailer's to say; llhttp
                 * read it as if it were */
                return fail(p, "framing header in the trailer");
            }
            at += (size_t)n + 2;
            break;
        }
        default: return fail(p, "no response body expected");
        }
    }
}

int mg_h1r_eof(mg_h1r_t *p)
{
    if (p->state == MG_H1_EOF)
        p->state = MG_H1_DONE;
    return p->state == MG_H1_DONE ? 0 : fail(p, "the upstream closed before the end of the response");
}

int mg_h1_response_reusable(const mg_h1r_t *p, int extra_bytes, int request_sent)
{
    if (p->state != MG_H1_DONE)
        return 0; /* unread bytes of this response would start the next */
    if (!p->keep_alive || p->upgrade)
        return 0; /* the server said close, or it is a tunnel now */
    if (extra_bytes)
        return 0; /* bytes nobody asked for: the server is out of step */
    if (!request_sent)
        return 0; /* the server still expects the rest of the body */
    return 1;
}

/* ---- a whole answer in one buffer, for the REPL (mg_ffi.h) --------------- */

/* Unframes the body after the head at buf + at in place (pieces only move
 * down). Returns 1 when complete, 0 for more to come, -1 (p->err). */
static int body_in_place(mg_h1r_t *p, char *buf, size_t at, size_t len, int eof,
                         size_t *body_len)
{
    size_t start = at, out = at;
    while (p->state != MG_H1_DONE) {
        size_t used;
        const char *d;
        size_t dl;
        int rc = mg_h1r_body(p, buf + at, len - at, &used, &d, &dl);
        if (rc < 0)
            return -1;
        memmove(buf + out, d, dl);
        out += dl;
        at += used;
        if (rc == 0 && used == 0 && dl == 0) {
            if (!eof)
                return 0;
            if (mg_h1r_eof(p) < 0) {
                p->err = "the answer was cut short";
                return -1;
            }
            break;
        }
        if (p->state == MG_H1_EOF && at == len && !eof)
            return 0;
    }
    *body_len = out - start;
    return 1;
}

long mg_ffi_h1_response(char *buf, size_t len, int eof, int no_body, int *status,
                        uint32_t *spans, uint32_t max, uint32_t *nheaders, size_t *body_off,
                        size_t *body_len, const char **err)
{
    mg_header_t hs[128];
    uint8_t tok[128];
    if (max > 128)
        max = 128;
    size_t from = 0;
    mg_h1r_t p;
    for (;;) {
        mg_h1r_init(&p);
        long n = mg_h1r_head(&p, buf, from, len, hs, tok, max, no_body);
        if (n == MG_H1_AGAIN) {
            if (!eof)
                return MG_FFI_AGAIN;
            *err = "the upstream closed before its answer's head was complete";
            return -1;
        }
        if (n < 0) {
            *err = p.err;
            return -1;
        }
        if (p.status >= 200 || p.upgrade) {
            *body_off = from + (size_t)n;
            break;
        }
        from += (size_t)n; /* an interim 1xx: the answer follows */
    }
    int rc = body_in_place(&p, buf, *body_off, len, eof, body_len);
    if (rc < 0) {
        *err = p.err;
        return -1;
    }
    if (rc == 0)
        return MG_FFI_AGAIN;
    *status = p.status;
    *nheaders = p.nheaders;
    for (uint32_t i = 0; i < p.nheaders; i++) {
        uint32_t *s = spans + 4 * i;
        s[0] = hs[i].name.off;
        s[1] = hs[i].name.len;
        s[2] = hs[i].value.off;
        s[3] = hs[i].value.len;
    }
    return (long)from;
}
