/* crypto.c: JWS signature verification keys over OpenSSL's libcrypto (see
 * the crypto section of mg_ffi.h; the Lua side is lua/moongate/jwk.lua and
 * lua/moongate/jwt.lua).
 *
 * A key is built once, when a config loads, and never changes after that
 * (mg_ffi_crypto_key_restrict is part of building it), so verifying needs
 * no lock and any thread may verify with a key at the same time.
 *
 * HMAC (HS256/384/512) is the hot case: a gateway checks a token on every
 * request. OpenSSL 3.0's EVP_MAC and HMAC_CTX both allocate or fetch on
 * every use (EVP_MAC_CTX_dup ~630 ns, an HMAC_CTX re-initialised with its
 * key ~225 ns, a one-shot HMAC() ~1.4 us for a 160-byte token on the
 * development box), so a secret key instead keeps the hash states that
 * have already absorbed the inner and the outer padded key, computed once;
 * a verification copies the two states on the stack, feeds the signing
 * input and the inner digest, and compares with CRYPTO_memcmp: ~170 ns, no
 * allocation, no lock. That uses the SHA-2 functions OpenSSL 3.0 marks
 * deprecated (still built, and still dispatching to the SHA-NI/AVX2 code),
 * hence OPENSSL_API_COMPAT below; if they ever go, the fallback is an
 * HMAC_CTX per key and thread.
 *
 * RSA, RSA-PSS, ECDSA and EdDSA go through EVP_DigestVerify with an
 * EVP_MD_CTX made per call: the public-key operation (tens of
 * microseconds for RSA-2048) dwarfs that allocation. JWS carries ECDSA
 * signatures as the raw big-endian r || s (RFC 7518 §3.4); they are
 * re-encoded as the DER ECDSA-Sig-Value OpenSSL expects, on the stack.
 *
 * Every failed OpenSSL call is followed by ERR_clear_error(): the error
 * queue is per thread, and a stale entry would confuse the next TLS call
 * of the worker.
 *
 * The file ends with the other half of a JWT's per-request cost: a strict
 * tokeniser for flat JSON objects (the usual claims set), so that Lua
 * builds the claims table without a general JSON decoder.
 *
 * Last, what the key_auth and basic_auth policies need: SHA-256 digests of
 * API keys, a constant-time compare, and htpasswd hashes checked through
 * libxcrypt's crypt_rn (Debian 12: bcrypt $2b$/$2y$, SHA-crypt $5$/$6$,
 * yescrypt, ...).
 *
 * Memory: keys are calloc'd here and owned by the caller (Lua: ffi.gc);
 * everything else writes only into the caller's buffers or the stack.
 */
#define OPENSSL_API_COMPAT 10101 /* SHA256_Init & co without warnings */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <crypt.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "mg_ffi.h"

#define MIN_RSA_BITS 2048 /* RFC 7518 §3.3 */
#define MAX_SIG 1024      /* bytes: RSA up to 8192 bits */

enum { KIND_OCT = 1, KIND_RSA, KIND_RSA_PSS, KIND_EC, KIND_OKP };

#define BIT(a) (1u << (a))
#define ALGS_HS (BIT(MG_JWS_HS256) | BIT(MG_JWS_HS384) | BIT(MG_JWS_HS512))
#define ALGS_RS (BIT(MG_JWS_RS256) | BIT(MG_JWS_RS384) | BIT(MG_JWS_RS512))
#define ALGS_PS (BIT(MG_JWS_PS256) | BIT(MG_JWS_PS384) | BIT(MG_JWS_PS512))

struct mg_crypto_key_s {
    int kind;
    int bits;
    unsigned algs;  /* BIT(alg) for each algorithm the key may verify */
    EVP_PKEY *pkey; /* owned; NULL for a secret */
    /* secret keys: hash states after the inner / outer padded key */
    SHA256_CTX h256[2];
    SHA512_CTX h384[2];
    SHA512_CTX h512[2];
};

/* ---- base64url (RFC 4648 §5), strict ------------------------------------ */

/* value of each character, 0x100 when it is not in the alphabet */
/* clang-format off */
static const uint16_t B64[256] = {
#define X 0x100
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, 62, X, X,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X, X, X, X, X, X,
    X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X, X, X, X, 63,
    X, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
#undef X
};
/* clang-format on */

static const char B64_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Decodes IN (LEN characters) into OUT, which has room for CAP bytes.
 * Refuses padding, characters outside the URL-safe alphabet, a length of
 * 4n+1 and set bits after the last full byte (each byte string has exactly
 * one encoding). Returns the decoded length, -1 if IN is not canonical
 * base64url, -2 if OUT is too small. */
