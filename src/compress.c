/* compress.c: gzip (zlib) and brotli (libbrotlienc) encoders behind one
 * small interface (encoder_t), the Accept-Encoding negotiation, the
 * decision on a response head and the streamed body (compress.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>
#include <brotli/encode.h>
#include "compress.h"
#include "header_names.h"
#include "http.h"
#include "mg_ffi.h"
#include "request.h"

struct mg_compress_conf_s {
    int gzip_level;        /* 1-9, 0: no gzip */
    int brotli_quality;    /* 0-11, -1: no brotli */
    int brotli_window;     /* lgwin, 10-24 */
    unsigned allowed;      /* 1 << MG_ENC_* */
    uint64_t min_size;
    size_t ntypes;
    char **types;          /* lower case; "text/" + "*" matches the whole type */
};

/* ---- the encoders ------------------------------------------------------- */

typedef struct mg_compress_s mg_compress_t;

/* One encoder: run consumes what it can of *in / *in_len into *out /
 * *out_len (both moved on) and returns 1 once a finishing call has given
 * its last byte, 0 for more, -1 on failure. */
typedef struct {
    int (*init)(mg_compress_t *z, const mg_compress_conf_t *c);
    int (*run)(mg_compress_t *z, const uint8_t **in, size_t *in_len, uint8_t **out,
               size_t *out_len, int finish);
    void (*end)(mg_compress_t *z);
} encoder_t;

struct mg_compress_s {
    const encoder_t *enc;
    union {
        z_stream gz;
        BrotliEncoderState *br;
    } s;
    size_t out_len;          /* bytes waiting in out */
    uint8_t out[MG_COMPRESS_OUT];
};

static int gz_init(mg_compress_t *z, const mg_compress_conf_t *c)
{
    memset(&z->s.gz, 0, sizeof(z->s.gz));
    /* 15 + 16: a gzip wrapper on a 32 KiB window; memLevel 8 (zlib's default) */
    return deflateInit2(&z->s.gz, c->gzip_level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) ==
                   Z_OK ? 0 : -1;
}

static int gz_run(mg_compress_t *z, const uint8_t **in, size_t *in_len, uint8_t **out,
                  size_t *out_len, int finish)
{
    z_stream *s = &z->s.gz;
    /* zlib counts in uInt: at most 1 GiB at a time (bufs are far smaller) */
    uInt give = *in_len > (1u << 30) ? 1u << 30 : (uInt)*in_len;
    s->next_in = (Bytef *)*in;
    s->avail_in = give;
    s->next_out = *out;
    s->avail_out = (uInt)*out_len;
    int rc = deflate(s, finish && give == *in_len ? Z_FINISH : Z_NO_FLUSH);
    size_t used = give - s->avail_in, made = *out_len - s->avail_out;
    *in += used;
    *in_len -= used;
    *out += made;
    *out_len -= made;
    if (rc == Z_STREAM_END)
        return 1;
    return rc == Z_OK || rc == Z_BUF_ERROR ? 0 : -1;
}

static void gz_end(mg_compress_t *z) { deflateEnd(&z->s.gz); }

static int br_init(mg_compress_t *z, const mg_compress_conf_t *c)
{
    BrotliEncoderState *s = BrotliEncoderCreateInstance(NULL, NULL, NULL);
    if (!s)
        return -1;
    BrotliEncoderSetParameter(s, BROTLI_PARAM_QUALITY, (uint32_t)c->brotli_quality);
    BrotliEncoderSetParameter(s, BROTLI_PARAM_LGWIN, (uint32_t)c->brotli_window);
    BrotliEncoderSetParameter(s, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT);
    z->s.br = s;
    return 0;
}

static int br_run(mg_compress_t *z, const uint8_t **in, size_t *in_len, uint8_t **out,
                  size_t *out_len, int finish)
{
    BrotliEncoderState *s = z->s.br;
    if (!BrotliEncoderCompressStream(s, finish ? BROTLI_OPERATION_FINISH
                                               : BROTLI_OPERATION_PROCESS,
                                     in_len, in, out_len, out, NULL))
        return -1;
    return finish && BrotliEncoderIsFinished(s) ? 1 : 0;
}

static void br_end(mg_compress_t *z) { BrotliEncoderDestroyInstance(z->s.br); }

static const encoder_t encoders[] = {
    [MG_ENC_GZIP] = { gz_init, gz_run, gz_end },
    [MG_ENC_BR] = { br_init, br_run, br_end },
};

static mg_compress_t *stream_new(const mg_compress_conf_t *c, int enc)
{
    mg_compress_t *z = malloc(sizeof(*z));
    if (!z)
        return NULL;
    z->enc = &encoders[enc];
    z->out_len = 0;
    if (z->enc->init(z, c) < 0) {
        free(z);
        return NULL;
    }
    return z;
}

