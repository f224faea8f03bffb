/* uri.h: request-target normalisation, done once before routing so that no
 * encoding trick reaches a route it should not. */
#ifndef MG_URI_H
#define MG_URI_H

#include <stddef.h>

/* Normalises an origin-form path (no query; the caller splits at '?'):
 *  - %XX of an unreserved character (ALPHA DIGIT - . _ ~) is decoded; other
 *    escapes are kept, with their hex digits upper-cased;
 *  - malformed escapes ("%G1", "%4"), NUL, control bytes, bytes >= 0x7f
 *    unescaped, and '\\' are rejected;
 *  - runs of '/' collapse to one;
 *  - "." segments are removed and ".." removes the previous segment;
 *    a ".." above the root is rejected.
 * `in` must start with '/'. `out` needs capacity >= len + 1; the result is
 * NUL-terminated and never longer than `in`. Returns 0 and sets *out_len,
 * or -1 (the caller answers 400). */
int mg_uri_normalize_path(const char *in, size_t len, char *out, size_t *out_len);

#endif