static long b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t rem = len % 4, full = len - rem, i, o = 0;
    size_t need = len / 4 * 3 + (rem ? rem - 1 : 0);
    unsigned bad = 0;

    if (rem == 1)
        return -1;
    if (need > cap)
        return -2;
    for (i = 0; i < full; i += 4) {
        unsigned a = B64[s[i]], b = B64[s[i + 1]], c = B64[s[i + 2]], d = B64[s[i + 3]];
        unsigned v = a << 18 | b << 12 | c << 6 | d;
        bad |= a | b | c | d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    if (rem == 2) {
        unsigned a = B64[s[i]], b = B64[s[i + 1]];
        bad |= a | b | (b & 0x0f ? 0x100 : 0); /* 4 bits beyond the byte */
        out[o++] = (unsigned char)(a << 2 | (b & 0x3f) >> 4);
    } else if (rem == 3) {
        unsigned a = B64[s[i]], b = B64[s[i + 1]], c = B64[s[i + 2]];
        unsigned v = a << 10 | b << 4 | c >> 2;
        bad |= a | b | c | (c & 0x03 ? 0x100 : 0); /* 2 bits beyond */
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    /* 0x100: a character outside the alphabet, or non-zero bits that a
     * canonical encoding leaves at zero */
    return bad & 0x100 ? -1 : (long)o;
}

int mg_ffi_b64url_decode(const char *in, size_t len, unsigned char *out, size_t *outlen)
{
    long n = b64url_decode(in, len, out, *outlen);
    if (n < 0)
        return n == -2 ? MG_JWS_ESPACE : MG_FFI_EINVAL;
    *outlen = (size_t)n;
    return 0;
}

size_t mg_ffi_b64url_encode(const unsigned char *in, size_t len, char *out)
{
    size_t i, o = 0;
    for (i = 0; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64_ALPHABET[v >> 18];
        out[o++] = B64_ALPHABET[(v >> 12) & 63];
        out[o++] = B64_ALPHABET[(v >> 6) & 63];
        out[o++] = B64_ALPHABET[v & 63];
    }
    if (len - i == 1) {
        out[o++] = B64_ALPHABET[in[i] >> 2];
        out[o++] = B64_ALPHABET[(in[i] & 3) << 4];
    } else if (len - i == 2) {
        unsigned v = (unsigned)in[i] << 8 | in[i + 1];
        out[o++] = B64_ALPHABET[v >> 10];
        out[o++] = B64_ALPHABET[(v >> 4) & 63];
        out[o++] = B64_ALPHABET[(v & 15) << 2];
    }
    return o;
}

/* ---- keys ---------------------------------------------------------------- */

static mg_crypto_key_t *key_new(int kind)
{
    mg_crypto_key_t *k = calloc(1, sizeof(*k));
    if (k != NULL)
        k->kind = kind;
    return k;
}

void mg_ffi_crypto_key_free(mg_crypto_key_t *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    OPENSSL_cleanse(k, sizeof(*k)); /* the secret's hash states */
    free(k);
}

unsigned mg_ffi_crypto_key_algs(const mg_crypto_key_t *k)
{
    return k->algs;
}

unsigned mg_ffi_crypto_key_restrict(mg_crypto_key_t *k, unsigned algs)
{
    k->algs &= algs;
    return k->algs;
}

const char *mg_ffi_crypto_key_type(const mg_crypto_key_t *k, int *bits)
{
    static const char *const names[] = { "?", "oct", "RSA", "RSA-PSS", "EC", "OKP" };
    *bits = k->bits;
    return names[k->kind];
}

/* Absorbs the HMAC key block (RFC 2104) XORed with PAD into CTX. */
#define HMAC_PREP(init, update, ctx, block, key, klen, pad)                                        \
    do {                                                                                           \
        unsigned char blk_[128];                                                                   \
        size_t i_;                                                                                 \
        memset(blk_, pad, block);                                                                  \
        for (i_ = 0; i_ < (klen); i_++)                                                            \
            blk_[i_] ^= (key)[i_];                                                                 \
        init(ctx);                                                                                 \
        update(ctx, blk_, block);                                                                  \
        OPENSSL_cleanse(blk_, sizeof(blk_));                                                       \
    } while (0)

mg_crypto_key_t *mg_ffi_crypto_key_secret(const unsigned char *secret, size_t len, const char **err)
{
    unsigned char kd[SHA512_DIGEST_LENGTH];
    const unsigned char *kp;
    size_t kl;
    mg_crypto_key_t *k;

    /* RFC 7518 §3.2: a key at least as long as the hash output */
    if (len < 32) {
        *err = "too short: HS256 needs a secret of at least 32 bytes (RFC 7518 section 3.2)";
        return NULL;
    }
    k = key_new(KIND_OCT);
    if (k == NULL) {
        *err = "out of memory";
        return NULL;
    }
    k->bits = (int)(len * 8);
    k->algs = BIT(MG_JWS_HS256) | (len >= 48 ? BIT(MG_JWS_HS384) : 0) |
              (len >= 64 ? BIT(MG_JWS_HS512) : 0);

    /* a key longer than the hash's block is replaced by its digest */
    kp = secret, kl = len;
    if (len > 64) {
        SHA256(secret, len, kd);
        kp = kd, kl = SHA256_DIGEST_LENGTH;
    }
    HMAC_PREP(SHA256_Init, SHA256_Update, &k->h256[0], 64, kp, kl, 0x36);
    HMAC_PREP(SHA256_Init, SHA256_Update, &k->h256[1], 64, kp, kl, 0x5c);

    kp = secret, kl = len;
    if (len > 128) {
        SHA384(secret, len, kd);
        kp = kd, kl = SHA384_DIGEST_LENGTH;
    }
    HMAC_PREP(SHA384_Init, SHA384_Update, &k->h384[0], 128, kp, kl, 0x36);
    HMAC_PREP(SHA384_Init, SHA384_Update, &k->h384[1], 128, kp, kl, 0x5c);

    kp = secret, kl = len;
    if (len > 128) {
        SHA512(secret, len, kd);
        kp = kd, kl = SHA512_DIGEST_LENGTH;
    }
    HMAC_PREP(SHA512_Init, SHA512_Update, &k->h512[0], 128, kp, kl, 0x36);
    HMAC_PREP(SHA512_Init, SHA512_Update, &k->h512[1], 128, kp, kl, 0x5c);
    OPENSSL_cleanse(kd, sizeof(kd));
    return k;
}

/* The EC curves JWS knows (RFC 7518 §3.4), by the names OpenSSL may give. */
static const struct {
    const char *jose, *ossl, *nist;
    int bits, alg;
} CURVES[] = {
    { "P-256", "prime256v1", "P-256", 256, MG_JWS_ES256 },
    { "P-384", "secp384r1", "P-384", 384, MG_JWS_ES384 },
    { "P-521", "secp521r1", "P-521", 521, MG_JWS_ES512 },
};

/* Fills in kind, bits and algs from K->pkey. Returns 0 or -1 with *ERR. */
static int classify(mg_crypto_key_t *k, const char **err)
{
    EVP_PKEY *p = k->pkey;

    if (EVP_PKEY_is_a(p, "RSA") || EVP_PKEY_is_a(p, "RSA-PSS")) {
        k->bits = EVP_PKEY_get_bits(p);
        if (k->bits < MIN_RSA_BITS) {
            *err = "RSA key too short: at least 2048 bits (RFC 7518 section 3.3)";
            return -1;
        }
        if (EVP_PKEY_is_a(p, "RSA-PSS")) {
            /* an id-RSASSA-PSS key is only for PSS (RFC 4055) */
            k->kind = KIND_RSA_PSS;
            k->algs = ALGS_PS;
        } else {
            k->kind = KIND_RSA;
            k->algs = ALGS_RS | ALGS_PS;
        }
        return 0;
    }
    if (EVP_PKEY_is_a(p, "EC")) {
        char name[64];
        size_t nlen = 0, i;
        if (EVP_PKEY_get_group_name(p, name, sizeof(name), &nlen) != 1) {
            ERR_clear_error();
            *err = "EC key without a named curve";
            return -1;
        }
        for (i = 0; i < sizeof(CURVES) / sizeof(CURVES[0]); i++) {
            if (strcmp(name, CURVES[i].ossl) == 0 || strcmp(name, CURVES[i].nist) == 0) {
                k->kind = KIND_EC;
                k->bits = CURVES[i].bits;
                k->algs = BIT(CURVES[i].alg);
                return 0;
            }
        }
        *err = "unsupported EC curve (P-256, P-384 and P-521 are)";
        return -1;
    }
    if (EVP_PKEY_is_a(p, "ED25519")) {
        k->kind = KIND_OKP;
        k->bits = 256;
        k->algs = BIT(MG_JWS_EDDSA) | BIT(MG_JWS_ED25519);
        return 0;
    }
    if (EVP_PKEY_is_a(p, "ED448")) {
        k->kind = KIND_OKP;
        k->bits = 456;
        k->algs = BIT(MG_JWS_EDDSA) | BIT(MG_JWS_ED448);
        return 0;
    }
    *err = "unsupported key type (RSA, EC P-256/384/521, Ed25519 and Ed448 are)";
    return -1;
}

/* Takes ownership of P (freed on failure). */
static mg_crypto_key_t *key_from_pkey(EVP_PKEY *p, const char **err)
{
    mg_crypto_key_t *k = key_new(0);
    if (k == NULL) {
        EVP_PKEY_free(p);
        *err = "out of memory";
        return NULL;
    }
    k->pkey = p;
    if (classify(k, err) != 0) {
        mg_ffi_crypto_key_free(k);
        return NULL;
    }
    return k;
}

static EVP_PKEY *decode_pubkey(const char *pem, size_t len)
{
    EVP_PKEY *p = NULL;
    const unsigned char *data = (const unsigned char *)pem;
    size_t dlen = len;
    /* any public key PEM: SubjectPublicKeyInfo ("PUBLIC KEY") or PKCS#1
     * ("RSA PUBLIC KEY") */
    OSSL_DECODER_CTX *dc =
        OSSL_DECODER_CTX_new_for_pkey(&p, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    if (dc == NULL)
        return NULL;
    if (OSSL_DECODER_from_data(dc, &data, &dlen) != 1) {
        EVP_PKEY_free(p);
        p = NULL;
    }
    OSSL_DECODER_CTX_free(dc);
    return p;
}

mg_crypto_key_t *mg_ffi_crypto_key_pem(const char *pem, size_t len, const char **err)
{
    EVP_PKEY *p = NULL;
    BIO *bio;

    if (len > INT32_MAX) {
        *err = "PEM too large";
        return NULL;
    }
    if (memmem(pem, len, "PRIVATE KEY-----", 16) != NULL) {
        *err = "the PEM holds a private key: give the public key "
               "(openssl pkey -pubout) or a certificate";
        return NULL;
    }
    if (memmem(pem, len, "-----BEGIN CERTIFICATE-----", 27) != NULL) {
        X509 *x;
        bio = BIO_new_mem_buf(pem, (int)len);
        x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (x != NULL) {
            p = X509_get_pubkey(x);
            X509_free(x);
        }
        if (p == NULL) {
            ERR_clear_error();
            *err = "bad PEM certificate";
            return NULL;
        }
        return key_from_pkey(p, err);
    }
    p = decode_pubkey(pem, len);
    if (p == NULL) {
        ERR_clear_error();
        *err = "not a PEM public key or certificate";
        return NULL;
    }
    return key_from_pkey(p, err);
}

/* Builds a public key of TYPE from PARAMS (EVP_PKEY_fromdata). */
static EVP_PKEY *from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *p = NULL;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (pc == NULL || EVP_PKEY_fromdata_init(pc) != 1 ||
        EVP_PKEY_fromdata(pc, &p, EVP_PKEY_PUBLIC_KEY, params) != 1)
        p = NULL;
    EVP_PKEY_CTX_free(pc);
    return p;
}

/* Checks the public key with OpenSSL (RSA: modulus and exponent sane;
 * EC: the point is on the curve). */
static int public_check(EVP_PKEY *p)
{
    int ok;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, p, NULL);
    ok = pc != NULL && EVP_PKEY_public_check(pc) == 1;
    EVP_PKEY_CTX_free(pc);
    return ok;
}

