/* uri.c: fuzz target for src/uri.c: mg_uri_normalize_path (with and
 * without MG_URI_DECODE_SLASHES), mg_uri_escaped_slashes on its result,
 * and mg_uri_valid_host.
 *
 * Input: a request-target path (a leading '/' is added when missing), also
 * taken whole as a Host value. Checks the contract of uri.h: the result
 * fits in len + 1 bytes, starts with '/', has no empty, "." or ".."
 * segment, holds only bytes the contract lets through (no '#'), is a fixed
 * point (normalising it again changes nothing: one decoding, never two),
 * and, decoded, holds no escaped slash; a valid Host has no '/', '@',
 * blank or control byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "uri.h"

static void check(int ok, const char *what, const char *in, size_t len)
{
    if (ok)
        return;
    fprintf(stderr, "uri: %s for \"%.*s\"\n", what, (int)len, in);
    abort();
}

static void normalize(const char *in, size_t len, int flags)
{
    char *out = malloc(len + 1), *again = malloc(len + 1);
    size_t olen = 0, alen = 0;
    /* exactly the room uri.h asks for, so that ASan sees one byte more */
    if (out && again && mg_uri_normalize_path(in, len, out, &olen, flags) == 0) {
        check(olen <= len, "longer than the input", in, len);
        check(out[olen] == '\0', "not NUL-terminated", in, len);
        check(olen >= 1 && out[0] == '/', "no leading '/'", in, len);
        check(strlen(out) == olen, "a NUL inside", in, len);
        check(strstr(out, "//") == NULL, "an empty segment", in, len);
        check(strstr(out, "/./") == NULL && strstr(out, "/../") == NULL,
              "a dot segment", in, len);
        check(!(olen >= 2 && strcmp(out + olen - 2, "/.") == 0) &&
                  !(olen >= 3 && strcmp(out + olen - 3, "/..") == 0),
              "a trailing dot segment", in, len);
        check(strstr(out, "/..;") == NULL && strstr(out, "/.;") == NULL,
              "a dot segment with parameters", in, len);
        for (size_t i = 0; i < olen; i++) {
            unsigned char c = (unsigned char)out[i];
            check(c >= 0x20 && c < 0x7f && c != '\\' && c != '#', "a forbidden byte", in, len);
            if (c == '%')
                check(i + 2 < olen, "a cut escape", in, len);
        }
        check(mg_uri_normalize_path(out, olen, again, &alen, flags) == 0, "its result refused",
              in, len);
        check(alen == olen && memcmp(out, again, olen) == 0, "not a fixed point", in, len);
        int kinds = mg_uri_escaped_slashes(out, olen);
        if (flags & MG_URI_DECODE_SLASHES)
            check(!(kinds & MG_URI_ESCAPED_SLASH), "an escaped slash left after decoding", in,
                  len);
    }
    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 2);
    size_t len = size;
    if (!in)
        return 0;
    if (size == 0 || data[0] != '/') {
        in[0] = '/';
        memcpy(in + 1, data, size);
        len++;
    } else {
        memcpy(in, data, size);
    }
    normalize(in, len, 0);
    normalize(in, len, MG_URI_DECODE_SLASHES);
    if (mg_uri_valid_host((const char *)data, size)) {
        for (size_t i = 0; i < size; i++) {
            unsigned char c = data[i];
            check(c > 0x20 && c < 0x7f && c != '/' && c != '@', "a Host with a forbidden byte",
                  (const char *)data, size);
        }
    }
    free(in);
    return 0;
}
