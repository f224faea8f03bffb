/* real_ip.c: fuzz target for src/real_ip.c (mg_real_ip_find) and the
 * entry parser of src/cidr.c (mg_cidr_set_add).
 *
 * Input: a first byte choosing the header kind (low 2 bits) and whether
 * the peer is trusted (bit 2), then header lines separated by '\n', each
 * copied to a buffer of its exact size. Checks the contract of real_ip.h
 * against a fixed trusted set: an untrusted peer gets the peer, whatever
 * the headers; a walk that ends at an untrusted hop returns an untrusted
 * address, one that ran out returns a trusted one; and the spoofing rule:
 * one more line with an untrusted address (what a trusted proxy appends)
 * makes exactly that address the client, whatever came before. Each line
 * is also offered to mg_cidr_set_add: a refusal has a NUL-terminated
 * reason, an accepted entry's own address is inside the built set.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cidr.h"
#include "real_ip.h"

#define MAX_LINES 32

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "real_ip: %s\n", what);
        abort();
    }
}

static mg_cidr_set_t *trusted_set(void)
{
    static mg_cidr_set_t *s;
    if (!s) {
        static const char *const list[] = {"10.0.0.0/8", "192.168.0.0/16", "::1",
                                           "2001:db8:a::/48"};
        s = mg_cidr_set_new();
        for (size_t i = 0; i < sizeof list / sizeof list[0]; i++)
            check(mg_cidr_set_add(s, list[i], strlen(list[i]), NULL, 0) == 0, "setup");
        check(mg_cidr_set_build(s) == 0, "setup");
    }
    return s;
}

static void entry(const char *line, size_t n)
{
    char err[128];
    mg_cidr_set_t *s = mg_cidr_set_new();
    if (!s)
        return;
    memset(err, 'x', sizeof err);
    int rc = mg_cidr_set_add(s, line, n, err, sizeof err);
    if (rc == 0) {
        const char *slash = memchr(line, '/', n);
        mg_addr_t a;
        check(mg_addr_parse(line, slash ? (size_t)(slash - line) : n, &a) == 0,
              "an entry accepted without an address");
        check(mg_cidr_set_build(s) == 0 && mg_cidr_set_count(s) == 1, "one entry, one range");
        check(mg_cidr_set_contains(s, &a, NULL) == 1, "an entry not containing its address");
    } else {
        check(rc == -1 && memchr(err, '\0', sizeof err) != NULL, "a refusal without a reason");
    }
    mg_cidr_set_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int kind = data[0] & 3, peer_trusted = (data[0] >> 2) & 1;
    if (kind == 3)
        kind = MG_REAL_IP_XFF;
    mg_cidr_set_t *trusted = trusted_set();
    mg_addr_t peer;
    const char *ptext = peer_trusted ? "10.0.0.5" : "203.0.113.9";
    check(mg_addr_parse(ptext, strlen(ptext), &peer) == 0, "setup");

    mg_real_ip_value_t v[MAX_LINES + 1];
    char *lines[MAX_LINES + 1];
    size_t n = 0;
    const uint8_t *p = data + 1, *end = data + size;
    while (p <= end && n < MAX_LINES) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        lines[n] = malloc(len ? len : 1);
        if (!lines[n])
            break;
        memcpy(lines[n], p, len);
        v[n].p = lines[n];
        v[n].n = len;
        entry(lines[n], len);
        n++;
        if (!nl)
            break;
        p = nl + 1;
    }

    mg_real_ip_t out;
    int src = mg_real_ip_find(&peer, trusted, kind, v, n, &out);
    if (!peer_trusted)
        check(src == MG_REAL_IP_PEER && memcmp(&out.addr, &peer, sizeof peer) == 0,
              "headers believed from an untrusted peer");
    if (src == MG_REAL_IP_PEER)
        check(memcmp(&out.addr, &peer, sizeof peer) == 0 && out.port == 0, "peer mangled");
    else
        check(out.hops >= 1, "a header answer without a hop");
    if (out.stop == MG_REAL_IP_UNTRUSTED)
        check(!mg_cidr_set_contains(trusted, &out.addr, NULL), "untrusted stop, trusted answer");
    if (out.stop == MG_REAL_IP_ALL_TRUSTED && src == MG_REAL_IP_HEADER)
        check(mg_cidr_set_contains(trusted, &out.addr, NULL), "all trusted, untrusted answer");

    /* what a trusted proxy appends: its own peer, untrusted */
    if (peer_trusted && kind != MG_REAL_IP_X_REAL_IP && n < MAX_LINES + 1) {
        static const char xff[] = "198.51.100.77", fwd[] = "for=\"198.51.100.77:4242\"";
        v[n].p = kind == MG_REAL_IP_FORWARDED ? fwd : xff;
        v[n].n = kind == MG_REAL_IP_FORWARDED ? sizeof fwd - 1 : sizeof xff - 1;
        mg_addr_t want;
        check(mg_addr_parse(xff, sizeof xff - 1, &want) == 0, "setup");
        src = mg_real_ip_find(&peer, trusted, kind, v, n + 1, &out);
        check(src == MG_REAL_IP_HEADER && memcmp(&out.addr, &want, sizeof want) == 0 &&
                  out.stop == MG_REAL_IP_UNTRUSTED && out.hops == 1,
              "an appended untrusted hop is not the client");
    }
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    return 0;
}
