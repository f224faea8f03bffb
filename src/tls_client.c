/* tls_client.c: TLS to servers over OpenSSL memory BIOs (see tls_client.h).
 *
 * The record layer is tls.c's (mg_tls_conn_wrap); this file adds what only
 * a client does: the CA and the name it checks, SNI, a client certificate,
 * ALPN's offer, resuming sessions, and driving the stream from libuv.
 *
 * Resumption: OpenSSL's client side keeps no sessions of its own; the
 * new-session callback stores each one (TLS 1.3 sends them after the
 * handshake, inside the first reads) under "host:port" in the
 * configuration's small cache, and a new link to that server offers it.
 * The cache is shared by the workers: a mutex, taken once per new
 * connection and once per session received, never per request.
 *
 * Every failed OpenSSL call is followed by ERR_clear_error() (the error
 * queue is per thread and shared with the worker's other OpenSSL users).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "metrics.h"
#include "mg_ffi.h"
#include "tls.h"
#include "tls_client.h"

#define SESSIONS 16           /* servers remembered per configuration */
#define KEY_MAX 272           /* "host:port" */

typedef struct {
    char key[KEY_MAX];
    SSL_SESSION *sess;        /* one reference */
} cached_t;

struct mg_tls_client_s {
    _Atomic int refs;
    SSL_CTX *ctx;
    int verify;
    char *sni;                /* NULL: each server's host */
    char *label;
    char *settings;           /* every option, for mg_tls_client_same */
    pthread_mutex_t lock;     /* guards cache and next */
    cached_t cache[SESSIONS];
    unsigned next;            /* the slot a new server takes */
};

struct mg_tls_link_s {
    mg_tls_client_t *c;       /* one reference */
    mg_tls_conn_t *t;
    uv_stream_t *s;
    mg_wq_t *wq;
    uv_read_cb raw_read;      /* the owner's: passes ciphertext to mg_tls_link_on_read */
    uv_idle_t pump;           /* delivers what TLS holds when reading resumes */
    mg_tls_ready_cb ready;
    void *owner;
    uv_alloc_cb alloc;        /* the owner's, for plaintext */
    uv_read_cb read;
    uint8_t handshaking, handshaken, raw_reading, plain_reading, closed;
    uint8_t got_plain;        /* the server has sent data (its handshake stood) */
    const char *failure;      /* metrics label of a failed handshake */
    const char *err;
    char key[KEY_MAX];
    char errbuf[640];
};

static int session_slot = -1; /* SSL ex_data index of the link (set in client_new) */
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;

static void make_slot(void) { session_slot = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }

static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *s = e ? ERR_reason_error_string(e) : NULL;
    return s ? s : "unknown OpenSSL error";
}

/* ---- the configuration ------------------------------------------------------ */

/* OpenSSL hands every session it got (the handshake's, and TLS 1.3
 * tickets): the newest is kept for the link's server. Returns 1: the
 * reference is ours now. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    mg_tls_link_t *l = SSL_get_ex_data(ssl, session_slot);
    if (!l || !SSL_SESSION_is_resumable(sess))
        return 0;
    mg_tls_client_t *c = l->c;
    pthread_mutex_lock(&c->lock);
    cached_t *slot = NULL;
    for (int i = 0; i < SESSIONS && !slot; i++)
        if (c->cache[i].sess && strcmp(c->cache[i].key, l->key) == 0)
            slot = &c->cache[i];
    if (!slot) {
        slot = &c->cache[c->next];
        c->next = (c->next + 1) % SESSIONS;
        snprintf(slot->key, sizeof(slot->key), "%s", l->key);
    }
    SSL_SESSION *old = slot->sess;
    slot->sess = sess;
    pthread_mutex_unlock(&c->lock);
    SSL_SESSION_free(old);
    return 1;
}

/* The options as one string (NUL-free fields joined by a byte no path or
 * name holds). */
static char *settings_of(const mg_tls_client_opts_t *o)
{
    const char *f[] = { o->ca, o->sni, o->cert, o->key, o->min_version, o->ciphers };
    size_t len = 8;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        len += (f[i] ? strlen(f[i]) : 0) + 2;
    char *s = malloc(len);
    if (!s)
        return NULL;
    size_t at = (size_t)snprintf(s, len, "%d%d", o->verify, o->no_resumption);
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        at += (size_t)snprintf(s + at, len - at, "\x1f%s", f[i] ? f[i] : "\x1e");
    return s;
}

