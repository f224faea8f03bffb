/* trace.c: W3C Trace Context (see trace.h).
 *
 * Ids come from splitmix64, one state per worker seeded from getrandom():
 * they must be unique across gateways and hard to collide, not secret.
 */
#include "trace.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

static int lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

static int hex_value(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

/* "vv-<32 trace id>-<16 parent id>-ff": version 00 is exactly that; a
 * later version may add fields after a '-' (W3C 4.3, future versions). */
int mg_trace_parse(const char *v, size_t n, char trace_id[MG_TRACE_ID_HEX], char flags[2])
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return -1;
    if (!lower_hex(v, 2) || (v[0] == 'f' && v[1] == 'f'))
        return -1;
    int version00 = v[0] == '0' && v[1] == '0';
    if ((version00 && n != 55) || (!version00 && n > 55 && v[55] != '-'))
        return -1;
    if (!lower_hex(v + 3, 32) || all_zero(v + 3, 32) || !lower_hex(v + 36, 16) ||
        all_zero(v + 36, 16) || !lower_hex(v + 53, 2))
        return -1;
    memcpy(trace_id, v + 3, MG_TRACE_ID_HEX);
    /* only the sampled bit is defined; others are not passed on */
    flags[0] = '0';
    flags[1] = (hex_value(v[54]) & 1) ? '1' : '0';
    return 0;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* "00".."ff": one lookup writes two hex digits */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void mg_trace_random_hex(uint64_t *rng, char *out, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        uint64_t x;
        do /* no zero word, so never an all-zero (invalid) id */
            x = splitmix64(rng);
        while (x == 0);
        size_t m = n - i < 16 ? n - i : 16;
        for (size_t j = 0; j + 1 < m; j += 2, x >>= 8)
            memcpy(out + i + j, &hex_pairs[(x & 0xff) * 2], 2);
        if (m & 1)
            out[i + m - 1] = hex_pairs[(x & 0xf) * 2 + 1];
    }
}

uint64_t mg_trace_seed(void)
{
    uint64_t s;
    if (getrandom(&s, sizeof(s), 0) == (ssize_t)sizeof(s))
        return s;
    struct timespec ts; /* no entropy yet: the clock still differs per process */
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec;
}
