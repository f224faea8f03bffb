/* h2_headers_harness.c: test-only helper for spec/c/h2_headers_spec.lua,
 * linked into build/libmgtest.so. Runs src/h2_headers.c's request
 * builder on a list of fields the way h2_conn.c hands them over (one by
 * one, then the end of the block) on a request of its own, and its
 * response translation on a list of fields, and describes what came out
 * as text the spec compares.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "h2_headers.h"
#include "header_names.h"

/* fields: "name\0value\0" pairs, len bytes in all. out gets either
 * "refused STATUS REASON\n" or the request: "method M\nurl U\n", the flags
 * "has_body N\nchunked N\ncontent_length N\nhead N\nidempotent N\n
 * version MAJOR.MINOR\n", then "header NAME: VALUE\n" per header and
 * "known NAME\n" for Host. Returns the status (0: accepted) or -1 when out
 * of memory. */
int mg_test_h2_head(const char *fields, size_t len, int end_stream, uint64_t header_size,
                    uint64_t header_count, char *out, size_t cap)
{
    mg_limits_t l = { .request_line = 8192, .header_size = header_size,
                      .header_count = header_count, .body = 1 << 20 };
    mg_request_t *r = calloc(1, sizeof(*r));
    mg_header_t *hs = calloc(header_count + 1, sizeof(*hs));
    uint8_t *tok = calloc(header_count + 1, 1);
    char *first = malloc(64); /* small on purpose: the builder grows it */
    if (!r || !hs || !tok || !first) {
        free(r);
        free(hs);
        free(tok);
        free(first);
        return -1;
    }
    r->headers = hs;
    r->htok = tok;
    r->headers_cap = (uint32_t)(header_count + 1);
    mg_buf_t buf = { .data = first, .cap = 64 };
    mg_h2_head_t hb;
    mg_h2_head_begin(&hb, r, &buf, NULL, &l);
    for (size_t at = 0; at < len;) {
        const char *n = fields + at;
        size_t nl = strlen(n);
        const char *v = n + nl + 1;
        size_t vl = strlen(v);
        mg_h2_head_field(&hb, n, nl, v, vl);
        at += nl + vl + 2;
    }
    int rc = mg_h2_head_end(&hb, end_stream);
    size_t o = 0;
#define OUT(...)                                                                               \
    do {                                                                                       \
        int k_ = snprintf(out + o, cap > o ? cap - o : 0, __VA_ARGS__);                        \
        o += k_ > 0 ? (size_t)k_ : 0;                                                          \
    } while (0)
    if (rc) {
        OUT("refused %d %s\n", rc, hb.reason);
    } else {
        const char *d = buf.data;
        OUT("method %.*s\nurl %.*s\n", (int)r->method.len, d + r->method.off, (int)r->url.len,
            d + r->url.off);
        OUT("has_body %d\nchunked %d\ncontent_length %llu\nhead %d\nidempotent %d\n"
            "version %d.%d\n",
            r->has_body, r->chunked, (unsigned long long)r->content_length, r->head_method,
            r->idempotent, r->http_major, r->http_minor);
        for (uint32_t i = 0; i < r->nheaders; i++)
            OUT("header %.*s: %.*s\n", (int)r->headers[i].name.len, d + r->headers[i].name.off,
                (int)r->headers[i].value.len, d + r->headers[i].value.off);
        if (r->known[MG_H_HOST]) {
            mg_span_t hv = r->headers[r->known[MG_H_HOST] - 1].value;
            OUT("known host %.*s\n", (int)hv.len, d + hv.off);
        }
    }
#undef OUT
    free(buf.data);
    free(hs);
    free(tok);
    free(r);
    return rc;
}

/* The response translation: status, body length (-1: unknown) and fields
 * ("name\0value\0" pairs, each looked up as the proxy does) to
 * "name: value\n" lines. */
int mg_test_h2_response(int status, long long body_len, const char *fields, size_t len, char *out,
                        size_t cap)
{
    mg_hfield_t in[64];
    size_t n = 0, names = 0;
    for (size_t at = 0; at < len && n < 64;) {
        const char *name = fields + at;
        size_t nl = strlen(name);
        const char *v = name + nl + 1;
        size_t vl = strlen(v);
        in[n++] = mg_hfield(name, nl, v, vl, mg_hname_lookup(name, nl));
        names += nl;
        at += nl + vl + 2;
    }
    mg_resp_t res = { .status = status, .headers = in, .nheaders = n,
                      .body_len = body_len < 0 ? MG_BODY_UNKNOWN : (uint64_t)body_len };
    mg_h2_field_t f[66];
    char *lower = malloc(names + 1), num[24];
    if (!lower)
        return -1;
    size_t k = mg_h2_response_fields(&res, f, lower, num);
    size_t o = 0;
    for (size_t i = 0; i < k; i++) {
        int w = snprintf(out + o, cap > o ? cap - o : 0, "%.*s: %.*s\n", (int)f[i].name_len,
                         f[i].name, (int)f[i].value_len, f[i].value);
        o += w > 0 ? (size_t)w : 0;
    }
    free(lower);
    return (int)k;
}