int mg_tls_client_new(const mg_tls_client_opts_t *o, mg_tls_client_t **out, char *err,
                      size_t errlen)
{
    int minv = TLS1_2_VERSION;
    if (o->min_version && strcmp(o->min_version, "TLSv1.3") == 0)
        minv = TLS1_3_VERSION;
    else if (o->min_version && strcmp(o->min_version, "TLSv1.2") != 0) {
        snprintf(err, errlen, "min_version must be \"TLSv1.2\" or \"TLSv1.3\", got \"%s\"",
                 o->min_version);
        return -1;
    }
    if (!o->cert != !o->key) {
        snprintf(err, errlen, "a client certificate needs both cert and key");
        return -1;
    }
    pthread_once(&slot_once, make_slot);
    mg_tls_client_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    c->verify = o->verify;
    c->sni = o->sni ? strdup(o->sni) : NULL;
    c->label = strdup(o->label ? o->label : "-");
    c->settings = settings_of(o);
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx || !c->label || !c->settings || (o->sni && !c->sni) || session_slot < 0) {
        snprintf(err, errlen, "cannot create a TLS context: %s", ssl_reason());
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c->ctx, minv);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* idle pooled connections give their record buffers back */
    SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
    /* HTTP/2 will add "h2" here */
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof(alpn) - 1);
    if (o->no_resumption) {
        SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET);
    } else {
        SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_CLIENT |
                                                   SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c->ctx, new_session);
    }
    if (o->ciphers && SSL_CTX_set_cipher_list(c->ctx, o->ciphers) != 1) {
        snprintf(err, errlen, "no usable cipher in \"%s\" (an OpenSSL cipher list, "
                 "e.g. \"ECDHE+AESGCM:ECDHE+CHACHA20\")", o->ciphers);
        goto fail;
    }
    if (o->verify) {
        const char *ca = o->ca ? o->ca : MG_TLS_DEFAULT_CA;
        FILE *f = fopen(ca, "r"); /* OpenSSL's reason for a missing file is "system lib" */
        if (!f) {
            snprintf(err, errlen, "cannot load the CA bundle '%s': %s (give a PEM file of CA "
                     "certificates%s)", ca, strerror(errno),
                     o->ca ? "" : "; Debian's is in the package ca-certificates");
            goto fail;
        }
        fclose(f);
        if (SSL_CTX_load_verify_locations(c->ctx, ca, NULL) != 1) {
            snprintf(err, errlen, "cannot load the CA bundle '%s': %s (give a PEM file of "
                     "CA certificates%s)", ca, ssl_reason(),
                     o->ca ? "" : "; Debian's is in the package ca-certificates");
            goto fail;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->cert) {
        if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert) != 1) {
            snprintf(err, errlen, "cannot load the client certificate '%s': %s (give a PEM "
                     "file with the certificate first, then its chain)", o->cert, ssl_reason());
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(c->ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(c->ctx) != 1) {
            snprintf(err, errlen, "cannot use the client key '%s' with '%s': %s (give the "
                     "unencrypted PEM key of that certificate)", o->key, o->cert, ssl_reason());
            goto fail;
        }
    }
    ERR_clear_error();
    *out = c;
    return 0;
fail:
    ERR_clear_error();
    mg_tls_client_release(c);
    return -1;
}

void mg_tls_client_ref(mg_tls_client_t *c) { atomic_fetch_add(&c->refs, 1); }

void mg_tls_client_release(mg_tls_client_t *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    for (int i = 0; i < SESSIONS; i++)
        SSL_SESSION_free(c->cache[i].sess);
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->lock);
    free(c->sni);
    free(c->label);
    free(c->settings);
    free(c);
}

mg_tls_client_t *mg_ffi_tls_client_new(int verify, const char *ca, const char *sni,
                                       const char *cert, const char *key,
                                       const char *min_version, const char *ciphers,
                                       int session_reuse, const char *label, char *err,
                                       size_t errlen)
{
    mg_tls_client_opts_t o = { .verify = verify, .ca = ca, .sni = sni, .cert = cert, .key = key,
                               .min_version = min_version, .ciphers = ciphers,
                               .no_resumption = !session_reuse, .label = label };
    mg_tls_client_t *c = NULL;

    return mg_tls_client_new(&o, &c, err, errlen) == 0 ? c : NULL;
}

void mg_ffi_tls_client_release(mg_tls_client_t *c) { mg_tls_client_release(c); }

int mg_tls_client_same(const mg_tls_client_t *a, const mg_tls_client_t *b)
{
    if (!a || !b)
        return a == b;
    return a == b || strcmp(a->settings, b->settings) == 0;
}

/* Built once per process (the system bundle is some 140 certificates:
 * parsing it inside a hook would eat its time budget), kept to the end. */
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static mg_tls_client_t *default_client;
static char default_err[512];

static void make_default(void)
{
    mg_tls_client_opts_t o = { .verify = 1, .label = "gw.http" };
    if (mg_tls_client_new(&o, &default_client, default_err, sizeof(default_err)) != 0)
        default_client = NULL;
}

mg_tls_client_t *mg_tls_client_default(const char **err)
{
    pthread_once(&default_once, make_default);
    if (!default_client && err)
        *err = default_err;
    return default_client;
}

