/* tls.c: TLS termination over OpenSSL memory BIOs (see tls.h).
 *
 * The socket stays with libuv and the connection code: OpenSSL only ever
 * reads ciphertext from an in-memory BIO the connection fills and writes
 * records into another one the connection drains. That keeps TLS out of
 * the event loop's way (no blocking calls, no WANT_WRITE: a memory BIO
 * always takes the bytes) and lets the same back-pressure rules work on
 * ciphertext as on plain bytes.
 *
 * Every failed OpenSSL call is followed by ERR_clear_error(): the error
 * queue is per thread and shared with the worker's other OpenSSL users
 * (crypto.c), so a stale entry must never outlive the call that made it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls.h"
#include "mg_ffi.h"

#define MAX_CERTS 32

struct mg_tls_ctx_s {
    _Atomic int refs;
    int h2;                    /* ALPN may choose "h2" (mg_tls_ctx_offer_h2) */
    size_t n;
    SSL_CTX *ctx[MAX_CERTS];   /* [0] is the default */
    X509 *leaf[MAX_CERTS];     /* borrowed from ctx[i], for SNI matching */
};

struct mg_tls_conn_s {
    SSL *ssl;
    BIO *in;                   /* ciphertext from the peer (SSL's rbio) */
    BIO *out;                  /* records for the peer (SSL's wbio) */
    mg_tls_ctx_t *ctx;         /* one reference */
    int starved;               /* last read wanted more than `in` holds */
    const char *err;
};

static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *s = e ? ERR_reason_error_string(e) : NULL;
    return s ? s : "unknown OpenSSL error";
}

/* ALPN: HTTP/2 first when the listener speaks it (the server's preference,
 * as nginx and HAProxy choose), else HTTP/1.1; a client that offers only
 * other protocols gets no ALPN answer rather than a failed handshake.
 * arg: the listener's mg_tls_ctx_t. */
static int alpn_offered(const unsigned char *in, unsigned inlen, const char *proto, size_t plen,
                        const unsigned char **out, unsigned char *outlen)
{
    for (unsigned i = 0; i < inlen;) {
        unsigned len = in[i];
        if (i + 1 + len > inlen)
            break;
        if (len == plen && memcmp(in + i + 1, proto, plen) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)len;
            return 1;
        }
        i += 1 + len;
    }
    return 0;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const mg_tls_ctx_t *c = arg;
    if ((c && c->h2 && alpn_offered(in, inlen, "h2", 2, out, outlen)) ||
        alpn_offered(in, inlen, "http/1.1", 8, out, outlen))
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK;
}

/* SNI: the first certificate whose names cover the requested host; the
 * default one otherwise (clients then see a name mismatch, as they
 * should). */