static void stream_free(mg_compress_t *z)
{
    z->enc->end(z);
    free(z);
}

/* ---- configuration (the Lua policy, at load) ---------------------------- */

void mg_ffi_compress_conf_free(mg_compress_conf_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->ntypes; i++)
        free(c->types[i]);
    free(c->types);
    free(c);
}

mg_compress_conf_t *mg_ffi_compress_conf_new(int gzip_level, int brotli_quality,
                                             int brotli_window, uint64_t min_size,
                                             const char *types, size_t types_len)
{
    mg_compress_conf_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->gzip_level = gzip_level;
    c->brotli_quality = brotli_quality;
    c->brotli_window = brotli_window;
    c->allowed = (gzip_level > 0 ? 1u << MG_ENC_GZIP : 0) |
                 (brotli_quality >= 0 ? 1u << MG_ENC_BR : 0);
    c->min_size = min_size;
    /* types: a comma-separated list the policy checked */
    size_t at = 0, l;
    const char *t;
    size_t n = 0;
    while (mg_token_next(types, types_len, &at, &t, &l))
        n++;
    c->types = calloc(n ? n : 1, sizeof(*c->types));
    if (!c->types) {
        free(c);
        return NULL;
    }
    at = 0;
    while (mg_token_next(types, types_len, &at, &t, &l)) {
        char *s = malloc(l + 1);
        if (!s) {
            mg_ffi_compress_conf_free(c);
            return NULL;
        }
        for (size_t i = 0; i < l; i++)
            s[i] = (char)((t[i] >= 'A' && t[i] <= 'Z') ? t[i] + 32 : t[i]);
        s[l] = 0;
        c->types[c->ntypes++] = s;
    }
    return c;
}

/* ---- Accept-Encoding ---------------------------------------------------- */