mg_crypto_key_t *mg_ffi_crypto_key_rsa(const unsigned char *n, size_t nlen, const unsigned char *e,
                                       size_t elen, const char **err)
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    BIGNUM *bn = NULL, *be = NULL;
    EVP_PKEY *p = NULL;

    /* RFC 7518 §6.3.1: unsigned big-endian without leading zero bytes */
    if (nlen == 0 || elen == 0 || elen > 8) {
        *err = "bad RSA key: empty n or e, or e too long";
        return NULL;
    }
    bn = BN_bin2bn(n, (int)nlen, NULL);
    be = BN_bin2bn(e, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn != NULL && be != NULL && bld != NULL &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        params = OSSL_PARAM_BLD_to_param(bld);
    if (params != NULL)
        p = from_params("RSA", params);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    if (p == NULL || !public_check(p)) {
        EVP_PKEY_free(p);
        ERR_clear_error();
        *err = "bad RSA key (n, e)";
        return NULL;
    }
    return key_from_pkey(p, err);
}

mg_crypto_key_t *mg_ffi_crypto_key_ec(const char *crv, const unsigned char *x, size_t xlen,
                                      const unsigned char *y, size_t ylen, const char **err)
{
    unsigned char pt[1 + 2 * 66];
    OSSL_PARAM params[3];
    EVP_PKEY *p;
    size_t i, clen = 0;
    const char *group = NULL;

    for (i = 0; i < sizeof(CURVES) / sizeof(CURVES[0]); i++) {
        if (strcmp(crv, CURVES[i].jose) == 0) {
            group = CURVES[i].ossl;
            clen = ((size_t)CURVES[i].bits + 7) / 8;
        }
    }
    if (group == NULL) {
        *err = "unsupported EC curve (P-256, P-384 and P-521 are)";
        return NULL;
    }
    /* RFC 7518 §6.2.1.2: x and y are the full size of a coordinate */
    if (xlen != clen || ylen != clen) {
        *err = "bad EC key: x and y must be the curve's coordinate size";
        return NULL;
    }
    pt[0] = 0x04; /* uncompressed point */
    memcpy(pt + 1, x, clen);
    memcpy(pt + 1 + clen, y, clen);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * clen);
    params[2] = OSSL_PARAM_construct_end();
    p = from_params("EC", params);
    if (p == NULL || !public_check(p)) {
        EVP_PKEY_free(p);
        ERR_clear_error();
        *err = "bad EC key: the point is not on the curve";
        return NULL;
    }
    return key_from_pkey(p, err);
}

