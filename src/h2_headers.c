/* h2_headers.c: HTTP/2 header blocks <-> the core's request and response
 * (h2_headers.h), RFC 9113 8.2.2 (connection-specific fields), 8.2.3
 * (cookie crumbs), 8.3 (control data).
 *
 * The syntax of each field (8.2.1: a name of lower-case token characters,
 * a value without NUL, CR, LF or blanks at its ends) is nghttp2's to check
 * (its HTTP messaging, which the session runs: nghttp2_check_header_name,
 * nghttp2_check_header_value_rfc9113) before a field reaches this file, so
 * it is not scanned twice. What follows are the rules of a request as the
 * gateway uses it, and the translation to what an HTTP/1.1 upstream reads.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "h2_headers.h"
#include "header_names.h"
#include "http.h"

/* pseudo-header fields seen (mg_h2_head_t.pseudo_seen) */
enum { MG_H2P_METHOD = 1, MG_H2P_SCHEME = 2, MG_H2P_AUTHORITY = 4, MG_H2P_PATH = 8 };

void mg_h2_head_begin(mg_h2_head_t *h, mg_request_t *r, mg_buf_t *buf, mg_bufs_t *pool,
                      const mg_limits_t *l)
{
    memset(h, 0, sizeof(*h));
    h->r = r;
    h->buf = buf;
    h->pool = pool;
    h->limits = l;
    r->data = &buf->data;
}

static int refuse(mg_h2_head_t *h, int status, const char *reason)
{
    if (!h->status) {
        h->status = status;
        h->reason = reason;
    }
    return h->status;
}

/* Copies n bytes to the end of the buffer; their span, or len 0 with the
 * refusal (431: the buffer may not grow past the head's limits). */
static int put(mg_h2_head_t *h, const char *p, size_t n, mg_span_t *out)
{
    mg_buf_t *b = h->buf;
    if (!b->data && h->pool)
        mg_buf_get(h->pool, b);
    if (!b->data)
        return refuse(h, 503, "out of memory");
    if (b->len + n > b->cap) {
        /* names, values, pseudo-headers and one joined cookie: at most
         * twice the limits (each byte is counted against one of them) */
        size_t max = 2 * (h->limits->header_size + h->limits->request_line) + 1024;
        size_t cap = b->cap;
        while (cap < b->len + n)
            cap *= 2;
        if (b->len + n > max)
            return refuse(h, 431, "request header fields too large");
        if (cap > max)
            cap = max;
        if (h->pool) {
            if (mg_buf_grow(h->pool, b, cap) < 0)
                return refuse(h, 503, "out of memory");
        } else {
            char *nd = realloc(b->data, cap);
            if (!nd)
                return refuse(h, 503, "out of memory");
            b->data = nd;
            b->cap = (uint32_t)cap;
        }
    }
    memcpy(b->data + b->len, p, n);
    out->off = b->len;
    out->len = (uint32_t)n;
    b->len += (uint32_t)n;
    return 0;
}

static int is(const char *n, size_t nl, const char *lit)
{
    size_t l = strlen(lit);
    return nl == l && memcmp(n, lit, l) == 0;
}

static int pseudo_field(mg_h2_head_t *h, const char *n, size_t nl, const char *v, size_t vl)
{
    mg_span_t *dst;
    uint8_t bit;
    if (h->regular_seen)
        return refuse(h, 400, "pseudo-header field after a regular field");
    if (is(n, nl, ":method"))
        dst = &h->method, bit = MG_H2P_METHOD;
    else if (is(n, nl, ":path"))
        dst = &h->path, bit = MG_H2P_PATH;
    else if (is(n, nl, ":scheme"))
        dst = &h->scheme, bit = MG_H2P_SCHEME;
    else if (is(n, nl, ":authority"))
        dst = &h->authority, bit = MG_H2P_AUTHORITY;
    else
        return refuse(h, 400, "unknown pseudo-header field");
    if (h->pseudo_seen & bit)
        return refuse(h, 400, "repeated pseudo-header field");
    h->pseudo_seen |= bit;
    if (vl == 0 && bit != MG_H2P_AUTHORITY)
        return refuse(h, 400, "empty pseudo-header field");
    if ((bit == MG_H2P_METHOD || bit == MG_H2P_PATH) &&
        h->method.len + h->path.len + vl + 10 > h->limits->request_line)
        return refuse(h, 414, "request line too long");
    return put(h, v, vl, dst);
}

/* Fields that only mean something to one HTTP/1.1 hop (RFC 9113 8.2.2):
 * a request carrying one is malformed. */
static int connection_specific(int tok)
{
    return tok == MG_HN_CONNECTION || tok == MG_HN_KEEP_ALIVE || tok == MG_HN_PROXY_CONNECTION ||
           tok == MG_HN_TRANSFER_ENCODING || tok == MG_HN_UPGRADE;
}

