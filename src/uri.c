/* uri.c: request-target path normalisation (see uri.h for the contract).
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
 * Decoding happens exactly once, and only for unreserved characters, so a
 * "%2F" stays a byte of its segment (never a separator) and "%252e" stays
 * "%252e" (the "%25" is kept, the "2e" after it is plain text). Dot-segment
 * detection runs on the decoded segment, so "%2e%2E" is "..".
 */
#include "uri.h"

#include <stdint.h>

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
static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

int mg_uri_normalize_path(const char *in, size_t len, char *out, size_t *out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 1, o = 1;

    if (len == 0 || in[0] != '/')
        return -1;
    out[0] = '/';

    /* Invariant at the top of the loop: out[0..o) ends with '/', and in[i] is
     * the first byte after a '/' (or i == len). */
    while (i < len) {
        size_t seg;

        while (i < len && in[i] == '/') /* "//" collapses */
            i++;
        if (i == len)
            break;

        seg = o;
        while (i < len && in[i] != '/') {
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
            if (c < 0x20 || c >= 0x7f || c == '\\')
                return -1; /* NUL, controls, DEL, raw 8-bit, backslash */
            out[o++] = (char)c;
            i++;
        }

        if (o - seg == 1 && out[seg] == '.') {
            o = seg; /* "." : drop it, keep the '/' before it */
        } else if (o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1)
                return -1; /* ".." above the root */
            /* drop ".." and the segment before it, keep the '/' before that */
            o = seg - 1;
            while (out[o - 1] != '/')
                o--;
        } else if (i < len) {
            out[o++] = '/'; /* in[i] == '/': one separator, the rest collapse */
        }
    }

    out[o] = '\0';
    *out_len = o;
    return 0;
}