mg_crypto_key_t *mg_ffi_crypto_key_okp(const char *crv, const unsigned char *x, size_t xlen,
                                       const char **err)
{
    EVP_PKEY *p;
    const char *type;
    size_t want;

    if (strcmp(crv, "Ed25519") == 0)
        type = "ED25519", want = 32;
    else if (strcmp(crv, "Ed448") == 0)
        type = "ED448", want = 57;
    else {
        *err = "unsupported OKP curve (Ed25519 and Ed448 are)";
        return NULL;
    }
    if (xlen != want) {
        *err = "bad OKP key: wrong length of x";
        return NULL;
    }
    p = EVP_PKEY_new_raw_public_key_ex(NULL, type, NULL, x, xlen);
    if (p == NULL) {
        ERR_clear_error();
        *err = "bad OKP key";
        return NULL;
    }
    return key_from_pkey(p, err);
}

/* ---- verification ---------------------------------------------------------- */

/* HMAC of IN with the key's prepared states for ALG into MAC; returns its
 * length, 0 for an algorithm that is not HMAC. */
static size_t hmac(const mg_crypto_key_t *k, int alg, const unsigned char *in, size_t len,
                   unsigned char *mac)
{
    switch (alg) {
    case MG_JWS_HS256: {
        SHA256_CTX c = k->h256[0];
        SHA256_Update(&c, in, len);
        SHA256_Final(mac, &c);
        c = k->h256[1];
        SHA256_Update(&c, mac, SHA256_DIGEST_LENGTH);
        SHA256_Final(mac, &c);
        OPENSSL_cleanse(&c, sizeof(c));
        return SHA256_DIGEST_LENGTH;
    }
    case MG_JWS_HS384: {
        SHA512_CTX c = k->h384[0];
        SHA384_Update(&c, in, len);
        SHA384_Final(mac, &c);
        c = k->h384[1];
        SHA384_Update(&c, mac, SHA384_DIGEST_LENGTH);
        SHA384_Final(mac, &c);
        OPENSSL_cleanse(&c, sizeof(c));
        return SHA384_DIGEST_LENGTH;
    }
    case MG_JWS_HS512: {
        SHA512_CTX c = k->h512[0];
        SHA512_Update(&c, in, len);
        SHA512_Final(mac, &c);
        c = k->h512[1];
        SHA512_Update(&c, mac, SHA512_DIGEST_LENGTH);
        SHA512_Final(mac, &c);
        OPENSSL_cleanse(&c, sizeof(c));
        return SHA512_DIGEST_LENGTH;
    }
    }
    return 0;
}

