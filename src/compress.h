/* compress.h: the compression of answers (moongate.compression), streamed.
 *
 * The Lua policy makes a configuration at load (mg_ffi_compress_conf_new)
 * and, per request, hands it to the core (mg_ffi_req_set_compression):
 * the core picks the encoding from the request's Accept-Encoding then, and
 * decides on the final response head (mg_compress_head: status, HEAD,
 * Content-Encoding, Cache-Control: no-transform, Content-Range, the type,
 * the length). A compressed body goes through mg_compress_send in place of
 * the protocol's send_body, through one output buffer of MG_COMPRESS_OUT
 * bytes: nothing holds more of the body than the encoder's own window.
 *
 * Ownership: a conf belongs to the Lua state that made it (ffi.gc), which
 * lives as long as its generation, which every request of it holds; the
 * stream (r->compress) is the request's, freed by mg_compress_release.
 */
#ifndef MG_COMPRESS_H
#define MG_COMPRESS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "response.h"

typedef struct mg_request_s mg_request_t;
typedef struct mg_compress_conf_s mg_compress_conf_t;

enum { MG_ENC_IDENTITY = 0, MG_ENC_GZIP = 1, MG_ENC_BR = 2 };

#define MG_COMPRESS_OUT 16384 /* the output buffer of one stream */

/* Accept-Encoding (mg_compress_negotiate, mg_ffi.h): the highest q-value
 * (RFC 9110 12.5.3; a coding not named takes the q of "*", else it is not
 * acceptable), br before gzip at equal q, none at q=0 or below an identity
 * the client prefers. */

/* The head the client gets: res itself when the answer is not compressed,
 * else `out` (fields in r's arena): Content-Encoding added, Vary merged,
 * ETag weakened, Accept-Ranges dropped, the length unknown (the protocol
 * frames it: chunked). A compressible answer gets Vary: Accept-Encoding
 * even for a client that asked for no coding (a shared cache must not
 * give it to one that did). Starts r->compress when compressing. */
const mg_resp_t *mg_compress_head(mg_request_t *r, const mg_resp_t *res, mg_resp_t *out);

/* In place of r->proto->send_body while r->compress is set: compresses
 * bufs and sends what the encoder gives, ending the stream when last.
 * Returns what send_body returns (< 0: the connection closed, r ended). */
int mg_compress_send(mg_request_t *r, const uv_buf_t *bufs, unsigned n, int last);

/* Frees r's stream, if any. */
void mg_compress_release(mg_request_t *r);

/* The whole of a body compressed with conf's encoder `enc` (the testing
 * kit's answers): returns a malloc'd buffer of *out_len bytes, or NULL. */
char *mg_compress_whole(const mg_compress_conf_t *c, int enc, const char *in, size_t len,
                        size_t *out_len);

#endif