static int select_cert(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    mg_tls_ctx_t *c = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || c->n < 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < c->n; i++) {
        if (c->leaf[i] && X509_check_host(c->leaf[i], name, 0, 0, NULL) == 1) {
            if (i > 0)
                SSL_set_SSL_CTX(ssl, c->ctx[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Client certificates: the CA list (also sent to clients as the names
 * they may pick from), the CRLs, and the verify mode. */
static int client_auth_for(SSL_CTX *x, const mg_tls_client_auth_t *client, char *err,
                           size_t errlen)
{
    /* OpenSSL says "system lib" for a missing file: say what the system said */
    const char *files[2] = { client->ca, client->crl }, *keys[2] = { "client_ca", "crl" };
    for (int i = 0; i < 2; i++) {
        FILE *f = files[i] ? fopen(files[i], "r") : NULL;
        if (files[i] && !f) {
            snprintf(err, errlen, "cannot read %s '%s': %s", keys[i], files[i], strerror(errno));
            return -1;
        }
        if (f)
            fclose(f);
    }
    if (SSL_CTX_load_verify_locations(x, client->ca, NULL) != 1) {
        snprintf(err, errlen, "cannot load client_ca '%s': %s (give a PEM file of CA "
                 "certificates)", client->ca, ssl_reason());
        return -1;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client->ca);
    if (names)
        SSL_CTX_set_client_CA_list(x, names);
    if (client->crl) {
        X509_STORE *st = SSL_CTX_get_cert_store(x);
        X509_LOOKUP *lk = X509_STORE_add_lookup(st, X509_LOOKUP_file());
        if (!lk || X509_load_crl_file(lk, client->crl, X509_FILETYPE_PEM) <= 0) {
            snprintf(err, errlen, "cannot load crl '%s': %s (give a PEM file of CRLs "
                     "from the client_ca)", client->crl, ssl_reason());
            return -1;
        }
        /* the leaf's issuer must have a CRL: a missing one fails closed */
        X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    }
    SSL_CTX_set_verify(x, SSL_VERIFY_PEER | (client->required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                                               : 0), NULL);
    /* resumed sessions keep the verified peer; OpenSSL refuses them without
     * a session id context once verification is on */
    SSL_CTX_set_session_id_context(x, (const unsigned char *)"moongate", 8);
    return 0;
}

static SSL_CTX *ctx_for(const mg_tls_cert_t *cert, int min_version, const char *ciphers,
                        const mg_tls_client_auth_t *client, char *err, size_t errlen)
{
    SSL_CTX *x = SSL_CTX_new(TLS_server_method());
    if (!x) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(x, min_version);
    /* no renegotiation (a CPU-burning DoS vector), no compression (CRIME) */
    SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* idle keep-alive connections give their record buffers back */
    SSL_CTX_set_mode(x, SSL_MODE_RELEASE_BUFFERS);
    if (ciphers && SSL_CTX_set_cipher_list(x, ciphers) != 1) {
        snprintf(err, errlen, "no usable cipher in \"%s\" (an OpenSSL cipher list, "
                 "e.g. \"ECDHE+AESGCM:ECDHE+CHACHA20\")", ciphers);
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(x, cert->cert) != 1) {
        snprintf(err, errlen, "cannot load certificate '%s': %s (give a PEM file with "
                 "the certificate first, then its chain)", cert->cert, ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(x, cert->key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, errlen, "the private key '%s' does not belong to the certificate '%s'",
                     cert->key, cert->cert);
        else
            snprintf(err, errlen, "cannot load private key '%s': %s (give an unencrypted "
                     "PEM private key)", cert->key, ssl_reason());
        goto fail;
    }
    if (SSL_CTX_check_private_key(x) != 1) {
        snprintf(err, errlen, "the private key '%s' does not belong to the certificate '%s'",
                 cert->key, cert->cert);
        goto fail;
    }
    if (client && client->ca && client_auth_for(x, client, err, errlen) != 0)
        goto fail;
    ERR_clear_error();
    return x;
fail:
    ERR_clear_error();
    SSL_CTX_free(x);
    return NULL;
}

/* The protocol version named `name` ("TLSv1.2", "TLSv1.3"), or 0. */
static int version_of(const char *name, size_t len)
{
    if (len == 7 && memcmp(name, "TLSv1.2", 7) == 0)
        return TLS1_2_VERSION;
    if (len == 7 && memcmp(name, "TLSv1.3", 7) == 0)
        return TLS1_3_VERSION;
    return 0;
}

int mg_tls_version_check(const char *s, size_t len, char *out, size_t cap)
{
    if (!version_of(s, len) || len >= cap)
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_VALUE;
}

int mg_tls_pem_path_check(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || len >= cap || memchr(s, '\0', len))
        return MG_STR_BAD;
    memcpy(out, s, len);
    out[len] = '\0';
    return MG_STR_FILE;
}

int mg_tls_ctx_new(const mg_tls_cert_t *certs, size_t ncerts, const char *min_version,
                   const char *ciphers, const mg_tls_client_auth_t *client, mg_tls_ctx_t **out,
                   char *err, size_t errlen)
{
    int minv = min_version ? version_of(min_version, strlen(min_version)) : TLS1_2_VERSION;
    if (!minv) {
        snprintf(err, errlen, "min_version must be \"TLSv1.2\" or \"TLSv1.3\", got \"%s\"",
                 min_version);
        return -1;
    }
    if (ncerts == 0 || ncerts > MAX_CERTS) {
        snprintf(err, errlen, "a TLS listener needs 1 to %d certificates, got %zu", MAX_CERTS,
                 ncerts);
        return -1;
    }
    mg_tls_ctx_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    atomic_init(&c->refs, 1);
    for (size_t i = 0; i < ncerts; i++) {
        c->ctx[i] = ctx_for(&certs[i], minv, ciphers, client, err, errlen);
        if (!c->ctx[i]) {
            mg_tls_ctx_release(c);
            return -1;
        }
        c->leaf[i] = SSL_CTX_get0_certificate(c->ctx[i]);
        /* every certificate's context: SNI may switch the connection to any */
        SSL_CTX_set_alpn_select_cb(c->ctx[i], select_alpn, c);
        c->n = i + 1;
    }
    SSL_CTX_set_tlsext_servername_callback(c->ctx[0], select_cert);
    SSL_CTX_set_tlsext_servername_arg(c->ctx[0], c);
    *out = c;
    return 0;
}

void mg_tls_ctx_offer_h2(mg_tls_ctx_t *c, int on)
{
    c->h2 = on ? 1 : 0;
}

void mg_tls_ctx_release(mg_tls_ctx_t *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    for (size_t i = 0; i < c->n; i++)
        SSL_CTX_free(c->ctx[i]);
    free(c);
}

mg_tls_conn_t *mg_tls_conn_wrap(SSL *ssl)
{
    mg_tls_conn_t *t = ssl ? calloc(1, sizeof(*t)) : NULL;
    if (t) {
        t->ssl = ssl;
        t->in = BIO_new(BIO_s_mem());
        t->out = BIO_new(BIO_s_mem());
    }
    if (!t || !t->in || !t->out) {
        SSL_free(ssl);
        if (t) {
            BIO_free(t->in);
            BIO_free(t->out);
        }
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* an empty input BIO means "wait for more", not end of stream */
    BIO_set_mem_eof_return(t->in, -1);
    SSL_set_bio(t->ssl, t->in, t->out); /* the SSL owns both BIOs now */
    return t;
}

mg_tls_conn_t *mg_tls_conn_new(mg_tls_ctx_t *ctx)
{
    mg_tls_conn_t *t = mg_tls_conn_wrap(SSL_new(ctx->ctx[0]));
    if (!t)
        return NULL;
    SSL_set_accept_state(t->ssl);
    atomic_fetch_add(&ctx->refs, 1);
    t->ctx = ctx;
    return t;
}

SSL *mg_tls_conn_ssl(const mg_tls_conn_t *t) { return t->ssl; }

void mg_tls_conn_free(mg_tls_conn_t *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    mg_tls_ctx_release(t->ctx);
    free(t);
}

int mg_tls_feed(mg_tls_conn_t *t, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (BIO_write(t->in, data, (int)len) != (int)len) {
        ERR_clear_error();
        return -1;
    }
    t->starved = 0;
    return 0;
}

static int failed(mg_tls_conn_t *t, int rc)
{
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        t->starved = 1;
        return MG_TLS_AGAIN;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return MG_TLS_CLOSED;
    t->err = e == SSL_ERROR_SSL ? ssl_reason() : "TLS protocol error";
    ERR_clear_error();
    return MG_TLS_ERROR;
}

int mg_tls_read(mg_tls_conn_t *t, char *buf, size_t cap)
{
    if (!SSL_is_init_finished(t->ssl)) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc != 1)
            return failed(t, rc);
    }
    if (cap == 0)
        return MG_TLS_AGAIN;
    int n = SSL_read(t->ssl, buf, cap > 1 << 30 ? 1 << 30 : (int)cap);
    return n > 0 ? n : failed(t, n);
}

int mg_tls_peek(mg_tls_conn_t *t)
{
    char c;
    if (!SSL_is_init_finished(t->ssl)) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc != 1)
            return failed(t, rc);
    }
    int n = SSL_peek(t->ssl, &c, 1);
    return n > 0 ? n : failed(t, n);
}

int mg_tls_has_input(const mg_tls_conn_t *t)
{
    return SSL_pending(t->ssl) > 0 || (!t->starved && BIO_ctrl_pending(t->in) > 0);
}

int mg_tls_write(mg_tls_conn_t *t, const char *data, size_t len)
{
    while (len > 0) {
        int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
        int n = SSL_write(t->ssl, data, chunk);
        if (n <= 0) {
            t->err = ssl_reason();
            ERR_clear_error();
            return MG_TLS_ERROR;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int mg_tls_writev(mg_tls_conn_t *t, const uv_buf_t *bufs, unsigned n)
{
    static _Thread_local char joined[16384];
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (n > 1 && total <= sizeof(joined)) {
        size_t at = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(joined + at, bufs[i].base, bufs[i].len);
            at += bufs[i].len;
        }
        return mg_tls_write(t, joined, total);
    }
    for (unsigned i = 0; i < n; i++)
        if (mg_tls_write(t, bufs[i].base, bufs[i].len) < 0)
            return MG_TLS_ERROR;
    return 0;
}

size_t mg_tls_out(mg_tls_conn_t *t, const char **p)
{
    char *d = NULL;
    long n = BIO_get_mem_data(t->out, &d);
    *p = d;
    return n > 0 ? (size_t)n : 0;
}

void mg_tls_out_done(mg_tls_conn_t *t) { (void)BIO_reset(t->out); }

void mg_tls_shutdown(mg_tls_conn_t *t)
{
    if (SSL_is_init_finished(t->ssl) && SSL_shutdown(t->ssl) < 0)
        ERR_clear_error();
}

int mg_tls_handshake_done(const mg_tls_conn_t *t) { return SSL_is_init_finished(t->ssl); }

const char *mg_tls_version(const mg_tls_conn_t *t) { return SSL_get_version(t->ssl); }

const char *mg_tls_cipher(const mg_tls_conn_t *t)
{
    return SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl));
}

const char *mg_tls_sni(const mg_tls_conn_t *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

const char *mg_tls_alpn(const mg_tls_conn_t *t, size_t *len)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    *len = n;
    return n ? (const char *)p : NULL;
}

int mg_tls_resumed(const mg_tls_conn_t *t) { return SSL_session_reused(t->ssl); }

void *mg_tls_peer_cert(const mg_tls_conn_t *t, int *verified)
{
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    *verified = x && SSL_get_verify_result(t->ssl) == X509_V_OK;
    return x;
}

const char *mg_tls_error(const mg_tls_conn_t *t) { return t->err ? t->err : "TLS error"; }

int mg_tls_client_auth_parse(const char *name)
{
    return strcmp(name, "require") == 0    ? MG_TLS_CLIENT_REQUIRE
           : strcmp(name, "optional") == 0 ? MG_TLS_CLIENT_OPTIONAL
                                           : -1;
}

const char *mg_tls_client_auth_name(int mode)
{
    return mode == MG_TLS_CLIENT_OPTIONAL ? "optional" : "require";
}
