/* proxy_protocol.c: fuzz target for src/proxy_protocol.c (mg_pp_parse).
 *
 * Input: the first bytes of a connection. Each is parsed from a buffer of
 * exactly its size (ASan sees one byte more), without a limit and with a
 * 256-byte one. Checks the contract of proxy_protocol.h: a header's
 * length is within the input (v1: at most 107), its TLV spans lie inside
 * it after the fixed part, and parsing only the header gives the same
 * answer (the payload is never read); every shorter prefix of a header
 * asks for more; "need more" never comes with 107 v1 bytes or a whole v2
 * header; an error has a reason and stays an error when more bytes come.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proxy_protocol.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "proxy_protocol: %s\n", what);
        abort();
    }
}

static int parse(const uint8_t *data, size_t n, size_t max, mg_pp_header_t *h, const char **err)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return MG_PP_AGAIN;
    memcpy(copy, data, n);
    *err = NULL;
    int rc = mg_pp_parse(copy, n, max, h, err);
    free(copy);
    return rc;
}

static void one(const uint8_t *data, size_t size, size_t max)
{
    mg_pp_header_t h, again;
    const char *err;
    int rc = parse(data, size, max, &h, &err);
    if (rc > 0) {
        size_t len = (size_t)rc;
        check(len <= size && len == h.len, "a header longer than the input");
        check(h.version == 1 || h.version == 2, "no version");
        check(h.version == 2 || len <= MG_PP_V1_MAX, "a v1 line over 107 bytes");
        check(max == 0 || len <= max || h.version == 1, "a v2 header over the limit");
        check(h.ntlvs <= MG_PP_MAX_TLVS, "too many TLVs");
        for (unsigned i = 0; i < h.ntlvs; i++)
            check(h.tlvs[i].off >= 16 + 3 && h.tlvs[i].off + h.tlvs[i].len <= len,
                  "a TLV outside the header");
        check(!h.has_addr || h.command == MG_PP_PROXY, "an address from LOCAL");
        check(parse(data, len, max, &again, &err) == rc && memcmp(&h, &again, sizeof h) == 0,
              "the payload changed the header");
        for (size_t k = 0; k < len; k++)
            check(parse(data, k, max, &again, &err) == MG_PP_AGAIN,
                  "a prefix of a header not asking for more");
    } else if (rc == MG_PP_AGAIN) {
        check(size < MG_PP_V1_MAX || data[0] != 'P', "a full v1 line still waiting");
        if (size >= 16 && data[0] == '\r')
            check(size < 16 + ((size_t)data[14] << 8 | data[15]), "a whole v2 header waiting");
    } else {
        check(rc == MG_PP_ERROR && err && *err, "an error without a reason");
        uint8_t *more = malloc(size + 64);
        if (more) {
            memcpy(more, data, size);
            memset(more + size, 'x', 64);
            check(parse(more, size + 64, max, &again, &err) == MG_PP_ERROR,
                  "an error undone by more bytes");
            free(more);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, 0);
    one(data, size, 256);
    return 0;
}
