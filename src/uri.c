/* uri.c: request-target path normalisation and Host syntax (see uri.h for
 * the contract), and the host syntax of the config (mg_ffi_host_kind: the
 * one rule for listen, upstream target and route hosts).
 *
 * This is a security boundary: routes, strip_prefix and rewrites all look at
 * the normalised path only, so every way of spelling a path that reaches a
 * different route than it appears to ("/public/../admin", "//admin",
 * "/%2e%2e/admin", "/admin%2F..") must be resolved or rejected here, once.
 *
 * One pass over the input, writing into `out` as we go; no allocation. The
 * output is never longer than the input: every byte written stands for at
 * least one byte read, so `out` may be the caller's len + 1 buffer.
 *
 * Decoding happens exactly once, and only for unreserved characters (and,
 * when asked, for the escaped slashes %2F and %5C), so "%2F" otherwise stays
 * a byte of its segment and "%252e" stays "%252e" (the "%25" is kept, the
 * "2e" after it is plain text). Dot-segment detection runs on the decoded
 * segment, so "%2e%2E" is "..". What an escaped slash left in the result
 * means is decided by the caller (the escaped_slashes option) with
 * mg_uri_escaped_slashes, which looks at the result, so that escapes pieced
 * together by decoding ("%25%32%46" is "%252F") are seen too.
 */
#include "uri.h"
#include "mg_ffi.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

/* Value of hex digit c, or -1. */
static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 unreserved: ALPHA DIGIT "-" "." "_" "~". */
/* RFC 3986 character classes, one lookup per byte (Host and paths are
 * checked on every request) */
enum { URI_UNRESERVED = 1, URI_SUB_DELIM = 2 };
static const unsigned char uri_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 2, 0, 0, 2, 0, 2, 2, 2, 2, 2, 2, 2, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 0, 2, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static int unreserved(unsigned char c)
{
    return uri_class[c] & URI_UNRESERVED;
}

/* Length of the separator at in[i]: 1 for '/', 3 for an escaped slash
 * being decoded, 0 for none. */
static size_t sep_at(const char *in, size_t i, size_t len, int flags)
{
    if (in[i] == '/')
        return 1;
    if ((flags & MG_URI_DECODE_SLASHES) && in[i] == '%' && len - i >= 3 &&
        ((in[i + 1] == '2' && (in[i + 2] == 'F' || in[i + 2] == 'f')) ||
         (in[i + 1] == '5' && (in[i + 2] == 'C' || in[i + 2] == 'c'))))
        return 3;
    return 0;
}

int mg_uri_normalize_path(const char *in, size_t len, char *out, size_t *out_len, int flags)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 1, o = 1, n;

    if (len == 0 || in[0] != '/')
        return -1;
    out[0] = '/';

    /* Invariant at the top of the loop: out[0..o) ends with '/', and in[i] is
     * the first byte after a separator (or i == len). */
    while (i < len) {
        size_t seg;

        while (i < len && (n = sep_at(in, i, len, flags)) > 0) /* "//" collapses */
            i += n;
        if (i == len)
            break;

        seg = o;
        while (i < len && sep_at(in, i, len, flags) == 0) {
            unsigned char c = (unsigned char)in[i];

            if (c == '%') {
                int hi, lo;

                if (len - i < 3 || (hi = hexval((unsigned char)in[i + 1])) < 0 ||
                    (lo = hexval((unsigned char)in[i + 2])) < 0)
                    return -1; /* "%", "%4", "%G1" */
                c = (unsigned char)(hi << 4 | lo);
                if (unreserved(c)) {
                    out[o++] = (char)c;
                } else { /* kept encoded, canonical upper-case hex */
                    out[o++] = '%';
                    out[o++] = hex[hi];
                    out[o++] = hex[lo];
                }
                i += 3;
                continue;
            }
            if (c < 0x20 || c >= 0x7f || c == '\\' || c == '#')
                return -1; /* NUL, controls, DEL, raw 8-bit, backslash, and a
                              fragment, which an upstream would cut off */
            out[o++] = (char)c;
            i++;
        }

        n = o - seg;
        if (n == 1 && out[seg] == '.') {
            o = seg; /* "." : drop it, keep the '/' before it */
        } else if (n == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1)
                return -1; /* ".." above the root */
            /* drop ".." and the segment before it, keep the '/' before that */
            o = seg - 1;
            while (out[o - 1] != '/')
                o--;
        } else if ((n >= 2 && out[seg] == '.' && out[seg + 1] == ';') ||
                   (n >= 3 && out[seg] == '.' && out[seg + 1] == '.' && out[seg + 2] == ';')) {
            return -1; /* ".;x", "..;x": a dot segment to a server that strips ";..." */
        } else if (i < len) {
            out[o++] = '/'; /* in[i] is a separator: one, the rest collapse */
        }
    }

    out[o] = '\0';
    *out_len = o;
    return 0;
}

