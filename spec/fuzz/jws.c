/* jws.c: fuzz target for the JWS and JSON decoding of src/crypto.c, the
 * way lua/moongate/jwt.lua drives it: a compact token is split at its two
 * dots, the header and payload are base64url-decoded and tokenised as flat
 * JSON objects, and the signature is checked with mg_ffi_jws_verify.
 *
 * Input: one byte choosing the key and algorithm (low 3 bits: HS256,
 * HS384, HS512, RS256, PS256, ES256, EdDSA, RS512; bit 7 on an HMAC key:
 * the token is re-signed with mg_ffi_crypto_hmac first, so that the
 * payload path after a valid signature is reached), then the token.
 * Checks: base64url accepts only canonical text (encoding what it decoded
 * gives the input back), JSON tokens lie inside their buffers, a token
 * signed with the key verifies and yields the decoded payload.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mg_ffi.h"

#define MAX_TOK 64

static const char EC_PEM[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER6WNR0s+ATJmMI/g5imP3PFjDAb4\n"
                             "IZnvF/PCNU4+AFOdF6QJrnt8sqPCkYKQS5szRPxUnthvq6AGnJNUTec5Yw==\n"
                             "-----END PUBLIC KEY-----\n";
static const char ED_PEM[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MCowBQYDK2VwAyEAjMkZrWpOm/+oWJ56FT+Fk3CtSyvJ69GQC+8xGcF/dag=\n"
                             "-----END PUBLIC KEY-----\n";
static const char RSA_PEM[] = "-----BEGIN PUBLIC KEY-----\n"
                              "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvQGOQ4P1NTc3tgO0s9CJ\n"
                              "9p7aTUyZxBkYp14uM7EiA6SpQvRG/l1hPx2ZsU813biwh2eqTBHtLeI5qol3URH2\n"
                              "la6mLj6+8WBwjvXUiw0tOVCPVjZFuyftMBkJ2jnQbvRn4TcjYsjguPCAmhTP6Ifo\n"
                              "+Z/prs2vCRFdL8zibse31iru+a9JhRD6GO1vf+NT4P30GLlHjqhceTk9nl+tTdVv\n"
                              "7DHFrNhr+EOV/OdlUtIRCGW2FMoXVFaFr/MwXwD9SZmw87HviC0HrP57vT6QzdPk\n"
                              "HCN7JO0/6/uI2KyJ9RikefIUGqWcv5+icHP8q53RtTW5do68zT4mvnCpRjB4JTwT\n"
                              "/wIDAQAB\n"
                              "-----END PUBLIC KEY-----\n";

static mg_crypto_key_t *secret, *rsa, *ec, *ed;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "jws: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const unsigned char s[64] = "fuzzing-secret-fuzzing-secret-fuzzing-secret-fuzzing-secret!!!!";
    const char *err = NULL;
    secret = mg_ffi_crypto_key_secret(s, sizeof(s), &err);
    rsa = mg_ffi_crypto_key_pem(RSA_PEM, sizeof(RSA_PEM) - 1, &err);
    ec = mg_ffi_crypto_key_pem(EC_PEM, sizeof(EC_PEM) - 1, &err);
    ed = mg_ffi_crypto_key_pem(ED_PEM, sizeof(ED_PEM) - 1, &err);
    if (!secret || !rsa || !ec || !ed) {
        fprintf(stderr, "jws: a key: %s\n", err ? err : "?");
        exit(1);
    }
    return 0;
}

/* Decodes a base64url segment; checks that only canonical text passes. */
static long decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    size_t n = cap;
    int rc = mg_ffi_b64url_decode(in, len, out, &n);
    if (rc != 0)
        return -1;
    check(n <= cap, "decoded past the buffer");
    char *again = malloc((n + 2) / 3 * 4 + 1);
    check(again != NULL, "out of memory");
    size_t el = mg_ffi_b64url_encode(out, n, again);
    check(el == len && memcmp(again, in, len) == 0, "a non-canonical base64url accepted");
    free(again);
    return (long)n;
}

/* Tokenises a decoded JSON segment; checks every span. */
static void json(const unsigned char *text, size_t len)
{
    mg_json_tok_t toks[MAX_TOK];
    char *sbuf = malloc(len + 1);
    check(sbuf != NULL, "out of memory");
    int n = mg_ffi_json_flat_object((const char *)text, len, toks, MAX_TOK, sbuf, len);
    check(n <= MAX_TOK, "more tokens than room");
    for (int i = 0; i < n; i++) {
        const mg_json_tok_t *t = &toks[i];
        /* text and sbuf both hold len bytes */
        check((size_t)t->key_off + t->key_len <= len, "a key outside its buffer");
        if (t->type == MG_JSON_STRING || t->type == MG_JSON_NUMTEXT)
            check((size_t)t->val_off + t->val_len <= len, "a value outside its buffer");
        check(t->type >= MG_JSON_STRING && t->type <= MG_JSON_NUMTEXT, "an unknown type");
    }
    free(sbuf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int algs[8] = { MG_JWS_HS256, MG_JWS_HS384, MG_JWS_HS512, MG_JWS_RS256,
                                 MG_JWS_PS256, MG_JWS_ES256, MG_JWS_EDDSA, MG_JWS_RS512 };
    if (size < 1 || size > 16384)
        return 0;
    int pick = data[0] & 7, resign = data[0] & 0x80;
    int alg = algs[pick];
    mg_crypto_key_t *k = pick < 3 ? secret : pick == 5 ? ec : pick == 6 ? ed : rsa;
    size_t len = size - 1;
    char *tok = malloc(len + 200);
    check(tok != NULL, "out of memory");
    memcpy(tok, data + 1, len);

    const char *d1p = memchr(tok, '.', len);
    const char *d2p = d1p ? memchr(d1p + 1, '.', len - (size_t)(d1p + 1 - tok)) : NULL;
    if (!d1p || !d2p) {
        free(tok);
        return 0;
    }
    size_t d1 = (size_t)(d1p - tok), d2 = (size_t)(d2p - tok);
    if (resign && pick < 3) {
        /* a valid signature over the fuzzed header and payload */
        unsigned char mac[64];
        size_t ml = sizeof(mac);
        check(mg_ffi_crypto_hmac(k, alg, (const unsigned char *)tok, d2, mac, &ml) == 0,
              "HMAC refused");
        len = d2 + 1 + mg_ffi_b64url_encode(mac, ml, tok + d2 + 1);
    }

    unsigned char *buf = malloc(len + 1);
    check(buf != NULL, "out of memory");
    long hl = decode(tok, d1, buf, len);
    if (hl >= 0)
        json(buf, (size_t)hl);

    size_t plen = len;
    int rc = mg_ffi_jws_verify(k, alg, tok, len, d1, d2, buf, &plen);
    check(rc == 0 || rc == 1 || (rc <= MG_JWS_EALG && rc >= MG_JWS_EINTERNAL), "unknown result");
    if (resign && pick < 3)
        check(rc == 1 || rc == MG_JWS_EPAYLOAD64,
              "a token signed with the key does not verify");
    if (rc == 1) {
        check(plen <= len, "payload longer than its room");
        json(buf, plen);
    }
    /* the payload as jwt.lua reads it, signature or not */
    long pl = decode(tok + d1 + 1, d2 - d1 - 1, buf, len);
    if (pl >= 0)
        json(buf, (size_t)pl);
    free(buf);
    free(tok);
    return 0;
}
