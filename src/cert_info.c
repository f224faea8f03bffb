/* cert_info.c: the text of an X.509 certificate's fields, for hooks (the
 * client certificate section of mg_ffi.h): a TLS client's certificate
 * (borrowed from its connection, tls.c) or one the testing kit parsed from
 * PEM with mg_ffi_cert_from_pem (owned by the caller until
 * mg_ffi_cert_free). Fields are only read, never cached or kept.
 *
 * Formats, chosen so that a hook compares them to what operators see:
 * subject and issuer as RFC 2253 strings (`openssl x509 -nameopt RFC2253`:
 * "CN=client,O=Acme"), the serial in upper-case hex like `openssl x509
 * -serial`, the SHA-256 fingerprint of the DER in lower-case hex without
 * colons (Envoy's XFCC Hash form), dates as ISO 8601 UTC
 * ("2026-12-02T05:00:00Z"), SANs one value per index. Nothing is cached:
 * the Lua side asks once per request and keeps the answers.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mg_ffi.h"

/* Copies n bytes when they fit; the length either way. */
static int put(const char *s, size_t n, char *buf, size_t cap)
{
    if (n <= cap)
        memcpy(buf, s, n);
    return n > (size_t)0x7fffffff ? -1 : (int)n;
}

/* Whatever a BIO collected, then frees it. */
static int put_bio(BIO *b, int ok, char *buf, size_t cap)
{
    char *d = NULL;
    long n = b ? BIO_get_mem_data(b, &d) : 0;
    int rc = ok && n >= 0 ? put(d, (size_t)n, buf, cap) : -1;
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int name_field(const X509_NAME *name, char *buf, size_t cap)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = b && name && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0;
    return put_bio(b, ok, buf, cap);
}

static int serial_field(const X509 *x, char *buf, size_t cap)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    int rc = hex ? put(hex, strlen(hex), buf, cap) : -1;
    OPENSSL_free(hex);
    BN_free(bn);
    ERR_clear_error();
    return rc;
}

static int fingerprint_field(const X509 *x, char *buf, size_t cap)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    char hex[2 * EVP_MAX_MD_SIZE];
    if (X509_digest(x, EVP_sha256(), md, &n) != 1) {
        ERR_clear_error();
        return -1;
    }
    for (unsigned i = 0; i < n; i++) {
        hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    return put(hex, 2 * (size_t)n, buf, cap);
}

static int time_field(const ASN1_TIME *t, char *buf, size_t cap)
{
    struct tm tm;
    char s[32];
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        ERR_clear_error();
        return -1;
    }
    size_t n = strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return n ? put(s, n, buf, cap) : -1;
}

static int pem_field(const X509 *x, char *buf, size_t cap)
{
    BIO *b = BIO_new(BIO_s_mem());
    int ok = b && PEM_write_bio_X509(b, (X509 *)x) == 1;
    return put_bio(b, ok, buf, cap);
}

/* The idx-th subjectAltName of GEN_* kind `type`. */
static int san_field(const X509 *x, int type, int idx, char *buf, size_t cap)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = -1;
    for (int i = 0, seen = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type)
            continue;
        if (seen++ == idx) {
            const ASN1_IA5STRING *s = g->d.ia5; /* dNSName, URI, rfc822Name alike */
            rc = put((const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s),
                     buf, cap);
            break;
        }
    }
    GENERAL_NAMES_free(names);
    ERR_clear_error();
    return rc;
}

int mg_ffi_cert_field(const void *x509, int what, int idx, char *buf, size_t cap)
{
    const X509 *x = x509;
    if (!x)
        return -1;
    switch (what) {
    case MG_CERT_SUBJECT:
        return name_field(X509_get_subject_name(x), buf, cap);
    case MG_CERT_ISSUER:
        return name_field(X509_get_issuer_name(x), buf, cap);
    case MG_CERT_SERIAL:
        return serial_field(x, buf, cap);
    case MG_CERT_FINGERPRINT:
        return fingerprint_field(x, buf, cap);
    case MG_CERT_NOT_BEFORE:
        return time_field(X509_get0_notBefore(x), buf, cap);
    case MG_CERT_NOT_AFTER:
        return time_field(X509_get0_notAfter(x), buf, cap);
    case MG_CERT_PEM:
        return pem_field(x, buf, cap);
    case MG_CERT_DNS:
        return san_field(x, GEN_DNS, idx, buf, cap);
    case MG_CERT_URI:
        return san_field(x, GEN_URI, idx, buf, cap);
    case MG_CERT_EMAIL:
        return san_field(x, GEN_EMAIL, idx, buf, cap);
    default:
        return -1;
    }
}

void *mg_ffi_cert_from_pem(const char *pem, size_t len)
{
    if (len > 1 << 20)
        return NULL;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return x;
}

void mg_ffi_cert_free(void *x509) { X509_free(x509); }