int mg_h2_head_field(mg_h2_head_t *h, const char *n, size_t nl, const char *v, size_t vl)
{
    mg_request_t *r = h->r;
    if (h->status)
        return h->status;
    if (nl == 0)
        return refuse(h, 400, "empty header field name");
    if (n[0] == ':')
        return pseudo_field(h, n, nl, v, vl);
    h->regular_seen = 1;
    r->head_bytes += (uint32_t)(nl + vl + 4); /* as an HTTP/1.1 line counts */
    if (r->head_bytes > h->limits->header_size)
        return refuse(h, 431, "request header fields too large");
    int tok = mg_hname_lookup(n, nl);
    if (connection_specific(tok))
        return refuse(h, 400, "connection-specific header field");
    if (tok == MG_HN_TE) {
        /* only "trailers" may be said (8.2.2); it means nothing upstream */
        if (vl != 8 || strncasecmp(v, "trailers", 8) != 0)
            return refuse(h, 400, "TE other than trailers");
        return 0;
    }
    /* one slot stays free for the Host that :authority may become */
    if (r->nheaders + 1 >= h->limits->header_count + 1)
        return refuse(h, 431, "too many header fields");
    mg_header_t *hd = &r->headers[r->nheaders];
    if (put(h, n, nl, &hd->name) || put(h, v, vl, &hd->value))
        return h->status;
    r->nheaders++;
    if (nl == 6 && memcmp(n, "cookie", 6) == 0 && h->ncookies < UINT8_MAX)
        h->ncookies++;
    return 0;
}

/* 8.2.3: the crumbs of a split cookie are one field again for HTTP/1.1,
 * joined by "; ", in the first one's place. */
static int join_cookies(mg_h2_head_t *h)
{
    mg_request_t *r = h->r;
    size_t total = 0;
    uint32_t first = UINT32_MAX;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        mg_header_t *hd = &r->headers[i];
        if (hd->name.len == 6 && memcmp(*r->data + hd->name.off, "cookie", 6) == 0) {
            if (first == UINT32_MAX)
                first = i;
            total += hd->value.len + 2;
        }
    }
    if (first == UINT32_MAX)
        return 0;
    /* made in place at the end of the buffer: the values are copied one by
     * one (the buffer may move as it grows, so by offset) */
    mg_span_t joined = { 0, 0 }, piece;
    int started = 0;
    uint32_t out = first + 1;
    for (uint32_t i = first; i < r->nheaders; i++) {
        mg_header_t hd = r->headers[i];
        int cookie = hd.name.len == 6 && memcmp(*r->data + hd.name.off, "cookie", 6) == 0;
        if (!cookie) {
            if (i > first)
                r->headers[out++] = hd;
            continue;
        }
        if (started && put(h, "; ", 2, &piece))
            return h->status;
        char tmp[256];
        const char *src = NULL;
        size_t left = hd.value.len, at = hd.value.off;
        while (left) { /* in pieces: the source may move while the buffer grows */
            size_t k = left < sizeof(tmp) ? left : sizeof(tmp);
            src = *r->data + at;
            memcpy(tmp, src, k);
            if (put(h, tmp, k, &piece))
                return h->status;
            if (!started) {
                joined.off = piece.off;
                started = 1;
            }
            at += k;
            left -= k;
        }
        if (!started) { /* an empty first crumb */
            joined.off = h->buf->len;
            started = 1;
        }
    }
    joined.len = h->buf->len - joined.off;
    r->headers[first].value = joined;
    r->nheaders = out;
    (void)total;
    return 0;
}

/* Is the Host field the same authority as :authority (RFC 3986 6.2.2:
 * the host is case-insensitive)? */
static int same_authority(const char *a, size_t al, const char *b, size_t bl)
{
    return al == bl && strncasecmp(a, b, al) == 0;
}

/* The content-length value: digits only, as llhttp reads them. */
static int content_length(const char *v, size_t vl, uint64_t *out)
{
    uint64_t n = 0;
    if (vl == 0 || vl > 19)
        return -1;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return 0;
}

/* The method's number in llhttp's table (HTTP_*), or -1: over HTTP/2 the
 * gateway takes the methods an HTTP/1.1 client can send it, no others (an
 * HTTP/1.1 upstream would get what no HTTP/1.1 client could give it). */
static int method_number(const char *m, size_t len)
{
    static const struct {
        const char *name;
        uint8_t len;
        uint8_t num;
    } known[] = {
#define XX(num, name, string) { #string, sizeof(#string) - 1, num },
        HTTP_METHOD_MAP(XX)
#undef XX
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i].len == len && memcmp(known[i].name, m, len) == 0)
            return known[i].num;
    return -1;
}

