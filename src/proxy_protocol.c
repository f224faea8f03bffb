/* proxy_protocol.c: PROXY protocol v1/v2 parsing (contract in
 * proxy_protocol.h). Section numbers are those of proxy-protocol.txt. */
#include "proxy_protocol.h"

#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[6] = "PROXY ";

#define V2_MAX (16 + 65535)

static int fail(const char **err, const char *why)
{
    if (err)
        *err = why;
    return MG_PP_ERROR;
}

/* ---- v1 (2.1) ---------------------------------------------------------- */

/* The next space-separated token of [*p, end): must be non-empty. */
static int token(const char **p, const char *end, const char **t, size_t *tn)
{
    const char *s = *p, *sp = memchr(s, ' ', (size_t)(end - s));
    const char *e = sp ? sp : end;
    if (e == s)
        return -1;
    *t = s;
    *tn = (size_t)(e - s);
    *p = sp ? sp + 1 : end;
    return 0;
}

static int v1_port(const char *t, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && t[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(t[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static int v1_addr(const char *t, size_t n, int v6, mg_addr_t *out)
{
    /* the announced family decides the form (no "::ffff:a.b.c.d" for TCP4,
     * no dotted quad for TCP6) */
    if ((memchr(t, ':', n) != NULL) != v6 || mg_addr_parse(t, n, out) != 0)
        return -1;
    return v6 || mg_addr_is_v4(out) ? 0 : -1;
}

static int parse_v1(const uint8_t *buf, size_t n, mg_pp_header_t *h, const char **err)
{
    size_t scan = n < MG_PP_V1_MAX ? n : MG_PP_V1_MAX;
    const uint8_t *lf = memchr(buf, '\n', scan);
    if (!lf)
        return n >= MG_PP_V1_MAX ? fail(err, "PROXY v1: no CRLF within 107 bytes") : MG_PP_AGAIN;
    size_t end = (size_t)(lf - buf);
    if (end < 7 || buf[end - 1] != '\r')
        return fail(err, "PROXY v1: a line feed without carriage return");
    const char *p = (const char *)buf + sizeof v1_sig, *e = (const char *)buf + end - 1;
    for (const char *q = p; q < e; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
            return fail(err, "PROXY v1: a control or non-ASCII byte in the line");
    h->version = 1;
    h->transport = MG_PP_STREAM;
    h->len = end + 1;
    const char *t;
    size_t tn;
    if (token(&p, e, &t, &tn) != 0)
        return fail(err, "PROXY v1: no protocol after \"PROXY \"");
    if (tn == 7 && memcmp(t, "UNKNOWN", 7) == 0) {
        /* the rest of the line is ignored, as the spec says (2.1) */
        h->command = MG_PP_LOCAL;
        h->family = MG_PP_AF_UNSPEC;
        return (int)h->len;
    }
    int v6;
    if (tn == 4 && memcmp(t, "TCP4", 4) == 0)
        v6 = 0;
    else if (tn == 4 && memcmp(t, "TCP6", 4) == 0)
        v6 = 1;
    else
        return fail(err, "PROXY v1: the protocol is not TCP4, TCP6 or UNKNOWN");
    h->command = MG_PP_PROXY;
    h->family = v6 ? MG_PP_AF_INET6 : MG_PP_AF_INET;
    if (token(&p, e, &t, &tn) != 0 || v1_addr(t, tn, v6, &h->src) != 0)
        return fail(err, "PROXY v1: a bad source address for the protocol");
    if (token(&p, e, &t, &tn) != 0 || v1_addr(t, tn, v6, &h->dst) != 0)
        return fail(err, "PROXY v1: a bad destination address for the protocol");
    if (token(&p, e, &t, &tn) != 0 || v1_port(t, tn, &h->src_port) != 0)
        return fail(err, "PROXY v1: a bad source port (0-65535, no leading zero)");
    /* the last token runs to the CR: a trailing or double space is refused
     * by token() as an empty token or by the check below */
    if (p >= e || memchr(p, ' ', (size_t)(e - p)) || v1_port(p, (size_t)(e - p), &h->dst_port))
        return fail(err, "PROXY v1: a bad destination port, or more after it");
    h->has_addr = 1;
    return (int)h->len;
}

/* ---- v2 (2.2) ---------------------------------------------------------- */

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= p ? p[i] : 0; /* p NULL: n zero bytes */
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc;
}

uint32_t mg_pp_crc32c(const uint8_t *p, size_t n)
{
    return ~crc_update(0xFFFFFFFFu, p, n);
}

/* The CRC of the whole header with the 4 bytes at off zeroed (2.2.1). */
static uint32_t crc_without(const uint8_t *buf, size_t len, size_t off)
{
    uint32_t crc = crc_update(0xFFFFFFFFu, buf, off);
    crc = crc_update(crc, NULL, 4);
    return ~crc_update(crc, buf + off + 4, len - off - 4);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Walks TLVs in [from, to): each exactly inside. Calls back nothing: the
 * caller loops with next_tlv. */
static int next_tlv(const uint8_t *buf, size_t *pos, size_t to, mg_pp_tlv_t *t)
{
    if (to - *pos < 3)
        return -1;
    size_t len = (size_t)buf[*pos + 1] << 8 | buf[*pos + 2];
    if (len > to - *pos - 3)
        return -1;
    t->type = buf[*pos];
    t->off = (uint32_t)(*pos + 3);
    t->len = (uint16_t)len;
    *pos += 3 + len;
    return 0;
}

static int check_ssl(const uint8_t *buf, const mg_pp_tlv_t *t, mg_pp_header_t *h, const char **err)
{
    if (t->len < 5)
        return fail(err, "PROXY v2: an SSL TLV shorter than its 5-byte head");
    h->ssl_client = buf[t->off];
    h->ssl_verify = be32(buf + t->off + 1);
    size_t pos = t->off + 5, end = t->off + (size_t)t->len;
    mg_pp_tlv_t sub;
    while (pos < end)
        if (next_tlv(buf, &pos, end, &sub) != 0)
            return fail(err, "PROXY v2: an SSL sub-TLV runs past its TLV");
    return 0;
}

/* Types that mean one thing and so may appear once. */
static int single(uint8_t type)
{
    return type == MG_PP2_TYPE_ALPN || type == MG_PP2_TYPE_AUTHORITY ||
           type == MG_PP2_TYPE_CRC32C || type == MG_PP2_TYPE_UNIQUE_ID || type == MG_PP2_TYPE_SSL ||
           type == MG_PP2_TYPE_NETNS;
}

static int parse_tlvs(const uint8_t *buf, size_t pos, size_t total, mg_pp_header_t *h,
                      const char **err)
{
    mg_pp_tlv_t t;
    while (pos < total) {
        if (next_tlv(buf, &pos, total, &t) != 0)
            return fail(err, "PROXY v2: a TLV runs past the header's length");
        if (h->ntlvs == MG_PP_MAX_TLVS)
            return fail(err, "PROXY v2: more than 16 TLVs");
        if (single(t.type) && mg_pp_tlv(h, t.type))
            return fail(err, "PROXY v2: the same TLV type twice");
        if (t.type == MG_PP2_TYPE_UNIQUE_ID && t.len > 128)
            return fail(err, "PROXY v2: a UNIQUE_ID longer than 128 bytes");
        if (t.type == MG_PP2_TYPE_CRC32C &&
            (t.len != 4 || crc_without(buf, total, t.off) != be32(buf + t.off)))
            return fail(err, "PROXY v2: the CRC32C does not match the header");
        if (t.type == MG_PP2_TYPE_SSL && check_ssl(buf, &t, h, err) != 0)
            return MG_PP_ERROR;
        h->tlvs[h->ntlvs++] = t;
    }
    return 0;
}

static int parse_v2(const uint8_t *buf, size_t n, size_t max_len, mg_pp_header_t *h,
                    const char **err)
{
    if (n > 12 && buf[12] >> 4 != 2)
        return fail(err, "PROXY v2: version is not 2");
    if (n > 12 && (buf[12] & 0xf) > MG_PP_PROXY)
        return fail(err, "PROXY v2: the command is neither LOCAL nor PROXY");
    if (n > 13 && (buf[13] >> 4 > MG_PP_AF_UNIX || (buf[13] & 0xf) > MG_PP_DGRAM))
        return fail(err, "PROXY v2: an unknown address family or transport");
    if (n < 16)
        return MG_PP_AGAIN;
    size_t total = 16 + ((size_t)buf[14] << 8 | buf[15]);
    if (total > max_len)
        return fail(err, "PROXY v2: the header is longer than this listener accepts");
    if (n < total)
        return MG_PP_AGAIN;
    h->version = 2;
    h->command = buf[12] & 0xf;
    h->family = buf[13] >> 4;
    h->transport = buf[13] & 0xf;
    h->len = total;
    static const size_t addr_len[] = {0, 12, 36, 216};
    size_t alen = addr_len[h->family];
    if (total - 16 < alen)
        return fail(err, "PROXY v2: the address block is shorter than its family's");
    const uint8_t *a = buf + 16;
    if (h->command == MG_PP_PROXY && h->family == MG_PP_AF_INET) {
        mg_addr_from_v4(a, &h->src);
        mg_addr_from_v4(a + 4, &h->dst);
        a += 8;
        h->has_addr = 1;
    } else if (h->command == MG_PP_PROXY && h->family == MG_PP_AF_INET6) {
        memcpy(h->src.b, a, 16);
        memcpy(h->dst.b, a + 16, 16);
        a += 32;
        h->has_addr = 1;
    }
    if (h->has_addr) {
        h->src_port = (uint16_t)(a[0] << 8 | a[1]);
        h->dst_port = (uint16_t)(a[2] << 8 | a[3]);
    }
    /* LOCAL, UNSPEC and AF_UNIX: the address is skipped, never used */
    if (parse_tlvs(buf, 16 + alen, total, h, err) != 0)
        return MG_PP_ERROR;
    return (int)total;
}

int mg_pp_parse(const uint8_t *buf, size_t n, size_t max_len, mg_pp_header_t *h, const char **err)
{
    memset(h, 0, sizeof *h);
    if (max_len == 0 || max_len > V2_MAX)
        max_len = V2_MAX;
    if (n == 0)
        return MG_PP_AGAIN;
    /* decide on the bytes there are, so that a client speaking plain HTTP
     * is refused at its first byte instead of waiting for 16 */
    size_t k1 = n < sizeof v1_sig ? n : sizeof v1_sig, k2 = n < sizeof v2_sig ? n : sizeof v2_sig;
    if (memcmp(buf, v2_sig, k2) == 0)
        return n < sizeof v2_sig ? MG_PP_AGAIN : parse_v2(buf, n, max_len, h, err);
    if (memcmp(buf, v1_sig, k1) == 0)
        return n < sizeof v1_sig ? MG_PP_AGAIN : parse_v1(buf, n, h, err);
    return fail(err, "not a PROXY protocol header");
}

const mg_pp_tlv_t *mg_pp_tlv(const mg_pp_header_t *h, uint8_t type)
{
    for (unsigned i = 0; i < h->ntlvs; i++)
        if (h->tlvs[i].type == type)
            return &h->tlvs[i];
    return NULL;
}

int mg_pp_ssl_sub(const mg_pp_header_t *h, const uint8_t *buf, uint8_t type, mg_pp_tlv_t *out)
{
    const mg_pp_tlv_t *ssl = mg_pp_tlv(h, MG_PP2_TYPE_SSL);
    if (!ssl)
        return -1;
    size_t pos = ssl->off + 5, end = ssl->off + (size_t)ssl->len;
    while (pos < end && next_tlv(buf, &pos, end, out) == 0)
        if (out->type == type)
            return 0;
    return -1;
}
