/* uri.c: fuzz target for mg_uri_normalize_path (src/uri.c).
 *
 * Input: a request-target path (a leading '/' is added when missing).
 * Checks the contract of uri.h: the result fits in len + 1 bytes, starts
 * with '/', has no empty, "." or ".." segment, holds only bytes the
 * contract lets through, and is a fixed point (normalising it again
 * changes nothing: one decoding, never two).
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 2), *out, *again;
    size_t len = size, olen = 0, alen = 0;
    if (!in)
        return 0;
    if (size == 0 || data[0] != '/') {
        in[0] = '/';
        memcpy(in + 1, data, size);
        len++;
    } else {
        memcpy(in, data, size);
    }
    /* exactly the room uri.h asks for, so that ASan sees one byte more */
    out = malloc(len + 1);
    again = malloc(len + 1);
    if (out && again && mg_uri_normalize_path(in, len, out, &olen) == 0) {
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
        for (size_t i = 0; i < olen; i++) {
            unsigned char c = (unsigned char)out[i];
            check(c >= 0x20 && c < 0x7f && c != '\\', "a forbidden byte", in, len);
            if (c == '%')
                check(i + 2 < olen, "a cut escape", in, len);
        }
        check(mg_uri_normalize_path(out, olen, again, &alen) == 0, "its result refused", in,
              len);
        check(alen == olen && memcmp(out, again, olen) == 0, "not a fixed point", in, len);
    }
    free(in);
    free(out);
    free(again);
    return 0;
}
