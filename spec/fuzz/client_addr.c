/* client_addr.c: fuzz target for src/client_addr.c's PROXY header intake
 * (mg_client_addr_proxy_header) and TLV accessor (mg_ffi_req_proxy_tlv),
 * what a proxy_protocol listener runs on a connection's first bytes.
 *
 * Input: the first bytes of a connection from a trusted proxy (127.0.0.1),
 * in a buffer of exactly their size. Checks, besides the sanitizers (which
 * see every TLV value read back, from the copy the connection keeps): an
 * accepted header leaves a client address that parses, the socket's kept
 * beside it when the header named another; a refused or unfinished one
 * leaves the peer as it was; every TLV read lies in what was kept.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "client_addr.h"
#include "errlog.h"
#include "mg_ffi.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "client_addr: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    mg_log_set_level(MG_LOG_CRIT); /* a refused header is logged: not here */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t lo[4] = { 127, 0, 0, 1 };
    mg_peer_t p;
    memset(&p, 0, sizeof(p));
    strcpy(p.client_ip, "127.0.0.1");
    p.client_port = 40000;
    mg_addr_from_v4(lo, &p.addr);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    int rc = mg_client_addr_proxy_header(&p, copy, size);
    free(copy); /* the peer must not point into the bytes read */
    mg_addr_t a;
    check(mg_addr_parse(p.client_ip, strlen(p.client_ip), &a) == 0, "no client address");
    if (rc <= 0) {
        check(!p.proxied && !p.pp && strcmp(p.client_ip, "127.0.0.1") == 0 &&
                  p.client_port == 40000,
              "a refused header changed the peer");
        return 0;
    }
    check((size_t)rc <= size, "a header longer than the input");
    if (p.proxied) {
        check(strcmp(p.socket_ip, "127.0.0.1") == 0, "the socket's address lost");
        check(memcmp(&a, &p.addr, sizeof(a)) == 0, "the address and its text differ");
    }
    mg_request_t r;
    memset(&r, 0, sizeof(r));
    r.peer = &p;
    unsigned sum = 0;
    for (int type = 0; type <= 256; type++) {
        const char *v = NULL;
        size_t n = 0;
        if (mg_ffi_req_proxy_tlv(&r, type, &v, &n) != 0)
            continue;
        check(type < 256 && p.pp != NULL, "a TLV without a header's");
        check(n <= (size_t)rc, "a TLV longer than the header");
        for (size_t i = 0; i < n; i++)
            sum += (unsigned char)v[i]; /* ASan: inside the kept copy */
    }
    (void)sum;
    mg_client_addr_release(&p);
    return 0;
}
