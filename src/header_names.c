/* header_names.c: the header-name table and its lookup (see header_names.h).
 *
 * The lookup switches on the length, then compares against the one to four
 * names of that length; the compare folds case and stops at the first
 * differing byte, so an unknown name costs a switch and a byte or two.
 */
#include <string.h>
#include "header_names.h"
#include "request.h"
#include "mg_ffi.h"

/* RFC 9110 tchar: digits, letters and !#$%&'*+-.^_`|~ (a table: this runs
 * for every byte of every header name a hook sets) */
const unsigned char mg_hname_tchar[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

#define N(s) s, sizeof(s) - 1
const mg_hname_t mg_hnames[MG_HN__COUNT] = {
    [MG_HN_OTHER] = { "", 0, 0, -1 },
    [MG_HN_AUTHORIZATION] = { N("authorization"), 0, MG_H_AUTHORIZATION },
    [MG_HN_CLOSE] = { N("close"), 0, -1 },
    [MG_HN_CONNECTION] = { N("connection"), MG_HNF_HOP | MG_HNF_FRAMING, MG_H_CONNECTION },
    [MG_HN_CONTENT_LENGTH] = { N("content-length"), MG_HNF_FRAMING | MG_HNF_REQ_DROP,
                               MG_H_CONTENT_LENGTH },
    [MG_HN_CONTENT_TYPE] = { N("content-type"), 0, MG_H_CONTENT_TYPE },
    [MG_HN_EXPECT] = { N("expect"), MG_HNF_REQ_DROP, MG_H_EXPECT },
    [MG_HN_FORWARDED] = { N("forwarded"), MG_HNF_REQ_FORWARDED, -1 },
    [MG_HN_HOST] = { N("host"), 0, MG_H_HOST },
    /* goes only with an h2c upgrade, which is never tunnelled */
    [MG_HN_HTTP2_SETTINGS] = { N("http2-settings"), MG_HNF_REQ_DROP, -1 },
    [MG_HN_IF_MODIFIED_SINCE] = { N("if-modified-since"), 0, -1 },
    [MG_HN_IF_NONE_MATCH] = { N("if-none-match"), 0, -1 },
    [MG_HN_KEEP_ALIVE] = { N("keep-alive"), MG_HNF_HOP, -1 },
    [MG_HN_PROXY_AUTHORIZATION] = { N("proxy-authorization"), 0, MG_H_PROXY_AUTHORIZATION },
    [MG_HN_PROXY_CONNECTION] = { N("proxy-connection"), MG_HNF_HOP, -1 },
    [MG_HN_TE] = { N("te"), MG_HNF_HOP, -1 },
    [MG_HN_TRACEPARENT] = { N("traceparent"), MG_HNF_REQ_DROP, MG_H_TRACEPARENT },
    [MG_HN_TRACESTATE] = { N("tracestate"), 0, -1 },
    [MG_HN_TRAILER] = { N("trailer"), MG_HNF_HOP, -1 },
    [MG_HN_TRANSFER_ENCODING] = { N("transfer-encoding"), MG_HNF_HOP | MG_HNF_FRAMING,
                                  MG_H_TRANSFER_ENCODING },
    [MG_HN_UPGRADE] = { N("upgrade"), MG_HNF_HOP | MG_HNF_FRAMING, MG_H_UPGRADE },
    [MG_HN_X_FORWARDED_FOR] = { N("x-forwarded-for"), MG_HNF_REQ_FORWARDED, MG_H_XFF },
    [MG_HN_X_FORWARDED_HOST] = { N("x-forwarded-host"), MG_HNF_REQ_FORWARDED, -1 },
    [MG_HN_X_FORWARDED_PROTO] = { N("x-forwarded-proto"), MG_HNF_REQ_FORWARDED, -1 },
    [MG_HN_X_HTTP_METHOD] = { N("x-http-method"), MG_HNF_OVERRIDE, -1 },
    [MG_HN_X_HTTP_METHOD_OVERRIDE] = { N("x-http-method-override"), MG_HNF_OVERRIDE, -1 },
    [MG_HN_X_METHOD_OVERRIDE] = { N("x-method-override"), MG_HNF_OVERRIDE, -1 },
    [MG_HN_X_ORIGINAL_URL] = { N("x-original-url"), MG_HNF_OVERRIDE, -1 },
    [MG_HN_X_REQUEST_ID] = { N("x-request-id"), MG_HNF_RES_DROP, MG_H_REQUEST_ID },
    [MG_HN_X_REWRITE_URL] = { N("x-rewrite-url"), MG_HNF_OVERRIDE, -1 },
};
#undef N

/* Is n (len bytes, any case) the table's name of tok? A word at a time:
 * OR-ing 0x20 into each byte folds A-Z to a-z and leaves the table's other
 * characters ('-', digits) as they are; the only other bytes it would fold
 * onto them are control characters, which no token holds. */
static inline uint64_t ld8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t ld4(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline __attribute__((always_inline)) int is(const char *n, size_t len, int tok)
{
    const char *t = mg_hnames[tok].name;
    const uint64_t f8 = 0x2020202020202020ull;
    const uint32_t f4 = 0x20202020u;
    if (len >= 8) { /* whole words, the last one overlapping */
        for (size_t i = 0; i + 8 < len; i += 8)
            if ((ld8(n + i) | f8) != ld8(t + i))
                return 0;
        return (ld8(n + len - 8) | f8) == ld8(t + len - 8);
    }
    if (len >= 4)
        return (ld4(n) | f4) == ld4(t) && (ld4(n + len - 4) | f4) == ld4(t + len - 4);
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)n[i] | 0x20) != (unsigned char)t[i])
            return 0;
    return 1;
}

