/* trace.c: W3C Trace Context (see trace.h).
 *
 * Ids come from splitmix64, one state per worker seeded from getrandom():
 * they must be unique across gateways and hard to collide, not secret.
 */
#include "trace.h"
#include "mg_ffi.h"

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
int mg_trace_parse(const char *v, size_t n, char trace_id[MG_TRACE_ID_HEX],
                   char parent_id[MG_SPAN_ID_HEX], char flags[2])
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
    if (parent_id)
        memcpy(parent_id, v + 36, MG_SPAN_ID_HEX);
    /* only the sampled bit is defined; others are not passed on */
    flags[0] = '0';
    flags[1] = (hex_value(v[54]) & 1) ? '1' : '0';
    return 0;
}

/* The same parser under its FFI name, for the testing kit. */
int mg_ffi_trace_parse(const char *v, size_t n, char *trace_id, char *flags)
{
    return mg_trace_parse(v, n, trace_id, NULL, flags);
}

#define RANDOM_BITS 56
#define RANDOM_SPAN (UINT64_C(1) << RANDOM_BITS)

uint64_t mg_trace_ratio_threshold(double p)
{
    if (!(p > 0))
        return RANDOM_SPAN; /* never: no 56-bit value reaches it */
    if (p >= 1)
        return 0;
    return (uint64_t)((1.0 - p) * (double)RANDOM_SPAN);
}

int mg_trace_ratio_sampled(const char trace_id[MG_TRACE_ID_HEX], uint64_t threshold)
{
    uint64_t r = 0; /* the last 14 hex digits: 56 bits */
    for (int i = MG_TRACE_ID_HEX - RANDOM_BITS / 4; i < MG_TRACE_ID_HEX; i++)
        r = r << 4 | (uint64_t)hex_value(trace_id[i]);
    return r >= threshold;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 8 hex digits of x, most significant first, in a word's bytes in memory
 * order: the nibbles are spread one per byte, then turned into '0'-'9' or
 * 'a'-'f' all at once (no table, no loop). */
static uint64_t hex8(uint32_t x)
{
    uint64_t v = x;
    v = ((v & 0x000000000000ffffULL) << 32) | (v >> 16);
    v = ((v & 0x000000ff000000ffULL) << 16) | ((v >> 8) & 0x000000ff000000ffULL);
    v = ((v & 0x000f000f000f000fULL) << 8) | ((v >> 4) & 0x000f000f000f000fULL);
    uint64_t letters = ((v + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
    v += 0x3030303030303030ULL + letters * ('a' - '0' - 10);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

void mg_hex16(uint64_t x, char out[16])
{
    uint64_t hi = hex8((uint32_t)(x >> 32)), lo = hex8((uint32_t)x);
    memcpy(out, &hi, 8);
    memcpy(out + 8, &lo, 8);
}

void mg_trace_random_hex(uint64_t *rng, char *out, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        uint64_t x;
        do /* no zero word, so never an all-zero (invalid) id */
            x = splitmix64(rng);
        while (x == 0);
        if (n - i >= 16) {
            mg_hex16(x, out + i);
        } else {
            char last[16];
            mg_hex16(x, last);
            memcpy(out + i, last, n - i);
        }
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

int mg_trace_decide(const char trace_id[MG_TRACE_ID_HEX], int continued, const char flags[2],
                    double sample, int parent_based)
{
    if (continued && parent_based)
        return flags[1] == '1';
    return mg_trace_ratio_sampled(trace_id, mg_trace_ratio_threshold(sample));
}

int mg_ffi_trace_decide(const char *trace_id, int continued, const char *flags, double sample,
                        int parent_based)
{
    return mg_trace_decide(trace_id, continued, flags, sample, parent_based);
}