/* ---- a link ------------------------------------------------------------------ */

static int is_ip(const char *h)
{
    unsigned char a[16];
    return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

mg_tls_link_t *mg_tls_link_new(mg_tls_client_t *c, const char *host, uint16_t port,
                               uv_stream_t *s, mg_wq_t *wq, uv_read_cb raw_read)
{
    mg_tls_link_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    SSL *ssl = SSL_new(c->ctx);
    l->t = mg_tls_conn_wrap(ssl); /* owns ssl from here, also on failure */
    if (!l->t) {
        free(l);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    SSL_set_ex_data(ssl, session_slot, l);
    const char *name = c->sni ? c->sni : host;
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (is_ip(name)) { /* no SNI for an address (RFC 6066); its certificate names the IP */
        X509_VERIFY_PARAM_set1_ip_asc(vp, name);
    } else {
        SSL_set_tlsext_host_name(ssl, name);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(vp, name, 0);
    }
    snprintf(l->key, sizeof(l->key), "%s:%u", host, port);
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < SESSIONS; i++)
        if (c->cache[i].sess && strcmp(c->cache[i].key, l->key) == 0) {
            SSL_set_session(ssl, c->cache[i].sess); /* takes its own reference */
            break;
        }
    pthread_mutex_unlock(&c->lock);
    ERR_clear_error();
    atomic_fetch_add(&c->refs, 1);
    l->c = c;
    l->s = s;
    l->wq = wq;
    l->raw_read = raw_read;
    uv_idle_init(s->loop, &l->pump);
    l->pump.data = l;
    return l;
}

/* Sends the records TLS produced (handshake messages, encrypted data). */
static int flush(mg_tls_link_t *l)
{
    const char *p;
    size_t len = mg_tls_out(l->t, &p);
    if (len == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int rc = mg_wq_write(l->wq, &b, 1); /* copies what the kernel refuses */
    mg_tls_out_done(l->t);
    return rc;
}

static _Thread_local char cipher_in[32768]; /* raw_alloc and raw_read run back to back */

static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    *b = uv_buf_init(cipher_in, sizeof(cipher_in));
}

static int raw_start(mg_tls_link_t *l)
{
    if (l->raw_reading)
        return 0;
    int rc = uv_read_start(l->s, raw_alloc, l->raw_read);
    l->raw_reading = rc == 0;
    return rc;
}

static void raw_stop(mg_tls_link_t *l)
{
    if (l->raw_reading)
        uv_read_stop(l->s);
    l->raw_reading = 0;
}

/* Why verification failed, as a label and a sentence for the log. */
static void failure_reason(mg_tls_link_t *l, const char *why)
{
    long vr = SSL_get_verify_result(mg_tls_conn_ssl(l->t));
    l->failure = "handshake";
    if (vr == X509_V_OK || !l->c->verify) {
        snprintf(l->errbuf, sizeof(l->errbuf), "TLS handshake failed: %s", why);
        l->err = l->errbuf;
        return;
    }
    switch (vr) {
    case X509_V_ERR_CERT_HAS_EXPIRED: l->failure = "expired"; break;
    case X509_V_ERR_CERT_NOT_YET_VALID: l->failure = "not_yet_valid"; break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: l->failure = "hostname"; break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: l->failure = "unknown_ca"; break;
    default: l->failure = "verify";
    }
    snprintf(l->errbuf, sizeof(l->errbuf), "TLS certificate verify failed: %s (%s)",
             X509_verify_cert_error_string(vr), l->key);
    l->err = l->errbuf;
}

static void handshake_failed(mg_tls_link_t *l, const char *why)
{
    failure_reason(l, why);
    l->handshaking = 0;
    mg_metrics_upstream_tls(l->c->label, 1, l->failure);
    raw_stop(l);
    l->ready(l->owner, l->err);
}

/* Hands the owner the plaintext TLS holds, while it reads. The owner's
 * buffer is asked for only once there is plaintext: an idle pooled
 * connection that receives a session ticket takes no read buffer. */
static void pump(mg_tls_link_t *l)
{
    while (l->plain_reading && !l->closed) {
        uv_buf_t b = uv_buf_init(NULL, 0);
        int n = mg_tls_peek(l->t);
        if (n > 0) {
            l->alloc((uv_handle_t *)l->s, 65536, &b);
            if (!b.base || b.len == 0) {
                l->read(l->s, UV_ENOBUFS, &b);
                return;
            }
            n = mg_tls_read(l->t, b.base, b.len);
        }
        if (flush(l) < 0) {
            l->err = "write failed";
            l->read(l->s, UV_EPIPE, &b);
            return;
        }
        if (n > 0) {
            l->got_plain = 1;
            l->read(l->s, n, &b);
            continue;
        }
        if (n == MG_TLS_AGAIN)
            return;
        l->err = n == MG_TLS_CLOSED ? NULL : mg_tls_error(l->t);
        if (n == MG_TLS_ERROR && !l->got_plain) {
            /* TLS 1.3 servers judge the client's certificate after the
             * client's handshake ended: their refusal is an alert here */
            l->failure = strstr(l->err, "certificate required") ? "client_cert" : "handshake";
            mg_metrics_upstream_tls(l->c->label, 1, l->failure);
        }
        l->read(l->s, n == MG_TLS_CLOSED ? UV_EOF : UV_EPROTO, &b);
        return;
    }
}

static void handshake_step(mg_tls_link_t *l)
{
    int rc = mg_tls_read(l->t, NULL, 0);
    if (flush(l) < 0) {
        handshake_failed(l, "cannot write to the server");
        return;
    }
    if (mg_tls_handshake_done(l->t)) {
        l->handshaking = 0;
        l->handshaken = 1;
        mg_metrics_upstream_tls(l->c->label, 0, mg_tls_link_resumed(l) ? "resumed" : "full");
        if (!l->plain_reading)
            raw_stop(l);
        l->ready(l->owner, NULL);
        if (!l->closed)
            pump(l); /* records that came with the last handshake message */
        return;
    }
    if (rc == MG_TLS_ERROR)
        handshake_failed(l, mg_tls_error(l->t));
}

void mg_tls_link_on_read(mg_tls_link_t *l, ssize_t nread, const uv_buf_t *b)
{
    if (l->closed || nread == 0)
        return;
    if (nread < 0) {
        if (l->handshaking) {
            handshake_failed(l, nread == UV_EOF ? "the server closed the connection"
                                                : uv_strerror((int)nread));
            return;
        }
        uv_buf_t none = uv_buf_init(NULL, 0);
        l->read(l->s, nread, &none);
        return;
    }
    if (mg_tls_feed(l->t, b->base, (size_t)nread) < 0) {
        if (l->handshaking) {
            handshake_failed(l, "out of memory");
        } else {
            uv_buf_t none = uv_buf_init(NULL, 0);
            l->err = "out of memory";
            l->read(l->s, UV_EPROTO, &none);
        }
        return;
    }
    if (l->handshaking)
        handshake_step(l);
    else
        pump(l);
}

static void on_pump(uv_idle_t *h)
{
    mg_tls_link_t *l = h->data;
    uv_idle_stop(h);
    pump(l);
}

int mg_tls_link_handshake(mg_tls_link_t *l, mg_tls_ready_cb cb, void *owner)
{
    l->ready = cb;
    l->owner = owner;
    l->handshaking = 1;
    int rc = raw_start(l);
    if (rc < 0)
        return rc;
    mg_tls_read(l->t, NULL, 0); /* the ClientHello */
    return flush(l);
}

int mg_tls_link_write(mg_tls_link_t *l, const uv_buf_t *bufs, unsigned n)
{
    if (mg_tls_writev(l->t, bufs, n) < 0) {
        l->err = mg_tls_error(l->t);
        return UV_EPROTO;
    }
    return flush(l);
}

int mg_tls_link_read_start(mg_tls_link_t *l, uv_alloc_cb alloc, uv_read_cb read)
{
    l->alloc = alloc;
    l->read = read;
    l->plain_reading = 1;
    if (!l->handshaken)
        return 0; /* reading starts with the handshake */
    int rc = raw_start(l);
    /* input TLS already holds will not make the socket readable again */
    if (rc == 0 && mg_tls_has_input(l->t)) /* decrypted, or still in the input BIO */
        uv_idle_start(&l->pump, on_pump);
    return rc;
}

void mg_tls_link_read_stop(mg_tls_link_t *l)
{
    l->plain_reading = 0;
    uv_idle_stop(&l->pump);
    if (!l->handshaking)
        raw_stop(l);
}

static void on_link_closed(uv_handle_t *h)
{
    mg_tls_link_t *l = h->data;
    mg_tls_conn_free(l->t);
    mg_tls_client_release(l->c);
    free(l);
}

void mg_tls_link_close(mg_tls_link_t *l)
{
    if (!l || l->closed)
        return;
    l->closed = 1;
    raw_stop(l);
    if (l->handshaken && l->wq->pending == 0 && !l->wq->closed) {
        mg_tls_shutdown(l->t);
        flush(l);
    }
    uv_close((uv_handle_t *)&l->pump, on_link_closed);
}

const char *mg_tls_link_failure(const mg_tls_link_t *l) { return l->failure ? l->failure : "handshake"; }

const char *mg_tls_link_error(const mg_tls_link_t *l) { return l->err ? l->err : "TLS error"; }

int mg_tls_link_resumed(const mg_tls_link_t *l) { return SSL_session_reused(mg_tls_conn_ssl(l->t)); }
