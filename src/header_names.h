/* header_names.h: the header names the gateway acts on, as small integer
 * tokens with flags (model: h2o's token.h).
 *
 * mg_hname_lookup() maps a name of any case to its token once, where the
 * header is parsed; every later decision (is it hop-by-hop, does the proxy
 * drop it, does llhttp frame the message by it) is then a table read and an
 * integer compare instead of a string compare per header per decision.
 * The table is constant: any thread may read it.
 */
#ifndef MG_HEADER_NAMES_H
#define MG_HEADER_NAMES_H

#include <stddef.h>
#include <stdint.h>

/* Tokens (0: a name the gateway does not act on). */
enum {
    MG_HN_OTHER = 0,
    MG_HN_AUTHORIZATION,
    MG_HN_CLOSE, /* a header named "close": dropped when Connection lists it */
    MG_HN_CONNECTION,
    MG_HN_CONTENT_LENGTH,
    MG_HN_CONTENT_TYPE,
    MG_HN_EXPECT,
    MG_HN_FORWARDED,
    MG_HN_HOST,
    MG_HN_HTTP2_SETTINGS,
    MG_HN_IF_MODIFIED_SINCE,
    MG_HN_IF_NONE_MATCH,
    MG_HN_KEEP_ALIVE,
    MG_HN_PROXY_AUTHORIZATION,
    MG_HN_PROXY_CONNECTION,
    MG_HN_TE,
    MG_HN_TRACEPARENT,
    MG_HN_TRACESTATE,
    MG_HN_TRAILER,
    MG_HN_TRANSFER_ENCODING,
    MG_HN_UPGRADE,
    MG_HN_X_FORWARDED_FOR,
    MG_HN_X_FORWARDED_HOST,
    MG_HN_X_FORWARDED_PROTO,
    MG_HN_X_HTTP_METHOD,
    MG_HN_X_HTTP_METHOD_OVERRIDE,
    MG_HN_X_METHOD_OVERRIDE,
    MG_HN_X_ORIGINAL_URL,
    MG_HN_X_REQUEST_ID,
    MG_HN_X_REWRITE_URL,
    MG_HN__COUNT
};

/* What a name means to the gateway. */
enum {
    /* RFC 9110 7.6.1: this hop only, never forwarded either way (Upgrade
     * goes on only with a 101 the gateway accepted) */
    MG_HNF_HOP = 1 << 0,
    /* llhttp reads it to frame the message or decide keep-alive: an
     * obs-folded copy is refused, not repaired (proxy.c) */
    MG_HNF_FRAMING = 1 << 1,
    /* never forwarded upstream: the gateway writes its own (framing,
     * traceparent) or acts on it itself (Expect, HTTP2-Settings) */
    MG_HNF_REQ_DROP = 1 << 2,
    /* the client's copy is not forwarded when the upstream gets the
     * gateway's own Forwarded / X-Forwarded-* (upstream `forwarded`) */
    MG_HNF_REQ_FORWARDED = 1 << 3,
    /* rewrites the URL or method for some frameworks: not forwarded unless
     * the upstream says override_headers = true (proxy.c, cache.c) */
    MG_HNF_OVERRIDE = 1 << 4,
    /* never forwarded to the client: the gateway writes its own */
    MG_HNF_RES_DROP = 1 << 5,
};

typedef struct mg_hname_s {
    const char *name; /* lower case */
    uint8_t len;
    uint8_t flags;    /* MG_HNF_* */
    int8_t known;     /* the request's known[] slot (MG_H_*, request.h), or -1 */
} mg_hname_t;

/* 1 for the RFC 9110 tchar bytes (what a header name is made of). */
extern const unsigned char mg_hname_tchar[256];

/* Indexed by token. */
extern const mg_hname_t mg_hnames[MG_HN__COUNT];

/* The token of the header name n/len (any case), MG_HN_OTHER if none. n
 * holds token characters (RFC 9110 tchar), as every parsed name does. */
int mg_hname_lookup(const char *n, size_t len);

/* Is n/len (token characters, any case) the name of tok? Also serves for
 * token values such as "keep-alive" and "close". */
int mg_hname_is(const char *n, size_t len, int tok);

/* The config's check of a header name (a mg_ffi_str_check_fn, mg_ffi.h):
 * RFC 9110 token characters, kept in lower case. */
int mg_hname_check(const char *s, size_t len, char *out, size_t cap);

static inline unsigned mg_hname_flags(int tok) { return mg_hnames[tok].flags; }

#endif