/* One DER INTEGER from the unsigned big-endian V (N bytes, N <= 66) into
 * OUT; returns the bytes written (at most 69). */
static size_t der_uint(unsigned char *out, const unsigned char *v, size_t n)
{
    size_t pad;
    while (n > 1 && v[0] == 0)
        v++, n--;
    pad = v[0] & 0x80 ? 1 : 0;
    out[0] = 0x02;
    out[1] = (unsigned char)(n + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, v, n);
    return 2 + pad + n;
}

/* r || s (SLEN bytes, two halves) as a DER ECDSA-Sig-Value into OUT (room
 * for 3 + 2 * 69 bytes). Returns its length. */
static size_t ecdsa_der(const unsigned char *sig, size_t slen, unsigned char *out)
{
    unsigned char body[2 * 69];
    size_t half = slen / 2, blen, o = 0;

    blen = der_uint(body, sig, half);
    blen += der_uint(body + blen, sig + half, half);
    out[o++] = 0x30;
    if (blen > 127)
        out[o++] = 0x81;
    out[o++] = (unsigned char)blen;
    memcpy(out + o, body, blen);
    return o + blen;
}

static const char *md_name(int alg)
{
    switch (alg) {
    case MG_JWS_RS256:
    case MG_JWS_PS256:
    case MG_JWS_ES256:
        return "SHA256";
    case MG_JWS_RS384:
    case MG_JWS_PS384:
    case MG_JWS_ES384:
        return "SHA384";
    case MG_JWS_RS512:
    case MG_JWS_PS512:
    case MG_JWS_ES512:
        return "SHA512";
    }
    return NULL; /* EdDSA: no separate digest */
}

