/* tls_client.h: TLS from the gateway to servers (upstreams, gw.http,
 * health checks, JWKS), over OpenSSL memory BIOs like the listener side.
 *
 * An mg_tls_client_t is one client configuration (one upstream's `tls`, or
 * one set of gw.http options): an SSL_CTX built once (a bad CA file or
 * client certificate refuses the config at load), the name its failures are
 * counted under, and a small cache of sessions by server, so that a new
 * connection to a server seen before resumes instead of doing a full
 * handshake. Shared by every worker thread; reference counted: each link
 * holds one, so a reload freeing the config never pulls it from under a
 * connection.
 *
 * An mg_tls_link_t is one connection's TLS over a libuv stream the owner
 * connected: it reads the stream itself and hands the owner plaintext
 * through the owner's own alloc/read callbacks, called exactly as libuv
 * would call them (nread > 0 bytes in the buffer alloc gave, or a negative
 * error: UV_EOF for close_notify or the peer's FIN, UV_EPROTO for a TLS
 * failure, UV_ENOBUFS when alloc gave no room). The stream's data pointer
 * stays the owner's, so the owner gives the link a raw read callback of
 * its own that finds the link and calls mg_tls_link_on_read. Writes are encrypted and
 * queued on the owner's mg_wq_t, so back-pressure counts ciphertext as the
 * plain path counts bytes. The owner never calls uv_read_start/stop on the
 * stream while a link is attached: it calls the link's. Owned by the
 * owner; mg_tls_link_close() before the stream is closed ends it (the
 * memory goes one loop turn later).
 */
#ifndef MG_TLS_CLIENT_H
#define MG_TLS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "wq.h"

/* Debian's ca-certificates bundle: the CA default when none is given. */
#define MG_TLS_DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"

typedef struct mg_tls_client_s mg_tls_client_t;
typedef struct mg_tls_link_s mg_tls_link_t;

typedef struct mg_tls_client_opts_s {
    int verify;              /* check the chain against ca, and the name */
    const char *ca;          /* PEM bundle; NULL: MG_TLS_DEFAULT_CA */
    const char *sni;         /* name sent and checked; NULL: each server's host */
    const char *cert, *key;  /* client certificate and key (PEM); NULL: none */
    const char *min_version; /* "TLSv1.2" (NULL) or "TLSv1.3" */
    const char *ciphers;     /* TLS 1.2 cipher list; NULL: OpenSSL's */
    int no_resumption;       /* every new connection does a full handshake */
    const char *label;       /* metrics' upstream label (copied) */
} mg_tls_client_opts_t;

/* Builds a client configuration: 0 and *out (one reference, the caller's),
 * or -1 and a reason with its fix in err. */
int mg_tls_client_new(const mg_tls_client_opts_t *o, mg_tls_client_t **out, char *err,
                      size_t errlen);
/* One more reference (for a client that keeps c: moongate.redis's). */
void mg_tls_client_ref(mg_tls_client_t *c);
void mg_tls_client_release(mg_tls_client_t *c);
/* Do a and b (either may be NULL: plain) have the same settings? A pooled
 * connection may move from one to the other across a reload only then. */
int mg_tls_client_same(const mg_tls_client_t *a, const mg_tls_client_t *b);
/* The process's configuration with every default (verify against
 * MG_TLS_DEFAULT_CA, label "gw.http"), built on the first call (any
 * thread) and kept until exit; NULL and *err when the bundle cannot be
 * read. Call it once before the workers start, so none pays for it. */
mg_tls_client_t *mg_tls_client_default(const char **err);

/* Called once when the handshake ended: err NULL (done) or why it failed
 * ("certificate verify failed: certificate has expired", ...). */
typedef void (*mg_tls_ready_cb)(void *owner, const char *err);

/* A link for a stream (connected, or about to be) to host:port; host is
 * sent as SNI (unless it is an IP address or the configuration names
 * another) and verified. Holds a reference to c. NULL: out of memory. */
mg_tls_link_t *mg_tls_link_new(mg_tls_client_t *c, const char *host, uint16_t port,
                               uv_stream_t *s, mg_wq_t *wq, uv_read_cb raw_read);
/* What the owner's raw read callback passes on: ciphertext from the stream
 * (or its error). */
void mg_tls_link_on_read(mg_tls_link_t *l, ssize_t nread, const uv_buf_t *b);
/* Once the stream is connected: starts the handshake; cb reports its end
 * (not from inside this call). 0, or a negative libuv error. */
int mg_tls_link_handshake(mg_tls_link_t *l, mg_tls_ready_cb cb, void *owner);
/* Encrypts bufs (small pieces as one record) and writes the records to the
 * owner's queue. 0, or a negative libuv error. */
int mg_tls_link_write(mg_tls_link_t *l, const uv_buf_t *bufs, unsigned n);
/* Plaintext reading, with the owner's callbacks (see the top). */
int mg_tls_link_read_start(mg_tls_link_t *l, uv_alloc_cb alloc, uv_read_cb read);
void mg_tls_link_read_stop(mg_tls_link_t *l);
/* Sends close_notify if the handshake had finished and nothing is queued,
 * stops reading and frees the link soon. The owner closes the stream. */
void mg_tls_link_close(mg_tls_link_t *l);
/* After a failure: a short label for metrics ("unknown_ca", "expired",
 * "hostname", "handshake", ...), and the reason of a UV_EPROTO read. */
const char *mg_tls_link_failure(const mg_tls_link_t *l);
const char *mg_tls_link_error(const mg_tls_link_t *l);
/* After the handshake: was the session resumed? */
int mg_tls_link_resumed(const mg_tls_link_t *l);

#endif