/* Is p[0..2) the hex of '/' or '\' (any case)? */
static int slash_hex(const char *p)
{
    return (p[0] == '2' && (p[1] == 'F' || p[1] == 'f')) ||
           (p[0] == '5' && (p[1] == 'C' || p[1] == 'c'));
}

/* Overlong UTF-8 forms of '/' and '\\', which lax decoders (old IIS, some
 * Java stacks) turn into a separator. Canonical hex, as normalised. */
static const char *const overlong[] = { "%C0%AF", "%C1%9C", "%E0%80%AF", "%E0%81%9C",
                                        "%F0%80%80%AF", "%F0%80%81%9C" };

int mg_uri_escaped_slashes(const char *path, size_t len)
{
    const char *p = memchr(path, '%', len), *end = path + len;
    int found = 0;

    /* In a normalised path every '%' starts a valid escape. */
    for (; p != NULL && end - p >= 3; p = memchr(p + 1, '%', (size_t)(end - p - 1))) {
        if (p[1] >= 'C') {
            for (size_t k = 0; k < sizeof(overlong) / sizeof(overlong[0]); k++) {
                size_t n = strlen(overlong[k]);
                if ((size_t)(end - p) >= n && memcmp(p, overlong[k], n) == 0)
                    found |= MG_URI_NESTED_SLASH;
            }
        } else if (slash_hex(p + 1)) {
            found |= MG_URI_ESCAPED_SLASH;
        } else if (p[1] == '2' && p[2] == '5') {
            /* "%25" then "25"* then "2F"/"5C": a slash after more decodings */
            const char *q = p + 3;
            while (end - q >= 2 && q[0] == '2' && q[1] == '5')
                q += 2;
            if (end - q >= 2 && slash_hex(q))
                found |= MG_URI_NESTED_SLASH;
        }
    }
    return found;
}

/* indexed by mg_slashes_t; INHERIT has no name a config may write */
static const char *const slashes_names[] = {
    [MG_SLASHES_REJECT] = "reject", [MG_SLASHES_DECODE] = "decode",
    [MG_SLASHES_REDIRECT] = "redirect", [MG_SLASHES_KEEP] = "keep",
};

int mg_uri_slashes_mode(const char *name)
{
    for (int i = MG_SLASHES_REJECT; i <= MG_SLASHES_KEEP; i++)
        if (strcmp(name, slashes_names[i]) == 0)
            return i;
    return -1;
}

const char *mg_uri_slashes_name(int mode)
{
    return mode >= MG_SLASHES_REJECT && mode <= MG_SLASHES_KEEP ? slashes_names[mode] : "reject";
}

/* RFC 3986 sub-delims. */
static int sub_delim(unsigned char c)
{
    return uri_class[c] & URI_SUB_DELIM;
}

/* "[" IPv6address / IPvFuture "]", without the brackets. */
static int ip_literal(const char *s, size_t n)
{
    char buf[64];
    unsigned char a[16];
    size_t i = 1;

    if (n > 0 && (s[0] == 'v' || s[0] == 'V')) {
        /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
        while (i < n && hexval((unsigned char)s[i]) >= 0)
            i++;
        if (i == 1 || i >= n - 1 || s[i] != '.')
            return 0;
        for (i++; i < n; i++)
            if (!unreserved((unsigned char)s[i]) && !sub_delim((unsigned char)s[i]) &&
                s[i] != ':')
                return 0;
        return 1;
    }
    /* a NUL would end the text inet_pton reads: "[::\0x]" is no literal */
    if (n == 0 || n >= sizeof(buf) || memchr(s, '\0', n))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, a) == 1;
}