/* The public-key algorithms: 1 valid, 0 not, MG_JWS_EINTERNAL. */
static int pkey_verify(const mg_crypto_key_t *k, int alg, const unsigned char *in, size_t len,
                       const unsigned char *sig, size_t slen)
{
    unsigned char der[3 + 2 * 69];
    EVP_MD_CTX *mc;
    EVP_PKEY_CTX *pc = NULL;
    int rc;

    if (alg >= MG_JWS_ES256 && alg <= MG_JWS_ES512) {
        size_t want = 2 * (((size_t)k->bits + 7) / 8);
        if (slen != want)
            return 0;
        slen = ecdsa_der(sig, slen, der);
        sig = der;
    }
    mc = EVP_MD_CTX_new();
    if (mc == NULL)
        return MG_JWS_EINTERNAL;
    if (EVP_DigestVerifyInit_ex(mc, &pc, md_name(alg), NULL, NULL, k->pkey, NULL) != 1) {
        rc = MG_JWS_EINTERNAL;
        goto done;
    }
    if (alg >= MG_JWS_PS256 && alg <= MG_JWS_PS512) {
        /* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash */
        if (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, md_name(alg), NULL) != 1) {
            rc = MG_JWS_EINTERNAL;
            goto done;
        }
    } else if (k->kind == KIND_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1) {
            rc = MG_JWS_EINTERNAL;
            goto done;
        }
    }
    rc = EVP_DigestVerify(mc, sig, slen, in, len) == 1 ? 1 : 0;
done:
    EVP_MD_CTX_free(mc);
    ERR_clear_error();
    return rc;
}

int mg_ffi_crypto_verify(const mg_crypto_key_t *k, int alg, const unsigned char *in, size_t len,
                         const unsigned char *sig, size_t slen)
{
    if (alg < 1 || alg > 31 || !(k->algs & BIT(alg)))
        return MG_JWS_EALG;
    if (k->kind == KIND_OCT) {
        unsigned char mac[SHA512_DIGEST_LENGTH];
        size_t mlen = hmac(k, alg, in, len, mac);
        int ok = mlen != 0 && slen == mlen && CRYPTO_memcmp(mac, sig, mlen) == 0;
        OPENSSL_cleanse(mac, sizeof(mac));
        return ok;
    }
    return pkey_verify(k, alg, in, len, sig, slen);
}

int mg_ffi_jws_verify(const mg_crypto_key_t *k, int alg, const char *token, size_t len, size_t dot1,
                      size_t dot2, unsigned char *payload, size_t *plen)
{
    unsigned char sig[MAX_SIG];
    long slen, n;
    int rc;

    if (!(dot1 < dot2 && dot2 < len && token[dot1] == '.' && token[dot2] == '.'))
        return MG_JWS_ESHAPE;
    if (alg < 1 || alg > 31 || !(k->algs & BIT(alg)))
        return MG_JWS_EALG;
    slen = b64url_decode(token + dot2 + 1, len - dot2 - 1, sig, sizeof(sig));
    if (slen == -1)
        return MG_JWS_ESIG64;
    if (slen == -2)
        return 0; /* longer than any signature we can check */
    rc = mg_ffi_crypto_verify(k, alg, (const unsigned char *)token, dot2, sig, (size_t)slen);
    if (rc != 1 || payload == NULL)
        return rc;
    n = b64url_decode(token + dot1 + 1, dot2 - dot1 - 1, payload, *plen);
    if (n < 0)
        return n == -2 ? MG_JWS_ESPACE : MG_JWS_EPAYLOAD64;
    *plen = (size_t)n;
    return 1;
}

int mg_ffi_crypto_hmac(const mg_crypto_key_t *k, int alg, const unsigned char *in, size_t len,
                       unsigned char *mac, size_t *maclen)
{
    size_t n;
    if (k->kind != KIND_OCT || alg < 1 || alg > 31 || !(k->algs & BIT(alg)))
        return MG_JWS_EALG;
    if (*maclen < SHA512_DIGEST_LENGTH)
        return MG_JWS_ESPACE;
    n = hmac(k, alg, in, len, mac);
    if (n == 0)
        return MG_JWS_EALG;
    *maclen = n;
    return 0;
}

/* ---- JWT claims: flat JSON objects ----------------------------------------- */

/* Claims sets are small flat objects ({"sub":"x","exp":1700000000,
 * "aud":["a","b"]}). Tokenising them here and building the Lua table from
 * the tokens costs about half of a general decoder's call (cjson builds a
 * scratch buffer per call and parses numbers with strtod). Anything else
 * (nested objects, arrays in arrays, long numbers, too many members) is
 * left to the general decoder: MG_JSON_ENOTFLAT. The grammar is RFC 8259's,
 * strictly: no comments, no trailing commas, no NaN, no leading zeros. */

typedef struct {
    const unsigned char *p, *end, *base;
    char *sb; /* unescaped strings */
    size_t sused, scap;
} jp_t;

static void jp_ws(jp_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
        j->p++;
}

static int hex4(const unsigned char *s, unsigned *v)
{
    unsigned i, x = 0;
    for (i = 0; i < 4; i++) {
        unsigned c = s[i];
        x <<= 4;
        if (c >= '0' && c <= '9')
            x |= c - '0';
        else if ((c | 32) >= 'a' && (c | 32) <= 'f')
            x |= (c | 32) - 'a' + 10;
        else
            return -1;
    }
    *v = x;
    return 0;
}

