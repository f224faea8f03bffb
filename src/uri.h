/* uri.h: request-target normalisation and authority syntax, done once
 * before routing so that no encoding trick reaches a route it should not.
 * Every path security decision of the gateway is made here. */
#ifndef MG_URI_H
#define MG_URI_H

#include <stddef.h>
#include <stdint.h>

/* Flags of mg_uri_normalize_path. */
enum {
    MG_URI_DECODE_SLASHES = 1, /* %2F and %5C (any case) are '/' separators */
};

/* Normalises an origin-form path (no query; the caller splits at '?'):
 *  - %XX of an unreserved character (ALPHA DIGIT - . _ ~) is decoded; other
 *    escapes are kept, with their hex digits upper-cased; with
 *    MG_URI_DECODE_SLASHES, %2F and %5C become '/' and separate segments
 *    like a raw '/' (so the rules below apply to them too);
 *  - malformed escapes ("%G1", "%4"), NUL, control bytes, bytes >= 0x7f
 *    unescaped, '\\' and '#' (a fragment has no place in a request) are
 *    rejected;
 *  - runs of '/' collapse to one;
 *  - "." segments are removed and ".." removes the previous segment;
 *    a ".." above the root is rejected;
 *  - a "." or ".." segment followed by ';' ("..;x", path parameters that
 *    servers such as Tomcat strip before resolving dots) is rejected.
 * `in` must start with '/'. `out` needs capacity >= len + 1; the result is
 * NUL-terminated and never longer than `in`. Returns 0 and sets *out_len,
 * or -1 (the caller answers 400). */
int mg_uri_normalize_path(const char *in, size_t len, char *out, size_t *out_len, int flags);

/* What mg_uri_escaped_slashes finds in a normalised path. */
enum {
    MG_URI_ESCAPED_SLASH = 1, /* "%2F" or "%5C": a slash to an upstream that decodes */
    MG_URI_NESTED_SLASH = 2,  /* "%252F", "%25252F", ...: one to an upstream that
                                 decodes twice or more; also the overlong UTF-8
                                 "%C0%AF" and "%C1%9C" (and 3- and 4-byte forms) */
};

/* Bit set of the MG_URI_*_SLASH kinds present in normalised `path`; 0 when
 * none (the common case: one memchr for '%'). */
int mg_uri_escaped_slashes(const char *path, size_t len);

/* The escaped_slashes option (listener and route): what a request whose path
 * holds an escaped slash gets. MG_SLASHES_INHERIT is a route without its own
 * value (the listener's applies). */
typedef enum {
    MG_SLASHES_INHERIT = 0,
    MG_SLASHES_REJECT,   /* 400 (the default) */
    MG_SLASHES_DECODE,   /* decoded to '/', normalised again, routed on that */
    MG_SLASHES_REDIRECT, /* 307 to the decoded path */
    MG_SLASHES_KEEP,     /* forwarded as received (upstream must not decode) */
} mg_slashes_t;

/* The mode named `name` ("reject", "decode", "redirect", "keep"), or -1. */
int mg_uri_slashes_mode(const char *name);
/* The name of a mode ("reject" for INHERIT or an unknown one). Static. */
const char *mg_uri_slashes_name(int mode);

/* Is s[0..n) a valid Host field value: RFC 3986 host (reg-name, IPv4, or
 * "[" IPv6 / IPvFuture "]") with an optional ":" port (digits, at most
 * 65535)? An empty value is valid (RFC 9110 7.2). Returns 1 or 0. */
int mg_uri_valid_host(const char *s, size_t n);

/* The config's check of an address to listen on or connect to (a
 * mg_ffi_str_check_fn, see mg_ffi.h): an IPv4 or IPv6 address (inet_pton's
 * forms; IPv6 also in brackets, which are dropped) or a host name
 * (mg_ffi_host_kind). */
int mg_uri_host_check(const char *s, size_t len, char *out, size_t cap);
/* The same for a path the gateway requests itself (a health check): it
 * starts with '/' and holds no space or control byte. */
int mg_uri_path_check(const char *s, size_t len, char *out, size_t cap);

/* An absolute http or https URL, as the gateway requests one (gw.http, the
 * tracing exporter): pieces point into the URL, nothing is copied. */
typedef struct mg_url_s {
    int https;
    const char *host;      /* without brackets for IPv6 */
    size_t host_len;
    const char *authority; /* host[:port] as written, for the Host header */
    size_t authority_len;
    uint16_t port;         /* the scheme's when none is written */
    int port_given;
    const char *path;      /* from the first '/' on (query included); "/" when none */
    size_t path_len;
} mg_url_t;

/* Splits "http[s]://host[:port][/path]" (no user info, no fragment, no
 * space or control byte). Returns 0, or -1 with a static reason in *err
 * ("url must start with http:// or https://", "bad port in url", ...). */
int mg_uri_url_parse(const char *url, size_t len, mg_url_t *u, const char **err);
/* The config's check of a URL paths are appended to (settings.tracing's
 * endpoint; a mg_ffi_str_check_fn): mg_uri_url_parse's form with a host
 * of mg_ffi_host_kind's and no query; a trailing '/' is dropped. */
int mg_uri_base_url_check(const char *s, size_t len, char *out, size_t cap);

#endif