int mg_hname_is(const char *n, size_t len, int tok)
{
    return is(n, len, tok);
}

#define ONE(a) return is(n, len, a) ? a : MG_HN_OTHER
#define TWO(a, b) return is(n, len, a) ? a : is(n, len, b) ? b : MG_HN_OTHER
#define THREE(a, b, c) return is(n, len, a) ? a : is(n, len, b) ? b : is(n, len, c) ? c : MG_HN_OTHER

int mg_hname_lookup(const char *n, size_t len)
{
    switch (len) {
    case 2: ONE(MG_HN_TE);
    case 4: ONE(MG_HN_HOST);
    case 5: ONE(MG_HN_CLOSE);
    case 6: ONE(MG_HN_EXPECT);
    case 7: TWO(MG_HN_UPGRADE, MG_HN_TRAILER);
    case 9: ONE(MG_HN_FORWARDED);
    case 10: THREE(MG_HN_CONNECTION, MG_HN_KEEP_ALIVE, MG_HN_TRACESTATE);
    case 11: ONE(MG_HN_TRACEPARENT);
    case 12: TWO(MG_HN_CONTENT_TYPE, MG_HN_X_REQUEST_ID);
    case 13:
        if (is(n, len, MG_HN_AUTHORIZATION))
            return MG_HN_AUTHORIZATION;
        THREE(MG_HN_IF_NONE_MATCH, MG_HN_X_HTTP_METHOD, MG_HN_X_REWRITE_URL);
    case 14: THREE(MG_HN_CONTENT_LENGTH, MG_HN_HTTP2_SETTINGS, MG_HN_X_ORIGINAL_URL);
    case 15: ONE(MG_HN_X_FORWARDED_FOR);
    case 16: TWO(MG_HN_PROXY_CONNECTION, MG_HN_X_FORWARDED_HOST);
    case 17:
        if (is(n, len, MG_HN_TRANSFER_ENCODING))
            return MG_HN_TRANSFER_ENCODING;
        THREE(MG_HN_X_FORWARDED_PROTO, MG_HN_IF_MODIFIED_SINCE, MG_HN_X_METHOD_OVERRIDE);
    case 19: ONE(MG_HN_PROXY_AUTHORIZATION);
    case 22: ONE(MG_HN_X_HTTP_METHOD_OVERRIDE);
    default: return MG_HN_OTHER;
    }
}

int mg_hname_check(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || len >= cap)
        return MG_STR_BAD;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!mg_hname_tchar[c])
            return MG_STR_BAD;
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    return MG_STR_VALUE;
}