/* The string whose opening quote is at j->p: where its (unescaped) bytes
 * are and whether they are in the string buffer. 0, or MG_JSON_E*. */
static int jp_string(jp_t *j, uint32_t *off, uint32_t *len, uint8_t *esc)
{
    const unsigned char *s = ++j->p;
    unsigned char *o;

    while (j->p < j->end && *j->p != '"' && *j->p != '\\') {
        if (*j->p < 0x20)
            return MG_JSON_EINVALID;
        j->p++;
    }
    if (j->p >= j->end)
        return MG_JSON_EINVALID;
    if (*j->p == '"') {
        *off = (uint32_t)(s - j->base), *len = (uint32_t)(j->p - s), *esc = 0;
        j->p++;
        return 0;
    }
    /* escapes: unescaped output is never longer than the input left */
    if (j->scap - j->sused < (size_t)(j->end - s))
        return MG_JSON_ENOTFLAT;
    o = (unsigned char *)j->sb + j->sused;
    memcpy(o, s, (size_t)(j->p - s));
    o += j->p - s;
    while (j->p < j->end && *j->p != '"') {
        unsigned c = *j->p, u, lo;
        if (c < 0x20)
            return MG_JSON_EINVALID;
        if (c != '\\') {
            *o++ = (unsigned char)c;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2)
            return MG_JSON_EINVALID;
        c = j->p[1];
        j->p += 2;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            *o++ = (unsigned char)c;
            continue;
        case 'b':
            *o++ = '\b';
            continue;
        case 'f':
            *o++ = '\f';
            continue;
        case 'n':
            *o++ = '\n';
            continue;
        case 'r':
            *o++ = '\r';
            continue;
        case 't':
            *o++ = '\t';
            continue;
        case 'u':
            break;
        default:
            return MG_JSON_EINVALID;
        }
        if (j->end - j->p < 4 || hex4(j->p, &u) != 0)
            return MG_JSON_EINVALID;
        j->p += 4;
        if (u >= 0xdc00 && u <= 0xdfff)
            return MG_JSON_EINVALID; /* a lone low surrogate */
        if (u >= 0xd800 && u <= 0xdbff) {
            if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                hex4(j->p + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
                return MG_JSON_EINVALID;
            j->p += 6;
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (u < 0x80) {
            *o++ = (unsigned char)u;
        } else if (u < 0x800) {
            *o++ = (unsigned char)(0xc0 | u >> 6);
            *o++ = (unsigned char)(0x80 | (u & 0x3f));
        } else if (u < 0x10000) {
            *o++ = (unsigned char)(0xe0 | u >> 12);
            *o++ = (unsigned char)(0x80 | ((u >> 6) & 0x3f));
            *o++ = (unsigned char)(0x80 | (u & 0x3f));
        } else {
            *o++ = (unsigned char)(0xf0 | u >> 18);
            *o++ = (unsigned char)(0x80 | ((u >> 12) & 0x3f));
            *o++ = (unsigned char)(0x80 | ((u >> 6) & 0x3f));
            *o++ = (unsigned char)(0x80 | (u & 0x3f));
        }
    }
    if (j->p >= j->end)
        return MG_JSON_EINVALID;
    j->p++;
    *off = (uint32_t)j->sused;
    *len = (uint32_t)(o - (unsigned char *)j->sb - j->sused);
    *esc = 1;
    j->sused += *len;
    return 0;
}

/* A number: integers of up to 15 digits are converted here; other numbers
 * are left as text for the caller (MG_JSON_NUMTEXT), which converts them
 * without the C locale's say (LuaJIT's tonumber). */
static int jp_number(jp_t *j, mg_json_tok_t *t)
{
    const unsigned char *s = j->p;
    int neg = 0, digits = 0, plain = 1;
    int64_t v = 0;

    if (*j->p == '-')
        neg = 1, j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return MG_JSON_EINVALID;
    if (*j->p == '0') {
        j->p++;
        digits = 1;
        if (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            return MG_JSON_EINVALID; /* leading zero */
    } else {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            if (digits < 15)
                v = v * 10 + (*j->p - '0');
            digits++;
            j->p++;
        }
    }
    if (j->p < j->end && *j->p == '.') {
        plain = 0;
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return MG_JSON_EINVALID;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        plain = 0;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return MG_JSON_EINVALID;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (plain && digits <= 15) {
        t->type = MG_JSON_NUMBER;
        t->num = (double)(neg ? -v : v);
    } else {
        t->type = MG_JSON_NUMTEXT;
        t->val_off = (uint32_t)(s - j->base);
        t->val_len = (uint32_t)(j->p - s);
    }
    return 0;
}

static int jp_literal(jp_t *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return MG_JSON_EINVALID;
    j->p += n;
    return 0;
}

/* A scalar value into T (type, num or val_*). */
static int jp_scalar(jp_t *j, mg_json_tok_t *t)
{
    if (j->p >= j->end)
        return MG_JSON_EINVALID;
    switch (*j->p) {
    case '"':
        t->type = MG_JSON_STRING;
        return jp_string(j, &t->val_off, &t->val_len, &t->val_esc);
    case 't':
        t->type = MG_JSON_TRUE;
        return jp_literal(j, "true", 4);
    case 'f':
        t->type = MG_JSON_FALSE;
        return jp_literal(j, "false", 5);
    case 'n':
        t->type = MG_JSON_NULL;
        return jp_literal(j, "null", 4);
    case '{':
    case '[':
        return MG_JSON_ENOTFLAT;
    }
    return jp_number(j, t);
}

int mg_ffi_json_flat_object(const char *text, size_t len, mg_json_tok_t *toks, int max, char *sbuf,
                            size_t scap)
{
    jp_t j = { (const unsigned char *)text,
               (const unsigned char *)text + len,
               (const unsigned char *)text,
               sbuf,
               0,
               scap };
    int n = 0, rc;

    if (len > UINT32_MAX)
        return MG_JSON_ENOTFLAT;
    jp_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return MG_JSON_EINVALID;
    j.p++;
    jp_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
        goto end;
    }
    for (;;) {
        mg_json_tok_t *t;
        if (n >= max)
            return MG_JSON_ENOTFLAT;
        t = &toks[n++];
        memset(t, 0, sizeof(*t));
        if (j.p >= j.end || *j.p != '"')
            return MG_JSON_EINVALID;
        if ((rc = jp_string(&j, &t->key_off, &t->key_len, &t->key_esc)) != 0)
            return rc;
        jp_ws(&j);
        if (j.p >= j.end || *j.p != ':')
            return MG_JSON_EINVALID;
        j.p++;
        jp_ws(&j);
        if (j.p < j.end && *j.p == '[') {
            /* an array of scalars: its elements follow as tokens */
            int first = n;
            t->type = MG_JSON_ARRAY;
            j.p++;
            jp_ws(&j);
            if (j.p < j.end && *j.p == ']') {
                j.p++;
            } else {
                for (;;) {
                    mg_json_tok_t *e;
                    if (n >= max)
                        return MG_JSON_ENOTFLAT;
                    e = &toks[n++];
                    memset(e, 0, sizeof(*e));
                    if ((rc = jp_scalar(&j, e)) != 0)
                        return rc;
                    jp_ws(&j);
                    if (j.p < j.end && *j.p == ',') {
                        j.p++;
                        jp_ws(&j);
                        continue;
                    }
                    if (j.p < j.end && *j.p == ']') {
                        j.p++;
                        break;
                    }
                    return MG_JSON_EINVALID;
                }
            }
            t->val_len = (uint32_t)(n - first); /* the element count */
        } else if ((rc = jp_scalar(&j, t)) != 0) {
            return rc;
        }
        jp_ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            jp_ws(&j);
            continue;
        }
        if (j.p < j.end && *j.p == '}') {
            j.p++;
            break;
        }
        return MG_JSON_EINVALID;
    }
end:
    jp_ws(&j);
    return j.p == j.end ? n : MG_JSON_EINVALID;
}


