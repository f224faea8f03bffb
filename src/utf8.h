/* utf8.h: the one UTF-8 rule of the gateway's outputs (RFC 3629): the
 * access log's JSON strings and the label values of user metrics are
 * written as valid UTF-8 whatever bytes they were given.
 */
#ifndef MG_UTF8_H
#define MG_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The length (1-4) of the well-formed UTF-8 sequence at p (n >= 1 bytes
 * readable), or 0 when p does not start one: a stray continuation byte,
 * an overlong form, a surrogate (U+D800..DFFF), a code point above
 * U+10FFFF, or a sequence cut by the end of the input. */
static inline size_t mg_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* the second byte's range (RFC 3629 table) */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* 0x80-0xc1, 0xf5-0xff */
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* U+FFFD, what an ill-formed byte becomes */
#define MG_UTF8_REPLACEMENT "\xef\xbf\xbd"

#endif