int mg_uri_valid_host(const char *s, size_t n)
{
    size_t i = 0;

    if (n > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (rb == NULL || !ip_literal(s + 1, (size_t)(rb - s - 1)))
            return 0;
        i = (size_t)(rb - s) + 1;
    } else {
        /* reg-name = *( unreserved / pct-encoded / sub-delims ); an IPv4
         * address is one */
        while (i < n && s[i] != ':') {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (n - i < 3 || hexval((unsigned char)s[i + 1]) < 0 ||
                    hexval((unsigned char)s[i + 2]) < 0)
                    return 0;
                i += 3;
                continue;
            }
            if (!(uri_class[c] & (URI_UNRESERVED | URI_SUB_DELIM)))
                return 0;
            i++;
        }
    }
    if (i == n)
        return 1;
    if (s[i] != ':')
        return 0;
    /* port = *DIGIT; we also refuse what no TCP port can be */
    unsigned long port = 0;
    size_t digits = 0;
    for (i++; i < n; i++, digits++) {
        if (s[i] < '0' || s[i] > '9' || digits >= 5)
            return 0;
        port = port * 10 + (unsigned long)(s[i] - '0');
    }
    return port <= 65535;
}

/* An RFC 1123 host name: dot-separated labels of 1-63 letters, digits and
 * '-' (and '_', which container names use), none starting or ending with
 * '-'; at most 253 bytes, with an optional trailing '.' (fully qualified).
 * Digits and dots alone are no name: they are a malformed IPv4 address. */
static int host_name(const char *s, size_t n)
{
    size_t i, label = 0;
    int letter = 0;

    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return 0;
    for (i = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : '.';
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
        if (++label > 63 || (label == 1 && c == '-'))
            return 0;
        letter |= !(c >= '0' && c <= '9');
    }
    return letter;
}

int mg_ffi_host_kind(const char *s, size_t n)
{
    char buf[64];
    unsigned char a[16];

    /* a NUL would end the text inet_pton reads */
    if (n == 0 || memchr(s, '\0', n))
        return MG_HOST_BAD;
    if (n < sizeof(buf)) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        if (inet_pton(AF_INET, buf, a) == 1)
            return MG_HOST_IPV4;
        if (inet_pton(AF_INET6, buf, a) == 1)
            return MG_HOST_IPV6;
    }
    return host_name(s, n) ? MG_HOST_NAME : MG_HOST_BAD;
}

int mg_ffi_target_parse(const char *s, size_t len, mg_ffi_target_t *out, const char **why)
{
    static const struct { const char *prefix; uint8_t scheme; uint16_t port; } schemes[] = {
        { "http://", MG_TARGET_HTTP, 80 },
        { "https://", MG_TARGET_HTTPS, 443 },
        { "srv://", MG_TARGET_SRV, 0 },
    };
    uint16_t default_port = 0;
    memset(out, 0, sizeof(*out));
    *why = "";
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t pl = strlen(schemes[i].prefix);
        if (len >= pl && memcmp(s, schemes[i].prefix, pl) == 0) {
            out->scheme = schemes[i].scheme;
            default_port = schemes[i].port;
            s += pl;
            len -= pl;
            break;
        }
    }
    if (out->scheme == MG_TARGET_SRV) {
        /* a name only: the records say the ports */
        if (len == 0 || len >= sizeof(out->host) || mg_ffi_host_kind(s, len) != MG_HOST_NAME) {
            *why = " (srv:// needs a DNS name, e.g. srv://_http._tcp.example.internal)";
            return -1;
        }
        memcpy(out->host, s, len);
        return 0;
    }
    const char *host = s, *port = NULL;
    size_t hl = len, pl = 0;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close || ((size_t)(close - s) + 1 < len && close[1] != ':')) {
            *why = " (bad IPv6 address)";
            return -1;
        }
        host = s + 1;
        hl = (size_t)(close - s) - 1;
        if ((size_t)(close - s) + 1 < len) {
            port = close + 2;
            pl = len - (size_t)(port - s);
        }
        if (mg_ffi_host_kind(host, hl) != MG_HOST_IPV6) {
            *why = " (bad IPv6 address)";
            return -1;
        }
    } else {
        const char *colon = NULL;
        for (size_t i = len; i > 0; i--)
            if (s[i - 1] == ':') {
                colon = s + i - 1;
                break;
            }
        if (colon) {
            hl = (size_t)(colon - s);
            port = colon + 1;
            pl = len - hl - 1;
        }
        if (memchr(host, ':', hl)) {
            *why = " (IPv6 addresses need [brackets])";
            return -1;
        }
        if (hl == 0) {
            *why = " (missing host)";
            return -1;
        }
        if (mg_ffi_host_kind(host, hl) == MG_HOST_BAD) {
            *why = " (bad host)";
            return -1;
        }
    }
    if (!port && !default_port) {
        *why = " (missing \":port\")";
        return -1;
    }
    unsigned long pv = default_port;
    if (port) {
        pv = 0;
        for (size_t i = 0; i < pl && pv <= 65535; i++) {
            if (port[i] < '0' || port[i] > '9') {
                pv = 0;
                break;
            }
            pv = pv * 10 + (unsigned long)(port[i] - '0');
        }
        if (pl == 0)
            pv = 0;
    }
    if (pv < 1 || pv > 65535) {
        *why = " (port 1-65535)";
        return -1;
    }
    if (hl >= sizeof(out->host)) {
        *why = " (bad host)";
        return -1;
    }
    memcpy(out->host, host, hl);
    out->port = (uint16_t)pv;
    return 0;
}

