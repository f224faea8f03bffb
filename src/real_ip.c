/* real_ip.c: the client address behind trusted proxies (contract and the
 * nginx rule it follows in real_ip.h). */
#include "real_ip.h"

#include <string.h>
#include <strings.h>

static int blank(char c)
{
    return c == ' ' || c == '\t';
}

/* A port: 1-5 digits, 1..65535 (ngx_parse_addr_port refuses 0 too). */
static int port_of(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* "ADDR", "V4:PORT", "[V6]" or "[V6]:PORT"; bare V6 when bare_v6. With
 * obf_port, a port that is an obfuscated identifier ("_x") counts as none. */
static int addr_port(const char *s, size_t n, int bare_v6, int obf_port, mg_addr_t *a,
                     uint16_t *port)
{
    *port = 0;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return -1;
        size_t in = (size_t)(close - s - 1), rest = n - in - 2;
        if (!memchr(s + 1, ':', in) || mg_addr_parse(s + 1, in, a) != 0)
            return -1; /* brackets hold IPv6 only */
        if (rest == 0)
            return 0;
        if (close[1] != ':')
            return -1;
        if (obf_port && rest > 1 && close[2] == '_')
            return 0;
        return port_of(close + 2, rest - 1, port);
    }
    const char *colon = memchr(s, ':', n);
    if (colon && memchr(colon + 1, ':', n - (size_t)(colon - s) - 1))
        return bare_v6 ? mg_addr_parse(s, n, a) : -1;
    if (!colon)
        return mg_addr_parse(s, n, a);
    size_t alen = (size_t)(colon - s);
    if (mg_addr_parse(s, alen, a) != 0)
        return -1;
    if (obf_port && n - alen > 2 && colon[1] == '_')
        return 0;
    return port_of(colon + 1, n - alen - 1, port);
}

/* RFC 7230 tchar */
static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

enum { OK = 0, BAD = -1, OPAQUE = -2 };

/* One Forwarded element (the text between commas): the for= node. */
static int forwarded_for(const char *s, size_t n, mg_addr_t *a, uint16_t *port)
{
    const char *val = NULL;
    size_t vlen = 0;
    int quoted = 0, seen = 0;
    size_t i = 0;
    while (i < n) {
        if (s[i] == ';') { /* the ABNF allows empty pairs */
            i++;
            continue;
        }
        size_t k = i;
        while (k < n && tchar((unsigned char)s[k]))
            k++;
        if (k == i || k >= n || s[k] != '=')
            return BAD;
        int is_for = k - i == 3 && strncasecmp(s + i, "for", 3) == 0;
        const char *v = s + k + 1;
        size_t j = k + 1, len;
        int q = j < n && s[j] == '"';
        if (q) { /* quoted-string; a node needs no escapes, so none allowed */
            const char *end = memchr(s + j + 1, '"', n - j - 1);
            if (!end || memchr(s + j + 1, '\\', (size_t)(end - s - j - 1)))
                return BAD;
            v = s + j + 1;
            len = (size_t)(end - v);
            j = (size_t)(end - s) + 1;
        } else {
            while (j < n && tchar((unsigned char)s[j]))
                j++;
            len = j - k - 1;
            if (len == 0)
                return BAD;
        }
        if (is_for) {
            if (seen++)
                return BAD;
            val = v;
            vlen = len;
            quoted = q;
        }
        if (j < n && s[j] != ';')
            return BAD;
        i = j;
    }
    if (!seen)
        return BAD;
    if ((vlen == 7 && strncasecmp(val, "unknown", 7) == 0) || (vlen > 0 && val[0] == '_'))
        return OPAQUE;
    /* unquoted, a node is a bare IPv4 (':' and '[' are not tchar) */
    if (!quoted)
        return addr_port(val, vlen, 0, 0, a, port) == 0 && mg_addr_is_v4(a) ? OK : BAD;
    return addr_port(val, vlen, 0, 1, a, port) == 0 ? OK : BAD;
}

/* The element before `end` in s (scanning backwards to a ',', outside a
 * quoted string when `quotes`: Forwarded has them, X-Forwarded-For not),
 * trimmed of blanks; *end moves to the comma (or 0). Returns 0, or -1 when
 * there is none left. */
