/* tls.h: TLS termination for client connections (OpenSSL, memory BIOs).
 *
 * A TLS listener owns one mg_tls_ctx_t, built when its config loads (so a
 * bad certificate refuses the config, and `moongate check` reports it) and
 * released with the config. It holds one SSL_CTX per certificate; the first
 * is the default and the others are picked by SNI (the client's server name
 * checked against each certificate's names). Contexts are reference
 * counted: every connection holds its listener's context, so a reload that
 * frees the old config never pulls it from under a handshake in flight.
 *
 * A connection's mg_tls_conn_t never touches the socket: the connection
 * feeds it the bytes it read (mg_tls_feed), pulls plaintext out
 * (mg_tls_read), hands it plaintext to send (mg_tls_write) and sends what
 * mg_tls_out returns. Owned by the connection; freed with mg_tls_conn_free.
 *
 * With client_auth, every context of the listener (one per certificate)
 * verifies client certificates against the same CA bundle and CRLs.
 */
#ifndef MG_TLS_H
#define MG_TLS_H

#include <stddef.h>
#include <uv.h>

typedef struct mg_tls_ctx_s mg_tls_ctx_t;
typedef struct mg_tls_conn_s mg_tls_conn_t;

typedef struct mg_tls_cert_s {
    const char *cert;   /* PEM file: the certificate, then its chain */
    const char *key;    /* PEM file: the private key */
} mg_tls_cert_t;

/* Client certificates (mTLS) on a listener: ca NULL asks for none. A
 * certificate that does not verify against ca (or is revoked in crl) fails
 * the handshake; `required` also fails it when the client sends none. */
typedef struct mg_tls_client_auth_s {
    const char *ca;     /* PEM bundle of the CAs client certificates chain to */
    const char *crl;    /* PEM file of CRLs (NULL: no revocation check) */
    int required;
} mg_tls_client_auth_t;

/* mg_tls_read results besides a byte count (> 0) */
enum {
    MG_TLS_AGAIN = 0,    /* needs more bytes from the peer */
    MG_TLS_CLOSED = -1,  /* the peer sent close_notify */
    MG_TLS_ERROR = -2,   /* handshake or record failure: close the connection */
};

/* Builds a context from ncerts certificate/key pairs; min_version is
 * "TLSv1.2" or "TLSv1.3"; ciphers (TLS 1.2 cipher list) may be NULL.
 * Returns 0 and *out (one reference, the caller's), or -1 with a
 * human-readable reason in err. */
int mg_tls_ctx_new(const mg_tls_cert_t *certs, size_t ncerts, const char *min_version,
                   const char *ciphers, const mg_tls_client_auth_t *client, mg_tls_ctx_t **out,
                   char *err, size_t errlen);
void mg_tls_ctx_release(mg_tls_ctx_t *ctx);
/* ALPN offers "h2" before "http/1.1" (on: the listener's http2); call it
 * before the context serves a connection. */
void mg_tls_ctx_offer_h2(mg_tls_ctx_t *ctx, int on);

/* The config's checks (mg_ffi_str_check_fn, mg_ffi.h): a PEM file path (not
 * empty, reported as MG_STR_FILE); a min_version mg_tls_ctx_new takes. */
int mg_tls_pem_path_check(const char *s, size_t len, char *out, size_t cap);
int mg_tls_version_check(const char *s, size_t len, char *out, size_t cap);
/* listen.tls.client_auth (mg_ffi_enum_parse_fn / mg_ffi_enum_name_fn) */
enum { MG_TLS_CLIENT_OPTIONAL = 0, MG_TLS_CLIENT_REQUIRE = 1 };
int mg_tls_client_auth_parse(const char *name);
const char *mg_tls_client_auth_name(int mode);

/* A server-side connection state; holds a reference to ctx. NULL when out
 * of memory. */
mg_tls_conn_t *mg_tls_conn_new(mg_tls_ctx_t *ctx);
/* The same record layer over an SSL the caller made and set up (the
 * client side, tls_client.c, puts it in connect state): takes the SSL over
 * (freed with the connection, also when this fails). NULL when out of
 * memory. */
struct ssl_st;
mg_tls_conn_t *mg_tls_conn_wrap(struct ssl_st *ssl);
struct ssl_st *mg_tls_conn_ssl(const mg_tls_conn_t *t);
void mg_tls_conn_free(mg_tls_conn_t *t);

/* Ciphertext read from the socket. 0, or -1 when out of memory. */
int mg_tls_feed(mg_tls_conn_t *t, const char *data, size_t len);
/* Completes the handshake if needed, then decrypts up to cap bytes into
 * buf: > 0 bytes, or an MG_TLS_* code. May queue bytes for mg_tls_out. */
int mg_tls_read(mg_tls_conn_t *t, char *buf, size_t cap);
/* Like mg_tls_read, but only says whether plaintext is waiting (> 0),
 * consuming none: records that carry none (TLS 1.3 session tickets) are
 * processed. */
int mg_tls_peek(mg_tls_conn_t *t);
/* Whether mg_tls_read could return bytes without another feed. */
int mg_tls_has_input(const mg_tls_conn_t *t);
/* Encrypts len bytes as one or more records. 0, or MG_TLS_ERROR. */
int mg_tls_write(mg_tls_conn_t *t, const char *data, size_t len);
/* Encrypts n pieces in order; small ones are joined into one record first
 * (one record per piece would cost its header and MAC each). */
int mg_tls_writev(mg_tls_conn_t *t, const uv_buf_t *bufs, unsigned n);
/* Ciphertext waiting to be sent: *p and the byte count (0 when none); the
 * bytes stay valid until mg_tls_out_done, which drops them all. */
size_t mg_tls_out(mg_tls_conn_t *t, const char **p);
void mg_tls_out_done(mg_tls_conn_t *t);
/* Queues close_notify (when the handshake had finished). */
void mg_tls_shutdown(mg_tls_conn_t *t);

int mg_tls_handshake_done(const mg_tls_conn_t *t);
/* After the handshake: protocol ("TLSv1.3"), cipher, the SNI name the
 * client sent (or NULL), the ALPN protocol (or NULL), session resumed. */
const char *mg_tls_version(const mg_tls_conn_t *t);
const char *mg_tls_cipher(const mg_tls_conn_t *t);
const char *mg_tls_sni(const mg_tls_conn_t *t);
const char *mg_tls_alpn(const mg_tls_conn_t *t, size_t *len);
int mg_tls_resumed(const mg_tls_conn_t *t);
/* The client's certificate (an OpenSSL X509 *, borrowed from the
 * connection) or NULL when it sent none; *verified is 1 when it chained
 * to the listener's client_ca (always, once the handshake succeeded). */
void *mg_tls_peer_cert(const mg_tls_conn_t *t, int *verified);
/* Why the last MG_TLS_ERROR happened (static or per-thread string). */
const char *mg_tls_error(const mg_tls_conn_t *t);

#endif