int mg_h2_head_end(mg_h2_head_t *h, int end_stream)
{
    mg_request_t *r = h->r;
    if (h->status)
        return h->status;
    if (!(h->pseudo_seen & MG_H2P_METHOD))
        return refuse(h, 400, "missing :method");
    int method = method_number(*r->data + h->method.off, h->method.len);
    if (method < 0)
        return refuse(h, 400, "unknown method");
    if (method == HTTP_CONNECT)
        return refuse(h, 405, "CONNECT is not supported"); /* as over HTTP/1.1 */
    if (!(h->pseudo_seen & MG_H2P_SCHEME) || !(h->pseudo_seen & MG_H2P_PATH))
        return refuse(h, 400, !(h->pseudo_seen & MG_H2P_PATH) ? "missing :path"
                                                              : "missing :scheme");
    if (h->ncookies > 1 && join_cookies(h))
        return h->status;
    const char *data = *r->data;
    if (h->pseudo_seen & MG_H2P_AUTHORITY) {
        if (memchr(data + h->authority.off, '@', h->authority.len))
            return refuse(h, 400, "userinfo in :authority");
        /* 8.3.1: a Host naming another authority makes the request
         * malformed; the same one is kept once */
        mg_header_t *host = NULL;
        for (uint32_t i = 0; i < r->nheaders; i++) {
            mg_header_t *hd = &r->headers[i];
            if (hd->name.len == 4 && memcmp(data + hd->name.off, "host", 4) == 0) {
                if (host)
                    return refuse(h, 400, "duplicate Host header");
                host = hd;
            }
        }
        if (host && !same_authority(data + host->value.off, host->value.len,
                                    data + h->authority.off, h->authority.len))
            return refuse(h, 400, "Host and :authority differ");
        if (!host && h->authority.len) {
            mg_header_t *hd = &r->headers[r->nheaders];
            if (put(h, "host", 4, &hd->name))
                return h->status;
            hd->value = h->authority;
            r->nheaders++;
        }
    }
    data = *r->data;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const char *why = mg_request_classify_header(r, data, i);
        if (why)
            return refuse(h, 400, why);
    }
    r->method = h->method;
    r->url = h->path;
    r->http_major = 2;
    r->http_minor = 0;
    r->keep_alive = 1;
    if (r->known[MG_H_CONTENT_LENGTH]) {
        mg_span_t v = r->headers[r->known[MG_H_CONTENT_LENGTH] - 1].value;
        if (content_length(data + v.off, v.len, &r->content_length) < 0)
            return refuse(h, 400, "invalid content-length");
        if (end_stream && r->content_length > 0)
            return refuse(h, 400, "content-length without a body");
        r->has_body = !end_stream && r->content_length > 0;
    } else {
        /* no length: an HTTP/1.1 upstream gets the body chunked */
        r->has_body = !end_stream;
        r->chunked = r->has_body;
    }
    r->head_method = method == HTTP_HEAD;
    r->idempotent = (uint8_t)mg_method_idempotent(method);
    r->head_end = h->buf->len;
    r->state = MG_RS_UPSTREAM;
    return 0;
}

/* ---- responses ------------------------------------------------------------ */

/* What a response to an HTTP/2 client never carries: the connection-
 * specific fields (8.2.2) and the framing the gateway writes itself. */
static int left_out(const mg_hfield_t *f)
{
    int tok = f->tok ? f->tok : mg_hname_lookup(f->name, f->name_len);
    return connection_specific(tok) || tok == MG_HN_CONTENT_LENGTH || tok == MG_HN_TE ||
           tok == MG_HN_TRAILER || f->name_len == 0;
}

static size_t fields(const mg_hfield_t *t, size_t n, mg_h2_field_t *out, size_t k, char *lower)
{
    for (size_t i = 0; i < n; i++) {
        const mg_hfield_t *f = &t[i];
        if (left_out(f))
            continue;
        const char *v = f->value;
        size_t vl = f->value_len;
        /* a value a hook wrote with blanks at its ends: HTTP/2 clients
         * refuse the whole response for one (8.2.1) */
        while (vl && (v[0] == ' ' || v[0] == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        if (f->tok) { /* the table's name is lower case */
            out[k++] = (mg_h2_field_t){ mg_hnames[f->tok].name, v, f->name_len, vl };
            continue;
        }
        for (size_t j = 0; j < f->name_len; j++) {
            char c = f->name[j];
            lower[j] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        out[k++] = (mg_h2_field_t){ lower, v, f->name_len, vl };
        lower += f->name_len;
    }
    return k;
}

size_t mg_h2_response_fields(const mg_resp_t *res, mg_h2_field_t *out, char *lower, char *num)
{
    int s = res->status;
    num[0] = (char)('0' + s / 100);
    num[1] = (char)('0' + s / 10 % 10);
    num[2] = (char)('0' + s % 10);
    out[0] = (mg_h2_field_t){ ":status", num, 7, 3 };
    size_t k = fields(res->headers, res->nheaders, out, 1, lower);
    if (mg_status_has_body(s) && res->body_len != MG_BODY_UNKNOWN) {
        char *end = num + 24, *d = end;
        uint64_t v = res->body_len;
        do {
            *--d = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        out[k++] = (mg_h2_field_t){ "content-length", d, 14, (size_t)(end - d) };
    }
    return k;
}

size_t mg_h2_trailer_fields(const mg_hfield_t *t, size_t n, mg_h2_field_t *out, char *lower)
{
    return fields(t, n, out, 0, lower);
}