/* ---- API keys and passwords ---- */

/* The low-level SHA-256 on the stack: OpenSSL 3's one-shot SHA256() goes
 * through EVP (a fetch under a read lock, an allocated context), ~2,000
 * instructions more per call, on every request of a key_auth route. */
void mg_ffi_sha256(const char *in, size_t len, unsigned char *out)
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, in, len);
    SHA256_Final(out, &c);
}

int mg_ffi_equal(const unsigned char *a, const unsigned char *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

/* Longest password handed to crypt: bcrypt reads 72 bytes, SHA-crypt any,
 * but nobody types 4 KiB, and the copy is on the stack. */
#define MAX_PASSWORD 4096

int mg_ffi_crypt_verify(const char *password, size_t plen, const char *hash)
{
    size_t hlen = strlen(hash);
    if (hlen < 4 || hlen >= CRYPT_OUTPUT_SIZE || hash[0] != '$')
        return -1;
    /* a NUL inside the password would cut it short: "a\0anything" would
     * pass for "a" */
    if (plen >= MAX_PASSWORD || memchr(password, 0, plen))
        return 0;
    char phrase[MAX_PASSWORD];
    memcpy(phrase, password, plen);
    phrase[plen] = 0;
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    const char *out = crypt_rn(phrase, hash, &cd, (int)sizeof cd);
    OPENSSL_cleanse(phrase, plen);
    /* crypt_rn returns NULL, or (with some methods) a "*" string, for a
     * setting it cannot use */
    int rc;
    if (!out || out[0] == '*')
        rc = -1;
    else
        rc = strlen(out) == hlen && CRYPTO_memcmp(out, hash, hlen) == 0;
    OPENSSL_cleanse(&cd, sizeof cd.output);
    return rc;
}