int mg_uri_host_check(const char *s, size_t len, char *out, size_t cap)
{
    /* "[::1]": the brackets of a URL, around an IPv6 address only */
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
        if (mg_ffi_host_kind(s, len) != MG_HOST_IPV6)
            return MG_STR_BAD;
    } else if (mg_ffi_host_kind(s, len) == MG_HOST_BAD) {
        return MG_STR_BAD;
    }
    if (len >= cap)
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}

int mg_uri_path_check(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || s[0] != '/' || len >= cap)
        return MG_STR_BAD;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] == 0x7f)
            return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}

int mg_uri_url_parse(const char *url, size_t len, mg_url_t *u, const char **err)
{
    memset(u, 0, sizeof(*u));
    u->https = len >= 8 && strncmp(url, "https://", 8) == 0;
    if (!u->https && (len < 7 || strncmp(url, "http://", 7) != 0)) {
        *err = "url must start with http:// or https://";
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f) {
            *err = "url has spaces or control characters";
            return -1;
        }
    const char *h = url + (u->https ? 8 : 7), *end = url + len;
    const char *slash = memchr(h, '/', (size_t)(end - h));
    const char *hend = slash ? slash : end;
    u->authority = h;
    u->authority_len = (size_t)(hend - h);
    const char *colon;
    if (h < hend && *h == '[') { /* an IPv6 address: its colons are not the port's */
        const char *close = memchr(h, ']', (size_t)(hend - h));
        if (!close || (close + 1 < hend && close[1] != ':')) {
            *err = "url has a bad [IPv6] host";
            return -1;
        }
        u->host = h + 1;
        u->host_len = (size_t)(close - h - 1);
        colon = close + 1 < hend ? close + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(hend - h));
        u->host = h;
        u->host_len = (size_t)((colon ? colon : hend) - h);
    }
    if (memchr(h, '@', (size_t)(hend - h)) || memchr(url, '#', len)) {
        *err = "url has user info or a fragment";
        return -1;
    }
    u->port = u->https ? 443 : 80;
    if (colon) {
        long pv = 0;
        for (const char *q = colon + 1; q < hend; q++) {
            if (*q < '0' || *q > '9' || pv > 65535) {
                *err = "bad port in url";
                return -1;
            }
            pv = pv * 10 + (*q - '0');
        }
        if (pv < 1 || pv > 65535) {
            *err = "bad port in url";
            return -1;
        }
        u->port = (uint16_t)pv;
        u->port_given = 1;
    }
    if (u->host_len == 0) {
        *err = "url has no host";
        return -1;
    }
    u->path = slash ? slash : "/";
    u->path_len = slash ? (size_t)(end - slash) : 1;
    return 0;
}

int mg_uri_base_url_check(const char *s, size_t len, char *out, size_t cap)
{
    mg_url_t u;
    const char *why;
    char host[256];
    while (len > 0 && s[len - 1] == '/')
        len--;
    if (mg_uri_url_parse(s, len, &u, &why) < 0 || memchr(s, '?', len) || len >= cap ||
        u.host_len >= sizeof(host))
        return MG_STR_BAD;
    memcpy(host, u.host, u.host_len);
    host[u.host_len] = '\0';
    if (mg_ffi_host_kind(host, u.host_len) == MG_HOST_BAD)
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}