/* A q-value (RFC 9110 12.4.2) as thousandths, or -1 when malformed. */
static int qvalue(const char *v, size_t n)
{
    if (n == 0 || (v[0] != '0' && v[0] != '1'))
        return -1;
    int q = (v[0] - '0') * 1000, scale = 100;
    if (n == 1)
        return q;
    if (v[1] != '.' || n > 5)
        return -1;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        q += (v[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

static int ieq(const char *a, size_t al, const char *b)
{
    size_t bl = strlen(b);
    return al == bl && strncasecmp(a, b, al) == 0;
}

static size_t trim(const char *v, size_t *st, size_t en)
{
    while (*st < en && (v[*st] == ' ' || v[*st] == '\t'))
        (*st)++;
    while (en > *st && (v[en - 1] == ' ' || v[en - 1] == '\t'))
        en--;
    return en;
}

int mg_compress_negotiate(const char *v, size_t len, unsigned allowed)
{
    /* q of each coding as listed, -1 not listed: [0] identity, [3] "*" */
    int q[4] = { -1, -1, -1, -1 };
    size_t at = 0;
    while (at < len) {
        size_t en = at;
        while (en < len && v[en] != ',')
            en++;
        size_t st = at, semi = at;
        at = en + 1;
        while (semi < en && v[semi] != ';')
            semi++;
        size_t ne = trim(v, &st, semi);
        int qv = 1000;
        /* parameters: only q matters; a malformed one drops the element */
        for (size_t p = semi; p < en && qv >= 0;) {
            size_t ps = p + 1, pe = ps;
            while (pe < en && v[pe] != ';')
                pe++;
            size_t pee = trim(v, &ps, pe);
            if (pee - ps >= 2 && (v[ps] == 'q' || v[ps] == 'Q') && v[ps + 1] == '=')
                qv = qvalue(v + ps + 2, pee - ps - 2);
            p = pe;
        }
        if (qv < 0 || ne == st)
            continue;
        const char *name = v + st;
        size_t nl = ne - st;
        int which = ieq(name, nl, "identity") ? 0 : ieq(name, nl, "gzip") || ieq(name, nl, "x-gzip")
                    ? MG_ENC_GZIP : ieq(name, nl, "br") ? MG_ENC_BR : ieq(name, nl, "*") ? 3 : -1;
        if (which >= 0)
            q[which] = qv;
    }
    int best = MG_ENC_IDENTITY, best_q = 0;
    /* br first: it wins a tie */
    static const int order[] = { MG_ENC_BR, MG_ENC_GZIP };
    for (size_t i = 0; i < 2; i++) {
        int e = order[i];
        int qe = q[e] >= 0 ? q[e] : q[3] >= 0 ? q[3] : 0;
        if ((allowed & (1u << e)) && qe > best_q) {
            best = e;
            best_q = qe;
        }
    }
    /* an identity the client explicitly prefers to every coding wins */
    if (best != MG_ENC_IDENTITY && q[0] > best_q)
        return MG_ENC_IDENTITY;
    return best;
}

int mg_ffi_req_set_compression(mg_request_t *r, const mg_compress_conf_t *c)
{
    if (r->response_started)
        return MG_FFI_EPHASE;
    char joined[1024];
    size_t jl = 0;
    const char *v;
    size_t vl;
    /* all Accept-Encoding headers as one list (a longer one is cut at
     * 1 KiB, between elements: no client sends that) */
    for (int i = 0; mg_request_header(r, "accept-encoding", 15, i, &v, &vl); i++) {
        if (jl + vl + 1 > sizeof(joined))
            break;
        if (jl)
            joined[jl++] = ',';
        memcpy(joined + jl, v, vl);
        jl += vl;
    }
    r->compress_conf = c;
    r->compress_enc = (uint8_t)mg_compress_negotiate(joined, jl, c->allowed);
    return r->compress_enc;
}

/* ---- the head ------------------------------------------------------------ */

static int type_listed(const mg_compress_conf_t *c, const char *v, size_t vl)
{
    size_t st = 0, en = 0;
    while (en < vl && v[en] != ';')
        en++;
    en = trim(v, &st, en);
    for (size_t i = 0; i < c->ntypes; i++) {
        const char *t = c->types[i];
        size_t tl = strlen(t);
        if (tl >= 2 && t[tl - 2] == '/' && t[tl - 1] == '*') {
            if (en - st > tl - 1 && strncasecmp(v + st, t, tl - 1) == 0)
                return 1; /* the whole type: a wildcard subtype */
        } else if (en - st == tl && strncasecmp(v + st, t, tl) == 0) {
            return 1;
        }
    }
    return 0;
}

static int named(const mg_hfield_t *f, const char *lname)
{
    return ieq(f->name, f->name_len, lname);
}

/* Would c compress this answer (for a client asking for a coding)? */
static int compressible(const mg_request_t *r, const mg_compress_conf_t *c, const mg_resp_t *res)
{
    if (r->head_method || !mg_status_has_body(res->status) || res->status == 206 ||
        res->body_len == 0 || (res->body_len != MG_BODY_UNKNOWN && res->body_len < c->min_size))
        return 0;
    int typed = 0;
    for (size_t i = 0; i < res->nheaders; i++) {
        const mg_hfield_t *f = &res->headers[i];
        if (f->tok == MG_HN_CONTENT_TYPE) {
            typed = type_listed(c, f->value, f->value_len);
            if (!typed)
                return 0;
        } else if (f->tok == MG_HN_OTHER) {
            if (named(f, "content-encoding") && !ieq(f->value, f->value_len, "identity"))
                return 0; /* already encoded */
            if (named(f, "content-range"))
                return 0;
            if (named(f, "cache-control") &&
                mg_token_listed(f->value, f->value_len, "no-transform", 12))
                return 0;
        }
    }
    return typed;
}

static const char *const enc_name[] = { [MG_ENC_GZIP] = "gzip", [MG_ENC_BR] = "br" };

const mg_resp_t *mg_compress_head(mg_request_t *r, const mg_resp_t *res, mg_resp_t *out)
{
    const mg_compress_conf_t *c = r->compress_conf;
    if (r->compress) { /* the testing kit asks again */
        stream_free(r->compress);
        r->compress = NULL;
    }
    if (!c || !compressible(r, c, res))
        return res;
    int enc = r->compress_enc;
    /* room for Content-Encoding and Vary beside the answer's own */
    mg_hfield_t *f = mg_request_alloc(r, (res->nheaders + 2) * sizeof(*f));
    if (!f)
        return res; /* sent as it is */
    mg_compress_t *z = NULL;
    if (enc != MG_ENC_IDENTITY && !(z = stream_new(c, enc)))
        enc = MG_ENC_IDENTITY; /* out of memory: sent as it is (with Vary) */
    size_t n = 0;
    int vary_seen = 0;
    for (size_t i = 0; i < res->nheaders; i++) {
        mg_hfield_t h = res->headers[i];
        if (h.tok == MG_HN_OTHER && named(&h, "vary")) {
            /* Accept-Encoding added to the first Vary, unless it (or "*")
             * is already in one of them */
            int listed = mg_token_listed(h.value, h.value_len, "accept-encoding", 15) ||
                         mg_token_listed(h.value, h.value_len, "*", 1);
            for (size_t j = i + 1; !listed && j < res->nheaders; j++)
                listed = res->headers[j].tok == MG_HN_OTHER && named(&res->headers[j], "vary") &&
                         mg_token_listed(res->headers[j].value, res->headers[j].value_len,
                                         "accept-encoding", 15);
            if (!vary_seen && !listed) {
                char *v = mg_request_alloc(r, h.value_len + 17);
                if (v) {
                    memcpy(v, h.value, h.value_len);
                    memcpy(v + h.value_len, ", Accept-Encoding", 17);
                    h.value = v;
                    h.value_len += 17;
                    h.line = 0;
                }
            }
            vary_seen = 1;
        } else if (enc != MG_ENC_IDENTITY && h.tok == MG_HN_OTHER && named(&h, "etag") &&
                   h.value_len && h.value[0] == '"') {
            /* the compressed bytes are another representation: a weak
             * validator (RFC 9110 8.8.1), so a strong comparison (a range)
             * never matches the identity's */
            char *v = mg_request_alloc(r, h.value_len + 2);
            if (v) {
                v[0] = 'W';
                v[1] = '/';
                memcpy(v + 2, h.value, h.value_len);
                h.value = v;
                h.value_len += 2;
                h.line = 0;
            }
        } else if (enc != MG_ENC_IDENTITY && h.tok == MG_HN_OTHER &&
                   (named(&h, "accept-ranges") || named(&h, "content-encoding"))) {
            continue; /* ranges of the identity do not apply; "identity" goes */
        }
        f[n++] = h;
    }
    if (!vary_seen)
        f[n++] = mg_hfield("Vary", 4, "Accept-Encoding", 15, MG_HN_OTHER);
    *out = *res;
    out->headers = f;
    if (enc != MG_ENC_IDENTITY) {
        f[n++] = mg_hfield("Content-Encoding", 16, enc_name[enc], strlen(enc_name[enc]),
                           MG_HN_OTHER);
        out->body_len = MG_BODY_UNKNOWN;
        r->compress = z;
    }
    out->nheaders = n;
    return out;
}

/* ---- the body ------------------------------------------------------------ */

/* Sends what waits in z->out (with last: the end). The send may end r. */
static int out_send(mg_request_t *r, mg_compress_t *z, int last)
{
    uv_buf_t b = uv_buf_init((char *)z->out, (unsigned)z->out_len);
    unsigned n = z->out_len ? 1 : 0;
    z->out_len = 0; /* the protocol writes or copies it before returning */
    return r->proto->send_body(r, &b, n, last);
}

int mg_compress_send(mg_request_t *r, const uv_buf_t *bufs, unsigned n, int last)
{
    mg_compress_t *z = r->compress;
    for (unsigned i = 0; i <= n; i++) {
        int finish = i == n;
        if (finish && !last)
            break;
        const uint8_t *in = finish ? NULL : (const uint8_t *)bufs[i].base;
        size_t in_len = finish ? 0 : bufs[i].len;
        for (;;) {
            uint8_t *o = z->out + z->out_len;
            size_t room = sizeof(z->out) - z->out_len;
            int rc = z->enc->run(z, &in, &in_len, &o, &room, finish);
            z->out_len = sizeof(z->out) - room;
            if (rc < 0) {
                r->proto->abort(r); /* the encoder failed: a cut answer */
                return -1;
            }
            if (rc == 1)
                break; /* finished: the last bytes are in out */
            if (room == 0) {
                if (out_send(r, z, 0) < 0)
                    return -1;
                continue;
            }
            if (in_len == 0 && !finish)
                break;
        }
    }
    /* what the encoder gave goes now (with the head, the first time) */
    return out_send(r, z, last);
}

void mg_compress_release(mg_request_t *r)
{
    if (r->compress) {
        stream_free(r->compress);
        r->compress = NULL;
    }
    r->compress_conf = NULL;
}

char *mg_compress_whole(const mg_compress_conf_t *c, int enc, const char *in, size_t len,
                        size_t *out_len)
{
    mg_compress_t *z = (enc == MG_ENC_GZIP || enc == MG_ENC_BR) ? stream_new(c, enc) : NULL;
    if (!z)
        return NULL;
    size_t cap = len / 2 + 64, got = 0;
    char *buf = malloc(cap);
    const uint8_t *p = (const uint8_t *)in;
    size_t left = len;
    for (int rc = 0; buf && rc == 0;) {
        if (got == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        uint8_t *o = (uint8_t *)buf + got;
        size_t room = cap - got;
        rc = z->enc->run(z, &p, &left, &o, &room, 1);
        got = cap - room;
        if (rc < 0) {
            free(buf);
            buf = NULL;
        }
    }
    stream_free(z);
    *out_len = got;
    return buf;
}

long mg_ffi_kit_compress_body(mg_request_t *r, const char *in, size_t len, const char **out)
{
    size_t n;
    char *whole = r->compress ? mg_compress_whole(r->compress_conf, r->compress_enc, in, len, &n)
                              : NULL;
    char *kept = whole ? mg_request_alloc(r, n ? n : 1) : NULL;
    if (kept)
        memcpy(kept, whole, n);
    free(whole);
    *out = kept;
    return kept ? (long)n : -1;
}