static int prev_element(const char *s, size_t *end, int quotes, const char **e, size_t *en)
{
    size_t hi = *end;
    if (hi == 0)
        return -1;
    size_t lo = hi;
    int inq = 0;
    while (lo > 0) {
        char c = s[lo - 1];
        if (c == '"' && quotes) {
            size_t bs = 0; /* a quote after an odd run of '\\' is escaped */
            while (lo - 1 > bs && s[lo - 2 - bs] == '\\')
                bs++;
            if (bs % 2 == 0)
                inq = !inq;
        } else if (c == ',' && !inq) {
            break;
        }
        lo--;
    }
    *end = lo > 0 ? lo - 1 : 0;
    size_t a = lo, b = hi;
    while (a < b && blank(s[a]))
        a++;
    while (b > a && blank(s[b - 1]))
        b--;
    *e = s + a;
    *en = b - a;
    return 0;
}

int mg_real_ip_find(const mg_addr_t *peer, const mg_cidr_set_t *trusted, int header,
                    const mg_real_ip_value_t *values, size_t nvalues, mg_real_ip_t *out)
{
    memset(out, 0, sizeof *out);
    out->addr = *peer;
    if (!mg_cidr_set_contains(trusted, peer, NULL)) {
        out->stop = MG_REAL_IP_NOT_TRUSTED_PEER;
        return MG_REAL_IP_PEER;
    }
    if (nvalues == 0) {
        out->stop = MG_REAL_IP_NO_HEADER;
        return MG_REAL_IP_PEER;
    }
    if (header == MG_REAL_IP_X_REAL_IP && nvalues > 1) {
        out->stop = MG_REAL_IP_MALFORMED;
        return MG_REAL_IP_PEER;
    }
    if (header == MG_REAL_IP_X_REAL_IP) { /* one address, trusted or not */
        const char *s = values[0].p;
        size_t a = 0, b = values[0].n;
        while (a < b && blank(s[a]))
            a++;
        while (b > a && blank(s[b - 1]))
            b--;
        if (addr_port(s + a, b - a, 1, 0, &out->addr, &out->port) != 0) {
            out->addr = *peer;
            out->port = 0;
            out->stop = MG_REAL_IP_MALFORMED;
            return MG_REAL_IP_PEER;
        }
        out->hops = 1;
        out->stop = mg_cidr_set_contains(trusted, &out->addr, NULL) ? MG_REAL_IP_ALL_TRUSTED
                                                                    : MG_REAL_IP_UNTRUSTED;
        return MG_REAL_IP_HEADER;
    }
    out->stop = MG_REAL_IP_ALL_TRUSTED;
    for (size_t v = nvalues; v-- > 0;) {
        const char *s = values[v].p;
        size_t end = values[v].n;
        const char *e;
        size_t en;
        while (prev_element(s, &end, header == MG_REAL_IP_FORWARDED, &e, &en) == 0) {
            mg_addr_t a;
            uint16_t port = 0;
            /* empty elements are skipped (RFC 7230 7, and nginx skips runs
             * of blanks and commas) */
            if (en == 0)
                continue;
            int rc;
            if (header == MG_REAL_IP_FORWARDED)
                rc = forwarded_for(e, en, &a, &port);
            else
                rc = addr_port(e, en, 1, 0, &a, &port) == 0 ? OK : BAD;
            if (rc != OK) {
                out->stop = rc == OPAQUE ? MG_REAL_IP_OPAQUE : MG_REAL_IP_MALFORMED;
                return out->hops ? MG_REAL_IP_HEADER : MG_REAL_IP_PEER;
            }
            out->addr = a;
            out->port = port;
            out->hops++;
            if (!mg_cidr_set_contains(trusted, &a, NULL)) {
                out->stop = MG_REAL_IP_UNTRUSTED;
                return MG_REAL_IP_HEADER;
            }
        }
    }
    if (out->hops == 0)
        out->stop = MG_REAL_IP_NO_HEADER; /* only empty elements */
    return out->hops ? MG_REAL_IP_HEADER : MG_REAL_IP_PEER;
}

int mg_real_ip_header_kind(const char *name, size_t n)
{
    static const struct {
        const char *name;
        int kind;
    } kinds[] = {{"X-Forwarded-For", MG_REAL_IP_XFF},
                 {"Forwarded", MG_REAL_IP_FORWARDED},
                 {"X-Real-IP", MG_REAL_IP_X_REAL_IP}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strlen(kinds[i].name) == n && strncasecmp(kinds[i].name, name, n) == 0)
            return kinds[i].kind;
    return -1;
}

int mg_real_ip_header_parse(const char *name) { return mg_real_ip_header_kind(name, strlen(name)); }

const char *mg_real_ip_header_name(int kind)
{
    return kind == MG_REAL_IP_FORWARDED   ? "Forwarded"
           : kind == MG_REAL_IP_X_REAL_IP ? "X-Real-IP"
                                          : "X-Forwarded-For";
}
