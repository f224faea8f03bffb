/* real_ip.h: the real client address behind trusted proxies, from
 * X-Forwarded-For, Forwarded (RFC 7239) or X-Real-IP (issue #14:
 * `gw.settings { trusted_proxies = {...}, real_ip_header = ... }`).
 *
 * The rule is nginx's realip module with `real_ip_recursive on`
 * (ngx_http_realip_module.c, ngx_http_get_forwarded_addr_internal in
 * ngx_http_core_module.c): when the socket peer is not trusted, the headers
 * are ignored and the peer is the client (a spoofed header from the
 * internet changes nothing). Otherwise the header's addresses are walked
 * right to left, each header line after the one before it as one list; the
 * first address that is not trusted is the client; when every address is
 * trusted, the leftmost is. An element that is not an address stops the
 * walk, and the last good address (the trusted hop to its right, or the
 * peer) is the client: nginx does the same when ngx_parse_addr_port fails
 * (it returns NGX_DONE with the address found so far), and it is the safe
 * choice, since nothing left of a malformed element can be trusted to have
 * been written by a proxy. RFC 7239 "unknown" and obfuscated identifiers
 * ("_hidden") stop the walk the same way: they name no address to check
 * or to use.
 *
 * Element syntax, strict:
 *   X-Forwarded-For, X-Real-IP: 1.2.3.4, 1.2.3.4:80, ::1, [::1], [::1]:80
 *     (ngx_parse_addr_port's forms), optional blanks around commas;
 *     empty elements are skipped (RFC 7230 section 7).
 *   Forwarded: pairs separated by ';', for= (any case) taken, a token or a
 *     quoted-string: for=1.2.3.4, for="1.2.3.4:80", for="[2001:db8::1]",
 *     for="[2001:db8::1]:443"; an obfuscated port ("_p") is no port; an
 *     element without for=, or with it twice, is malformed.
 *   X-Real-IP is one address, not a list; several X-Real-IP lines are
 *     ambiguous and make the header ignored (the peer is the client).
 *
 * Nothing is allocated; the values are read, never kept. Any thread. */
#ifndef MG_REAL_IP_H
#define MG_REAL_IP_H

#include <stddef.h>
#include <stdint.h>
#include "cidr.h"

enum { MG_REAL_IP_XFF = 0, MG_REAL_IP_FORWARDED = 1, MG_REAL_IP_X_REAL_IP = 2 };

/* where the answer came from (the return value) */
enum { MG_REAL_IP_PEER = 0, MG_REAL_IP_HEADER = 1 };

/* why the walk ended (mg_real_ip_t.stop) */
enum {
    MG_REAL_IP_NOT_TRUSTED_PEER = 0, /* headers ignored */
    MG_REAL_IP_NO_HEADER,            /* trusted peer, no header line */
    MG_REAL_IP_UNTRUSTED,            /* found an untrusted hop: the client */
    MG_REAL_IP_ALL_TRUSTED,          /* every hop trusted: the leftmost */
    MG_REAL_IP_MALFORMED,            /* an element is not an address */
    MG_REAL_IP_OPAQUE,               /* Forwarded "unknown" or "_obfuscated" */
};

typedef struct mg_real_ip_value_s {
    const char *p; /* one header line's value, as received */
    size_t n;
} mg_real_ip_value_t;

typedef struct mg_real_ip_s {
    mg_addr_t addr;
    uint16_t port; /* the header element's port; 0 when it had none or
                      the answer is the peer (whose port the caller has) */
    int stop;      /* MG_REAL_IP_* above: for the debug log */
    unsigned hops; /* header addresses accepted on the way */
} mg_real_ip_t;

/* The client address of a request whose socket peer is `peer`, with the
 * `header` kind's lines values[0..nvalues) in the order received. trusted
 * may be NULL (nothing trusted). Fills *out; returns MG_REAL_IP_PEER or
 * MG_REAL_IP_HEADER. */
int mg_real_ip_find(const mg_addr_t *peer, const mg_cidr_set_t *trusted, int header,
                    const mg_real_ip_value_t *values, size_t nvalues, mg_real_ip_t *out);

/* The MG_REAL_IP_* kind of a header name (any case): for the config's
 * real_ip_header; -1 when it is none of the three. */
int mg_real_ip_header_kind(const char *name, size_t n);

/* The same for a NUL-terminated name, and the name of a kind as the config
 * writes it ("X-Forwarded-For"): settings.real_ip_header's parser and namer
 * (config.c's ENUM fields). */
int mg_real_ip_header_parse(const char *name);
const char *mg_real_ip_header_name(int kind);

#endif
